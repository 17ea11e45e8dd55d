/*
 * replica_hsm.c: a PKCS#11 library that stands in for one HSM replica in the failover tests:
 * SoftHSM2 with a switchable fault, built so that several replicas live in one process.
 *
 * Independence comes from copies, not from code: the test copies this library and
 * libsofthsm2.so into one directory per replica (dirA/libreplica.so, dirA/libsofthsm2.so, ...).
 * Different paths make dlopen load separate instances with separate globals, for this shim and
 * for SoftHSM2 alike. Each copy finds its own directory with dladdr() and reads replica.conf
 * there:
 *
 *     library=/abs/path/dirA/libsofthsm2.so
 *     softhsm_conf=/abs/path/dirA/softhsm2.conf
 *     sign_us=0                      (optional; > 0: one signing unit, see below)
 *
 * The real library is loaded RTLD_NOW | RTLD_LOCAL and stays loaded for the life of the process.
 * C_GetFunctionList hands out a copy of its 2.40 table in which every entry is a wrapper.
 * Deliberately no C_GetInterface. If replica.conf or the real library cannot be read,
 * C_GetFunctionList answers CKR_GENERAL_ERROR after one line on stderr naming the path.
 *
 * C_Initialize sets SOFTHSM2_CONF to softhsm_conf around the real C_Initialize (SoftHSM2 reads
 * the variable there and nowhere else), then puts the old value back. Each copy has its own
 * globals, so a static mutex would not keep two replicas initialised by two threads from
 * reading each other's value; the lock is a flock() on /tmp/replica_hsm-<uid>.lock, the one
 * thing every copy can name (and the kernel drops it if the process dies holding it).
 *
 * Modes (replica_hsm_set_mode):
 *   0 up     everything forwards.
 *   1 error  everything but C_GetFunctionList, C_Initialize, C_Finalize and C_GetInfo answers
 *            CKR_DEVICE_ERROR without reaching SoftHSM2.
 *   2 gone   the device was unplugged: C_GetSlotList lists no slot; the slot functions answer
 *            CKR_SLOT_ID_INVALID, the session functions CKR_DEVICE_REMOVED; C_Initialize,
 *            C_Finalize and C_GetInfo forward.
 *   Going from 1 or 2 back to 0 is a restarted HSM: the real C_CloseAllSessions runs on every
 *   slot with a token before the mode becomes 0, which kills every old session handle and logs
 *   the application out.
 *
 * With sign_us > 0 the replica has one signing unit: each C_Sign that asks for a signature
 * (pSignature != NULL) holds a per-replica mutex for at least sign_us microseconds, sleeping
 * the part the real call did not use. Length queries are not serialised.
 *
 * Exports, for the test process, which dlopens the same path to reach the same instance:
 *   void          replica_hsm_set_mode(int mode);   0 up, 1 error, 2 gone; others are ignored
 *   int           replica_hsm_mode(void);
 *   unsigned long replica_hsm_signs(void);   C_Sign calls that SoftHSM2 answered CKR_OK with a
 *                                            signature (not length queries)
 *   unsigned long replica_hsm_calls(void);   calls to any function of the table, rejected ones
 *                                            too (C_GetFunctionList itself is not counted)
 *
 * Build: cc -shared -fPIC -Wall -Werror -I include tests/forward_common/replica_hsm.c -ldl -lpthread -o libreplica.so
 */

#define _GNU_SOURCE /* dladdr */

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "pkcs11.h"

#define EXPORT __attribute__((visibility("default")))

enum { MODE_UP = 0, MODE_ERROR = 1, MODE_GONE = 2 };

static pthread_once_t once = PTHREAD_ONCE_INIT;
static CK_RV load_rv = CKR_GENERAL_ERROR;
static CK_FUNCTION_LIST *real;
static CK_FUNCTION_LIST table;
static char library_path[PATH_MAX];
static char softhsm_conf[PATH_MAX];
static unsigned long sign_us;

static int mode = MODE_UP;
static unsigned long signs;
static unsigned long calls;

/* The signing unit of sign_us. */
static pthread_mutex_t sign_unit = PTHREAD_MUTEX_INITIALIZER;
/* Serialises mode switches, so that two restarts cannot interleave. */
static pthread_mutex_t switching = PTHREAD_MUTEX_INITIALIZER;
/*
 * Every call into SoftHSM2 holds this shared; a restart holds it exclusive. SoftHSM2 does not
 * reference-count its sessions, so closing them under a C_Sign still running on another thread
 * (one that passed the mode check just before a switch) would be a use after free there.
 */
static pthread_rwlock_t in_real = PTHREAD_RWLOCK_INITIALIZER;

/* ---------------------------------------------------------------- configuration and load */

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t') {
        s++;
    }
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r')) {
        s[--n] = '\0';
    }
    return s;
}

static int copy_value(char *dst, const char *value)
{
    size_t n = strlen(value);
    if (n == 0 || n >= PATH_MAX) {
        return -1;
    }
    memcpy(dst, value, n + 1);
    return 0;
}

/* Fills library_path, softhsm_conf and sign_us from replica.conf beside this copy. */
static int read_conf(void)
{
    Dl_info self;
    if (dladdr((void *)&read_conf, &self) == 0 || self.dli_fname == NULL) {
        fprintf(stderr, "replica_hsm: dladdr cannot name this library\n");
        return -1;
    }
    char conf[PATH_MAX];
    const char *slash = strrchr(self.dli_fname, '/');
    int dir_len = slash == NULL ? 1 : (int)(slash - self.dli_fname);
    const char *dir = slash == NULL ? "." : self.dli_fname;
    if (snprintf(conf, sizeof conf, "%.*s/replica.conf", dir_len, dir) >= (int)sizeof conf) {
        fprintf(stderr, "replica_hsm: path too long: %s\n", self.dli_fname);
        return -1;
    }
    FILE *file = fopen(conf, "r");
    if (file == NULL) {
        fprintf(stderr, "replica_hsm: cannot read %s: %s\n", conf, strerror(errno));
        return -1;
    }
    char line[PATH_MAX + 64];
    int line_no = 0;
    int bad = 0;
    while (!bad && fgets(line, sizeof line, file) != NULL) {
        line_no++;
        char *text = trim(line);
        if (text[0] == '\0' || text[0] == '#') {
            continue;
        }
        char *eq = strchr(text, '=');
        if (eq == NULL) {
            bad = 1;
            break;
        }
        *eq = '\0';
        char *key = trim(text);
        char *value = trim(eq + 1);
        if (strcmp(key, "library") == 0) {
            bad = copy_value(library_path, value) != 0;
        } else if (strcmp(key, "softhsm_conf") == 0) {
            bad = copy_value(softhsm_conf, value) != 0;
        } else if (strcmp(key, "sign_us") == 0) {
            char *end;
            errno = 0;
            sign_us = strtoul(value, &end, 10);
            bad = errno != 0 || end == value || *end != '\0';
        } else {
            bad = 1; /* a misspelt key would otherwise silently give a replica without it */
        }
    }
    int read_error = ferror(file);
    fclose(file);
    if (bad || read_error) {
        fprintf(stderr, "replica_hsm: %s: %s at line %d\n", conf,
                read_error ? "read error" : "bad or unknown setting", line_no);
        return -1;
    }
    if (library_path[0] == '\0' || softhsm_conf[0] == '\0') {
        fprintf(stderr, "replica_hsm: %s: needs library= and softhsm_conf=\n", conf);
        return -1;
    }
    return 0;
}

static void build_table(void);

static void load(void)
{
    if (read_conf() != 0) {
        return;
    }
    void *library = dlopen(library_path, RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        fprintf(stderr, "replica_hsm: cannot load %s: %s\n", library_path, dlerror());
        return;
    }
    CK_C_GetFunctionList get_list;
    *(void **)&get_list = dlsym(library, "C_GetFunctionList");
    if (get_list == NULL || get_list(&real) != CKR_OK || real == NULL) {
        fprintf(stderr, "replica_hsm: %s: no C_GetFunctionList\n", library_path);
        return;
    }
    /* Never dlclose'd: SoftHSM2 cannot be unloaded safely while OpenSSL may still run its
     * atexit handlers, and nothing gains from unloading a test double. */
    build_table();
    load_rv = CKR_OK;
}

/* ---------------------------------------------------------------- the gate */

enum gate {
    GATE_PASS,    /* C_Initialize, C_Finalize, C_GetInfo: forwarded in every mode */
    GATE_OTHER,   /* refused with CKR_DEVICE_ERROR in error mode, forwarded when gone */
    GATE_SLOT,    /* slot-ID functions */
    GATE_SESSION, /* session-handle functions */
};

static int current_mode(void)
{
    return __atomic_load_n(&mode, __ATOMIC_ACQUIRE);
}

static CK_RV refusal(enum gate gate, int m)
{
    if (gate == GATE_PASS || m == MODE_UP) {
        return CKR_OK;
    }
    if (m == MODE_ERROR) {
        return CKR_DEVICE_ERROR;
    }
    switch (gate) {
    case GATE_SLOT:
        return CKR_SLOT_ID_INVALID;
    case GATE_SESSION:
        return CKR_DEVICE_REMOVED;
    default:
        return CKR_OK;
    }
}

/*
 * Counts the call and, when the mode lets it through, takes in_real shared; the caller must
 * then call leave(). The mode is checked again under the lock so that a call racing a switch to
 * error or gone cannot reach SoftHSM2 while a restart closes its sessions.
 */
static CK_RV enter(enum gate gate)
{
    __atomic_add_fetch(&calls, 1, __ATOMIC_RELAXED);
    CK_RV rv = refusal(gate, current_mode());
    if (rv != CKR_OK) {
        return rv;
    }
    pthread_rwlock_rdlock(&in_real);
    rv = refusal(gate, current_mode());
    if (rv != CKR_OK) {
        pthread_rwlock_unlock(&in_real);
    }
    return rv;
}

static void leave(void)
{
    pthread_rwlock_unlock(&in_real);
}

/* ---------------------------------------------------------------- wrappers */

static CK_RV get_function_list(CK_FUNCTION_LIST **list)
{
    if (list == NULL) {
        return CKR_ARGUMENTS_BAD;
    }
    pthread_once(&once, load);
    if (load_rv != CKR_OK) {
        return load_rv;
    }
    *list = &table;
    return CKR_OK;
}

static void env_lock_path(char *path, size_t size)
{
    snprintf(path, size, "/tmp/replica_hsm-%u.lock", (unsigned)getuid());
}

/* Returns the descriptor holding the lock, or -1 if it could not be had (then the caller goes
 * on unlocked: a wrong token directory shows at once in the test, a hang would not). */
static int env_lock(void)
{
    char path[64];
    env_lock_path(path, sizeof path);
    int fd = open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "replica_hsm: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    while (flock(fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            fprintf(stderr, "replica_hsm: cannot lock %s: %s\n", path, strerror(errno));
            close(fd);
            return -1;
        }
    }
    return fd;
}

static CK_RV r_Initialize(void *args)
{
    CK_RV rv = enter(GATE_PASS);
    if (rv != CKR_OK) {
        return rv;
    }
    int lock = env_lock();
    const char *old = getenv("SOFTHSM2_CONF");
    char *saved = old == NULL ? NULL : strdup(old);
    if (old != NULL && saved == NULL) {
        rv = CKR_HOST_MEMORY;
    } else if (setenv("SOFTHSM2_CONF", softhsm_conf, 1) != 0) {
        rv = CKR_HOST_MEMORY;
    } else {
        rv = real->C_Initialize(args);
        if (saved != NULL) {
            setenv("SOFTHSM2_CONF", saved, 1);
        } else {
            unsetenv("SOFTHSM2_CONF");
        }
    }
    free(saved);
    if (lock >= 0) {
        close(lock); /* drops the flock */
    }
    leave();
    return rv;
}

static CK_RV r_GetSlotList(CK_BBOOL present, CK_SLOT_ID *slots, CK_ULONG *count)
{
    __atomic_add_fetch(&calls, 1, __ATOMIC_RELAXED);
    int m = current_mode();
    if (m == MODE_ERROR) {
        return CKR_DEVICE_ERROR;
    }
    if (m == MODE_GONE) {
        if (count == NULL) {
            return CKR_ARGUMENTS_BAD;
        }
        *count = 0;
        return CKR_OK;
    }
    pthread_rwlock_rdlock(&in_real);
    CK_RV rv;
    m = current_mode();
    if (m != MODE_UP) {
        /* A switch came in between: answer as the new mode does. */
        if (m == MODE_ERROR) {
            rv = CKR_DEVICE_ERROR;
        } else if (count == NULL) {
            rv = CKR_ARGUMENTS_BAD;
        } else {
            *count = 0;
            rv = CKR_OK;
        }
    } else {
        rv = real->C_GetSlotList(present, slots, count);
    }
    leave();
    return rv;
}

static void pace(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long spent = (now.tv_sec - start->tv_sec) * 1000000000LL + (now.tv_nsec - start->tv_nsec);
    long long owed = (long long)sign_us * 1000LL - spent;
    if (owed <= 0) {
        return;
    }
    struct timespec rest = { .tv_sec = owed / 1000000000LL, .tv_nsec = owed % 1000000000LL };
    while (nanosleep(&rest, &rest) != 0 && errno == EINTR) {
    }
}

static CK_RV r_Sign(CK_SESSION_HANDLE session, CK_BYTE *data, CK_ULONG len, CK_BYTE *signature,
                    CK_ULONG *signature_len)
{
    CK_RV rv = enter(GATE_SESSION);
    if (rv != CKR_OK) {
        return rv;
    }
    if (signature == NULL) {
        rv = real->C_Sign(session, data, len, signature, signature_len);
    } else if (sign_us == 0) {
        rv = real->C_Sign(session, data, len, signature, signature_len);
    } else {
        pthread_mutex_lock(&sign_unit);
        struct timespec start;
        clock_gettime(CLOCK_MONOTONIC, &start);
        rv = real->C_Sign(session, data, len, signature, signature_len);
        pace(&start);
        pthread_mutex_unlock(&sign_unit);
    }
    if (signature != NULL && rv == CKR_OK) {
        __atomic_add_fetch(&signs, 1, __ATOMIC_RELAXED);
    }
    leave();
    return rv;
}

/* One wrapper per forwarded function: gate, call the real one, leave. */
#define FORWARD(gate, name, params, args)                                                      \
    static CK_RV r_##name params                                                               \
    {                                                                                          \
        CK_RV rv = enter(gate);                                                                \
        if (rv != CKR_OK) {                                                                    \
            return rv;                                                                         \
        }                                                                                      \
        rv = real->C_##name args;                                                              \
        leave();                                                                               \
        return rv;                                                                             \
    }

#define SESSION(name, params, args) FORWARD(GATE_SESSION, name, params, args)
#define SLOT(name, params, args) FORWARD(GATE_SLOT, name, params, args)

typedef CK_SESSION_HANDLE SH;
typedef CK_OBJECT_HANDLE OH;

FORWARD(GATE_PASS, Finalize, (void *r), (r))
FORWARD(GATE_PASS, GetInfo, (CK_INFO *info), (info))
FORWARD(GATE_OTHER, WaitForSlotEvent, (CK_FLAGS f, CK_SLOT_ID *slot, void *r), (f, slot, r))

SLOT(GetSlotInfo, (CK_SLOT_ID id, CK_SLOT_INFO *info), (id, info))
SLOT(GetTokenInfo, (CK_SLOT_ID id, CK_TOKEN_INFO *info), (id, info))
SLOT(GetMechanismList, (CK_SLOT_ID id, CK_MECHANISM_TYPE *list, CK_ULONG *n), (id, list, n))
SLOT(GetMechanismInfo, (CK_SLOT_ID id, CK_MECHANISM_TYPE t, CK_MECHANISM_INFO *info),
     (id, t, info))
SLOT(InitToken, (CK_SLOT_ID id, CK_UTF8CHAR *pin, CK_ULONG n, CK_UTF8CHAR *label),
     (id, pin, n, label))
SLOT(OpenSession, (CK_SLOT_ID id, CK_FLAGS f, void *app, CK_NOTIFY notify, SH *s),
     (id, f, app, notify, s))
SLOT(CloseAllSessions, (CK_SLOT_ID id), (id))

SESSION(InitPIN, (SH s, CK_UTF8CHAR *pin, CK_ULONG n), (s, pin, n))
SESSION(SetPIN, (SH s, CK_UTF8CHAR *o, CK_ULONG on, CK_UTF8CHAR *n, CK_ULONG nn),
        (s, o, on, n, nn))
SESSION(CloseSession, (SH s), (s))
SESSION(GetSessionInfo, (SH s, CK_SESSION_INFO *info), (s, info))
SESSION(GetOperationState, (SH s, CK_BYTE *st, CK_ULONG *n), (s, st, n))
SESSION(SetOperationState, (SH s, CK_BYTE *st, CK_ULONG n, OH e, OH a), (s, st, n, e, a))
SESSION(Login, (SH s, CK_USER_TYPE u, CK_UTF8CHAR *pin, CK_ULONG n), (s, u, pin, n))
SESSION(Logout, (SH s), (s))
SESSION(CreateObject, (SH s, CK_ATTRIBUTE *t, CK_ULONG n, OH *o), (s, t, n, o))
SESSION(CopyObject, (SH s, OH o, CK_ATTRIBUTE *t, CK_ULONG n, OH *c), (s, o, t, n, c))
SESSION(DestroyObject, (SH s, OH o), (s, o))
SESSION(GetObjectSize, (SH s, OH o, CK_ULONG *n), (s, o, n))
SESSION(GetAttributeValue, (SH s, OH o, CK_ATTRIBUTE *t, CK_ULONG n), (s, o, t, n))
SESSION(SetAttributeValue, (SH s, OH o, CK_ATTRIBUTE *t, CK_ULONG n), (s, o, t, n))
SESSION(FindObjectsInit, (SH s, CK_ATTRIBUTE *t, CK_ULONG n), (s, t, n))
SESSION(FindObjects, (SH s, OH *o, CK_ULONG max, CK_ULONG *n), (s, o, max, n))
SESSION(FindObjectsFinal, (SH s), (s))
SESSION(EncryptInit, (SH s, CK_MECHANISM *m, OH k), (s, m, k))
SESSION(Encrypt, (SH s, CK_BYTE *i, CK_ULONG in, CK_BYTE *o, CK_ULONG *on), (s, i, in, o, on))
SESSION(EncryptUpdate, (SH s, CK_BYTE *i, CK_ULONG in, CK_BYTE *o, CK_ULONG *on),
        (s, i, in, o, on))
SESSION(EncryptFinal, (SH s, CK_BYTE *o, CK_ULONG *on), (s, o, on))
SESSION(DecryptInit, (SH s, CK_MECHANISM *m, OH k), (s, m, k))
SESSION(Decrypt, (SH s, CK_BYTE *i, CK_ULONG in, CK_BYTE *o, CK_ULONG *on), (s, i, in, o, on))
SESSION(DecryptUpdate, (SH s, CK_BYTE *i, CK_ULONG in, CK_BYTE *o, CK_ULONG *on),
        (s, i, in, o, on))
SESSION(DecryptFinal, (SH s, CK_BYTE *o, CK_ULONG *on), (s, o, on))
SESSION(DigestInit, (SH s, CK_MECHANISM *m), (s, m))
SESSION(Digest, (SH s, CK_BYTE *i, CK_ULONG in, CK_BYTE *o, CK_ULONG *on), (s, i, in, o, on))
SESSION(DigestUpdate, (SH s, CK_BYTE *i, CK_ULONG in), (s, i, in))
SESSION(DigestKey, (SH s, OH k), (s, k))
SESSION(DigestFinal, (SH s, CK_BYTE *o, CK_ULONG *on), (s, o, on))
SESSION(SignInit, (SH s, CK_MECHANISM *m, OH k), (s, m, k))
SESSION(SignUpdate, (SH s, CK_BYTE *i, CK_ULONG in), (s, i, in))
SESSION(SignFinal, (SH s, CK_BYTE *o, CK_ULONG *on), (s, o, on))
SESSION(SignRecoverInit, (SH s, CK_MECHANISM *m, OH k), (s, m, k))
SESSION(SignRecover, (SH s, CK_BYTE *i, CK_ULONG in, CK_BYTE *o, CK_ULONG *on),
        (s, i, in, o, on))
SESSION(VerifyInit, (SH s, CK_MECHANISM *m, OH k), (s, m, k))
SESSION(Verify, (SH s, CK_BYTE *i, CK_ULONG in, CK_BYTE *g, CK_ULONG gn), (s, i, in, g, gn))
SESSION(VerifyUpdate, (SH s, CK_BYTE *i, CK_ULONG in), (s, i, in))
SESSION(VerifyFinal, (SH s, CK_BYTE *g, CK_ULONG gn), (s, g, gn))
SESSION(VerifyRecoverInit, (SH s, CK_MECHANISM *m, OH k), (s, m, k))
SESSION(VerifyRecover, (SH s, CK_BYTE *g, CK_ULONG gn, CK_BYTE *o, CK_ULONG *on),
        (s, g, gn, o, on))
SESSION(DigestEncryptUpdate, (SH s, CK_BYTE *i, CK_ULONG in, CK_BYTE *o, CK_ULONG *on),
        (s, i, in, o, on))
SESSION(DecryptDigestUpdate, (SH s, CK_BYTE *i, CK_ULONG in, CK_BYTE *o, CK_ULONG *on),
        (s, i, in, o, on))
SESSION(SignEncryptUpdate, (SH s, CK_BYTE *i, CK_ULONG in, CK_BYTE *o, CK_ULONG *on),
        (s, i, in, o, on))
SESSION(DecryptVerifyUpdate, (SH s, CK_BYTE *i, CK_ULONG in, CK_BYTE *o, CK_ULONG *on),
        (s, i, in, o, on))
SESSION(GenerateKey, (SH s, CK_MECHANISM *m, CK_ATTRIBUTE *t, CK_ULONG n, OH *k),
        (s, m, t, n, k))
SESSION(GenerateKeyPair,
        (SH s, CK_MECHANISM *m, CK_ATTRIBUTE *pt, CK_ULONG pn, CK_ATTRIBUTE *vt, CK_ULONG vn,
         OH *pub, OH *priv),
        (s, m, pt, pn, vt, vn, pub, priv))
SESSION(WrapKey, (SH s, CK_MECHANISM *m, OH w, OH k, CK_BYTE *o, CK_ULONG *on),
        (s, m, w, k, o, on))
SESSION(UnwrapKey,
        (SH s, CK_MECHANISM *m, OH u, CK_BYTE *i, CK_ULONG in, CK_ATTRIBUTE *t, CK_ULONG n,
         OH *k),
        (s, m, u, i, in, t, n, k))
SESSION(DeriveKey, (SH s, CK_MECHANISM *m, OH b, CK_ATTRIBUTE *t, CK_ULONG n, OH *k),
        (s, m, b, t, n, k))
SESSION(SeedRandom, (SH s, CK_BYTE *i, CK_ULONG in), (s, i, in))
SESSION(GenerateRandom, (SH s, CK_BYTE *o, CK_ULONG on), (s, o, on))
SESSION(GetFunctionStatus, (SH s), (s))
SESSION(CancelFunction, (SH s), (s))

static void build_table(void)
{
    table = *real; /* keeps the real version (2.40) */
    table.C_GetFunctionList = get_function_list;
    /* An entry the real library leaves out stays out rather than becoming a wrapper of NULL. */
#define SET(name) table.C_##name = real->C_##name == NULL ? NULL : r_##name
    SET(Initialize);
    SET(Finalize);
    SET(GetInfo);
    SET(GetSlotList);
    SET(GetSlotInfo);
    SET(GetTokenInfo);
    SET(GetMechanismList);
    SET(GetMechanismInfo);
    SET(InitToken);
    SET(InitPIN);
    SET(SetPIN);
    SET(OpenSession);
    SET(CloseSession);
    SET(CloseAllSessions);
    SET(GetSessionInfo);
    SET(GetOperationState);
    SET(SetOperationState);
    SET(Login);
    SET(Logout);
    SET(CreateObject);
    SET(CopyObject);
    SET(DestroyObject);
    SET(GetObjectSize);
    SET(GetAttributeValue);
    SET(SetAttributeValue);
    SET(FindObjectsInit);
    SET(FindObjects);
    SET(FindObjectsFinal);
    SET(EncryptInit);
    SET(Encrypt);
    SET(EncryptUpdate);
    SET(EncryptFinal);
    SET(DecryptInit);
    SET(Decrypt);
    SET(DecryptUpdate);
    SET(DecryptFinal);
    SET(DigestInit);
    SET(Digest);
    SET(DigestUpdate);
    SET(DigestKey);
    SET(DigestFinal);
    SET(SignInit);
    SET(Sign);
    SET(SignUpdate);
    SET(SignFinal);
    SET(SignRecoverInit);
    SET(SignRecover);
    SET(VerifyInit);
    SET(Verify);
    SET(VerifyUpdate);
    SET(VerifyFinal);
    SET(VerifyRecoverInit);
    SET(VerifyRecover);
    SET(DigestEncryptUpdate);
    SET(DecryptDigestUpdate);
    SET(SignEncryptUpdate);
    SET(DecryptVerifyUpdate);
    SET(GenerateKey);
    SET(GenerateKeyPair);
    SET(WrapKey);
    SET(UnwrapKey);
    SET(DeriveKey);
    SET(SeedRandom);
    SET(GenerateRandom);
    SET(GetFunctionStatus);
    SET(CancelFunction);
    SET(WaitForSlotEvent);
#undef SET
}

/* ---------------------------------------------------------------- restart and exports */

/* The restarted HSM: every session of the real library closed (SoftHSM2 logs out with the last
 * one). Runs with in_real exclusive, so no call is inside SoftHSM2 meanwhile. */
static void restart(void)
{
    pthread_once(&once, load);
    if (load_rv != CKR_OK) {
        return;
    }
    pthread_rwlock_wrlock(&in_real);
    CK_ULONG count = 0;
    /* Not initialised (or finalised): there are no sessions to close. */
    if (real->C_GetSlotList(CK_TRUE, NULL, &count) == CKR_OK && count > 0) {
        CK_SLOT_ID *slots = calloc(count, sizeof *slots);
        if (slots != NULL && real->C_GetSlotList(CK_TRUE, slots, &count) == CKR_OK) {
            for (CK_ULONG i = 0; i < count; i++) {
                (void)real->C_CloseAllSessions(slots[i]);
            }
        }
        free(slots);
    }
    pthread_rwlock_unlock(&in_real);
}

static void set_mode(int new_mode)
{
    if (new_mode != MODE_UP && new_mode != MODE_ERROR && new_mode != MODE_GONE) {
        return;
    }
    pthread_mutex_lock(&switching);
    if (new_mode == MODE_UP && current_mode() != MODE_UP) {
        restart();
    }
    __atomic_store_n(&mode, new_mode, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&switching);
}

EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST **list)
{
    return get_function_list(list);
}

EXPORT void replica_hsm_set_mode(int new_mode)
{
    set_mode(new_mode);
}

EXPORT int replica_hsm_mode(void)
{
    return current_mode();
}

EXPORT unsigned long replica_hsm_signs(void)
{
    return __atomic_load_n(&signs, __ATOMIC_RELAXED);
}

EXPORT unsigned long replica_hsm_calls(void)
{
    return __atomic_load_n(&calls, __ATOMIC_RELAXED);
}

/*
 * faulty_hsm.c: a PKCS#11 library that is SoftHSM2 with a switchable device fault, for the
 * fault tests of tests/abi_forward.rs.
 *
 * It loads the real library (FAULTY_HSM_REAL, default /usr/lib/softhsm/libsofthsm2.so), takes
 * its C_GetFunctionList table and hands out a copy in which C_Sign, C_Encrypt and
 * C_GenerateRandom answer CKR_DEVICE_ERROR while the file named by FAULTY_HSM_TRIGGER exists,
 * and forward otherwise. Everything else is the real library's own function.
 *
 * A failing C_Sign or C_Encrypt behaves as a conforming device does: any answer but
 * CKR_BUFFER_TOO_SMALL ends the active operation, so the real operation is run to its end into
 * a scratch buffer (and thrown away) before the error is returned.
 *
 * With FAULTY_HSM_LOGIN_DELAY_MS set, C_Login waits that long before asking the real library,
 * so that a test can kill a process in the middle of a login.
 *
 * Deliberately no C_GetInterface: the module under test must fall back to C_GetFunctionList.
 * Built with -DFAULTY_HSM_3_0 it is a 3.0 library instead (see the end of this file).
 *
 * Build: cc -shared -fPIC -Wall -Werror -I include tests/forward_common/faulty_hsm.c -ldl -o libfaulty.so
 */

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pkcs11.h"

#define DEFAULT_REAL "/usr/lib/softhsm/libsofthsm2.so"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static CK_RV load_rv = CKR_GENERAL_ERROR;
static CK_FUNCTION_LIST *real;
static CK_FUNCTION_LIST faulty;

static int faulting(void)
{
    const char *trigger = getenv("FAULTY_HSM_TRIGGER");
    return trigger != NULL && trigger[0] != '\0' && access(trigger, F_OK) == 0;
}

/* Runs the real single-part function to its end into a scratch buffer, discarding the output. */
static void end_real(CK_C_Sign function, CK_SESSION_HANDLE session, CK_BYTE_PTR data,
                     CK_ULONG len)
{
    CK_ULONG scratch_len = len + 16384;
    CK_BYTE *scratch = malloc(scratch_len);
    if (scratch == NULL) {
        return;
    }
    (void)function(session, data, len, scratch, &scratch_len);
    memset(scratch, 0, len + 16384);
    free(scratch);
}

static CK_RV faulty_sign(CK_SESSION_HANDLE session, CK_BYTE_PTR data, CK_ULONG len,
                         CK_BYTE_PTR signature, CK_ULONG_PTR signature_len)
{
    if (faulting()) {
        end_real(real->C_Sign, session, data, len);
        return CKR_DEVICE_ERROR;
    }
    return real->C_Sign(session, data, len, signature, signature_len);
}

static CK_RV faulty_encrypt(CK_SESSION_HANDLE session, CK_BYTE_PTR data, CK_ULONG len,
                            CK_BYTE_PTR encrypted, CK_ULONG_PTR encrypted_len)
{
    if (faulting()) {
        end_real(real->C_Encrypt, session, data, len);
        return CKR_DEVICE_ERROR;
    }
    return real->C_Encrypt(session, data, len, encrypted, encrypted_len);
}

static CK_RV faulty_generate_random(CK_SESSION_HANDLE session, CK_BYTE_PTR out, CK_ULONG len)
{
    if (faulting()) {
        return CKR_DEVICE_ERROR;
    }
    return real->C_GenerateRandom(session, out, len);
}

static CK_RV slow_login(CK_SESSION_HANDLE session, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin,
                        CK_ULONG pin_len)
{
    const char *delay = getenv("FAULTY_HSM_LOGIN_DELAY_MS");
    if (delay != NULL && delay[0] != '\0') {
        usleep((useconds_t)atoi(delay) * 1000);
    }
    return real->C_Login(session, user, pin, pin_len);
}

static void load(void)
{
    const char *path = getenv("FAULTY_HSM_REAL");
    if (path == NULL || path[0] == '\0') {
        path = DEFAULT_REAL;
    }
    void *library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        fprintf(stderr, "faulty_hsm: cannot load %s: %s\n", path, dlerror());
        return;
    }
    CK_C_GetFunctionList get_list;
    *(void **)&get_list = dlsym(library, "C_GetFunctionList");
    if (get_list == NULL || get_list(&real) != CKR_OK || real == NULL) {
        fprintf(stderr, "faulty_hsm: %s: no C_GetFunctionList\n", path);
        return;
    }
    /* The library stays loaded for the life of the process. */
    faulty = *real;
    faulty.C_GetFunctionList = C_GetFunctionList;
    faulty.C_Sign = faulty_sign;
    faulty.C_Encrypt = faulty_encrypt;
    faulty.C_GenerateRandom = faulty_generate_random;
    faulty.C_Login = slow_login;
    load_rv = CKR_OK;
}

__attribute__((visibility("default"))) CK_RV C_GetFunctionList(CK_FUNCTION_LIST **list)
{
    if (list == NULL) {
        return CKR_ARGUMENTS_BAD;
    }
    pthread_once(&once, load);
    if (load_rv != CKR_OK) {
        return load_rv;
    }
    *list = &faulty;
    return CKR_OK;
}

#ifdef FAULTY_HSM_3_0
/*
 * Built with -DFAULTY_HSM_3_0, the library also offers a PKCS#11 3.0 interface (C_GetInterface,
 * version 3.0 only): SoftHSM's 2.40 functions as above, plus
 *   C_LoginUser     one named user, "operator", who logs in with the token's user PIN (C_Login);
 *                   any other name is refused with CKR_PIN_INCORRECT;
 *   C_SessionCancel ends the session's signing or verification in SoftHSM (which has no
 *                   C_SessionCancel of its own) the way a conforming device would.
 * faulty_hsm_named_logins() and faulty_hsm_cancels() count the calls, so that a test can tell
 * that the module forwarded them.
 */
static CK_FUNCTION_LIST_3_0 table_3_0;
static unsigned long named_logins;
static unsigned long cancels;

__attribute__((visibility("default"))) unsigned long faulty_hsm_named_logins(void)
{
    return __atomic_load_n(&named_logins, __ATOMIC_SEQ_CST);
}

__attribute__((visibility("default"))) unsigned long faulty_hsm_cancels(void)
{
    return __atomic_load_n(&cancels, __ATOMIC_SEQ_CST);
}

static CK_RV login_user(CK_SESSION_HANDLE session, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin,
                        CK_ULONG pin_len, CK_UTF8CHAR_PTR name, CK_ULONG name_len)
{
    __atomic_add_fetch(&named_logins, 1, __ATOMIC_SEQ_CST);
    if (name == NULL || name_len != 8 || memcmp(name, "operator", 8) != 0) {
        return CKR_PIN_INCORRECT;
    }
    return real->C_Login(session, user, pin, pin_len);
}

static CK_RV session_cancel(CK_SESSION_HANDLE session, CK_FLAGS flags)
{
    __atomic_add_fetch(&cancels, 1, __ATOMIC_SEQ_CST);
    CK_BYTE scratch[16384];
    CK_ULONG len = sizeof scratch;
    if (flags & CKF_SIGN) {
        (void)real->C_SignFinal(session, scratch, &len);
        len = sizeof scratch;
        (void)real->C_Sign(session, scratch, 0, scratch, &len);
    }
    if (flags & CKF_VERIFY) {
        (void)real->C_VerifyFinal(session, scratch, 0);
        (void)real->C_Verify(session, scratch, 0, scratch, 0);
    }
    return CKR_OK;
}

static CK_INTERFACE interface_3_0 = {(CK_UTF8CHAR_PTR) "PKCS 11", &table_3_0, 0};

static CK_RV get_interface(CK_UTF8CHAR_PTR name, CK_VERSION_PTR version,
                           CK_INTERFACE_PTR_PTR interface, CK_FLAGS flags);

static CK_RV get_interface_list(CK_INTERFACE_PTR list, CK_ULONG_PTR count)
{
    if (count == NULL) {
        return CKR_ARGUMENTS_BAD;
    }
    if (list != NULL) {
        if (*count < 1) {
            *count = 1;
            return CKR_BUFFER_TOO_SMALL;
        }
        list[0] = interface_3_0;
    }
    *count = 1;
    return CKR_OK;
}

static void build_3_0(void)
{
    memcpy(&table_3_0, &faulty, sizeof faulty);
    table_3_0.version.major = 3;
    table_3_0.version.minor = 0;
    table_3_0.C_GetInterfaceList = get_interface_list;
    table_3_0.C_GetInterface = get_interface;
    table_3_0.C_LoginUser = login_user;
    table_3_0.C_SessionCancel = session_cancel;
}

static pthread_once_t once_3_0 = PTHREAD_ONCE_INIT;

static CK_RV get_interface(CK_UTF8CHAR_PTR name, CK_VERSION_PTR version,
                           CK_INTERFACE_PTR_PTR interface, CK_FLAGS flags)
{
    (void)flags;
    if (interface == NULL) {
        return CKR_ARGUMENTS_BAD;
    }
    if (name != NULL && strcmp((const char *)name, "PKCS 11") != 0) {
        return CKR_ARGUMENTS_BAD;
    }
    if (version != NULL && (version->major != 3 || version->minor != 0)) {
        return CKR_ARGUMENTS_BAD;
    }
    pthread_once(&once, load);
    if (load_rv != CKR_OK) {
        return load_rv;
    }
    pthread_once(&once_3_0, build_3_0);
    *interface = &interface_3_0;
    return CKR_OK;
}

__attribute__((visibility("default"))) CK_RV C_GetInterface(CK_UTF8CHAR_PTR name,
                                                            CK_VERSION_PTR version,
                                                            CK_INTERFACE_PTR_PTR interface,
                                                            CK_FLAGS flags)
{
    return get_interface(name, version, interface, flags);
}

__attribute__((visibility("default"))) CK_RV C_GetInterfaceList(CK_INTERFACE_PTR list,
                                                                CK_ULONG_PTR count)
{
    return get_interface_list(list, count);
}
#endif

/*
 * abi_smoke.c - black-box ABI smoke test of libb4ae_pkcs11.so, built against
 * include/b4ae_pkcs11.h only (which pulls in include/pkcs11.h, PKCS#11 3.2).
 *
 *   cc -Wall -Wextra -Werror -I include pkcs11-test-suite/c/abi_smoke.c -ldl -o abi_smoke
 *   B4AE_PKCS11_CONF=/tmp/x/conf.toml ./abi_smoke target/release/libb4ae_pkcs11.so
 *
 * The configuration must hold one fresh (never initialised) embedded token in
 * slot 0, with pin_kdf = "test-only-fast".  For example:
 *
 *   [[token]]
 *   label = "C-Test"
 *   backend = "embedded"
 *   path = "/tmp/x/token0"
 *   pin_kdf = "test-only-fast"
 *
 * Output: one line per check, "ok - ..." or "not ok - ...", lines starting
 * with "#" are diagnostics.  Exit status 0 when every check passed, 1 when one
 * failed, 2 on a usage error.  If a step that later checks depend on fails,
 * the remaining checks are reported as one "not ok" line and the program
 * finalises the module and exits 1.
 */
#include "b4ae_pkcs11.h"
#include "rv_name.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* B4AE_SIGN_ADDITIONAL_CONTEXT must be layout-identical to the 3.2 struct. */
_Static_assert(sizeof(B4AE_SIGN_ADDITIONAL_CONTEXT) == sizeof(CK_SIGN_ADDITIONAL_CONTEXT),
               "B4AE_SIGN_ADDITIONAL_CONTEXT size");
_Static_assert(offsetof(B4AE_SIGN_ADDITIONAL_CONTEXT, pContext) ==
                   offsetof(CK_SIGN_ADDITIONAL_CONTEXT, pContext),
               "B4AE_SIGN_ADDITIONAL_CONTEXT.pContext offset");
_Static_assert(offsetof(B4AE_SIGN_ADDITIONAL_CONTEXT, ulContextLen) ==
                   offsetof(CK_SIGN_ADDITIONAL_CONTEXT, ulContextLen),
               "B4AE_SIGN_ADDITIONAL_CONTEXT.ulContextLen offset");

#define SO_PIN "12345678"
#define USER_PIN "11223344"
#define TOKEN_LABEL "c-test"
#define PUB_LABEL "c-test-mldsa87-pub"
#define PRIV_LABEL "c-test-mldsa87-priv"
#define ML_DSA_87_SIG_LEN 4627UL
#define ML_DSA_87_PK_LEN 2592UL
#define SLOT ((CK_SLOT_ID)0)
#define BOGUS_SESSION ((CK_SESSION_HANDLE)0x5EEDBEEFUL)

static int n_pass;
static int n_fail;

static void check(int cond, const char *name, const char *fmt_detail, ...)
    __attribute__((format(printf, 3, 4)));

static void check(int cond, const char *name, const char *fmt_detail, ...)
{
    if (cond) {
        n_pass++;
        printf("ok - %s\n", name);
    } else {
        n_fail++;
        printf("not ok - %s", name);
        if (fmt_detail != NULL && fmt_detail[0] != '\0') {
            va_list ap;
            va_start(ap, fmt_detail);
            printf(" (");
            vprintf(fmt_detail, ap);
            printf(")");
            va_end(ap);
        }
        printf("\n");
    }
    fflush(stdout);
}

/* Check that rv is exactly `want`; returns whether it was. */
static int check_rv(CK_RV rv, CK_RV want, const char *name)
{
    check(rv == want, name, "got %s 0x%lX, want %s 0x%lX", rv_name(rv), (unsigned long)rv,
          rv_name(want), (unsigned long)want);
    return rv == want;
}

/* A "proper" error: anything but success and the catch-all bug answer. */
static int check_proper_error(CK_RV rv, const char *name)
{
    int good = rv != CKR_OK && rv != CKR_GENERAL_ERROR;
    check(good, name, "got %s 0x%lX, want an error other than CKR_GENERAL_ERROR", rv_name(rv),
          (unsigned long)rv);
    if (good)
        printf("# %s answered %s 0x%lX\n", name, rv_name(rv), (unsigned long)rv);
    return good;
}

/* dlsym without the object/function pointer conversion warning. */
static void *sym(void *lib, const char *name)
{
    dlerror();
    return dlsym(lib, name);
}

/*
 * Count NULL entries of a function table: a CK_VERSION followed by function
 * pointers up to the end of the struct.
 */
static size_t null_entries(const void *table, size_t first_fn_offset, size_t table_size,
                           size_t *n_entries)
{
    typedef void (*any_fn)(void);
    const unsigned char *p = (const unsigned char *)table;
    size_t n = (table_size - first_fn_offset) / sizeof(any_fn);
    size_t nulls = 0;
    for (size_t i = 0; i < n; i++) {
        any_fn f;
        memcpy(&f, p + first_fn_offset + i * sizeof(any_fn), sizeof f);
        if (f == NULL)
            nulls++;
    }
    *n_entries = n;
    return nulls;
}

static int version_is(CK_VERSION v, int major, int minor)
{
    return v.major == major && v.minor == minor;
}

static void pad_label(CK_UTF8CHAR out[32], const char *label)
{
    size_t n = strlen(label);
    memset(out, ' ', 32);
    memcpy(out, label, n > 32 ? 32 : n);
}

/* Find objects by class and label; returns the number found (at most max). */
static CK_ULONG find_by_label(CK_FUNCTION_LIST_3_2 *f, CK_SESSION_HANDLE h, CK_OBJECT_CLASS cls,
                              const char *label, CK_OBJECT_HANDLE *out, CK_ULONG max, CK_RV *prv)
{
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof cls},
        {CKA_LABEL, (void *)label, (CK_ULONG)strlen(label)},
    };
    CK_ULONG found = 0;
    CK_RV rv = f->C_FindObjectsInit(h, tmpl, 2);
    if (rv == CKR_OK) {
        rv = f->C_FindObjects(h, out, max, &found);
        CK_RV rv2 = f->C_FindObjectsFinal(h);
        if (rv == CKR_OK)
            rv = rv2;
    }
    *prv = rv;
    return rv == CKR_OK ? found : 0;
}

static CK_RV get_ulong_attr(CK_FUNCTION_LIST_3_2 *f, CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o,
                            CK_ATTRIBUTE_TYPE type, CK_ULONG *value)
{
    CK_ATTRIBUTE a = {type, value, sizeof *value};
    CK_RV rv = f->C_GetAttributeValue(h, o, &a, 1);
    if (rv == CKR_OK && a.ulValueLen != sizeof *value)
        return CKR_ATTRIBUTE_VALUE_INVALID;
    return rv;
}

int main(int argc, char **argv)
{
    CK_RV rv;
    int initialized = 0;
    const char *bail = NULL;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 2) {
        fprintf(stderr, "usage: %s /path/to/libb4ae_pkcs11.so\n", argv[0]);
        return 2;
    }
    if (getenv("B4AE_PKCS11_CONF") == NULL) {
        fprintf(stderr, "B4AE_PKCS11_CONF must name a config with one fresh embedded token "
                        "in slot 0 (pin_kdf = \"test-only-fast\")\n");
        return 2;
    }

    /* ------------------------------------------------------------ loading */
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    check(lib != NULL, "dlopen module", "%s", dlerror());
    if (lib == NULL)
        return 1;

    void *s_get_interface = sym(lib, "C_GetInterface");
    void *s_get_interface_list = sym(lib, "C_GetInterfaceList");
    void *s_get_function_list = sym(lib, "C_GetFunctionList");
    check(s_get_interface != NULL, "exports C_GetInterface", "%s", "missing symbol");
    check(s_get_interface_list != NULL, "exports C_GetInterfaceList", "%s", "missing symbol");
    check(s_get_function_list != NULL, "exports C_GetFunctionList", "%s", "missing symbol");
    if (s_get_interface == NULL || s_get_function_list == NULL) {
        printf("not ok - remaining checks did not run: entry points missing\n");
        return 1;
    }
    CK_C_GetInterface get_interface;
    CK_C_GetInterfaceList get_interface_list = NULL;
    CK_C_GetFunctionList get_function_list;
    memcpy(&get_interface, &s_get_interface, sizeof get_interface);
    memcpy(&get_function_list, &s_get_function_list, sizeof get_function_list);
    if (s_get_interface_list != NULL)
        memcpy(&get_interface_list, &s_get_interface_list, sizeof get_interface_list);

    /* C_GetInterface(NULL, NULL): the newest, which must be "PKCS 11" 3.2. */
    CK_INTERFACE *iface = NULL;
    rv = get_interface(NULL, NULL, &iface, 0);
    check_rv(rv, CKR_OK, "C_GetInterface(NULL, NULL) succeeds");
    if (rv != CKR_OK || iface == NULL || iface->pFunctionList == NULL) {
        check(0, "C_GetInterface(NULL, NULL) returns an interface with a table", "%s",
              "NULL interface or table");
        printf("not ok - remaining checks did not run: no 3.2 function table\n");
        return 1;
    }
    check(iface->pInterfaceName != NULL &&
              strcmp((const char *)iface->pInterfaceName, "PKCS 11") == 0,
          "default interface is named \"PKCS 11\"", "name is %s",
          iface->pInterfaceName ? (const char *)iface->pInterfaceName : "(null)");
    CK_FUNCTION_LIST_3_2 *f = (CK_FUNCTION_LIST_3_2 *)iface->pFunctionList;
    check(version_is(f->version, 3, 2), "default interface table is version 3.2", "got %d.%d",
          f->version.major, f->version.minor);
    if (!version_is(f->version, 3, 2)) {
        /* Using a smaller table as a 3.2 one would read past its end. */
        printf("not ok - remaining checks did not run: the default table is not 3.2\n");
        return 1;
    }
    {
        size_t n, nulls = null_entries(f, offsetof(CK_FUNCTION_LIST_3_2, C_Initialize),
                                       sizeof(CK_FUNCTION_LIST_3_2), &n);
        check(nulls == 0, "3.2 table has every function", "%zu of %zu entries are NULL", nulls,
              n);
        if (nulls != 0) {
            /* Calling through a NULL entry would crash this program. */
            printf("not ok - remaining checks did not run: NULL entries in the 3.2 table\n");
            return 1;
        }
    }

    /* Explicit name and version 3.2 gives the same table. */
    {
        CK_VERSION v32 = {3, 2};
        CK_INTERFACE *i32 = NULL;
        rv = get_interface((CK_UTF8CHAR *)"PKCS 11", &v32, &i32, 0);
        check(rv == CKR_OK && i32 != NULL && i32->pFunctionList != NULL &&
                  version_is(((CK_FUNCTION_LIST_3_2 *)i32->pFunctionList)->version, 3, 2),
              "C_GetInterface(\"PKCS 11\", 3.2) gives a 3.2 table", "rv %s 0x%lX", rv_name(rv),
              (unsigned long)rv);
    }

    /* Version 3.0. */
    {
        CK_VERSION v30 = {3, 0};
        CK_INTERFACE *i30 = NULL;
        rv = get_interface((CK_UTF8CHAR *)"PKCS 11", &v30, &i30, 0);
        int good = rv == CKR_OK && i30 != NULL && i30->pFunctionList != NULL;
        CK_FUNCTION_LIST_3_0 *t30 = good ? (CK_FUNCTION_LIST_3_0 *)i30->pFunctionList : NULL;
        check(good && version_is(t30->version, 3, 0),
              "C_GetInterface(\"PKCS 11\", 3.0) gives a 3.0 table", "rv %s 0x%lX, version %d.%d",
              rv_name(rv), (unsigned long)rv, t30 ? t30->version.major : -1,
              t30 ? t30->version.minor : -1);
        if (t30 != NULL && version_is(t30->version, 3, 0)) {
            size_t n, nulls = null_entries(t30, offsetof(CK_FUNCTION_LIST_3_0, C_Initialize),
                                           sizeof(CK_FUNCTION_LIST_3_0), &n);
            check(nulls == 0, "3.0 table has every function", "%zu of %zu entries are NULL",
                  nulls, n);
        }
    }

    /* Version 2.40 through C_GetInterface. */
    CK_FUNCTION_LIST *f240 = NULL;
    {
        CK_VERSION v240 = {2, 40};
        CK_INTERFACE *i240 = NULL;
        rv = get_interface((CK_UTF8CHAR *)"PKCS 11", &v240, &i240, 0);
        int good = rv == CKR_OK && i240 != NULL && i240->pFunctionList != NULL;
        if (good)
            f240 = (CK_FUNCTION_LIST *)i240->pFunctionList;
        check(good, "C_GetInterface(\"PKCS 11\", 2.40) succeeds", "rv %s 0x%lX", rv_name(rv),
              (unsigned long)rv);
        check(f240 != NULL && version_is(f240->version, 2, 40),
              "C_GetInterface 2.40 table is version 2.40", "got %d.%d",
              f240 ? f240->version.major : -1, f240 ? f240->version.minor : -1);
        /* NULL name means "PKCS 11". */
        CK_INTERFACE *i240b = NULL;
        rv = get_interface(NULL, &v240, &i240b, 0);
        CK_FUNCTION_LIST *t = (rv == CKR_OK && i240b != NULL)
                                  ? (CK_FUNCTION_LIST *)i240b->pFunctionList
                                  : NULL;
        check(t != NULL && version_is(t->version, 2, 40),
              "C_GetInterface(NULL, 2.40) gives the 2.40 table", "rv %s 0x%lX, version %d.%d",
              rv_name(rv), (unsigned long)rv, t ? t->version.major : -1,
              t ? t->version.minor : -1);
    }

    /* An interface that does not exist. */
    {
        CK_VERSION v99 = {9, 9};
        CK_INTERFACE *i99 = NULL;
        rv = get_interface((CK_UTF8CHAR *)"PKCS 11", &v99, &i99, 0);
        check(rv != CKR_OK, "C_GetInterface(\"PKCS 11\", 9.9) fails", "rv %s 0x%lX",
              rv_name(rv), (unsigned long)rv);
        rv = get_interface((CK_UTF8CHAR *)"No Such Interface", NULL, &i99, 0);
        check(rv != CKR_OK, "C_GetInterface(\"No Such Interface\") fails", "rv %s 0x%lX",
              rv_name(rv), (unsigned long)rv);
    }

    /* C_GetInterfaceList: 3.2, 3.0 and 2.40. */
    if (get_interface_list != NULL) {
        CK_ULONG count = 0;
        rv = get_interface_list(NULL, &count);
        check(rv == CKR_OK && count >= 3, "C_GetInterfaceList(NULL) counts at least 3",
              "rv %s 0x%lX, count %lu", rv_name(rv), (unsigned long)rv, (unsigned long)count);
        if (rv == CKR_OK && count > 0 && count < 64) {
            CK_INTERFACE list[64];
            rv = get_interface_list(list, &count);
            int have32 = 0, have30 = 0, have240 = 0;
            for (CK_ULONG i = 0; rv == CKR_OK && i < count; i++) {
                if (list[i].pInterfaceName == NULL || list[i].pFunctionList == NULL ||
                    strcmp((const char *)list[i].pInterfaceName, "PKCS 11") != 0)
                    continue;
                CK_VERSION v = *(CK_VERSION *)list[i].pFunctionList;
                have32 |= version_is(v, 3, 2);
                have30 |= version_is(v, 3, 0);
                have240 |= version_is(v, 2, 40);
            }
            check(rv == CKR_OK && have32 && have30 && have240,
                  "C_GetInterfaceList offers PKCS 11 3.2, 3.0 and 2.40",
                  "rv %s, 3.2:%d 3.0:%d 2.40:%d", rv_name(rv), have32, have30, have240);
        }
    }

    /* C_GetFunctionList: a true 2.40 table. */
    {
        CK_FUNCTION_LIST *fl = NULL;
        rv = get_function_list(&fl);
        check(rv == CKR_OK && fl != NULL, "C_GetFunctionList succeeds", "rv %s 0x%lX",
              rv_name(rv), (unsigned long)rv);
        check(fl != NULL && version_is(fl->version, 2, 40),
              "C_GetFunctionList table is version 2.40", "got %d.%d",
              fl ? fl->version.major : -1, fl ? fl->version.minor : -1);
        if (fl != NULL && version_is(fl->version, 2, 40)) {
            size_t n, nulls = null_entries(fl, offsetof(CK_FUNCTION_LIST, C_Initialize),
                                           sizeof(CK_FUNCTION_LIST), &n);
            check(nulls == 0, "2.40 table has every function", "%zu of %zu entries are NULL",
                  nulls, n);
        }
        CK_FUNCTION_LIST *fl2 = NULL;
        rv = f->C_GetFunctionList != NULL ? f->C_GetFunctionList(&fl2) : CKR_GENERAL_ERROR;
        check(rv == CKR_OK && fl2 != NULL && version_is(fl2->version, 2, 40),
              "3.2 table's C_GetFunctionList gives a 2.40 table", "rv %s 0x%lX, version %d.%d",
              rv_name(rv), (unsigned long)rv, fl2 ? fl2->version.major : -1,
              fl2 ? fl2->version.minor : -1);
        (void)f240;
    }

    /* ------------------------------------------------------ initialisation */
    {
        CK_INFO info;
        rv = f->C_GetInfo(&info);
        check_rv(rv, CKR_CRYPTOKI_NOT_INITIALIZED, "C_GetInfo before C_Initialize");
    }

    CK_C_INITIALIZE_ARGS args;
    memset(&args, 0, sizeof args);
    args.flags = CKF_OS_LOCKING_OK;
    rv = f->C_Initialize(&args);
    if (!check_rv(rv, CKR_OK, "C_Initialize(CKF_OS_LOCKING_OK)")) {
        printf("not ok - remaining checks did not run: C_Initialize failed\n");
        return 1;
    }
    initialized = 1;
    rv = f->C_Initialize(&args);
    check_rv(rv, CKR_CRYPTOKI_ALREADY_INITIALIZED, "second C_Initialize");

    {
        CK_INFO info;
        rv = f->C_GetInfo(&info);
        check_rv(rv, CKR_OK, "C_GetInfo");
        if (rv == CKR_OK)
            printf("# C_GetInfo: cryptoki %d.%d, manufacturer '%.32s', library '%.32s' %d.%d\n",
                   info.cryptokiVersion.major, info.cryptokiVersion.minor, info.manufacturerID,
                   info.libraryDescription, info.libraryVersion.major,
                   info.libraryVersion.minor);
    }

    /* Slot 0 has a token. */
    {
        CK_SLOT_ID slots[16];
        CK_ULONG n = 0;
        rv = f->C_GetSlotList(CK_TRUE, NULL, &n);
        check(rv == CKR_OK && n >= 1, "C_GetSlotList(NULL) counts a token", "rv %s 0x%lX, n %lu",
              rv_name(rv), (unsigned long)rv, (unsigned long)n);
        if (n > 16)
            n = 16;
        rv = f->C_GetSlotList(CK_TRUE, slots, &n);
        int have0 = 0;
        for (CK_ULONG i = 0; rv == CKR_OK && i < n; i++)
            have0 |= slots[i] == SLOT;
        check(rv == CKR_OK && have0, "slot 0 has a token", "rv %s 0x%lX", rv_name(rv),
              (unsigned long)rv);
    }

    CK_TOKEN_INFO ti;
    memset(&ti, 0, sizeof ti);
    rv = f->C_GetTokenInfo(SLOT, &ti);
    check_rv(rv, CKR_OK, "C_GetTokenInfo before C_InitToken");
    check(rv == CKR_OK && !(ti.flags & CKF_TOKEN_INITIALIZED), "token starts uninitialised",
          "flags 0x%lX (the config must give a fresh token)", (unsigned long)ti.flags);

    /* Mechanisms. */
    {
        /* HashML-DSA (0x1F, 0x23..0x2C) joins this list with its own issue. */
        CK_MECHANISM_TYPE want[] = {
            CKM_ML_DSA_KEY_PAIR_GEN, CKM_ML_DSA, CKM_SHA256, CKM_SHA384, CKM_SHA512,
        };
        CK_MECHANISM_TYPE *mechs = NULL;
        CK_ULONG n = 0;
        rv = f->C_GetMechanismList(SLOT, NULL, &n);
        if (rv == CKR_OK && n > 0 && n < 100000) {
            mechs = calloc(n, sizeof *mechs);
            rv = mechs ? f->C_GetMechanismList(SLOT, mechs, &n) : CKR_HOST_MEMORY;
        }
        check_rv(rv, CKR_OK, "C_GetMechanismList");
        char missing[512] = "";
        for (size_t w = 0; w < sizeof want / sizeof want[0]; w++) {
            int have = 0;
            for (CK_ULONG i = 0; rv == CKR_OK && i < n; i++)
                have |= mechs[i] == want[w];
            if (!have) {
                size_t len = strlen(missing);
                snprintf(missing + len, sizeof missing - len, " 0x%lX", (unsigned long)want[w]);
            }
        }
        check(missing[0] == '\0', "mechanism list has ML-DSA, its key generation and SHA-2",
              "missing%s", missing);
        free(mechs);

        CK_MECHANISM_INFO mi;
        rv = f->C_GetMechanismInfo(SLOT, CKM_ML_DSA, &mi);
        check(rv == CKR_OK && (mi.flags & CKF_SIGN) && (mi.flags & CKF_VERIFY),
              "CKM_ML_DSA info has CKF_SIGN and CKF_VERIFY", "rv %s 0x%lX, flags 0x%lX",
              rv_name(rv), (unsigned long)rv, (unsigned long)(rv == CKR_OK ? mi.flags : 0));
        rv = f->C_GetMechanismInfo(SLOT, CKM_ML_DSA_KEY_PAIR_GEN, &mi);
        check(rv == CKR_OK && (mi.flags & CKF_GENERATE_KEY_PAIR),
              "CKM_ML_DSA_KEY_PAIR_GEN info has CKF_GENERATE_KEY_PAIR", "rv %s 0x%lX, flags 0x%lX",
              rv_name(rv), (unsigned long)rv, (unsigned long)(rv == CKR_OK ? mi.flags : 0));
    }

    /* ------------------------------------------------ token and PIN set-up */
    {
        CK_UTF8CHAR label[32];
        pad_label(label, TOKEN_LABEL);
        rv = f->C_InitToken(SLOT, (CK_UTF8CHAR *)SO_PIN, strlen(SO_PIN), label);
        if (!check_rv(rv, CKR_OK, "C_InitToken(SO PIN, \"" TOKEN_LABEL "\")")) {
            bail = "C_InitToken failed";
            goto out;
        }
        rv = f->C_GetTokenInfo(SLOT, &ti);
        check(rv == CKR_OK && (ti.flags & CKF_TOKEN_INITIALIZED),
              "token info has CKF_TOKEN_INITIALIZED", "rv %s, flags 0x%lX", rv_name(rv),
              (unsigned long)ti.flags);
        check(rv == CKR_OK && memcmp(ti.label, label, 32) == 0,
              "token label is \"" TOKEN_LABEL "\" blank-padded", "got '%.32s'", ti.label);
    }

    CK_SESSION_HANDLE h = CK_INVALID_HANDLE;
    rv = f->C_OpenSession(SLOT, CKF_RW_SESSION, NULL, NULL, &h);
    check_rv(rv, CKR_SESSION_PARALLEL_NOT_SUPPORTED, "C_OpenSession without CKF_SERIAL_SESSION");
    if (rv == CKR_OK)
        f->C_CloseSession(h);
    rv = f->C_OpenSession(SLOT, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &h);
    if (!check_rv(rv, CKR_OK, "C_OpenSession(RW)")) {
        bail = "no session";
        goto out;
    }

    rv = f->C_Login(h, CKU_USER, (CK_UTF8CHAR *)USER_PIN, strlen(USER_PIN));
    check_rv(rv, CKR_USER_PIN_NOT_INITIALIZED, "user login before C_InitPIN");
    if (rv == CKR_OK)
        f->C_Logout(h);

    rv = f->C_Login(h, CKU_SO, (CK_UTF8CHAR *)SO_PIN, strlen(SO_PIN));
    if (!check_rv(rv, CKR_OK, "C_Login(SO)")) {
        bail = "SO login failed";
        goto out;
    }
    rv = f->C_InitPIN(h, (CK_UTF8CHAR *)USER_PIN, strlen(USER_PIN));
    if (!check_rv(rv, CKR_OK, "C_InitPIN(\"" USER_PIN "\")")) {
        bail = "C_InitPIN failed";
        goto out;
    }
    rv = f->C_Logout(h);
    check_rv(rv, CKR_OK, "C_Logout(SO)");
    rv = f->C_GetTokenInfo(SLOT, &ti);
    check(rv == CKR_OK && (ti.flags & CKF_USER_PIN_INITIALIZED),
          "token info has CKF_USER_PIN_INITIALIZED", "rv %s, flags 0x%lX", rv_name(rv),
          (unsigned long)ti.flags);

    rv = f->C_Login(h, CKU_USER, (CK_UTF8CHAR *)"0000", 4);
    check_rv(rv, CKR_PIN_INCORRECT, "user login with a wrong PIN");
    if (rv == CKR_OK)
        f->C_Logout(h);
    rv = f->C_Login(h, CKU_USER, (CK_UTF8CHAR *)USER_PIN, strlen(USER_PIN));
    if (!check_rv(rv, CKR_OK, "C_Login(USER)")) {
        bail = "user login failed";
        goto out;
    }

    /* --------------------------------------------------- error codes, early */
    {
        CK_BYTE buf[16];
        CK_ULONG len = sizeof buf;
        rv = f->C_Sign(h, (CK_BYTE *)"x", 1, buf, &len);
        check_rv(rv, CKR_OPERATION_NOT_INITIALIZED, "C_Sign without C_SignInit");
        CK_SESSION_INFO si;
        memset(&si, 0, sizeof si);
        rv = f->C_GetSessionInfo(BOGUS_SESSION, &si);
        check_rv(rv, CKR_SESSION_HANDLE_INVALID, "C_GetSessionInfo(bogus session handle)");
        len = sizeof buf;
        rv = f->C_Sign(BOGUS_SESSION, (CK_BYTE *)"x", 1, buf, &len);
        check_rv(rv, CKR_SESSION_HANDLE_INVALID, "C_Sign(bogus session handle)");
        rv = f->C_GetSessionInfo(h, &si);
        check(rv == CKR_OK && si.slotID == SLOT && si.state == CKS_RW_USER_FUNCTIONS,
              "session info: slot 0, CKS_RW_USER_FUNCTIONS", "rv %s, slot %lu, state %lu",
              rv_name(rv), (unsigned long)si.slotID, (unsigned long)si.state);
    }

    /* ---------------------------------------------------- ML-DSA-87 keygen */
    CK_OBJECT_HANDLE pub = CK_INVALID_HANDLE, priv = CK_INVALID_HANDLE;
    {
        CK_BBOOL yes = CK_TRUE;
        CK_ML_DSA_PARAMETER_SET_TYPE pset = CKP_ML_DSA_87;
        CK_BYTE id[] = {0x87, 0x01};
        CK_ATTRIBUTE pub_tmpl[] = {
            {CKA_TOKEN, &yes, sizeof yes},
            {CKA_VERIFY, &yes, sizeof yes},
            {CKA_PARAMETER_SET, &pset, sizeof pset},
            {CKA_LABEL, PUB_LABEL, sizeof PUB_LABEL - 1},
            {CKA_ID, id, sizeof id},
        };
        CK_ATTRIBUTE priv_tmpl[] = {
            {CKA_TOKEN, &yes, sizeof yes},
            {CKA_PRIVATE, &yes, sizeof yes},
            {CKA_SENSITIVE, &yes, sizeof yes},
            {CKA_SIGN, &yes, sizeof yes},
            {CKA_LABEL, PRIV_LABEL, sizeof PRIV_LABEL - 1},
            {CKA_ID, id, sizeof id},
        };
        CK_MECHANISM gen = {CKM_ML_DSA_KEY_PAIR_GEN, NULL, 0};
        rv = f->C_GenerateKeyPair(h, &gen, pub_tmpl, sizeof pub_tmpl / sizeof pub_tmpl[0],
                                  priv_tmpl, sizeof priv_tmpl / sizeof priv_tmpl[0], &pub, &priv);
        if (!check_rv(rv, CKR_OK, "C_GenerateKeyPair(CKM_ML_DSA_KEY_PAIR_GEN, ML-DSA-87)")) {
            bail = "no ML-DSA-87 key pair";
            goto out;
        }
        check(pub != CK_INVALID_HANDLE && priv != CK_INVALID_HANDLE && pub != priv,
              "key pair handles are valid and distinct", "pub %lu priv %lu", (unsigned long)pub,
              (unsigned long)priv);
    }

    /* Attributes of the new keys. */
    {
        CK_ULONG v = 0;
        rv = get_ulong_attr(f, h, priv, CKA_B4AE_CUSTODY, &v);
        /* An embedded token in this process, or one the custody agent serves. */
        check(rv == CKR_OK && (v == B4AE_CUSTODY_EMBEDDED || v == B4AE_CUSTODY_AGENT),
              "private key CKA_B4AE_CUSTODY == B4AE_CUSTODY_EMBEDDED (or _AGENT)",
              "rv %s 0x%lX, value %lu",
              rv_name(rv), (unsigned long)rv, (unsigned long)v);
        v = 0;
        rv = get_ulong_attr(f, h, priv, CKA_KEY_TYPE, &v);
        check(rv == CKR_OK && v == CKK_ML_DSA, "private key CKA_KEY_TYPE == CKK_ML_DSA",
              "rv %s, value 0x%lX", rv_name(rv), (unsigned long)v);
        v = 0;
        rv = get_ulong_attr(f, h, pub, CKA_KEY_TYPE, &v);
        check(rv == CKR_OK && v == CKK_ML_DSA, "public key CKA_KEY_TYPE == CKK_ML_DSA",
              "rv %s, value 0x%lX", rv_name(rv), (unsigned long)v);
        v = 0;
        rv = get_ulong_attr(f, h, priv, CKA_PARAMETER_SET, &v);
        check(rv == CKR_OK && v == CKP_ML_DSA_87,
              "private key CKA_PARAMETER_SET == CKP_ML_DSA_87", "rv %s, value %lu", rv_name(rv),
              (unsigned long)v);
        v = 0;
        rv = get_ulong_attr(f, h, pub, CKA_PARAMETER_SET, &v);
        check(rv == CKR_OK && v == CKP_ML_DSA_87, "public key CKA_PARAMETER_SET == CKP_ML_DSA_87",
              "rv %s, value %lu", rv_name(rv), (unsigned long)v);

        CK_ATTRIBUTE a = {CKA_VALUE, NULL, 0};
        rv = f->C_GetAttributeValue(h, pub, &a, 1);
        check(rv == CKR_OK && a.ulValueLen == ML_DSA_87_PK_LEN,
              "public key CKA_VALUE is 2592 bytes", "rv %s, length %lu", rv_name(rv),
              (unsigned long)a.ulValueLen);

        CK_BYTE big[8192];
        CK_ATTRIBUTE s = {CKA_VALUE, big, sizeof big};
        rv = f->C_GetAttributeValue(h, priv, &s, 1);
        check_rv(rv, CKR_ATTRIBUTE_SENSITIVE, "C_GetAttributeValue(private CKA_VALUE)");
        check(s.ulValueLen == CK_UNAVAILABLE_INFORMATION,
              "sensitive CKA_VALUE length is CK_UNAVAILABLE_INFORMATION", "got %lu",
              (unsigned long)s.ulValueLen);
        CK_ATTRIBUTE seed = {CKA_SEED, big, sizeof big};
        rv = f->C_GetAttributeValue(h, priv, &seed, 1);
        check_rv(rv, CKR_ATTRIBUTE_SENSITIVE, "C_GetAttributeValue(private CKA_SEED)");

        CK_ULONG custody = 0;
        CK_ATTRIBUTE set = {CKA_B4AE_CUSTODY, &custody, sizeof custody};
        custody = B4AE_CUSTODY_HSM_NATIVE;
        rv = f->C_SetAttributeValue(h, priv, &set, 1);
        check(rv != CKR_OK && rv != CKR_GENERAL_ERROR, "CKA_B4AE_CUSTODY cannot be set",
              "rv %s 0x%lX", rv_name(rv), (unsigned long)rv);

        CK_OBJECT_HANDLE found[4];
        CK_ULONG n = find_by_label(f, h, CKO_PRIVATE_KEY, PRIV_LABEL, found, 4, &rv);
        check(rv == CKR_OK && n == 1 && found[0] == priv, "C_FindObjects finds the private key",
              "rv %s, found %lu", rv_name(rv), (unsigned long)n);
    }

    /* ------------------------------------------------------- sign / verify */
    static CK_BYTE msg[] = "b4ae-pkcs11 ABI smoke test message";
    const CK_ULONG msg_len = sizeof msg - 1;
    static CK_BYTE ctx[] = "b4ae";
    CK_SIGN_ADDITIONAL_CONTEXT det = {CKH_DETERMINISTIC_REQUIRED, ctx, 4};
    CK_MECHANISM mldsa = {CKM_ML_DSA, &det, sizeof det};
    static CK_BYTE sig1[8192], sig2[8192];
    CK_ULONG sig1_len = 0, sig2_len = 0;

    rv = f->C_SignInit(h, &mldsa, priv);
    if (!check_rv(rv, CKR_OK, "C_SignInit(CKM_ML_DSA, deterministic, context \"b4ae\")")) {
        bail = "C_SignInit failed";
        goto out;
    }
    rv = f->C_Sign(h, msg, msg_len, NULL, &sig1_len);
    check(rv == CKR_OK && sig1_len == ML_DSA_87_SIG_LEN,
          "C_Sign(NULL buffer) gives length 4627", "rv %s 0x%lX, length %lu", rv_name(rv),
          (unsigned long)rv, (unsigned long)sig1_len);
    sig1_len = sizeof sig1;
    rv = f->C_Sign(h, msg, msg_len, sig1, &sig1_len);
    check(rv == CKR_OK && sig1_len == ML_DSA_87_SIG_LEN,
          "C_Sign after the length query signs (4627 bytes)", "rv %s 0x%lX, length %lu",
          rv_name(rv), (unsigned long)rv, (unsigned long)sig1_len);
    if (rv != CKR_OK) {
        bail = "no signature";
        goto out;
    }
    {
        CK_BYTE buf[16];
        CK_ULONG len = sizeof buf;
        rv = f->C_Sign(h, msg, msg_len, buf, &len);
        check_rv(rv, CKR_OPERATION_NOT_INITIALIZED, "C_Sign after a finished signature");
    }

    /* Second deterministic signature, also trying a too-small buffer first. */
    rv = f->C_SignInit(h, &mldsa, priv);
    check_rv(rv, CKR_OK, "C_SignInit again");
    {
        CK_ULONG len = 100;
        rv = f->C_Sign(h, msg, msg_len, sig2, &len);
        check(rv == CKR_BUFFER_TOO_SMALL && len == ML_DSA_87_SIG_LEN,
              "C_Sign(100-byte buffer) gives CKR_BUFFER_TOO_SMALL and 4627",
              "rv %s 0x%lX, length %lu", rv_name(rv), (unsigned long)rv, (unsigned long)len);
    }
    sig2_len = sizeof sig2;
    rv = f->C_Sign(h, msg, msg_len, sig2, &sig2_len);
    check(rv == CKR_OK && sig2_len == ML_DSA_87_SIG_LEN,
          "C_Sign after CKR_BUFFER_TOO_SMALL still signs", "rv %s 0x%lX, length %lu",
          rv_name(rv), (unsigned long)rv, (unsigned long)sig2_len);
    check(rv == CKR_OK && sig1_len == sig2_len && memcmp(sig1, sig2, sig1_len) == 0,
          "deterministic signatures are identical", "%s", "they differ");

    /* Verify. */
    rv = f->C_VerifyInit(h, &mldsa, pub);
    check_rv(rv, CKR_OK, "C_VerifyInit(CKM_ML_DSA, context \"b4ae\")");
    rv = f->C_Verify(h, msg, msg_len, sig1, sig1_len);
    check_rv(rv, CKR_OK, "C_Verify of the signature");

    {
        static CK_BYTE bad[8192];
        memcpy(bad, sig1, sig1_len);
        bad[sig1_len / 2] ^= 0x01;
        rv = f->C_VerifyInit(h, &mldsa, pub);
        check_rv(rv, CKR_OK, "C_VerifyInit for the flipped signature");
        rv = f->C_Verify(h, msg, msg_len, bad, sig1_len);
        check_rv(rv, CKR_SIGNATURE_INVALID, "C_Verify of a signature with one byte flipped");

        static CK_BYTE msg2[sizeof msg];
        memcpy(msg2, msg, sizeof msg);
        msg2[0] ^= 0x01;
        rv = f->C_VerifyInit(h, &mldsa, pub);
        check_rv(rv, CKR_OK, "C_VerifyInit for the altered message");
        rv = f->C_Verify(h, msg2, msg_len, sig1, sig1_len);
        check_rv(rv, CKR_SIGNATURE_INVALID, "C_Verify of an altered message");

        static CK_BYTE other_ctx[] = "b4af";
        CK_SIGN_ADDITIONAL_CONTEXT oc = {CKH_HEDGE_PREFERRED, other_ctx, 4};
        CK_MECHANISM m_oc = {CKM_ML_DSA, &oc, sizeof oc};
        rv = f->C_VerifyInit(h, &m_oc, pub);
        check_rv(rv, CKR_OK, "C_VerifyInit with another context");
        rv = f->C_Verify(h, msg, msg_len, sig1, sig1_len);
        check_rv(rv, CKR_SIGNATURE_INVALID, "C_Verify under another context");

        CK_MECHANISM m_none = {CKM_ML_DSA, NULL, 0};
        rv = f->C_VerifyInit(h, &m_none, pub);
        check_rv(rv, CKR_OK, "C_VerifyInit with no parameter (empty context)");
        rv = f->C_Verify(h, msg, msg_len, sig1, sig1_len);
        check_rv(rv, CKR_SIGNATURE_INVALID, "C_Verify with an empty context");
    }

    /* Hedged signing verifies too. */
    {
        CK_SIGN_ADDITIONAL_CONTEXT hedged = {CKH_HEDGE_REQUIRED, ctx, 4};
        CK_MECHANISM m_h = {CKM_ML_DSA, &hedged, sizeof hedged};
        static CK_BYTE sig3[8192];
        CK_ULONG len = sizeof sig3;
        rv = f->C_SignInit(h, &m_h, priv);
        if (rv == CKR_OK)
            rv = f->C_Sign(h, msg, msg_len, sig3, &len);
        check(rv == CKR_OK && len == ML_DSA_87_SIG_LEN, "hedged C_Sign (CKH_HEDGE_REQUIRED)",
              "rv %s 0x%lX, length %lu", rv_name(rv), (unsigned long)rv, (unsigned long)len);
        if (rv == CKR_OK) {
            rv = f->C_VerifyInit(h, &mldsa, pub);
            if (rv == CKR_OK)
                rv = f->C_Verify(h, msg, msg_len, sig3, len);
            check_rv(rv, CKR_OK, "hedged signature verifies");
        }
    }

    /* A context longer than 255 bytes is refused, at init or at sign. */
    {
        static CK_BYTE long_ctx[256];
        memset(long_ctx, 'c', sizeof long_ctx);
        CK_SIGN_ADDITIONAL_CONTEXT lc = {CKH_DETERMINISTIC_REQUIRED, long_ctx, sizeof long_ctx};
        CK_MECHANISM m_lc = {CKM_ML_DSA, &lc, sizeof lc};
        static CK_BYTE sig4[8192];
        CK_ULONG len = sizeof sig4;
        rv = f->C_SignInit(h, &m_lc, priv);
        if (rv == CKR_OK)
            rv = f->C_Sign(h, msg, msg_len, sig4, &len);
        check_proper_error(rv, "ML-DSA with a 256-byte context is refused");
    }

    /* 3.2 one-shot verification with the signature given at init (optional). */
    {
        rv = f->C_VerifySignatureInit(h, &mldsa, pub, sig1, sig1_len);
        if (rv == CKR_FUNCTION_NOT_SUPPORTED) {
            check(1, "C_VerifySignatureInit answers CKR_FUNCTION_NOT_SUPPORTED", "%s", "");
        } else {
            check_rv(rv, CKR_OK, "C_VerifySignatureInit(CKM_ML_DSA)");
            if (rv == CKR_OK) {
                rv = f->C_VerifySignature(h, msg, msg_len);
                check_rv(rv, CKR_OK, "C_VerifySignature of the signature");
            }
        }
    }

    /* --------------------------------------------------- more error codes */
    {
        CK_BYTE ct[8192];
        CK_ULONG ct_len = sizeof ct;
        CK_OBJECT_CLASS sk = CKO_SECRET_KEY;
        CK_KEY_TYPE gk = CKK_GENERIC_SECRET;
        CK_ATTRIBUTE tmpl[] = {
            {CKA_CLASS, &sk, sizeof sk},
            {CKA_KEY_TYPE, &gk, sizeof gk},
        };
        CK_OBJECT_HANDLE shared = CK_INVALID_HANDLE;
        CK_MECHANISM kem = {CKM_ML_KEM, NULL, 0};
        check(f->C_EncapsulateKey != NULL, "3.2 table has C_EncapsulateKey", "%s", "NULL");
        if (f->C_EncapsulateKey != NULL) {
            /* An ML-DSA key cannot encapsulate: some error, never a crash. */
            rv = f->C_EncapsulateKey(h, &kem, pub, tmpl, 2, ct, &ct_len, &shared);
            check_proper_error(rv, "C_EncapsulateKey(CKM_ML_KEM, ML-DSA public key)");
            ct_len = sizeof ct;
            rv = f->C_EncapsulateKey(BOGUS_SESSION, &kem, pub, tmpl, 2, ct, &ct_len, &shared);
            check(rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_FUNCTION_NOT_SUPPORTED,
                  "C_EncapsulateKey(bogus session) answers SESSION_HANDLE_INVALID or "
                  "FUNCTION_NOT_SUPPORTED",
                  "rv %s 0x%lX", rv_name(rv), (unsigned long)rv);
        }
        rv = f->C_SignInit(h, &mldsa, (CK_OBJECT_HANDLE)0x7FFF0001UL);
        check(rv == CKR_KEY_HANDLE_INVALID || rv == CKR_OBJECT_HANDLE_INVALID,
              "C_SignInit(bogus key handle) answers KEY_HANDLE_INVALID", "rv %s 0x%lX",
              rv_name(rv), (unsigned long)rv);
        rv = f->C_SignInit(h, &mldsa, pub);
        check_proper_error(rv, "C_SignInit with the public key is refused");
    }

    /* ---------------------------------- finalize, re-initialise, persistence */
    rv = f->C_Logout(h);
    check_rv(rv, CKR_OK, "C_Logout(USER)");
    rv = f->C_CloseSession(h);
    check_rv(rv, CKR_OK, "C_CloseSession");
    rv = f->C_Finalize(NULL);
    check_rv(rv, CKR_OK, "C_Finalize");
    initialized = 0;
    {
        CK_INFO info;
        rv = f->C_GetInfo(&info);
        check_rv(rv, CKR_CRYPTOKI_NOT_INITIALIZED, "C_GetInfo after C_Finalize");
    }

    rv = f->C_Initialize(NULL);
    if (!check_rv(rv, CKR_OK, "C_Initialize(NULL) after C_Finalize")) {
        bail = "re-initialisation failed";
        goto out;
    }
    initialized = 1;
    rv = f->C_GetTokenInfo(SLOT, &ti);
    {
        CK_UTF8CHAR label[32];
        pad_label(label, TOKEN_LABEL);
        check(rv == CKR_OK && (ti.flags & CKF_TOKEN_INITIALIZED) &&
                  (ti.flags & CKF_USER_PIN_INITIALIZED) && memcmp(ti.label, label, 32) == 0,
              "token state persists across C_Finalize", "rv %s, flags 0x%lX, label '%.32s'",
              rv_name(rv), (unsigned long)ti.flags, ti.label);
    }
    rv = f->C_OpenSession(SLOT, CKF_SERIAL_SESSION, NULL, NULL, &h);
    if (!check_rv(rv, CKR_OK, "C_OpenSession(RO) after re-initialisation")) {
        bail = "no session after re-initialisation";
        goto out;
    }
    rv = f->C_Login(h, CKU_USER, (CK_UTF8CHAR *)USER_PIN, strlen(USER_PIN));
    check_rv(rv, CKR_OK, "C_Login(USER) after re-initialisation");
    {
        CK_OBJECT_HANDLE found[4];
        CK_ULONG n = find_by_label(f, h, CKO_PRIVATE_KEY, PRIV_LABEL, found, 4, &rv);
        check(rv == CKR_OK && n == 1, "token private key is found after re-initialisation",
              "rv %s, found %lu", rv_name(rv), (unsigned long)n);
        CK_OBJECT_HANDLE pfound[4];
        CK_ULONG pn = find_by_label(f, h, CKO_PUBLIC_KEY, PUB_LABEL, pfound, 4, &rv);
        check(rv == CKR_OK && pn == 1, "token public key is found after re-initialisation",
              "rv %s, found %lu", rv_name(rv), (unsigned long)pn);
        if (n == 1) {
            static CK_BYTE sig5[8192];
            CK_ULONG len = sizeof sig5;
            rv = f->C_SignInit(h, &mldsa, found[0]);
            if (rv == CKR_OK)
                rv = f->C_Sign(h, msg, msg_len, sig5, &len);
            check(rv == CKR_OK && len == sig1_len && memcmp(sig5, sig1, len) == 0,
                  "stored key gives the same deterministic signature", "rv %s 0x%lX, length %lu",
                  rv_name(rv), (unsigned long)rv, (unsigned long)len);
        }
        if (pn == 1) {
            rv = f->C_VerifyInit(h, &mldsa, pfound[0]);
            if (rv == CKR_OK)
                rv = f->C_Verify(h, msg, msg_len, sig1, sig1_len);
            check_rv(rv, CKR_OK, "stored public key verifies the signature");
        }
    }

out:
    if (bail != NULL)
        printf("not ok - remaining checks did not run: %s\n", bail);
    if (bail != NULL)
        n_fail++;
    if (initialized) {
        rv = f->C_Finalize(NULL);
        check_rv(rv, CKR_OK, "final C_Finalize");
    }
    /* The module is deliberately not dlclose()d. */
    printf("# abi_smoke: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail == 0 ? 0 : 1;
}

/*
 * dilithium5_sign.c - a C application of b4ae-pkcs11, built against include/b4ae_pkcs11.h only
 * (which brings the public-domain PKCS#11 3.2 header include/pkcs11.h when no other pkcs11.h was
 * included first):
 *
 *   gcc -Wall -Wextra -Werror -std=c11 -I include pkcs11-test-suite/c/dilithium5_sign.c -ldl \
 *       -o dilithium5_sign
 *   ./dilithium5_sign target/debug/libb4ae_pkcs11.so SLOT USER_PIN
 *
 * It dlopen()s the module, takes the PKCS#11 3.2 function table from
 * C_GetInterface("PKCS 11", {3, 2}), initialises with CKF_OS_LOCKING_OK, logs in on SLOT, and:
 *   - generates a round-3 Dilithium5 key pair with the vendor numbers (CKM_B4AE_*), signs with the
 *     two-call length convention (NULL buffer, then a short one, then a big enough one: 4595
 *     bytes), signs again in parts, verifies, and checks that a tampered signature answers
 *     CKR_SIGNATURE_INVALID;
 *   - generates an ML-KEM-768 key pair, encapsulates (C_EncapsulateKey, two-call) and decapsulates
 *     (C_DecapsulateKey) into extractable generic secrets, and compares the two secrets.
 * Keys are session objects: nothing is left on the token.
 *
 * Output: one line per check, "ok - ..." or "not ok - ...: why"; lines starting with "#" are
 * diagnostics. Exit status 0 when every check passed, 1 when one failed, 2 when the program could
 * not start (usage, dlopen). After a failed step that later ones need, it finalises and exits.
 */
#include "b4ae_pkcs11.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DILITHIUM5_PUBLIC_LEN 2592UL
#define DILITHIUM5_SIGNATURE_LEN 4595UL
#define ML_KEM_768_CIPHERTEXT_LEN 1088UL
#define SHARED_SECRET_LEN 32UL

#include "checks.h"

static const CK_BYTE MESSAGE[] = "b4ae-pkcs11 C consumer: round-3 Dilithium5 through the vendor mechanism";
#define MESSAGE_LEN (sizeof MESSAGE - 1)

/* Returns 0 when the steps that later ones depend on went through. */
static int dilithium5(CK_SESSION_HANDLE session)
{
    CK_MECHANISM keygen = { CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN, NULL, 0 };
    CK_MECHANISM mechanism = { CKM_B4AE_DILITHIUM5, NULL, 0 };
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_UTF8CHAR label[] = "c-dilithium5";
    CK_ATTRIBUTE public_template[] = {
        { CKA_TOKEN, &no, sizeof no },
        { CKA_VERIFY, &yes, sizeof yes },
        { CKA_LABEL, label, sizeof label - 1 },
    };
    CK_ATTRIBUTE private_template[] = {
        { CKA_TOKEN, &no, sizeof no },
        { CKA_SIGN, &yes, sizeof yes },
        { CKA_PRIVATE, &yes, sizeof yes },
        { CKA_SENSITIVE, &yes, sizeof yes },
        { CKA_LABEL, label, sizeof label - 1 },
    };
    CK_OBJECT_HANDLE public_key = CK_INVALID_HANDLE, private_key = CK_INVALID_HANDLE;
    CK_RV rv = p11->C_GenerateKeyPair(session, &keygen, public_template, 3, private_template, 5,
                                      &public_key, &private_key);
    if (!check_rv(rv, CKR_OK, "Dilithium5: C_GenerateKeyPair(CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN)")) {
        return -1;
    }

    CK_ULONG public_type = get_ulong(session, public_key, CKA_KEY_TYPE);
    CK_ULONG private_type = get_ulong(session, private_key, CKA_KEY_TYPE);
    check(public_type == CKK_B4AE_DILITHIUM5 && private_type == CKK_B4AE_DILITHIUM5,
          "Dilithium5: both keys are CKK_B4AE_DILITHIUM5", "CKA_KEY_TYPE 0x%lX / 0x%lX", public_type,
          private_type);
    CK_ULONG public_len = 0;
    CK_BYTE *public_value = get_bytes(session, public_key, CKA_VALUE, &public_len);
    check(public_value != NULL && public_len == DILITHIUM5_PUBLIC_LEN,
          "Dilithium5: public CKA_VALUE is 2592 bytes", "%lu bytes", public_len);
    free(public_value);
    CK_ULONG custody = get_ulong(session, private_key, CKA_B4AE_CUSTODY);
    check(custody == B4AE_CUSTODY_HSM_NATIVE || custody == B4AE_CUSTODY_HSM_WRAPPED ||
              custody == B4AE_CUSTODY_EMBEDDED || custody == B4AE_CUSTODY_AGENT,
          "Dilithium5: the private key has CKA_B4AE_CUSTODY", "value 0x%lX", custody);
    printf("# CKA_B4AE_CUSTODY = %lu\n", custody);

    /* Two-call convention: NULL asks the length, a short buffer answers CKR_BUFFER_TOO_SMALL with
     * the length and keeps the operation, a big enough buffer gets the signature. */
    rv = p11->C_SignInit(session, &mechanism, private_key);
    if (!check_rv(rv, CKR_OK, "Dilithium5: C_SignInit(CKM_B4AE_DILITHIUM5)")) {
        return -1;
    }
    CK_ULONG signature_len = 0;
    rv = p11->C_Sign(session, (CK_BYTE *)MESSAGE, MESSAGE_LEN, NULL, &signature_len);
    check(rv == CKR_OK && signature_len == DILITHIUM5_SIGNATURE_LEN,
          "Dilithium5: C_Sign with a NULL buffer answers CKR_OK and 4595 bytes", "%s, %lu bytes",
          rv_name(rv), signature_len);
    CK_BYTE small[64];
    CK_ULONG small_len = sizeof small;
    rv = p11->C_Sign(session, (CK_BYTE *)MESSAGE, MESSAGE_LEN, small, &small_len);
    check(rv == CKR_BUFFER_TOO_SMALL && small_len == DILITHIUM5_SIGNATURE_LEN,
          "Dilithium5: C_Sign into 64 bytes answers CKR_BUFFER_TOO_SMALL and 4595", "%s, %lu bytes",
          rv_name(rv), small_len);
    signature_len = DILITHIUM5_SIGNATURE_LEN;
    CK_BYTE *signature = malloc(signature_len);
    if (signature == NULL) {
        return -1;
    }
    rv = p11->C_Sign(session, (CK_BYTE *)MESSAGE, MESSAGE_LEN, signature, &signature_len);
    if (!check(rv == CKR_OK && signature_len == DILITHIUM5_SIGNATURE_LEN,
               "Dilithium5: C_Sign writes a 4595-byte signature", "%s, %lu bytes", rv_name(rv),
               signature_len)) {
        free(signature);
        return -1;
    }

    /* Multi-part: the same message in two parts gives the same (deterministic) signature. */
    CK_BYTE *parts = malloc(DILITHIUM5_SIGNATURE_LEN);
    CK_ULONG parts_len = 0;
    rv = p11->C_SignInit(session, &mechanism, private_key);
    if (rv == CKR_OK) {
        rv = p11->C_SignUpdate(session, (CK_BYTE *)MESSAGE, 10);
    }
    if (rv == CKR_OK) {
        rv = p11->C_SignUpdate(session, (CK_BYTE *)MESSAGE + 10, MESSAGE_LEN - 10);
    }
    if (rv == CKR_OK) {
        rv = p11->C_SignFinal(session, NULL, &parts_len);
    }
    if (rv == CKR_OK && parts != NULL && parts_len == DILITHIUM5_SIGNATURE_LEN) {
        rv = p11->C_SignFinal(session, parts, &parts_len);
    }
    check(rv == CKR_OK && parts != NULL && parts_len == signature_len &&
              memcmp(parts, signature, signature_len) == 0,
          "Dilithium5: C_SignUpdate x2 + C_SignFinal gives the same signature",
          "%s, %lu bytes%s", rv_name(rv), parts_len,
          rv == CKR_OK && parts_len == signature_len ? ", different bytes" : "");
    free(parts);

    rv = p11->C_VerifyInit(session, &mechanism, public_key);
    if (rv == CKR_OK) {
        rv = p11->C_Verify(session, (CK_BYTE *)MESSAGE, MESSAGE_LEN, signature, signature_len);
    }
    check_rv(rv, CKR_OK, "Dilithium5: C_Verify accepts the signature");

    signature[signature_len / 2] ^= 0x01;
    rv = p11->C_VerifyInit(session, &mechanism, public_key);
    if (rv == CKR_OK) {
        rv = p11->C_Verify(session, (CK_BYTE *)MESSAGE, MESSAGE_LEN, signature, signature_len);
    }
    check_rv(rv, CKR_SIGNATURE_INVALID, "Dilithium5: C_Verify of a tampered signature");
    signature[signature_len / 2] ^= 0x01;

    rv = p11->C_VerifyInit(session, &mechanism, public_key);
    if (rv == CKR_OK) {
        rv = p11->C_Verify(session, (CK_BYTE *)MESSAGE, MESSAGE_LEN - 1, signature, signature_len);
    }
    check_rv(rv, CKR_SIGNATURE_INVALID, "Dilithium5: C_Verify of another message");
    free(signature);

    p11->C_DestroyObject(session, private_key);
    p11->C_DestroyObject(session, public_key);
    return 0;
}

/* Returns 0 when the steps that later ones depend on went through. */
static int ml_kem_768(CK_SESSION_HANDLE session)
{
    CK_MECHANISM keygen = { CKM_ML_KEM_KEY_PAIR_GEN, NULL, 0 };
    CK_MECHANISM kem = { CKM_ML_KEM, NULL, 0 };
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ULONG parameter_set = CKP_ML_KEM_768;
    CK_ATTRIBUTE public_template[] = {
        { CKA_TOKEN, &no, sizeof no },
        { CKA_PARAMETER_SET, &parameter_set, sizeof parameter_set },
        { CKA_ENCAPSULATE, &yes, sizeof yes },
    };
    CK_ATTRIBUTE private_template[] = {
        { CKA_TOKEN, &no, sizeof no },
        { CKA_DECAPSULATE, &yes, sizeof yes },
    };
    CK_OBJECT_HANDLE public_key = CK_INVALID_HANDLE, private_key = CK_INVALID_HANDLE;
    CK_RV rv = p11->C_GenerateKeyPair(session, &keygen, public_template, 3, private_template, 2,
                                      &public_key, &private_key);
    if (!check_rv(rv, CKR_OK, "ML-KEM-768: C_GenerateKeyPair(CKM_ML_KEM_KEY_PAIR_GEN)")) {
        return -1;
    }
    CK_ULONG key_type = get_ulong(session, private_key, CKA_KEY_TYPE);
    CK_ULONG private_set = get_ulong(session, private_key, CKA_PARAMETER_SET);
    check(key_type == CKK_ML_KEM && private_set == CKP_ML_KEM_768,
          "ML-KEM-768: the private key is CKK_ML_KEM, CKP_ML_KEM_768", "0x%lX, parameter set %lu",
          key_type, private_set);

    /* The shared secret becomes a generic secret that can be read, to compare the two sides. */
    CK_OBJECT_CLASS secret_class = CKO_SECRET_KEY;
    CK_KEY_TYPE secret_type = CKK_GENERIC_SECRET;
    CK_ATTRIBUTE secret_template[] = {
        { CKA_CLASS, &secret_class, sizeof secret_class },
        { CKA_KEY_TYPE, &secret_type, sizeof secret_type },
        { CKA_TOKEN, &no, sizeof no },
        { CKA_SENSITIVE, &no, sizeof no },
        { CKA_EXTRACTABLE, &yes, sizeof yes },
    };
    const CK_ULONG secret_count = sizeof secret_template / sizeof secret_template[0];

    CK_ULONG ciphertext_len = 0;
    CK_OBJECT_HANDLE ours = CK_INVALID_HANDLE, theirs = CK_INVALID_HANDLE, other = CK_INVALID_HANDLE;
    rv = p11->C_EncapsulateKey(session, &kem, public_key, secret_template, secret_count, NULL,
                               &ciphertext_len, &ours);
    check(rv == CKR_OK && ciphertext_len == ML_KEM_768_CIPHERTEXT_LEN && ours == CK_INVALID_HANDLE,
          "ML-KEM-768: C_EncapsulateKey with a NULL buffer answers 1088 bytes and makes no key",
          "%s, %lu bytes, key handle %lu", rv_name(rv), ciphertext_len, ours);
    CK_BYTE ciphertext[ML_KEM_768_CIPHERTEXT_LEN];
    ciphertext_len = sizeof ciphertext;
    rv = p11->C_EncapsulateKey(session, &kem, public_key, secret_template, secret_count, ciphertext,
                               &ciphertext_len, &ours);
    if (!check(rv == CKR_OK && ciphertext_len == ML_KEM_768_CIPHERTEXT_LEN && ours != CK_INVALID_HANDLE,
               "ML-KEM-768: C_EncapsulateKey (3.2 table) writes the ciphertext and a secret key",
               "%s, %lu bytes", rv_name(rv), ciphertext_len)) {
        return -1;
    }
    rv = p11->C_DecapsulateKey(session, &kem, private_key, secret_template, secret_count, ciphertext,
                               ciphertext_len, &theirs);
    if (!check_rv(rv, CKR_OK, "ML-KEM-768: C_DecapsulateKey (3.2 table) makes a secret key")) {
        return -1;
    }
    CK_ULONG ours_len = 0, theirs_len = 0;
    CK_BYTE *ours_value = get_bytes(session, ours, CKA_VALUE, &ours_len);
    CK_BYTE *theirs_value = get_bytes(session, theirs, CKA_VALUE, &theirs_len);
    check(ours_value != NULL && theirs_value != NULL && ours_len == SHARED_SECRET_LEN &&
              theirs_len == SHARED_SECRET_LEN && memcmp(ours_value, theirs_value, SHARED_SECRET_LEN) == 0,
          "ML-KEM-768: encapsulated and decapsulated secrets are the same 32 bytes",
          "%lu and %lu bytes%s", ours_len, theirs_len,
          ours_len == theirs_len && ours_len > 0 ? ", different" : "");

    /* FIPS 203 implicit rejection: a tampered ciphertext is no error but gives another secret. */
    ciphertext[7] ^= 0x01;
    rv = p11->C_DecapsulateKey(session, &kem, private_key, secret_template, secret_count, ciphertext,
                               ciphertext_len, &other);
    CK_ULONG other_len = 0;
    CK_BYTE *other_value = rv == CKR_OK ? get_bytes(session, other, CKA_VALUE, &other_len) : NULL;
    check(rv == CKR_OK && other_value != NULL && ours_value != NULL && other_len == SHARED_SECRET_LEN &&
              memcmp(other_value, ours_value, SHARED_SECRET_LEN) != 0,
          "ML-KEM-768: a tampered ciphertext decapsulates to another secret", "%s, %lu bytes%s",
          rv_name(rv), other_len, rv == CKR_OK && other_len == SHARED_SECRET_LEN ? ", the same secret" : "");
    free(ours_value);
    free(theirs_value);
    free(other_value);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODULE SLOT USER_PIN\n", argv[0]);
        return 2;
    }
    const char *module = argv[1];
    char *end = NULL;
    CK_SLOT_ID slot = strtoul(argv[2], &end, 0);
    if (end == argv[2] || *end != '\0') {
        fprintf(stderr, "%s: SLOT must be a number\n", argv[0]);
        return 2;
    }
    const char *pin = argv[3];

    void *library = dlopen(module, RTLD_NOW | RTLD_LOCAL);
    if (!check(library != NULL, "dlopen() the module", "%s", dlerror())) {
        return 2;
    }
    CK_C_GetInterface get_interface = (CK_C_GetInterface)dlsym(library, "C_GetInterface");
    if (!check(get_interface != NULL, "the module exports C_GetInterface", "dlsym: %s", dlerror())) {
        return 1;
    }

    CK_VERSION wanted = { 3, 2 };
    CK_INTERFACE *interface = NULL;
    CK_RV rv = get_interface((CK_UTF8CHAR *)"PKCS 11", &wanted, &interface, 0);
    if (!check(rv == CKR_OK && interface != NULL && interface->pFunctionList != NULL,
               "C_GetInterface(\"PKCS 11\", {3, 2}) answers an interface", "%s", rv_name(rv))) {
        return 1;
    }
    p11 = interface->pFunctionList;
    check(interface->pInterfaceName != NULL && strcmp((char *)interface->pInterfaceName, "PKCS 11") == 0,
          "the interface is named \"PKCS 11\"", "it is \"%s\"",
          interface->pInterfaceName ? (char *)interface->pInterfaceName : "(null)");
    if (!check(p11->version.major == 3 && p11->version.minor == 2,
               "the function table it gives is version 3.2", "version %u.%u", p11->version.major,
               p11->version.minor)) {
        return 1;
    }
    if (!check(p11->C_EncapsulateKey != NULL && p11->C_DecapsulateKey != NULL,
               "the 3.2 table has C_EncapsulateKey and C_DecapsulateKey", "NULL entries")) {
        return 1;
    }

    CK_C_INITIALIZE_ARGS init = { NULL, NULL, NULL, NULL, CKF_OS_LOCKING_OK, NULL };
    rv = p11->C_Initialize(&init);
    if (!check_rv(rv, CKR_OK, "C_Initialize({flags = CKF_OS_LOCKING_OK})")) {
        return 1;
    }
    CK_INFO info;
    rv = p11->C_GetInfo(&info);
    check(rv == CKR_OK && info.cryptokiVersion.major == 3 && info.cryptokiVersion.minor == 2,
          "C_GetInfo reports Cryptoki 3.2", "%s, %u.%u", rv_name(rv), info.cryptokiVersion.major,
          info.cryptokiVersion.minor);

    CK_SESSION_HANDLE session = CK_INVALID_HANDLE;
    rv = p11->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &session);
    if (check_rv(rv, CKR_OK, "C_OpenSession (read-write)")) {
        rv = p11->C_Login(session, CKU_USER, (CK_UTF8CHAR *)pin, strlen(pin));
        if (check_rv(rv, CKR_OK, "C_Login(CKU_USER)")) {
            dilithium5(session);
            ml_kem_768(session);
            check_rv(p11->C_Logout(session), CKR_OK, "C_Logout");
        }
        check_rv(p11->C_CloseSession(session), CKR_OK, "C_CloseSession");
    }
    check_rv(p11->C_Finalize(NULL), CKR_OK, "C_Finalize");
    dlclose(library);
    printf("# dilithium5_sign: slot %lu done, %d check(s) failed\n", slot, failures);
    return failures ? 1 : 0;
}

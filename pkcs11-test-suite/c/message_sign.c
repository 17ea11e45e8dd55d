/*
 * message_sign.c - message-based signing and verification (PKCS#11 3.0) and signature-first
 * verification (3.2) through the 3.2 function table of C_GetInterface:
 *
 *   gcc -Wall -Wextra -Werror -std=c11 -I include pkcs11-test-suite/c/message_sign.c -ldl
 *   ./a.out target/debug/libb4ae_pkcs11.so SLOT USER_PIN
 *
 * On SLOT, for each signature mechanism the slot has (ML-DSA-65 with a per-message context,
 * HashML-DSA-SHA256, round-3 Dilithium5, the B4AE hybrid, and one classical mechanism: Ed25519
 * on the embedded token, ECDSA P-256 forwarded on an HSM slot): C_MessageSignInit, C_SignMessage
 * (length query, then the signature), C_SignMessageBegin / Next in parts (the last Next asked
 * its length first), C_MessageSignFinal; C_MessageVerifyInit, C_VerifyMessage and
 * C_VerifyMessageBegin / Next on those signatures, a tampered one refused; the same signatures
 * through signature-first C_VerifySignatureInit / C_VerifySignature and Update / Final; and the
 * calls out of order answering CKR_OPERATION_NOT_INITIALIZED / CKR_OPERATION_ACTIVE, a short
 * buffer CKR_BUFFER_TOO_SMALL, C_SessionCancel ending a message-based operation.
 *
 * Output: one "ok - " / "not ok - " line per check; exit 0 when all passed, 1 when one failed.
 */
#include "checks.h"

#include <dlfcn.h>
#include <string.h>

static const CK_BYTE MESSAGE[] = "b4ae-pkcs11: one message of many, signed message by message";
#define MESSAGE_LEN (sizeof MESSAGE - 1)
#define MAX_SIGNATURE 8192

struct scheme {
    const char *name;
    CK_MECHANISM_TYPE keygen;
    CK_MECHANISM_TYPE mechanism;
    CK_KEY_TYPE key_type;
    CK_ULONG parameter_set; /* CKA_PARAMETER_SET, or 0 */
    const CK_BYTE *ec_params; /* CKA_EC_PARAMS, or NULL */
    CK_ULONG ec_params_len;
    int multi_part;           /* whether the mechanism signs in parts */
};

static const CK_BYTE ED25519_PARAMS[] = { 0x13, 0x0c, 'e', 'd', 'w', 'a', 'r', 'd', 's',
                                          '2', '5', '5', '1', '9' };
static const CK_BYTE P256_PARAMS[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };

static int has_mechanism(CK_SLOT_ID slot, CK_MECHANISM_TYPE mechanism, CK_FLAGS *flags)
{
    CK_MECHANISM_INFO info;
    if (p11->C_GetMechanismInfo(slot, mechanism, &info) != CKR_OK) {
        return 0;
    }
    *flags = info.flags;
    return 1;
}

static CK_RV key_pair(CK_SESSION_HANDLE session, const struct scheme *s, CK_OBJECT_HANDLE *public_key,
                      CK_OBJECT_HANDLE *private_key)
{
    CK_MECHANISM keygen = { s->keygen, NULL, 0 };
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ATTRIBUTE public_template[3] = {
        { CKA_TOKEN, &no, sizeof no },
        { CKA_VERIFY, &yes, sizeof yes },
    };
    CK_ULONG n = 2;
    CK_ULONG set = s->parameter_set;
    if (s->parameter_set != 0) {
        public_template[n++] = (CK_ATTRIBUTE){ CKA_PARAMETER_SET, &set, sizeof set };
    } else if (s->ec_params != NULL) {
        public_template[n++] = (CK_ATTRIBUTE){ CKA_EC_PARAMS, (void *)s->ec_params, s->ec_params_len };
    }
    CK_ATTRIBUTE private_template[] = {
        { CKA_TOKEN, &no, sizeof no },
        { CKA_SIGN, &yes, sizeof yes },
        { CKA_PRIVATE, &yes, sizeof yes },
    };
    return p11->C_GenerateKeyPair(session, &keygen, public_template, n, private_template, 3,
                                  public_key, private_key);
}

/* One mechanism through every message-based and signature-first call. */
static void scheme(CK_SLOT_ID slot, CK_SESSION_HANDLE session, const struct scheme *s)
{
    char what[256];
#define WHAT(...) (snprintf(what, sizeof what, __VA_ARGS__), what)
    CK_FLAGS flags = 0;
    if (!has_mechanism(slot, s->mechanism, &flags)) {
        printf("# %s: not on this slot\n", s->name);
        return;
    }
    CK_OBJECT_HANDLE public_key = CK_INVALID_HANDLE, private_key = CK_INVALID_HANDLE;
    if (!check_rv(key_pair(session, s, &public_key, &private_key), CKR_OK,
                  WHAT("%s: C_GenerateKeyPair", s->name))) {
        return;
    }

    /* A context string per message (ML-DSA): the verifier must name the same one. */
    CK_BYTE context_a[] = "message A", context_b[] = "message B";
    CK_SIGN_ADDITIONAL_CONTEXT param_a = { CKH_HEDGE_PREFERRED, context_a, sizeof context_a - 1 };
    CK_SIGN_ADDITIONAL_CONTEXT param_b = { CKH_HEDGE_PREFERRED, context_b, sizeof context_b - 1 };
    int contexts = s->mechanism == CKM_ML_DSA;
    void *pa = contexts ? &param_a : NULL, *pb = contexts ? &param_b : NULL;
    CK_ULONG la = contexts ? sizeof param_a : 0, lb = contexts ? sizeof param_b : 0;

    CK_MECHANISM mechanism = { s->mechanism, NULL, 0 };
    CK_BYTE one[MAX_SIGNATURE], two[MAX_SIGNATURE];
    CK_ULONG one_len = 0, two_len = sizeof two;

    check_rv(p11->C_SignMessage(session, pa, la, (CK_BYTE *)MESSAGE, MESSAGE_LEN, one, &one_len),
             CKR_OPERATION_NOT_INITIALIZED, WHAT("%s: C_SignMessage before C_MessageSignInit", s->name));
    check(flags & CKF_MESSAGE_SIGN, WHAT("%s: C_GetMechanismInfo has CKF_MESSAGE_SIGN", s->name),
          "flags 0x%lX", flags);
    if (!check_rv(p11->C_MessageSignInit(session, &mechanism, private_key), CKR_OK,
                  WHAT("%s: C_MessageSignInit", s->name))) {
        return;
    }
    check_rv(p11->C_MessageSignInit(session, &mechanism, private_key), CKR_OPERATION_ACTIVE,
             WHAT("%s: a second C_MessageSignInit", s->name));

    /* Message 1, whole: the length, a short buffer, then the signature. */
    CK_RV rv = p11->C_SignMessage(session, pa, la, (CK_BYTE *)MESSAGE, MESSAGE_LEN, NULL, &one_len);
    check(rv == CKR_OK && one_len > 0 && one_len <= MAX_SIGNATURE,
          WHAT("%s: C_SignMessage with a NULL buffer answers the length", s->name), "%s, %lu",
          rv_name(rv), one_len);
    CK_BYTE small[8];
    CK_ULONG small_len = sizeof small;
    rv = p11->C_SignMessage(session, pa, la, (CK_BYTE *)MESSAGE, MESSAGE_LEN, small, &small_len);
    check(rv == CKR_BUFFER_TOO_SMALL && small_len == one_len,
          WHAT("%s: C_SignMessage into 8 bytes answers CKR_BUFFER_TOO_SMALL", s->name), "%s, %lu",
          rv_name(rv), small_len);
    one_len = sizeof one;
    check_rv(p11->C_SignMessage(session, pa, la, (CK_BYTE *)MESSAGE, MESSAGE_LEN, one, &one_len),
             CKR_OK, WHAT("%s: C_SignMessage (message A)", s->name));

    /* Message 2, in parts (when the mechanism takes parts). */
    if (s->multi_part) {
        check_rv(p11->C_SignMessageNext(session, pb, lb, (CK_BYTE *)MESSAGE, 5, NULL, NULL),
                 CKR_OPERATION_NOT_INITIALIZED, WHAT("%s: C_SignMessageNext before Begin", s->name));
        check_rv(p11->C_SignMessageBegin(session, pb, lb), CKR_OK,
                 WHAT("%s: C_SignMessageBegin (message B)", s->name));
        check_rv(p11->C_SignMessageBegin(session, pb, lb), CKR_OPERATION_ACTIVE,
                 WHAT("%s: C_SignMessageBegin while a message is under way", s->name));
        check_rv(p11->C_SignInit(session, &mechanism, private_key), CKR_OPERATION_ACTIVE,
                 WHAT("%s: C_SignInit while a message is under way", s->name));
        rv = p11->C_SignMessageNext(session, pb, lb, (CK_BYTE *)MESSAGE, 20, NULL, NULL);
        if (rv == CKR_OK) {
            CK_ULONG asked = 0;
            rv = p11->C_SignMessageNext(session, pb, lb, (CK_BYTE *)MESSAGE + 20, MESSAGE_LEN - 20,
                                        NULL, &asked);
            check(rv == CKR_OK && asked == one_len,
                  WHAT("%s: the last C_SignMessageNext with a NULL buffer answers the length",
                       s->name), "%s, %lu", rv_name(rv), asked);
            rv = p11->C_SignMessageNext(session, pb, lb, (CK_BYTE *)MESSAGE + 20, MESSAGE_LEN - 20,
                                        two, &two_len);
        }
        check_rv(rv, CKR_OK, WHAT("%s: C_SignMessageNext x2 signs message B in parts", s->name));
    } else {
        check_rv(p11->C_SignMessage(session, pb, lb, (CK_BYTE *)MESSAGE, MESSAGE_LEN, two, &two_len),
                 CKR_OK, WHAT("%s: C_SignMessage (message B)", s->name));
    }
    check_rv(p11->C_MessageSignFinal(session), CKR_OK, WHAT("%s: C_MessageSignFinal", s->name));
    check_rv(p11->C_MessageSignFinal(session), CKR_OPERATION_NOT_INITIALIZED,
             WHAT("%s: a second C_MessageSignFinal", s->name));

    /* Verification, message by message. */
    check_rv(p11->C_MessageVerifyInit(session, &mechanism, public_key), CKR_OK,
             WHAT("%s: C_MessageVerifyInit", s->name));
    check_rv(p11->C_VerifyMessage(session, pa, la, (CK_BYTE *)MESSAGE, MESSAGE_LEN, one, one_len),
             CKR_OK, WHAT("%s: C_VerifyMessage accepts message A", s->name));
    if (contexts) {
        check_rv(p11->C_VerifyMessage(session, pb, lb, (CK_BYTE *)MESSAGE, MESSAGE_LEN, one, one_len),
                 CKR_SIGNATURE_INVALID, WHAT("%s: message A under message B's context", s->name));
    }
    if (s->multi_part) {
        rv = p11->C_VerifyMessageBegin(session, pb, lb);
        if (rv == CKR_OK) {
            rv = p11->C_VerifyMessageNext(session, pb, lb, (CK_BYTE *)MESSAGE, 7, NULL, 0);
        }
        if (rv == CKR_OK) {
            rv = p11->C_VerifyMessageNext(session, pb, lb, (CK_BYTE *)MESSAGE + 7, MESSAGE_LEN - 7,
                                          two, two_len);
        }
        check_rv(rv, CKR_OK, WHAT("%s: C_VerifyMessageBegin / Next x2 accept message B", s->name));
    } else {
        check_rv(p11->C_VerifyMessage(session, pb, lb, (CK_BYTE *)MESSAGE, MESSAGE_LEN, two, two_len),
                 CKR_OK, WHAT("%s: C_VerifyMessage accepts message B", s->name));
    }
    two[two_len / 2] ^= 0x04;
    check_rv(p11->C_VerifyMessage(session, pb, lb, (CK_BYTE *)MESSAGE, MESSAGE_LEN, two, two_len),
             CKR_SIGNATURE_INVALID, WHAT("%s: C_VerifyMessage refuses a tampered signature", s->name));
    two[two_len / 2] ^= 0x04;
    check_rv(p11->C_SessionCancel(session, CKF_MESSAGE_VERIFY), CKR_OK,
             WHAT("%s: C_SessionCancel(CKF_MESSAGE_VERIFY)", s->name));
    check_rv(p11->C_VerifyMessage(session, pa, la, (CK_BYTE *)MESSAGE, MESSAGE_LEN, one, one_len),
             CKR_OPERATION_NOT_INITIALIZED, WHAT("%s: C_VerifyMessage after the cancel", s->name));

    /* Signature first (3.2): the signature of message A, then the message. */
    CK_MECHANISM with_a = { s->mechanism, pa, la };
    check_rv(p11->C_VerifySignature(session, (CK_BYTE *)MESSAGE, MESSAGE_LEN),
             CKR_OPERATION_NOT_INITIALIZED, WHAT("%s: C_VerifySignature before its init", s->name));
    rv = p11->C_VerifySignatureInit(session, &with_a, public_key, one, one_len);
    if (rv == CKR_OK) {
        rv = p11->C_VerifySignature(session, (CK_BYTE *)MESSAGE, MESSAGE_LEN);
    }
    check_rv(rv, CKR_OK, WHAT("%s: C_VerifySignatureInit + C_VerifySignature", s->name));
    if (s->multi_part) {
        rv = p11->C_VerifySignatureInit(session, &with_a, public_key, one, one_len);
        if (rv == CKR_OK) {
            rv = p11->C_VerifySignatureUpdate(session, (CK_BYTE *)MESSAGE, 3);
        }
        if (rv == CKR_OK) {
            rv = p11->C_VerifySignatureUpdate(session, (CK_BYTE *)MESSAGE + 3, MESSAGE_LEN - 3);
        }
        if (rv == CKR_OK) {
            rv = p11->C_VerifySignatureFinal(session);
        }
        check_rv(rv, CKR_OK, WHAT("%s: C_VerifySignatureUpdate x2 + Final", s->name));
    }
    one[3] ^= 0x80;
    rv = p11->C_VerifySignatureInit(session, &with_a, public_key, one, one_len);
    if (rv == CKR_OK) {
        rv = p11->C_VerifySignature(session, (CK_BYTE *)MESSAGE, MESSAGE_LEN);
    }
    check_rv(rv, CKR_SIGNATURE_INVALID, WHAT("%s: signature first, tampered", s->name));
    check_rv(p11->C_VerifySignatureFinal(session), CKR_OPERATION_NOT_INITIALIZED,
             WHAT("%s: C_VerifySignatureFinal after the verification ended", s->name));
    p11->C_DestroyObject(session, public_key);
    p11->C_DestroyObject(session, private_key);
#undef WHAT
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODULE SLOT USER_PIN\n", argv[0]);
        return 2;
    }
    CK_SLOT_ID slot = strtoul(argv[2], NULL, 0);
    const char *pin = argv[3];
    void *library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!check(library != NULL, "dlopen() the module", "%s", dlerror())) {
        return 2;
    }
    CK_C_GetInterface get_interface = (CK_C_GetInterface)dlsym(library, "C_GetInterface");
    CK_VERSION wanted = { 3, 2 };
    CK_INTERFACE *interface = NULL;
    CK_RV rv = get_interface ? get_interface((CK_UTF8CHAR *)"PKCS 11", &wanted, &interface, 0)
                             : CKR_FUNCTION_NOT_SUPPORTED;
    if (!check(rv == CKR_OK && interface != NULL, "C_GetInterface(\"PKCS 11\", {3, 2})", "%s",
               rv_name(rv))) {
        return 1;
    }
    p11 = interface->pFunctionList;
    CK_C_INITIALIZE_ARGS init = { NULL, NULL, NULL, NULL, CKF_OS_LOCKING_OK, NULL };
    if (!check_rv(p11->C_Initialize(&init), CKR_OK, "C_Initialize")) {
        return 1;
    }
    CK_SESSION_HANDLE session = CK_INVALID_HANDLE;
    rv = p11->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &session);
    if (check_rv(rv, CKR_OK, "C_OpenSession") &&
        check_rv(p11->C_Login(session, CKU_USER, (CK_UTF8CHAR *)pin, strlen(pin)), CKR_OK,
                 "C_Login")) {
        const struct scheme schemes[] = {
            { "ML-DSA-65", CKM_ML_DSA_KEY_PAIR_GEN, CKM_ML_DSA, CKK_ML_DSA, CKP_ML_DSA_65, NULL, 0, 1 },
            { "HashML-DSA-SHA256", CKM_ML_DSA_KEY_PAIR_GEN, CKM_HASH_ML_DSA_SHA256, CKK_ML_DSA,
              CKP_ML_DSA_44, NULL, 0, 1 },
            { "Dilithium5", CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN, CKM_B4AE_DILITHIUM5,
              CKK_B4AE_DILITHIUM5, 0, NULL, 0, 1 },
            { "B4AE hybrid", CKM_B4AE_HYBRID_KEY_PAIR_GEN, CKM_B4AE_HYBRID, CKK_B4AE_HYBRID, 0, NULL,
              0, 1 },
            { "Ed25519", CKM_EC_EDWARDS_KEY_PAIR_GEN, CKM_EDDSA, CKK_EC_EDWARDS, 0, ED25519_PARAMS,
              sizeof ED25519_PARAMS, 0 },
            { "ECDSA P-256", CKM_EC_KEY_PAIR_GEN, CKM_ECDSA, CKK_EC, 0, P256_PARAMS,
              sizeof P256_PARAMS, 0 },
        };
        for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
            scheme(slot, session, &schemes[i]);
        }
        p11->C_Logout(session);
    }
    p11->C_Finalize(NULL);
    printf("# message_sign: slot %lu done, %d failed\n", slot, failures);
    return failures ? 1 : 0;
}

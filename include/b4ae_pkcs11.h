/*
 * b4ae_pkcs11.h - numbers of the b4ae-pkcs11 PKCS#11 module.
 *
 * This header is the single source of truth for the module's vendor-defined
 * values: the Rust constants are generated from it at build time (build.rs),
 * so the two can never disagree.
 *
 * It also declares the PKCS#11 3.2 post-quantum numbers, each guarded, for
 * consumers whose own pkcs11.h predates 3.2.
 *
 * Every value is written as a single `#define NAME 0x...UL` line: build.rs
 * parses exactly that form.
 */
#ifndef B4AE_PKCS11_H
#define B4AE_PKCS11_H

/*
 * Without a pkcs11.h of your own included first, the public-domain PKCS#11 3.2
 * header shipped beside this one is used, so a program can be built against
 * this header only.
 */
#ifndef CKR_OK
#include "pkcs11.h"
#endif

/* ---- Vendor-defined (all >= CKK/CKM/CKA_VENDOR_DEFINED, all < 2^32) ---- */

/* Key types */
#define CKK_B4AE_DILITHIUM5 0xB4AE0001UL /* round-3 Dilithium5: pk 2592, sk 4864, sig 4595 bytes; NOT ML-DSA-87 */
#define CKK_B4AE_HYBRID 0xB4AE0002UL     /* Ed25519 + ML-DSA-87: pk 2624, sk 4928, sig 4695 bytes (layouts below) */

/* Mechanisms */
#define CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN 0xB4AE0001UL
#define CKM_B4AE_DILITHIUM5 0xB4AE0002UL          /* sign/verify the raw message, single- and multi-part */
#define CKM_B4AE_HYBRID_KEY_PAIR_GEN 0xB4AE0003UL /* no parameter */
#define CKM_B4AE_HYBRID 0xB4AE0004UL              /* u32be(64) || Ed25519 sig (64) || ML-DSA-87 sig (4627) = 4695 bytes */

/* Attributes (the two hybrid halves: read-only, on both the public and the private key) */
#define CKA_B4AE_ED25519_PUBLIC 0xB4AE0001UL /* hybrid public key's Ed25519 half (32 bytes) */
#define CKA_B4AE_MLDSA_PUBLIC 0xB4AE0002UL   /* hybrid public key's ML-DSA-87 half (2592 bytes) */
#define CKA_B4AE_CUSTODY 0xB4AE0003UL        /* read-only CK_ULONG, values below */

/* Values of CKA_B4AE_CUSTODY */
#define B4AE_CUSTODY_HSM_NATIVE 0x1UL   /* held natively by the real HSM */
#define B4AE_CUSTODY_HSM_WRAPPED 0x2UL  /* encrypted by the HSM's storage key */
#define B4AE_CUSTODY_EMBEDDED 0x3UL     /* embedded encrypted store */
#define B4AE_CUSTODY_AGENT 0x4UL        /* held by the custody agent (docs/agent.md) */

/*
 * Layouts of CKM_B4AE_HYBRID (docs/mechanisms.md has a verification recipe):
 *   signature          00 00 00 40 (u32 big-endian 64) || Ed25519 signature (64, PureEdDSA, RFC 8032)
 *                      || ML-DSA-87 signature (4627, pure, empty context), both over the message
 *   public CKA_VALUE   Ed25519 public key (32) || ML-DSA-87 public key (2592)
 *   private CKA_VALUE  Ed25519 seed (32) || ML-DSA-87 expanded private key (4896) = 4928
 * Valid only when both halves verify.
 */
#define B4AE_HYBRID_SIGNATURE_LEN 0x1257UL /* 4695 */
#define B4AE_HYBRID_PUBLIC_KEY_LEN 0xA40UL /* 32 + 2592 = 2624 */

/* ---- PKCS#11 3.2 post-quantum numbers (standard values) ---- */

/*
 * ML-KEM (FIPS 203), CKK_ML_KEM with CKP_ML_KEM_512/768/1024: public CKA_VALUE = ek
 * (800/1184/1568 bytes), private CKA_VALUE = dk (1632/2400/3168), CKA_SEED = d || z (64),
 * ciphertext 768/1088/1568, shared secret 32. CKM_ML_KEM takes no parameter and is used by
 * C_EncapsulateKey / C_DecapsulateKey, which only the 3.2 function list has
 * (C_GetInterface "PKCS 11" 3.2).
 *
 * HashML-DSA (FIPS 204 section 5.4) signs
 *   M' = 0x01 || len(ctx) || ctx || 06 09 60 86 48 01 65 03 04 02 xx || PH(M)
 * CKM_HASH_ML_DSA_<hash>: the data is M, hashed by the module; optional parameter
 * CK_SIGN_ADDITIONAL_CONTEXT; single- and multi-part. CKM_HASH_ML_DSA: the data is PH(M);
 * required parameter CK_HASH_SIGN_ADDITIONAL_CONTEXT (pkcs11.h 3.2: the three fields of
 * CK_SIGN_ADDITIONAL_CONTEXT, then CK_MECHANISM_TYPE hash = CKM_SHA224 ... CKM_SHA3_512, or
 * CKM_SHAKE_128/256_KEY_DERIVATION for SHAKE); single-part only.
 * Per hash below: PH, output bytes of PH(M), OID byte xx.
 */

#ifndef CKK_ML_KEM
#define CKK_ML_KEM 0x49UL
#endif
#ifndef CKK_ML_DSA
#define CKK_ML_DSA 0x4AUL
#endif
#ifndef CKA_PARAMETER_SET
#define CKA_PARAMETER_SET 0x61DUL
#endif
#ifndef CKA_SEED
#define CKA_SEED 0x637UL
#endif
#ifndef CKA_ENCAPSULATE
#define CKA_ENCAPSULATE 0x633UL
#endif
#ifndef CKA_DECAPSULATE
#define CKA_DECAPSULATE 0x634UL
#endif
#ifndef CKF_ENCAPSULATE
#define CKF_ENCAPSULATE 0x10000000UL
#endif
#ifndef CKF_DECAPSULATE
#define CKF_DECAPSULATE 0x20000000UL
#endif
#ifndef CKM_ML_KEM_KEY_PAIR_GEN
#define CKM_ML_KEM_KEY_PAIR_GEN 0xFUL
#endif
#ifndef CKM_ML_KEM
#define CKM_ML_KEM 0x17UL /* C_EncapsulateKey / C_DecapsulateKey, no parameter */
#endif
#ifndef CKM_ML_DSA_KEY_PAIR_GEN
#define CKM_ML_DSA_KEY_PAIR_GEN 0x1CUL
#endif
#ifndef CKM_ML_DSA
#define CKM_ML_DSA 0x1DUL
#endif
#ifndef CKM_HASH_ML_DSA
#define CKM_HASH_ML_DSA 0x1FUL /* data = PH(M); parameter CK_HASH_SIGN_ADDITIONAL_CONTEXT */
#endif
#ifndef CKM_HASH_ML_DSA_SHA224
#define CKM_HASH_ML_DSA_SHA224 0x23UL /* SHA-224, 28, 0x04 */
#endif
#ifndef CKM_HASH_ML_DSA_SHA256
#define CKM_HASH_ML_DSA_SHA256 0x24UL /* SHA-256, 32, 0x01 */
#endif
#ifndef CKM_HASH_ML_DSA_SHA384
#define CKM_HASH_ML_DSA_SHA384 0x25UL /* SHA-384, 48, 0x02 */
#endif
#ifndef CKM_HASH_ML_DSA_SHA512
#define CKM_HASH_ML_DSA_SHA512 0x26UL /* SHA-512, 64, 0x03 */
#endif
#ifndef CKM_HASH_ML_DSA_SHA3_224
#define CKM_HASH_ML_DSA_SHA3_224 0x27UL /* SHA3-224, 28, 0x07 */
#endif
#ifndef CKM_HASH_ML_DSA_SHA3_256
#define CKM_HASH_ML_DSA_SHA3_256 0x28UL /* SHA3-256, 32, 0x08 */
#endif
#ifndef CKM_HASH_ML_DSA_SHA3_384
#define CKM_HASH_ML_DSA_SHA3_384 0x29UL /* SHA3-384, 48, 0x09 */
#endif
#ifndef CKM_HASH_ML_DSA_SHA3_512
#define CKM_HASH_ML_DSA_SHA3_512 0x2AUL /* SHA3-512, 64, 0x0A */
#endif
#ifndef CKM_HASH_ML_DSA_SHAKE128
#define CKM_HASH_ML_DSA_SHAKE128 0x2BUL /* SHAKE128, 32, 0x0B */
#endif
#ifndef CKM_HASH_ML_DSA_SHAKE256
#define CKM_HASH_ML_DSA_SHAKE256 0x2CUL /* SHAKE256, 64, 0x0C */
#endif
#ifndef CKP_ML_DSA_44
#define CKP_ML_DSA_44 0x1UL
#endif
#ifndef CKP_ML_DSA_65
#define CKP_ML_DSA_65 0x2UL
#endif
#ifndef CKP_ML_DSA_87
#define CKP_ML_DSA_87 0x3UL
#endif
#ifndef CKP_ML_KEM_512
#define CKP_ML_KEM_512 0x1UL
#endif
#ifndef CKP_ML_KEM_768
#define CKP_ML_KEM_768 0x2UL
#endif
#ifndef CKP_ML_KEM_1024
#define CKP_ML_KEM_1024 0x3UL
#endif
#ifndef CKK_SLH_DSA
#define CKK_SLH_DSA 0x4BUL
#endif
#ifndef CKM_SLH_DSA_KEY_PAIR_GEN
#define CKM_SLH_DSA_KEY_PAIR_GEN 0x2DUL
#endif
#ifndef CKM_SLH_DSA
#define CKM_SLH_DSA 0x2EUL
#endif
#ifndef CKP_SLH_DSA_SHA2_128S
#define CKP_SLH_DSA_SHA2_128S 0x1UL
#endif
#ifndef CKP_SLH_DSA_SHAKE_128S
#define CKP_SLH_DSA_SHAKE_128S 0x2UL
#endif
#ifndef CKP_SLH_DSA_SHA2_128F
#define CKP_SLH_DSA_SHA2_128F 0x3UL
#endif
#ifndef CKP_SLH_DSA_SHAKE_128F
#define CKP_SLH_DSA_SHAKE_128F 0x4UL
#endif
#ifndef CKP_SLH_DSA_SHA2_192S
#define CKP_SLH_DSA_SHA2_192S 0x5UL
#endif
#ifndef CKP_SLH_DSA_SHAKE_192S
#define CKP_SLH_DSA_SHAKE_192S 0x6UL
#endif
#ifndef CKP_SLH_DSA_SHA2_192F
#define CKP_SLH_DSA_SHA2_192F 0x7UL
#endif
#ifndef CKP_SLH_DSA_SHAKE_192F
#define CKP_SLH_DSA_SHAKE_192F 0x8UL
#endif
#ifndef CKP_SLH_DSA_SHA2_256S
#define CKP_SLH_DSA_SHA2_256S 0x9UL
#endif
#ifndef CKP_SLH_DSA_SHAKE_256S
#define CKP_SLH_DSA_SHAKE_256S 0xAUL
#endif
#ifndef CKP_SLH_DSA_SHA2_256F
#define CKP_SLH_DSA_SHA2_256F 0xBUL
#endif
#ifndef CKP_SLH_DSA_SHAKE_256F
#define CKP_SLH_DSA_SHAKE_256F 0xCUL
#endif
/*
 * HashSLH-DSA (FIPS 205 section 10.2) signs the same M' as HashML-DSA with SLH-DSA's internal
 * algorithm; the mechanisms, parameters and pre-hashes follow CKM_HASH_ML_DSA*, with CKK_SLH_DSA keys.
 */
#ifndef CKM_HASH_SLH_DSA
#define CKM_HASH_SLH_DSA 0x34UL /* data = PH(M); parameter CK_HASH_SIGN_ADDITIONAL_CONTEXT */
#endif
#ifndef CKM_HASH_SLH_DSA_SHA224
#define CKM_HASH_SLH_DSA_SHA224 0x36UL /* SHA-224, as CKM_HASH_ML_DSA_SHA224 */
#endif
#ifndef CKM_HASH_SLH_DSA_SHA256
#define CKM_HASH_SLH_DSA_SHA256 0x37UL /* SHA-256, as CKM_HASH_ML_DSA_SHA256 */
#endif
#ifndef CKM_HASH_SLH_DSA_SHA384
#define CKM_HASH_SLH_DSA_SHA384 0x38UL /* SHA-384, as CKM_HASH_ML_DSA_SHA384 */
#endif
#ifndef CKM_HASH_SLH_DSA_SHA512
#define CKM_HASH_SLH_DSA_SHA512 0x39UL /* SHA-512, as CKM_HASH_ML_DSA_SHA512 */
#endif
#ifndef CKM_HASH_SLH_DSA_SHA3_224
#define CKM_HASH_SLH_DSA_SHA3_224 0x3AUL /* SHA3-224, as CKM_HASH_ML_DSA_SHA3_224 */
#endif
#ifndef CKM_HASH_SLH_DSA_SHA3_256
#define CKM_HASH_SLH_DSA_SHA3_256 0x3BUL /* SHA3-256, as CKM_HASH_ML_DSA_SHA3_256 */
#endif
#ifndef CKM_HASH_SLH_DSA_SHA3_384
#define CKM_HASH_SLH_DSA_SHA3_384 0x3CUL /* SHA3-384, as CKM_HASH_ML_DSA_SHA3_384 */
#endif
#ifndef CKM_HASH_SLH_DSA_SHA3_512
#define CKM_HASH_SLH_DSA_SHA3_512 0x3DUL /* SHA3-512, as CKM_HASH_ML_DSA_SHA3_512 */
#endif
#ifndef CKM_HASH_SLH_DSA_SHAKE128
#define CKM_HASH_SLH_DSA_SHAKE128 0x3EUL /* SHAKE128, as CKM_HASH_ML_DSA_SHAKE128 */
#endif
#ifndef CKM_HASH_SLH_DSA_SHAKE256
#define CKM_HASH_SLH_DSA_SHAKE256 0x3FUL /* SHAKE256, as CKM_HASH_ML_DSA_SHAKE256 */
#endif
#ifndef CKH_HEDGE_PREFERRED
#define CKH_HEDGE_PREFERRED 0x0UL
#endif
#ifndef CKH_HEDGE_REQUIRED
#define CKH_HEDGE_REQUIRED 0x1UL
#endif
#ifndef CKH_DETERMINISTIC_REQUIRED
#define CKH_DETERMINISTIC_REQUIRED 0x2UL
#endif
#ifndef CKR_PARAMETER_SET_NOT_SUPPORTED
#define CKR_PARAMETER_SET_NOT_SUPPORTED 0x209UL
#endif

/*
 * Layout-identical to PKCS#11 3.2 CK_SIGN_ADDITIONAL_CONTEXT (the parameter of
 * CKM_ML_DSA and of the CKM_HASH_ML_DSA_<hash> mechanisms), under our own name so it never
 * clashes with a 3.2 pkcs11t.h.
 */
typedef struct B4AE_SIGN_ADDITIONAL_CONTEXT {
    unsigned long hedgeVariant; /* CKH_* */
    unsigned char *pContext;    /* may be NULL when ulContextLen is 0 */
    unsigned long ulContextLen; /* at most 255 */
} B4AE_SIGN_ADDITIONAL_CONTEXT;

#endif /* B4AE_PKCS11_H */

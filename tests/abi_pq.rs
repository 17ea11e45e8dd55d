//! ML-KEM, HashML-DSA and the B4AE hybrid through the built module, each test run twice with
//! the same code: on an embedded token and on a pkcs11-backend token over SoftHSM2. Outputs are
//! checked against independent implementations (AWS-LC for ML-KEM, `fips204` for HashML-DSA,
//! the `b4ae` crate, `ed25519-dalek` and RustCrypto `ml-dsa` for the hybrid) and NIST ACVP
//! vectors.

#[macro_use]
mod common;
mod forward_common;

use common::*;
use cryptoki::mechanism::dsa::{HashSignAdditionalContext, HedgeType, SignAdditionalContext};
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::object::{MlKemParameterSetType, ParameterSetType};
use cryptoki::session::Session;
use cryptoki_sys::*;
use forward_common::both::{Backend, Both};
use std::sync::OnceLock;

const CKK_B4AE_HYBRID: CK_KEY_TYPE = 0xB4AE_0002;
const CKM_B4AE_HYBRID_KEY_PAIR_GEN: CK_MECHANISM_TYPE = 0xB4AE_0003;
const CKM_B4AE_HYBRID: CK_MECHANISM_TYPE = 0xB4AE_0004;
const CKA_B4AE_ED25519_PUBLIC: CK_ATTRIBUTE_TYPE = 0xB4AE_0001;
const CKA_B4AE_MLDSA_PUBLIC: CK_ATTRIBUTE_TYPE = 0xB4AE_0002;
const B4AE_CUSTODY_HSM_WRAPPED: CK_ULONG = 2;

/// One token pair per test: the embedded token and the SoftHSM-backed token of that index.
const PAIRS: usize = 9;
const KEM_ROUND_TRIP: usize = 0;
const KEM_INTEROP: usize = 1;
const KEM_ERRORS: usize = 2;
const HASH_SIGN: usize = 3;
const HASH_ERRORS: usize = 4;
const HYBRID_SIGN: usize = 5;
const HYBRID_IMPORT: usize = 6;
const KEM_VECTORS: usize = 7;
const HYBRID_SOURCE: usize = 8;

fn both() -> &'static Both {
    static BOTH: OnceLock<Both> = OnceLock::new();
    Both::get(&BOTH, "pq", PAIRS)
}

/// A logged-in R/W session on token `index` of `backend`.
fn session(backend: Backend, index: usize) -> Session {
    both().session(backend, index)
}

/// Runs `test` on both backends.
fn on_both(index: usize, test: impl Fn(&Session, Backend)) {
    both().on_both(index, test)
}

fn vendor(mechanism: CK_MECHANISM_TYPE) -> Mechanism<'static> {
    let kind = MechanismType::new_vendor_defined(mechanism).expect("vendor mechanism");
    Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(kind, None))
}

fn vendor_attr(attr: CK_ATTRIBUTE_TYPE) -> AttributeType {
    AttributeType::VendorDefined(attr)
}

fn object_count(session: &Session) -> usize {
    ok(session.find_objects(&[])).len()
}

// ---------------------------------------------------------------------------------------------
// ML-KEM

#[derive(Clone, Copy, Debug)]
struct Kem {
    ckp: CK_ULONG,
    ek: usize,
    ct: usize,
}

const KEMS: [Kem; 3] = [
    Kem {
        ckp: CKP_ML_KEM_512,
        ek: 800,
        ct: 768,
    },
    Kem {
        ckp: CKP_ML_KEM_768,
        ek: 1184,
        ct: 1088,
    },
    Kem {
        ckp: CKP_ML_KEM_1024,
        ek: 1568,
        ct: 1568,
    },
];

impl Kem {
    fn parameter_set(self) -> ParameterSetType {
        let set = match self.ckp {
            CKP_ML_KEM_512 => MlKemParameterSetType::ML_KEM_512,
            CKP_ML_KEM_768 => MlKemParameterSetType::ML_KEM_768,
            _ => MlKemParameterSetType::ML_KEM_1024,
        };
        set.into()
    }

    fn by_name(name: &str) -> Kem {
        KEMS[["ML-KEM-512", "ML-KEM-768", "ML-KEM-1024"]
            .iter()
            .position(|n| *n == name)
            .expect("parameter set name")]
    }

    fn aws(self) -> &'static aws_lc_rs::kem::Algorithm<aws_lc_rs::kem::AlgorithmId> {
        match self.ckp {
            CKP_ML_KEM_512 => &aws_lc_rs::kem::ML_KEM_512,
            CKP_ML_KEM_768 => &aws_lc_rs::kem::ML_KEM_768,
            _ => &aws_lc_rs::kem::ML_KEM_1024,
        }
    }
}

fn kem_keypair(session: &Session, kem: Kem, token: bool) -> (ObjectHandle, ObjectHandle) {
    let public = [
        Attribute::Token(token),
        Attribute::ParameterSet(kem.parameter_set()),
    ];
    let private = [Attribute::Token(token), Attribute::Private(true)];
    ok(session.generate_key_pair(&Mechanism::MlKemKeyPairGen, &public, &private))
}

/// A template for the shared-secret key that lets the test read it.
fn readable_secret(key_type: KeyType, len: Option<u64>) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type),
        Attribute::Token(false),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
    ];
    if let Some(len) = len {
        t.push(Attribute::ValueLen(len.into()));
    }
    t
}

fn secret_value(session: &Session, key: ObjectHandle) -> Vec<u8> {
    attr_bytes(session, key, CKA_VALUE)
}

#[test]
fn ml_kem_key_pairs_encapsulate_and_decapsulate() {
    on_both(KEM_ROUND_TRIP, |s, backend| {
        for kem in KEMS {
            let (public, private) = kem_keypair(s, kem, true);
            assert_eq!(attr_bytes(s, public, CKA_VALUE).len(), kem.ek);
            assert_eq!(attr_ulong(s, public, CKA_PARAMETER_SET), kem.ckp);
            assert!(attr_bool(s, public, CKA_ENCAPSULATE));
            assert!(attr_bool(s, private, CKA_DECAPSULATE));
            assert!(!attr_bool(s, private, CKA_SIGN));
            assert_sensitive(s, private, CKA_VALUE);
            assert_sensitive(s, private, CKA_SEED);
            let ids = [public, private].map(|k| attr_bytes(s, k, CKA_UNIQUE_ID));
            assert!(
                !ids[0].is_empty() && ids[0] != ids[1],
                "CKA_UNIQUE_ID {ids:?}"
            );
            let custody = attr_ulong(s, private, CKA_B4AE_CUSTODY);
            let expected = match backend {
                Backend::Embedded => B4AE_CUSTODY_EMBEDDED,
                Backend::Hsm => B4AE_CUSTODY_HSM_WRAPPED,
            };
            assert_eq!(custody, expected);

            let template = readable_secret(KeyType::GENERIC_SECRET, None);
            let (ct, sent) = ok(s.encapsulate_key(&Mechanism::MlKem, public, &template));
            assert_eq!(ct.len(), kem.ct);
            let received = ok(s.decapsulate_key(&Mechanism::MlKem, private, &template, &ct));
            let secret = secret_value(s, sent);
            assert_eq!(secret.len(), 32);
            assert_eq!(secret, secret_value(s, received));
            assert!(!attr_bool(s, received, CKA_LOCAL));

            // A tampered ciphertext decapsulates to another key (implicit rejection).
            let mut tampered = ct.clone();
            tampered[3] ^= 1;
            let other = ok(s.decapsulate_key(&Mechanism::MlKem, private, &template, &tampered));
            assert_ne!(secret_value(s, other), secret);
        }

        // An AES-256 key from the exchange: same key on both sides, usable for AES where the
        // token does AES (the HSM), and never readable by default.
        let (public, private) = kem_keypair(s, KEMS[2], false);
        let aes = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
        ];
        let (ct, sent) = ok(s.encapsulate_key(&Mechanism::MlKem, public, &aes));
        let received = ok(s.decapsulate_key(&Mechanism::MlKem, private, &aes, &ct));
        assert_sensitive(s, sent, CKA_VALUE);
        assert!(attr_bool(s, received, CKA_SENSITIVE));
        assert_eq!(attr_ulong(s, received, CKA_KEY_TYPE), CKK_AES);
        if backend == Backend::Hsm {
            let (mut iv1, mut iv2) = ([7u8; 12], [7u8; 12]);
            fn gcm(iv: &mut [u8; 12]) -> Mechanism<'_> {
                let params = cryptoki::mechanism::aead::GcmParams::new(iv, b"", 128.into());
                Mechanism::AesGcm(params.expect("GCM parameters"))
            }
            let sealed = ok(s.encrypt(&gcm(&mut iv1), sent, b"over ML-KEM"));
            assert_eq!(
                ok(s.decrypt(&gcm(&mut iv2), received, &sealed)),
                b"over ML-KEM"
            );
        }
        // A 16-byte AES key is the front of the secret.
        let (ct, short) = ok(s.encapsulate_key(
            &Mechanism::MlKem,
            public,
            &readable_secret(KeyType::AES, Some(16)),
        ));
        let full = ok(s.decapsulate_key(
            &Mechanism::MlKem,
            private,
            &readable_secret(KeyType::GENERIC_SECRET, None),
            &ct,
        ));
        assert_eq!(secret_value(s, short), secret_value(s, full)[..16]);
    });
}

#[test]
fn ml_kem_interoperates_with_aws_lc_both_ways() {
    use aws_lc_rs::kem::{DecapsulationKey, EncapsulationKey};
    on_both(KEM_INTEROP, |s, _| {
        let template = readable_secret(KeyType::GENERIC_SECRET, None);
        for kem in KEMS {
            // AWS-LC encapsulates to the module's key; the module decapsulates.
            let (public, private) = kem_keypair(s, kem, false);
            let ek = attr_bytes(s, public, CKA_VALUE);
            let theirs = EncapsulationKey::new(kem.aws(), &ek).expect("AWS-LC takes the key");
            let (ct, secret) = theirs.encapsulate().expect("AWS-LC encapsulates");
            let key = ok(s.decapsulate_key(&Mechanism::MlKem, private, &template, ct.as_ref()));
            assert_eq!(secret_value(s, key), secret.as_ref());

            // The module encapsulates to an AWS-LC key imported as a public key.
            let dk = DecapsulationKey::generate(kem.aws()).expect("AWS-LC key");
            let ek = dk.encapsulation_key().unwrap().key_bytes().unwrap();
            let imported = ok(s.create_object(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::ML_KEM),
                Attribute::Token(false),
                Attribute::Encapsulate(true),
                Attribute::Value(ek.as_ref().to_vec()),
            ]));
            assert_eq!(attr_ulong(s, imported, CKA_PARAMETER_SET), kem.ckp);
            let (ct, key) = ok(s.encapsulate_key(&Mechanism::MlKem, imported, &template));
            let secret = dk
                .decapsulate(ct.as_slice().into())
                .expect("AWS-LC decapsulates");
            assert_eq!(secret_value(s, key), secret.as_ref());
        }
    });
}

#[test]
fn ml_kem_reproduces_nist_acvp_vectors() {
    let vectors: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("tests/vectors/mlkem_acvp.json").expect("ACVP vectors"),
    )
    .expect("JSON");
    let hex = |v: &serde_json::Value| hex::decode(v.as_str().expect("hex string")).expect("hex");
    on_both(KEM_VECTORS, |s, _| {
        for case in vectors["keygen"].as_array().expect("keygen") {
            let kem = Kem::by_name(case["parameter_set"].as_str().unwrap());
            let seed = [hex(&case["d"]), hex(&case["z"])].concat();
            let private = ok(s.create_object(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::ML_KEM),
                Attribute::ParameterSet(kem.parameter_set()),
                Attribute::Token(false),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
                Attribute::Seed(seed),
            ]));
            assert_eq!(attr_bytes(s, private, CKA_VALUE), hex(&case["dk"]));
        }
        let template = readable_secret(KeyType::GENERIC_SECRET, None);
        for case in vectors["decaps"].as_array().expect("decaps") {
            let private = ok(s.create_object(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::ML_KEM),
                Attribute::Token(false),
                Attribute::Decapsulate(true),
                Attribute::Value(hex(&case["dk"])),
            ]));
            let key =
                ok(s.decapsulate_key(&Mechanism::MlKem, private, &template, &hex(&case["c"])));
            assert_eq!(
                secret_value(s, key),
                hex(&case["k"]),
                "tcId {}",
                case["tcId"]
            );
        }
    });
}

#[test]
fn ml_kem_refuses_bad_input_and_keeps_the_length_convention() {
    on_both(KEM_ERRORS, |s, _| {
        let kem = KEMS[1];
        let (public, private) = kem_keypair(s, kem, false);
        let template = readable_secret(KeyType::GENERIC_SECRET, None);
        let (h, mut raw_template) = (
            s.handle(),
            vec![
                raw_attr(CKA_CLASS, &CKO_SECRET_KEY),
                raw_attr(CKA_KEY_TYPE, &CKK_GENERIC_SECRET),
            ],
        );
        let mut kem_mech = mech(CKM_ML_KEM);
        let before = object_count(s);
        // Length query and short buffer: the length, and no key made.
        let (mut len, mut key) = (0 as CK_ULONG, CK_INVALID_HANDLE);
        let rv = ck!(C_EncapsulateKey(
            h,
            &mut kem_mech,
            public.handle(),
            raw_template.as_mut_ptr(),
            2,
            null(),
            &mut len,
            &mut key
        ));
        assert_rv(rv, CKR_OK);
        assert_eq!(len as usize, kem.ct);
        let mut buf = vec![0u8; kem.ct - 1];
        len = buf.len() as CK_ULONG;
        let rv = ck!(C_EncapsulateKey(
            h,
            &mut kem_mech,
            public.handle(),
            raw_template.as_mut_ptr(),
            2,
            buf.as_mut_ptr(),
            &mut len,
            &mut key
        ));
        assert_rv(rv, CKR_BUFFER_TOO_SMALL);
        assert_eq!(len as usize, kem.ct);
        assert_eq!(
            object_count(s),
            before,
            "no key for a length query or short buffer"
        );
        // NULL output pointers.
        buf.resize(kem.ct, 0);
        let rv = ck!(C_EncapsulateKey(
            h,
            &mut kem_mech,
            public.handle(),
            raw_template.as_mut_ptr(),
            2,
            buf.as_mut_ptr(),
            &mut len,
            null()
        ));
        assert_rv(rv, CKR_ARGUMENTS_BAD);
        let rv = ck!(C_DecapsulateKey(
            h,
            &mut kem_mech,
            private.handle(),
            raw_template.as_mut_ptr(),
            2,
            null(),
            kem.ct as CK_ULONG,
            &mut key
        ));
        assert_rv(rv, CKR_ARGUMENTS_BAD);

        // Ciphertext of the wrong length.
        let (ct, _) = ok(s.encapsulate_key(&Mechanism::MlKem, public, &template));
        let short = s.decapsulate_key(&Mechanism::MlKem, private, &template, &ct[1..]);
        assert_rv(short, CKR_ENCRYPTED_DATA_LEN_RANGE);
        let long = [&ct[..], &[0]].concat();
        let long = s.decapsulate_key(&Mechanism::MlKem, private, &template, &long);
        assert_rv(long, CKR_ENCRYPTED_DATA_LEN_RANGE);
        // Wrong keys: the other half, an ML-DSA key, a bad handle.
        let wrong = s.encapsulate_key(&Mechanism::MlKem, private, &template);
        assert_rv(wrong, CKR_KEY_TYPE_INCONSISTENT);
        let wrong = s.decapsulate_key(&Mechanism::MlKem, public, &template, &ct);
        assert_rv(wrong, CKR_KEY_TYPE_INCONSISTENT);
        let (dsa_public, _) = mldsa_keypair(s, Ps::P44, false, &[]);
        let wrong = s.encapsulate_key(&Mechanism::MlKem, dsa_public, &template);
        assert_rv(wrong, CKR_KEY_TYPE_INCONSISTENT);
        // SAFETY: a handle no object has.
        let bogus = unsafe { ObjectHandle::new_from_raw(0x7777_7777) };
        let wrong = s.encapsulate_key(&Mechanism::MlKem, bogus, &template);
        assert_rv_in(wrong, &[CKR_KEY_HANDLE_INVALID, CKR_OBJECT_HANDLE_INVALID]);
        // Key usage, mechanism, template.
        let refusing = ok(s.generate_key_pair(
            &Mechanism::MlKemKeyPairGen,
            &[
                Attribute::ParameterSet(kem.parameter_set()),
                Attribute::Encapsulate(false),
            ],
            &[Attribute::Decapsulate(false)],
        ));
        let refused = s.encapsulate_key(&Mechanism::MlKem, refusing.0, &template);
        assert_rv(refused, CKR_KEY_FUNCTION_NOT_PERMITTED);
        let refused = s.decapsulate_key(&Mechanism::MlKem, refusing.1, &template, &ct);
        assert_rv(refused, CKR_KEY_FUNCTION_NOT_PERMITTED);
        let wrong = s.encapsulate_key(&Mechanism::MlKemKeyPairGen, public, &template);
        assert_rv(wrong, CKR_MECHANISM_INVALID);
        let too_long = readable_secret(KeyType::GENERIC_SECRET, Some(33));
        let wrong = s.encapsulate_key(&Mechanism::MlKem, public, &too_long);
        assert_rv(wrong, CKR_ATTRIBUTE_VALUE_INVALID);
        let odd_aes = readable_secret(KeyType::AES, Some(20));
        let wrong = s.decapsulate_key(&Mechanism::MlKem, private, &odd_aes, &ct);
        assert_rv(wrong, CKR_ATTRIBUTE_VALUE_INVALID);
        let mut with_value = template.clone();
        with_value.push(Attribute::Value(vec![0; 32]));
        let wrong = s.encapsulate_key(&Mechanism::MlKem, public, &with_value);
        assert_rv(wrong, CKR_TEMPLATE_INCONSISTENT);
        // Parameter sets and imports.
        let (mut pk, mut sk) = (CK_INVALID_HANDLE, CK_INVALID_HANDLE);
        let mut gen = mech(CKM_ML_KEM_KEY_PAIR_GEN);
        let mut unknown_set = [raw_attr(CKA_PARAMETER_SET, &(9 as CK_ULONG))];
        let rv = ck!(C_GenerateKeyPair(
            h,
            &mut gen,
            unknown_set.as_mut_ptr(),
            1,
            null(),
            0,
            &mut pk,
            &mut sk
        ));
        assert_rv(rv, CKR_PARAMETER_SET_NOT_SUPPORTED);
        let missing = s.generate_key_pair(&Mechanism::MlKemKeyPairGen, &[], &[]);
        assert_rv(missing, CKR_TEMPLATE_INCOMPLETE);
        let odd = s.create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::ML_KEM),
            Attribute::Token(false),
            Attribute::Value(vec![1; 1000]),
        ]);
        assert_rv(odd, CKR_ATTRIBUTE_VALUE_INVALID);
    });
}

// ---------------------------------------------------------------------------------------------
// HashML-DSA

/// `CKM_HASH_ML_DSA_<hash>` with a `CK_SIGN_ADDITIONAL_CONTEXT`.
fn hash_mechanism<'a>(
    mechanism: CK_MECHANISM_TYPE,
    params: &'a SignAdditionalContext<'a>,
) -> Mechanism<'a> {
    match mechanism {
        CKM_HASH_ML_DSA_SHA224 => Mechanism::HashMlDsaSha224(*params),
        CKM_HASH_ML_DSA_SHA256 => Mechanism::HashMlDsaSha256(*params),
        CKM_HASH_ML_DSA_SHA384 => Mechanism::HashMlDsaSha384(*params),
        CKM_HASH_ML_DSA_SHA512 => Mechanism::HashMlDsaSha512(*params),
        CKM_HASH_ML_DSA_SHA3_224 => Mechanism::HashMlDsaSha3_224(*params),
        CKM_HASH_ML_DSA_SHA3_256 => Mechanism::HashMlDsaSha3_256(*params),
        CKM_HASH_ML_DSA_SHA3_384 => Mechanism::HashMlDsaSha3_384(*params),
        CKM_HASH_ML_DSA_SHA3_512 => Mechanism::HashMlDsaSha3_512(*params),
        CKM_HASH_ML_DSA_SHAKE128 => Mechanism::HashMlDsaShake128(*params),
        _ => Mechanism::HashMlDsaShake256(*params),
    }
}

#[test]
fn hash_ml_dsa_signs_every_prehash_and_verifies_independently() {
    let context = b"hash-context";
    let deterministic = SignAdditionalContext::new(HedgeType::DeterministicRequired, Some(context));
    let hedged = SignAdditionalContext::new(HedgeType::Required, Some(context));
    on_both(HASH_SIGN, |s, _| {
        for ps in Ps::ALL {
            let (public, private) = mldsa_keypair(s, ps, false, &[]);
            let pk = attr_bytes(s, public, CKA_VALUE);
            for case in prehash::prehashes(MESSAGE) {
                let mechanism = CKM_HASH_ML_DSA_SHA224 + case.index;
                let det = hash_mechanism(mechanism, &deterministic);
                let signature = ok(s.sign(&det, private, MESSAGE));
                assert_eq!(signature.len(), ps.sig_len());
                assert_eq!(
                    ok(s.sign(&det, private, MESSAGE)),
                    signature,
                    "{mechanism:#x}"
                );
                ok(s.verify(&det, public, MESSAGE, &signature));
                // Multi-part equals single-part.
                ok(s.sign_init(&det, private));
                for part in MESSAGE.chunks(5) {
                    ok(s.sign_update(part));
                }
                assert_eq!(ok(s.sign_final()), signature);
                // CKM_HASH_ML_DSA over the digest gives the very same signature.
                let over_digest = prehash::raw_prehash_sign(
                    s,
                    CKM_HASH_ML_DSA,
                    private,
                    case.hash,
                    context,
                    &case.digest,
                );
                assert_eq!(over_digest, signature, "{mechanism:#x} vs CKM_HASH_ML_DSA");
                // Hedged signatures differ and verify.
                let hedge = hash_mechanism(mechanism, &hedged);
                let h1 = ok(s.sign(&hedge, private, MESSAGE));
                assert_ne!(h1, signature);
                ok(s.verify(&det, public, MESSAGE, &h1));
                // Not the pure ML-DSA signature, and a changed message fails.
                let pure = ml_dsa_with(HedgeType::Preferred, context);
                assert_rv(
                    s.verify(&pure, public, MESSAGE, &signature),
                    CKR_SIGNATURE_INVALID,
                );
                assert_rv(
                    s.verify(&det, public, b"other", &signature),
                    CKR_SIGNATURE_INVALID,
                );
                assert!(
                    fips204_hash_verify(ps, &pk, &case.digest, &signature, context, &case.oid),
                    "fips204 rejects {mechanism:#x}"
                );
                let mut other = case.digest.clone();
                other[0] ^= 1;
                assert!(!fips204_hash_verify(
                    ps, &pk, &other, &signature, context, &case.oid
                ));
            }
        }
    });
}

/// Whether `fips204` accepts a HashML-DSA signature of `digest` (hashed with the OID's hash).
fn fips204_hash_verify(
    ps: Ps,
    pk: &[u8],
    digest: &[u8],
    signature: &[u8],
    context: &[u8],
    oid: &[u8],
) -> bool {
    use fips204::traits::{SerDes, Verifier};
    macro_rules! check {
        ($m:ident) => {{
            let pk = fips204::$m::PublicKey::try_from_bytes(pk.try_into().unwrap()).unwrap();
            pk.hash_verify(digest, &signature.try_into().unwrap(), context, oid)
        }};
    }
    match ps {
        Ps::P44 => check!(ml_dsa_44),
        Ps::P65 => check!(ml_dsa_65),
        Ps::P87 => check!(ml_dsa_87),
    }
}

#[test]
fn hash_ml_dsa_refuses_bad_parameters_lengths_and_keys() {
    on_both(HASH_ERRORS, |s, _| {
        let (public, private) = mldsa_keypair(s, Ps::P65, false, &[]);
        let sha256 = MechanismType::SHA256;
        let prehashed = |context: &'static [u8], hash| {
            Mechanism::HashMlDsa(HashSignAdditionalContext::new(
                HedgeType::Preferred,
                Some(context),
                hash,
            ))
        };
        let digest = [5u8; 32];
        // Contexts: 255 bytes work, 256 do not (with either kind of mechanism).
        let long: &'static [u8] = Box::leak(vec![1u8; 255].into_boxed_slice());
        let signature = ok(s.sign(&prehashed(long, sha256), private, &digest));
        ok(s.verify(&prehashed(long, sha256), public, &digest, &signature));
        let ctx = SignAdditionalContext::new(HedgeType::Preferred, Some(&[1u8; 256]));
        assert_rv(
            s.sign(&Mechanism::HashMlDsaSha256(ctx), private, MESSAGE),
            CKR_MECHANISM_PARAM_INVALID,
        );
        let signature = prehash::bare_mechanism_refusals(
            s,
            CKM_HASH_ML_DSA,
            prehashed,
            (public, private),
            &digest,
        );
        let m = prehashed(b"", sha256);
        // Wrong key types and halves.
        let (d5_public, d5_private) = ok(s.generate_key_pair(
            &vendor(0xB4AE_0001),
            &[Attribute::Token(false)],
            &[Attribute::Token(false)],
        ));
        assert_rv(s.sign(&m, d5_private, &digest), CKR_KEY_TYPE_INCONSISTENT);
        assert_rv(
            s.verify(&m, d5_public, &digest, &signature),
            CKR_KEY_TYPE_INCONSISTENT,
        );
        assert_rv(s.sign(&m, public, &digest), CKR_KEY_TYPE_INCONSISTENT);
    });
}

// ---------------------------------------------------------------------------------------------
// The B4AE hybrid

fn hybrid_keypair(session: &Session, private_extra: &[Attribute]) -> (ObjectHandle, ObjectHandle) {
    let public = [Attribute::Token(true), Attribute::Label(b"hybrid".to_vec())];
    let mut private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Label(b"hybrid".to_vec()),
    ];
    private.extend_from_slice(private_extra);
    ok(session.generate_key_pair(&vendor(CKM_B4AE_HYBRID_KEY_PAIR_GEN), &public, &private))
}

/// Verifies with the B4AE protocol library, and each half with independent verifiers.
fn independent_checks(public: &[u8], message: &[u8], signature: &[u8]) -> (bool, bool, bool) {
    use b4ae::crypto::dilithium::DilithiumPublicKey;
    use b4ae::crypto::hybrid::{HybridPublicKey, HybridSignature};
    use b4ae::crypto::kyber::KyberPublicKey;
    let (ed_public, ml_public) = public.split_at(32);
    let b4ae_public = HybridPublicKey {
        ecdh_public: vec![0; 32],
        kyber_public: KyberPublicKey::from_bytes(&[0; KyberPublicKey::SIZE]).unwrap(),
        ecdsa_public: ed_public.to_vec(),
        dilithium_public: DilithiumPublicKey::from_bytes(ml_public).unwrap(),
    };
    let b4ae_ok = match HybridSignature::from_bytes(signature) {
        Ok(sig) => b4ae::crypto::hybrid::verify(&b4ae_public, message, &sig).unwrap_or(false),
        Err(_) => false,
    };
    let ed_key = ed25519_dalek::VerifyingKey::from_bytes(ed_public.try_into().unwrap()).unwrap();
    let ed_sig = ed25519_dalek::Signature::from_slice(&signature[4..68]).unwrap();
    let ed_ok = ed_key.verify_strict(message, &ed_sig).is_ok();
    let ml_ok = Ps::P87.verify(ml_public, message, b"", &signature[68..]);
    (b4ae_ok, ed_ok, ml_ok)
}

#[test]
fn hybrid_signatures_verify_with_the_b4ae_library_and_each_half_matters() {
    on_both(HYBRID_SIGN, |s, backend| {
        let (public, private) = hybrid_keypair(s, &[]);
        let value = attr_bytes(s, public, CKA_VALUE);
        assert_eq!(value.len(), 2624);
        let ed = ok(s.get_attributes(public, &[vendor_attr(CKA_B4AE_ED25519_PUBLIC)]));
        let ml = ok(s.get_attributes(private, &[vendor_attr(CKA_B4AE_MLDSA_PUBLIC)]));
        let bytes = |a: &[Attribute]| match &a[0] {
            Attribute::VendorDefined((_, v)) => v.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!([bytes(&ed), bytes(&ml)].concat(), value);
        assert_eq!(attr_ulong(s, public, CKA_KEY_TYPE), CKK_B4AE_HYBRID);
        assert_sensitive(s, private, CKA_VALUE);
        let expected = match backend {
            Backend::Embedded => B4AE_CUSTODY_EMBEDDED,
            Backend::Hsm => B4AE_CUSTODY_HSM_WRAPPED,
        };
        assert_eq!(attr_ulong(s, private, CKA_B4AE_CUSTODY), expected);

        let m = vendor(CKM_B4AE_HYBRID);
        let signature = ok(s.sign(&m, private, MESSAGE));
        assert_eq!(signature.len(), 4695);
        assert_eq!(&signature[..4], &[0, 0, 0, 64]);
        ok(s.verify(&m, public, MESSAGE, &signature));
        assert_eq!(
            independent_checks(&value, MESSAGE, &signature),
            (true, true, true)
        );
        // Multi-part signs the concatenation; the Ed25519 half is deterministic.
        ok(s.sign_init(&m, private));
        for part in MESSAGE.chunks(7) {
            ok(s.sign_update(part));
        }
        let multi = ok(s.sign_final());
        assert_eq!(multi[..68], signature[..68]);
        ok(s.verify_init(&m, public));
        for part in MESSAGE.chunks(3) {
            ok(s.verify_update(part));
        }
        ok(s.verify_final(&multi));
        // Corrupting either half fails everywhere.
        for (at, half) in [(10, "Ed25519"), (68 + 200, "ML-DSA-87")] {
            let mut bad = signature.clone();
            bad[at] ^= 0x10;
            assert_rv(s.verify(&m, public, MESSAGE, &bad), CKR_SIGNATURE_INVALID);
            let (b4ae_ok, ed_ok, ml_ok) = independent_checks(&value, MESSAGE, &bad);
            assert!(!b4ae_ok, "b4ae accepts a bad {half} half");
            assert_eq!((ed_ok, ml_ok), (half != "Ed25519", half == "Ed25519"));
        }
        let mut bad_prefix = signature.clone();
        bad_prefix[3] = 63;
        assert_rv(
            s.verify(&m, public, MESSAGE, &bad_prefix),
            CKR_SIGNATURE_INVALID,
        );
        assert_rv(
            s.verify(&m, public, MESSAGE, &signature[..4694]),
            CKR_SIGNATURE_LEN_RANGE,
        );
        // Wrong keys and a parameter.
        let (dsa_public, dsa_private) = mldsa_keypair(s, Ps::P87, false, &[]);
        assert_rv(s.sign(&m, dsa_private, MESSAGE), CKR_KEY_TYPE_INCONSISTENT);
        assert_rv(
            s.verify(&m, dsa_public, MESSAGE, &signature),
            CKR_KEY_TYPE_INCONSISTENT,
        );
        assert_rv(
            s.sign(&pure_ml_dsa(), private, MESSAGE),
            CKR_KEY_TYPE_INCONSISTENT,
        );
        let mut with_param = mech(CKM_B4AE_HYBRID);
        let mut junk = [0u8; 8];
        with_param.pParameter = junk.as_mut_ptr().cast();
        with_param.ulParameterLen = 8;
        let rv = ck!(C_SignInit(s.handle(), &mut with_param, private.handle()));
        assert_rv(rv, CKR_MECHANISM_PARAM_INVALID);
        // The key is found again by class and type.
        let found = ok(s.find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::new_vendor_defined(CKK_B4AE_HYBRID).unwrap()),
        ]));
        assert_eq!(found, vec![private]);
        if backend == Backend::Hsm {
            hsm_holds_the_ed25519_half(s, private);
        }
    });
}

/// SoftHSM has CKM_EDDSA: the Ed25519 half is a real HSM key, sensitive and never extractable,
/// the hybrid key cannot be made extractable, and destroying it destroys the half.
fn hsm_holds_the_ed25519_half(s: &Session, private: ObjectHandle) {
    let ed_keys = || {
        ok(s.find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::EC_EDWARDS),
        ]))
    };
    let halves = ed_keys();
    assert_eq!(halves.len(), 1, "one Ed25519 key in the HSM");
    let label = attr_bytes(s, halves[0], CKA_LABEL);
    assert!(label.starts_with(b"B4AE-v1-ED-"), "{label:?}");
    assert!(attr_bool(s, halves[0], CKA_SENSITIVE));
    assert!(!attr_bool(s, halves[0], CKA_EXTRACTABLE));
    assert!(attr_bool(s, halves[0], CKA_NEVER_EXTRACTABLE));
    assert_sensitive(s, halves[0], CKA_VALUE);
    let exportable = s.generate_key_pair(
        &vendor(CKM_B4AE_HYBRID_KEY_PAIR_GEN),
        &[],
        &[Attribute::Sensitive(false), Attribute::Extractable(true)],
    );
    assert_rv(exportable, CKR_TEMPLATE_INCONSISTENT);
    ok(s.destroy_object(private));
    assert!(
        ed_keys().is_empty(),
        "the Ed25519 half went with its hybrid key"
    );
}

#[test]
fn hybrid_keys_import_and_refuse_bad_material() {
    // An exportable pair made on an embedded token is imported on both backends (on SoftHSM
    // the Ed25519 seed goes into the HSM, where it stays).
    let source = session(Backend::Embedded, HYBRID_SOURCE);
    let (public, private) = hybrid_keypair(
        &source,
        &[Attribute::Sensitive(false), Attribute::Extractable(true)],
    );
    let private_value = attr_bytes(&source, private, CKA_VALUE);
    let public_value = attr_bytes(&source, public, CKA_VALUE);
    assert_eq!(private_value.len(), 4928);
    on_both(HYBRID_IMPORT, |s, _| {
        let key_type = KeyType::new_vendor_defined(CKK_B4AE_HYBRID).unwrap();
        let imported = ok(s.create_object(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(key_type),
            Attribute::Token(false),
            Attribute::Sign(true),
            Attribute::Value(private_value.clone()),
        ]));
        let ml = ok(s.get_attributes(imported, &[vendor_attr(CKA_B4AE_MLDSA_PUBLIC)]));
        assert!(matches!(&ml[0], Attribute::VendorDefined((_, v)) if v[..] == public_value[32..]));
        let m = vendor(CKM_B4AE_HYBRID);
        let signature = ok(s.sign(&m, imported, b"imported"));
        assert_eq!(
            independent_checks(&public_value, b"imported", &signature),
            (true, true, true)
        );
        let verifier = ok(s.create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(key_type),
            Attribute::Token(false),
            Attribute::Verify(true),
            Attribute::Value(public_value.clone()),
        ]));
        ok(s.verify(&m, verifier, b"imported", &signature));
        for bad in [
            &private_value[..4927],
            &[&private_value[..], &[0]].concat()[..],
        ] {
            let refused = s.create_object(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(key_type),
                Attribute::Token(false),
                Attribute::Value(bad.to_vec()),
            ]);
            assert_rv(refused, CKR_ATTRIBUTE_VALUE_INVALID);
        }
        let refused = s.create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(key_type),
            Attribute::Token(false),
            Attribute::Value(public_value[..2600].to_vec()),
        ]);
        assert_rv(refused, CKR_ATTRIBUTE_VALUE_INVALID);
        let read_only = s.create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(key_type),
            Attribute::Token(false),
            Attribute::Value(public_value.clone()),
            Attribute::VendorDefined((vendor_attr(CKA_B4AE_ED25519_PUBLIC), vec![0; 32])),
        ]);
        assert_rv(read_only, CKR_ATTRIBUTE_READ_ONLY);
    });
}

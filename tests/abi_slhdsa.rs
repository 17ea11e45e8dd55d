//! SLH-DSA (FIPS 205) through the C ABI on both backends: every one of the twelve parameter sets
//! generates a key pair, signs (hedged, and deterministic on request) with a context string,
//! verifies, refuses a tampered signature and another context; every signature is verified by
//! an independent implementation (`fips205`), and `fips205`'s signatures verify through the
//! module under an imported public key. Also: the mechanisms' numbers and information, key
//! import checks, and the refusals of a wrong key type and a wrong parameter set. HashSLH-DSA:
//! all ten pre-hashes, single- and multi-part, over the digest (`CKM_HASH_SLH_DSA`), each
//! signature accepted by `fips205`, and its refusals.

#[macro_use]
mod common;
mod forward_common;

use common::*;
use cryptoki::mechanism::dsa::{HashSignAdditionalContext, HedgeType, SignAdditionalContext};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, KeyType, ObjectClass, ParameterSetType, SlhDsaParameterSetType};
use cryptoki::session::Session;
use cryptoki_sys::*;
use forward_common::both::{Backend, Both};
use std::sync::OnceLock;

fn both() -> &'static Both {
    static BOTH: OnceLock<Both> = OnceLock::new();
    Both::get(&BOTH, "slhdsa", 5)
}

/// (name, parameter set, public key, signature length)
const SETS: [(&str, SlhDsaParameterSetType, usize, usize); 12] = [
    ("SHA2-128s", SlhDsaParameterSetType::SHA2_128S, 32, 7856),
    ("SHAKE-128s", SlhDsaParameterSetType::SHAKE_128S, 32, 7856),
    ("SHA2-128f", SlhDsaParameterSetType::SHA2_128F, 32, 17088),
    ("SHAKE-128f", SlhDsaParameterSetType::SHAKE_128F, 32, 17088),
    ("SHA2-192s", SlhDsaParameterSetType::SHA2_192S, 48, 16224),
    ("SHAKE-192s", SlhDsaParameterSetType::SHAKE_192S, 48, 16224),
    ("SHA2-192f", SlhDsaParameterSetType::SHA2_192F, 48, 35664),
    ("SHAKE-192f", SlhDsaParameterSetType::SHAKE_192F, 48, 35664),
    ("SHA2-256s", SlhDsaParameterSetType::SHA2_256S, 64, 29792),
    ("SHAKE-256s", SlhDsaParameterSetType::SHAKE_256S, 64, 29792),
    ("SHA2-256f", SlhDsaParameterSetType::SHA2_256F, 64, 49856),
    ("SHAKE-256f", SlhDsaParameterSetType::SHAKE_256F, 64, 49856),
];

/// `fips205` for set `index` (as in [`SETS`]): runs `$body` with `$m` its module.
macro_rules! fips205_set {
    ($index:expr, |$m:ident| $body:expr) => {
        match $index {
            0 => {
                use fips205::slh_dsa_sha2_128s as $m;
                $body
            }
            1 => {
                use fips205::slh_dsa_shake_128s as $m;
                $body
            }
            2 => {
                use fips205::slh_dsa_sha2_128f as $m;
                $body
            }
            3 => {
                use fips205::slh_dsa_shake_128f as $m;
                $body
            }
            4 => {
                use fips205::slh_dsa_sha2_192s as $m;
                $body
            }
            5 => {
                use fips205::slh_dsa_shake_192s as $m;
                $body
            }
            6 => {
                use fips205::slh_dsa_sha2_192f as $m;
                $body
            }
            7 => {
                use fips205::slh_dsa_shake_192f as $m;
                $body
            }
            8 => {
                use fips205::slh_dsa_sha2_256s as $m;
                $body
            }
            9 => {
                use fips205::slh_dsa_shake_256s as $m;
                $body
            }
            10 => {
                use fips205::slh_dsa_sha2_256f as $m;
                $body
            }
            _ => {
                use fips205::slh_dsa_shake_256f as $m;
                $body
            }
        }
    };
}

/// Whether `fips205` accepts the signature.
fn independent_verify(
    index: usize,
    public: &[u8],
    message: &[u8],
    context: &[u8],
    sig: &[u8],
) -> bool {
    use fips205::traits::{SerDes, Verifier};
    fips205_set!(index, |m| {
        let (Ok(pk), Ok(sig)) = (
            <[u8; m::PK_LEN]>::try_from(public),
            <[u8; m::SIG_LEN]>::try_from(sig),
        ) else {
            return false;
        };
        m::PublicKey::try_from_bytes(pk).is_ok_and(|pk| pk.verify(message, &sig, context))
    })
}

/// An independent key pair and signature: (public key, signature).
fn independent_sign(index: usize, message: &[u8], context: &[u8]) -> (Vec<u8>, Vec<u8>) {
    use fips205::traits::{SerDes, Signer};
    fips205_set!(index, |m| {
        let (pk, sk) = m::try_keygen().expect("fips205 keygen");
        let sig = sk.try_sign(message, context, true).expect("fips205 sign");
        (pk.into_bytes().to_vec(), sig.to_vec())
    })
}

fn slh_dsa(hedge: HedgeType, context: &[u8]) -> Mechanism<'_> {
    Mechanism::SlhDsa(SignAdditionalContext::new(hedge, Some(context)))
}

fn key_pair(
    s: &Session,
    set: SlhDsaParameterSetType,
) -> (
    cryptoki::object::ObjectHandle,
    cryptoki::object::ObjectHandle,
) {
    let public = [
        Attribute::Token(false),
        Attribute::Verify(true),
        Attribute::ParameterSet(ParameterSetType::from(set)),
    ];
    let private = [
        Attribute::Token(false),
        Attribute::Sign(true),
        Attribute::Private(true),
    ];
    ok(s.generate_key_pair(&Mechanism::SlhDsaKeyPairGen, &public, &private))
}

#[test]
fn every_slh_dsa_set_signs_and_verifies_against_an_independent_implementation() {
    both().on_both(0, |s, backend| {
        let message = b"b4ae-pkcs11: SLH-DSA through the C ABI";
        let context = b"slh ctx";
        for (index, (name, set, pk_len, sig_len)) in SETS.into_iter().enumerate() {
            let started = std::time::Instant::now();
            let (public, private) = key_pair(s, set);
            let pk = attr_bytes(s, public, CKA_VALUE);
            assert_eq!(pk.len(), pk_len, "{name}");
            assert_sensitive(s, private, CKA_VALUE);
            let custody = attr_ulong(s, private, CKA_B4AE_CUSTODY);
            let expected = match backend {
                Backend::Embedded => 3,
                Backend::Hsm => 2,
            };
            assert_eq!(custody, expected, "{name}");

            let sig = ok(s.sign(&slh_dsa(HedgeType::Preferred, context), private, message));
            assert_eq!(sig.len(), sig_len, "{name}");
            ok(s.verify(
                &slh_dsa(HedgeType::Preferred, context),
                public,
                message,
                &sig,
            ));
            assert!(
                independent_verify(index, &pk, message, context, &sig),
                "{name}: fips205 refuses the module's signature"
            );
            assert_rv(
                s.verify(
                    &slh_dsa(HedgeType::Preferred, b"other"),
                    public,
                    message,
                    &sig,
                ),
                CKR_SIGNATURE_INVALID,
            );
            let mut tampered = sig.clone();
            tampered[sig_len / 3] ^= 0x10;
            assert_rv(
                s.verify(
                    &slh_dsa(HedgeType::Preferred, context),
                    public,
                    message,
                    &tampered,
                ),
                CKR_SIGNATURE_INVALID,
            );
            assert_rv(
                s.verify(
                    &slh_dsa(HedgeType::Preferred, context),
                    public,
                    message,
                    &sig[1..],
                ),
                CKR_SIGNATURE_LEN_RANGE,
            );
            // Deterministic on request: unlike a hedged one, and (checked where signing takes
            // milliseconds, not seconds: SHAKE "s" sets sign in 1.7-2.6 s even optimized)
            // the same twice.
            let d1 = ok(s.sign(
                &slh_dsa(HedgeType::DeterministicRequired, context),
                private,
                message,
            ));
            assert_ne!(d1, sig, "{name}");
            assert!(independent_verify(index, &pk, message, context, &d1));
            let slow = name.starts_with("SHAKE") && name.ends_with('s');
            if !slow {
                let d2 = ok(s.sign(
                    &slh_dsa(HedgeType::DeterministicRequired, context),
                    private,
                    message,
                ));
                assert_eq!(d1, d2, "{name}");
                // fips205's signature under its public key, imported.
                let (their_pk, their_sig) = independent_sign(index, message, context);
                let imported = ok(s.create_object(&[
                    Attribute::Class(ObjectClass::PUBLIC_KEY),
                    Attribute::KeyType(KeyType::SLH_DSA),
                    Attribute::ParameterSet(ParameterSetType::from(set)),
                    Attribute::Token(false),
                    Attribute::Verify(true),
                    Attribute::Value(their_pk),
                ]));
                ok(s.verify(
                    &slh_dsa(HedgeType::Preferred, context),
                    imported,
                    message,
                    &their_sig,
                ));
                ok(s.destroy_object(imported));
            }
            for key in [public, private] {
                ok(s.destroy_object(key));
            }
            println!(
                "slh-dsa {name} ({backend:?}): keygen, signatures and verifications in {:?}",
                started.elapsed()
            );
        }
    });
}

#[test]
fn slh_dsa_keys_and_mechanisms_refuse_what_they_must() {
    both().on_both(1, |s, backend| {
        let slot = both().slot(backend, 1);
        let info = ok(both()
            .pkcs11
            .get_mechanism_info(slot, MechanismType::SLH_DSA));
        assert!(info.sign() && info.verify());
        assert_eq!((info.min_key_size(), info.max_key_size()), (1, 12));
        let kind = MechanismType::try_from(CKM_SLH_DSA_KEY_PAIR_GEN).expect("a known mechanism");
        let info = ok(both().pkcs11.get_mechanism_info(slot, kind));
        assert!(info.generate_key_pair());
        let set = SlhDsaParameterSetType::SHA2_128F;
        let (public, private) = key_pair(s, set);
        // A private key whose seeds do not make its root, a short public key, an unknown set.
        let mut bad = vec![0u8; 64];
        bad[63] = 1;
        let refused = s.create_object(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::SLH_DSA),
            Attribute::ParameterSet(ParameterSetType::from(set)),
            Attribute::Token(false),
            Attribute::Value(bad),
        ]);
        assert_rv(refused, CKR_ATTRIBUTE_VALUE_INVALID);
        let refused = s.create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::SLH_DSA),
            Attribute::ParameterSet(ParameterSetType::from(set)),
            Attribute::Token(false),
            Attribute::Value(vec![1; 31]),
        ]);
        assert_rv(refused, CKR_ATTRIBUTE_VALUE_INVALID);
        let unknown = [
            Attribute::Token(false),
            Attribute::ParameterSet(ok(ParameterSetType::try_from(
                cryptoki::types::Ulong::from(13 as CK_ULONG),
            ))),
        ];
        assert_rv(
            s.generate_key_pair(
                &Mechanism::SlhDsaKeyPairGen,
                &unknown,
                &[Attribute::Token(false)],
            ),
            CKR_PARAMETER_SET_NOT_SUPPORTED,
        );
        // Wrong key for the mechanism, and the other way round.
        let (dsa_public, dsa_private) = mldsa_keypair(s, Ps::P44, false, &[]);
        assert_rv(
            s.sign(&slh_dsa(HedgeType::Preferred, b""), dsa_private, b"m"),
            CKR_KEY_TYPE_INCONSISTENT,
        );
        assert_rv(
            s.sign(&pure_ml_dsa(), private, b"m"),
            CKR_KEY_TYPE_INCONSISTENT,
        );
        assert_rv(
            s.verify(
                &slh_dsa(HedgeType::Preferred, b""),
                dsa_public,
                b"m",
                &[0; 17088],
            ),
            CKR_KEY_TYPE_INCONSISTENT,
        );
        // A context longer than 255 bytes.
        assert_rv(
            s.sign(&slh_dsa(HedgeType::Preferred, &[0; 256]), private, b"m"),
            CKR_MECHANISM_PARAM_INVALID,
        );
        for key in [public, private, dsa_public, dsa_private] {
            ok(s.destroy_object(key));
        }
    });
}

/// `CKM_HASH_SLH_DSA_<hash>` number `index` (SHA-224 first) with a context.
fn hash_slh_dsa(index: CK_ULONG, params: SignAdditionalContext<'_>) -> Mechanism<'_> {
    let variants = [
        Mechanism::HashSlhDsaSha224,
        Mechanism::HashSlhDsaSha256,
        Mechanism::HashSlhDsaSha384,
        Mechanism::HashSlhDsaSha512,
        Mechanism::HashSlhDsaSha3_224,
        Mechanism::HashSlhDsaSha3_256,
        Mechanism::HashSlhDsaSha3_384,
        Mechanism::HashSlhDsaSha3_512,
        Mechanism::HashSlhDsaShake128,
        Mechanism::HashSlhDsaShake256,
    ];
    variants[index as usize](params)
}

/// Whether `fips205` accepts a HashSLH-DSA signature of `digest` (hashed with the OID's hash).
fn independent_hash_verify(
    index: usize,
    public: &[u8],
    digest: &[u8],
    context: &[u8],
    oid: &[u8],
    sig: &[u8],
) -> bool {
    use fips205::traits::{SerDes, Verifier};
    fips205_set!(index, |m| {
        let pk = m::PublicKey::try_from_bytes(public.try_into().unwrap()).unwrap();
        pk.hash_verify(digest, &sig.try_into().unwrap(), context, oid)
    })
}

#[test]
fn hash_slh_dsa_signs_every_prehash_and_verifies_independently() {
    use common::prehash::{prehashes, raw_prehash_sign};
    both().on_both(2, |s, backend| {
        let message = b"b4ae-pkcs11: HashSLH-DSA through the C ABI";
        let context = b"hash slh ctx";
        let deterministic =
            SignAdditionalContext::new(HedgeType::DeterministicRequired, Some(context));
        let hedged = SignAdditionalContext::new(HedgeType::Required, Some(context));
        let slot = both().slot(backend, 2);
        for kind in [
            MechanismType::HASH_SLH_DSA,
            MechanismType::HASH_SLH_DSA_SHA224,
            MechanismType::HASH_SLH_DSA_SHAKE256,
        ] {
            let info = ok(both().pkcs11.get_mechanism_info(slot, kind));
            assert!(info.sign() && info.verify() && !info.generate_key_pair());
            assert_eq!((info.min_key_size(), info.max_key_size()), (1, 12));
        }
        // SHA2-128f and SHAKE-128f: the fast sets of both hash families.
        for index in [2usize, 3] {
            let (name, set, _, sig_len) = SETS[index];
            let (public, private) = key_pair(s, set);
            let pk = attr_bytes(s, public, CKA_VALUE);
            for case in prehashes(message) {
                let det = hash_slh_dsa(case.index, deterministic);
                let what = format!("{name} pre-hash {}", case.index);
                let signature = ok(s.sign(&det, private, message));
                assert_eq!(signature.len(), sig_len, "{what}");
                assert_eq!(ok(s.sign(&det, private, message)), signature, "{what}");
                ok(s.verify(&det, public, message, &signature));
                assert!(
                    independent_hash_verify(
                        index,
                        &pk,
                        &case.digest,
                        context,
                        &case.oid,
                        &signature
                    ),
                    "{what}: fips205 refuses the module's signature"
                );
                // Multi-part equals single-part; the bare mechanism over the digest too.
                ok(s.sign_init(&det, private));
                for part in message.chunks(7) {
                    ok(s.sign_update(part));
                }
                assert_eq!(ok(s.sign_final()), signature, "{what}");
                let over_digest = raw_prehash_sign(
                    s,
                    CKM_HASH_SLH_DSA,
                    private,
                    case.hash,
                    context,
                    &case.digest,
                );
                assert_eq!(over_digest, signature, "{what} vs CKM_HASH_SLH_DSA");
                // Hedged: another signature, valid; not a pure SLH-DSA one; another message fails.
                let h1 = ok(s.sign(&hash_slh_dsa(case.index, hedged), private, message));
                assert_ne!(h1, signature, "{what}");
                ok(s.verify(&det, public, message, &h1));
                assert_rv(
                    s.verify(
                        &slh_dsa(HedgeType::Preferred, context),
                        public,
                        message,
                        &signature,
                    ),
                    CKR_SIGNATURE_INVALID,
                );
                assert_rv(
                    s.verify(&det, public, b"other", &signature),
                    CKR_SIGNATURE_INVALID,
                );
                ok(s.verify_init(&det, public));
                ok(s.verify_update(&message[..5]));
                ok(s.verify_update(&message[5..]));
                ok(s.verify_final(&signature));
            }
            for key in [public, private] {
                ok(s.destroy_object(key));
            }
        }
    });
}

#[test]
fn hash_slh_dsa_refuses_bad_parameters_lengths_and_keys() {
    both().on_both(3, |s, _| {
        let (public, private) = key_pair(s, SlhDsaParameterSetType::SHA2_128F);
        let sha256 = MechanismType::SHA256;
        let prehashed = |context: &'static [u8], hash| {
            Mechanism::HashSlhDsa(HashSignAdditionalContext::new(
                HedgeType::Preferred,
                Some(context),
                hash,
            ))
        };
        let digest = [5u8; 32];
        let ctx = SignAdditionalContext::new(HedgeType::Preferred, Some(&[1u8; 256]));
        assert_rv(
            s.sign(&Mechanism::HashSlhDsaSha256(ctx), private, b"m"),
            CKR_MECHANISM_PARAM_INVALID,
        );
        let signature = common::prehash::bare_mechanism_refusals(
            s,
            CKM_HASH_SLH_DSA,
            prehashed,
            (public, private),
            &digest,
        );
        let m = prehashed(b"", sha256);
        // An ML-DSA key, and the wrong half.
        let (dsa_public, dsa_private) = mldsa_keypair(s, Ps::P44, false, &[]);
        assert_rv(s.sign(&m, dsa_private, &digest), CKR_KEY_TYPE_INCONSISTENT);
        assert_rv(
            s.verify(&m, dsa_public, &digest, &signature),
            CKR_KEY_TYPE_INCONSISTENT,
        );
        assert_rv(s.sign(&m, public, &digest), CKR_KEY_TYPE_INCONSISTENT);
        for key in [public, private, dsa_public, dsa_private] {
            ok(s.destroy_object(key));
        }
    });
}

/// NIST ACVP SLH-DSA sets (tests/vectors/slhdsa_acvp.json.gz; sources in its "source" field).
#[derive(serde::Deserialize)]
struct AcvpSets {
    keygen: Vec<AcvpKeyGen>,
    sigver: Vec<AcvpSigVer>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AcvpKeyGen {
    parameter_set: String,
    sk_seed: String,
    sk_prf: String,
    pk_seed: String,
    sk: String,
    pk: String,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AcvpSigVer {
    parameter_set: String,
    pk: String,
    message: String,
    signature: String,
    test_passed: bool,
    reason: String,
}

/// The index in [`SETS`] of an ACVP parameter-set name ("SLH-DSA-SHAKE-128f").
fn acvp_set(name: &str) -> usize {
    let short = name.strip_prefix("SLH-DSA-").expect("an SLH-DSA set");
    SETS.iter()
        .position(|(n, ..)| *n == short)
        .unwrap_or_else(|| panic!("unknown set {name}"))
}

fn unhex(text: &str) -> Vec<u8> {
    hex::decode(text).expect("hex")
}

/// Every ACVP keyGen case through the C ABI (on the HSM backend, the first of each set): the
/// module takes the private key (it recomputes
/// the root from the seeds, and refuses the key with one bit of its root flipped) and, where
/// signing is quick, signs with it under the expected public key. Every sigVer case (internal
/// interface: M' given, which PKCS#11 never takes) gets its verdict from the module's SLH-DSA
/// engine.
#[test]
fn acvp_keygen_through_the_abi_and_sigver_on_the_engine() {
    use std::io::Read;
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/slhdsa_acvp.json.gz");
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).expect("slhdsa_acvp.json.gz"))
        .read_to_string(&mut text)
        .expect("gzip");
    let sets: AcvpSets = serde_json::from_str(&text).expect("slhdsa_acvp.json.gz");
    assert_eq!((sets.keygen.len(), sets.sigver.len()), (120, 45));
    both().on_both(4, |s, backend| {
        let mut tampered_sets = std::collections::HashSet::new();
        for case in &sets.keygen {
            let index = acvp_set(&case.parameter_set);
            let (name, set, _, sig_len) = SETS[index];
            // The HSM backend imports through the same engine: one case per set there.
            let first_of_set = !tampered_sets.contains(&index);
            if backend == Backend::Hsm && !first_of_set {
                continue;
            }
            let (sk, pk) = (unhex(&case.sk), unhex(&case.pk));
            // The public key is PK.seed ‖ PK.root; the private key SK.seed ‖ SK.prf ‖ public key.
            let parts = [unhex(&case.sk_seed), unhex(&case.sk_prf), pk.clone()];
            assert_eq!(parts.concat(), sk, "{name}: the case's own layout");
            assert!(pk.starts_with(&unhex(&case.pk_seed)), "{name}: PK.seed");
            let private = |value: Vec<u8>| {
                s.create_object(&[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::KeyType(KeyType::SLH_DSA),
                    Attribute::ParameterSet(ParameterSetType::from(set)),
                    Attribute::Token(false),
                    Attribute::Private(true),
                    Attribute::Sign(true),
                    Attribute::Value(value),
                ])
            };
            let key = ok(private(sk.clone()));
            if tampered_sets.insert(index) {
                let mut wrong = sk.clone();
                *wrong.last_mut().unwrap() ^= 1;
                assert_rv(private(wrong), CKR_ATTRIBUTE_VALUE_INVALID);
            }
            let slow = name.ends_with('s');
            if !slow {
                let public = ok(s.create_object(&[
                    Attribute::Class(ObjectClass::PUBLIC_KEY),
                    Attribute::KeyType(KeyType::SLH_DSA),
                    Attribute::ParameterSet(ParameterSetType::from(set)),
                    Attribute::Token(false),
                    Attribute::Verify(true),
                    Attribute::Value(pk.clone()),
                ]));
                let mechanism = slh_dsa(HedgeType::DeterministicRequired, b"acvp");
                let signature = ok(s.sign(&mechanism, key, MESSAGE));
                assert_eq!(signature.len(), sig_len);
                ok(s.verify(&mechanism, public, MESSAGE, &signature));
                assert!(independent_verify(index, &pk, MESSAGE, b"acvp", &signature));
                ok(s.destroy_object(public));
            }
            ok(s.destroy_object(key));
        }
        let cases = match backend {
            Backend::Hsm => SETS.len(),
            Backend::Embedded => sets.keygen.len(),
        };
        println!("ACVP SLH-DSA ({backend:?}): {cases} keyGen cases through the ABI");
    });
    let mut invalid = 0;
    for (i, case) in sets.sigver.iter().enumerate() {
        let set = b4ae_pkcs11::mechanism::slhdsa::ParamSet::ALL[acvp_set(&case.parameter_set)];
        let verdict = set.verify_internal(
            &unhex(&case.pk),
            &unhex(&case.message),
            &unhex(&case.signature),
        );
        assert_eq!(
            verdict.is_ok(),
            case.test_passed,
            "sigver #{i} ({}): {verdict:?}",
            case.reason
        );
        invalid += usize::from(!case.test_passed);
    }
    println!(
        "ACVP SLH-DSA: {} sigVer cases ({invalid} invalid) on the engine",
        sets.sigver.len()
    );
}

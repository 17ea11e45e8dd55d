//! ML-DSA (FIPS 204) through CKM_ML_DSA_KEY_PAIR_GEN and CKM_ML_DSA, cross-checked with the
//! independent RustCrypto `ml-dsa` crate and, when present, ACVP known answers.

#[macro_use]
mod common;

use std::path::Path;

use common::*;
use cryptoki::mechanism::dsa::HedgeType::{DeterministicRequired, Preferred, Required};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ParameterSetType};
use cryptoki::types::Ulong;
use cryptoki_sys::*;
use serde::{Deserialize, Deserializer};

const SLOT_KEYGEN: usize = 0;
const SLOT_PARAMETER_SETS: usize = 1;
const SLOT_EXPORT: usize = 2;
const SLOT_CROSS_VERIFY: usize = 3;
const SLOT_CONTEXT_LIMITS: usize = 4;
const SLOT_MULTIPART: usize = 5;
const SLOT_TAMPERING: usize = 6;
const SLOT_LENGTH_QUERY: usize = 7;
const SLOT_OPERATION_STATE: usize = 8;
const SLOT_IMPORT_SEED: usize = 9;
const SLOT_IMPORT_VALUE: usize = 10;
const SLOT_IMPORT_PUBLIC: usize = 11;
const SLOT_ACVP: usize = 12;
const SLOT_THREADS: usize = 13;
const SLOT_ACVP_MORE: usize = 14;

const CONTEXT: &[u8] = b"b4ae-test-context";

#[test]
fn key_generation_sets_sizes_and_key_attributes() {
    let f = fixture();
    let session = f.user_session(f.ready_slot(SLOT_KEYGEN));
    for ps in Ps::ALL {
        let not_extractable = [Attribute::Extractable(false)];
        let (public, private) = mldsa_keypair(&session, ps, true, &not_extractable);
        let pk = attr_bytes(&session, public, CKA_VALUE);
        assert_eq!(pk.len(), ps.pk_len(), "{ps:?} public key");
        for (key, class) in [(public, CKO_PUBLIC_KEY), (private, CKO_PRIVATE_KEY)] {
            let ulong = |kind| attr_ulong(&session, key, kind);
            assert_eq!(ulong(CKA_CLASS), class);
            assert_eq!(ulong(CKA_KEY_TYPE), CKK_ML_DSA);
            assert_eq!(ulong(CKA_PARAMETER_SET), ps.ckp());
            assert_eq!(ulong(CKA_KEY_GEN_MECHANISM), CKM_ML_DSA_KEY_PAIR_GEN);
            assert!(attr_bool(&session, key, CKA_LOCAL), "{ps:?} CKA_LOCAL");
            assert!(attr_bool(&session, key, CKA_TOKEN));
        }
        let flag = |kind| attr_bool(&session, private, kind);
        assert!(flag(CKA_SENSITIVE), "CKA_SENSITIVE defaults to TRUE");
        assert!(flag(CKA_ALWAYS_SENSITIVE));
        assert!(!flag(CKA_EXTRACTABLE));
        assert!(flag(CKA_NEVER_EXTRACTABLE));
        let custody = attr_ulong(&session, private, CKA_B4AE_CUSTODY);
        assert_eq!(custody, B4AE_CUSTODY_EMBEDDED);
        assert_sensitive(&session, private, CKA_VALUE);
        assert_sensitive(&session, private, CKA_SEED);

        let signature = ok(session.sign(&pure_ml_dsa(), private, MESSAGE));
        assert_eq!(signature.len(), ps.sig_len(), "{ps:?} signature");
        ok(session.verify(&pure_ml_dsa(), public, MESSAGE, &signature));
        assert!(ps.verify(&pk, MESSAGE, b"", &signature), "ml-dsa: {ps:?}");
    }

    // Without CKA_EXTRACTABLE in the template, CKA_NEVER_EXTRACTABLE follows the default.
    let (_, private) = mldsa_keypair(&session, Ps::P44, false, &[]);
    assert_eq!(
        attr_bool(&session, private, CKA_NEVER_EXTRACTABLE),
        !attr_bool(&session, private, CKA_EXTRACTABLE)
    );
}

#[test]
fn parameter_set_may_be_on_either_template_and_must_be_known() {
    let f = fixture();
    let session = f.user_session(f.ready_slot(SLOT_PARAMETER_SETS));
    let generate = |public: &[Attribute], private: &[Attribute]| {
        session.generate_key_pair(&Mechanism::MlDsaKeyPairGen, public, private)
    };
    let set = |ps: Ps| Attribute::ParameterSet(ps.parameter_set());
    let seven: CK_ULONG = 7;
    let unknown = Attribute::ParameterSet(ok(ParameterSetType::try_from(Ulong::from(seven))));

    let (public, private) = ok(generate(&[Attribute::Verify(true)], &[set(Ps::P65)]));
    let public_key = attr_bytes(&session, public, CKA_VALUE);
    assert_eq!(public_key.len(), Ps::P65.pk_len());
    assert_eq!(
        attr_ulong(&session, public, CKA_PARAMETER_SET),
        CKP_ML_DSA_65
    );
    assert_eq!(
        attr_ulong(&session, private, CKA_PARAMETER_SET),
        CKP_ML_DSA_65
    );

    let unsupported = CKR_PARAMETER_SET_NOT_SUPPORTED;
    assert_rv(generate(std::slice::from_ref(&unknown), &[]), unsupported);
    assert_rv(generate(&[], &[unknown]), unsupported);
    let conflicting = generate(&[set(Ps::P44)], &[set(Ps::P87)]);
    assert_rv(conflicting, CKR_TEMPLATE_INCONSISTENT);
    let missing = generate(&[Attribute::Verify(true)], &[Attribute::Sign(true)]);
    assert_rv(missing, CKR_TEMPLATE_INCOMPLETE);
}

#[test]
fn exported_seed_regenerates_the_same_key() {
    let f = fixture();
    let session = f.user_session(f.ready_slot(SLOT_EXPORT));
    for ps in Ps::ALL {
        let (public, private) = mldsa_exportable_keypair(&session, ps);
        let pk = attr_bytes(&session, public, CKA_VALUE);
        let sk = attr_bytes(&session, private, CKA_VALUE);
        let seed = attr_bytes(&session, private, CKA_SEED);
        assert_eq!(sk.len(), ps.sk_len(), "{ps:?} expanded private key");
        assert_eq!(seed.len(), 32, "{ps:?} seed");

        let (reference_pk, reference_sk) = ps.keygen(&seed);
        assert!(
            reference_pk == pk,
            "{ps:?}: the seed gives another public key"
        );
        assert!(
            reference_sk == sk,
            "{ps:?}: the seed gives another private key"
        );

        assert!(!attr_bool(&session, private, CKA_ALWAYS_SENSITIVE));
        assert!(!attr_bool(&session, private, CKA_NEVER_EXTRACTABLE));
        assert!(attr_bool(&session, private, CKA_LOCAL));
        let custody = attr_ulong(&session, private, CKA_B4AE_CUSTODY);
        assert_eq!(custody, B4AE_CUSTODY_EMBEDDED);
    }
}

#[test]
fn signatures_verify_under_the_independent_implementation() {
    let f = fixture();
    let session = f.user_session(f.ready_slot(SLOT_CROSS_VERIFY));
    for ps in Ps::ALL {
        let (public, private) = mldsa_exportable_keypair(&session, ps);
        let pk = attr_bytes(&session, public, CKA_VALUE);
        let (_, sk) = ps.keygen(&attr_bytes(&session, private, CKA_SEED));

        // No parameter: pure ML-DSA with an empty context.
        let plain = ok(session.sign(&pure_ml_dsa(), private, MESSAGE));
        assert_eq!(plain.len(), ps.sig_len());
        assert!(
            ps.verify(&pk, MESSAGE, b"", &plain),
            "{ps:?} without context"
        );
        assert!(
            !ps.verify(&pk, MESSAGE, CONTEXT, &plain),
            "{ps:?}: context?"
        );

        // Hedged with a context: valid, and different each time.
        let hedged = ml_dsa_with(Required, CONTEXT);
        let first = ok(session.sign(&hedged, private, MESSAGE));
        let second = ok(session.sign(&hedged, private, MESSAGE));
        assert_ne!(first, second, "{ps:?}: hedged signatures repeat");
        for signature in [&first, &second] {
            assert_eq!(signature.len(), ps.sig_len());
            assert!(ps.verify(&pk, MESSAGE, CONTEXT, signature), "{ps:?} hedged");
            ok(session.verify(&hedged, public, MESSAGE, signature));
        }
        let other_context = ml_dsa_with(Preferred, b"other");
        let invalid = CKR_SIGNATURE_INVALID;
        assert_rv(
            session.verify(&other_context, public, MESSAGE, &first),
            invalid,
        );
        assert_rv(
            session.verify(&pure_ml_dsa(), public, MESSAGE, &first),
            invalid,
        );

        // Deterministic: identical each time, and exactly FIPS 204 with rnd = 0.
        let contexts: [&[u8]; 2] = [CONTEXT, b""];
        for context in contexts {
            let deterministic = ml_dsa_with(DeterministicRequired, context);
            let first = ok(session.sign(&deterministic, private, MESSAGE));
            let second = ok(session.sign(&deterministic, private, MESSAGE));
            assert_eq!(first, second, "{ps:?}: deterministic signatures differ");
            let reference = ps.sign_deterministic(&sk, MESSAGE, context);
            assert!(
                first == reference,
                "{ps:?}: differs from ml-dsa's signature"
            );
            ok(session.verify(&deterministic, public, MESSAGE, &first));
        }
    }
}

#[test]
fn contexts_longer_than_255_bytes_are_rejected() {
    let f = fixture();
    let session = f.user_session(f.ready_slot(SLOT_CONTEXT_LIMITS));
    let (public, private) = mldsa_keypair(&session, Ps::P44, false, &[]);
    let pk = attr_bytes(&session, public, CKA_VALUE);

    let longest = [0xC7u8; 255];
    let signature = ok(session.sign(&ml_dsa_with(Preferred, &longest), private, MESSAGE));
    assert!(Ps::P44.verify(&pk, MESSAGE, &longest, &signature));

    let too_long = [0xC7u8; 256];
    let mechanism = ml_dsa_with(Preferred, &too_long);
    let invalid = CKR_MECHANISM_PARAM_INVALID;
    assert_rv(session.sign_init(&mechanism, private), invalid);
    assert_rv(session.verify_init(&mechanism, public), invalid);

    // A hedge variant that does not exist, then a parameter of the wrong size.
    let mut parameter = CK_SIGN_ADDITIONAL_CONTEXT {
        hedgeVariant: 7,
        pContext: null(),
        ulContextLen: 0,
    };
    let mut mechanism = CK_MECHANISM {
        mechanism: CKM_ML_DSA,
        pParameter: (&mut parameter as *mut CK_SIGN_ADDITIONAL_CONTEXT).cast(),
        ulParameterLen: size_of::<CK_SIGN_ADDITIONAL_CONTEXT>() as CK_ULONG,
    };
    let (s, key) = (session.handle(), private.handle());
    assert_rv(ck!(C_SignInit(s, &mut mechanism, key)), invalid);
    let mut valid = CK_SIGN_ADDITIONAL_CONTEXT {
        hedgeVariant: CKH_HEDGE_PREFERRED,
        pContext: null(),
        ulContextLen: 0,
    };
    mechanism.pParameter = (&mut valid as *mut CK_SIGN_ADDITIONAL_CONTEXT).cast();
    mechanism.ulParameterLen = 4;
    assert_rv(ck!(C_SignInit(s, &mut mechanism, key)), invalid);
}

#[test]
fn multipart_signing_and_verification() {
    let f = fixture();
    let session = f.user_session(f.ready_slot(SLOT_MULTIPART));
    let message: Vec<u8> = (0..3000u32).map(|i| (i % 253) as u8).collect();
    for ps in Ps::ALL {
        let (public, private) = mldsa_keypair(&session, ps, false, &[]);
        let pk = attr_bytes(&session, public, CKA_VALUE);

        ok(session.sign_init(&pure_ml_dsa(), private));
        ok(session.sign_update(&[]));
        message
            .chunks(1000)
            .for_each(|part| ok(session.sign_update(part)));
        let signature = ok(session.sign_final());
        assert_eq!(signature.len(), ps.sig_len());
        assert!(
            ps.verify(&pk, &message, b"", &signature),
            "{ps:?} multi-part"
        );
        ok(session.verify(&pure_ml_dsa(), public, &message, &signature));

        ok(session.verify_init(&pure_ml_dsa(), public));
        message
            .chunks(700)
            .for_each(|part| ok(session.verify_update(part)));
        ok(session.verify_final(&signature));

        ok(session.verify_init(&pure_ml_dsa(), public));
        ok(session.verify_update(&message[..2999]));
        assert_rv(session.verify_final(&signature), CKR_SIGNATURE_INVALID);

        // Deterministic multi-part equals deterministic single-part.
        let deterministic = ml_dsa_with(DeterministicRequired, CONTEXT);
        let single = ok(session.sign(&deterministic, private, &message));
        ok(session.sign_init(&deterministic, private));
        message
            .chunks(1024)
            .for_each(|part| ok(session.sign_update(part)));
        assert_eq!(ok(session.sign_final()), single, "{ps:?}");
    }
}

#[test]
fn tampered_messages_and_signatures_are_rejected() {
    let f = fixture();
    let session = f.user_session(f.ready_slot(SLOT_TAMPERING));
    let ps = Ps::P65;
    let mechanism = pure_ml_dsa();
    let (public, private) = mldsa_keypair(&session, ps, false, &[]);
    let signature = ok(session.sign(&mechanism, private, MESSAGE));
    ok(session.verify(&mechanism, public, MESSAGE, &signature));
    let verify =
        |message: &[u8], signature: &[u8]| session.verify(&mechanism, public, message, signature);

    let mut message = MESSAGE.to_vec();
    message[0] ^= 1;
    assert_rv(verify(&message, &signature), CKR_SIGNATURE_INVALID);
    for position in [0, ps.sig_len() / 2, ps.sig_len() - 1] {
        let mut forged = signature.clone();
        forged[position] ^= 0x10;
        assert_rv(verify(MESSAGE, &forged), CKR_SIGNATURE_INVALID);
    }
    let mut longer = signature.clone();
    longer.push(0);
    let shorter = &signature[..ps.sig_len() - 1];
    let wrong_lengths: [&[u8]; 3] = [shorter, &longer, &[]];
    for wrong_length in wrong_lengths {
        let allowed = [CKR_SIGNATURE_LEN_RANGE, CKR_SIGNATURE_INVALID];
        assert_rv_in(verify(MESSAGE, wrong_length), &allowed);
    }
    let (_, other_private) = mldsa_keypair(&session, ps, false, &[]);
    let other = ok(session.sign(&mechanism, other_private, MESSAGE));
    assert_rv(verify(MESSAGE, &other), CKR_SIGNATURE_INVALID);
}

#[test]
fn sign_length_query_keeps_the_operation_active() {
    let f = fixture();
    let session = f.user_session(f.ready_slot(SLOT_LENGTH_QUERY));
    let ps = Ps::P44;
    let (public, private) = mldsa_keypair(&session, ps, false, &[]);
    let pk = attr_bytes(&session, public, CKA_VALUE);
    let (s, key) = (session.handle(), private.handle());
    let mut mechanism = mech(CKM_ML_DSA);
    let (data, data_len) = (MESSAGE.as_ptr().cast_mut(), MESSAGE.len() as CK_ULONG);
    let mut buffer = [0u8; 5000];
    let out = buffer.as_mut_ptr();
    let full = buffer.len() as CK_ULONG;
    let mut len: CK_ULONG = 0;

    assert_rv(ck!(C_SignInit(s, &mut mechanism, key)), CKR_OK);
    assert_rv(ck!(C_Sign(s, data, data_len, null(), &mut len)), CKR_OK);
    assert_eq!(len as usize, ps.sig_len(), "length query");
    len = 100;
    let rv = ck!(C_Sign(s, data, data_len, out, &mut len));
    assert_rv(rv, CKR_BUFFER_TOO_SMALL);
    assert_eq!(
        len as usize,
        ps.sig_len(),
        "CKR_BUFFER_TOO_SMALL reports the length"
    );
    len = full;
    assert_rv(ck!(C_Sign(s, data, data_len, out, &mut len)), CKR_OK);
    assert_eq!(len as usize, ps.sig_len());
    assert!(ps.verify(&pk, MESSAGE, b"", &buffer[..len as usize]));
    len = full;
    let rv = ck!(C_Sign(s, data, data_len, out, &mut len));
    assert_rv(rv, CKR_OPERATION_NOT_INITIALIZED);

    // The same with C_SignFinal.
    assert_rv(ck!(C_SignInit(s, &mut mechanism, key)), CKR_OK);
    assert_rv(ck!(C_SignUpdate(s, data, data_len)), CKR_OK);
    len = 0;
    assert_rv(ck!(C_SignFinal(s, null(), &mut len)), CKR_OK);
    assert_eq!(len as usize, ps.sig_len());
    len = 10;
    assert_rv(ck!(C_SignFinal(s, out, &mut len)), CKR_BUFFER_TOO_SMALL);
    assert_eq!(len as usize, ps.sig_len());
    len = full;
    assert_rv(ck!(C_SignFinal(s, out, &mut len)), CKR_OK);
    assert!(ps.verify(&pk, MESSAGE, b"", &buffer[..len as usize]));
}

#[test]
fn sign_and_verify_operation_state_and_key_checks() {
    let f = fixture();
    let session = f.user_session(f.ready_slot(SLOT_OPERATION_STATE));
    let ps = Ps::P44;
    let (public, private) = mldsa_keypair(&session, ps, false, &[]);
    let pk = attr_bytes(&session, public, CKA_VALUE);
    let s = session.handle();
    let mut signature = vec![0u8; ps.sig_len()];
    let out = signature.as_mut_ptr();
    let mut len = signature.len() as CK_ULONG;
    let (data, data_len) = (MESSAGE.as_ptr().cast_mut(), MESSAGE.len() as CK_ULONG);

    assert_all_rv(
        &[
            ("C_Sign", ck!(C_Sign(s, data, data_len, out, &mut len))),
            ("C_SignUpdate", ck!(C_SignUpdate(s, data, data_len))),
            ("C_SignFinal", ck!(C_SignFinal(s, out, &mut len))),
            ("C_Verify", ck!(C_Verify(s, data, data_len, out, len))),
            ("C_VerifyUpdate", ck!(C_VerifyUpdate(s, data, data_len))),
            ("C_VerifyFinal", ck!(C_VerifyFinal(s, out, len))),
        ],
        CKR_OPERATION_NOT_INITIALIZED,
    );

    // A second C_SignInit fails and leaves the first operation intact.
    ok(session.sign_init(&pure_ml_dsa(), private));
    assert_rv(
        session.sign_init(&pure_ml_dsa(), private),
        CKR_OPERATION_ACTIVE,
    );
    len = signature.len() as CK_ULONG;
    assert_rv(ck!(C_Sign(s, data, data_len, out, &mut len)), CKR_OK);
    assert!(ps.verify(&pk, MESSAGE, b"", &signature[..len as usize]));

    let wrong_key = [CKR_KEY_TYPE_INCONSISTENT, CKR_KEY_FUNCTION_NOT_PERMITTED];
    assert_rv_in(session.sign_init(&pure_ml_dsa(), public), &wrong_key);
    assert_rv_in(session.verify_init(&pure_ml_dsa(), private), &wrong_key);
    let invalid = CKR_MECHANISM_INVALID;
    assert_rv(session.sign_init(&Mechanism::Sha256, private), invalid);
    assert_rv(
        session.sign_init(&Mechanism::MlDsaKeyPairGen, private),
        invalid,
    );
    let rv = ck!(C_Sign(s, data, data_len, out, &mut len));
    assert_rv(rv, CKR_OPERATION_NOT_INITIALIZED);

    let (_, cannot_sign) = mldsa_keypair(&session, ps, false, &[Attribute::Sign(false)]);
    let rv = session.sign_init(&pure_ml_dsa(), cannot_sign);
    assert_rv(rv, CKR_KEY_FUNCTION_NOT_PERMITTED);
}

#[test]
fn private_keys_import_from_the_seed_alone() {
    let f = fixture();
    let session = f.user_session(f.ready_slot(SLOT_IMPORT_SEED));
    for ps in Ps::ALL {
        let key_seed = test_seed(ps, 1);
        let (pk, sk) = ps.keygen(&key_seed);
        let key = import_mldsa_private(&session, ps, Attribute::Seed(key_seed.clone()), true);
        assert!(
            attr_bytes(&session, key, CKA_VALUE) == sk,
            "{ps:?}: expanded key"
        );
        assert!(!attr_bool(&session, key, CKA_LOCAL));
        let custody = attr_ulong(&session, key, CKA_B4AE_CUSTODY);
        assert_eq!(custody, B4AE_CUSTODY_EMBEDDED);

        let deterministic = ml_dsa_with(DeterministicRequired, CONTEXT);
        let signature = ok(session.sign(&deterministic, key, MESSAGE));
        let reference = ps.sign_deterministic(&sk, MESSAGE, CONTEXT);
        assert!(
            signature == reference,
            "{ps:?}: differs from ml-dsa's signature"
        );
        assert!(ps.verify(&pk, MESSAGE, CONTEXT, &signature));

        let sensitive = import_mldsa_private(&session, ps, Attribute::Seed(key_seed), false);
        assert_sensitive(&session, sensitive, CKA_VALUE);
        assert_sensitive(&session, sensitive, CKA_SEED);
        let hedged = ok(session.sign(&pure_ml_dsa(), sensitive, MESSAGE));
        assert!(
            ps.verify(&pk, MESSAGE, b"", &hedged),
            "{ps:?} sensitive import"
        );
    }
}

#[test]
fn private_keys_import_from_the_expanded_value_alone() {
    let f = fixture();
    let session = f.user_session(f.ready_slot(SLOT_IMPORT_VALUE));
    for ps in Ps::ALL {
        let (pk, sk) = ps.keygen(&test_seed(ps, 2));
        let key = import_mldsa_private(&session, ps, Attribute::Value(sk.clone()), false);
        let deterministic = ml_dsa_with(DeterministicRequired, CONTEXT);
        let signature = ok(session.sign(&deterministic, key, MESSAGE));
        let reference = ps.sign_deterministic(&sk, MESSAGE, CONTEXT);
        assert!(
            signature == reference,
            "{ps:?}: differs from ml-dsa's signature"
        );
        assert!(ps.verify(&pk, MESSAGE, CONTEXT, &signature));
        let hedged = ok(session.sign(&pure_ml_dsa(), key, MESSAGE));
        assert!(ps.verify(&pk, MESSAGE, b"", &hedged));

        let create = |material| session.create_object(&mldsa_private_template(ps, material));
        let invalid = CKR_ATTRIBUTE_VALUE_INVALID;
        assert_rv(
            create(Attribute::Value(sk[..sk.len() - 1].to_vec())),
            invalid,
        );
        assert_rv(create(Attribute::Seed(vec![7; 31])), invalid);
        let no_material = create(Attribute::Label(b"no key material".to_vec()));
        assert_rv(no_material, CKR_TEMPLATE_INCOMPLETE);
        let mut mismatched = mldsa_private_template(ps, Attribute::Value(sk));
        mismatched.push(Attribute::Seed(test_seed(ps, 3)));
        let allowed = [CKR_ATTRIBUTE_VALUE_INVALID, CKR_TEMPLATE_INCONSISTENT];
        assert_rv_in(session.create_object(&mismatched), &allowed);
    }
}

#[test]
fn public_keys_import_and_verify_independent_signatures() {
    let f = fixture();
    let session = f.user_session(f.ready_slot(SLOT_IMPORT_PUBLIC));
    for ps in Ps::ALL {
        let (pk, sk) = ps.keygen(&test_seed(ps, 4));
        let public = import_mldsa_public(&session, ps, &pk);
        assert!(attr_bytes(&session, public, CKA_VALUE) == pk);
        assert_eq!(attr_ulong(&session, public, CKA_PARAMETER_SET), ps.ckp());

        let with_context = ps.sign_deterministic(&sk, MESSAGE, CONTEXT);
        let without = ps.sign_deterministic(&sk, MESSAGE, b"");
        let mechanism = ml_dsa_with(Preferred, CONTEXT);
        ok(session.verify(&mechanism, public, MESSAGE, &with_context));
        ok(session.verify(&pure_ml_dsa(), public, MESSAGE, &without));
        let rv = session.verify(&pure_ml_dsa(), public, MESSAGE, &with_context);
        assert_rv(rv, CKR_SIGNATURE_INVALID);

        let short = mldsa_public_template(ps, &pk[..pk.len() - 1]);
        assert_rv(session.create_object(&short), CKR_ATTRIBUTE_VALUE_INVALID);
        let mut mislabelled = mldsa_public_template(ps, &pk);
        let other = if ps == Ps::P44 { Ps::P65 } else { Ps::P44 };
        mislabelled[2] = Attribute::ParameterSet(other.parameter_set());
        let rv = session.create_object(&mislabelled);
        assert_rv(rv, CKR_ATTRIBUTE_VALUE_INVALID);
    }
}

#[test]
fn signing_from_many_threads_at_once() {
    let f = fixture();
    let slot = f.ready_slot(SLOT_THREADS);
    let session = f.user_session(slot);
    let ps = Ps::P65;
    let (public, private) = mldsa_keypair(&session, ps, true, &[]);
    let pk = attr_bytes(&session, public, CKA_VALUE);
    let work = |thread: usize| {
        // The user is logged in on the token, so every new session is too.
        let own = ok(f.pkcs11.open_ro_session(slot));
        (0..3)
            .map(|i| {
                let message = format!("thread {thread} message {i}").into_bytes();
                let signature = ok(own.sign(&pure_ml_dsa(), private, &message));
                ok(own.verify(&pure_ml_dsa(), public, &message, &signature));
                (message, signature)
            })
            .collect::<Vec<_>>()
    };
    let results: Vec<(Vec<u8>, Vec<u8>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|thread| scope.spawn(move || work(thread)))
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("worker thread panicked"))
            .collect()
    });
    assert_eq!(results.len(), 12);
    for (message, signature) in &results {
        assert!(ps.verify(&pk, message, b"", signature));
    }
}

// ---------------------------------------------------------------------------------------------
// Known answers from tests/vectors/mldsa_acvp.json (NIST ACVP cases), when present

#[derive(Deserialize)]
struct Vectors {
    #[serde(default)]
    keygen: Vec<KeyGenCase>,
    #[serde(default)]
    siggen: Vec<SigGenCase>,
    #[serde(default)]
    sigver: Vec<SigVerCase>,
}

#[derive(Deserialize)]
struct KeyGenCase {
    #[serde(alias = "parameterSet", deserialize_with = "parameter_set")]
    parameter_set: Ps,
    #[serde(deserialize_with = "hex_bytes")]
    seed: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    pk: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    sk: Vec<u8>,
}

#[derive(Deserialize)]
struct SigGenCase {
    #[serde(alias = "parameterSet", deserialize_with = "parameter_set")]
    parameter_set: Ps,
    #[serde(deserialize_with = "hex_bytes")]
    sk: Vec<u8>,
    #[serde(flatten)]
    input: SignedMessage,
    #[serde(default)]
    deterministic: bool,
}

#[derive(Deserialize)]
struct SigVerCase {
    #[serde(alias = "parameterSet", deserialize_with = "parameter_set")]
    parameter_set: Ps,
    #[serde(deserialize_with = "hex_bytes")]
    pk: Vec<u8>,
    #[serde(flatten)]
    input: SignedMessage,
    #[serde(rename = "testPassed")]
    test_passed: bool,
}

#[derive(Deserialize)]
struct SignedMessage {
    #[serde(deserialize_with = "hex_bytes")]
    message: Vec<u8>,
    #[serde(default, deserialize_with = "hex_bytes")]
    context: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    signature: Vec<u8>,
    #[serde(default, alias = "signatureInterface")]
    signature_interface: Option<String>,
    #[serde(default, alias = "preHash")]
    pre_hash: Option<String>,
}

impl SignedMessage {
    /// CKM_ML_DSA is pure ML-DSA through the external interface.
    fn is_pure_external(&self) -> bool {
        let is = |field: &Option<String>, value: &str| {
            field
                .as_deref()
                .is_none_or(|v| v.eq_ignore_ascii_case(value))
        };
        is(&self.signature_interface, "external") && is(&self.pre_hash, "pure")
    }
}

fn hex_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(deserializer)?;
    hex::decode(text).map_err(serde::de::Error::custom)
}

/// "ML-DSA-65" (or "65").
fn parameter_set<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Ps, D::Error> {
    let text = String::deserialize(deserializer)?;
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    let ps = digits.parse().ok().and_then(Ps::from_number);
    ps.ok_or_else(|| serde::de::Error::custom(format!("unknown parameter set {text:?}")))
}

#[test]
fn acvp_known_answers() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/mldsa_acvp.json");
    let text = std::fs::read_to_string(&path).expect("tests/vectors/mldsa_acvp.json");
    let vectors: Vectors = serde_json::from_str(&text).expect("mldsa_acvp.json");
    let cases = vectors.keygen.len() + vectors.siggen.len() + vectors.sigver.len();
    assert!(cases > 0, "no case in {}", path.display());

    let f = fixture();
    let session = f.user_session(f.ready_slot(SLOT_ACVP));
    // KeyGen: the seed expands to the expected private key, which signs under the public key.
    for case in &vectors.keygen {
        let (ps, what) = (
            case.parameter_set,
            format!("keygen {:?}", case.parameter_set),
        );
        let key = import_mldsa_private(&session, ps, Attribute::Seed(case.seed.clone()), true);
        assert!(
            attr_bytes(&session, key, CKA_VALUE) == case.sk,
            "{what}: sk"
        );
        let signature = ok(session.sign(&pure_ml_dsa(), key, MESSAGE));
        assert!(ps.verify(&case.pk, MESSAGE, b"", &signature), "{what}: pk");
        ok(session.destroy_object(key));
    }
    // SigGen: deterministic signatures are reproduced byte for byte; all of them verify.
    let siggen: Vec<_> = vectors
        .siggen
        .iter()
        .filter(|c| c.input.is_pure_external())
        .collect();
    let sigver: Vec<_> = vectors
        .sigver
        .iter()
        .filter(|c| c.input.is_pure_external())
        .collect();
    for case in &siggen {
        let (ps, input) = (case.parameter_set, &case.input);
        if case.deterministic {
            let key = import_mldsa_private(&session, ps, Attribute::Value(case.sk.clone()), false);
            let mechanism = ml_dsa_with(DeterministicRequired, &input.context);
            let signature = ok(session.sign(&mechanism, key, &input.message));
            let expected = hex::encode_upper(&input.signature);
            assert_eq!(hex::encode_upper(signature), expected, "siggen {ps:?}");
            ok(session.destroy_object(key));
        }
        let public = import_mldsa_public(&session, ps, &ps.public_from_private(&case.sk));
        let mechanism = ml_dsa_with(Preferred, &input.context);
        ok(session.verify(&mechanism, public, &input.message, &input.signature));
        ok(session.destroy_object(public));
    }
    // SigVer: the module agrees with the expected verdict.
    for case in &sigver {
        let (ps, input) = (case.parameter_set, &case.input);
        let public = import_mldsa_public(&session, ps, &case.pk);
        let mechanism = ml_dsa_with(Preferred, &input.context);
        let verdict = session.verify(&mechanism, public, &input.message, &input.signature);
        let expected = if case.test_passed {
            CKR_OK
        } else {
            CKR_SIGNATURE_INVALID
        };
        assert_rv(verdict, expected);
        ok(session.destroy_object(public));
    }
    let counts = (vectors.keygen.len(), siggen.len(), sigver.len());
    println!("ACVP keygen, siggen, sigver cases checked: {counts:?}");
}

// ---------------------------------------------------------------------------------------------
// More NIST ACVP sets: tests/vectors/mldsa_acvp_sets.json.gz (sources in its "source" field)

#[derive(Deserialize)]
struct MoreSets {
    keygen: Vec<KeyGenCase>,
    siggen: Vec<InternalSigGen>,
    sigver: Vec<InternalSigVer>,
}

/// A sigGen case of the internal interface: M' and rnd are given.
#[derive(Deserialize)]
struct InternalSigGen {
    from: String,
    #[serde(rename = "parameterSet", deserialize_with = "parameter_set")]
    parameter_set: Ps,
    #[serde(deserialize_with = "hex_bytes")]
    sk: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    message: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    rnd: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    signature: Vec<u8>,
}

/// A sigVer case of the internal interface, valid or not.
#[derive(Deserialize)]
struct InternalSigVer {
    from: String,
    #[serde(rename = "parameterSet", deserialize_with = "parameter_set")]
    parameter_set: Ps,
    #[serde(deserialize_with = "hex_bytes")]
    pk: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    message: Vec<u8>,
    #[serde(deserialize_with = "hex_bytes")]
    signature: Vec<u8>,
    #[serde(rename = "testPassed")]
    test_passed: bool,
    #[serde(default)]
    reason: String,
}

fn engine_set(ps: Ps) -> b4ae_pkcs11::mechanism::mldsa::ParamSet {
    b4ae_pkcs11::mechanism::mldsa::ParamSet::from_ck(ps.ckp()).expect("a parameter set")
}

/// Every keyGen case through the C ABI (seed imported; the module's private key and signatures
/// under the expected public key); every internal-interface sigGen case reproduced byte for byte
/// and every sigVer verdict matched by the module's ML-DSA engine, which PKCS#11 reaches only
/// with an M' of its own making (HashML-DSA, a context string).
#[test]
fn acvp_more_sets_keygen_through_the_abi_and_the_internal_interface_on_the_engine() {
    use std::io::Read;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/mldsa_acvp_sets.json.gz");
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).expect("mldsa_acvp_sets.json.gz"))
        .read_to_string(&mut text)
        .expect("gzip");
    let sets: MoreSets = serde_json::from_str(&text).expect("mldsa_acvp_sets.json.gz");
    assert_eq!(
        (sets.keygen.len(), sets.siggen.len(), sets.sigver.len()),
        (75, 105, 90)
    );

    let f = fixture();
    let session = f.user_session(f.ready_slot(SLOT_ACVP_MORE));
    for case in &sets.keygen {
        let ps = case.parameter_set;
        let key = import_mldsa_private(&session, ps, Attribute::Seed(case.seed.clone()), true);
        assert!(
            attr_bytes(&session, key, CKA_VALUE) == case.sk,
            "keygen {ps:?}: sk"
        );
        let signature = ok(session.sign(&pure_ml_dsa(), key, MESSAGE));
        assert!(
            ps.verify(&case.pk, MESSAGE, b"", &signature),
            "keygen {ps:?}: pk"
        );
        ok(session.destroy_object(key));
    }

    use b4ae_pkcs11::mechanism::hash_mldsa::{sign_internal, verify_internal};
    for (i, case) in sets.siggen.iter().enumerate() {
        let set = engine_set(case.parameter_set);
        let rnd: [u8; 32] = case.rnd.as_slice().try_into().expect("32-byte rnd");
        let signature = sign_internal(set, &case.sk, &case.message, &rnd).expect("signing");
        assert!(signature == case.signature, "siggen {} #{i}", case.from);
        let pk = set.public_of_private(&case.sk).expect("the public key");
        verify_internal(set, &pk, &case.message, &signature).expect("verifies");
    }
    let mut refused = 0;
    for (i, case) in sets.sigver.iter().enumerate() {
        let set = engine_set(case.parameter_set);
        let verdict = verify_internal(set, &case.pk, &case.message, &case.signature);
        assert_eq!(
            verdict.is_ok(),
            case.test_passed,
            "sigver {} #{i} ({}): {verdict:?}",
            case.from,
            case.reason
        );
        refused += usize::from(!case.test_passed);
    }
    println!(
        "ACVP: {} keyGen through the ABI; {} sigGen and {} sigVer ({refused} invalid) on the engine",
        sets.keygen.len(),
        sets.siggen.len(),
        sets.sigver.len()
    );
}

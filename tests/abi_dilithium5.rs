//! Round-3 Dilithium5 under the vendor numbers (CKK_B4AE_DILITHIUM5, CKM_B4AE_DILITHIUM5*),
//! through the built module: key generation, single- and multi-part signing, errors, and the
//! round-3.1 known answers in tests/vectors/dilithium5_kat.json.

mod common;

use common::*;
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki_sys::*;
use std::path::Path;

const CKK_B4AE_DILITHIUM5: CK_KEY_TYPE = 0xB4AE_0001;
const CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN: CK_MECHANISM_TYPE = 0xB4AE_0001;
const CKM_B4AE_DILITHIUM5: CK_MECHANISM_TYPE = 0xB4AE_0002;

const SLOT_KEYGEN: usize = 0;
const SLOT_SIGN: usize = 1;
const SLOT_KAT: usize = 2;

fn vendor(mechanism: CK_MECHANISM_TYPE) -> Mechanism<'static> {
    let kind = MechanismType::new_vendor_defined(mechanism).expect("vendor mechanism");
    Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(kind, None))
}

fn key_type() -> KeyType {
    KeyType::new_vendor_defined(CKK_B4AE_DILITHIUM5).expect("vendor key type")
}

fn keypair(session: &Session, exportable: bool) -> (ObjectHandle, ObjectHandle) {
    let public = [Attribute::Token(true), Attribute::Verify(true)];
    let private = [
        Attribute::Token(true),
        Attribute::Sign(true),
        Attribute::Sensitive(!exportable),
        Attribute::Extractable(exportable),
    ];
    ok(session.generate_key_pair(&vendor(CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN), &public, &private))
}

#[test]
fn key_generation_makes_round_3_sized_keys() {
    let f = fixture();
    let session = f.user_session(f.ready_slot(SLOT_KEYGEN));
    let (public, private) = keypair(&session, false);
    assert_eq!(attr_bytes(&session, public, CKA_VALUE).len(), 2592);
    assert_eq!(
        attr_ulong(&session, public, CKA_KEY_TYPE),
        CKK_B4AE_DILITHIUM5
    );
    assert_eq!(
        attr_ulong(&session, private, CKA_B4AE_CUSTODY),
        B4AE_CUSTODY_EMBEDDED
    );
    assert!(attr_bool(&session, private, CKA_LOCAL));
    assert_eq!(
        attr_ulong(&session, private, CKA_KEY_GEN_MECHANISM),
        CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN
    );
    let hidden = get_attr(session.handle(), private.handle(), CKA_VALUE);
    assert_eq!(hidden, Err(CKR_ATTRIBUTE_SENSITIVE));
    let (_, exportable) = keypair(&session, true);
    assert_eq!(attr_bytes(&session, exportable, CKA_VALUE).len(), 4864);
    let info = ok(f.pkcs11.get_mechanism_info(
        f.slot(SLOT_KEYGEN),
        MechanismType::new_vendor_defined(CKM_B4AE_DILITHIUM5).unwrap(),
    ));
    assert!(info.sign() && info.verify());
}

#[test]
fn signing_is_deterministic_single_and_multi_part() {
    let f = fixture();
    let session = f.user_session(f.ready_slot(SLOT_SIGN));
    let (public, private) = keypair(&session, false);
    let message: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    let mechanism = vendor(CKM_B4AE_DILITHIUM5);
    let signature = ok(session.sign(&mechanism, private, &message));
    assert_eq!(signature.len(), 4595);
    assert_eq!(
        ok(session.sign(&mechanism, private, &message)),
        signature,
        "round 3 signs deterministically"
    );
    ok(session.verify(&mechanism, public, &message, &signature));

    ok(session.sign_init(&mechanism, private));
    for part in message.chunks(700) {
        ok(session.sign_update(part));
    }
    assert_eq!(
        ok(session.sign_final()),
        signature,
        "multi-part signs the same bytes"
    );
    ok(session.verify_init(&mechanism, public));
    for part in message.chunks(1100) {
        ok(session.verify_update(part));
    }
    ok(session.verify_final(&signature));

    let mut forged = signature.clone();
    forged[99] ^= 1;
    assert_rv(
        session.verify(&mechanism, public, &message, &forged),
        CKR_SIGNATURE_INVALID,
    );
    assert_rv(
        session.verify(&mechanism, public, &message, &signature[..4594]),
        CKR_SIGNATURE_LEN_RANGE,
    );
    assert_rv(
        session.verify(&mechanism, public, b"another message", &signature),
        CKR_SIGNATURE_INVALID,
    );

    // Wrong key type for the mechanism, both ways.
    let (_, mldsa) = mldsa_keypair(&session, Ps::P87, false, &[]);
    assert_rv(
        session.sign_init(&mechanism, mldsa),
        CKR_KEY_TYPE_INCONSISTENT,
    );
    assert_rv(
        session.sign_init(&pure_ml_dsa(), private),
        CKR_KEY_TYPE_INCONSISTENT,
    );
}

#[derive(serde::Deserialize)]
struct Kat {
    cases: Vec<KatCase>,
}

#[derive(serde::Deserialize)]
struct KatCase {
    msg: String,
    pk: String,
    sk: String,
    sm: String,
}

/// Round-3.1 known answers: the KAT private key signs the KAT message into exactly the KAT
/// signature, which verifies under the KAT public key — and not as ML-DSA-87, whose public key
/// has the same length.
#[test]
fn round_3_known_answers() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/dilithium5_kat.json");
    let kat: Kat =
        serde_json::from_str(&std::fs::read_to_string(path).expect("KAT file")).expect("KAT JSON");
    assert!(!kat.cases.is_empty());
    let f = fixture();
    let session = f.user_session(f.ready_slot(SLOT_KAT));
    let mechanism = vendor(CKM_B4AE_DILITHIUM5);
    for case in &kat.cases {
        let [msg, pk, sk, sm] =
            [&case.msg, &case.pk, &case.sk, &case.sm].map(|h| hex::decode(h).expect("hex"));
        let expected = &sm[..4595];
        assert_eq!(&sm[4595..], &msg[..], "sm = signature || message");
        let private = ok(session.create_object(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(key_type()),
            Attribute::Value(sk),
            Attribute::Sign(true),
        ]));
        assert_eq!(ok(session.sign(&mechanism, private, &msg)), expected);
        let public = ok(session.create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(key_type()),
            Attribute::Value(pk.clone()),
            Attribute::Verify(true),
        ]));
        ok(session.verify(&mechanism, public, &msg, expected));
        let as_mldsa = ok(session.create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::ML_DSA),
            Attribute::Value(pk),
            Attribute::Verify(true),
        ]));
        assert_rv(
            session.verify(&pure_ml_dsa(), as_mldsa, &msg, expected),
            CKR_SIGNATURE_LEN_RANGE,
        );
    }
    let short = session.create_object(&[
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(key_type()),
        Attribute::Value(vec![0; 2591]),
    ]);
    assert_rv(short, CKR_ATTRIBUTE_VALUE_INVALID);
}

//! The Rust API (`b4ae_pkcs11::hsm`, docs/rust-api.md) against the built module through its C
//! ABI: slot selection, labels as names (a second key pair or secret under one label is
//! refused), the difference between a bad signature (`Ok(false)`) and a missing key or a wrong
//! PIN (errors), secrets stored sensitive, the vendor algorithms, a session the library lost
//! being opened again, and `FailoverHsm` moving to the next backend only when one errs.

#[macro_use]
mod common;

use b4ae_pkcs11::hsm::{
    Algorithm, FailoverHsm, HsmBackend, HsmError, HsmResult, KeyType, Pkcs11HsmEnhanced,
};
use common::*;
use cryptoki::error::RvError;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const SLOT_BASICS: usize = 0;
const SLOT_SECRETS: usize = 1;
const SLOT_VENDOR: usize = 2;
const SLOT_LOST_SESSION: usize = 3;
const SLOT_FAILOVER: usize = 4;
const SLOT_WRONG_PIN: usize = 5;

fn hsm(index: usize) -> Pkcs11HsmEnhanced {
    let slot = fixture().ready_slot(index);
    Pkcs11HsmEnhanced::new(module_path(), slot.id(), Some(USER_PIN)).expect("the backend")
}

#[test]
fn slots_labels_and_the_difference_between_a_bad_signature_and_an_error() {
    let hsm = hsm(SLOT_BASICS);
    assert!(hsm.is_available());
    // The same slot by its token's label; a label and a number no slot has.
    let label = format!("tok-{SLOT_BASICS}");
    let by_label = Pkcs11HsmEnhanced::new(module_path(), label.as_str(), Some(USER_PIN));
    assert_eq!(by_label.expect("by label").slot(), hsm.slot());
    let none = Pkcs11HsmEnhanced::new(module_path(), "no-such-token", Some(USER_PIN));
    assert!(matches!(none, Err(HsmError::NoSuchSlot(_))));
    let none = Pkcs11HsmEnhanced::new(module_path(), 999u64, Some(USER_PIN));
    assert!(matches!(none, Err(HsmError::NoSuchSlot(_))));
    // A wrong PIN is the token's CKR_PIN_INCORRECT (on a token this process is not logged in
    // to: PKCS#11 keeps one login per token and application).
    let slot = fixture().ready_slot(SLOT_WRONG_PIN);
    let wrong = Pkcs11HsmEnhanced::new(module_path(), slot.id(), Some("wrong-pin-0"));
    assert_eq!(
        wrong.err().and_then(|e| e.rv()),
        Some(RvError::PinIncorrect)
    );

    let public_key = hsm.generate_keypair("basics").unwrap();
    assert_eq!(public_key.len(), 2592, "ML-DSA-87 by default");
    assert!(matches!(
        hsm.generate_keypair("basics"),
        Err(HsmError::KeyExists(_))
    ));
    let signature = hsm.sign("basics", MESSAGE).unwrap();
    assert_eq!(signature.len(), 4627);
    assert!(hsm.verify("basics", MESSAGE, &signature).unwrap());
    assert!(!hsm
        .verify("basics", b"another message", &signature)
        .unwrap());
    assert!(!hsm.verify("basics", MESSAGE, &signature[1..]).unwrap());
    assert!(matches!(
        hsm.sign("absent", MESSAGE),
        Err(HsmError::KeyNotFound(_))
    ));
    assert!(matches!(
        hsm.verify("absent", MESSAGE, &signature),
        Err(HsmError::KeyNotFound(_))
    ));
    // An independent FIPS 204 implementation agrees.
    assert!(Ps::P87.verify(&public_key, MESSAGE, b"", &signature));
}

#[test]
fn stored_secrets_are_sensitive_and_sized() {
    let hsm = hsm(SLOT_SECRETS);
    hsm.store_key("MIK", KeyType::GENERIC_SECRET, &[7; 48])
        .unwrap();
    hsm.store_key("STK", KeyType::AES, &[9; 32]).unwrap();
    assert!(matches!(
        hsm.store_key("MIK", KeyType::GENERIC_SECRET, &[7; 48]),
        Err(HsmError::KeyExists(_))
    ));
    assert!(matches!(
        hsm.store_key("AES-17", KeyType::AES, &[1; 17]),
        Err(HsmError::InvalidKey(_))
    ));
    // The backend's login is the process's: a session of the fixture's sees private objects.
    let session = ok(fixture().pkcs11.open_ro_session(hsm.slot()));
    for label in ["MIK", "STK"] {
        let found = ok(session.find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ]));
        assert_eq!(found.len(), 1, "{label}");
        assert_sensitive(&session, found[0], cryptoki_sys::CKA_VALUE);
        let attrs = ok(session.get_attributes(
            found[0],
            &[AttributeType::Extractable, AttributeType::Token],
        ));
        assert!(attrs.contains(&Attribute::Extractable(false)), "{label}");
        assert!(attrs.contains(&Attribute::Token(true)), "{label}");
    }
}

#[test]
fn dilithium5_and_the_hybrid_on_request() {
    for (algorithm, public_len) in [(Algorithm::Dilithium5, 2592), (Algorithm::Hybrid, 2624)] {
        let hsm = hsm(SLOT_VENDOR).with_algorithm(algorithm);
        let label = format!("{algorithm:?}");
        let public_key = hsm.generate_keypair(&label).unwrap();
        assert_eq!(public_key.len(), public_len, "{label}");
        let signature = hsm.sign(&label, MESSAGE).unwrap();
        assert!(hsm.verify(&label, MESSAGE, &signature).unwrap());
        assert!(!hsm.verify(&label, b"other", &signature).unwrap());
    }
}

/// Another part of the process closes every session of the slot: the backend opens its session
/// again, logs in again, and the call succeeds.
#[test]
fn a_session_the_library_lost_is_opened_again() {
    let hsm = hsm(SLOT_LOST_SESSION);
    hsm.generate_keypair("kept").unwrap();
    assert_ck!(cryptoki_sys::CKR_OK; C_CloseAllSessions(hsm.slot().id()));
    let signature = hsm.sign("kept", MESSAGE).unwrap();
    assert!(hsm.verify("kept", MESSAGE, &signature).unwrap());
}

/// A backend that always fails as a dead device would, counting the calls it got.
struct Dead(Arc<AtomicUsize>);

impl HsmBackend for Dead {
    fn generate_keypair(&self, key_id: &str) -> HsmResult<Vec<u8>> {
        self.fail(key_id)
    }
    fn sign(&self, key_id: &str, _: &[u8]) -> HsmResult<Vec<u8>> {
        self.fail(key_id)
    }
    fn verify(&self, key_id: &str, _: &[u8], _: &[u8]) -> HsmResult<bool> {
        self.fail(key_id)
    }
    fn store_key(&self, key_id: &str, _: KeyType, _: &[u8]) -> HsmResult<()> {
        self.fail(key_id)
    }
    fn is_available(&self) -> bool {
        true
    }
}

impl Dead {
    fn fail<T>(&self, key_id: &str) -> HsmResult<T> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(HsmError::KeyNotFound(format!(
            "{key_id} (the device is gone)"
        )))
    }
}

#[test]
fn failover_moves_on_when_a_backend_errs_and_not_when_it_answers() {
    let live = hsm(SLOT_FAILOVER);
    live.generate_keypair("ha").unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let failover = FailoverHsm::new(vec![
        Box::new(Dead(calls.clone())) as Box<dyn HsmBackend>,
        Box::new(live),
    ]);
    let signature = failover.sign("ha", MESSAGE).unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the dead one was asked first"
    );
    assert!(failover.verify("ha", MESSAGE, &signature).unwrap());
    // A bad signature is the live backend's answer, not a reason to go on.
    assert!(!failover.verify("ha", b"other", &signature).unwrap());
    // A key neither has: every backend failed, the last error is kept.
    match failover.sign("nowhere", MESSAGE) {
        Err(HsmError::AllFailed(last)) => assert!(matches!(*last, HsmError::KeyNotFound(_))),
        other => panic!("{:?}", other.map(|s| s.len())),
    }
    assert!(failover.is_available());
    assert!(matches!(
        FailoverHsm::new(Vec::new()).sign("ha", MESSAGE),
        Err(HsmError::Unavailable)
    ));
}

//! PKCS#11 rules every backend must keep, each test run with the same code on an embedded token
//! and on a token over SoftHSM2: one active operation of each kind per session whoever performs
//! it, `CKR_KEY_TYPE_INCONSISTENT` for a key the mechanism cannot use, a NULL mechanism and
//! `C_SessionCancel` ending operations, capped multi-part input, `CKA_TRUSTED` for the SO only,
//! private session objects gone at logout, `C_GetAttributeValue` answers, and encryption in
//! place (one buffer for input and output).

#[macro_use]
mod common;
mod forward_common;

use common::*;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki_sys::*;
use forward_common::aes_key;
use forward_common::both::{Backend, Both};
use std::sync::OnceLock;

const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2B, 0x65, 0x70];

/// One token pair per test: the embedded token and the SoftHSM-backed token of that index.
const PAIRS: usize = 9;
const ONE_OPERATION: usize = 0;
const KEY_TYPES: usize = 1;
const CANCEL: usize = 2;
const MULTIPART_CAP: usize = 3;
const TRUSTED: usize = 4;
const LOGOUT: usize = 5;
const ATTRIBUTES: usize = 6;
const SO_TRUSTED: usize = 7;
const IN_PLACE: usize = 8;

fn both() -> &'static Both {
    static BOTH: OnceLock<Both> = OnceLock::new();
    Both::get(&BOTH, "conf", PAIRS)
}

/// A logged-in R/W session on token `index` of `backend`.
fn session(backend: Backend, index: usize) -> Session {
    both().session(backend, index)
}

/// Runs `test` on both backends.
fn on_both(index: usize, test: impl Fn(&Session, Backend)) {
    both().on_both(index, test)
}

fn slot(backend: Backend, index: usize) -> Slot {
    both().slot(backend, index)
}

fn user_pin(backend: Backend) -> &'static str {
    backend.user_pin()
}

/// An Ed25519 session key pair (the classical signature both backends have): (public, private).
fn ed25519_pair(session: &Session) -> (CK_OBJECT_HANDLE, CK_OBJECT_HANDLE) {
    let public = [
        Attribute::EcParams(ED25519_OID.to_vec()),
        Attribute::Token(false),
        Attribute::Verify(true),
    ];
    let private = [
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sign(true),
    ];
    let (p, s) = ok(session.generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &public, &private));
    (p.handle(), s.handle())
}

/// An ML-DSA-65 session key pair: (public, private).
fn mldsa_pair(session: &Session) -> (CK_OBJECT_HANDLE, CK_OBJECT_HANDLE) {
    let (p, s) = mldsa_keypair(session, Ps::P65, false, &[]);
    (p.handle(), s.handle())
}

/// C_SignInit with a mechanism that takes no parameter.
fn sign_init(h: CK_SESSION_HANDLE, mechanism: CK_MECHANISM_TYPE, key: CK_OBJECT_HANDLE) -> CK_RV {
    let mut m = mech(mechanism);
    ck!(C_SignInit(h, &mut m, key))
}

fn verify_init(h: CK_SESSION_HANDLE, mechanism: CK_MECHANISM_TYPE, key: CK_OBJECT_HANDLE) -> CK_RV {
    let mut m = mech(mechanism);
    ck!(C_VerifyInit(h, &mut m, key))
}

/// C_Sign over MESSAGE: the signature, or the CK_RV.
fn sign(h: CK_SESSION_HANDLE) -> Result<Vec<u8>, CK_RV> {
    let mut out = vec![0u8; 8192];
    let mut len = out.len() as CK_ULONG;
    let data = MESSAGE.as_ptr().cast_mut();
    match ck!(C_Sign(
        h,
        data,
        MESSAGE.len() as CK_ULONG,
        out.as_mut_ptr(),
        &mut len
    )) {
        CKR_OK => {
            out.truncate(len as usize);
            Ok(out)
        }
        rv => Err(rv),
    }
}

fn verify(h: CK_SESSION_HANDLE, signature: &[u8]) -> CK_RV {
    let data = MESSAGE.as_ptr().cast_mut();
    let sig = signature.as_ptr().cast_mut();
    ck!(C_Verify(
        h,
        data,
        MESSAGE.len() as CK_ULONG,
        sig,
        signature.len() as CK_ULONG
    ))
}

/// AES-GCM parameters: a 96-bit IV, no AAD, a 128-bit tag.
fn gcm_params(iv: &mut [u8; 12]) -> CK_GCM_PARAMS {
    CK_GCM_PARAMS {
        pIv: iv.as_mut_ptr(),
        ulIvLen: 12,
        ulIvBits: 96,
        pAAD: null(),
        ulAADLen: 0,
        ulTagBits: 128,
    }
}

fn gcm_mechanism(params: &mut CK_GCM_PARAMS) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: CKM_AES_GCM,
        pParameter: (params as *mut CK_GCM_PARAMS).cast(),
        ulParameterLen: std::mem::size_of::<CK_GCM_PARAMS>() as CK_ULONG,
    }
}

// ---------------------------------------------------------------------------------------------
// One operation of each kind, whoever performs it

#[test]
fn one_signing_operation_per_session_whoever_performs_it() {
    on_both(ONE_OPERATION, |session, _| {
        let h = session.handle();
        let (ml_public, ml_private) = mldsa_pair(session);
        let (ed_public, ed_private) = ed25519_pair(session);
        let ml_len = Ps::P65.sig_len();

        // Post-quantum first, then the classical key: the second Init is refused.
        assert_rv(sign_init(h, CKM_ML_DSA, ml_private), CKR_OK);
        assert_rv(sign_init(h, CKM_EDDSA, ed_private), CKR_OPERATION_ACTIVE);
        assert_eq!(sign(h).map(|s| s.len()), Ok(ml_len), "signed with ML-DSA");
        assert_eq!(sign(h), Err(CKR_OPERATION_NOT_INITIALIZED));

        // Classical first, then the post-quantum key.
        assert_rv(sign_init(h, CKM_EDDSA, ed_private), CKR_OK);
        assert_rv(sign_init(h, CKM_ML_DSA, ml_private), CKR_OPERATION_ACTIVE);
        let ed_signature = sign(h).expect("Ed25519 signature");
        assert_eq!(ed_signature.len(), 64, "signed with Ed25519");
        assert_eq!(sign(h), Err(CKR_OPERATION_NOT_INITIALIZED));

        // The same for verification.
        assert_rv(sign_init(h, CKM_ML_DSA, ml_private), CKR_OK);
        let ml_signature = sign(h).expect("ML-DSA signature");
        assert_rv(verify_init(h, CKM_ML_DSA, ml_public), CKR_OK);
        assert_rv(verify_init(h, CKM_EDDSA, ed_public), CKR_OPERATION_ACTIVE);
        assert_rv(verify(h, &ml_signature), CKR_OK);
        assert_rv(verify(h, &ml_signature), CKR_OPERATION_NOT_INITIALIZED);
        assert_rv(verify_init(h, CKM_EDDSA, ed_public), CKR_OK);
        assert_rv(verify_init(h, CKM_ML_DSA, ml_public), CKR_OPERATION_ACTIVE);
        assert_rv(verify(h, &ed_signature), CKR_OK);
        assert_rv(verify(h, &ed_signature), CKR_OPERATION_NOT_INITIALIZED);

        // A length query keeps a forwarded operation going; an error ends it.
        assert_rv(sign_init(h, CKM_EDDSA, ed_private), CKR_OK);
        let mut len: CK_ULONG = 0;
        let data = MESSAGE.as_ptr().cast_mut();
        assert_rv(ck!(C_Sign(h, data, 4, null(), &mut len)), CKR_OK);
        assert_rv(ck!(C_Sign(h, data, 4, null(), null())), CKR_ARGUMENTS_BAD);
        assert_eq!(sign(h), Err(CKR_OPERATION_NOT_INITIALIZED));
    });
}

// ---------------------------------------------------------------------------------------------
// A key the mechanism cannot use

#[test]
fn a_key_of_another_kind_is_key_type_inconsistent() {
    on_both(KEY_TYPES, |session, _| {
        let h = session.handle();
        let (ml_public, ml_private) = mldsa_pair(session);
        let (ed_public, ed_private) = ed25519_pair(session);
        let aes = aes_key(session, "key-types", false).handle();
        assert_rv(sign_init(h, CKM_ML_DSA, aes), CKR_KEY_TYPE_INCONSISTENT);
        assert_rv(
            sign_init(h, CKM_ML_DSA, ed_private),
            CKR_KEY_TYPE_INCONSISTENT,
        );
        assert_rv(
            sign_init(h, CKM_EDDSA, ml_private),
            CKR_KEY_TYPE_INCONSISTENT,
        );
        assert_rv(
            verify_init(h, CKM_ML_DSA, ed_public),
            CKR_KEY_TYPE_INCONSISTENT,
        );
        assert_rv(
            verify_init(h, CKM_EDDSA, ml_public),
            CKR_KEY_TYPE_INCONSISTENT,
        );
        let mut iv = [0u8; 12];
        let mut gcm = gcm_params(&mut iv);
        let mut m = gcm_mechanism(&mut gcm);
        assert_rv(
            ck!(C_EncryptInit(h, &mut m, ml_private)),
            CKR_KEY_TYPE_INCONSISTENT,
        );
        // A handle that names nothing is still a bad handle.
        assert_rv(
            sign_init(h, CKM_ML_DSA, 0x7FFF_FFF0),
            CKR_KEY_HANDLE_INVALID,
        );
        // Nothing was left active by the refusals.
        assert_rv(sign_init(h, CKM_ML_DSA, ml_private), CKR_OK);
        assert!(sign(h).is_ok());
    });
}

// ---------------------------------------------------------------------------------------------
// Cancelling

#[test]
fn a_null_mechanism_and_session_cancel_end_operations() {
    on_both(CANCEL, |session, _| {
        let h = session.handle();
        let (ml_public, ml_private) = mldsa_pair(session);
        let (ed_public, ed_private) = ed25519_pair(session);
        for (mechanism, private) in [(CKM_ML_DSA, ml_private), (CKM_EDDSA, ed_private)] {
            assert_rv(sign_init(h, mechanism, private), CKR_OK);
            assert_rv(ck!(C_SignInit(h, null(), private)), CKR_OK);
            assert_eq!(sign(h), Err(CKR_OPERATION_NOT_INITIALIZED));
            // The operation is over wherever it ran: a new one starts and works.
            assert_rv(sign_init(h, mechanism, private), CKR_OK);
            assert!(sign(h).is_ok());
        }
        let mut sha = mech(CKM_SHA256);
        assert_rv(ck!(C_DigestInit(h, &mut sha)), CKR_OK);
        assert_rv(ck!(C_DigestInit(h, null())), CKR_OK);
        assert_rv(ck!(C_DigestInit(h, &mut sha)), CKR_OK);
        assert_rv(ck!(C_SessionCancel(h, CKF_DIGEST)), CKR_OK);
        // SoftHSM2 holds one operation per session, whatever its kind: the digest must be over
        // before a signature can start there.
        assert_rv(ck!(C_DigestInit(h, &mut sha)), CKR_OK);
        assert_rv(ck!(C_DigestInit(h, null())), CKR_OK);

        assert_rv(sign_init(h, CKM_EDDSA, ed_private), CKR_OK);
        assert_rv(verify_init(h, CKM_ML_DSA, ml_public), CKR_OK);
        assert_rv(
            ck!(C_SessionCancel(h, CKF_SIGN | CKF_VERIFY | CKF_DIGEST)),
            CKR_OK,
        );
        assert_eq!(sign(h), Err(CKR_OPERATION_NOT_INITIALIZED));
        assert_rv(verify(h, &[0u8; 64]), CKR_OPERATION_NOT_INITIALIZED);
        assert_rv(sign_init(h, CKM_EDDSA, ed_private), CKR_OK);
        let signature = sign(h).expect("signs after the cancel");
        assert_rv(verify_init(h, CKM_EDDSA, ed_public), CKR_OK);
        assert_rv(verify(h, &signature), CKR_OK);
        assert_rv(
            ck!(C_SessionCancel(0x7FFF_FFF0, CKF_SIGN)),
            CKR_SESSION_HANDLE_INVALID,
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Multi-part input is capped

/// The module's cap on collected multi-part input (src/mechanism: MAX_COLLECTED_LEN).
const MAX_COLLECTED_LEN: usize = 64 << 20;

#[test]
fn multi_part_input_is_capped() {
    on_both(MULTIPART_CAP, |session, backend| {
        let h = session.handle();
        let (_, ml_private) = mldsa_pair(session);
        let part = vec![0x5Au8; 1 << 20];
        // A part length of 2^32 - 1 is refused at once, whatever the operation.
        assert_rv(sign_init(h, CKM_ML_DSA, ml_private), CKR_OK);
        let huge = ck!(C_SignUpdate(
            h,
            part.as_ptr().cast_mut(),
            u32::MAX as CK_ULONG
        ));
        assert_rv_in(huge, &[CKR_DATA_LEN_RANGE, CKR_ARGUMENTS_BAD]);
        // Collected input stops at the cap; the operation then ends.
        assert_rv(sign_init(h, CKM_ML_DSA, ml_private), CKR_OK);
        for _ in 0..MAX_COLLECTED_LEN / part.len() {
            assert_rv(
                ck!(C_SignUpdate(
                    h,
                    part.as_ptr().cast_mut(),
                    part.len() as CK_ULONG
                )),
                CKR_OK,
            );
        }
        assert_rv(
            ck!(C_SignUpdate(h, part.as_ptr().cast_mut(), 1)),
            CKR_DATA_LEN_RANGE,
        );
        assert_rv(
            ck!(C_SignUpdate(h, part.as_ptr().cast_mut(), 1)),
            CKR_OPERATION_NOT_INITIALIZED,
        );
        if backend == Backend::Embedded {
            // AES-GCM decryption collects too (on the HSM slot it is SoftHSM2's own).
            let aes = aes_key(session, "cap", false).handle();
            let mut iv = [1u8; 12];
            let mut gcm = gcm_params(&mut iv);
            let mut m = gcm_mechanism(&mut gcm);
            assert_rv(ck!(C_DecryptInit(h, &mut m, aes)), CKR_OK);
            let mut out = [0u8; 16];
            let mut out_len = out.len() as CK_ULONG;
            let rv = ck!(C_DecryptUpdate(
                h,
                part.as_ptr().cast_mut(),
                u32::MAX as CK_ULONG,
                out.as_mut_ptr(),
                &mut out_len
            ));
            assert_rv_in(rv, &[CKR_ENCRYPTED_DATA_LEN_RANGE, CKR_ARGUMENTS_BAD]);
        }
    });
}

// ---------------------------------------------------------------------------------------------
// CKA_TRUSTED

fn trusted_aes_template(label: &str, trusted: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Token(false),
        Attribute::Wrap(true),
        Attribute::Trusted(trusted),
        Attribute::Label(label.into()),
    ]
}

#[test]
fn only_the_so_makes_an_object_trusted() {
    on_both(TRUSTED, |session, _| {
        let refused = session.generate_key(&Mechanism::AesKeyGen, &trusted_aes_template("t", true));
        assert_rv(refused, CKR_ATTRIBUTE_READ_ONLY);
        let key =
            ok(session.generate_key(&Mechanism::AesKeyGen, &trusted_aes_template("t", false)));
        let refused = session.update_attributes(key, &[Attribute::Trusted(true)]);
        assert_rv(refused, CKR_ATTRIBUTE_READ_ONLY);
        assert!(!attr_bool(session, key, CKA_TRUSTED));
        let value = [0x11u8; 32];
        let import = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Value(value.to_vec()),
            Attribute::Token(false),
            Attribute::Trusted(true),
        ];
        assert_rv(session.create_object(&import), CKR_ATTRIBUTE_READ_ONLY);
    });
}

#[test]
fn the_so_makes_a_public_object_trusted() {
    for backend in [Backend::Embedded, Backend::Hsm] {
        eprintln!("-- {backend:?}");
        let both = both();
        let slot = slot(backend, SO_TRUSTED);
        let so_pin = match backend {
            Backend::Embedded => {
                init_token(&both.pkcs11, slot, "so-trusted");
                SO_PIN
            }
            Backend::Hsm => forward_common::HSM_SO_PIN,
        };
        let session = ok(both.pkcs11.open_rw_session(slot));
        ok(session.login(UserType::So, Some(&pin(so_pin))));
        let value = [0x22u8; 32];
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Value(value.to_vec()),
            Attribute::Token(false),
            Attribute::Private(false),
            Attribute::Trusted(true),
        ];
        let key = ok(session.create_object(&template));
        assert!(attr_bool(&session, key, CKA_TRUSTED));
        ok(session.logout());
    }
}

// ---------------------------------------------------------------------------------------------
// Private session objects at logout

#[test]
fn private_session_objects_are_gone_after_logout() {
    for backend in [Backend::Embedded, Backend::Hsm] {
        eprintln!("-- {backend:?}");
        let session = session(backend, LOGOUT);
        let h = session.handle();
        let (_, private) = mldsa_pair(&session);
        let secret = aes_key(&session, "logout", false);
        let public_data =
            ok(session.create_object(&data_template("logout-public", b"v", false, false)));
        assert_rv(sign_init(h, CKM_ML_DSA, private), CKR_OK);
        assert!(sign(h).is_ok());
        ok(session.logout());
        ok(session.login(UserType::User, Some(&pin(user_pin(backend)))));
        // The old handles name nothing any more, even after a new login.
        assert_rv(sign_init(h, CKM_ML_DSA, private), CKR_KEY_HANDLE_INVALID);
        let attr = session.get_attributes(secret, &[cryptoki::object::AttributeType::Label]);
        assert_rv(attr, CKR_OBJECT_HANDLE_INVALID);
        // A public session object stays until its session closes.
        assert_eq!(find_by_label(&session, "logout-public"), vec![public_data]);
    }
}

// ---------------------------------------------------------------------------------------------
// C_GetAttributeValue writes each length in the caller's template

#[test]
fn get_attribute_value_answers_each_entry_in_place() {
    on_both(ATTRIBUTES, |session, _| {
        let h = session.handle();
        let (public, private) = mldsa_pair(session);
        let (_, ed_private) = ed25519_pair(session);
        for key in [private, ed_private] {
            let mut class = [0u8; 8];
            let mut short = [0u8; 1];
            let mut template = [
                raw_query(CKA_LABEL),
                raw_buffer(CKA_CLASS, &mut class),
                raw_query(CKA_VALUE),
                raw_query(UNKNOWN_ATTRIBUTE),
                raw_buffer(CKA_KEY_TYPE, &mut short),
            ];
            let rv = ck!(C_GetAttributeValue(h, key, template.as_mut_ptr(), 5));
            assert_rv_in(
                rv,
                &[
                    CKR_ATTRIBUTE_SENSITIVE,
                    CKR_ATTRIBUTE_TYPE_INVALID,
                    CKR_BUFFER_TOO_SMALL,
                ],
            );
            assert_ne!(
                template[0].ulValueLen, CK_UNAVAILABLE_INFORMATION,
                "label length"
            );
            assert_eq!(template[1].ulValueLen, 8);
            assert_eq!(CK_ULONG::from_ne_bytes(class), CKO_PRIVATE_KEY);
            for (i, what) in [
                (2, "sensitive value"),
                (3, "unknown type"),
                (4, "short buffer"),
            ] {
                assert_eq!(template[i].ulValueLen, CK_UNAVAILABLE_INFORMATION, "{what}");
            }
        }
        let mut value = vec![0u8; 4096];
        let mut template = [raw_buffer(CKA_VALUE, &mut value)];
        assert_rv(
            ck!(C_GetAttributeValue(h, public, template.as_mut_ptr(), 1)),
            CKR_OK,
        );
        assert_eq!(template[0].ulValueLen as usize, Ps::P65.pk_len());
    });
}

// ---------------------------------------------------------------------------------------------
// In place

/// AES-GCM with the input and output in one buffer, as C callers encrypt in place: the output
/// is the same as from separate buffers, and decrypting in place gives the plaintext back.
#[test]
fn encryption_in_place_gives_what_separate_buffers_give() {
    on_both(IN_PLACE, |session, _backend| {
        let h = session.handle();
        let aes = aes_key(session, "in-place", false).handle();
        let plaintext = [0x42u8; 32];
        let mut iv = [9u8; 12];
        let mut gcm = gcm_params(&mut iv);
        let mut m = gcm_mechanism(&mut gcm);
        // Separate buffers first.
        assert_rv(ck!(C_EncryptInit(h, &mut m, aes)), CKR_OK);
        let mut separate = [0u8; 48];
        let mut len = separate.len() as CK_ULONG;
        let rv = ck!(C_Encrypt(
            h,
            plaintext.as_ptr().cast_mut(),
            32,
            separate.as_mut_ptr(),
            &mut len
        ));
        assert_rv(rv, CKR_OK);
        assert_eq!(len, 48);
        // One buffer, plaintext at its start.
        let mut buf = [0u8; 48];
        buf[..32].copy_from_slice(&plaintext);
        assert_rv(ck!(C_EncryptInit(h, &mut m, aes)), CKR_OK);
        let mut len = buf.len() as CK_ULONG;
        assert_rv(
            ck!(C_Encrypt(
                h,
                buf.as_mut_ptr(),
                32,
                buf.as_mut_ptr(),
                &mut len
            )),
            CKR_OK,
        );
        assert_eq!(&buf[..len as usize], &separate[..]);
        assert_rv(ck!(C_DecryptInit(h, &mut m, aes)), CKR_OK);
        let mut len = buf.len() as CK_ULONG;
        assert_rv(
            ck!(C_Decrypt(
                h,
                buf.as_mut_ptr(),
                48,
                buf.as_mut_ptr(),
                &mut len
            )),
            CKR_OK,
        );
        assert_eq!(&buf[..len as usize], &plaintext[..]);
    });
}

//! The pkcs11 (forwarding) backend against SoftHSM2 2.6.1: the slot is the real token, standard
//! objects and mechanisms pass through unchanged, hostile arguments never reach SoftHSM,
//! post-quantum keys are sealed records SoftHSM cannot leak (custody 2), the module keeps no
//! state of its own, storage-key rotation (also an interrupted one, and one by another process
//! under an open session), native routing to a token that does ML-DSA itself (custody 1), and
//! faults: configuration faults, a device answering CKR_DEVICE_ERROR (tests/forward_common/faulty_hsm.c, a
//! SoftHSM shim), a token that disappears.
//!
//! Each test has its own SoftHSM token and slot (see `TOKENS`); tests that finalise the module
//! or need a second process re-run this binary for themselves ([`Forward::child`]). Fault tests
//! that break their HSM run in a child with a SoftHSM token directory of their own.

#[macro_use]
mod common;
mod forward_common;

use common::*;
use cryptoki::context::{CInitializeArgs, CInitializeFlags};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki_sys::*;
use forward_common::*;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::ptr::null_mut;
use std::time::Duration;

/// One SoftHSM token (and module slot, by index) per test; the native slot comes after them.
const TOKENS: [&str; 13] = [
    "fwd-info",
    "fwd-pass",
    "fwd-hard",
    "fwd-pq",
    "fwd-state",
    "fwd-rotate",
    "fwd-resume",
    "fwd-held",
    "fwd-threads",
    "fwd-dilithium5",
    "fwd-repair",
    "fwd-lookup",
    "fwd-ed25519",
];
const INFO: usize = 0;
const PASS: usize = 1;
const HARD: usize = 2;
const PQ: usize = 3;
const STATE: usize = 4;
const ROTATE: usize = 5;
const RESUME: usize = 6;
const HELD: usize = 7;
const THREADS: usize = 8;
const DILITHIUM5: usize = 9;
const REPAIR: usize = 10;
const LOOKUP: usize = 11;
const ED25519: usize = 12;
const NATIVE: usize = TOKENS.len();

/// What src/mechanism/mod.rs REGISTRY offers; a pkcs11 slot adds those its HSM lacks.
const REGISTRY: [CK_MECHANISM_TYPE; 35] = [
    CKM_SHA256,
    CKM_SHA384,
    CKM_SHA512,
    CKM_ML_DSA_KEY_PAIR_GEN,
    CKM_ML_DSA,
    0xB4AE_0001, // CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN
    0xB4AE_0002, // CKM_B4AE_DILITHIUM5
    0xB4AE_0003, // CKM_B4AE_HYBRID_KEY_PAIR_GEN
    0xB4AE_0004, // CKM_B4AE_HYBRID
    CKM_HASH_ML_DSA,
    CKM_HASH_ML_DSA_SHA224,
    CKM_HASH_ML_DSA_SHA256,
    CKM_HASH_ML_DSA_SHA384,
    CKM_HASH_ML_DSA_SHA512,
    CKM_HASH_ML_DSA_SHA3_224,
    CKM_HASH_ML_DSA_SHA3_256,
    CKM_HASH_ML_DSA_SHA3_384,
    CKM_HASH_ML_DSA_SHA3_512,
    CKM_HASH_ML_DSA_SHAKE128,
    CKM_HASH_ML_DSA_SHAKE256,
    CKM_ML_KEM_KEY_PAIR_GEN,
    CKM_ML_KEM,
    CKM_SLH_DSA_KEY_PAIR_GEN,
    CKM_SLH_DSA,
    CKM_HASH_SLH_DSA,
    CKM_HASH_SLH_DSA_SHA224,
    CKM_HASH_SLH_DSA_SHA256,
    CKM_HASH_SLH_DSA_SHA384,
    CKM_HASH_SLH_DSA_SHA512,
    CKM_HASH_SLH_DSA_SHA3_224,
    CKM_HASH_SLH_DSA_SHA3_256,
    CKM_HASH_SLH_DSA_SHA3_384,
    CKM_HASH_SLH_DSA_SHA3_512,
    CKM_HASH_SLH_DSA_SHAKE128,
    CKM_HASH_SLH_DSA_SHAKE256,
];

const HUGE: CK_ULONG = 1 << 32;
const AAD: &[u8] = b"header authenticated, not encrypted";

fn fwd() -> &'static Forward {
    forward_common::fixture(&TOKENS)
}

fn os_locking() -> CInitializeArgs {
    CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)
}

/// A raw CKM_AES_GCM mechanism pointing at `params`.
fn gcm_mechanism(params: &mut CK_GCM_PARAMS) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: CKM_AES_GCM,
        pParameter: (params as *mut CK_GCM_PARAMS).cast(),
        ulParameterLen: size_of::<CK_GCM_PARAMS>() as CK_ULONG,
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The slot is the real token

#[test]
fn the_slot_shows_the_real_token_and_its_mechanisms_plus_ours() {
    let f = fwd();
    let slot = f.slots[INFO];
    let real_slot = f.hsm_slot(TOKENS[INFO]);
    // The fixture initialised SoftHSM before the module: the module took that as success.
    let ours = token_info(slot);
    let real = f.hsm_raw.token_info(real_slot);
    assert_eq!(ours.label.to_vec(), padded(TOKENS[INFO], 32));
    assert_eq!(ours.label, real.label);
    assert_eq!(ours.serialNumber, real.serialNumber);
    assert_padded_text("serialNumber", &ours.serialNumber);
    let mut slot_info = CK_SLOT_INFO::default();
    assert_ck!(CKR_OK; C_GetSlotInfo(slot.into(), &mut slot_info));
    assert_eq!(
        slot_info.slotDescription.to_vec(),
        padded("HSM fwd-info", 64)
    );

    let real_list = f.hsm_raw.mechanisms(real_slot);
    let extra: Vec<_> = REGISTRY
        .into_iter()
        .filter(|m| !real_list.contains(m))
        .collect();
    assert!(extra.contains(&CKM_ML_DSA_KEY_PAIR_GEN) && extra.contains(&CKM_ML_DSA));
    let mut expected = real_list.clone();
    expected.extend(&extra);
    expected.sort_unstable();
    let mut list = mechanism_list(slot);
    list.sort_unstable();
    assert_eq!(list, expected, "SoftHSM's mechanisms plus {extra:x?}");

    let ml_dsa = mechanism_info(slot, CKM_ML_DSA).expect("CKM_ML_DSA info");
    assert_eq!(
        ml_dsa.flags & (CKF_SIGN | CKF_VERIFY),
        CKF_SIGN | CKF_VERIFY
    );
    let gcm = mechanism_info(slot, CKM_AES_GCM).expect("CKM_AES_GCM info");
    let direct = f.hsm_raw.mechanism_info(real_slot, CKM_AES_GCM);
    let fields = |i: CK_MECHANISM_INFO| (i.ulMinKeySize, i.ulMaxKeySize, i.flags);
    assert_eq!(
        fields(gcm),
        fields(direct),
        "CKM_AES_GCM as SoftHSM describes it"
    );
}

/// SPEC §4: the application initialised SoftHSM itself; the module's C_Finalize must leave it
/// initialised, with the application's sessions intact.
#[test]
fn finalizing_the_module_leaves_the_applications_softhsm_initialized() {
    let name = test_name!();
    if !is_child(name) {
        fwd().child(name);
        return;
    }
    let f = fwd();
    let real_slot = f.hsm_slot(TOKENS[INFO]);
    let direct = ok(f.hsm.open_ro_session(real_slot));
    {
        let session = ok(f.module.open_ro_session(f.slots[INFO]));
        ok(session.get_session_info());
    }
    ok(f.module.clone().finalize());
    let mut info = CK_INFO::default();
    assert_ck!(CKR_CRYPTOKI_NOT_INITIALIZED; C_GetInfo(&mut info));

    ok(direct.get_session_info());
    let mut random = [0u8; 32];
    ok(direct.generate_random_slice(&mut random));
    assert_ne!(random, [0u8; 32]);
    ok(f.hsm.get_token_info(real_slot));
    ok(f.hsm.open_rw_session(real_slot));
    let again = f.hsm.initialize(os_locking());
    assert_rv(again, CKR_CRYPTOKI_ALREADY_INITIALIZED);
}

// ---------------------------------------------------------------------------------------------
// 2. Pass-through

#[test]
fn standard_objects_and_mechanisms_pass_through_unchanged() {
    let f = fwd();
    let session = ok(f.module.open_rw_session(f.slots[PASS]));
    let wrong = session.login(UserType::User, Some(&pin("0000")));
    assert_rv(wrong, CKR_PIN_INCORRECT);
    ok(session.login(UserType::User, Some(&pin(HSM_PIN))));
    let info = session_info(session.handle()).expect("C_GetSessionInfo");
    assert_eq!(
        info.slotID, PASS as CK_SLOT_ID,
        "our slot id, not SoftHSM's"
    );
    assert_ne!(info.slotID, f.hsm_slot(TOKENS[PASS]).id());
    assert_eq!(info.state, CKS_RW_USER_FUNCTIONS);
    let direct = f.hsm_session(TOKENS[PASS]);

    // ECDSA: made and signed through the module, verified by SoftHSM directly (same handles).
    let (ec_public, ec_private) = ec_keypair(&session, "pass-ec");
    let template = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Label(b"pass-ec".to_vec()),
    ];
    assert_eq!(ok(direct.find_objects(&template)), [ec_private]);
    let digest = Sha256::digest(MESSAGE);
    let signature = ok(session.sign(&Mechanism::Ecdsa, ec_private, &digest));
    assert_eq!(signature.len(), 64);
    ok(direct.verify(&Mechanism::Ecdsa, ec_public, &digest, &signature));
    let mut forged = signature.clone();
    forged[40] ^= 1;
    let refused = direct.verify(&Mechanism::Ecdsa, ec_public, &digest, &forged);
    assert_rv(refused, CKR_SIGNATURE_INVALID);

    // AES-256-GCM: encrypted through the module, decrypted by SoftHSM directly.
    let aes = aes_key(&session, "pass-aes", true);
    let plaintext: Vec<u8> = (0..1024u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut iv = *b"twelve bytes";
    let params = GcmParams::new(&mut iv, AAD, 128.into()).expect("GCM parameters");
    let ciphertext = ok(session.encrypt(&Mechanism::AesGcm(params), aes, &plaintext));
    assert_eq!(ciphertext.len(), plaintext.len() + 16);
    assert_ne!(&ciphertext[..1024], &plaintext[..]);
    let mut iv = *b"twelve bytes";
    let params = GcmParams::new(&mut iv, AAD, 128.into()).expect("GCM parameters");
    assert_eq!(
        ok(direct.decrypt(&Mechanism::AesGcm(params), aes, &ciphertext)),
        plaintext
    );
    let mut iv = *b"twelve bytes";
    let params = GcmParams::new(&mut iv, b"other AAD", 128.into()).expect("GCM parameters");
    assert!(direct
        .decrypt(&Mechanism::AesGcm(params), aes, &ciphertext)
        .is_err());

    // A vendor attribute: the module answers exactly what SoftHSM answers.
    let kind = AttributeType::VendorDefined(CKA_VENDOR_DEFINED | 0x1234);
    let vendor = Attribute::VendorDefined((kind, b"vendor value".to_vec()));
    let mut through = data_template("vendor-module", b"v", true, false);
    through.push(vendor.clone());
    let mut directly = data_template("vendor-direct", b"v", true, false);
    directly.push(vendor);
    let (through, directly) = (
        session.create_object(&through),
        direct.create_object(&directly),
    );
    let answer = rv_name(directly.to_rv());
    eprintln!("SoftHSM answers a data object with a vendor attribute with {answer}");
    assert_eq!(rv_name(through.to_rv()), answer, "module vs SoftHSM");
    if let (Ok(ours), Ok(theirs)) = (through, directly) {
        let kind = CKA_VENDOR_DEFINED | 0x1234;
        assert_eq!(attr_bytes(&session, ours, kind), b"vendor value");
        assert_eq!(f.hsm_raw.attr(&direct, theirs, kind), b"vendor value");
        assert_eq!(f.hsm_raw.attr(&direct, ours, kind), b"vendor value");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Hardening: what would crash or hang SoftHSM 2.6.1 never reaches it

#[test]
fn hostile_arguments_are_stopped_before_softhsm() {
    let f = fwd();
    let session = f.module_session(HARD);
    let direct = f.hsm_session(TOKENS[HARD]);
    let s = session.handle();
    let aes_object = aes_key(&session, "hard-aes", true);
    let aes = aes_object.handle();
    let plaintext = [0x42u8; 64];
    let mut out = [0u8; 128];

    // CKM_ECDSA with an Ed25519 key (SoftHSM2 2.6 segfaults in C_VerifyInit; found by the
    // fuzzer) and CKM_EDDSA with an EC key: refused before SoftHSM2 sees them.
    let ed_public = [
        Attribute::Token(false),
        Attribute::Verify(true),
        Attribute::EcParams(vec![0x06, 0x03, 0x2B, 0x65, 0x70]),
    ];
    let ed_private = [Attribute::Token(false), Attribute::Sign(true)];
    let (ed_pk, ed_sk) =
        ok(session.generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &ed_public, &ed_private));
    let (ec_pk, ec_sk) = ec_keypair(&session, "hard-ec");
    for (mechanism, key) in [
        (CKM_ECDSA, ed_pk),
        (CKM_ECDSA_SHA256, ed_pk),
        (CKM_EDDSA, ec_pk),
    ] {
        let mut m = CK_MECHANISM {
            mechanism,
            pParameter: null_mut(),
            ulParameterLen: 0,
        };
        assert_rv(
            ck!(C_VerifyInit(s, &mut m, key.handle())),
            CKR_KEY_TYPE_INCONSISTENT,
        );
    }
    for (mechanism, key) in [(CKM_ECDSA, ed_sk), (CKM_EDDSA, ec_sk)] {
        let mut m = CK_MECHANISM {
            mechanism,
            pParameter: null_mut(),
            ulParameterLen: 0,
        };
        assert_rv(
            ck!(C_SignInit(s, &mut m, key.handle())),
            CKR_KEY_TYPE_INCONSISTENT,
        );
    }
    // The right pairs still work.
    let digest = Sha256::digest(MESSAGE);
    let signature = ok(session.sign(&Mechanism::Ecdsa, ec_sk, &digest));
    ok(session.verify(&Mechanism::Ecdsa, ec_pk, &digest, &signature));
    let signature = ok(session.sign(
        &Mechanism::Eddsa(cryptoki::mechanism::eddsa::EddsaParams::new(
            cryptoki::mechanism::eddsa::EddsaSignatureScheme::Pure,
        )),
        ed_sk,
        MESSAGE,
    ));
    assert_eq!(signature.len(), 64);

    // NULL IV of length 0: any CKR_* but a crash; the session keeps working afterwards.
    let mut params = CK_GCM_PARAMS {
        pIv: null(),
        ulIvLen: 0,
        ulIvBits: 0,
        pAAD: AAD.as_ptr().cast_mut(),
        ulAADLen: AAD.len() as CK_ULONG,
        ulTagBits: 128,
    };
    let rv = ck!(C_EncryptInit(s, &mut gcm_mechanism(&mut params), aes));
    eprintln!("AES-GCM with a NULL IV: {}", rv_name(rv));
    if rv == CKR_OK {
        let mut len = out.len() as CK_ULONG;
        let rv = ck!(C_Encrypt(
            s,
            plaintext.as_ptr().cast_mut(),
            64,
            out.as_mut_ptr(),
            &mut len
        ));
        eprintln!("C_Encrypt after it: {}", rv_name(rv));
    }

    // NULL AAD of length 0 is a valid empty AAD: the result decrypts with an empty AAD.
    let mut iv = *b"twelve bytes";
    params.pIv = iv.as_mut_ptr();
    params.ulIvLen = 12;
    params.ulIvBits = 96;
    params.pAAD = null();
    params.ulAADLen = 0;
    assert_ck!(CKR_OK; C_EncryptInit(s, &mut gcm_mechanism(&mut params), aes));
    let mut len = out.len() as CK_ULONG;
    assert_ck!(CKR_OK; C_Encrypt(s, plaintext.as_ptr().cast_mut(), 64, out.as_mut_ptr(), &mut len));
    assert_eq!(len, 80);
    let empty = [0u8; 1];
    let params = GcmParams::new(&mut iv, &empty[..0], 128.into()).expect("GCM parameters");
    let decrypted = ok(direct.decrypt(&Mechanism::AesGcm(params), aes_object, &out[..80]));
    assert_eq!(decrypted, plaintext);

    // Template counts and data lengths of 2^32 (SoftHSM hangs or truncates on them).
    let class: CK_OBJECT_CLASS = CKO_DATA;
    let mut template = [raw_attr(CKA_CLASS, &class)];
    let mut object = CK_INVALID_HANDLE;
    assert_ck!(CKR_ARGUMENTS_BAD;
        C_CreateObject(s, template.as_mut_ptr(), HUGE, &mut object),
        C_FindObjectsInit(s, template.as_mut_ptr(), HUGE),
    );
    let mut iv = *b"twelve bytes";
    let mut params = CK_GCM_PARAMS {
        pIv: iv.as_mut_ptr(),
        ulIvLen: 12,
        ulIvBits: 96,
        pAAD: AAD.as_ptr().cast_mut(),
        ulAADLen: AAD.len() as CK_ULONG,
        ulTagBits: 128,
    };
    assert_ck!(CKR_OK; C_EncryptInit(s, &mut gcm_mechanism(&mut params), aes));
    let mut len = out.len() as CK_ULONG;
    assert_ck!(CKR_ARGUMENTS_BAD;
        C_Encrypt(s, plaintext.as_ptr().cast_mut(), HUGE, out.as_mut_ptr(), &mut len));
    // "A call to C_Encrypt always terminates the active encryption operation unless it returns
    // CKR_BUFFER_TOO_SMALL or is a successful call to determine the length" (PKCS#11 3.2):
    // the refused call ended the operation in SoftHSM too, so a new one may start.
    let rv = ck!(C_EncryptInit(s, &mut gcm_mechanism(&mut params), aes));
    assert_eq!(
        rv_name(rv),
        rv_name(CKR_OK),
        "C_EncryptInit after a refused C_Encrypt"
    );
    let mut len = out.len() as CK_ULONG;
    assert_ck!(CKR_OK; C_Encrypt(s, plaintext.as_ptr().cast_mut(), 64, out.as_mut_ptr(), &mut len));
    assert_eq!(
        find_by_label(&session, "hard-aes").len(),
        1,
        "the session still works"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Post-quantum keys on the classical HSM: sealed records (custody 2)

#[test]
fn post_quantum_keys_are_sealed_records_softhsm_cannot_leak() {
    let f = fwd();
    let session = f.module_session(PQ);
    let data = ok(session.create_object(&data_template("pq-data", b"plain", true, false)));
    let mut handles = vec![data];
    let mut secrets = Vec::new();
    let mut privates = Vec::new();
    let mut public_keys = Vec::new();
    for ps in Ps::ALL {
        let label = format!("pq-{ps:?}");
        let (public, private) = pq_keypair(&session, ps, &label, true);
        assert_eq!(attr_ulong(&session, private, CKA_B4AE_CUSTODY), 2, "{ps:?}");
        let pk = sign_and_check(&session, ps, public, private);
        let sk = attr_bytes(&session, private, CKA_VALUE);
        let seed = attr_bytes(&session, private, CKA_SEED);
        assert_eq!((sk.len(), seed.len()), (ps.sk_len(), 32));
        assert_eq!(
            ps.keygen(&seed),
            (pk.clone(), sk.clone()),
            "{ps:?} seed and key"
        );
        assert_eq!(find_pq_pair(&session, &label), (public, private));
        handles.extend([public, private]);
        privates.push(private);
        // ρ, the first 32 bytes of the expanded key, is also the public key's first 32 bytes.
        secrets.extend([sk[32..].to_vec(), seed]);
        public_keys.push(pk);
    }
    let (ec_public, ec_private) = ec_keypair(&session, "pq-ec");
    handles.extend([ec_public, ec_private, aes_key(&session, "pq-aes", true)]);
    let distinct: HashSet<CK_OBJECT_HANDLE> = handles.iter().map(ObjectHandle::handle).collect();
    assert_eq!(
        distinct.len(),
        handles.len(),
        "module handles collide: {handles:?}"
    );

    // Through the module the records are keys, never data objects.
    let data_class = [Attribute::Class(ObjectClass::DATA)];
    assert_eq!(ok(session.find_objects(&data_class)), [data]);
    let ml_dsa = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::ML_DSA),
    ];
    let mut found = ok(session.find_objects(&ml_dsa));
    found.sort_by_key(ObjectHandle::handle);
    privates.sort_by_key(ObjectHandle::handle);
    assert_eq!(found, privates);

    // SoftHSM directly: the storage keys never leave it.
    let direct = f.hsm_session(TOKENS[PQ]);
    let keys = f.storage_keys(&direct);
    let labels: Vec<&str> = keys.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels, ["B4AE-v2-STK-1"]);
    for (label, key) in &keys {
        let flag = |kind| f.hsm_raw.attr_bool(&direct, *key, kind);
        assert!(flag(CKA_SENSITIVE), "{label} CKA_SENSITIVE");
        assert!(!flag(CKA_EXTRACTABLE), "{label} CKA_EXTRACTABLE");
        assert!(flag(CKA_NEVER_EXTRACTABLE), "{label} CKA_NEVER_EXTRACTABLE");
        let value = f.hsm_raw.get_attr(&direct, *key, CKA_VALUE);
        assert_eq!(
            value.map_err(rv_name),
            Err(rv_name(CKR_ATTRIBUTE_SENSITIVE)),
            "{label}"
        );
    }

    // The records: private ones are CKA_PRIVATE, and no secret is in any of them in the clear.
    let records = f.records(&direct);
    assert_eq!(records.len(), 6, "a public and a private record per key");
    let private_records: Vec<&Record> = records.iter().filter(|r| r.kind() == 1).collect();
    assert_eq!(private_records.len(), 3);
    for record in &private_records {
        assert!(
            record.private,
            "record {:?} is not CKA_PRIVATE",
            record.handle
        );
        assert_eq!(record.epoch(), 1);
    }
    let windows: HashSet<&[u8]> = records.iter().flat_map(|r| r.value.windows(32)).collect();
    for pk in &public_keys {
        assert!(
            windows.contains(&pk[..32]),
            "control: public keys are stored in the clear"
        );
    }
    for secret in &secrets {
        let leaked = secret.windows(32).position(|w| windows.contains(w));
        assert_eq!(
            leaked,
            None,
            "a record holds {} secret bytes in the clear",
            secret.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 5. No state of its own

#[test]
fn the_module_keeps_no_state_of_its_own() {
    let name = test_name!();
    if is_child(name) {
        let f = fwd();
        {
            let session = f.module_session(STATE);
            let (public, private) = find_pq_pair(&session, "parent-key");
            sign_and_check(&session, Ps::P65, public, private);
            pq_keypair(&session, Ps::P44, "child-key", false);
        }
        ok(f.module.clone().finalize());
        initialize(&f.module);
        let session = f.module_session(STATE);
        let (public, private) = find_pq_pair(&session, "parent-key");
        sign_and_check(&session, Ps::P65, public, private);
        return;
    }
    let f = fwd();
    let session = f.module_session(STATE);
    let (public, private) = pq_keypair(&session, Ps::P65, "parent-key", false);
    sign_and_check(&session, Ps::P65, public, private);
    f.child(name);
    // The child's key, seen by this process without re-initialising.
    assert_eq!(find_by_label(&session, "child-key").len(), 2);
    let (public, private) = find_pq_pair(&session, "child-key");
    assert_eq!(attr_ulong(&session, private, CKA_B4AE_CUSTODY), 2);
    sign_and_check(&session, Ps::P44, public, private);
}

/// A sealed public key is presented once the HSM has authenticated its record, which takes the
/// storage key, hence a login: before it, a record anyone could have written (a session
/// without PIN can create public data objects) is not shown (docs/security.md).
#[test]
fn a_new_process_finds_sealed_public_keys_by_class_and_id_once_logged_in() {
    let name = test_name!();
    let by_id = |session: &Session, class: Option<ObjectClass>| {
        let mut template = vec![Attribute::Id(b"repair-id".to_vec())];
        template.extend(class.map(Attribute::Class));
        ok(session.find_objects(&template))
    };
    if is_child(name) {
        // The first search names neither key type nor label.
        let f = fwd();
        let session = ok(f.module.open_ro_session(f.slots[LOOKUP]));
        assert_eq!(
            by_id(&session, Some(ObjectClass::PUBLIC_KEY)),
            [],
            "unauthenticated records before the login"
        );
        ok(session.login(UserType::User, Some(&pin(HSM_PIN))));
        let public = by_id(&session, Some(ObjectClass::PUBLIC_KEY));
        assert_eq!(public.len(), 1, "the sealed public key, by class and id");
        assert_eq!(attr_ulong(&session, public[0], CKA_KEY_TYPE), CKK_ML_DSA);
        assert_eq!(by_id(&session, None).len(), 2, "both halves once logged in");
        // Authenticated in this process: still listed after the logout.
        ok(session.logout());
        assert_eq!(by_id(&session, None), public, "private keys need a login");
        return;
    }
    let f = fwd();
    let session = f.module_session(LOOKUP);
    let (mut public, mut private) = pq_templates(Ps::P44, "lookup-key", false);
    public.push(Attribute::Id(b"repair-id".to_vec()));
    private.push(Attribute::Id(b"repair-id".to_vec()));
    ok(session.generate_key_pair(&Mechanism::MlDsaKeyPairGen, &public, &private));
    // SoftHSM2 keeps a data object's CKA_VALUE read-only, so a sealed key's attributes cannot
    // be rewritten in place: the HSM's answer is passed on.
    let (public, _) = find_pq_pair(&session, "lookup-key");
    let relabel = session.update_attributes(public, &[Attribute::Label(b"other".to_vec())]);
    assert_rv(relabel, CKR_ATTRIBUTE_READ_ONLY);
    drop(session);
    f.child(name);
}

/// What a Java KeyStore user could do with `keytool -delete`: through the module the storage
/// key is not listed, and its handle (taken from SoftHSM directly) names nothing.
#[test]
fn applications_never_see_or_delete_the_storage_keys() {
    let f = fwd();
    let session = f.module_session(REPAIR);
    let (public, private) = pq_keypair(&session, Ps::P65, "stk-loss", false);
    sign_and_check(&session, Ps::P65, public, private);
    let secret_keys = ok(session.find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)]));
    assert_eq!(secret_keys, [], "no storage key is listed");
    assert_eq!(find_by_label(&session, "B4AE-v2-STK-1"), []);
    let stk = {
        let direct = f.hsm_session(TOKENS[REPAIR]);
        let keys = f.storage_keys(&direct);
        assert_eq!(keys.len(), 1, "{keys:?}");
        keys[0].1
    };
    assert_rv(session.destroy_object(stk), CKR_OBJECT_HANDLE_INVALID);
    ok(session.logout());
    ok(session.login(UserType::User, Some(&pin(HSM_PIN))));
    let (public, private) = find_pq_pair(&session, "stk-loss");
    sign_and_check(&session, Ps::P65, public, private);
}

// ---------------------------------------------------------------------------------------------
// 6. Storage-key rotation

#[test]
fn rotate_stk_reseals_every_record_under_a_new_storage_key() {
    let f = fwd();
    let (pk, sk) = {
        let session = f.module_session(ROTATE);
        let (public, private) = pq_keypair(&session, Ps::P87, "rotate-key", true);
        let pk = sign_and_check(&session, Ps::P87, public, private);
        (pk, attr_bytes(&session, private, CKA_VALUE))
    }; // the slot's last session closed: nothing of this process holds on to the old records
    {
        let direct = f.hsm_session(TOKENS[ROTATE]);
        assert_eq!(f.stk_labels(&direct), ["B4AE-v2-STK-1"]);
    }
    let slot = ROTATE.to_string();
    let output = admin_with_user_pin(&["rotate-stk", "--slot", &slot], &f.conf, HSM_PIN);
    assert_success("b4ae-pkcs11 rotate-stk", &output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("epoch 2"), "{stdout}");

    let session = f.module_session(ROTATE);
    let direct = f.hsm_session(TOKENS[ROTATE]);
    assert_eq!(f.stk_labels(&direct), ["B4AE-v2-STK-2"]);
    let records = f.records(&direct);
    let epochs: Vec<(u8, u32)> = records.iter().map(|r| (r.kind(), r.epoch())).collect();
    assert!(
        epochs.contains(&(1, 2)) && epochs.len() == 2,
        "records: {epochs:?}"
    );
    let (public, private) = find_pq_pair(&session, "rotate-key");
    assert_eq!(sign_and_check(&session, Ps::P87, public, private), pk);
    assert_eq!(attr_bytes(&session, private, CKA_VALUE), sk);
}

/// A crash right after step 1 (the new STK generated, nothing re-sealed): the next user login
/// through the module finishes the rotation.
#[test]
fn a_rotation_interrupted_after_generating_the_new_key_is_finished_at_login() {
    let f = fwd();
    let pk = {
        let session = f.module_session(RESUME);
        let (public, private) = pq_keypair(&session, Ps::P44, "resume-key", false);
        sign_and_check(&session, Ps::P44, public, private)
    };
    {
        let direct = f.hsm_session(TOKENS[RESUME]);
        f.generate_stk(&direct, 2);
        assert_eq!(f.stk_labels(&direct), ["B4AE-v2-STK-1", "B4AE-v2-STK-2"]);
        let epochs: Vec<u32> = f.records(&direct).iter().map(Record::epoch).collect();
        assert!(
            epochs.contains(&1),
            "still sealed under epoch 1: {epochs:?}"
        );
    } // logged out: the module's login below is the first

    let login = move || fwd().module_session(RESUME);
    let session = within(Duration::from_secs(60), "C_Login", login);
    let direct = f.hsm_session(TOKENS[RESUME]);
    assert_eq!(f.stk_labels(&direct), ["B4AE-v2-STK-2"]);
    let records = f.records(&direct);
    let epochs: Vec<u32> = records.iter().map(Record::epoch).collect();
    assert_eq!(epochs, [2, 2], "both records under the new key");
    let (public, private) = find_pq_pair(&session, "resume-key");
    assert_eq!(sign_and_check(&session, Ps::P44, public, private), pk);
}

/// How long the module trusts a record the HSM confirmed without asking again (docs/hsm.md:
/// "keys another process deleted or rotated drop out within a second").
const CONFIRMATION_WINDOW: Duration = Duration::from_secs(1);

/// Issue D: another process rotates the storage key while this one holds a session with the
/// key's old handles (the old private record is destroyed there). A search by class, key type
/// and label always finds exactly one key that signs; once the confirmation window has passed,
/// it is the live re-sealed record, never the destroyed one.
#[test]
fn a_rotation_by_another_process_leaves_an_open_session_one_live_key() {
    let f = fwd();
    let session = f.module_session(HELD);
    let (public, old_private) = pq_keypair(&session, Ps::P44, "held-key", false);
    let pk = sign_and_check(&session, Ps::P44, public, old_private);

    let slot = HELD.to_string();
    let output = admin_with_user_pin(&["rotate-stk", "--slot", &slot], &f.conf, HSM_PIN);
    assert_success("b4ae-pkcs11 rotate-stk", &output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("epoch 2"), "{stdout}");

    // The same session, never closed: the module's index still lists the old record.
    let template = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::ML_DSA),
        Attribute::Label(b"held-key".to_vec()),
    ];
    // Within the window the old record may still be trusted; whichever handle is found signs
    // (the old one from the key this process still holds decrypted).
    let soon = ok(session.find_objects(&template));
    assert_eq!(
        soon.len(),
        1,
        "one private key right after the rotation: {soon:?}"
    );
    let stale = soon[0] == old_private;
    eprintln!(
        "right after the rotation the search finds the {} record",
        if stale { "destroyed" } else { "live" }
    );
    assert_eq!(sign_and_check(&session, Ps::P44, public, soon[0]), pk);

    std::thread::sleep(CONFIRMATION_WINDOW + Duration::from_millis(200));
    let found = ok(session.find_objects(&template));
    assert_eq!(found.len(), 1, "one private key: {found:?}");
    let private = found[0];
    assert_ne!(private, old_private, "the destroyed record's handle");
    {
        let direct = f.hsm_session(TOKENS[HELD]);
        assert_eq!(f.stk_labels(&direct), ["B4AE-v2-STK-2"]);
        let live: Vec<(ObjectHandle, u32)> = f
            .records(&direct)
            .iter()
            .filter(|r| r.kind() == 1)
            .map(|r| (r.handle, r.epoch()))
            .collect();
        assert_eq!(live, [(private, 2)], "SoftHSM's private records");
    }
    // The public record was sealed again too (under the new storage key): a new handle.
    let (public, found_private) = find_pq_pair(&session, "held-key");
    assert_eq!(found_private, private);
    assert_eq!(sign_and_check(&session, Ps::P44, public, private), pk);
    // The old handle names nothing any more.
    let stale = session.sign(&pure_ml_dsa(), old_private, MESSAGE);
    eprintln!(
        "signing with the destroyed record's handle: {}",
        rv_name(stale.to_rv())
    );
    assert_rv_in(stale, &[CKR_KEY_HANDLE_INVALID, CKR_OBJECT_HANDLE_INVALID]);
}

/// B4AE's own PKCS#11 client asks for Edwards key pairs without `CKA_EC_PARAMS` (SPEC §7): the
/// module supplies Ed25519's before SoftHSM2, which would answer `CKR_TEMPLATE_INCOMPLETE`, sees
/// the template; the key pair is the HSM's and signs there.
#[test]
fn an_edwards_key_pair_without_ec_params_is_an_ed25519_pair_of_the_hsm() {
    use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
    let session = fwd().module_session(ED25519);
    let (public, private) = ok(session.generate_key_pair(
        &Mechanism::EccEdwardsKeyPairGen,
        &[Attribute::Token(false), Attribute::Verify(true)],
        &[Attribute::Token(false), Attribute::Sign(true)],
    ));
    assert_eq!(
        attr_bytes(&session, public, CKA_EC_PARAMS),
        [0x06, 0x03, 0x2B, 0x65, 0x70]
    );
    let m = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
    let signature = ok(session.sign(&m, private, MESSAGE));
    assert_eq!(signature.len(), 64);
    ok(session.verify(&m, public, MESSAGE, &signature));
    let point = attr_bytes(&session, public, CKA_EC_POINT);
    let theirs = ed25519_dalek::VerifyingKey::from_bytes(point[2..].try_into().unwrap()).unwrap();
    let sig = ed25519_dalek::Signature::from_slice(&signature).unwrap();
    assert!(theirs.verify_strict(MESSAGE, &sig).is_ok());
}

// ---------------------------------------------------------------------------------------------
// 7. Native routing (custody 1)

#[test]
fn a_token_with_native_ml_dsa_keeps_the_key_itself() {
    let f = fwd();
    let session = f.module_session(NATIVE);
    let (public, private) = pq_keypair(&session, Ps::P65, "native-key", false);
    assert_eq!(attr_ulong(&session, private, CKA_B4AE_CUSTODY), 1);
    sign_and_check(&session, Ps::P65, public, private);
    assert!(ok(session.find_objects(&[Attribute::Class(ObjectClass::DATA)])).is_empty());

    // The inner module directly (already initialised by the outer one, same instance).
    let inner = cryptoki::context::Pkcs11::new(&f.inner_library).expect("loading the copy");
    assert_rv(
        inner.initialize(os_locking()),
        CKR_CRYPTOKI_ALREADY_INITIALIZED,
    );
    let raw = RawLib::load(&f.inner_library);
    let slot = ok(inner.get_slots_with_token())[0];
    assert_eq!(ok(inner.get_token_info(slot)).label(), INNER_LABEL);
    let inner_session = ok(inner.open_ro_session(slot));
    let template = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Label(b"native-key".to_vec()),
    ];
    assert_eq!(ok(inner_session.find_objects(&template)), [private]);
    let custody = raw.attr(&inner_session, private, CKA_B4AE_CUSTODY);
    assert_eq!(
        custody,
        3u64.to_ne_bytes(),
        "the inner token holds it in its own store"
    );
    assert!(ok(inner_session.find_objects(&[Attribute::Class(ObjectClass::DATA)])).is_empty());
}

/// SLH-DSA, pure and pre-hash, on a token whose HSM has it: the key pair is the HSM's (custody
/// 1) and every signature is its own.
#[test]
fn a_token_with_native_slh_dsa_keeps_the_key_and_signs_there() {
    use cryptoki::mechanism::dsa::{HedgeType, SignAdditionalContext};
    use cryptoki::object::{ParameterSetType, SlhDsaParameterSetType};
    let f = fwd();
    let session = f.module_session(NATIVE);
    let set = ParameterSetType::from(SlhDsaParameterSetType::SHA2_128F);
    let public = [
        Attribute::Token(false),
        Attribute::Verify(true),
        Attribute::ParameterSet(set),
        Attribute::Label(b"native-slh".to_vec()),
    ];
    let private = [
        Attribute::Token(false),
        Attribute::Sign(true),
        Attribute::Private(true),
        Attribute::Label(b"native-slh".to_vec()),
    ];
    let (public, private) =
        ok(session.generate_key_pair(&Mechanism::SlhDsaKeyPairGen, &public, &private));
    assert_eq!(attr_ulong(&session, private, CKA_B4AE_CUSTODY), 1);
    assert!(ok(session.find_objects(&[Attribute::Class(ObjectClass::DATA)])).is_empty());
    let context = SignAdditionalContext::new(HedgeType::Preferred, Some(b"native"));
    for mechanism in [
        Mechanism::SlhDsa(context),
        Mechanism::HashSlhDsaSha256(context),
        Mechanism::HashSlhDsaShake256(context),
    ] {
        let signature = ok(session.sign(&mechanism, private, MESSAGE));
        assert_eq!(signature.len(), 17088);
        ok(session.verify(&mechanism, public, MESSAGE, &signature));
        assert_rv(
            session.verify(&mechanism, public, b"other", &signature),
            CKR_SIGNATURE_INVALID,
        );
    }
    inner_token_holds(f, KeyType::SLH_DSA, "native-slh", private);
}

/// A token whose library has the 3.2 interface and ML-KEM: keys are made there (custody 1) and
/// `C_EncapsulateKey` / `C_DecapsulateKey` go to its own 3.2 functions.
#[test]
fn a_token_with_native_ml_kem_encapsulates_itself_through_its_3_2_interface() {
    let f = fwd();
    let session = f.module_session(NATIVE);
    let public_template = [
        Attribute::Token(false),
        Attribute::ParameterSet(cryptoki::object::MlKemParameterSetType::ML_KEM_768.into()),
        Attribute::Label(b"native-kem".to_vec()),
    ];
    let private_template = [
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Label(b"native-kem".to_vec()),
    ];
    let (public, private) = ok(session.generate_key_pair(
        &Mechanism::MlKemKeyPairGen,
        &public_template,
        &private_template,
    ));
    assert_eq!(attr_ulong(&session, private, CKA_B4AE_CUSTODY), 1);
    assert!(ok(session.find_objects(&[Attribute::Class(ObjectClass::DATA)])).is_empty());
    let secret = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(false),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
    ];
    let (ciphertext, sent) = ok(session.encapsulate_key(&Mechanism::MlKem, public, &secret));
    assert_eq!(ciphertext.len(), 1088);
    let received = ok(session.decapsulate_key(&Mechanism::MlKem, private, &secret, &ciphertext));
    assert_eq!(
        attr_bytes(&session, sent, CKA_VALUE),
        attr_bytes(&session, received, CKA_VALUE)
    );
    // Refusals come from the token's own functions, unchanged.
    let mut tampered = ciphertext.clone();
    tampered.pop();
    assert_rv(
        session.decapsulate_key(&Mechanism::MlKem, private, &secret, &tampered),
        CKR_ENCRYPTED_DATA_LEN_RANGE,
    );
    let (dsa_public, _) = pq_keypair(&session, Ps::P44, "native-not-kem", false);
    assert_rv(
        session.encapsulate_key(&Mechanism::MlKem, dsa_public, &secret),
        CKR_KEY_TYPE_INCONSISTENT,
    );

    inner_token_holds(f, KeyType::ML_KEM, "native-kem", private);
}

/// The inner token (the module copy standing in for an HSM) holds the private key labelled
/// `label`, under the same handle: the outer session's login is the process's, so its private
/// objects are visible to a session opened on the inner library directly.
fn inner_token_holds(f: &Forward, key_type: KeyType, label: &str, private: ObjectHandle) {
    let inner = cryptoki::context::Pkcs11::new(&f.inner_library).expect("loading the copy");
    let _ = inner.initialize(os_locking());
    let slot = ok(inner.get_slots_with_token())[0];
    let inner_session = ok(inner.open_ro_session(slot));
    let template = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(key_type),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    assert_eq!(ok(inner_session.find_objects(&template)), [private]);
}

// ---------------------------------------------------------------------------------------------
// 8. Faults, each in its own process with its own configuration

/// Runs `test` in a child with `config` (TOML), debug logging to a file and the extra variables
/// `envs`; returns the log.
fn fault_child(test: &str, config: &str, envs: &[(&str, &str)]) -> String {
    let dir = temp_dir("b4ae-forward-fault-");
    let conf = dir.path().join("b4ae-pkcs11.toml");
    std::fs::write(&conf, config).expect("configuration");
    let log = dir.path().join("module.log");
    let setting = format!("debug:{}", log.display());
    let mut all = vec![("B4AE_PKCS11_LOG", setting.as_str())];
    all.extend_from_slice(envs);
    run_child(test, &conf, &all);
    std::fs::read_to_string(&log).unwrap_or_default()
}

/// A configuration of one pkcs11 slot over token `token_label` of `library`.
fn one_slot_config(library: &Path, token_label: &str) -> String {
    format!(
        "[[token]]\nlabel = \"Fault\"\nbackend = \"pkcs11\"\nlibrary = \"{}\"\ntoken_label = \"{token_label}\"\n",
        library.display()
    )
}

/// The variable naming the file whose existence makes tests/forward_common/faulty_hsm.c fail.
const TRIGGER_VAR: &str = "FAULTY_HSM_TRIGGER";
/// In the token-removal child: SoftHSM's tokendir.
const TOKENDIR_VAR: &str = "B4AE_TEST_TOKENDIR";

/// In the child: C_Initialize fails with CKR_GENERAL_ERROR and leaves the module uninitialised.
fn initialize_must_fail() {
    let mut args = os_locking_args(null());
    let args: *mut CK_C_INITIALIZE_ARGS = &mut args;
    assert_ck!(CKR_GENERAL_ERROR; C_Initialize(args.cast()), C_Initialize(args.cast()));
    let mut info = CK_INFO::default();
    assert_ck!(CKR_CRYPTOKI_NOT_INITIALIZED; C_GetInfo(&mut info));
}

#[test]
fn a_missing_hsm_library_fails_c_initialize_cleanly() {
    let name = test_name!();
    if is_child(name) {
        return initialize_must_fail();
    }
    let library = temp_dir("b4ae-no-library-")
        .path()
        .join("libno-such-hsm.so");
    let config = format!(
        "[[token]]\nbackend = \"pkcs11\"\nlibrary = \"{}\"\ntoken_label = \"x\"\n",
        library.display()
    );
    let log = fault_child(name, &config, &[]);
    assert!(
        log.contains("libno-such-hsm.so"),
        "the log names the library:\n{log}"
    );
}

/// In the child: the module initialises; slot 0 (embedded) has its token, slot 1 (pkcs11,
/// naming a token the HSM lacks) is a slot without a token.
fn absent_token_is_a_slot_without_token() {
    assert_ck!(CKR_OK; C_Initialize(null_mut()));
    let mut count: CK_ULONG = 0;
    assert_ck!(CKR_OK; C_GetSlotList(CK_FALSE, null_mut(), &mut count));
    assert_eq!(count, 2, "every configured slot is listed");
    assert_ck!(CKR_OK; C_GetSlotList(CK_TRUE, null_mut(), &mut count));
    assert_eq!(count, 1, "only the embedded slot has a token");
    let mut slots = [CK_ULONG::MAX; 2];
    assert_ck!(CKR_OK; C_GetSlotList(CK_TRUE, slots.as_mut_ptr(), &mut count));
    assert_eq!(slots[0], 0);
    let mut info = CK_SLOT_INFO::default();
    assert_ck!(CKR_OK; C_GetSlotInfo(1, &mut info));
    assert_eq!(info.flags & CKF_TOKEN_PRESENT, 0);
    assert_ne!(info.flags & CKF_REMOVABLE_DEVICE, 0);
    let mut token = CK_TOKEN_INFO::default();
    let mut session = 0;
    assert_ck!(CKR_TOKEN_NOT_PRESENT;
        C_GetTokenInfo(1, &mut token),
        C_OpenSession(1, CKF_SERIAL_SESSION, null_mut(), None, &mut session),
        C_GetMechanismList(1, null_mut(), &mut count),
    );
    assert_ck!(CKR_OK; C_GetTokenInfo(0, &mut token), C_Finalize(null_mut()));
}

#[test]
fn a_token_label_matching_nothing_leaves_a_slot_without_token() {
    let name = test_name!();
    if is_child(name) {
        return absent_token_is_a_slot_without_token();
    }
    assert!(
        std::path::Path::new(SOFTHSM_LIB).exists(),
        "{SOFTHSM_LIB} is missing"
    );
    let softhsm = OwnSoftHsm::new("b4ae-empty-softhsm-", &[]);
    let embedded = temp_dir("b4ae-absent-token-");
    let config = format!(
        "[[token]]\nlabel = \"here\"\npath = \"{}\"\npin_kdf = \"test-only-fast\"\n\n\
         [[token]]\nbackend = \"pkcs11\"\nlibrary = \"{SOFTHSM_LIB}\"\n\
         token_label = \"no-such-token\"\n",
        embedded.path().join("token").display()
    );
    let softhsm_conf = softhsm.conf.to_str().expect("UTF-8");
    let log = fault_child(name, &config, &[(SOFTHSM_CONF_VAR, softhsm_conf)]);
    assert!(
        log.contains("no-such-token"),
        "the log names the token:\n{log}"
    );
}

/// AES-GCM with the test's AAD and a 128-bit tag.
fn gcm(iv: &mut [u8; 12]) -> Mechanism<'_> {
    let params = GcmParams::new(iv, AAD, 128.into()).expect("GCM parameters");
    Mechanism::AesGcm(params)
}

/// A backend answering CKR_DEVICE_ERROR (tests/forward_common/faulty_hsm.c in front of SoftHSM, faulting
/// while a trigger file exists): the application gets that code, never a crash, and the log
/// names the library; once the device works again, every key does too.
#[test]
fn a_device_error_of_the_hsm_is_answered_logged_and_loses_no_key() {
    let name = test_name!();
    if is_child(name) {
        return device_error_child();
    }
    assert!(Path::new(SOFTHSM_LIB).exists(), "{SOFTHSM_LIB} is missing");
    let softhsm = OwnSoftHsm::new("b4ae-faulty-softhsm-", &["fault"]);
    let library = build_faulty_hsm(softhsm.dir.path());
    let trigger = softhsm.dir.path().join("trigger");
    let envs = [
        (SOFTHSM_CONF_VAR, text(&softhsm.conf)),
        (TRIGGER_VAR, text(&trigger)),
        ("FAULTY_HSM_REAL", SOFTHSM_LIB),
    ];
    let log = fault_child(name, &one_slot_config(&library, "fault"), &envs);
    let library = library.display().to_string();
    for function in ["C_Sign:", "C_GenerateRandom:", "C_Encrypt:"] {
        let named = log.lines().any(|line| {
            line.contains(function) && line.contains(&library) && line.contains("CKR_DEVICE_ERROR")
        });
        assert!(
            named,
            "no log line names {function} {library} and CKR_DEVICE_ERROR:\n{log}"
        );
    }
    assert!(!trigger.exists(), "the child ended the fault");
}

fn device_error_child() {
    let trigger = PathBuf::from(std::env::var_os(TRIGGER_VAR).expect(TRIGGER_VAR));
    let ChildKeys {
        module,
        slot,
        session,
        digest,
        ec_public,
        ec_private,
        pq_public,
        pq_private,
        pk,
    } = ChildKeys::new("fault", Ps::P65);
    let login = || child_login(&module, slot);
    let aes = aes_key(&session, "fault-aes", true);

    std::fs::write(&trigger, b"fault").expect("creating the trigger");
    let s = session.handle();
    let (ec, data) = (ec_private.handle(), digest.as_ptr().cast_mut());
    let mut out = [0u8; 256];
    for _ in 0..2 {
        assert_ck!(CKR_OK; C_SignInit(s, &mut mech(CKM_ECDSA), ec));
        let mut len = out.len() as CK_ULONG;
        assert_ck!(CKR_DEVICE_ERROR; C_Sign(s, data, 32, out.as_mut_ptr(), &mut len));
        // The failed C_Sign ended the operation (the device did, as PKCS#11 wants; the module
        // kept none): the next C_SignInit starts a new one.
    }
    let mut random = [0u8; 32];
    assert_ck!(CKR_DEVICE_ERROR; C_GenerateRandom(s, random.as_mut_ptr(), 32));
    let mut iv = *b"twelve bytes";
    let encrypted = session.encrypt(&gcm(&mut iv), aes, MESSAGE);
    assert_rv(encrypted, CKR_DEVICE_ERROR);
    // Sealing a new post-quantum key needs the HSM's C_Encrypt: refused, and nothing half-made.
    let (public, private) = pq_templates(Ps::P44, "fault-pq-new", false);
    let made = session.generate_key_pair(&Mechanism::MlDsaKeyPairGen, &public, &private);
    assert_rv(made, CKR_DEVICE_ERROR);
    assert!(find_by_label(&session, "fault-pq-new").is_empty());
    // A sealed key already opened signs on: ML-DSA does not use the HSM's C_Sign.
    assert_eq!(sign_and_check(&session, Ps::P65, pq_public, pq_private), pk);

    std::fs::remove_file(&trigger).expect("removing the trigger");
    // The same handles work again in the same session.
    let signature = ok(session.sign(&Mechanism::Ecdsa, ec_private, &digest));
    ok(session.verify(&Mechanism::Ecdsa, ec_public, &digest, &signature));
    ok(session.generate_random_slice(&mut random));
    assert_ne!(random, [0u8; 32]);
    let mut iv = *b"twelve bytes";
    ok(session.encrypt(&gcm(&mut iv), aes, MESSAGE));
    drop(session);

    // A new module instance: the keys are all still in the HSM; the ML-DSA key sealed before
    // the fault is opened by the HSM afresh.
    ok(module.clone().finalize());
    initialize(&module);
    let session = login();
    keys_still_work(&session, "fault", Ps::P65, &digest, &pk);
    assert!(find_by_label(&session, "fault-pq-new").is_empty());
}

/// The variable naming tests/forward_common/faulty_hsm.c built as a 3.0 library, in the child.
const SHIM_VAR: &str = "B4AE_TEST_SHIM";

/// An HSM whose library offers PKCS#11 3.0 (tests/forward_common/faulty_hsm.c built with
/// FAULTY_HSM_3_0: a named user and `C_SessionCancel` over SoftHSM): the module loads that
/// interface and forwards `C_LoginUser` with a user name and `C_SessionCancel` to it.
#[test]
fn a_3_0_hsm_gets_named_logins_and_session_cancels_forwarded() {
    let name = test_name!();
    if is_child(name) {
        return named_login_and_cancel_child();
    }
    assert!(Path::new(SOFTHSM_LIB).exists(), "{SOFTHSM_LIB} is missing");
    let softhsm = OwnSoftHsm::new("b4ae-hsm30-softhsm-", &["three"]);
    let library = build_faulty_hsm_3_0(softhsm.dir.path());
    let envs = [
        (SOFTHSM_CONF_VAR, text(&softhsm.conf)),
        ("FAULTY_HSM_REAL", SOFTHSM_LIB),
        (SHIM_VAR, text(&library)),
    ];
    let log = fault_child(name, &one_slot_config(&library, "three"), &envs);
    assert!(
        log.contains("PKCS#11 3.0 interface"),
        "the module took the 3.0 interface:\n{log}"
    );
}

fn named_login_and_cancel_child() {
    let shim_path = std::env::var_os(SHIM_VAR).expect(SHIM_VAR);
    // SAFETY: the shim the module loaded (same path, so the same instance); its counters are
    // plain functions without arguments.
    let (logins, cancels) = unsafe {
        let shim = libloading::Library::new(&shim_path).expect("the shim");
        let logins = *shim
            .get::<unsafe extern "C" fn() -> CK_ULONG>(b"faulty_hsm_named_logins\0")
            .expect("faulty_hsm_named_logins");
        let cancels = *shim
            .get::<unsafe extern "C" fn() -> CK_ULONG>(b"faulty_hsm_cancels\0")
            .expect("faulty_hsm_cancels");
        std::mem::forget(shim);
        (move || logins(), move || cancels())
    };
    let module = load_module();
    initialize(&module);
    let slot = ok(module.get_all_slots())[0];
    let s = open_session(slot, RW).expect("a session");
    let (pin, pin_len) = text_arg(HSM_PIN);
    // A name the HSM does not know: its own answer, not the module's CKR_ARGUMENTS_BAD.
    let (nobody, nobody_len) = text_arg("nobody");
    assert_ck!(CKR_PIN_INCORRECT; C_LoginUser(s, CKU_USER, pin, pin_len, nobody, nobody_len));
    assert_eq!(logins(), 1);
    let (operator, operator_len) = text_arg("operator");
    assert_ck!(CKR_OK; C_LoginUser(s, CKU_USER, pin, pin_len, operator, operator_len));
    assert_eq!(logins(), 2);
    assert_ck!(CKR_USER_ALREADY_LOGGED_IN; C_Login(s, CKU_USER, pin, pin_len));
    let mut info = CK_SESSION_INFO::default();
    assert_ck!(CKR_OK; C_GetSessionInfo(s, &mut info));
    assert_eq!(info.state, CKS_RW_USER_FUNCTIONS);

    // A signature the HSM performs, cancelled by the application: the HSM's own
    // C_SessionCancel ends it there, and the session signs again.
    let session = ok(module.open_rw_session(slot));
    let (_, ec_private) = ec_keypair(&session, "three-ec");
    let digest = Sha256::digest(MESSAGE).to_vec();
    let (data, ec) = (digest.as_ptr().cast_mut(), ec_private.handle());
    let before = cancels();
    assert_ck!(CKR_OK; C_SignInit(s, &mut mech(CKM_ECDSA), ec));
    assert_ck!(CKR_OK; C_SessionCancel(s, CKF_SIGN));
    assert_eq!(
        cancels(),
        before + 1,
        "the HSM's C_SessionCancel ended the signature"
    );
    assert_ck!(CKR_OPERATION_NOT_INITIALIZED; C_SignFinal(s, null_mut(), &mut 0));
    assert_ck!(CKR_OK; C_SignInit(s, &mut mech(CKM_ECDSA), ec));
    let mut signature = [0u8; 256];
    let mut len = signature.len() as CK_ULONG;
    assert_ck!(CKR_OK; C_Sign(s, data, 32, signature.as_mut_ptr(), &mut len));
    assert_eq!(len, 64);
    // A post-quantum signature runs in the module: cancelling it asks nothing of the HSM.
    let (_, pq_private) = pq_keypair(&session, Ps::P44, "three-pq", false);
    assert_ck!(CKR_OK; C_SignInit(s, &mut mech(CKM_ML_DSA), pq_private.handle()));
    assert_ck!(CKR_OK; C_SessionCancel(s, CKF_SIGN));
    assert_eq!(cancels(), before + 1);
    assert_ck!(CKR_OK; C_Logout(s), C_CloseSession(s));
}

/// A token that disappears under an open, logged-in session. SoftHSM keeps one directory per
/// token in its tokendir and finds tokens by path, so moving that directory away removes the
/// token. Every call through the module answers (no crash, no hang), no key is found or usable
/// any more, C_GetTokenInfo fails with a log line naming the library; once the directory is
/// back, a new module instance finds and uses every key.
///
/// What SoftHSM 2.6.1 answers with the token gone (passed on by the module), past the
/// module's one-second confirmation window:
/// - C_FindObjectsInit, C_FindObjects, C_FindObjectsFinal: CKR_OK, nothing found (SoftHSM
///   re-reads the token directory and serves an empty token). For the ML-DSA key the module
///   asks SoftHSM whether its record still exists, learns it does not, and finds nothing too.
/// - C_SignInit: CKR_OBJECT_HANDLE_INVALID for the EC key, and for the ML-DSA key (its record
///   dropped out of the module's index, so SoftHSM is asked about the handle).
/// - C_GetTokenInfo: CKR_GENERAL_ERROR, logged as "C_GetTokenInfo: the HSM library
///   /usr/lib/softhsm/libsofthsm2.so answered CKR_GENERAL_ERROR".
/// - C_GetSlotInfo (flags still CKF_TOKEN_PRESENT), C_GetSessionInfo (still
///   CKS_RW_USER_FUNCTIONS), C_OpenSession and C_CloseSession: CKR_OK, SoftHSM answering from
///   memory.
///
/// Within the confirmation window the module would still find the ML-DSA key in its index and
/// sign with it from its cache. Moving the directory back changes none of the answers above in
/// the same SoftHSM instance: SoftHSM sees the token again only after C_Finalize and
/// C_Initialize.
#[test]
fn a_token_that_disappears_is_answered_without_crash_or_hang() {
    let name = test_name!();
    if is_child(name) {
        return vanishing_token_child();
    }
    assert!(Path::new(SOFTHSM_LIB).exists(), "{SOFTHSM_LIB} is missing");
    let softhsm = OwnSoftHsm::new("b4ae-vanish-softhsm-", &["vanish"]);
    let envs = [
        (SOFTHSM_CONF_VAR, text(&softhsm.conf)),
        (TOKENDIR_VAR, text(&softhsm.tokens)),
    ];
    let config = one_slot_config(Path::new(SOFTHSM_LIB), "vanish");
    let log = fault_child(name, &config, &envs);
    let named = log.lines().any(|line| {
        line.contains("C_GetTokenInfo:") && line.contains(SOFTHSM_LIB) && line.contains("CKR_")
    });
    assert!(
        named,
        "no log line names C_GetTokenInfo, {SOFTHSM_LIB} and its answer:\n{log}"
    );
}

/// What one call through the module answered.
struct Answer {
    call: String,
    rv: CK_RV,
    /// Handles C_FindObjects returned.
    found: Option<CK_ULONG>,
}

impl Answer {
    fn new(call: impl Into<String>, rv: CK_RV) -> Self {
        let call = call.into();
        Answer {
            call,
            rv,
            found: None,
        }
    }
}

/// Searches for, signs with and asks about the token of session `s` on `slot`, through the
/// module; `ec` and `pq` are its private keys.
fn calls_on_a_vanished_token(
    s: CK_SESSION_HANDLE,
    slot: CK_SLOT_ID,
    ec: CK_OBJECT_HANDLE,
    pq: CK_OBJECT_HANDLE,
) -> Vec<Answer> {
    let mut answers = Vec::new();
    let class = CKO_PRIVATE_KEY;
    let searches = [
        ("EC", CKK_EC, "vanish-ec"),
        ("ML-DSA", CKK_ML_DSA, "vanish-pq"),
    ];
    for (what, key_type, label) in searches {
        let mut template = [
            raw_attr(CKA_CLASS, &class),
            raw_attr(CKA_KEY_TYPE, &key_type),
            raw_bytes(CKA_LABEL, label.as_bytes()),
        ];
        let rv = ck!(C_FindObjectsInit(s, template.as_mut_ptr(), 3));
        answers.push(Answer::new(format!("C_FindObjectsInit {what}"), rv));
        if rv == CKR_OK {
            let mut found = [CK_INVALID_HANDLE; 4];
            let mut count: CK_ULONG = 0;
            let rv = ck!(C_FindObjects(s, found.as_mut_ptr(), 4, &mut count));
            let mut answer = Answer::new(format!("C_FindObjects {what}"), rv);
            answer.found = Some(count);
            answers.push(answer);
            let rv = ck!(C_FindObjectsFinal(s));
            answers.push(Answer::new(format!("C_FindObjectsFinal {what}"), rv));
        }
    }
    let digest = Sha256::digest(MESSAGE);
    let mut out = vec![0u8; 8192];
    for (what, mechanism, key) in [("ECDSA", CKM_ECDSA, ec), ("ML-DSA", CKM_ML_DSA, pq)] {
        let rv = ck!(C_SignInit(s, &mut mech(mechanism), key));
        answers.push(Answer::new(format!("C_SignInit {what}"), rv));
        if rv == CKR_OK {
            let mut len = out.len() as CK_ULONG;
            let data = digest.as_ptr().cast_mut();
            let rv = ck!(C_Sign(s, data, 32, out.as_mut_ptr(), &mut len));
            answers.push(Answer::new(format!("C_Sign {what}"), rv));
        }
    }
    let mut token = CK_TOKEN_INFO::default();
    let rv = ck!(C_GetTokenInfo(slot, &mut token));
    answers.push(Answer::new("C_GetTokenInfo", rv));
    let mut slot_info = CK_SLOT_INFO::default();
    let rv = ck!(C_GetSlotInfo(slot, &mut slot_info));
    let call = format!("C_GetSlotInfo (flags {:#x})", slot_info.flags);
    answers.push(Answer::new(call, rv));
    let mut info = CK_SESSION_INFO::default();
    let rv = ck!(C_GetSessionInfo(s, &mut info));
    let call = format!("C_GetSessionInfo (state {})", info.state);
    answers.push(Answer::new(call, rv));
    let mut other = CK_INVALID_HANDLE;
    let rv = ck!(C_OpenSession(slot, RW, null(), None, &mut other));
    answers.push(Answer::new("C_OpenSession", rv));
    if rv == CKR_OK {
        let rv = ck!(C_CloseSession(other));
        answers.push(Answer::new("C_CloseSession (that session)", rv));
    }
    answers
}

/// Runs [`calls_on_a_vanished_token`] on its own thread (a hang fails the test); prints the
/// answers.
fn answers_within(
    when: &'static str,
    s: CK_SESSION_HANDLE,
    slot: CK_SLOT_ID,
    ec: CK_OBJECT_HANDLE,
    pq: CK_OBJECT_HANDLE,
) -> Vec<Answer> {
    let answers = within(Duration::from_secs(120), when, move || {
        calls_on_a_vanished_token(s, slot, ec, pq)
    });
    for a in &answers {
        let found = a.found.map(|n| format!(", {n} found")).unwrap_or_default();
        eprintln!("{when}: {}: {}{found}", a.call, rv_name(a.rv));
    }
    answers
}

fn vanishing_token_child() {
    let tokens = PathBuf::from(std::env::var_os(TOKENDIR_VAR).expect(TOKENDIR_VAR));
    let ChildKeys {
        module,
        slot,
        session,
        digest,
        ec_private,
        pq_private,
        pk,
        ..
    } = ChildKeys::new("vanish", Ps::P44);
    let login = || child_login(&module, slot);

    let token_dir = only_token_dir(&tokens);
    let aside = tokens.with_file_name("token-moved-away");
    std::fs::rename(&token_dir, &aside).expect("moving the token away");
    // Past the window in which the module trusts its index without asking the HSM.
    std::thread::sleep(CONFIRMATION_WINDOW + Duration::from_millis(200));
    let (s, slot_id) = (session.handle(), slot.id());
    let (ec, pq) = (ec_private.handle(), pq_private.handle());
    let answers = answers_within("token gone", s, slot_id, ec, pq);
    for a in &answers {
        if a.call.starts_with("C_FindObjects ") {
            assert_eq!(a.found, Some(0), "{}: a key of a vanished token", a.call);
        }
        if a.call.starts_with("C_SignInit") || a.call == "C_GetTokenInfo" {
            assert_ne!(a.rv, CKR_OK, "{} with the token gone", a.call);
        }
    }

    std::fs::rename(&aside, &token_dir).expect("moving the token back");
    answers_within("token back, same instance", s, slot_id, ec, pq);
    drop(session);
    let finalize = module.clone();
    within(Duration::from_secs(60), "C_Finalize", move || {
        ok(finalize.finalize())
    });

    // A new instance (SoftHSM re-initialised by the module): every key is there and works.
    initialize(&module);
    let session = login();
    keys_still_work(&session, "vanish", Ps::P44, &digest, &pk);
}

/// Several threads, each with its own session, sign at once with one HSM-sealed key and one
/// forwarded EC key (the module is initialized with CKF_OS_LOCKING_OK).
#[test]
fn threads_sign_at_once_with_sealed_and_forwarded_keys() {
    let f = fwd();
    let session = f.module_session(THREADS);
    let (public, private) = pq_keypair(&session, Ps::P65, "threads-pq", true);
    let (_, ec_private) = ec_keypair(&session, "threads-ec");
    let pk = attr_bytes(&session, public, CKA_VALUE);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let own = ok(f.module.open_rw_session(f.slots[THREADS]));
                for i in 0..25u8 {
                    let message = [i; 48];
                    let signature = ok(own.sign(&pure_ml_dsa(), private, &message));
                    assert!(Ps::P65.verify(&pk, &message, b"", &signature));
                    let ecdsa = ok(own.sign(&Mechanism::Ecdsa, ec_private, &[i; 32]));
                    assert_eq!(ecdsa.len(), 64);
                }
            });
        }
    });
}

/// The EC key pair `<prefix>-ec` and the ML-DSA pair `<prefix>-pq` (public key `pk`) are found
/// by label and sign, after whatever the test did to the HSM.
#[track_caller]
fn keys_still_work(session: &Session, prefix: &str, ps: Ps, digest: &[u8], pk: &[u8]) {
    let label = format!("{prefix}-ec");
    let find = |class| {
        let template = [
            Attribute::Class(class),
            Attribute::Label(label.clone().into_bytes()),
        ];
        let found = ok(session.find_objects(&template));
        assert_eq!(found.len(), 1, "{class:?} {label}: {found:?}");
        found[0]
    };
    let (ec_public, ec_private) = (
        find(ObjectClass::PUBLIC_KEY),
        find(ObjectClass::PRIVATE_KEY),
    );
    let signature = ok(session.sign(&Mechanism::Ecdsa, ec_private, digest));
    ok(session.verify(&Mechanism::Ecdsa, ec_public, digest, &signature));
    let (pq_public, pq_private) = find_pq_pair(session, &format!("{prefix}-pq"));
    assert_eq!(sign_and_check(session, ps, pq_public, pq_private), pk);
}

/// Round-3 Dilithium5 (vendor mechanism) on the classical HSM: a sealed record (custody 2),
/// found by its vendor key type, signing deterministically and verifying.
#[test]
fn dilithium5_keys_are_sealed_records_too() {
    use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
    use cryptoki::mechanism::MechanismType;
    let vendor = |m| {
        Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(
            MechanismType::new_vendor_defined(m).unwrap(),
            None,
        ))
    };
    let f = fwd();
    let session = f.module_session(DILITHIUM5);
    let public_template = [Attribute::Token(true), Attribute::Label(b"dil5".to_vec())];
    let private_template = [
        Attribute::Token(true),
        Attribute::Sign(true),
        Attribute::Label(b"dil5".to_vec()),
    ];
    let (public, private) =
        ok(session.generate_key_pair(&vendor(0xB4AE_0001), &public_template, &private_template));
    assert_eq!(attr_ulong(&session, private, CKA_B4AE_CUSTODY), 2);
    let signature = ok(session.sign(&vendor(0xB4AE_0002), private, MESSAGE));
    assert_eq!(signature.len(), 4595);
    assert_eq!(
        ok(session.sign(&vendor(0xB4AE_0002), private, MESSAGE)),
        signature
    );
    ok(session.verify(&vendor(0xB4AE_0002), public, MESSAGE, &signature));
    let key_type = KeyType::new_vendor_defined(0xB4AE_0001).unwrap();
    let found = ok(session.find_objects(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(key_type),
    ]));
    assert_eq!(found, vec![private]);
    let hsm = f.hsm_session(TOKENS[DILITHIUM5]);
    let records = f.records(&hsm);
    assert_eq!(records.len(), 2, "one record per half of the pair");
}

/// A fault test's child: its own module instance on slot 0, logged in, with an EC pair
/// `<prefix>-ec` and an ML-DSA pair `<prefix>-pq` made and checked.
struct ChildKeys {
    module: cryptoki::context::Pkcs11,
    slot: cryptoki::slot::Slot,
    session: Session,
    digest: Vec<u8>,
    ec_public: ObjectHandle,
    ec_private: ObjectHandle,
    pq_public: ObjectHandle,
    pq_private: ObjectHandle,
    pk: Vec<u8>,
}

impl ChildKeys {
    fn new(prefix: &str, ps: Ps) -> Self {
        let module = load_module();
        initialize(&module);
        let slot = ok(module.get_all_slots())[0];
        let session = child_login(&module, slot);
        let digest = Sha256::digest(MESSAGE).to_vec();
        let (ec_public, ec_private) = ec_keypair(&session, &format!("{prefix}-ec"));
        let signature = ok(session.sign(&Mechanism::Ecdsa, ec_private, &digest));
        ok(session.verify(&Mechanism::Ecdsa, ec_public, &digest, &signature));
        let (pq_public, pq_private) = pq_keypair(&session, ps, &format!("{prefix}-pq"), false);
        let pk = sign_and_check(&session, ps, pq_public, pq_private);
        ChildKeys {
            module,
            slot,
            session,
            digest,
            ec_public,
            ec_private,
            pq_public,
            pq_private,
            pk,
        }
    }
}

/// A read/write session of `module` on `slot`, logged in as the user.
fn child_login(module: &cryptoki::context::Pkcs11, slot: cryptoki::slot::Slot) -> Session {
    let session = ok(module.open_rw_session(slot));
    ok(session.login(UserType::User, Some(&pin(HSM_PIN))));
    session
}

//! Custody 2 against an attacker (docs/security.md, "Threat model"): every attack of issue
//! "Custody that holds" replayed on SoftHSM2 2.6.1, directly and through the module's C ABI.
//!
//! - a PIN holder on SoftHSM directly: derive, copy, re-flag, wrap, read or misuse a storage key;
//! - a PIN holder through the module: find, use, copy, change, read or destroy a storage key;
//! - a process without the PIN: plant a record claiming to be the victim's key;
//! - rotation: a fresh random key each time, nothing older usable;
//! - PIN guessing: 20 wrong PINs against a limit of 3, the count surviving the process, the
//!   SO's unlock, and logins killed inside the HSM not counted;
//! - tokens of release 1 migrated at the first login, no key lost.

#[macro_use]
mod common;
mod forward_common;

use common::*;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki_sys::*;
use forward_common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const TOKENS: [&str; 5] = [
    "cu-rights",
    "cu-module",
    "cu-plant",
    "cu-rotate",
    "cu-files",
];
const RIGHTS: usize = 0;
const MODULE: usize = 1;
const PLANT: usize = 2;
const ROTATE: usize = 3;
const FILES: usize = 4;

const CKM_B4AE_HYBRID: CK_MECHANISM_TYPE = 0xB4AE_0004;

fn fwd() -> &'static Forward {
    forward_common::fixture(&TOKENS)
}

/// The storage keys SoftHSM holds for a token, after one key pair was made through the module.
fn stk_after_keygen(index: usize, label: &str) -> (Session, ObjectHandle) {
    let f = fwd();
    let session = f.module_session(index);
    let (public, private) = pq_keypair(&session, Ps::P65, label, false);
    sign_and_check(&session, Ps::P65, public, private);
    let direct = f.hsm_session(TOKENS[index]);
    let keys = f.storage_keys(&direct);
    assert_eq!(keys.len(), 1, "one storage key: {keys:?}");
    (session, keys[0].1)
}

/// C_DeriveKey(base, CKM_AES_ECB_ENCRYPT_DATA) asking for an extractable, readable AES key,
/// through the function list `derive`.
fn derive_readable(
    derive: CK_C_DeriveKey,
    session: CK_SESSION_HANDLE,
    base: CK_OBJECT_HANDLE,
) -> CK_RV {
    let derive = derive.expect("C_DeriveKey");
    let mut info = [0x42u8; 32];
    let mut data = CK_KEY_DERIVATION_STRING_DATA {
        pData: info.as_mut_ptr(),
        ulLen: 32,
    };
    let mut mechanism = CK_MECHANISM {
        mechanism: CKM_AES_ECB_ENCRYPT_DATA,
        pParameter: (&mut data as *mut CK_KEY_DERIVATION_STRING_DATA).cast(),
        ulParameterLen: size_of::<CK_KEY_DERIVATION_STRING_DATA>() as CK_ULONG,
    };
    let (class, key_type) = (CKO_SECRET_KEY, CKK_AES);
    let (yes, no) = (CK_TRUE, CK_FALSE);
    let mut template = [
        raw_attr(CKA_CLASS, &class),
        raw_attr(CKA_KEY_TYPE, &key_type),
        raw_attr(CKA_SENSITIVE, &no),
        raw_attr(CKA_EXTRACTABLE, &yes),
    ];
    let mut key = CK_INVALID_HANDLE;
    // SAFETY: mechanism, parameter and template point at live values of the right sizes.
    unsafe {
        derive(
            session,
            &mut mechanism,
            base,
            template.as_mut_ptr(),
            template.len() as CK_ULONG,
            &mut key,
        )
    }
}

fn gcm<'a>(iv: &'a mut [u8], aad: &'a [u8]) -> Mechanism<'a> {
    Mechanism::AesGcm(GcmParams::new(iv, aad, 128.into()).expect("GCM parameters"))
}

fn rv_of<T>(result: cryptoki::error::Result<T>) -> CK_RV {
    result.to_rv()
}

// ---------------------------------------------------------------------------------------------
// 0. A thief of the HSM's files

/// Every byte SoftHSM keeps on disk, across all its tokens.
fn softhsm_files(dir: &Path, out: &mut Vec<u8>) {
    for entry in std::fs::read_dir(dir).expect("tokendir").flatten() {
        if entry.path().is_dir() {
            softhsm_files(&entry.path(), out);
        } else {
            out.extend(std::fs::read(entry.path()).unwrap_or_default());
        }
    }
}

/// What someone who copies SoftHSM's token directory gets: no 16-byte piece of a post-quantum
/// private key or seed is anywhere in the files (the control: the public key is).
#[test]
fn stolen_softhsm_files_hold_no_key_in_the_clear() {
    let f = fwd();
    let session = f.module_session(FILES);
    let (public, private) = pq_keypair(&session, Ps::P87, "files-key", true);
    let pk = sign_and_check(&session, Ps::P87, public, private);
    let sk = attr_bytes(&session, private, CKA_VALUE);
    let seed = attr_bytes(&session, private, CKA_SEED);
    let mut files = Vec::new();
    softhsm_files(&f.dir.join("tokens"), &mut files);
    let pieces: std::collections::HashSet<&[u8]> = files.windows(16).collect();
    assert!(
        pieces.contains(&pk[100..116]),
        "control: the public key is on disk"
    );
    // ρ (the first 32 bytes of the expanded key) is also the public key's first 32 bytes.
    for (what, secret) in [("private key", &sk[32..]), ("seed", &seed[..])] {
        let leaked = secret
            .chunks_exact(16)
            .filter(|c| pieces.contains(c))
            .count();
        assert_eq!(leaked, 0, "{what}: {leaked} pieces in SoftHSM's files");
    }
}

// ---------------------------------------------------------------------------------------------
// 1. A PIN holder on SoftHSM directly

/// The storage key has only what sealing needs, and no call with the user PIN brings it out:
/// derive, re-flag, copy, wrap, read, other mechanisms. What stays open (and is documented as
/// the in-process limit the custody agent removes): the PIN holder can ask SoftHSM for AES-GCM
/// with it, so a record opens.
#[test]
fn a_pin_holder_on_softhsm_cannot_bring_a_storage_key_out() {
    let f = fwd();
    let (_module, stk) = stk_after_keygen(RIGHTS, "rights-key");
    let direct = f.hsm_session(TOKENS[RIGHTS]);
    let flag = |kind| f.hsm_raw.attr_bool(&direct, stk, kind);
    for (kind, want) in [
        (CKA_TOKEN, true),
        (CKA_PRIVATE, true),
        (CKA_SENSITIVE, true),
        (CKA_ALWAYS_SENSITIVE, true),
        (CKA_EXTRACTABLE, false),
        (CKA_NEVER_EXTRACTABLE, true),
        (CKA_LOCAL, true),
        (CKA_MODIFIABLE, false),
        (CKA_COPYABLE, false),
        (CKA_ENCRYPT, true),
        (CKA_DECRYPT, true),
        (CKA_DERIVE, false),
        (CKA_WRAP, false),
        (CKA_UNWRAP, false),
        (CKA_SIGN, false),
        (CKA_VERIFY, false),
    ] {
        assert_eq!(flag(kind), want, "storage key attribute {kind:#x}");
    }
    let generated = f.hsm_raw.attr(&direct, stk, CKA_KEY_GEN_MECHANISM);
    assert_eq!(
        generated,
        CKM_AES_KEY_GEN.to_ne_bytes(),
        "a random key, not derived"
    );
    let allowed = f.hsm_raw.attr(&direct, stk, CKA_ALLOWED_MECHANISMS);
    assert_eq!(allowed, CKM_AES_GCM.to_ne_bytes(), "AES-GCM only");

    let s = direct.handle();
    let derived = derive_readable(f.hsm_raw.fl.C_DeriveKey, s, stk.handle());
    eprintln!("SoftHSM: derive from the storage key: {}", rv_name(derived));
    assert_ne!(derived, CKR_OK, "derive");
    for change in [
        Attribute::Derive(true),
        Attribute::Extractable(true),
        Attribute::Sensitive(false),
        Attribute::Wrap(true),
        Attribute::Sign(true),
        Attribute::AllowedMechanisms(vec![MechanismType::AES_ECB]),
    ] {
        let rv = rv_of(direct.update_attributes(stk, std::slice::from_ref(&change)));
        eprintln!(
            "SoftHSM: set {:?}: {}",
            change.attribute_type(),
            rv_name(rv)
        );
        assert_ne!(rv, CKR_OK, "{change:?}");
    }
    for template in [
        vec![],
        vec![Attribute::Extractable(true)],
        vec![Attribute::Derive(true)],
    ] {
        let rv = rv_of(direct.copy_object(stk, &template));
        assert_eq!(rv, CKR_ACTION_PROHIBITED, "copy with {template:?}");
    }
    let wrapper = ok(direct.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(false),
            Attribute::ValueLen(32.into()),
            Attribute::Wrap(true),
            Attribute::Extractable(true),
            Attribute::Sensitive(false),
        ],
    ));
    let wrapped = direct.wrap_key(&Mechanism::AesKeyWrap, wrapper, stk);
    assert_rv(wrapped, CKR_KEY_UNEXTRACTABLE);
    let value = f.hsm_raw.get_attr(&direct, stk, CKA_VALUE);
    assert_eq!(
        value.map_err(rv_name),
        Err(rv_name(CKR_ATTRIBUTE_SENSITIVE))
    );
    let block = [0u8; 16];
    for mechanism in [Mechanism::AesEcb, Mechanism::AesCbc([0; 16])] {
        let rv = rv_of(direct.encrypt(&mechanism, stk, &block));
        assert_eq!(rv, CKR_MECHANISM_INVALID, "{mechanism:?}");
    }
    let cmac = rv_of(direct.sign(&Mechanism::AesCMac, stk, &block));
    assert_rv_in(
        cmac,
        &[CKR_KEY_FUNCTION_NOT_PERMITTED, CKR_MECHANISM_INVALID],
    );

    // The open row: with the PIN, SoftHSM itself opens a record under the storage key.
    let record = f
        .records(&direct)
        .into_iter()
        .find(|r| r.kind() == 1)
        .expect("a private record");
    let public_len = u32::from_le_bytes(record.value[43..47].try_into().unwrap()) as usize;
    let prefix = &record.value[..47 + public_len];
    let mut iv = record.value[31..43].to_vec();
    let opened = direct.decrypt(&gcm(&mut iv, prefix), stk, &record.value[prefix.len()..]);
    assert!(
        opened.is_ok(),
        "the documented open row: a PIN holder calling SoftHSM directly decrypts a record"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. A PIN holder through the module

/// Through the module the storage key is invisible (no search returns it) and every call on its
/// handle (taken from SoftHSM directly; the same library instance) is refused as if it named
/// nothing.
#[test]
fn through_the_module_a_storage_key_is_invisible_and_unusable() {
    let f = fwd();
    let (session, stk) = stk_after_keygen(MODULE, "module-key");
    let everything = ok(session.find_objects(&[]));
    assert!(!everything.contains(&stk), "listed among all objects");
    for template in [
        vec![Attribute::Class(ObjectClass::SECRET_KEY)],
        vec![Attribute::Id(STK_ID.to_vec())],
        vec![Attribute::Label(b"B4AE-v2-STK-1".to_vec())],
        vec![Attribute::KeyType(KeyType::AES), Attribute::Token(true)],
    ] {
        assert_eq!(ok(session.find_objects(&template)), [], "{template:?}");
    }
    let s = session.handle();
    let k = stk.handle();
    let derived = derive_readable(fl().C_DeriveKey, s, k);
    assert_rv(derived, CKR_KEY_HANDLE_INVALID);
    let record = {
        let direct = f.hsm_session(TOKENS[MODULE]);
        let records = f.records(&direct);
        records
            .into_iter()
            .find(|r| r.kind() == 1)
            .expect("a private record")
    };
    let public_len = u32::from_le_bytes(record.value[43..47].try_into().unwrap()) as usize;
    let prefix = record.value[..47 + public_len].to_vec();
    let mut iv = record.value[31..43].to_vec();
    let decrypted = session.decrypt(&gcm(&mut iv, &prefix), stk, &record.value[prefix.len()..]);
    assert_rv(decrypted, CKR_KEY_HANDLE_INVALID);
    let mut iv = [7u8; 12];
    assert_rv(
        session.encrypt(&gcm(&mut iv, b""), stk, b"forged"),
        CKR_KEY_HANDLE_INVALID,
    );
    assert_rv(
        session.sign(&Mechanism::AesCMac, stk, b"x"),
        CKR_KEY_HANDLE_INVALID,
    );
    let aes = aes_key(&session, "module-aes", false);
    assert_rv(
        session.wrap_key(&Mechanism::AesKeyWrap, stk, aes),
        CKR_WRAPPING_KEY_HANDLE_INVALID,
    );
    assert_rv(
        session.wrap_key(&Mechanism::AesKeyWrap, aes, stk),
        CKR_KEY_HANDLE_INVALID,
    );
    let unwrapped = session.unwrap_key(&Mechanism::AesKeyWrap, stk, &[0; 40], &[]);
    assert_rv(unwrapped, CKR_UNWRAPPING_KEY_HANDLE_INVALID);
    ok(session.digest_init(&Mechanism::Sha256));
    assert_ck!(CKR_KEY_HANDLE_INVALID; C_DigestKey(s, k));
    let read = session.get_attributes(stk, &[AttributeType::Label]);
    assert_rv(read, CKR_OBJECT_HANDLE_INVALID);
    let mut value = [0u8; 32];
    let mut attr = raw_buffer(CKA_VALUE, &mut value);
    assert_ck!(CKR_OBJECT_HANDLE_INVALID; C_GetAttributeValue(s, k, &mut attr, 1));
    let changed = session.update_attributes(stk, &[Attribute::Derive(true)]);
    assert_rv(changed, CKR_OBJECT_HANDLE_INVALID);
    let copied = session.copy_object(stk, &[Attribute::Extractable(true)]);
    assert_rv(copied, CKR_OBJECT_HANDLE_INVALID);
    let mut size: CK_ULONG = 0;
    assert_ck!(CKR_OBJECT_HANDLE_INVALID; C_GetObjectSize(s, k, &mut size));
    assert_rv(session.destroy_object(stk), CKR_OBJECT_HANDLE_INVALID);
    let direct = f.hsm_session(TOKENS[MODULE]);
    assert_eq!(
        f.storage_keys(&direct).len(),
        1,
        "the storage key is still there"
    );
    let (public, private) = find_pq_pair(&session, "module-key");
    sign_and_check(&session, Ps::P65, public, private);
}

// ---------------------------------------------------------------------------------------------
// 3. A process without the PIN plants records

/// `Attributes::serialize` of src/token/attributes.rs: (type u64 LE, length u32 LE, value)*.
fn serialize(attrs: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, value) in attrs {
        // CK_ULONG is 32 bits on some platforms: the record format is always 64.
        #[allow(clippy::unnecessary_cast)]
        out.extend_from_slice(&(*kind as u64).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// A record as src/backend/pkcs11/records.rs lays it out, with `sealed` as its last part.
fn forged_record(magic: &[u8], kind: u8, public: &[u8], sealed: &[u8]) -> Vec<u8> {
    let mut out = magic.to_vec();
    out.push(kind);
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&[0xEE; 16]);
    out.extend_from_slice(&[0x11; 12]);
    out.extend_from_slice(&(public.len() as u32).to_le_bytes());
    out.extend_from_slice(public);
    out.extend_from_slice(sealed);
    out
}

const VICTIM: &str = "victim";
const VICTIM_ID: &[u8] = b"victim-id";

fn ulong(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

/// What a session without login can write into SoftHSM: public data objects shaped like
/// records, under the victim's label and id. Returns how many were planted.
fn plant(session: &Session, genuine_public_record: &[u8], victim_pk: &[u8]) -> usize {
    let (attacker_pk, attacker_sk) = Ps::P65.keygen(&[0xA7; 32]);
    let common = |class: CK_OBJECT_CLASS| {
        vec![
            (CKA_CLASS, ulong(class)),
            (CKA_KEY_TYPE, ulong(CKK_ML_DSA)),
            (CKA_PARAMETER_SET, ulong(CKP_ML_DSA_65)),
            (CKA_LABEL, VICTIM.as_bytes().to_vec()),
            (CKA_ID, VICTIM_ID.to_vec()),
            (CKA_TOKEN, vec![1]),
        ]
    };
    let mut private_in_clear = common(CKO_PRIVATE_KEY);
    private_in_clear.extend([(CKA_SIGN, vec![1]), (CKA_VALUE, attacker_sk)]);
    let mut public_claim = common(CKO_PUBLIC_KEY);
    public_claim.extend([(CKA_VERIFY, vec![1]), (CKA_VALUE, attacker_pk.clone())]);
    // The victim's genuine public record with the attacker's public key in place of the victim's.
    let at = genuine_public_record
        .windows(victim_pk.len())
        .position(|w| w == victim_pk)
        .expect("the public key is in the clear in its record");
    let mut swapped = genuine_public_record.to_vec();
    swapped[at..at + victim_pk.len()].copy_from_slice(&attacker_pk);
    let values = [
        // The attack of the issue: a "public" record that is the victim's private key.
        forged_record(b"B4AE-KEY-2", 2, &serialize(&private_in_clear), &[0; 16]),
        forged_record(b"B4AE-KEY-1", 2, &serialize(&private_in_clear), &[]),
        // A private record whose seal is made up.
        forged_record(
            b"B4AE-KEY-2",
            1,
            &serialize(&common(CKO_PRIVATE_KEY)),
            &[0x55; 200],
        ),
        // Public keys under the victim's name.
        forged_record(b"B4AE-KEY-2", 2, &serialize(&public_claim), &[0; 16]),
        forged_record(b"B4AE-KEY-1", 2, &serialize(&public_claim), &[]),
        swapped,
    ];
    for value in &values {
        let template = [
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Application(RECORD_APPLICATION.to_vec()),
            Attribute::Label(VICTIM.as_bytes().to_vec()),
            Attribute::Value(value.clone()),
        ];
        ok(session.create_object(&template));
    }
    values.len()
}

fn victim_objects(session: &Session) -> Vec<ObjectHandle> {
    let mut found = ok(session.find_objects(&[Attribute::Label(VICTIM.as_bytes().to_vec())]));
    found.sort_by_key(ObjectHandle::handle);
    found
}

/// Every planted record's handle, as SoftHSM lists them (the ones whose value is not one of
/// the two genuine records).
fn planted_handles(f: &Forward, genuine: &[Vec<u8>]) -> Vec<ObjectHandle> {
    let direct = f.hsm_session(TOKENS[PLANT]);
    f.records(&direct)
        .into_iter()
        .filter(|r| !genuine.contains(&r.value))
        .map(|r| r.handle)
        .collect()
}

/// Checks, in a logged-in module session, that only the victim's own pair is presented and
/// that each planted handle is refused.
fn only_the_genuine_pair(session: &Session, victim_pk: &[u8], planted: &[ObjectHandle]) {
    assert_eq!(
        victim_objects(session).len(),
        2,
        "the victim's pair, nothing planted"
    );
    let (public, private) = find_pq_pair(session, VICTIM);
    assert_eq!(sign_and_check(session, Ps::P65, public, private), victim_pk);
    assert_eq!(
        ok(session.find_objects(&[Attribute::Class(ObjectClass::DATA)])),
        []
    );
    for handle in planted {
        let signed = session.sign(&pure_ml_dsa(), *handle, MESSAGE);
        assert_rv(signed, CKR_KEY_HANDLE_INVALID);
        let read = session.get_attributes(*handle, &[AttributeType::Value]);
        assert_rv(read, CKR_OBJECT_HANDLE_INVALID);
        let verified = session.verify(&pure_ml_dsa(), *handle, MESSAGE, &[0; 3309]);
        assert_rv(verified, CKR_KEY_HANDLE_INVALID);
    }
}

/// Issue "Custody that holds": a SoftHSM session with no login creates public records claiming
/// to be the victim's ML-DSA key (its label and id; the private key in the clear, a made-up
/// seal, the attacker's public key). Neither before nor after the login, in this process or a
/// new one, does the module present or use any of them.
#[test]
fn records_planted_without_the_pin_are_never_keys() {
    let name = test_name!();
    let f = fwd();
    let pk_file = f.dir.join("victim.pk");
    if is_child(name) {
        let victim_pk = std::fs::read(&pk_file).expect("the parent's victim key");
        let genuine: Vec<Vec<u8>> = serde_json::from_slice(
            &std::fs::read(f.dir.join("victim.records")).expect("genuine records"),
        )
        .expect("JSON");
        let session = ok(f.module.open_ro_session(f.slots[PLANT]));
        assert_eq!(
            victim_objects(&session),
            [],
            "a new process before the login"
        );
        ok(session.login(UserType::User, Some(&pin(HSM_PIN))));
        let planted = planted_handles(f, &genuine);
        only_the_genuine_pair(&session, &victim_pk, &planted);
        return;
    }
    let (victim_pk, genuine) = {
        let session = f.module_session(PLANT);
        let (mut public, mut private) = pq_templates(Ps::P65, VICTIM, false);
        public.push(Attribute::Id(VICTIM_ID.to_vec()));
        private.push(Attribute::Id(VICTIM_ID.to_vec()));
        let (public, private) =
            ok(session.generate_key_pair(&Mechanism::MlDsaKeyPairGen, &public, &private));
        let pk = sign_and_check(&session, Ps::P65, public, private);
        let direct = f.hsm_session(TOKENS[PLANT]);
        let genuine: Vec<Vec<u8>> = f.records(&direct).into_iter().map(|r| r.value).collect();
        assert_eq!(genuine.len(), 2);
        (pk, genuine)
    }; // every session closed: SoftHSM has no login in this process
    let public_record = genuine
        .iter()
        .find(|v| v[10] == 2)
        .expect("the public record");
    {
        let attacker = ok(f.hsm.open_rw_session(f.hsm_slot(TOKENS[PLANT])));
        let state = ok(attacker.get_session_info()).session_state();
        assert_eq!(format!("{state:?}"), "RwPublic", "no login");
        assert_eq!(plant(&attacker, public_record, &victim_pk), 6);
    }
    let planted = planted_handles(f, &genuine);
    assert_eq!(planted.len(), 6);
    {
        // This process authenticated the victim's public key while making it: before a login
        // that one is listed, nothing planted.
        let session = ok(f.module.open_ro_session(f.slots[PLANT]));
        let listed = victim_objects(&session);
        assert_eq!(listed.len(), 1, "the genuine public key only: {listed:?}");
        assert!(!planted.contains(&listed[0]));
        ok(session.login(UserType::User, Some(&pin(HSM_PIN))));
        only_the_genuine_pair(&session, &victim_pk, &planted);
    }
    std::fs::write(&pk_file, &victim_pk).expect("victim key");
    std::fs::write(
        f.dir.join("victim.records"),
        serde_json::to_vec(&genuine).expect("JSON"),
    )
    .expect("genuine records");
    f.child(name);
}

// ---------------------------------------------------------------------------------------------
// 4. Rotation

/// Each rotation generates a fresh random storage key in SoftHSM and destroys the old one:
/// the keys are unrelated (the same GCM input gives unrelated output), none can derive, and the
/// records sealed before no longer open under any key the HSM has.
#[test]
fn rotation_makes_unrelated_random_storage_keys_and_leaves_nothing_older() {
    let f = fwd();
    let (session, stk1) = stk_after_keygen(ROTATE, "rotate-key");
    let (public, private) = find_pq_pair(&session, "rotate-key");
    let pk = sign_and_check(&session, Ps::P65, public, private);
    drop(session);
    // SoftHSM renumbers private objects at each login: the key is looked up again.
    let _ = stk1;
    let under = |direct: &Session| {
        let keys = f.storage_keys(direct);
        let mut iv = [9u8; 12];
        ok(direct.encrypt(&gcm(&mut iv, b""), keys[0].1, &[0u8; 32]))
    };
    let (old_records, first) = {
        let direct = f.hsm_session(TOKENS[ROTATE]);
        (f.records(&direct), under(&direct))
    };
    let mut outputs = vec![first];
    let slot = ROTATE.to_string();
    for epoch in [2, 3] {
        let output = admin_with_user_pin(&["rotate-stk", "--slot", &slot], &f.conf, HSM_PIN);
        assert_success("b4ae-pkcs11 rotate-stk", &output);
        let direct = f.hsm_session(TOKENS[ROTATE]);
        let keys = f.storage_keys(&direct);
        let labels: Vec<&str> = keys.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(labels, [format!("B4AE-v2-STK-{epoch}")]);
        let stk = keys[0].1;
        assert!(!f.hsm_raw.attr_bool(&direct, stk, CKA_DERIVE));
        assert_eq!(
            f.hsm_raw.attr(&direct, stk, CKA_KEY_GEN_MECHANISM),
            CKM_AES_KEY_GEN.to_ne_bytes()
        );
        outputs.push(under(&direct));
        // The records sealed before the rotations open under no key SoftHSM has.
        for record in old_records.iter().filter(|r| r.kind() == 1) {
            let public_len = u32::from_le_bytes(record.value[43..47].try_into().unwrap()) as usize;
            let prefix = &record.value[..47 + public_len];
            let mut iv = record.value[31..43].to_vec();
            let opened = direct.decrypt(&gcm(&mut iv, prefix), stk, &record.value[prefix.len()..]);
            assert!(opened.is_err(), "an old record opens under epoch {epoch}");
        }
    }
    for (i, a) in outputs.iter().enumerate() {
        for b in &outputs[i + 1..] {
            assert_ne!(a[..16], b[..16], "two storage keys agree on a block");
        }
    }
    let session = f.module_session(ROTATE);
    let (public, private) = find_pq_pair(&session, "rotate-key");
    assert_eq!(sign_and_check(&session, Ps::P65, public, private), pk);
}

// ---------------------------------------------------------------------------------------------
// 5. PIN guessing on a pkcs11 slot (SoftHSM2 itself never locks)

const WRONG_PIN: &str = "9999";
const NEW_PIN: &str = "5678";
const STATE_VAR: &str = "B4AE_TEST_STATE_DIR";

fn pin_config(library: &Path, limit: u32) -> String {
    format!(
        "[[token]]\nlabel = \"Guess\"\nbackend = \"pkcs11\"\nlibrary = \"{}\"\ntoken_label = \"guess\"\n\
         max_pin_failures = {limit}\nstate_dir = \"{}\"\n",
        library.display(),
        std::env::var(STATE_VAR).unwrap_or_default()
    )
}

fn module_and_slot() -> (cryptoki::context::Pkcs11, cryptoki::slot::Slot) {
    let module = load_module();
    initialize(&module);
    let slot = ok(module.get_all_slots())[0];
    (module, slot)
}

fn flags_of(module: &cryptoki::context::Pkcs11, slot: cryptoki::slot::Slot) -> CK_FLAGS {
    let mut info = CK_TOKEN_INFO::default();
    let _ = module;
    assert_ck!(CKR_OK; C_GetTokenInfo(slot.into(), &mut info));
    info.flags
}

const COUNT_FLAGS: CK_FLAGS = CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY | CKF_USER_PIN_LOCKED;

/// Child 1: 20 wrong PINs against a limit of 3.
fn guess_child() {
    let (module, slot) = module_and_slot();
    let session = ok(module.open_ro_session(slot));
    let mut answers = Vec::new();
    let mut flags = Vec::new();
    for _ in 0..20 {
        answers.push(rv_of(session.login(UserType::User, Some(&pin(WRONG_PIN)))));
        flags.push(flags_of(&module, slot) & COUNT_FLAGS);
    }
    let mut expected = vec![CKR_PIN_INCORRECT; 3];
    expected.extend([CKR_PIN_LOCKED; 17]);
    assert_eq!(
        answers.iter().map(|rv| rv_name(*rv)).collect::<Vec<_>>(),
        expected.iter().map(|rv| rv_name(*rv)).collect::<Vec<_>>()
    );
    // SoftHSM sets CKF_USER_PIN_COUNT_LOW of its own after a wrong PIN; the module adds its
    // count's flags.
    let last_and_locked = CKF_USER_PIN_FINAL_TRY | CKF_USER_PIN_LOCKED;
    assert_eq!(
        [
            flags[0],
            flags[1] & last_and_locked,
            flags[2] & last_and_locked
        ],
        [
            CKF_USER_PIN_COUNT_LOW,
            CKF_USER_PIN_FINAL_TRY,
            CKF_USER_PIN_LOCKED
        ]
    );
    assert_rv(
        session.login(UserType::User, Some(&pin(HSM_PIN))),
        CKR_PIN_LOCKED,
    );
    // SoftHSM itself, asked directly, would still take the right PIN: the lock is the module's.
}

/// Child 2, a new process (configured with a higher limit): still locked; the SO's C_InitPIN
/// unlocks with a new PIN.
fn unlock_child() {
    let (module, slot) = module_and_slot();
    assert_ne!(flags_of(&module, slot) & CKF_USER_PIN_LOCKED, 0);
    let session = ok(module.open_rw_session(slot));
    assert_rv(
        session.login(UserType::User, Some(&pin(HSM_PIN))),
        CKR_PIN_LOCKED,
    );
    ok(session.login(UserType::So, Some(&pin(HSM_SO_PIN))));
    ok(session.init_pin(&pin(NEW_PIN)));
    ok(session.logout());
    assert_eq!(flags_of(&module, slot) & CKF_USER_PIN_LOCKED, 0);
    assert_rv(
        session.login(UserType::User, Some(&pin(HSM_PIN))),
        CKR_PIN_INCORRECT,
    );
    ok(session.login(UserType::User, Some(&pin(NEW_PIN))));
    assert_eq!(
        flags_of(&module, slot) & COUNT_FLAGS,
        0,
        "a good login clears the count"
    );
}

/// Child 3: a login with the right PIN, slowed down in the HSM, killed by the parent.
fn killed_login_child() {
    let (module, slot) = module_and_slot();
    let session = ok(module.open_ro_session(slot));
    eprintln!("READY");
    let _ = session.login(UserType::User, Some(&pin(NEW_PIN)));
    panic!("the parent should have killed this login");
}

/// Child 4: after the killed logins the count is still clear and the PIN works.
fn after_kills_child() {
    let (module, slot) = module_and_slot();
    assert_eq!(
        flags_of(&module, slot) & COUNT_FLAGS,
        0,
        "no kill was counted"
    );
    let session = ok(module.open_ro_session(slot));
    ok(session.login(UserType::User, Some(&pin(NEW_PIN))));
}

#[test]
fn twenty_wrong_pins_against_a_limit_of_three_lock_the_pin_and_kills_do_not_count() {
    let name = test_name!();
    match std::env::var("B4AE_TEST_STEP").as_deref() {
        Ok("guess") if is_child(name) => return guess_child(),
        Ok("unlock") if is_child(name) => return unlock_child(),
        Ok("killed") if is_child(name) => return killed_login_child(),
        Ok("after") if is_child(name) => return after_kills_child(),
        _ => {}
    }
    let softhsm = OwnSoftHsm::new("b4ae-guess-softhsm-", &["guess"]);
    let library = build_faulty_hsm(softhsm.dir.path());
    let state = softhsm.dir.path().join("state");
    let conf = softhsm.dir.path().join("b4ae.toml");
    let run = |step: &str, limit: u32, extra: &[(&str, &str)]| {
        std::env::set_var(STATE_VAR, &state);
        std::fs::write(&conf, pin_config(&library, limit)).expect("configuration");
        let mut envs = vec![
            (SOFTHSM_CONF_VAR, text(&softhsm.conf)),
            ("FAULTY_HSM_REAL", SOFTHSM_LIB),
            ("B4AE_TEST_STEP", step),
        ];
        envs.extend_from_slice(extra);
        run_child(name, &conf, &envs);
    };
    run("guess", 3, &[]);
    run("unlock", 10, &[]);
    // The counter file is the module's own, in a directory it made.
    let dir = state.join("b4ae-pkcs11-pins");
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| p.metadata().expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for file in std::fs::read_dir(&dir).expect("counter directory") {
        assert_eq!(mode(&file.expect("entry").path()), 0o600);
    }

    // Three logins with the right PIN, each killed while SoftHSM has it (limit 3).
    std::fs::write(&conf, pin_config(&library, 3)).expect("configuration");
    for _ in 0..3 {
        let mut child = Command::new(std::env::current_exe().expect("current_exe"))
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_VAR, name)
            .env(CONF_VAR, &conf)
            .env(SOFTHSM_CONF_VAR, &softhsm.conf)
            .env("FAULTY_HSM_REAL", SOFTHSM_LIB)
            .env("FAULTY_HSM_LOGIN_DELAY_MS", "4000")
            .env("B4AE_TEST_STEP", "killed")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("child");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
        assert!(
            lines.any(|l| l.is_ok_and(|l| l.contains("READY"))),
            "the child reached the login"
        );
        std::thread::sleep(Duration::from_millis(1000));
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        assert!(!status.success());
    }
    run("after", 3, &[]);
}

// ---------------------------------------------------------------------------------------------
// 6. Tokens of release 1

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("directory");
    for entry in std::fs::read_dir(from).expect("fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn vendor(mechanism: CK_MECHANISM_TYPE) -> Mechanism<'static> {
    let kind = MechanismType::new_vendor_defined(mechanism).expect("vendor mechanism");
    Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(kind, None))
}

fn release1_child() {
    let made_by_release1 = release1_fixture();
    let wanted: std::collections::BTreeMap<String, String> = serde_json::from_slice(
        &std::fs::read(made_by_release1.join("public_keys.json")).expect("json"),
    )
    .expect("JSON");
    let (module, slot) = module_and_slot();
    let hsm = cryptoki::context::Pkcs11::new(SOFTHSM_LIB).expect("SoftHSM");
    let _ = hsm.initialize(cryptoki::context::CInitializeArgs::new(
        cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
    ));
    for round in 0..2 {
        let session = ok(module.open_rw_session(slot));
        ok(session.login(UserType::User, Some(&pin(HSM_PIN))));
        for (label, pk_hex) in &wanted {
            let found = find_by_label(&session, label);
            assert_eq!(found.len(), 2, "{label}: both halves (round {round})");
            let class = |h| attr_ulong(&session, h, CKA_CLASS);
            let public = *found
                .iter()
                .find(|h| class(**h) == CKO_PUBLIC_KEY)
                .expect("public");
            let private = *found
                .iter()
                .find(|h| class(**h) == CKO_PRIVATE_KEY)
                .expect("private");
            let pk = attr_bytes(&session, public, CKA_VALUE);
            assert_eq!(hex::encode(&pk), *pk_hex, "{label}: the same public key");
            match label.as_str() {
                "r1-mldsa87" => assert_eq!(sign_and_check(&session, Ps::P87, public, private), pk),
                "r1-mldsa65" => assert_eq!(sign_and_check(&session, Ps::P65, public, private), pk),
                "r1-hybrid" => {
                    let signature = ok(session.sign(&vendor(CKM_B4AE_HYBRID), private, MESSAGE));
                    ok(session.verify(&vendor(CKM_B4AE_HYBRID), public, MESSAGE, &signature));
                }
                "r1-mlkem768" => {
                    let template = readable_shared_secret();
                    let (ciphertext, sent) =
                        ok(session.encapsulate_key(&Mechanism::MlKem, public, &template));
                    let received = ok(session.decapsulate_key(
                        &Mechanism::MlKem,
                        private,
                        &template,
                        &ciphertext,
                    ));
                    assert_eq!(
                        attr_bytes(&session, sent, CKA_VALUE),
                        attr_bytes(&session, received, CKA_VALUE),
                        "ML-KEM shared secrets"
                    );
                }
                other => panic!("unexpected fixture key {other}"),
            }
        }
        // SoftHSM directly (this process's login): every record is of this release, sealed
        // under a random storage key; the derived keys of release 1 are gone, its MIK (which
        // release 1 made non-destroyable) stays, unseen through the module.
        let hsm_slot = ok(hsm.get_slots_with_token())[0];
        let direct = ok(hsm.open_ro_session(hsm_slot));
        let records = ok(direct.find_objects(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Application(RECORD_APPLICATION.to_vec()),
        ]));
        assert_eq!(records.len(), 8, "two records per key");
        for record in records {
            let value = ok(direct.get_attributes(record, &[AttributeType::Value]));
            let Attribute::Value(value) = &value[0] else {
                panic!("CKA_VALUE")
            };
            assert_eq!(&value[..10], b"B4AE-KEY-2", "migrated record");
        }
        let secret = ok(direct.find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(true),
        ]));
        let mut labels: Vec<String> = secret
            .iter()
            .map(|k| {
                let label = ok(direct.get_attributes(*k, &[AttributeType::Label]));
                match &label[0] {
                    Attribute::Label(l) => String::from_utf8_lossy(l).into_owned(),
                    _ => panic!("CKA_LABEL"),
                }
            })
            .collect();
        labels.sort();
        assert_eq!(labels, ["B4AE-v1-MIK", "B4AE-v2-STK-1"], "round {round}");
        assert_eq!(find_by_label(&session, "B4AE-v1-MIK"), []);
        drop(direct);
        drop(session);
        ok(module.clone().finalize());
        initialize(&module);
    }
}

/// A SoftHSM token on which the previous release made four key pairs (tests/fixtures/
/// release1-softhsm): the first login migrates them all (same public keys, working private
/// keys, records of this release), retires release 1's derived keys, and a second login finds
/// everything as it is.
#[test]
fn tokens_of_release_1_are_migrated_at_the_first_login_with_no_key_lost() {
    let name = test_name!();
    if is_child(name) {
        return release1_child();
    }
    let made_by_release1 = release1_fixture();
    let dir = temp_dir("b4ae-release1-");
    let tokens = dir.path().join("tokens");
    for entry in std::fs::read_dir(&made_by_release1).expect("fixture") {
        let entry = entry.expect("entry");
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &tokens.join(entry.file_name()));
        }
    }
    let softhsm_conf = dir.path().join("softhsm2.conf");
    write_softhsm_conf(&softhsm_conf, &tokens);
    let conf = dir.path().join("b4ae.toml");
    let state: PathBuf = dir.path().join("state");
    std::fs::write(
        &conf,
        format!(
            "[[token]]\nlabel = \"Release 1\"\nbackend = \"pkcs11\"\nlibrary = \"{SOFTHSM_LIB}\"\n\
             token_label = \"release1\"\nstate_dir = \"{}\"\n",
            state.display()
        ),
    )
    .expect("configuration");
    run_child(name, &conf, &[(SOFTHSM_CONF_VAR, text(&softhsm_conf))]);
}

fn release1_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/release1-softhsm")
}

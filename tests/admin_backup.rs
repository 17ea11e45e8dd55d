//! Backup and restore of a pkcs11 token (issue "High availability and operations"):
//! `b4ae-pkcs11 backup` writes the token's key records and public objects to a file only a key
//! in the HSM opens; `restore` puts them back: onto a fresh token of the same key domain (a
//! copy of the first token's files taken before the keys were made, standing for an HSM that
//! the vendor's own cloning gave the storage and backup keys), and onto the same token after a
//! key was destroyed. Restored keys sign and decapsulate again with byte-identical public
//! keys; an altered, truncated or foreign backup is refused and changes nothing; a token
//! without the backup key refuses it.

#[macro_use]
mod common;
mod forward_common;

use common::*;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki_sys::*;
use forward_common::*;
use std::path::{Path, PathBuf};

const LABEL: &str = "backed-up";
/// Which step a child runs, and where it keeps what it saw.
const STEP_VAR: &str = "B4AE_BACKUP_STEP";
const OUT_VAR: &str = "B4AE_BACKUP_OUT";

fn config(dir: &Path, softhsm: &OwnSoftHsm, name: &str) -> PathBuf {
    let conf = dir.join(format!("{name}.toml"));
    std::fs::write(
        &conf,
        format!(
            "[[token]]\nlabel = \"B\"\nbackend = \"pkcs11\"\nlibrary = \"{SOFTHSM_LIB}\"\n\
             token_label = \"{LABEL}\"\nstate_dir = \"{}\"\n\n[audit]\npath = \"{}\"\n",
            softhsm.dir.path().join("state").display(),
            dir.join("audit.jsonl").display()
        ),
    )
    .expect("configuration");
    conf
}

fn find(
    session: &Session,
    class: ObjectClass,
    key_type: KeyType,
    label: &str,
) -> Vec<ObjectHandle> {
    let template = [
        Attribute::Class(class),
        Attribute::KeyType(key_type),
        Attribute::Label(label.into()),
    ];
    ok(session.find_objects(&template))
}

fn one(session: &Session, class: ObjectClass, key_type: KeyType, label: &str) -> ObjectHandle {
    let found = find(session, class, key_type, label);
    assert_eq!(found.len(), 1, "{label} {class:?}");
    found[0]
}

/// ML-KEM-768: a secret encapsulated to the public key comes out of the private one.
fn kem_round_trip(session: &Session) {
    let public = one(session, ObjectClass::PUBLIC_KEY, KeyType::ML_KEM, "kem");
    let private = one(session, ObjectClass::PRIVATE_KEY, KeyType::ML_KEM, "kem");
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(false),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
    ];
    let (ciphertext, sent) = ok(session.encapsulate_key(&Mechanism::MlKem, public, &template));
    let received = ok(session.decapsulate_key(&Mechanism::MlKem, private, &template, &ciphertext));
    assert_eq!(
        attr_bytes(session, sent, CKA_VALUE),
        attr_bytes(session, received, CKA_VALUE)
    );
}

/// The public values of the token's keys, as the child saw them (hex, one per line).
fn public_values(session: &Session) -> String {
    let pq = one(session, ObjectClass::PUBLIC_KEY, KeyType::ML_DSA, "pq");
    let kem = one(session, ObjectClass::PUBLIC_KEY, KeyType::ML_KEM, "kem");
    let ec = one(session, ObjectClass::PUBLIC_KEY, KeyType::EC, "ec");
    [
        attr_bytes(session, pq, CKA_VALUE),
        attr_bytes(session, kem, CKA_VALUE),
        attr_bytes(session, ec, CKA_EC_POINT),
    ]
    .map(hex::encode)
    .join("\n")
}

#[test]
fn backup_and_restore_child() {
    if !is_child(test_name!()) {
        return;
    }
    let step = std::env::var(STEP_VAR).expect("step");
    let out = PathBuf::from(std::env::var(OUT_VAR).expect("out"));
    let module = load_module();
    initialize(&module);
    let slot = ok(module.get_slots_with_token())[0];
    let session = ok(module.open_rw_session(slot));
    ok(session.login(UserType::User, Some(&pin(HSM_PIN))));
    match step.as_str() {
        // The first key: the token gets its storage key.
        "seed" => {
            pq_keypair(&session, Ps::P44, "seed", false);
        }
        "keys" => {
            pq_keypair(&session, Ps::P65, "pq", false);
            let public = [
                Attribute::Token(true),
                Attribute::ParameterSet(cryptoki::object::MlKemParameterSetType::ML_KEM_768.into()),
                Attribute::Label("kem".into()),
            ];
            let private = [
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Label("kem".into()),
            ];
            ok(session.generate_key_pair(&Mechanism::MlKemKeyPairGen, &public, &private));
            ec_keypair(&session, "ec");
            std::fs::write(&out, public_values(&session)).expect("public values");
        }
        "use" => {
            let (public, private) = find_pq_pair(&session, "pq");
            sign_and_check(&session, Ps::P65, public, private);
            kem_round_trip(&session);
            std::fs::write(&out, public_values(&session)).expect("public values");
        }
        "lose-pq" => {
            let private = one(&session, ObjectClass::PRIVATE_KEY, KeyType::ML_DSA, "pq");
            ok(session.destroy_object(private));
        }
        "pq-gone" => {
            let found = find(&session, ObjectClass::PRIVATE_KEY, KeyType::ML_DSA, "pq");
            assert!(found.is_empty(), "{found:?}");
        }
        other => panic!("step {other}"),
    }
    ok(session.logout());
}

/// Runs `step` in a child on the token `conf` names.
fn child(step: &str, conf: &Path, softhsm: &OwnSoftHsm, out: &Path) {
    run_child(
        "backup_and_restore_child",
        conf,
        &[
            (STEP_VAR, step),
            (OUT_VAR, text(out)),
            (SOFTHSM_CONF_VAR, text(&softhsm.conf)),
        ],
    );
}

/// `b4ae-pkcs11 <command> --json` on the token `conf` names.
fn admin_json(
    args: &[&str],
    conf: &Path,
    softhsm: &OwnSoftHsm,
) -> (bool, serde_json::Value, String) {
    let output = admin_with(
        args,
        conf,
        &[
            ("B4AE_USER_PIN", HSM_PIN),
            (SOFTHSM_CONF_VAR, text(&softhsm.conf)),
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let doc = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    (output.status.success(), doc, stderr)
}

/// A copy of `from`'s token files as a second SoftHSM2 instance.
fn copy_of(from: &OwnSoftHsm, prefix: &str) -> OwnSoftHsm {
    let copy = OwnSoftHsm::new(prefix, &[]);
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.tokens.display()))
        .arg(&copy.tokens)
        .output()
        .expect("cp");
    assert_success("copying the token's files", &copied);
    copy
}

#[test]
fn a_backup_restores_onto_a_fresh_token_of_the_domain_and_refuses_tampering() {
    if is_child(test_name!()) {
        return;
    }
    let dir = temp_dir("b4ae-backup-");
    let d = dir.path();
    let a = OwnSoftHsm::new("b4ae-backup-a-", &[LABEL]);
    let conf_a = config(d, &a, "a");
    let seen_a = d.join("public-a");
    child("seed", &conf_a, &a, &seen_a);
    // The first backup makes the backup key; a copy of the token now is a fresh token of the
    // same key domain (storage and backup keys, none of the keys below).
    let (done, first, why) = admin_json(
        &["backup", "--json", "--file", text(&d.join("seed.bak"))],
        &conf_a,
        &a,
    );
    assert!(done, "{why}");
    assert_eq!(first["records"], 2, "{first}");
    let b = copy_of(&a, "b4ae-backup-b-");
    let conf_b = config(d, &b, "b");

    child("keys", &conf_a, &a, &seen_a);
    let backup = d.join("full.bak");
    let (done, made, why) = admin_json(&["backup", "--json", "--file", text(&backup)], &conf_a, &a);
    assert!(done, "{why}");
    println!("backup: {made}");
    assert_eq!(made["records"], 6, "seed, pq and kem pairs: {made}");
    assert_eq!(made["objects"], 1, "the EC public key: {made}");
    let bytes = std::fs::read(&backup).expect("backup file");
    let mode = std::fs::metadata(&backup).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let publics = std::fs::read_to_string(&seen_a).unwrap();
    let pq_public = hex::decode(publics.lines().next().unwrap()).unwrap();
    assert!(
        !bytes.windows(pq_public.len()).any(|w| w == pq_public),
        "the backup is sealed whole: not even public keys in clear"
    );

    // Altered anywhere, truncated, or not a backup: refused, nothing written.
    let mut refusals = Vec::new();
    for (what, at) in [
        ("ciphertext", bytes.len() / 2),
        ("IV", 35),
        ("tag", bytes.len() - 1),
    ] {
        let mut altered = bytes.clone();
        altered[at] ^= 0x01;
        refusals.push((what, altered));
    }
    refusals.push(("truncated", bytes[..bytes.len() - 40].to_vec()));
    refusals.push((
        "not a backup",
        b"B4AE-BACKUP-0 and some more bytes, none sealed".to_vec(),
    ));
    for (what, altered) in refusals {
        let path = d.join("altered.bak");
        std::fs::write(&path, altered).unwrap();
        let (done, _, why) = admin_json(&["restore", "--file", text(&path)], &conf_b, &b);
        println!(
            "restore of a backup with its {what} altered: refused: {}",
            why.trim()
        );
        assert!(!done, "{what}: restored");
        assert!(
            why.contains("altered") || why.contains("not a b4ae-pkcs11 backup"),
            "{what}: {why}"
        );
    }

    // The fresh token of the domain: everything comes back, the seed pair is already there.
    let (done, restored, why) =
        admin_json(&["restore", "--json", "--file", text(&backup)], &conf_b, &b);
    assert!(done, "{why}");
    println!("restore onto a fresh token: {restored}");
    assert_eq!(restored["records"], 4, "{restored}");
    assert_eq!(restored["objects"], 1, "{restored}");
    assert_eq!(restored["already_present"], 2, "{restored}");
    let seen_b = d.join("public-b");
    child("use", &conf_b, &b, &seen_b);
    assert_eq!(
        std::fs::read_to_string(&seen_b).unwrap(),
        publics,
        "byte-identical public keys"
    );
    // Again: nothing new.
    let (done, again, why) =
        admin_json(&["restore", "--json", "--file", text(&backup)], &conf_b, &b);
    assert!(done, "{why}");
    assert_eq!(
        (again["records"].clone(), again["already_present"].clone()),
        (0.into(), 7.into())
    );

    // The same token after a key was destroyed.
    child("lose-pq", &conf_a, &a, &seen_a);
    child("pq-gone", &conf_a, &a, &seen_a);
    let (done, back, why) =
        admin_json(&["restore", "--json", "--file", text(&backup)], &conf_a, &a);
    assert!(done, "{why}");
    assert_eq!(back["records"], 1, "{back}");
    child("use", &conf_a, &a, &seen_a);

    // A token that never had the backup key.
    let c = OwnSoftHsm::new("b4ae-backup-c-", &[LABEL]);
    let conf_c = config(d, &c, "c");
    let (done, _, why) = admin_json(&["restore", "--file", text(&backup)], &conf_c, &c);
    println!("restore onto a foreign token: refused: {}", why.trim());
    assert!(!done);
    assert!(why.contains("does not hold the backup key"), "{why}");

    let trail = std::fs::read_to_string(d.join("audit.jsonl")).unwrap();
    for event in ["\"backup\"", "\"restore\"", "\"restore_refused\""] {
        assert!(trail.contains(event), "{event} not audited");
    }
    // (The PIN's digits may well occur inside a hash: no JSON value may be the PIN.)
    assert!(!trail.contains(&format!("\"{HSM_PIN}\"")));
}

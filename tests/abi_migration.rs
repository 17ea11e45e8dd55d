//! A token of the earlier store format is not read by the module, and `b4ae-pkcs11 migrate`
//! copies it into a store of this release: objects, label, serial and both PINs kept, the old
//! file erased.

#[macro_use]
mod common;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use b4ae_pkcs11::token::attributes::Attributes;
use common::*;

use cryptoki_sys::*;
use std::path::Path;
use std::process::{Command, Stdio};

/// The earlier release's schema, verbatim.
const V1_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS pins (
    role INTEGER PRIMARY KEY, salt BLOB NOT NULL, memory_kib INTEGER NOT NULL,
    passes INTEGER NOT NULL, wrapped BLOB NOT NULL, failures INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS objects (
    id INTEGER PRIMARY KEY AUTOINCREMENT, private INTEGER NOT NULL, version INTEGER NOT NULL,
    public BLOB NOT NULL, sealed BLOB);
";
const UUID: [u8; 16] = [7; 16];
const TOKEN_KEY: [u8; 32] = [9; 32];
const SERIAL: &[u8] = b"00112233AABBCCDD";

fn seal(key: &[u8], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new_from_slice(key).unwrap();
    let nonce = [3u8; 12];
    let mut out = nonce.to_vec();
    let payload = Payload {
        msg: plaintext,
        aad,
    };
    out.extend(cipher.encrypt(Nonce::from_slice(&nonce), payload).unwrap());
    out
}

/// Argon2id at the cost of `pin_kdf = "test-only-fast"` (256 KiB, one pass).
fn pin_key(pin: &str, salt: &[u8]) -> [u8; 32] {
    let params = argon2::Params::new(256, 1, 1, Some(32)).unwrap();
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = [0u8; 32];
    argon
        .hash_password_into(pin.as_bytes(), salt, &mut key)
        .unwrap();
    key
}

/// Writes a token as the earlier release did: one private object sealed whole, one public
/// object in the clear.
fn write_v1_token(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
    let db = rusqlite::Connection::open(path.join("token.sqlite")).unwrap();
    db.pragma_update(None, "journal_mode", "WAL").unwrap();
    db.execute_batch(V1_SCHEMA).unwrap();
    let mut label = [b' '; 32];
    label[..6].copy_from_slice(b"legacy");
    for (name, value) in [
        ("uuid", &UUID[..]),
        ("label", &label[..]),
        ("serial", SERIAL),
    ] {
        db.execute(
            "INSERT INTO meta VALUES (?1, ?2)",
            rusqlite::params![name, value],
        )
        .unwrap();
    }
    for (role, pin) in [(0u8, SO_PIN), (1, USER_PIN)] {
        let salt = [role + 1; 16];
        let mut aad = b"b4ae-pkcs11/pin/v1".to_vec();
        aad.extend_from_slice(&UUID);
        aad.push(role);
        let wrapped = seal(&pin_key(pin, &salt), &TOKEN_KEY, &aad);
        db.execute(
            "INSERT INTO pins VALUES (?1, ?2, 256, 1, ?3, 0)",
            rusqlite::params![role, &salt[..], wrapped],
        )
        .unwrap();
    }
    let object = |label: &str, value: &[u8], private: bool| {
        let mut attrs = Attributes::new();
        attrs.set_ulong(CKA_CLASS, CKO_DATA);
        attrs.set_bool(CKA_TOKEN, true);
        attrs.set_bool(CKA_PRIVATE, private);
        attrs.set(CKA_LABEL, label.as_bytes().to_vec());
        attrs.set(CKA_VALUE, value.to_vec());
        attrs.set(CKA_UNIQUE_ID, format!("{label:0>32}").into_bytes());
        attrs
    };
    db.execute(
        "INSERT INTO objects (private, version, public) VALUES (1, 1, x'')",
        [],
    )
    .unwrap();
    let id = db.last_insert_rowid();
    let mut aad = b"b4ae-pkcs11/object/v1".to_vec();
    aad.extend_from_slice(&UUID);
    aad.extend_from_slice(&id.to_le_bytes());
    let sealed = seal(
        &TOKEN_KEY,
        &object("old-private", b"secret value", true).serialize(),
        &aad,
    );
    db.execute(
        "UPDATE objects SET sealed = ?1 WHERE id = ?2",
        rusqlite::params![sealed, id],
    )
    .unwrap();
    db.execute(
        "INSERT INTO objects (private, version, public) VALUES (0, 1, ?1)",
        [object("old-public", b"public value", false)
            .serialize()
            .to_vec()],
    )
    .unwrap();
}

#[test]
fn a_token_of_the_earlier_format_is_migrated_by_the_admin_tool() {
    let name = test_name!();
    if is_child(name) {
        let pkcs11 = load_module();
        initialize(&pkcs11);
        let slot = ok(pkcs11.get_all_slots())[0];
        let phase = std::env::var("B4AE_TEST_PHASE").unwrap();
        if phase == "before" {
            assert_token_flags(slot, 0, CKF_TOKEN_INITIALIZED);
            return;
        }
        let info = token_info(slot);
        assert_eq!(assert_padded_text("label", &info.label), "legacy");
        assert_eq!(&info.serialNumber[..], SERIAL);
        let session = user_session(&pkcs11, slot);
        let private = find_by_label(&session, "old-private");
        assert_eq!(private.len(), 1);
        assert_eq!(attr_bytes(&session, private[0], CKA_VALUE), b"secret value");
        let public = find_by_label(&session, "old-public");
        assert_eq!(attr_bytes(&session, public[0], CKA_VALUE), b"public value");
        ok(session.logout());
        ok(session.login(cryptoki::session::UserType::So, Some(&pin(SO_PIN))));
        return;
    }
    let config = TestConfig::new(1, None);
    let token = config.dir().join("token0");
    write_v1_token(&token);
    run_child(name, &config.path, &[("B4AE_TEST_PHASE", "before")]);

    let migrate = |so: &str, user: &str| {
        Command::new(env!("CARGO_BIN_EXE_b4ae-pkcs11"))
            .args(["migrate", "--slot", "0"])
            .env(CONF_VAR, &config.path)
            .env("B4AE_SO_PIN", so)
            .env("B4AE_USER_PIN", user)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let wrong = migrate(SO_PIN, "not-the-user-pin");
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong user PIN"));
    assert!(
        token.join("token.sqlite").exists(),
        "the old file is kept on failure"
    );
    assert!(!store_file(&token).exists());

    let done = migrate(SO_PIN, USER_PIN);
    assert!(done.status.success(), "{done:?}");
    assert!(String::from_utf8_lossy(&done.stdout).contains("2 object(s) migrated"));
    for suffix in ["", "-wal", "-shm"] {
        assert!(!token.join(format!("token.sqlite{suffix}")).exists());
    }
    run_child(name, &config.path, &[("B4AE_TEST_PHASE", "after")]);
    assert!(!migrate(SO_PIN, USER_PIN).status.success(), "only once");
}

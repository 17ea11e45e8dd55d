//! Issue #11: an attacker who can write the embedded token's SQLite file. Each test replays one
//! attack of the issue through the built module and checks that it is refused; the file is
//! edited with SQLite directly, as the attacker would.

#[macro_use]
mod common;

use b4ae_pkcs11::token::attributes::Attributes;
use common::*;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki_sys::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const PHASE_VAR: &str = "B4AE_TEST_PHASE";

/// The attacker's handle on a token's file.
fn attacker(store: &Path) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(store).expect("opening the store as the attacker");
    db.busy_timeout(Duration::from_secs(30))
        .expect("busy timeout");
    db
}

/// The store of a fixture token. An earlier release kept it directly in the configured
/// directory: looked for there too, so these tests can be run against an older module
/// (`B4AE_PKCS11_MODULE`) to see each attack succeed on it.
fn fixture_store(index: usize) -> PathBuf {
    let store = token_store(&fixture().dir, index);
    let earlier = fixture()
        .dir
        .join(format!("token{index}"))
        .join("token.sqlite");
    if !store.exists() && earlier.exists() {
        return earlier;
    }
    store
}

/// Whether any of the store's files (database, WAL, shared memory) holds `needle`.
fn files_hold(store: &Path, needle: &[u8]) -> bool {
    ["", "-wal", "-shm"].iter().any(|suffix| {
        let mut name = store.as_os_str().to_owned();
        name.push(suffix);
        std::fs::read(PathBuf::from(name))
            .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            .unwrap_or(false)
    })
}

fn aes_key_template(label: &str, value: &[u8], sensitive: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(sensitive),
        Attribute::Extractable(true),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Label(label.into()),
        Attribute::Value(value.to_vec()),
    ]
}

/// Inserts a row as the attacker likes it. The table is first rebuilt without its NOT NULL
/// constraints: whoever writes the file writes its schema too.
fn plant(db: &rusqlite::Connection, private: i64, public: &[u8], sealed: Option<&[u8]>) {
    db.execute_batch(
        "CREATE TABLE loose AS SELECT * FROM objects; DROP TABLE objects;
         CREATE TABLE objects (id INTEGER PRIMARY KEY AUTOINCREMENT, private INTEGER,
                               version INTEGER, public BLOB, sealed BLOB);
         INSERT INTO objects SELECT * FROM loose; DROP TABLE loose;",
    )
    .expect("rebuilding the table");
    db.execute(
        "INSERT INTO objects (private, version, public, sealed) VALUES (?1, 1, ?2, ?3)",
        rusqlite::params![private, public, sealed],
    )
    .expect("planting a row");
}

fn object_ids(db: &rusqlite::Connection) -> Vec<i64> {
    let mut stmt = db.prepare("SELECT id FROM objects ORDER BY id").unwrap();
    let ids = stmt.query_map([], |r| r.get(0)).unwrap();
    ids.map(Result::unwrap).collect()
}

/// A row exactly as stored, to be copied back later.
type RowCopy = (i64, i64, Vec<u8>, Vec<u8>);

fn copy_row(db: &rusqlite::Connection, id: i64) -> RowCopy {
    db.query_row(
        "SELECT private, version, public, sealed FROM objects WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .expect("reading the row")
}

fn restore_row(db: &rusqlite::Connection, id: i64, row: &RowCopy) {
    db.execute(
        "UPDATE objects SET private = ?1, version = ?2, public = ?3, sealed = ?4 WHERE id = ?5",
        rusqlite::params![row.0, row.1, row.2, row.3, id],
    )
    .expect("copying the row back");
}

fn relogin(session: &Session) {
    ok(session.logout());
    ok(session.login(UserType::User, Some(&pin(USER_PIN))));
}

fn gcm(iv: &mut [u8; 12]) -> Mechanism<'_> {
    Mechanism::AesGcm(cryptoki::mechanism::aead::GcmParams::new(iv, &[], 128.into()).unwrap())
}

/// The planted key: the victim's key row deleted, and a row with private = 0, no seal
/// and a known CKA_VALUE inserted under the victim's label.
#[test]
fn a_planted_key_row_is_never_found_nor_used() {
    const SLOT: usize = 0;
    let f = fixture();
    let slot = f.ready_slot(SLOT);
    let session = f.user_session(slot);
    let victim = ok(session.create_object(&aes_key_template("victim", &[0x11; 32], true)));
    let mut iv = [0u8; 12];
    ok(session.encrypt(&gcm(&mut iv), victim, b"before"));

    let known = [0x42u8; 32];
    let mut planted = Attributes::new();
    planted.set_ulong(CKA_CLASS, CKO_SECRET_KEY);
    planted.set_ulong(CKA_KEY_TYPE, CKK_AES);
    planted.set_bool(CKA_TOKEN, true);
    planted.set_bool(CKA_PRIVATE, false);
    planted.set_bool(CKA_ENCRYPT, true);
    planted.set_bool(CKA_SENSITIVE, false);
    planted.set_bool(CKA_EXTRACTABLE, true);
    planted.set(CKA_LABEL, b"victim".to_vec());
    planted.set(CKA_VALUE, known.to_vec());
    let db = attacker(&fixture_store(SLOT));
    db.execute("DELETE FROM objects", []).unwrap();
    plant(&db, 0, &planted.serialize(), None);
    plant(&db, 0, &planted.serialize(), Some(&[0u8; 60]));

    let public = ok(f.pkcs11.open_ro_session(slot));
    assert!(
        find_by_label(&public, "victim").is_empty(),
        "a key in the clear is never shown, even before login"
    );
    relogin(&session);
    assert!(
        find_by_label(&session, "victim").is_empty(),
        "rows that were not sealed by the module are never found"
    );
    let found = ok(session.find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)]));
    assert!(found.is_empty(), "no secret key at all: {found:?}");
}

/// The first replay: a key's row copied back after C_SetAttributeValue(SENSITIVE=TRUE)
/// must not make its value readable again.
#[test]
fn a_row_copied_back_after_it_became_sensitive_is_refused() {
    const SLOT: usize = 1;
    let f = fixture();
    let slot = f.ready_slot(SLOT);
    let session = f.user_session(slot);
    let key = ok(session.create_object(&aes_key_template("replayed", &[0x33; 32], false)));
    assert_eq!(attr_bytes(&session, key, CKA_VALUE), vec![0x33; 32]);
    let db = attacker(&fixture_store(SLOT));
    let id = *object_ids(&db).last().expect("the key's row");
    let old = copy_row(&db, id);

    ok(session.update_attributes(key, &[Attribute::Sensitive(true)]));
    restore_row(&db, id, &old);

    relogin(&session);
    for key in find_by_label(&session, "replayed") {
        assert_sensitive(&session, key, CKA_VALUE);
    }
    let fresh = ok(f.pkcs11.open_rw_session(slot));
    for key in find_by_label(&fresh, "replayed") {
        assert_sensitive(&fresh, key, CKA_VALUE);
    }
}

/// The second replay: the old PIN record copied back after C_SetPIN must not let the
/// old PIN log in.
#[test]
fn a_pin_record_copied_back_after_set_pin_is_refused() {
    const SLOT: usize = 2;
    const NEW_PIN: &str = "user-pin-2222";
    let f = fixture();
    let slot = f.ready_slot(SLOT);
    let db = attacker(&fixture_store(SLOT));
    let old: Vec<rusqlite::types::Value> = db
        .query_row("SELECT * FROM pins WHERE role = 1", [], |r| {
            (0..r.as_ref().column_count())
                .map(|i| r.get(i))
                .collect::<Result<_, _>>()
        })
        .expect("the user's PIN row");
    let session = f.user_session(slot);
    ok(session.set_pin(&pin(USER_PIN), &pin(NEW_PIN)));
    ok(session.logout());

    let marks = vec!["?"; old.len()].join(", ");
    db.execute(
        &format!("INSERT OR REPLACE INTO pins VALUES ({marks})"),
        rusqlite::params_from_iter(old.iter()),
    )
    .expect("copying the old PIN row back");
    let rw = open_session(slot, RW).unwrap();
    assert_ne!(login(rw, CKU_USER, USER_PIN), CKR_OK, "the old PIN");
    assert_rv(close_session(rw), CKR_OK);
}

/// The lockout bypass: the limit comes from the token, not from whichever
/// configuration opens it.
#[test]
fn the_failure_limit_and_minimum_length_belong_to_the_token() {
    let name = test_name!();
    if !is_child(name) {
        let config = TestConfig::new(1, Some(3));
        run_child(name, &config.path, &[(PHASE_VAR, "lock")]);
        std::fs::write(&config.path, config_toml(config.dir(), 1, Some(10))).unwrap();
        run_child(name, &config.path, &[(PHASE_VAR, "check")]);
        return;
    }
    let pkcs11 = load_module();
    initialize(&pkcs11);
    let slot = ok(pkcs11.get_all_slots())[0];
    if std::env::var(PHASE_VAR).as_deref() == Ok("lock") {
        assert_rv(
            pkcs11.init_token(slot, &pin("7-chars"), "short"),
            CKR_PIN_LEN_RANGE,
        );
        init_token(&pkcs11, slot, "limit-3");
        assert_eq!(token_info(slot).ulMinPinLen, 8);
        let rw = open_session(slot, RW).unwrap();
        for bad in ["bad-pin-1", "bad-pin-2", "bad-pin-3"] {
            assert_rv_in(
                login(rw, CKU_USER, bad),
                &[CKR_PIN_INCORRECT, CKR_PIN_LOCKED],
            );
        }
        assert_rv(login(rw, CKU_USER, USER_PIN), CKR_PIN_LOCKED);
        return;
    }
    assert_token_flags(slot, CKF_USER_PIN_LOCKED, 0);
    assert_eq!(token_info(slot).ulMinPinLen, 8);
    let rw = open_session(slot, RW).unwrap();
    for _ in 0..5 {
        assert_rv(login(rw, CKU_USER, USER_PIN), CKR_PIN_LOCKED);
    }
}

/// The issue's `update pins set failures=0`: clearing the count in the file does not give the
/// PIN its tries back (the count at the last success is bound into the wrap).
#[test]
fn clearing_the_failure_count_in_the_file_does_not_unlock() {
    const SLOT: usize = 3;
    let f = fixture();
    let slot = f.ready_slot(SLOT);
    let rw = open_session(slot, RW).unwrap();
    let limit = 10;
    for n in 0..limit {
        let rv = login(rw, CKU_USER, &format!("bad-pin-{n}"));
        assert_rv_in(rv, &[CKR_PIN_INCORRECT, CKR_PIN_LOCKED]);
    }
    assert_rv(login(rw, CKU_USER, USER_PIN), CKR_PIN_LOCKED);
    let db = attacker(&fixture_store(SLOT));
    // The statement, on the earlier schema; on this one, its equivalent.
    let cleared = db
        .execute("UPDATE pins SET failures = 0 WHERE role = 1", [])
        .or_else(|_| db.execute("UPDATE pins SET ok_tries = tries WHERE role = 1", []));
    assert_eq!(cleared.expect("clearing the count"), 1);
    assert_ne!(
        login(rw, CKU_USER, USER_PIN),
        CKR_OK,
        "the PIN was locked and its count cleared outside the module"
    );
    db.execute("UPDATE pins SET tries = ok_tries - 1 WHERE role = 1", [])
        .unwrap();
    assert_rv(login(rw, CKU_USER, USER_PIN), CKR_PIN_LOCKED);
    assert_token_flags(slot, CKF_USER_PIN_LOCKED, 0);
    assert_rv(close_session(rw), CKR_OK);
}

/// The "not erased": after C_DestroyObject, C_SetPIN and C_InitToken return, the old
/// sealed records and PIN wraps are in none of the store's files.
#[test]
fn erased_records_are_gone_from_the_files_when_the_call_returns() {
    const SLOT: usize = 4;
    let f = fixture();
    let slot = f.ready_slot(SLOT);
    let store = fixture_store(SLOT);
    let db = attacker(&store);
    let session = f.user_session(slot);
    let doomed = ok(session.create_object(&data_template("doomed", &[0x5a; 300], true, true)));
    let kept = ok(session.create_object(&data_template("kept", &[0x6b; 300], true, true)));
    let ids = object_ids(&db);
    let (doomed_row, kept_row) = (copy_row(&db, ids[0]), copy_row(&db, ids[1]));
    assert!(files_hold(&store, &doomed_row.3));

    ok(session.destroy_object(doomed));
    assert!(
        !files_hold(&store, &doomed_row.3),
        "the destroyed object's sealed record is still in the files"
    );
    let _ = kept;

    let wrap = |role: i64| -> Vec<u8> {
        db.query_row("SELECT wrapped FROM pins WHERE role = ?1", [role], |r| {
            r.get(0)
        })
        .unwrap()
    };
    let user_wrap = wrap(1);
    ok(session.set_pin(&pin(USER_PIN), &pin("user-pin-3333")));
    assert!(
        !files_hold(&store, &user_wrap),
        "the old user PIN's wrap is still in the files"
    );
    ok(session.set_pin(&pin("user-pin-3333"), &pin(USER_PIN)));
    drop(session);

    let (so_wrap, user_wrap) = (wrap(0), wrap(1));
    ok(f.pkcs11.init_token(slot, &pin(SO_PIN), "reborn"));
    for (what, old) in [
        ("SO PIN wrap", &so_wrap),
        ("user PIN wrap", &user_wrap),
        ("object record", &kept_row.3),
    ] {
        assert!(
            !files_hold(&store, old),
            "the old {what} is still in the files after C_InitToken"
        );
    }
}

/// The absurd KDF costs: refused for that PIN, with the host process alive and quick.
#[test]
fn absurd_kdf_costs_in_the_file_are_refused_without_harm() {
    const SLOT: usize = 5;
    let f = fixture();
    let slot = f.ready_slot(SLOT);
    let db = attacker(&fixture_store(SLOT));
    let rw = open_session(slot, RW).unwrap();
    for (column, value) in [
        ("memory_kib", 4_294_967_295i64),
        ("passes", 4_294_967_295),
        ("memory_kib", -1),
    ] {
        db.execute(
            &format!("UPDATE pins SET {column} = ?1 WHERE role = 1"),
            [value],
        )
        .unwrap();
        let started = std::time::Instant::now();
        assert_rv(login(rw, CKU_USER, USER_PIN), CKR_DEVICE_ERROR);
        assert!(started.elapsed() < Duration::from_secs(5), "{column}");
    }
    assert_rv(login(rw, CKU_SO, SO_PIN), CKR_OK);
    assert_rv(close_session(rw), CKR_OK);
}

/// The malformed row: skipped and logged, never fatal for the token.
#[test]
fn a_malformed_row_is_skipped_and_the_token_works() {
    const SLOT: usize = 6;
    let f = fixture();
    let slot = f.ready_slot(SLOT);
    let session = f.user_session(slot);
    ok(session.create_object(&data_template("public-one", b"p", true, false)));
    ok(session.create_object(&data_template("private-one", b"q", true, true)));
    let db = attacker(&fixture_store(SLOT));
    plant(&db, 0, &[1, 2], None);
    db.execute(
        "INSERT INTO objects (private, version, public, sealed) VALUES ('x', 'y', 'z', 1)",
        [],
    )
    .unwrap();
    // A table rebuilt without its primary key holds an id that is not even a number.
    db.execute_batch(
        "CREATE TABLE loose AS SELECT * FROM objects; DROP TABLE objects;
         ALTER TABLE loose RENAME TO objects;
         INSERT INTO objects (id, private, version, public, sealed) VALUES ('no', 0, 1, x'', x'');",
    )
    .unwrap();

    let public = ok(f.pkcs11.open_ro_session(slot));
    assert_eq!(find_by_label(&public, "public-one").len(), 1);
    relogin(&session);
    assert_eq!(find_by_label(&session, "public-one").len(), 1);
    assert_eq!(find_by_label(&session, "private-one").len(), 1);
}

/// A login whose objects cannot be read leaves the application logged out.
#[test]
fn a_login_that_cannot_read_the_token_leaves_no_login() {
    const SLOT: usize = 7;
    let f = fixture();
    let slot = f.ready_slot(SLOT);
    let db = attacker(&fixture_store(SLOT));
    db.execute("UPDATE meta SET value = x'00' WHERE name = 'head'", [])
        .unwrap();
    let rw = open_session(slot, RW).unwrap();
    assert_rv(login(rw, CKU_USER, USER_PIN), CKR_DEVICE_ERROR);
    assert_eq!(session_info(rw).unwrap().state, CKS_RW_PUBLIC_SESSION);
    assert_rv(close_session(rw), CKR_OK);
}

/// Rows the module did not write are not trusted after login; before login public objects
/// cannot be authenticated and are shown as they are (docs/security.md).
#[test]
fn a_public_row_planted_by_a_file_writer_is_dropped_at_login() {
    const SLOT: usize = 8;
    let f = fixture();
    let slot = f.ready_slot(SLOT);
    let mut planted = Attributes::new();
    planted.set_ulong(CKA_CLASS, CKO_DATA);
    planted.set_bool(CKA_TOKEN, true);
    planted.set_bool(CKA_PRIVATE, false);
    planted.set(CKA_LABEL, b"planted".to_vec());
    planted.set(CKA_VALUE, b"attacker".to_vec());
    let db = attacker(&fixture_store(SLOT));
    plant(&db, 0, &planted.serialize(), None);
    let public = ok(f.pkcs11.open_ro_session(slot));
    assert_eq!(
        find_by_label(&public, "planted").len(),
        1,
        "shown unverified"
    );
    let session = f.user_session(slot);
    assert!(find_by_label(&session, "planted").is_empty());
    assert!(find_by_label(&public, "planted").is_empty());
}

/// The side effects: the configured directory keeps its mode; the module's own
/// directory is 0700 and every file of the store 0600 from its creation.
#[cfg(unix)]
#[test]
fn the_store_lives_in_its_own_private_directory() {
    use std::os::unix::fs::PermissionsExt;
    const SLOT: usize = 9;
    let f = fixture();
    let configured = f.dir.join(format!("token{SLOT}"));
    std::fs::create_dir_all(&configured).unwrap();
    std::fs::set_permissions(&configured, std::fs::Permissions::from_mode(0o755)).unwrap();
    let slot = f.ready_slot(SLOT);
    let session = f.user_session(slot);
    ok(session.create_object(&data_template("x", b"x", true, true)));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(&configured),
        0o755,
        "the configured directory is left alone"
    );
    let store = fixture_store(SLOT);
    assert_eq!(mode(store.parent().unwrap()), 0o700);
    for suffix in ["", "-wal", "-shm"] {
        let mut name = store.as_os_str().to_owned();
        name.push(suffix);
        let file = PathBuf::from(name);
        if file.exists() {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
    }
}

/// Writing token objects needs the token key: a session without login cannot add rows that
/// the next login would have to take on trust.
#[test]
fn token_objects_are_written_only_after_login() {
    const SLOT: usize = 10;
    let f = fixture();
    let slot = f.ready_slot(SLOT);
    let rw = ok(f.pkcs11.open_rw_session(slot));
    assert_rv(
        rw.create_object(&data_template("anonymous", b"x", true, false)),
        CKR_USER_NOT_LOGGED_IN,
    );
    ok(rw.create_object(&data_template("session-only", b"x", false, false)));
}

/// The kills: a C_Login killed while the KDF runs is not a failure, so three kills
/// (limit 3) do not lock the PIN. The production KDF makes the window wide.
#[test]
fn logins_killed_during_the_kdf_are_not_counted() {
    let name = test_name!();
    if is_child(name) {
        let pkcs11 = load_module();
        initialize(&pkcs11);
        let slot = ok(pkcs11.get_all_slots())[0];
        match std::env::var(PHASE_VAR).as_deref() {
            Ok("init") => init_token(&pkcs11, slot, "killed"),
            Ok("login") => {
                let rw = open_session(slot, RW).unwrap();
                println!("logging in");
                let rv = login(rw, CKU_USER, USER_PIN);
                println!("login returned {rv:#x}");
            }
            _ => {
                assert_token_flags(slot, 0, CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_LOCKED);
                let rw = open_session(slot, RW).unwrap();
                assert_rv(login(rw, CKU_USER, USER_PIN), CKR_OK);
            }
        }
        return;
    }
    let dir = temp_dir("b4ae-killed-");
    let conf = dir.path().join("b4ae-pkcs11.toml");
    let path = dir.path().join("token");
    std::fs::write(
        &conf,
        format!(
            "[[token]]\nlabel = \"killed\"\npath = \"{}\"\nmax_pin_failures = 3\n",
            path.display()
        ),
    )
    .unwrap();
    run_child(name, &conf, &[(PHASE_VAR, "init")]);
    for _ in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_VAR, name)
            .env(CONF_VAR, &conf)
            .env(PHASE_VAR, "login")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            let line = lines.next().expect("the child stopped early").unwrap();
            if line.contains("logging in") {
                break;
            }
        }
        // Argon2id with 64 MiB and 3 passes takes far longer than this.
        std::thread::sleep(Duration::from_millis(30));
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        assert!(lines.all(|l| !l.unwrap().contains("login returned")));
    }
    run_child(name, &conf, &[(PHASE_VAR, "check")]);
}

/// The admin tool takes PINs from a file, the environment or a prompt.
#[test]
fn the_admin_tool_reads_pins_from_files_or_the_environment() {
    let config = TestConfig::new(1, None);
    let tool = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_b4ae-pkcs11"));
        command
            .env(CONF_VAR, &config.path)
            .env_remove("B4AE_SO_PIN")
            .env_remove("B4AE_USER_PIN")
            .stdin(Stdio::null());
        command
    };
    // PINs given as arguments (visible in ps) are refused; the help offers files instead.
    let help = tool().args(["init-token", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    assert!(
        !help.contains("--so-pin ") && help.contains("--so-pin-file"),
        "{help}"
    );
    let refused = tool()
        .args(["init-token", "--label", "argv", "--so-pin", SO_PIN])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unexpected argument"));

    let so_file = config.dir().join("so.pin");
    let user_file = config.dir().join("user.pin");
    std::fs::write(&so_file, format!("{SO_PIN}\n")).unwrap();
    std::fs::write(&user_file, format!("{USER_PIN}\n")).unwrap();
    let from_files = tool()
        .args(["init-token", "--label", "files", "--so-pin-file"])
        .arg(&so_file)
        .arg("--pin-file")
        .arg(&user_file)
        .output()
        .unwrap();
    assert!(from_files.status.success(), "{from_files:?}");
    let info = tool().arg("info").output().unwrap();
    assert!(String::from_utf8_lossy(&info.stdout).contains("user PIN set"));

    let from_env = tool()
        .args(["init-token", "--label", "env"])
        .env("B4AE_SO_PIN", SO_PIN)
        .output()
        .unwrap();
    assert!(from_env.status.success(), "{from_env:?}");
    let info = tool().arg("info").output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains("\"env\"") && info.contains("user PIN not set"),
        "{info}"
    );
}

/// `C_SetPIN` gives the token a new key: another process logged in with the old one is logged
/// out of the token (it cannot read the new key without the PIN) and logs in again.
#[test]
fn a_pin_change_elsewhere_logs_other_processes_out() {
    const SLOT: usize = 11;
    const NEW_PIN: &str = "user-pin-4444";
    let name = test_name!();
    if is_child(name) {
        let pkcs11 = load_module();
        initialize(&pkcs11);
        let slot = ok(pkcs11.get_all_slots())[SLOT];
        let session = user_session(&pkcs11, slot);
        ok(session.set_pin(&pin(USER_PIN), &pin(NEW_PIN)));
        return;
    }
    let f = fixture();
    let slot = f.ready_slot(SLOT);
    let session = f.user_session(slot);
    ok(session.create_object(&data_template("before", b"x", true, true)));
    run_child(name, &f.conf, &[]);
    assert_rv(
        session.create_object(&data_template("after", b"x", true, true)),
        CKR_USER_NOT_LOGGED_IN,
    );
    assert_rv(
        session.login(UserType::User, Some(&pin(USER_PIN))),
        CKR_PIN_INCORRECT,
    );
    ok(session.login(UserType::User, Some(&pin(NEW_PIN))));
    assert_eq!(find_by_label(&session, "before").len(), 1);
    ok(session.create_object(&data_template("after", b"x", true, true)));
}

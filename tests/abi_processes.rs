//! Several processes on one token at once, and a process killed in the middle of writing.
//! Each test re-runs this test binary as its worker processes (selected by environment).

mod common;

use common::*;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::Session;
use cryptoki_sys::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SLOT_CONCURRENT: usize = 0;
const SLOT_KILLED: usize = 1;

const WORKER_VAR: &str = "B4AE_TEST_WORKER";
const WORKERS: usize = 4;
const OBJECTS_PER_WORKER: usize = 20;
const KEYS_PER_WORKER: usize = 2;

fn worker_id() -> Option<usize> {
    std::env::var(WORKER_VAR).ok().and_then(|v| v.parse().ok())
}

/// This test binary, run as worker `id` of test `test`, with the fixture's configuration.
fn worker(test: &str, id: usize, conf: &std::path::Path) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("current_exe"));
    command
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(WORKER_VAR, id.to_string())
        .env(CONF_VAR, conf)
        .stdin(Stdio::null());
    command
}

/// A worker's own module instance, logged in on `slot_index`.
fn worker_session(slot_index: usize) -> (cryptoki::context::Pkcs11, Session) {
    let pkcs11 = load_module();
    initialize(&pkcs11);
    let slot = ok(pkcs11.get_all_slots())[slot_index];
    let session = user_session(&pkcs11, slot);
    (pkcs11, session)
}

fn objects_with_prefix(
    session: &Session,
    class: ObjectClass,
    prefix: &str,
) -> Vec<(String, Vec<u8>)> {
    let handles = ok(session.find_objects(&[Attribute::Class(class)]));
    let mut found = Vec::new();
    for handle in handles {
        let label = String::from_utf8(attr_bytes(session, handle, CKA_LABEL)).expect("UTF-8 label");
        if label.starts_with(prefix) {
            let value = if class == ObjectClass::DATA {
                attr_bytes(session, handle, CKA_VALUE)
            } else {
                Vec::new()
            };
            found.push((label, value));
        }
    }
    found.sort();
    found
}

/// Workers create data objects and ML-DSA keys on one token at the same time, sign with their
/// keys and destroy half of their objects. Afterwards the parent (which never restarted) sees
/// exactly what each worker left, and can sign with keys that other processes made.
#[test]
fn concurrent_processes_share_one_token() {
    const TEST: &str = "concurrent_processes_share_one_token";
    if let Some(id) = worker_id() {
        let (_pkcs11, session) = worker_session(SLOT_CONCURRENT);
        for n in 0..OBJECTS_PER_WORKER {
            let label = format!("w{id}-{n:02}");
            ok(session.create_object(&data_template(&label, label.as_bytes(), true, true)));
        }
        for k in 0..KEYS_PER_WORKER {
            let (public, private) = mldsa_keypair(&session, Ps::P44, true, &[]);
            let label = Attribute::Label(format!("key-w{id}-{k}").into_bytes());
            ok(session.update_attributes(private, std::slice::from_ref(&label)));
            let signature = ok(session.sign(&pure_ml_dsa(), private, MESSAGE));
            ok(session.verify(&pure_ml_dsa(), public, MESSAGE, &signature));
        }
        for n in (0..OBJECTS_PER_WORKER).step_by(2) {
            let handles = find_by_label(&session, &format!("w{id}-{n:02}"));
            assert_eq!(handles.len(), 1, "worker {id} object {n}");
            ok(session.destroy_object(handles[0]));
        }
        return;
    }

    let f = fixture();
    let session = f.user_session(f.ready_slot(SLOT_CONCURRENT));
    let mut children: Vec<_> = (0..WORKERS)
        .map(|id| {
            worker(TEST, id, &f.conf)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawning a worker")
        })
        .collect();
    for (id, child) in children.drain(..).enumerate() {
        let output = child.wait_with_output().expect("waiting for a worker");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "worker {id} failed ({})\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    for id in 0..WORKERS {
        let expected: Vec<(String, Vec<u8>)> = (1..OBJECTS_PER_WORKER)
            .step_by(2)
            .map(|n| {
                let label = format!("w{id}-{n:02}");
                (label.clone(), label.into_bytes())
            })
            .collect();
        assert_eq!(
            objects_with_prefix(&session, ObjectClass::DATA, &format!("w{id}-")),
            expected
        );
        let keys = objects_with_prefix(&session, ObjectClass::PRIVATE_KEY, &format!("key-w{id}-"));
        assert_eq!(keys.len(), KEYS_PER_WORKER, "worker {id}'s keys");
    }
    for handle in ok(session.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])) {
        let signature = ok(session.sign(&pure_ml_dsa(), handle, MESSAGE));
        assert_eq!(signature.len(), 2420);
    }
}

/// A worker writes sealed (private) token objects one after another and reports each one after
/// `C_CreateObject` returns; it is killed with SIGKILL in the middle. Every object it reported
/// is there with its value, nothing is half-written, and the store passes SQLite's check.
#[test]
fn a_writer_killed_mid_write_loses_nothing_committed() {
    const TEST: &str = "a_writer_killed_mid_write_loses_nothing_committed";
    if worker_id().is_some() {
        let (_pkcs11, session) = worker_session(SLOT_KILLED);
        let started = Instant::now();
        for n in 0.. {
            let label = format!("k-{n:05}");
            let value = format!("value of {label}").repeat(50);
            ok(session.create_object(&data_template(&label, value.as_bytes(), true, true)));
            println!("committed {n}");
            if started.elapsed() > Duration::from_secs(60) {
                break;
            }
        }
        return;
    }

    let f = fixture();
    let slot = f.ready_slot(SLOT_KILLED);
    let mut child = worker(TEST, 0, &f.conf)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning the writer");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut reported = 0usize;
    while reported < 60 {
        let line = lines
            .next()
            .expect("the writer stopped early")
            .expect("reading");
        if line.starts_with("committed ") {
            reported += 1;
        }
    }
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("reaping the writer");
    assert!(!status.success(), "the writer was killed, not finished");

    let session = f.user_session(slot);
    let found = objects_with_prefix(&session, ObjectClass::DATA, "k-");
    assert!(
        found.len() >= reported,
        "{} objects for {reported} reported",
        found.len()
    );
    for (n, (label, value)) in found.iter().enumerate() {
        assert_eq!(label, &format!("k-{n:05}"), "objects are consecutive");
        assert_eq!(value, format!("value of {label}").repeat(50).as_bytes());
    }

    let store = token_store(&f.dir, SLOT_KILLED);
    let db = rusqlite::Connection::open(&store).expect("opening the store");
    let verdict: String = db
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .expect("integrity_check");
    assert_eq!(verdict, "ok");
}

/// Another process re-initializes the token under a logged-in session: that session's old
/// token key must not be used to write records nobody could read any more.
#[test]
fn a_token_reinitialized_elsewhere_is_not_written_with_the_old_key() {
    const TEST: &str = "a_token_reinitialized_elsewhere_is_not_written_with_the_old_key";
    const SLOT: usize = 2;
    if worker_id().is_some() {
        let pkcs11 = load_module();
        initialize(&pkcs11);
        let slot = ok(pkcs11.get_all_slots())[SLOT];
        init_token(&pkcs11, slot, "reinitialized");
        let session = user_session(&pkcs11, slot);
        ok(session.create_object(&data_template("new-token", b"new", true, true)));
        return;
    }

    let f = fixture();
    let session = f.user_session(f.ready_slot(SLOT));
    ok(session.create_object(&data_template("old-token", b"old", true, true)));
    let output = worker(TEST, 0, &f.conf)
        .output()
        .expect("running the worker");
    assert!(
        output.status.success(),
        "worker: {}",
        String::from_utf8_lossy(&output.stdout)
    );

    let refused = session.create_object(&data_template("stale-key", b"x", true, true));
    assert_rv(refused, CKR_USER_NOT_LOGGED_IN);
    let fresh = f.user_session(f.slot(SLOT));
    assert!(
        find_by_label(&fresh, "old-token").is_empty(),
        "re-initialization erased it"
    );
    assert_eq!(find_by_label(&fresh, "new-token").len(), 1);
    assert!(find_by_label(&fresh, "stale-key").is_empty());
}

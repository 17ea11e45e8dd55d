//! The module's audit trail (SPEC §6, `[audit] path`): security events from every process that
//! uses the module, hash-chained; `b4ae-pkcs11 audit verify` follows the chain.

#[macro_use]
mod common;

use common::*;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use std::path::Path;
use std::process::Command;

fn config(dir: &Path) -> std::path::PathBuf {
    let conf = dir.join("b4ae.toml");
    std::fs::write(
        &conf,
        format!(
            "[[token]]\nlabel = \"audited\"\npath = \"{0}/token\"\npin_kdf = \"test-only-fast\"\n\n\
             [audit]\npath = \"{0}/audit.jsonl\"\n",
            dir.display()
        ),
    )
    .unwrap();
    conf
}

fn events(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn verify(dir: &Path) -> bool {
    Command::new(module_path().with_file_name("b4ae-pkcs11"))
        .args(["audit", "verify"])
        .arg(dir.join("audit.jsonl"))
        .status()
        .expect("audit verify")
        .success()
}

/// A child: logs in once wrongly and once rightly, makes a key and destroys it, 5 times.
fn events_child() {
    let pkcs11 = load_module();
    initialize(&pkcs11);
    let slot = ok(pkcs11.get_all_slots())[0];
    for _ in 0..5 {
        let session = ok(pkcs11.open_rw_session(slot));
        assert!(session
            .login(UserType::User, Some(&pin("wrong-pin-00")))
            .is_err());
        ok(session.login(UserType::User, Some(&pin(USER_PIN))));
        let key = ok(session.generate_key(
            &Mechanism::AesKeyGen,
            &[Attribute::ValueLen(32.into()), Attribute::Token(true)],
        ));
        ok(session.destroy_object(key));
        ok(session.logout());
    }
}

#[test]
fn security_events_of_several_processes_form_one_chain() {
    let name = test_name!();
    if is_child(name) {
        return events_child();
    }
    let dir = temp_dir("b4ae-audit-");
    let conf = config(dir.path());
    std::env::set_var(CONF_VAR, &conf);
    let child_name = name.to_owned();
    let child_conf = conf.clone();
    {
        // The token, made in a child of its own (the module is initialized once per process).
        let pkcs11 = load_module();
        initialize(&pkcs11);
        let slot = ok(pkcs11.get_all_slots())[0];
        init_token(&pkcs11, slot, "audited");
        ok(pkcs11.finalize());
    }
    // Two processes at once append to the same trail.
    let a = std::thread::spawn(move || run_child(&child_name, &child_conf, &[]));
    run_child(name, &conf, &[]);
    a.join().expect("the other child");

    let lines = events(dir.path());
    let count = |e: &str| lines.iter().filter(|l| l["event"] == e).count();
    assert_eq!(count("token_initialized"), 1);
    assert_eq!(count("pin_initialized"), 1);
    assert_eq!(
        count("login_failed"),
        10,
        "one wrong PIN per round, 5 rounds, 2 processes"
    );
    assert_eq!(count("login_ok"), 11, "the SO's, and each round's");
    assert_eq!(count("key_created"), 10);
    assert_eq!(count("object_destroyed"), 10);
    assert_eq!(
        count("key_first_use"),
        0,
        "no key was used for an operation yet"
    );
    let pids: std::collections::HashSet<_> = lines.iter().map(|l| l["pid"].clone()).collect();
    assert!(pids.len() >= 3, "written by the process that saw the event");
    assert!(lines.iter().all(|l| l["slot"] == 0 && l["uid"].is_u64()));
    let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(
        !text.contains(USER_PIN) && !text.contains("wrong-pin-00"),
        "no PIN in the trail"
    );
    assert!(verify(dir.path()), "the chain of two writers is intact");

    // Each kind of tampering is found.
    let original: Vec<&str> = text.lines().collect();
    let tampered = [
        [&original[..3], &original[4..]].concat().join("\n"),
        [&original[..2], &[original[3], original[2]], &original[4..]]
            .concat()
            .join("\n"),
        text.replacen("login_failed", "login_ok", 1),
    ];
    for (kind, bad) in ["removed", "reordered", "edited"].iter().zip(tampered) {
        std::fs::write(dir.path().join("audit.jsonl"), bad + "\n").unwrap();
        assert!(!verify(dir.path()), "a {kind} line is found");
    }
}

#[test]
fn the_first_use_of_a_key_per_login_is_audited_once() {
    let name = test_name!();
    let dir = temp_dir("b4ae-audit-");
    let conf = config(dir.path());
    if !is_child(name) {
        run_child(name, &conf, &[]);
        let lines = events(dir.path());
        let uses: Vec<_> = lines
            .iter()
            .filter(|l| l["event"] == "key_first_use")
            .collect();
        assert_eq!(
            uses.len(),
            2,
            "three signatures in the first login, one after the next"
        );
        assert!(verify(dir.path()));
        return;
    }
    let pkcs11 = load_module();
    initialize(&pkcs11);
    let slot = ok(pkcs11.get_all_slots())[0];
    init_token(&pkcs11, slot, "audited");
    let session = user_session(&pkcs11, slot);
    let (_, private) = mldsa_keypair(&session, Ps::P44, true, &[]);
    for _ in 0..3 {
        ok(session.sign(&pure_ml_dsa(), private, MESSAGE));
    }
    ok(session.logout());
    ok(session.login(UserType::User, Some(&pin(USER_PIN))));
    // The handle of a private object is not kept across a logout here: find it again.
    let found = ok(session.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)]));
    assert_eq!(found.len(), 1);
    ok(session.sign(&pure_ml_dsa(), found[0], MESSAGE));
}

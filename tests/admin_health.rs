//! `b4ae-pkcs11 health` (SPEC §6): each configured token opened on its own, its state, and the
//! exit code: 0 when every token is served, 2 when one is not.

mod common;
mod forward_common;

use common::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const SOFTHSM_LIB: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn health(dir: &Path, conf: &str, json: bool) -> Output {
    let path = dir.join("b4ae.toml");
    std::fs::write(&path, conf).expect("configuration");
    let mut c = Command::new(module_path().with_file_name("b4ae-pkcs11"));
    c.arg("health");
    if json {
        c.arg("--json");
    }
    c.env(CONF_VAR, &path)
        .env("SOFTHSM2_CONF", dir.join("softhsm2.conf"))
        .env("B4AE_PKCS11_STATE_DIR", dir.join("state"))
        .env("B4AE_PKCS11_LOG", "off")
        .stdin(Stdio::null())
        .output()
        .expect("b4ae-pkcs11 health")
}

fn softhsm_token(dir: &Path, label: &str) {
    let tokens = dir.join("softhsm");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    forward_common::write_softhsm_conf(&conf, &tokens);
    forward_common::softhsm_init_token_with(Some(&conf), label);
}

fn served(dir: &Path) -> String {
    format!(
        "[[token]]\nlabel = \"E\"\npath = \"{}/embedded\"\npin_kdf = \"test-only-fast\"\n\n\
         [[token]]\nlabel = \"H\"\nbackend = \"pkcs11\"\nlibrary = \"{SOFTHSM_LIB}\"\n\
         token_label = \"health\"\n",
        dir.display()
    )
}

#[test]
fn every_token_up_exits_0_with_one_line_each() {
    let dir = temp_dir("b4ae-health-");
    softhsm_token(dir.path(), "health");
    let out = health(dir.path(), &served(dir.path()), false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("slot 0 \"E\" embedded") && text.contains(": up"),
        "{text}"
    );
    assert!(
        text.contains(&format!("slot 1 \"H\" pkcs11 {SOFTHSM_LIB} health: up")),
        "{text}"
    );
    assert_eq!(text.lines().last(), Some("up"));
}

#[test]
fn an_unserved_token_exits_2_and_says_which_and_why_in_json() {
    let dir = temp_dir("b4ae-health-");
    softhsm_token(dir.path(), "health");
    let conf = format!(
        "{}\n[[token]]\nlabel = \"gone\"\nbackend = \"pkcs11\"\nlibrary = \"{SOFTHSM_LIB}\"\n\
         token_label = \"no-such-token\"\n\n[[token]]\nlabel = \"agent\"\nbackend = \"agent\"\n\
         socket = \"{}/no-agent.sock\"\n",
        served(dir.path()),
        dir.path().display()
    );
    let out = health(dir.path(), &conf, true);
    assert_eq!(out.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["status"], "unserved");
    let tokens = doc["tokens"].as_array().expect("tokens");
    let states: Vec<&str> = tokens
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["up", "up", "down", "down"]);
    assert_eq!(tokens[1]["library"], SOFTHSM_LIB);
    assert_eq!(tokens[1]["token_label"], "health");
    assert_eq!(tokens[1]["initialized"], true);
    assert!(tokens[2]["error"]
        .as_str()
        .unwrap()
        .contains("CKR_TOKEN_NOT_PRESENT"));
    assert!(tokens[3]["error"]
        .as_str()
        .unwrap()
        .contains("CKR_DEVICE_ERROR"));
    assert!(tokens[0]["error"].is_null());
}

#[test]
fn a_configuration_that_cannot_be_read_exits_2() {
    let dir = temp_dir("b4ae-health-");
    let out = health(dir.path(), "[[token]]\nbackend = \"nonsense\"\n", false);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("b4ae.toml"));
}

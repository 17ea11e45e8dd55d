//! The admin tool's own surface (issue "High availability and operations", admin polish):
//! shell completions and manual pages generated from its command definitions, and PINs never
//! taken as arguments.

#[macro_use]
mod common;
mod forward_common;

use forward_common::*;
use std::process::Command;

fn tool(args: &[&str]) -> std::process::Output {
    Command::new(admin_path())
        .args(args)
        .output()
        .expect("running b4ae-pkcs11")
}

#[test]
fn completions_and_man_pages_cover_every_command() {
    if common::is_child(test_name!()) {
        return;
    }
    let commands = [
        "info",
        "init-token",
        "migrate",
        "rotate-stk",
        "backup",
        "restore",
        "agent",
        "health",
        "audit",
    ];
    for shell in ["bash", "zsh", "fish"] {
        let out = tool(&["completions", shell]);
        assert_success(&format!("completions {shell}"), &out);
        let script = String::from_utf8_lossy(&out.stdout);
        for command in commands {
            assert!(
                script.contains(command),
                "{shell} completion lacks {command}"
            );
        }
    }
    // Closed early by its reader (`| head`): an error, not a panic.
    let mut child = Command::new(admin_path())
        .args(["completions", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running b4ae-pkcs11");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("completions");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));

    let dir = common::temp_dir("b4ae-man-");
    let out = tool(&["man", "--dir", text(dir.path())]);
    assert_success("man --dir", &out);
    for command in commands {
        let page = std::fs::read_to_string(dir.path().join(format!("b4ae-pkcs11-{command}.1")))
            .unwrap_or_else(|e| panic!("{command}: {e}"));
        assert!(
            page.starts_with(".ie") || page.contains(".TH"),
            "{command}: not roff"
        );
    }
    let main = std::fs::read_to_string(dir.path().join("b4ae-pkcs11.1")).expect("main page");
    assert!(main.contains(".SH NAME") && main.contains("backup"));
}

#[test]
fn no_command_takes_a_pin_as_an_argument() {
    if common::is_child(test_name!()) {
        return;
    }
    for command in ["init-token", "migrate", "rotate-stk", "backup", "restore"] {
        let help = String::from_utf8_lossy(&tool(&[command, "--help"]).stdout).into_owned();
        for line in help.lines().filter(|l| l.trim_start().starts_with("--")) {
            let mut words = line.split_whitespace();
            let option = words.next().unwrap_or_default();
            let takes_value = words.next().is_some_and(|w| w.starts_with('<'));
            assert!(
                !(option.contains("pin") && takes_value) || option.ends_with("-file"),
                "{command}: {option} takes a PIN as an argument"
            );
        }
    }
}

//! Replicas of one SoftHSM2 token in one process, for the replica tests and the replica
//! benchmark: tests/forward_common/replica_hsm.c (a shim with a switchable fault and an
//! optional one-signing-unit device model) over a private copy of libsofthsm2.so per replica,
//! each with its own SOFTHSM2_CONF. Standard library only, so a benchmark can include it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn succeeded(what: &str, output: std::io::Result<std::process::Output>) {
    let output = output.unwrap_or_else(|e| panic!("{what}: {e} (scripts/deps.sh installs it)"));
    assert!(
        output.status.success(),
        "{what}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Compiles the shim into `dir`.
pub fn build_shim(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let library = dir.join("libreplica-built.so");
    let built = Command::new("cc")
        .current_dir(root)
        .args([
            "-O2", "-shared", "-fPIC", "-Wall", "-Werror", "-I", "include",
        ])
        .arg("tests/forward_common/replica_hsm.c")
        .args(["-ldl", "-lpthread", "-o"])
        .arg(&library)
        .output();
    succeeded("cc tests/forward_common/replica_hsm.c", built);
    library
}

/// Replica `name` under `rig`: its own shim and SoftHSM2 copies, SoftHSM2 configuration and
/// token directory (empty). `sign_us` > 0 makes it a device that signs one signature at a
/// time, each taking at least that long.
pub fn place(rig: &Path, name: &str, shim: &Path, sign_us: u64) -> PathBuf {
    let dir = rig.join(name);
    std::fs::create_dir_all(dir.join("tokens")).expect("replica directory");
    std::fs::write(
        dir.join("softhsm2.conf"),
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.join("tokens").display()
        ),
    )
    .expect("softhsm2.conf");
    std::fs::copy(shim, dir.join("libreplica.so")).expect("copying the shim");
    std::fs::copy(SOFTHSM, dir.join("libsofthsm2.so")).expect("copying libsofthsm2.so");
    std::fs::write(
        dir.join("replica.conf"),
        format!(
            "library={}\nsofthsm_conf={}\nsign_us={sign_us}\n",
            dir.join("libsofthsm2.so").display(),
            dir.join("softhsm2.conf").display()
        ),
    )
    .expect("replica.conf");
    dir
}

/// `softhsm2-util --init-token` in replica `dir` (SO PIN 12345678).
pub fn init_token(dir: &Path, label: &str, pin: &str) {
    let output = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", dir.join("softhsm2.conf"))
        .args(["--init-token", "--free", "--label", label])
        .args(["--so-pin", "12345678", "--pin", pin])
        .output();
    succeeded("softhsm2-util --init-token", output);
}

/// Makes replica `to` hold a copy of `from`'s tokens, as a cluster or a restore would.
pub fn clone_tokens(from: &Path, to: &Path) {
    let copied = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.join("tokens").display()))
        .arg(to.join("tokens"))
        .output();
    succeeded("cloning the token's files", copied);
}

//! Replicas (issue "High availability and operations"): forwarded ECDSA P-256 `C_Sign` on 2
//! threads through the module, over 2 replicas with `balance = "round-robin"` against the same
//! over 1 replica, in alternating rounds of one run.
//!
//! Each replica is the test rig's shim (tests/forward_common/replica_hsm.c) over its own copy
//! of SoftHSM2, all clones of one token. Two device models, each measured:
//! * `sign_us = 1000`: each replica is a device with one signing unit that takes at least 1 ms
//!   per signature (an HSM's throughput is its own, not the host's): what spreading sessions
//!   over replicas is for;
//! * `sign_us = 0`: plain SoftHSM2, whose signatures are computed on this host's 2 CPUs, where
//!   one replica already has both cores, so a second adds nothing but the module's own work.
//!
//! `cargo build --release --lib --bins && cargo bench --bench replicas`. Needs softhsm2, opensc
//! and a C compiler (scripts/deps.sh).

#[macro_use]
mod common;
#[path = "../tests/forward_common/replica_rig.rs"]
mod replica_rig;

use common::*;
use cryptoki_sys::*;
use std::path::Path;
use std::ptr;
use std::time::Instant;

const PIN: &str = "1234";
const LABEL: &str = "bench";
const DIGEST: [u8; 32] = [7; 32];

/// The token's EC private key, found through session `s`.
fn ec_key(m: &Module, s: CK_SESSION_HANDLE) -> CK_OBJECT_HANDLE {
    let class = CKO_PRIVATE_KEY;
    let mut template = [attr(CKA_CLASS, &class), bytes(CKA_LABEL, b"ec")];
    rv(
        "C_FindObjectsInit",
        call!(m, C_FindObjectsInit(s, template.as_mut_ptr(), 2)),
    );
    let (mut key, mut n) = (0, 0);
    rv(
        "C_FindObjects",
        call!(m, C_FindObjects(s, &mut key, 1, &mut n)),
    );
    rv("C_FindObjectsFinal", call!(m, C_FindObjectsFinal(s)));
    assert_eq!(n, 1, "the EC key");
    key
}

/// Signatures per second of 2 threads, each on its own session.
fn two_threads(m: &Module, sessions: &[(CK_SESSION_HANDLE, CK_OBJECT_HANDLE); 2]) -> f64 {
    let start = Instant::now();
    let total: u64 = std::thread::scope(|scope| {
        let workers: Vec<_> = sessions
            .iter()
            .map(|(s, key)| {
                scope.spawn(move || {
                    let mut out = [0u8; 64];
                    let mut n = 0u64;
                    while start.elapsed() < ROUND_TIME {
                        sign(m, *s, CKM_ECDSA, *key, &DIGEST, &mut out);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("signer")).sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

/// Two sessions on `slot`, each with the key.
fn pair(m: &Module, slot: CK_SLOT_ID) -> [(CK_SESSION_HANDLE, CK_OBJECT_HANDLE); 2] {
    [0, 1].map(|_| {
        let s = open_rw(m, slot);
        (s, ec_key(m, s))
    })
}

fn token_section(slot: &str, library: &Path, replica: Option<&Path>) -> String {
    let replicas = replica.map_or(String::new(), |r| {
        format!(
            "replicas = [ {{ library = \"{}\", token_label = \"{LABEL}\" }} ]\nbalance = \"round-robin\"\n",
            r.display()
        )
    });
    format!(
        "[[token]]\nlabel = \"{slot}\"\nbackend = \"pkcs11\"\nlibrary = \"{}\"\ntoken_label = \"{LABEL}\"\n{replicas}\n",
        library.display()
    )
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let shim = replica_rig::build_shim(d);
    let (a, b) = (
        replica_rig::place(d, "a", &shim, 1000),
        replica_rig::place(d, "b", &shim, 1000),
    );
    let (c, e) = (
        replica_rig::place(d, "c", &shim, 0),
        replica_rig::place(d, "e", &shim, 0),
    );
    replica_rig::init_token(&a, LABEL, PIN);
    let made = std::process::Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", a.join("softhsm2.conf"))
        .args([
            "--module",
            "/usr/lib/softhsm/libsofthsm2.so",
            "--token-label",
            LABEL,
        ])
        .args([
            "--login",
            "--pin",
            PIN,
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
        ])
        .args(["--label", "ec", "--id", "01"])
        .output()
        .expect("pkcs11-tool (apt-get install opensc)");
    assert!(made.status.success(), "pkcs11-tool --keypairgen");
    for to in [&b, &c, &e] {
        replica_rig::clone_tokens(&a, to);
    }
    let lib = |r: &Path| r.join("libreplica.so");
    let conf = d.join("b4ae.toml");
    std::fs::write(
        &conf,
        [
            token_section("device x2", &lib(&a), Some(&lib(&b))),
            token_section("device x1", &lib(&a), None),
            token_section("softhsm x2", &lib(&c), Some(&lib(&e))),
            token_section("softhsm x1", &lib(&c), None),
        ]
        .concat(),
    )
    .expect("b4ae.toml");
    std::env::set_var("B4AE_PKCS11_CONF", &conf);
    std::env::set_var("B4AE_PKCS11_STATE_DIR", d.join("state"));

    let m = load(&module_path());
    rv("C_Initialize", call!(m, C_Initialize(ptr::null_mut())));
    // One session per slot keeps the login; round-robin spreads the two signing sessions
    // opened after it over both replicas.
    let keepers: Vec<_> = (0..4)
        .map(|slot| {
            let s = open_rw(&m, slot);
            login_as(&m, s, CKU_USER, PIN);
            s
        })
        .collect();
    let mut rows = Vec::new();
    for (name, replicated, single) in [
        ("device model, sign_us = 1000", 0, 1),
        ("plain SoftHSM2, sign_us = 0", 2, 3),
    ] {
        let (two, one) = (pair(&m, replicated), pair(&m, single));
        for _ in 0..3 {
            two_threads(&m, &two);
            two_threads(&m, &one);
        }
        let (mut r2, mut r1): (Vec<f64>, Vec<f64>) = (0..ROUNDS)
            .map(|_| (two_threads(&m, &two), two_threads(&m, &one)))
            .unzip();
        r2.sort_by(|x, y| x.total_cmp(y));
        r1.sort_by(|x, y| x.total_cmp(y));
        rows.push((name, r2[ROUNDS / 2], r1[ROUNDS / 2]));
    }
    println!(
        "Forwarded ECDSA P-256 C_Sign, 2 threads (signatures/s, median of {ROUNDS} alternating rounds)"
    );
    println!(
        "{:<30} {:>22} {:>12} {:>8}",
        "replicas", "2, round-robin", "1", "ratio"
    );
    for (name, two, one) in rows {
        println!("{name:<30} {two:>22.0} {one:>12.0} {:>8.3}", two / one);
    }
    drop(keepers);
    rv("C_Finalize", call!(m, C_Finalize(ptr::null_mut())));
}

//! The custody agent, in one run (issue 12's figures):
//! * ML-DSA-87 signing through an agent slot beside in-process custody 2 (a key sealed in
//!   SoftHSM2, signed in this process) and raw `pqcrypto-mldsa`, one thread;
//! * two client processes signing through the agent at once beside one alone (the agent signs
//!   for each connection on its own thread);
//! * the round trip of a small call (`C_GetSessionInfo`) through the agent beside in-process.
//!
//! `cargo build --release --lib --bins && cargo bench --bench agent`. Needs softhsm2.
//! The agent runs as the current user here: the users' separation is the tests' business.

#[macro_use]
mod common;

use common::*;
use cryptoki_sys::*;
use pqcrypto_traits::sign::DetachedSignature as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::ptr;
use std::time::{Duration, Instant};

const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";
const HSM_PIN: &str = "1234";
const AGENT_SO_PIN: &str = "12345678";
const AGENT_PIN: &str = "11223344";
const MESSAGE: [u8; 32] = [7; 32];
/// Set in a client process: how long to sign, and when to start (ms since the epoch).
const CLIENT_VAR: &str = "B4AE_BENCH_AGENT_CLIENT";
const CLIENT_TIME: Duration = Duration::from_secs(2);

/// A session ML-DSA-87 key pair; returns the private key.
fn mldsa87(m: &Module, s: CK_SESSION_HANDLE) -> CK_OBJECT_HANDLE {
    let yes: CK_BBOOL = CK_TRUE;
    let no: CK_BBOOL = CK_FALSE;
    let set: CK_ULONG = CKP_ML_DSA_87;
    let mut public = [attr(CKA_PARAMETER_SET, &set), attr(CKA_TOKEN, &no)];
    let mut private = [attr(CKA_TOKEN, &no), attr(CKA_SIGN, &yes)];
    let (mut p, mut k) = (0, 0);
    let mut mech = mechanism::<()>(CKM_ML_DSA_KEY_PAIR_GEN, None);
    let (np, nk) = (public.len() as CK_ULONG, private.len() as CK_ULONG);
    rv(
        "C_GenerateKeyPair",
        call!(
            m,
            C_GenerateKeyPair(
                s,
                &mut mech,
                public.as_mut_ptr(),
                np,
                private.as_mut_ptr(),
                nk,
                &mut p,
                &mut k
            )
        ),
    );
    k
}

fn session_info(m: &Module, s: CK_SESSION_HANDLE) {
    let mut info = CK_SESSION_INFO::default();
    rv("C_GetSessionInfo", call!(m, C_GetSessionInfo(s, &mut info)));
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
}

/// A client process: signs through the agent slot (slot 0 of its configuration) from the
/// agreed start for `CLIENT_TIME`, and prints how many signatures it made.
fn client(start_ms: u128) {
    let m = load(&module_path());
    rv("C_Initialize", call!(m, C_Initialize(ptr::null_mut())));
    let s = open_rw(&m, 0);
    login_as(&m, s, CKU_USER, AGENT_PIN);
    let key = mldsa87(&m, s);
    let mut sig = vec![0u8; 4627];
    while now_ms() < start_ms {
        std::thread::sleep(Duration::from_millis(1));
    }
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < CLIENT_TIME {
        sign(&m, s, CKM_ML_DSA, key, &MESSAGE, &mut sig);
        n += 1;
    }
    println!("{n}");
}

/// Signatures per second of `count` client processes together through the agent.
fn processes_together(exe: &Path, agent_conf: &Path, count: usize) -> f64 {
    let start = now_ms() + 1500;
    let children: Vec<_> = (0..count)
        .map(|_| {
            Command::new(exe)
                .env(CLIENT_VAR, start.to_string())
                .env("B4AE_PKCS11_CONF", agent_conf)
                .stdout(Stdio::piped())
                .spawn()
                .expect("client process")
        })
        .collect();
    let total: u64 = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("client");
            assert!(out.status.success(), "a client process failed");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u64>()
                .expect("a count")
        })
        .sum();
    total as f64 / CLIENT_TIME.as_secs_f64()
}

fn main() {
    if let Ok(start) = std::env::var(CLIENT_VAR) {
        return client(start.parse().expect("start time"));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    softhsm_token(d, "bench", HSM_PIN);
    std::env::set_var("B4AE_PKCS11_STATE_DIR", d.join("state"));

    // The agent, serving an embedded store it owns.
    let socket = d.join("agent.sock");
    let agent_toml = d.join("agent.toml");
    let me = nix_user();
    std::fs::write(
        &agent_toml,
        format!(
            "[agent]\nsocket = \"{}\"\n\n[[token]]\nlabel = \"bench\"\npath = \"{}\"\n\
             pin_kdf = \"test-only-fast\"\nallow_users = [\"{me}\"]\n",
            socket.display(),
            d.join("agent-store").display()
        ),
    )
    .expect("agent.toml");
    let admin = Path::new(&module_path()).with_file_name("b4ae-pkcs11");
    let mut agent = Command::new(&admin)
        .args(["agent", "--config"])
        .arg(&agent_toml)
        .env("B4AE_PKCS11_LOG", "error")
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (cargo build --release --bins)", admin.display()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "the agent did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Slot 0: custody 2 over SoftHSM2; slot 1: the agent.
    let agent_slot = format!(
        "[[token]]\nlabel = \"agent\"\nbackend = \"agent\"\nsocket = \"{}\"\n",
        socket.display()
    );
    let both = d.join("b4ae.toml");
    std::fs::write(
        &both,
        format!(
            "[[token]]\nlabel = \"hsm\"\nbackend = \"pkcs11\"\nlibrary = \"{SOFTHSM}\"\n\
             token_label = \"bench\"\n\n{agent_slot}"
        ),
    )
    .expect("b4ae.toml");
    let agent_only = d.join("agent-only.toml");
    std::fs::write(&agent_only, &agent_slot).expect("agent-only.toml");
    std::env::set_var("B4AE_PKCS11_CONF", &both);

    let m = load(&module_path());
    rv("C_Initialize", call!(m, C_Initialize(ptr::null_mut())));
    let mut label = [b' '; 32];
    label[..5].copy_from_slice(b"bench");
    let so = AGENT_SO_PIN.as_ptr() as *mut _;
    rv(
        "C_InitToken",
        call!(
            m,
            C_InitToken(1, so, AGENT_SO_PIN.len() as CK_ULONG, label.as_mut_ptr())
        ),
    );
    let setup = open_rw(&m, 1);
    login_as(&m, setup, CKU_SO, AGENT_SO_PIN);
    let pin = AGENT_PIN.as_ptr() as *mut _;
    rv(
        "C_InitPIN",
        call!(m, C_InitPIN(setup, pin, AGENT_PIN.len() as CK_ULONG)),
    );
    rv("C_Logout", call!(m, C_Logout(setup)));

    let hs = open_rw(&m, 0);
    login_as(&m, hs, CKU_USER, HSM_PIN);
    let hsm_key = mldsa87(&m, hs);
    let ags = open_rw(&m, 1);
    login_as(&m, ags, CKU_USER, AGENT_PIN);
    let agent_key = mldsa87(&m, ags);

    let mut sig = vec![0u8; 4627];
    let mut sig2 = vec![0u8; 4627];
    let (through_agent, in_process) = side_by_side(
        || sign(&m, ags, CKM_ML_DSA, agent_key, &MESSAGE, &mut sig),
        || sign(&m, hs, CKM_ML_DSA, hsm_key, &MESSAGE, &mut sig2),
    );
    let (pk, sk) = pqcrypto_mldsa::mldsa87::keypair();
    let raw = {
        let mut op = || {
            let s = pqcrypto_mldsa::mldsa87::detached_sign(&MESSAGE, &sk);
            std::hint::black_box(s.as_bytes());
        };
        let mut rounds: Vec<f64> = (0..ROUNDS).map(|_| round(&mut op)).collect();
        rounds.sort_by(|a, b| a.total_cmp(b));
        rounds[ROUNDS / 2]
    };
    let _ = pk;

    let agent_rt = median_time(5000, || session_info(&m, ags));
    let local_rt = median_time(5000, || session_info(&m, hs));

    let exe = std::env::current_exe().expect("current_exe");
    let mut scaling = Vec::new();
    let mut pairs = Vec::new();
    for _ in 0..3 {
        let one = processes_together(&exe, &agent_only, 1);
        let two = processes_together(&exe, &agent_only, 2);
        scaling.push(two / one);
        pairs.push((one, two));
    }
    let _ = agent.kill();
    let _ = agent.wait();

    println!("ML-DSA-87 sign, one thread (ops/s, median of {ROUNDS} alternating rounds)");
    println!("  through the agent slot       {through_agent:>10.0}");
    println!("  in-process custody 2         {in_process:>10.0}");
    println!("  raw pqcrypto-mldsa           {raw:>10.0}");
    println!(
        "  agent / in-process custody 2 {:>10.3}   (target >= 0.85)",
        through_agent / in_process
    );
    println!("Two client processes through the agent, together / one alone (ops/s)");
    for (one, two) in &pairs {
        println!("  one {one:>8.0}   two {two:>8.0}   ratio {:.3}", two / one);
    }
    scaling.sort_by(|a, b| a.total_cmp(b));
    println!("  median ratio {:.3}   (target >= 1.6)", scaling[1]);
    println!("Round trip of C_GetSessionInfo (median of 5000)");
    println!(
        "  through the agent slot  {:>8.1} us",
        agent_rt.as_secs_f64() * 1e6
    );
    println!(
        "  in-process (pkcs11 slot, SoftHSM2) {:>8.1} us",
        local_rt.as_secs_f64() * 1e6
    );
}

fn nix_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            let out = Command::new("id").arg("-un").output().expect("id -un");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        })
}

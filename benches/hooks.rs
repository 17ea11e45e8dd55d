//! The cost of the operations hooks (issue "High availability and operations"): ML-DSA-87
//! `C_Sign` on an embedded token through the module with the audit trail and metrics on, with
//! both off, and raw `pqcrypto-mldsa`, in alternating rounds of one run. The module is
//! finalized and initialized again between rounds with the other configuration (outside the
//! timing); the key is a token key, found again after each initialization.
//!
//! `cargo build --release --lib --bins && cargo bench --bench hooks`.

use cryptoki_sys::*;
use std::path::Path;
use std::ptr;
use std::time::Instant;

#[macro_use]
mod common;

use common::*;

const MESSAGE: &[u8; 32] = b"b4ae-pkcs11 benchmark message 32";
const PIN: &str = "user-pin";

fn config(dir: &Path, hooks: bool) -> std::path::PathBuf {
    let conf = dir.join(if hooks { "hooks.toml" } else { "plain.toml" });
    let mut text = format!(
        "[[token]]\nlabel = \"bench\"\npath = \"{}\"\npin_kdf = \"test-only-fast\"\n",
        dir.join("token").display()
    );
    if hooks {
        text += &format!(
            "\n[audit]\npath = \"{0}/audit.jsonl\"\n\n[metrics]\npath = \"{0}/metrics.prom\"\ninterval_ms = 1000\n",
            dir.display()
        );
    }
    std::fs::write(&conf, text).expect("write config");
    conf
}

/// Initializes the module with `conf`, logs in; returns the session and the signing key.
fn start(m: &Module, conf: &Path) -> (CK_SESSION_HANDLE, CK_OBJECT_HANDLE) {
    std::env::set_var("B4AE_PKCS11_CONF", conf);
    rv("C_Initialize", call!(m, C_Initialize(ptr::null_mut())));
    let s = open_rw(m, 0);
    login_as(m, s, CKU_USER, PIN);
    let class = CKO_PRIVATE_KEY;
    let mut template = [attr(CKA_CLASS, &class)];
    rv(
        "C_FindObjectsInit",
        call!(m, C_FindObjectsInit(s, template.as_mut_ptr(), 1)),
    );
    let (mut key, mut n) = (0, 0);
    rv(
        "C_FindObjects",
        call!(m, C_FindObjects(s, &mut key, 1, &mut n)),
    );
    rv("C_FindObjectsFinal", call!(m, C_FindObjectsFinal(s)));
    assert_eq!(n, 1, "the token's key");
    (s, key)
}

/// The token, with one ML-DSA-87 token key pair.
fn make_token(m: &Module, conf: &Path) {
    std::env::set_var("B4AE_PKCS11_CONF", conf);
    rv("C_Initialize", call!(m, C_Initialize(ptr::null_mut())));
    let s = init_bench_token(m, PIN);
    let (yes, set): (CK_BBOOL, CK_ULONG) = (CK_TRUE, CKP_ML_DSA_87);
    let mut public = [attr(CKA_PARAMETER_SET, &set), attr(CKA_TOKEN, &yes)];
    let mut private = [attr(CKA_TOKEN, &yes), attr(CKA_SIGN, &yes)];
    key_pair(m, s, CKM_ML_DSA_KEY_PAIR_GEN, &mut public, &mut private);
    rv("C_Finalize", call!(m, C_Finalize(ptr::null_mut())));
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (plain, hooked) = (config(dir.path(), false), config(dir.path(), true));
    let m = load(&module_path());
    make_token(&m, &plain);
    let (_, raw_sk) = pqcrypto_mldsa::mldsa87::keypair();
    let mut sig = vec![0u8; 4627];
    let mut measure = |conf: &Path| {
        let (s, sk) = start(&m, conf);
        for _ in 0..20 {
            sign(&m, s, CKM_ML_DSA, sk, MESSAGE, &mut sig);
        }
        let ops = round(&mut || sign(&m, s, CKM_ML_DSA, sk, MESSAGE, &mut sig));
        rv("C_Finalize", call!(m, C_Finalize(ptr::null_mut())));
        ops
    };
    let mut raw = || {
        std::hint::black_box(pqcrypto_mldsa::mldsa87::detached_sign_ctx(
            MESSAGE, b"", &raw_sk,
        ));
    };
    let started = Instant::now();
    let mut rows: [Vec<f64>; 3] = Default::default();
    for _ in 0..ROUNDS {
        rows[0].push(measure(&hooked));
        rows[1].push(measure(&plain));
        rows[2].push(round(&mut raw));
    }
    for r in &mut rows {
        r.sort_by(|a, b| a.total_cmp(b));
    }
    let [hooks, none, raw] = rows.map(|r| r[ROUNDS / 2]);
    println!(
        "ML-DSA-87 C_Sign, embedded token, 32-byte message (ops/s, median of {ROUNDS} alternating rounds, {:.0} s)",
        started.elapsed().as_secs_f64()
    );
    println!("{:<34} {:>10} {:>10}", "", "ops/s", "÷ raw");
    for (name, ops) in [
        ("module, audit trail + metrics on", hooks),
        ("module, both off", none),
        ("pqcrypto-mldsa, called directly", raw),
    ] {
        println!("{name:<34} {ops:>10.0} {:>10.3}", ops / raw);
    }
    println!("hooks on ÷ hooks off: {:.3}", hooks / none);
    let metrics = std::fs::read_to_string(dir.path().join("metrics.prom")).unwrap_or_default();
    assert!(
        metrics.contains("function=\"C_Sign\",rv=\"CKR_OK\""),
        "the metrics file counts the signatures"
    );
}

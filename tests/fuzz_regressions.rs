//! Replays every input of `fuzz/regressions/` through the ABI fuzzing harness
//! (`fuzz/harness.rs`, the same code the libFuzzer target runs), on stable, in `cargo test`: a
//! crash the fuzzer once found stays fixed, and the seed inputs there keep every family of
//! calls exercised.
//!
//! Unlike the other test files, this one links the module's rlib into the test program (as the
//! fuzz target does) instead of loading the built `.so`: the harness's panic hook then sees a
//! panic inside the module even though the module catches it at its border.
//!
//! Every input is replayed twice: on the embedded token (in this process) and on a
//! pkcs11-backend token over SoftHSM2 (this test program again, in a child process with
//! `B4AE_FUZZ_BACKEND=pkcs11`: the harness is set up once per process).
//!
//! One input alone, with every call and its answer printed:
//! `B4AE_FUZZ_REPLAY=path/to/input B4AE_FUZZ_TRACE=1 cargo test --test fuzz_regressions -- --nocapture`

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One input running longer than this is a hang (debug builds are slow: generous).
const INPUT_LIMIT: Duration = Duration::from_secs(120);

/// The input running now and since when, for the watchdog.
static RUNNING: Mutex<Option<(PathBuf, Instant)>> = Mutex::new(None);

fn inputs() -> Vec<PathBuf> {
    if let Some(one) = std::env::var_os("B4AE_FUZZ_REPLAY") {
        return vec![PathBuf::from(one)];
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file() && path.extension().is_none_or(|e| e != "md"))
        .collect();
    files.sort();
    files
}

/// Aborts the test program when one input runs past [`INPUT_LIMIT`] (a hang in the module
/// would otherwise hold the whole test run).
fn start_watchdog() {
    std::thread::spawn(|| loop {
        std::thread::sleep(Duration::from_secs(1));
        let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((path, since)) = running.as_ref() {
            if since.elapsed() > INPUT_LIMIT {
                eprintln!(
                    "B4AE FUZZ FINDING: {} still runs after {INPUT_LIMIT:?}: a hang",
                    path.display()
                );
                std::process::abort();
            }
        }
    });
}

#[test]
fn every_regression_input_replays_without_a_finding() {
    let files = inputs();
    assert!(!files.is_empty(), "fuzz/regressions/ holds no input");
    start_watchdog();
    let started = Instant::now();
    let mut failures = Vec::new();
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) = Some((path.clone(), Instant::now()));
        let outcome = std::panic::catch_unwind(|| harness::run(&data));
        *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{}:\n{message}", path.display()));
        }
    }
    eprintln!(
        "replayed {} inputs of fuzz/regressions/ in {:.1?}",
        files.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} inputs found something (replay one with B4AE_FUZZ_REPLAY=<file> \
         B4AE_FUZZ_TRACE=1):\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

/// The same inputs on the pkcs11 backend: the test above, run by a child process whose
/// harness drives a token over SoftHSM2.
#[test]
fn every_regression_input_replays_on_the_pkcs11_backend() {
    if std::env::var_os("B4AE_FUZZ_BACKEND").is_some() {
        return; // the child itself (or a run that chose its backend)
    }
    let output = std::process::Command::new(std::env::current_exe().expect("test program"))
        .args([
            "--exact",
            "every_regression_input_replays_without_a_finding",
            "--nocapture",
        ])
        .env("B4AE_FUZZ_BACKEND", "pkcs11")
        .output()
        .expect("running the test program again");
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!(
        "pkcs11 backend: {}",
        stderr
            .lines()
            .filter(|l| l.starts_with("replayed"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert!(
        output.status.success() && stderr.contains("replayed"),
        "on the pkcs11 backend:\n{}\n{stderr}",
        String::from_utf8_lossy(&output.stdout)
    );
}

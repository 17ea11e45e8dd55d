//! Metrics (SPEC §6, `[metrics] path`): the module's Prometheus text file, rewritten while the
//! application runs and once more at `C_Finalize`, counting what the application did through
//! the C ABI. (pkcs11-test-suite/python checks the files of its clients with the Prometheus
//! project's own parser.)

#[macro_use]
mod common;

use common::*;
use cryptoki::session::UserType;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn config(dir: &Path) -> PathBuf {
    let conf = dir.join("b4ae.toml");
    std::fs::write(
        &conf,
        format!(
            "[[token]]\nlabel = \"measured\"\npath = \"{0}/token\"\npin_kdf = \"test-only-fast\"\n\n\
             [metrics]\npath = \"{0}/metrics-{{pid}}.prom\"\ninterval_ms = 100\n",
            dir.display()
        ),
    )
    .unwrap();
    conf
}

/// The value of the sample line `name{labels}` (labels exactly as written), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn metrics_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "prom"))
        .collect();
    assert_eq!(files.len(), 1, "one file per process: {files:?}");
    files.into_iter().next().unwrap()
}

#[test]
fn the_metrics_file_counts_calls_answers_operations_and_sessions() {
    let name = test_name!();
    if is_child(name) {
        let dir = PathBuf::from(std::env::var("B4AE_METRICS_DIR").unwrap());
        let pkcs11 = load_module();
        initialize(&pkcs11);
        let slot = ok(pkcs11.get_all_slots())[0];
        init_token(&pkcs11, slot, "measured");
        let session = ok(pkcs11.open_rw_session(slot));
        assert!(session
            .login(UserType::User, Some(&pin("wrong-pin-00")))
            .is_err());
        ok(session.login(UserType::User, Some(&pin(USER_PIN))));
        let (public, private) = mldsa_keypair(&session, Ps::P87, true, &[]);
        let mechanism = pure_ml_dsa();
        for _ in 0..5 {
            let signature = ok(session.sign(&mechanism, private, MESSAGE));
            ok(session.verify(&mechanism, public, MESSAGE, &signature));
        }
        assert!(session
            .verify(&mechanism, public, MESSAGE, &[0; 4627])
            .is_err());
        // SAFETY: a handle that names nothing, only ever passed to the module, which must refuse it.
        let bogus = unsafe { cryptoki::object::ObjectHandle::new_from_raw(999_999) };
        assert!(session.sign(&mechanism, bogus, MESSAGE).is_err());
        // The writer rewrites the file while the application runs.
        std::thread::sleep(Duration::from_millis(400));
        let running = std::fs::read_to_string(metrics_file(&dir)).expect("metrics file");
        assert_eq!(
            sample(&running, "b4ae_pkcs11_sessions{slot=\"0\"}"),
            Some(1.0),
            "{running}"
        );
        assert!(sample(
            &running,
            "b4ae_pkcs11_calls_total{function=\"C_Sign\",rv=\"CKR_OK\"}"
        )
        .is_some_and(|n| n >= 5.0));
        ok(session.logout());
        drop(session);
        ok(pkcs11.finalize());
        return;
    }
    let dir = temp_dir("b4ae-metrics-");
    let conf = config(dir.path());
    run_child(name, &conf, &[("B4AE_METRICS_DIR", text_of(dir.path()))]);

    let text = std::fs::read_to_string(metrics_file(dir.path())).expect("metrics file");
    let value = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series}\n{text}"));
    // cryptoki asks the signature's length first: two C_Sign calls per signature.
    assert_eq!(
        value("b4ae_pkcs11_calls_total{function=\"C_Sign\",rv=\"CKR_OK\"}"),
        10.0
    );
    assert_eq!(
        value("b4ae_pkcs11_calls_total{function=\"C_Verify\",rv=\"CKR_OK\"}"),
        5.0
    );
    assert_eq!(
        value("b4ae_pkcs11_calls_total{function=\"C_Verify\",rv=\"CKR_SIGNATURE_INVALID\"}"),
        1.0
    );
    assert_eq!(
        value("b4ae_pkcs11_calls_total{function=\"C_SignInit\",rv=\"CKR_KEY_HANDLE_INVALID\"}"),
        1.0
    );
    assert_eq!(
        value("b4ae_pkcs11_calls_total{function=\"C_Login\",rv=\"CKR_PIN_INCORRECT\"}"),
        1.0
    );
    assert_eq!(
        value(
            "b4ae_pkcs11_operations_total{operation=\"sign\",mechanism=\"CKM_ML_DSA\",rv=\"CKR_OK\"}"
        ),
        5.0
    );
    assert_eq!(
        value("b4ae_pkcs11_operations_total{operation=\"generate_key_pair\",mechanism=\"CKM_ML_DSA_KEY_PAIR_GEN\",rv=\"CKR_OK\"}"),
        1.0
    );
    // The histogram: cumulative buckets, +Inf equal to the count, one per C_Sign.
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("b4ae_pkcs11_call_duration_seconds_bucket{function=\"C_Sign\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(buckets.last(), Some(&10.0));
    assert_eq!(
        value("b4ae_pkcs11_call_duration_seconds_count{function=\"C_Sign\"}"),
        10.0
    );
    assert!(value("b4ae_pkcs11_call_duration_seconds_sum{function=\"C_Sign\"}") > 0.0);
    // Written again at C_Finalize: no session is left.
    assert_eq!(value("b4ae_pkcs11_sessions{slot=\"0\"}"), 0.0);
    for family in [
        "# TYPE b4ae_pkcs11_calls_total counter",
        "# TYPE b4ae_pkcs11_call_duration_seconds histogram",
        "# TYPE b4ae_pkcs11_operations_total counter",
        "# TYPE b4ae_pkcs11_key_cache_total counter",
        "# TYPE b4ae_pkcs11_sessions gauge",
    ] {
        assert!(text.contains(family), "{family}\n{text}");
    }
    assert!(!text.contains(USER_PIN));
}

fn text_of(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

#[test]
fn a_process_that_exits_without_c_finalize_leaves_its_counts() {
    let name = test_name!();
    if is_child(name) {
        let pkcs11 = load_module();
        initialize(&pkcs11);
        let slot = ok(pkcs11.get_all_slots())[0];
        init_token(&pkcs11, slot, "measured");
        let session = ok(pkcs11.open_rw_session(slot));
        ok(session.login(UserType::User, Some(&pin(USER_PIN))));
        let mut random = [0u8; 16];
        ok(session.generate_random_slice(&mut random));
        // Gone long before the writer's first round, without C_Finalize (as most programs);
        // the line run_child looks for says that the child got here.
        println!("1 passed");
        std::process::exit(0);
    }
    let dir = temp_dir("b4ae-metrics-exit-");
    let conf = dir.path().join("b4ae.toml");
    std::fs::write(
        &conf,
        format!(
            "[[token]]\npath = \"{0}/token\"\npin_kdf = \"test-only-fast\"\n\n\
             [metrics]\npath = \"{0}/metrics.prom\"\ninterval_ms = 600000\n",
            dir.path().display()
        ),
    )
    .unwrap();
    run_child(name, &conf, &[]);
    let text = std::fs::read_to_string(dir.path().join("metrics.prom")).expect("written at exit");
    assert_eq!(
        sample(
            &text,
            "b4ae_pkcs11_calls_total{function=\"C_GenerateRandom\",rv=\"CKR_OK\"}"
        ),
        Some(1.0),
        "{text}"
    );
}

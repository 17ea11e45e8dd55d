//! Replicas and failover (issue "High availability and operations"): one B4AE slot served by
//! two SoftHSM2 instances in one process, the second a clone of the first token's files. Each
//! replica is tests/forward_common/replica_hsm.c (a shim with a switchable fault) over its own
//! copy of libsofthsm2.so with its own SOFTHSM2_CONF; the test dlopens the same shim path to
//! reach the same instance and flip its mode. The first replica fails (CKR_DEVICE_ERROR, then
//! vanishes) in the middle of signing loops on two sessions, comes back (fail-back), then both
//! fail, then one returns. Throughout, the application keeps its sessions and object handles:
//! it never searches again after the start.
//!
//! Each scenario runs in a child process (the module and the shims are process-wide).

#[macro_use]
mod common;
mod forward_common;
#[path = "forward_common/replica_rig.rs"]
mod replica_rig;

use common::*;
use cryptoki::context::Pkcs11;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki_sys::*;
use forward_common::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The replicated token's label on both SoftHSM2 instances.
const LABEL: &str = "Replicated";
/// Where a child finds the rig.
const RIG_VAR: &str = "B4AE_REPLICA_RIG";
/// How often the module probes a failed replica in these tests.
const PROBE_MS: u64 = 100;

/// A digest-sized message for CKM_ECDSA.
const DIGEST: [u8; 32] = [0x5a; 32];

// ---------------------------------------------------------------------------------------------
// The rig

/// The module's configuration for the replicated token.
fn replicated_conf(rig: &Path, balance: &str, labels: [&str; 2]) -> PathBuf {
    let conf = rig.join(format!("b4ae-{balance}-{}-{}.toml", labels[0], labels[1]));
    std::fs::write(
        &conf,
        format!(
            "[[token]]\nlabel = \"Cluster\"\nbackend = \"pkcs11\"\n\
             library = \"{a}\"\ntoken_label = \"{l0}\"\n\
             replicas = [ {{ library = \"{b}\", token_label = \"{l1}\" }} ]\n\
             balance = \"{balance}\"\nprobe_interval_ms = {PROBE_MS}\nstate_dir = \"{state}\"\n\n\
             [audit]\npath = \"{audit}\"\n\n[metrics]\npath = \"{metrics}\"\ninterval_ms = 200\n",
            a = rig.join("a/libreplica.so").display(),
            b = rig.join("b/libreplica.so").display(),
            l0 = labels[0],
            l1 = labels[1],
            state = rig.join("state").display(),
            audit = rig.join("audit.jsonl").display(),
            metrics = rig.join(format!("metrics-{balance}.prom")).display(),
        ),
    )
    .expect("configuration");
    conf
}

/// Two replicas holding the same token: an EC P-256 pair ("ec") the HSM keeps and an
/// ML-DSA-65 pair ("pq") sealed under the HSM's storage key, made through the module on the
/// first, whose token files are then copied to the second.
fn rig() -> tempfile::TempDir {
    let rig = temp_dir("b4ae-replicas-");
    let shim = replica_rig::build_shim(rig.path());
    let a = replica_rig::place(rig.path(), "a", &shim, 0);
    let b = replica_rig::place(rig.path(), "b", &shim, 0);
    replica_rig::init_token(&a, LABEL, HSM_PIN);
    let single = rig.path().join("single.toml");
    std::fs::write(
        &single,
        format!(
            "[[token]]\nlabel = \"One\"\nbackend = \"pkcs11\"\nlibrary = \"{SOFTHSM_LIB}\"\n\
             token_label = \"{LABEL}\"\nstate_dir = \"{}\"\n",
            rig.path().join("state").display()
        ),
    )
    .expect("configuration");
    let softhsm_conf = a.join("softhsm2.conf");
    run_child(
        "the_rig_s_keys_are_made_through_the_module",
        &single,
        &[(SOFTHSM_CONF_VAR, text(&softhsm_conf))],
    );
    replica_rig::clone_tokens(&a, &b);
    rig
}

#[test]
fn the_rig_s_keys_are_made_through_the_module() {
    if !is_child(test_name!()) {
        return;
    }
    let module = load_module();
    initialize(&module);
    let slot = ok(module.get_slots_with_token())[0];
    let session = ok(module.open_rw_session(slot));
    ok(session.login(UserType::User, Some(&pin(HSM_PIN))));
    ec_keypair(&session, "ec");
    pq_keypair(&session, Ps::P65, "pq", false);
    ok(session.logout());
}

/// A replica's shim instance in this process (the one the module loaded).
struct Shim(libloading::Library);

impl Shim {
    fn open(path: &Path) -> Self {
        // SAFETY: the test's own shim, already loaded by the module; loading it again only
        // takes a reference to the same instance.
        Shim(unsafe { libloading::Library::new(path) }.expect("loading the shim"))
    }

    fn set_mode(&self, mode: i32) {
        // SAFETY: the shim exports `void replica_hsm_set_mode(int)`.
        unsafe {
            let f: libloading::Symbol<unsafe extern "C" fn(i32)> = self
                .0
                .get(b"replica_hsm_set_mode")
                .expect("replica_hsm_set_mode");
            f(mode)
        }
    }

    fn signs(&self) -> std::ffi::c_ulong {
        // SAFETY: the shim exports `unsigned long replica_hsm_signs(void)`.
        unsafe {
            let f: libloading::Symbol<unsafe extern "C" fn() -> std::ffi::c_ulong> =
                self.0.get(b"replica_hsm_signs").expect("replica_hsm_signs");
            f()
        }
    }
}

const UP: i32 = 0;
const ERROR: i32 = 1;
const GONE: i32 = 2;

/// The rig's keys, found once.
#[derive(Clone, Copy)]
struct Keys {
    ec_public: ObjectHandle,
    ec_private: ObjectHandle,
    pq_public: ObjectHandle,
    pq_private: ObjectHandle,
}

fn find_one(session: &Session, class: ObjectClass, key_type: KeyType, label: &str) -> ObjectHandle {
    let template = [
        Attribute::Class(class),
        Attribute::KeyType(key_type),
        Attribute::Label(label.into()),
    ];
    let found = ok(session.find_objects(&template));
    assert_eq!(found.len(), 1, "{label} {class:?}: {found:?}");
    found[0]
}

fn find_keys(session: &Session) -> Keys {
    Keys {
        ec_public: find_one(session, ObjectClass::PUBLIC_KEY, KeyType::EC, "ec"),
        ec_private: find_one(session, ObjectClass::PRIVATE_KEY, KeyType::EC, "ec"),
        pq_public: find_one(session, ObjectClass::PUBLIC_KEY, KeyType::ML_DSA, "pq"),
        pq_private: find_one(session, ObjectClass::PRIVATE_KEY, KeyType::ML_DSA, "pq"),
    }
}

/// One round: an ECDSA signature in the HSM and an ML-DSA-65 one with the sealed key, each
/// verified through the module. The first refusal is the round's answer.
fn round(session: &Session, keys: &Keys) -> Result<(), CK_RV> {
    let rv = |e: cryptoki::error::Error| Err::<(), _>(e).to_rv();
    let signature = session
        .sign(&Mechanism::Ecdsa, keys.ec_private, &DIGEST)
        .map_err(rv)?;
    session
        .verify(&Mechanism::Ecdsa, keys.ec_public, &DIGEST, &signature)
        .map_err(rv)?;
    let mechanism = pure_ml_dsa();
    let signature = session
        .sign(&mechanism, keys.pq_private, MESSAGE)
        .map_err(rv)?;
    session
        .verify(&mechanism, keys.pq_public, MESSAGE, &signature)
        .map_err(rv)
}

/// What a signing loop saw: when each round ended, its answer and how long it took.
type Rounds = Arc<Mutex<Vec<(Instant, Result<(), CK_RV>, Duration)>>>;

/// A session signing in rounds on its own thread until `stop`.
fn signer(
    module: &Pkcs11,
    slot: cryptoki::slot::Slot,
    keys: Keys,
    stop: Arc<AtomicBool>,
) -> (std::thread::JoinHandle<()>, Rounds) {
    let rounds: Rounds = Arc::default();
    let seen = rounds.clone();
    let module = module.clone();
    let thread = std::thread::spawn(move || {
        let session = ok(module.open_rw_session(slot));
        while !stop.load(Ordering::SeqCst) {
            let start = Instant::now();
            let answer = round(&session, &keys);
            seen.lock()
                .unwrap()
                .push((Instant::now(), answer, start.elapsed()));
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    (thread, rounds)
}

/// The rounds that ended within `[from, to)`.
fn between(
    rounds: &[(Instant, Result<(), CK_RV>, Duration)],
    from: Instant,
    to: Instant,
) -> Vec<(Instant, Result<(), CK_RV>, Duration)> {
    rounds
        .iter()
        .filter(|(t, _, _)| *t >= from && *t < to)
        .cloned()
        .collect()
}

fn failures(rounds: &[(Instant, Result<(), CK_RV>, Duration)]) -> Vec<CK_RV> {
    rounds.iter().filter_map(|(_, r, _)| r.err()).collect()
}

fn names(codes: &[CK_RV]) -> Vec<String> {
    codes.iter().map(|c| rv_name(*c)).collect()
}

/// Time from `from` to the first successful round after it.
fn time_to_success(rounds: &[(Instant, Result<(), CK_RV>, Duration)], from: Instant) -> Duration {
    rounds
        .iter()
        .find(|(t, r, _)| *t > from && r.is_ok())
        .map(|(t, _, _)| *t - from)
        .expect("a successful round after the switch")
}

/// In a child: the module initialized over the rig, its two replicas' shims, and the slot.
fn join_rig() -> (Pkcs11, Shim, Shim, cryptoki::slot::Slot) {
    let rig = PathBuf::from(std::env::var(RIG_VAR).expect("the rig's directory"));
    let module = load_module();
    initialize(&module);
    let shims = (
        Shim::open(&rig.join("a/libreplica.so")),
        Shim::open(&rig.join("b/libreplica.so")),
    );
    let slot = ok(module.get_slots_with_token())[0];
    (module, shims.0, shims.1, slot)
}

#[test]
fn the_first_replica_fails_mid_signing_then_returns_then_both_fail() {
    if !is_child(test_name!()) {
        let rig = rig();
        let conf = replicated_conf(rig.path(), "failover", [LABEL, LABEL]);
        let out = run_child(test_name!(), &conf, &[(RIG_VAR, text(rig.path()))]);
        for line in out.lines().filter(|l| l.starts_with("replicas:")) {
            println!("{line}");
        }
        let audit = std::fs::read_to_string(rig.path().join("audit.jsonl")).expect("audit");
        assert!(audit.contains("\"replica_down\""), "{audit}");
        assert!(audit.contains("\"replica_up\""), "{audit}");
        assert!(
            !audit.contains(&format!("\"{HSM_PIN}\"")),
            "the PIN in the audit trail"
        );
        let verify = admin(
            &["audit", "verify", text(&rig.path().join("audit.jsonl"))],
            &conf,
        );
        assert_success("audit verify", &verify);
        // The metrics file the child left: each replica's state and failures.
        let metrics = std::fs::read_to_string(rig.path().join("metrics-failover.prom"))
            .expect("metrics file");
        for line in [
            "b4ae_pkcs11_replica_failures_total{slot=\"0\",replica=\"0\"} 2",
            "b4ae_pkcs11_replica_failures_total{slot=\"0\",replica=\"1\"} 1",
        ] {
            assert!(metrics.contains(line), "{line}\n{metrics}");
        }
        assert_eq!(
            metrics.matches("b4ae_pkcs11_replica_up{slot=\"0\"").count(),
            2,
            "{metrics}"
        );
        return;
    }
    let (module, a, b, slot) = join_rig();
    let main = ok(module.open_rw_session(slot));
    ok(main.login(UserType::User, Some(&pin(HSM_PIN))));
    let keys = find_keys(&main);
    let public_ec = attr_bytes(&main, keys.ec_public, CKA_EC_POINT);
    let public_pq = attr_bytes(&main, keys.pq_public, CKA_VALUE);
    // A session object lives where it was made: after a failover its handle names nothing.
    let session_key = aes_key(&main, "session-only", false);
    round(&main, &keys).expect("a round on the first replica");

    let stop = Arc::new(AtomicBool::new(false));
    let signers: Vec<_> = (0..2)
        .map(|_| signer(&module, slot, keys, stop.clone()))
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    let (a_before, b_before) = (a.signs(), b.signs());
    assert!(a_before > 0, "the first replica signs while it is up");
    assert_eq!(b_before, 0, "failover balance: the second replica idles");

    let t_error = Instant::now();
    a.set_mode(ERROR);
    std::thread::sleep(Duration::from_millis(600));
    let t_gone = Instant::now();
    a.set_mode(GONE);
    std::thread::sleep(Duration::from_millis(600));
    let (a_failed, b_failed) = (a.signs(), b.signs());
    assert!(b_failed > b_before, "the second replica took over");

    let t_back = Instant::now();
    a.set_mode(UP);
    std::thread::sleep(Duration::from_millis(800));
    let a_back = a.signs();
    assert!(
        a_back > a_failed,
        "fail-back: the first replica signs again"
    );

    let t_both = Instant::now();
    a.set_mode(ERROR);
    b.set_mode(ERROR);
    std::thread::sleep(Duration::from_millis(600));
    // With no replica, a new session is refused cleanly too.
    assert_rv(module.open_rw_session(slot), CKR_DEVICE_ERROR);
    let t_second = Instant::now();
    b.set_mode(UP);
    std::thread::sleep(Duration::from_millis(800));
    let t_end = Instant::now();
    stop.store(true, Ordering::SeqCst);
    let mut all_rounds = Vec::new();
    for (thread, rounds) in signers {
        thread.join().expect("signer");
        all_rounds.push(rounds.lock().unwrap().clone());
    }
    a.set_mode(UP);

    for (i, rounds) in all_rounds.iter().enumerate() {
        let at_error = between(rounds, t_error, t_gone);
        let error_failures = failures(&at_error);
        println!(
            "replicas: session {i}: first replica fails: {} of {} rounds failed {:?}, \
             switched in {:?}",
            error_failures.len(),
            at_error.len(),
            names(&error_failures),
            time_to_success(rounds, t_error)
        );
        assert!(
            error_failures.len() <= 1,
            "session {i}: {:?}",
            names(&error_failures)
        );
        assert!(error_failures.iter().all(|f| *f == CKR_DEVICE_ERROR));
        for (phase, from, to) in [("vanished", t_gone, t_back), ("fail-back", t_back, t_both)] {
            let seen = between(rounds, from, to);
            let failed = failures(&seen);
            println!(
                "replicas: session {i}: {phase}: {} of {} rounds failed {:?}",
                failed.len(),
                seen.len(),
                names(&failed)
            );
            assert!(
                failed.is_empty(),
                "session {i} {phase}: {:?}",
                names(&failed)
            );
            assert!(seen.len() > 5, "session {i} {phase}: {} rounds", seen.len());
        }
        let down = between(rounds, t_both + Duration::from_millis(50), t_second);
        let slowest = down.iter().map(|(_, _, d)| *d).max().unwrap_or_default();
        let codes = failures(&down);
        println!(
            "replicas: session {i}: both down: {} of {} rounds failed, slowest {slowest:?}",
            codes.len(),
            down.len()
        );
        assert_eq!(codes.len(), down.len(), "both down, yet a round succeeded");
        assert!(
            codes.iter().all(|c| *c == CKR_DEVICE_ERROR),
            "{:?}",
            names(&codes)
        );
        assert!(
            slowest < Duration::from_secs(1),
            "a call waited {slowest:?}"
        );
        let recovered = time_to_success(rounds, t_second);
        let late = between(rounds, t_second + recovered, t_end);
        println!(
            "replicas: session {i}: second replica back: signing again after {recovered:?}, \
             then {} of {} rounds failed",
            failures(&late).len(),
            late.len()
        );
        assert!(failures(&late).is_empty());
    }

    // The application's handles and login outlived it all.
    round(&main, &keys).expect("the main session signs with its handles of the start");
    assert_eq!(attr_bytes(&main, keys.ec_public, CKA_EC_POINT), public_ec);
    assert_eq!(attr_bytes(&main, keys.pq_public, CKA_VALUE), public_pq);
    let info = ok(main.get_session_info());
    assert_eq!(
        info.session_state(),
        cryptoki::session::SessionState::RwUser
    );
    assert_rv(
        main.get_attributes(session_key, &[cryptoki::object::AttributeType::Label]),
        CKR_OBJECT_HANDLE_INVALID,
    );
    ok(main.logout());
}

#[test]
fn round_robin_spreads_sessions_and_a_failed_replica_s_sessions_move() {
    if !is_child(test_name!()) {
        let rig = rig();
        let conf = replicated_conf(rig.path(), "round-robin", [LABEL, LABEL]);
        let out = run_child(test_name!(), &conf, &[(RIG_VAR, text(rig.path()))]);
        for line in out.lines().filter(|l| l.starts_with("replicas:")) {
            println!("{line}");
        }
        return;
    }
    let (module, a, b, slot) = join_rig();
    let sessions: Vec<Session> = (0..4).map(|_| ok(module.open_rw_session(slot))).collect();
    ok(sessions[0].login(UserType::User, Some(&pin(HSM_PIN))));
    let keys = find_keys(&sessions[1]);
    for session in &sessions {
        // Logged in everywhere: the login is the token's, whichever replica serves a session.
        let info = ok(session.get_session_info());
        assert_eq!(
            info.session_state(),
            cryptoki::session::SessionState::RwUser
        );
        for _ in 0..3 {
            round(session, &keys).expect("a round");
        }
    }
    let (a_signs, b_signs) = (a.signs(), b.signs());
    println!("replicas: round-robin over 4 sessions: {a_signs} signatures on the first, {b_signs} on the second");
    assert_eq!((a_signs, b_signs), (6, 6), "two sessions on each replica");

    // An operation in flight on a replica that fails: that call fails (once), the
    // operation is over, and the next one runs on the other replica.
    let on_a = sessions
        .iter()
        .position(|s| {
            let before = a.signs();
            round(s, &keys).expect("a round");
            a.signs() > before
        })
        .expect("a session on the first replica");
    let in_flight = &sessions[on_a];
    // SoftHSM2 signs with ECDSA in one part only; its digests run in parts.
    ok(in_flight.digest_init(&Mechanism::Sha256));
    ok(in_flight.digest_update(MESSAGE));
    a.set_mode(ERROR);
    assert_rv(in_flight.digest_update(MESSAGE), CKR_DEVICE_ERROR);
    assert_rv(in_flight.digest_final(), CKR_OPERATION_NOT_INITIALIZED);
    round(in_flight, &keys).expect("the next operation, on the second replica");
    println!("replicas: an operation in flight when its replica failed: one CKR_DEVICE_ERROR, then served by the other");
    let (a_signs, b_signs) = (a.signs(), b.signs());

    a.set_mode(GONE);
    let mut failed = Vec::new();
    for session in &sessions {
        for _ in 0..3 {
            if let Err(rv) = round(session, &keys) {
                failed.push(rv_name(rv));
            }
        }
    }
    println!(
        "replicas: first replica gone: {} failed round(s) {failed:?}",
        failed.len()
    );
    assert!(
        failed.len() <= 2,
        "at most one per moved session: {failed:?}"
    );
    assert_eq!(a.signs(), a_signs);
    assert!(b.signs() >= b_signs + 12 - 2 * failed.len() as std::ffi::c_ulong);
    a.set_mode(UP);
    ok(sessions[0].logout());
}

// ---------------------------------------------------------------------------------------------
// Health

fn health(conf: &Path) -> (i32, serde_json::Value) {
    let output = admin(&["health", "--json"], conf);
    let doc = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "health --json: {e}\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().expect("exit code"), doc)
}

#[test]
fn health_tells_up_degraded_and_unserved_apart() {
    if is_child(test_name!()) {
        return;
    }
    let rig = rig();
    let (code, doc) = health(&replicated_conf(rig.path(), "failover", [LABEL, LABEL]));
    println!("replicas: health, both up: exit {code}: {doc}");
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["status"], "up");
    let replicas = doc["tokens"][0]["replicas"].as_array().expect("replicas");
    assert_eq!(replicas.len(), 2);
    assert!(replicas.iter().all(|r| r["state"] == "up"), "{doc}");

    let (code, doc) = health(&replicated_conf(rig.path(), "failover", [LABEL, "missing"]));
    println!("replicas: health, second replica without its token: exit {code}: {doc}");
    assert_eq!(code, 1, "{doc}");
    assert_eq!(doc["status"], "degraded");
    assert_eq!(doc["tokens"][0]["state"], "degraded");
    assert_eq!(doc["tokens"][0]["replicas"][1]["state"], "down");
    assert!(doc["tokens"][0]["replicas"][1]["error"].is_string());

    let (code, doc) = health(&replicated_conf(
        rig.path(),
        "failover",
        ["missing", "missing"],
    ));
    println!("replicas: health, no replica: exit {code}: {doc}");
    assert_eq!(code, 2, "{doc}");
    assert_eq!(doc["status"], "unserved");
    assert_eq!(doc["tokens"][0]["state"], "down");
}

//! Several processes create, use and destroy post-quantum token keys on ONE token at once, and
//! two of them are killed with SIGKILL in the middle (one while making keys, one while
//! destroying one). Then, in a fresh process:
//! - every key a worker reported made (after `C_GenerateKeyPair` / `C_CreateObject` returned
//!   CKR_OK for the token object) and did not report destroying is there, exactly once, whole,
//!   and still signs (or decapsulates);
//! - every key a worker reported destroyed (after `C_DestroyObject` returned CKR_OK for both
//!   halves) is gone;
//! - a key being made when its worker was killed is either absent or whole (both halves of a
//!   pair: `C_GenerateKeyPair` is one call), and usable; on the pkcs11 backend, where a pair is
//!   two HSM objects made one after the other, its public half alone may also be left;
//! - no other object appeared; the token opens, the user and the SO log in.
//!
//! On the embedded token (the SQLite store, checked with `PRAGMA integrity_check` too) and on
//! the pkcs11 backend over SoftHSM2 (SoftHSM's file store holds the sealed records there).
//!
//! Workers and the checker are this test binary re-run with `B4AE_MP_ROLE` set; each prints
//! one line per step on stdout, which the parent reads as it comes.

#[macro_use]
mod common;
mod forward_common;

use common::*;
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, MlKemParameterSetType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki_sys::*;
use forward_common::{OwnSoftHsm, HSM_PIN, HSM_SO_PIN, SOFTHSM_CONF_VAR, SOFTHSM_LIB};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ROLE_VAR: &str = "B4AE_MP_ROLE";
/// Starts every line a worker or the checker reports to the parent.
const MARK: &str = "@mp ";
const SLOT_VAR: &str = "B4AE_MP_SLOT";
const PIN_VAR: &str = "B4AE_MP_PIN";
const SO_PIN_VAR: &str = "B4AE_MP_SO_PIN";
const LEDGER_VAR: &str = "B4AE_MP_LEDGER";

const WORKERS: usize = 4;
const ROUNDS: usize = 14;
/// Worker killed while making keys, after this many reported keys.
const KILLED_MAKING: usize = 1;
const KILL_AFTER_CREATED: usize = 4;
/// Worker killed while destroying a key.
const KILLED_DESTROYING: usize = 3;
/// Everything a worker or the checker does must end within this.
const DEADLINE: Duration = Duration::from_secs(240);

const CKK_B4AE_DILITHIUM5: CK_KEY_TYPE = 0xB4AE_0001;
const CKK_B4AE_HYBRID: CK_KEY_TYPE = 0xB4AE_0002;
const CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN: CK_MECHANISM_TYPE = 0xB4AE_0001;
const CKM_B4AE_DILITHIUM5: CK_MECHANISM_TYPE = 0xB4AE_0002;
const CKM_B4AE_HYBRID_KEY_PAIR_GEN: CK_MECHANISM_TYPE = 0xB4AE_0003;
const CKM_B4AE_HYBRID: CK_MECHANISM_TYPE = 0xB4AE_0004;

// ---------------------------------------------------------------------------------------------
// The kinds of key the workers make

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    MlDsa44,
    MlDsa87,
    Dilithium5,
    Hybrid,
    MlKem768,
    /// An ML-DSA-65 private key imported from a seed with C_CreateObject (one object).
    Imported,
}

const KINDS: [Kind; 6] = [
    Kind::MlDsa44,
    Kind::Dilithium5,
    Kind::Hybrid,
    Kind::MlKem768,
    Kind::Imported,
    Kind::MlDsa87,
];

fn vendor(mechanism: CK_MECHANISM_TYPE) -> Mechanism<'static> {
    let kind = MechanismType::new_vendor_defined(mechanism).expect("vendor mechanism");
    Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(kind, None))
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::MlDsa44 => "mldsa44",
            Kind::MlDsa87 => "mldsa87",
            Kind::Dilithium5 => "dilithium5",
            Kind::Hybrid => "hybrid",
            Kind::MlKem768 => "mlkem768",
            Kind::Imported => "imported",
        }
    }

    fn from_label(label: &str) -> Kind {
        let name = label.rsplit('-').next().unwrap_or_default();
        let kind = KINDS.into_iter().find(|k| k.name() == name);
        kind.unwrap_or_else(|| panic!("label {label:?} names no kind"))
    }

    fn key_type(self) -> CK_KEY_TYPE {
        match self {
            Kind::MlDsa44 | Kind::MlDsa87 | Kind::Imported => CKK_ML_DSA,
            Kind::Dilithium5 => CKK_B4AE_DILITHIUM5,
            Kind::Hybrid => CKK_B4AE_HYBRID,
            Kind::MlKem768 => CKK_ML_KEM,
        }
    }

    /// Whether the key is a pair (made by C_GenerateKeyPair) rather than one private key.
    fn pair(self) -> bool {
        self != Kind::Imported
    }

    fn sign_mechanism(self) -> Option<Mechanism<'static>> {
        match self {
            Kind::MlDsa44 | Kind::MlDsa87 | Kind::Imported => Some(pure_ml_dsa()),
            Kind::Dilithium5 => Some(vendor(CKM_B4AE_DILITHIUM5)),
            Kind::Hybrid => Some(vendor(CKM_B4AE_HYBRID)),
            Kind::MlKem768 => None,
        }
    }

    /// Makes the key (token objects, both halves labelled `label`).
    fn make(self, session: &Session, label: &str, n: usize) -> cryptoki::error::Result<()> {
        let named = |mut t: Vec<Attribute>| {
            t.extend([
                Attribute::Token(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(label.as_bytes().to_vec()),
            ]);
            t
        };
        let ps = |p: Ps| Attribute::ParameterSet(p.parameter_set());
        let (mechanism, public, private) = match self {
            Kind::Imported => {
                let seed: Vec<u8> = (0..32u8).map(|i| i ^ (n as u8)).collect();
                let mut template = mldsa_private_template(Ps::P65, Attribute::Seed(seed));
                template.retain(|a| !matches!(a, Attribute::Token(_)));
                template.push(Attribute::Private(true));
                return session.create_object(&named(template)).map(drop);
            }
            Kind::MlDsa44 => (Mechanism::MlDsaKeyPairGen, vec![ps(Ps::P44)], vec![]),
            Kind::MlDsa87 => (Mechanism::MlDsaKeyPairGen, vec![ps(Ps::P87)], vec![]),
            Kind::Dilithium5 => (vendor(CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN), vec![], vec![]),
            Kind::Hybrid => (vendor(CKM_B4AE_HYBRID_KEY_PAIR_GEN), vec![], vec![]),
            Kind::MlKem768 => {
                let set = MlKemParameterSetType::ML_KEM_768;
                let public = vec![
                    Attribute::ParameterSet(set.into()),
                    Attribute::Encapsulate(true),
                ];
                (
                    Mechanism::MlKemKeyPairGen,
                    public,
                    vec![Attribute::Decapsulate(true)],
                )
            }
        };
        let (usage_public, usage_private) = match self {
            Kind::MlKem768 => (vec![], vec![]),
            _ => (vec![Attribute::Verify(true)], vec![Attribute::Sign(true)]),
        };
        let public = named([public, usage_public].concat());
        let mut private = named([private, usage_private].concat());
        private.push(Attribute::Private(true));
        session
            .generate_key_pair(&mechanism, &public, &private)
            .map(drop)
    }
}

/// The key's objects with this label: (public keys, private keys).
fn halves(session: &Session, label: &str) -> (Vec<ObjectHandle>, Vec<ObjectHandle>) {
    let find = |class| {
        let template = [
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        ok(session.find_objects(&template))
    };
    (
        find(ObjectClass::PUBLIC_KEY),
        find(ObjectClass::PRIVATE_KEY),
    )
}

/// Uses a key: signs and verifies (through the pair's public key when it has one), or
/// encapsulates and decapsulates. Errors are returned, for the caller to judge.
fn use_key(
    session: &Session,
    kind: Kind,
    public: Option<ObjectHandle>,
    private: ObjectHandle,
) -> Result<(), String> {
    let fail = |what: &str, e: cryptoki::error::Error| Err(format!("{what}: {e}"));
    match kind.sign_mechanism() {
        Some(mechanism) => {
            let signature = match session.sign(&mechanism, private, MESSAGE) {
                Ok(s) => s,
                Err(e) => return fail("C_Sign", e),
            };
            if let Some(public) = public {
                if let Err(e) = session.verify(&mechanism, public, MESSAGE, &signature) {
                    return fail("C_Verify", e);
                }
            }
        }
        None => {
            let public = public.ok_or("an ML-KEM key without its public half")?;
            let template = readable_shared_secret();
            let (ciphertext, sent) =
                match session.encapsulate_key(&Mechanism::MlKem, public, &template) {
                    Ok(x) => x,
                    Err(e) => return fail("C_EncapsulateKey", e),
                };
            let received =
                match session.decapsulate_key(&Mechanism::MlKem, private, &template, &ciphertext) {
                    Ok(k) => k,
                    Err(e) => return fail("C_DecapsulateKey", e),
                };
            let value = |k| get_attr(session.handle(), k, CKA_VALUE);
            if value(sent.handle()) != value(received.handle()) {
                return Err("decapsulation gave another secret".into());
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Worker and checker processes

fn role() -> Option<String> {
    std::env::var(ROLE_VAR).ok()
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

/// This process's own module instance, initialised, and the slot under test.
fn own_module() -> (cryptoki::context::Pkcs11, cryptoki::slot::Slot) {
    let pkcs11 = load_module();
    initialize(&pkcs11);
    let index: usize = env(SLOT_VAR).parse().expect("slot index");
    let slot = ok(pkcs11.get_all_slots())[index];
    (pkcs11, slot)
}

/// A read/write session logged in as `user` with the PIN in `pin_var`.
fn logged_in(
    pkcs11: &cryptoki::context::Pkcs11,
    slot: cryptoki::slot::Slot,
    user: UserType,
    pin_var: &str,
) -> Session {
    let session = ok(pkcs11.open_rw_session(slot));
    ok(session.login(user, Some(&pin(&env(pin_var)))));
    session
}

/// A worker: rounds of make, use, destroy an older key, use another worker's key.
fn worker(id: usize) {
    let (pkcs11, slot) = own_module();
    let session = logged_in(&pkcs11, slot, UserType::User, PIN_VAR);
    println!("@mp ready");
    let mut made: Vec<String> = Vec::new();
    for n in 0..ROUNDS {
        let kind = KINDS[(id + n) % KINDS.len()];
        let label = format!("mp-w{id}-{n:02}-{}", kind.name());
        println!("@mp creating {label}");
        ok(kind.make(&session, &label, n));
        println!("@mp created {label}");
        let (public, private) = halves(&session, &label);
        assert_eq!(private.len(), 1, "{label}: private halves {private:?}");
        assert_eq!(
            public.len(),
            kind.pair() as usize,
            "{label}: public halves {public:?}"
        );
        use_key(&session, kind, public.first().copied(), private[0])
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        made.push(label);
        if n % 3 == 2 {
            let old = made.remove(0);
            println!("@mp destroying {old}");
            let (public, private) = halves(&session, &old);
            for handle in private.into_iter().chain(public) {
                ok(session.destroy_object(handle));
            }
            println!("@mp destroyed {old}");
        }
        // Another worker's key, which may vanish under us: only "gone" is an acceptable error.
        let other = (id + 1 + n % (WORKERS - 1)) % WORKERS;
        let prefix = format!("mp-w{other}-");
        let keys = ok(session.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)]));
        for key in keys {
            let Ok(label) = get_attr(session.handle(), key.handle(), CKA_LABEL) else {
                continue;
            };
            let label = String::from_utf8_lossy(&label).into_owned();
            if !label.starts_with(&prefix) {
                continue;
            }
            let Some(mechanism) = Kind::from_label(&label).sign_mechanism() else {
                continue;
            };
            let signed = session.sign(&mechanism, key, MESSAGE);
            let gone = [CKR_KEY_HANDLE_INVALID, CKR_OBJECT_HANDLE_INVALID];
            if signed.is_err() {
                assert_rv_in(signed, &gone);
            }
            break;
        }
    }
    println!("@mp worker {id} done");
}

/// What the parent saw of each label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// "creating" without "created": the worker died inside the call.
    Creating,
    Created,
    /// "destroying" without "destroyed".
    Destroying,
    Destroyed,
}

impl Seen {
    fn word(self) -> &'static str {
        match self {
            Seen::Creating => "creating",
            Seen::Created => "created",
            Seen::Destroying => "destroying",
            Seen::Destroyed => "destroyed",
        }
    }

    fn from_word(word: &str) -> Option<Seen> {
        [
            Seen::Creating,
            Seen::Created,
            Seen::Destroying,
            Seen::Destroyed,
        ]
        .into_iter()
        .find(|s| s.word() == word)
    }
}

/// The checker, in a fresh process: the ledger against what the token holds.
/// Set for the pkcs11 backend, where `C_GenerateKeyPair` makes two HSM objects one after the
/// other.
const PUBLIC_HALF_VAR: &str = "B4AE_MP_PUBLIC_HALF_MAY_STAY";

fn public_half_may_stay() -> bool {
    std::env::var_os(PUBLIC_HALF_VAR).is_some()
}

fn checker() {
    let ledger: BTreeMap<String, Seen> = std::fs::read_to_string(env(LEDGER_VAR))
        .expect("reading the ledger")
        .lines()
        .filter_map(|line| {
            let (word, label) = line.split_once(' ')?;
            Some((label.to_string(), Seen::from_word(word)?))
        })
        .collect();
    assert!(!ledger.is_empty(), "an empty ledger");

    // The token opens; the SO and the user log in.
    let (pkcs11, slot) = own_module();
    let so = logged_in(&pkcs11, slot, UserType::So, SO_PIN_VAR);
    ok(so.logout());
    drop(so);
    let session = logged_in(&pkcs11, slot, UserType::User, PIN_VAR);

    // Every object on the token, by label.
    let mut found: BTreeMap<String, (Vec<ObjectHandle>, Vec<ObjectHandle>)> = BTreeMap::new();
    for (class, private) in [
        (ObjectClass::PUBLIC_KEY, false),
        (ObjectClass::PRIVATE_KEY, true),
    ] {
        for handle in ok(session.find_objects(&[Attribute::Class(class)])) {
            let label = attr_bytes(&session, handle, CKA_LABEL);
            let label = String::from_utf8(label).expect("UTF-8 label");
            let entry = found.entry(label).or_default();
            if private {
                entry.1.push(handle);
            } else {
                entry.0.push(handle);
            }
        }
    }
    let mut problems = Vec::new();
    // Only the workers' keys: on the pkcs11 backend the HSM's own objects show too.
    found.retain(|label, _| label.starts_with("mp-"));
    for label in found.keys() {
        if !ledger.contains_key(label) {
            problems.push(format!("{label}: on the token, but no worker ever made it"));
        }
    }
    let mut committed = 0;
    for (label, seen) in &ledger {
        let kind = Kind::from_label(label);
        let (public, private) = found.get(label).cloned().unwrap_or_default();
        let whole = private.len() == 1 && public.len() == kind.pair() as usize;
        let absent = private.is_empty() && public.is_empty();
        let state = format!("{} public, {} private", public.len(), private.len());
        match seen {
            Seen::Created if !whole => {
                problems.push(format!("{label}: reported made, but {state}"));
            }
            Seen::Destroyed if !absent => {
                problems.push(format!("{label}: reported destroyed, but {state}"));
            }
            // On the pkcs11 backend a key pair is two HSM objects (public record, then the
            // sealed private one): a kill between them leaves the public half alone. Nothing
            // committed is lost, and no secret is left anywhere.
            Seen::Creating if public_half_may_stay() && private.is_empty() && public.len() == 1 => {
                eprintln!(
                    "{label}: killed while it was made, left its public half (two HSM objects)"
                );
            }
            Seen::Creating if !whole && !absent => {
                problems.push(format!(
                    "{label}: killed while it was made, left half made: {state}"
                ));
            }
            // Destroying a pair is two calls: any part of it may be left.
            Seen::Destroying if public.len() > 1 || private.len() > 1 => {
                problems.push(format!("{label}: killed while destroyed, {state}"));
            }
            _ => {}
        }
        if *seen == Seen::Created {
            committed += 1;
        }
        // Whatever is there must be whole and usable.
        for &handle in public.iter().chain(&private) {
            for attr in [CKA_CLASS, CKA_KEY_TYPE, CKA_ID, CKA_TOKEN] {
                if let Err(rv) = get_attr(session.handle(), handle.handle(), attr) {
                    problems.push(format!(
                        "{label}: attribute {attr:#x} unreadable: {}",
                        rv_name(rv)
                    ));
                }
            }
            if attr_ulong(&session, handle, CKA_KEY_TYPE) != kind.key_type() {
                problems.push(format!("{label}: wrong key type"));
            }
        }
        if whole {
            if let Err(e) = use_key(&session, kind, public.first().copied(), private[0]) {
                problems.push(format!("{label} ({}): {e}", seen.word()));
            }
        }
    }
    assert!(committed > 0, "no key was reported made");
    assert!(
        problems.is_empty(),
        "{} problems:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
    println!(
        "@mp checked {} labels ({committed} committed)",
        ledger.len()
    );
}

// ---------------------------------------------------------------------------------------------
// The parent

/// A worker process and the lines it printed so far.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    /// Collects what the worker printed; waits up to `wait` for one more line.
    fn poll(&mut self, wait: Duration) {
        if let Ok(line) = self.lines.recv_timeout(wait) {
            self.seen.push(line);
        }
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    fn count(&self, word: &str) -> usize {
        self.seen.iter().filter(|l| l.starts_with(word)).count()
    }
}

/// Re-runs this test binary as `role`.
fn spawn(test: &str, role: &str, envs: &[(&str, String)]) -> Running {
    let mut child = Command::new(std::env::current_exe().expect("current_exe"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, role)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning a worker");
    let (send, lines) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest may print "test <name> ... " before the first line of the role.
            let Some((_, step)) = line.split_once(MARK) else {
                continue;
            };
            if send.send(step.to_string()).is_err() {
                break;
            }
        }
    });
    Running {
        child,
        lines,
        seen: Vec::new(),
    }
}

/// A few milliseconds, different each run, so the kill lands anywhere in a call.
fn jitter(max_ms: u64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    Duration::from_millis(nanos % (max_ms + 1))
}

/// The whole scenario on the token at slot `slot` of configuration `conf`, with user PIN
/// `user_pin` and SO PIN `so_pin`; `extra` environment for every process (SoftHSM's).
fn scenario(
    test: &str,
    dir: &Path,
    conf: &Path,
    slot: usize,
    (user_pin, so_pin): (&str, &str),
    concurrent: bool,
    extra: &[(&str, String)],
) {
    let mut envs: Vec<(&str, String)> = vec![
        (CONF_VAR, conf.to_str().expect("UTF-8").to_string()),
        (SLOT_VAR, slot.to_string()),
        (PIN_VAR, user_pin.to_string()),
        (SO_PIN_VAR, so_pin.to_string()),
    ];
    envs.extend(extra.iter().cloned());
    let started = Instant::now();
    let mut workers: Vec<Running> = Vec::new();
    let mut killed = [false; WORKERS];
    loop {
        // Concurrent: every worker at once. One after another: the next when the last ended.
        let last_ended = workers
            .last_mut()
            .is_none_or(|w| matches!(w.child.try_wait(), Ok(Some(_))));
        while workers.len() < WORKERS && (concurrent || last_ended) {
            workers.push(spawn(test, &format!("worker{}", workers.len()), &envs));
            if !concurrent {
                break;
            }
        }
        for w in &mut workers {
            w.poll(Duration::from_millis(2));
        }
        if let Some(making) = workers.get_mut(KILLED_MAKING) {
            if !killed[KILLED_MAKING] && making.count("created ") >= KILL_AFTER_CREATED {
                std::thread::sleep(jitter(30));
                making.child.kill().expect("SIGKILL");
                killed[KILLED_MAKING] = true;
            }
        }
        if let Some(destroying) = workers.get_mut(KILLED_DESTROYING) {
            if !killed[KILLED_DESTROYING] && destroying.count("destroying ") >= 1 {
                std::thread::sleep(jitter(4));
                destroying.child.kill().expect("SIGKILL");
                killed[KILLED_DESTROYING] = true;
            }
        }
        let finished = workers.len() == WORKERS
            && workers
                .iter_mut()
                .all(|w| matches!(w.child.try_wait(), Ok(Some(_))));
        if finished {
            break;
        }
        if started.elapsed() > DEADLINE {
            for w in &mut workers {
                let _ = w.child.kill();
            }
            panic!("the workers did not finish within {DEADLINE:?}");
        }
    }
    // The ledger: the last word each label got from its worker.
    let mut ledger: BTreeMap<String, Seen> = BTreeMap::new();
    for (id, w) in workers.iter_mut().enumerate() {
        w.poll(Duration::from_millis(200));
        let status = w.child.wait().expect("reaping a worker");
        let mut stderr = String::new();
        if let Some(mut e) = w.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        if killed[id] {
            assert!(!status.success(), "worker {id} was killed, yet it finished");
            assert!(
                !w.seen.iter().any(|l| l.starts_with("worker ")),
                "worker {id} finished before the kill: the kill tested nothing"
            );
        } else {
            assert!(
                status.success() && w.count(&format!("worker {id} done")) == 1,
                "worker {id} failed ({status})\n{}\n{stderr}",
                w.seen.join("\n")
            );
        }
        for line in &w.seen {
            let Some((word, label)) = line.split_once(' ') else {
                continue;
            };
            if let (Some(seen), true) = (Seen::from_word(word), label.starts_with("mp-")) {
                ledger.insert(label.to_string(), seen);
            }
        }
    }
    let in_flight: Vec<String> = ledger
        .iter()
        .filter(|(_, s)| matches!(s, Seen::Creating | Seen::Destroying))
        .map(|(l, s)| format!("{} {l}", s.word()))
        .collect();
    eprintln!(
        "{} labels; killed in the middle of: {in_flight:?}",
        ledger.len()
    );
    let ledger_path = dir.join("ledger.txt");
    let text: String = ledger
        .iter()
        .map(|(l, s)| format!("{} {l}\n", s.word()))
        .collect();
    std::fs::write(&ledger_path, text).expect("writing the ledger");
    envs.push((LEDGER_VAR, ledger_path.to_str().expect("UTF-8").to_string()));
    let mut check = spawn(test, "checker", &envs);
    let status = loop {
        check.poll(Duration::from_millis(50));
        if let Ok(Some(status)) = check.child.try_wait() {
            break status;
        }
        if started.elapsed() > DEADLINE * 2 {
            let _ = check.child.kill();
            panic!("the checker did not finish in time");
        }
    };
    check.poll(Duration::from_millis(200));
    let mut stderr = String::new();
    if let Some(mut e) = check.child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    assert!(
        status.success() && check.count("checked ") == 1,
        "the checker failed ({status})\n{}\n{stderr}",
        check.seen.join("\n")
    );
}

/// In a worker or checker process: its part, and nothing else.
fn play_role() -> bool {
    match role().as_deref() {
        None => false,
        Some("checker") => {
            checker();
            true
        }
        Some(worker_role) => {
            let id = worker_role
                .strip_prefix("worker")
                .and_then(|n| n.parse().ok())
                .expect("worker<N>");
            worker(id);
            true
        }
    }
}

#[test]
fn killed_workers_lose_nothing_committed_on_an_embedded_token() {
    const TEST: &str = "killed_workers_lose_nothing_committed_on_an_embedded_token";
    if play_role() {
        return;
    }
    let f = fixture();
    const SLOT: usize = 0;
    f.ready_slot(SLOT);
    scenario(TEST, &f.dir, &f.conf, SLOT, (USER_PIN, SO_PIN), true, &[]);
    let store = token_store(&f.dir, SLOT);
    let db = rusqlite::Connection::open(&store).expect("opening the store");
    let verdict: String = db
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .expect("integrity_check");
    assert_eq!(verdict, "ok");
}

#[test]
fn killed_workers_lose_nothing_committed_on_softhsm() {
    const TEST: &str = "killed_workers_lose_nothing_committed_on_softhsm";
    if play_role() {
        return;
    }
    assert!(
        Path::new(SOFTHSM_LIB).exists(),
        "{SOFTHSM_LIB} is missing: install SoftHSM2 (scripts/deps.sh installs softhsm2)"
    );
    let softhsm = OwnSoftHsm::new("b4ae-mp-softhsm-", &["mp-hsm"]);
    let conf: PathBuf = softhsm.dir.path().join("b4ae-pkcs11.toml");
    std::fs::write(
        &conf,
        format!("[[token]]\nlabel = \"mp\"\nbackend = \"pkcs11\"\nlibrary = \"{SOFTHSM_LIB}\"\ntoken_label = \"mp-hsm\"\n"),
    )
    .expect("configuration");
    let extra = [
        (
            SOFTHSM_CONF_VAR,
            softhsm.conf.to_str().expect("UTF-8").to_string(),
        ),
        (PUBLIC_HALF_VAR, "1".to_string()),
    ];
    scenario(
        TEST,
        softhsm.dir.path(),
        &conf,
        0,
        (HSM_PIN, HSM_SO_PIN),
        false,
        &extra,
    );
}

//! The custody agent (SPEC §4, custody 4) against the users it must keep out. The agent runs as
//! a user made for the test; the application's calls run in child processes under other users
//! (`setpriv`), driving the built module through its C ABI; attacks run from there too. Making
//! users needs root: CI runs as root; elsewhere run `sudo -E cargo test --test abi_agent`.

#[macro_use]
mod common;
mod forward_common;

use common::*;
use cryptoki::context::Pkcs11;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki_sys::*;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const AGENT_USER: &str = "b4ae-test-agent";
const APP_USER: &str = "b4ae-test-app";
const OUTSIDER: &str = "b4ae-test-outsider";
const AGENT_SO_PIN: &str = "agent-so-1234";
const AGENT_PIN: &str = "agent-user-5678";
const STEP_VAR: &str = "B4AE_TEST_STEP";
const AGENT_PID_VAR: &str = "B4AE_TEST_AGENT_PID";
const PROGRESS_VAR: &str = "B4AE_TEST_PROGRESS";
const SOCKET_VAR: &str = "B4AE_TEST_SOCKET";
/// The module's timeout for a call to the agent, in these tests.
const CALL_TIMEOUT: Duration = Duration::from_millis(3000);
const KEY_LABEL: &str = "agent-mldsa87";

/// The test's users, made once (root only).
fn users() {
    static MADE: OnceLock<()> = OnceLock::new();
    MADE.get_or_init(|| {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the agent tests make users to run the agent and the applications under: run them as \
             root (CI does; elsewhere: sudo -E cargo test --test abi_agent)"
        );
        for user in [AGENT_USER, APP_USER, OUTSIDER] {
            let exists = Command::new("id").arg(user).output().expect("id");
            if !exists.status.success() {
                let made = Command::new("useradd")
                    .args([
                        "--system",
                        "--no-create-home",
                        "--shell",
                        "/usr/sbin/nologin",
                    ])
                    .arg(user)
                    .status()
                    .expect("useradd");
                assert!(made.success(), "useradd {user}");
            }
        }
    });
}

/// A command run as `user` (its own group, no other), through `setpriv`.
fn as_user(user: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid", user, "--regid", user, "--clear-groups", "--"]);
    c
}

fn chown(path: &Path, user: &str) {
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{user}:{user}"))
        .arg(path)
        .status()
        .expect("chown");
    assert!(status.success());
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn admin_path() -> PathBuf {
    module_path().with_file_name("b4ae-pkcs11")
}

/// A running agent (as its own user), its files, and the module configuration of its slot.
struct AgentRun {
    _dir: tempfile::TempDir,
    root: PathBuf,
    agent_dir: PathBuf,
    socket: PathBuf,
    audit: PathBuf,
    module_conf: PathBuf,
    child: Option<Child>,
}

/// Where the agent's token keeps its keys.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keys {
    /// An embedded store the agent owns.
    Store,
    /// A SoftHSM2 token the agent logs in to with its credential file (custody 2 behind the
    /// agent).
    Hsm,
}

const SOFTHSM_LIB: &str = "/usr/lib/softhsm/libsofthsm2.so";
const HSM_CREDENTIAL: &str = "hsm-user-pin-9";

impl AgentRun {
    fn new(max_pin_failures: u32) -> AgentRun {
        Self::with(max_pin_failures, Keys::Store)
    }

    fn with(max_pin_failures: u32, keys: Keys) -> AgentRun {
        users();
        let dir = temp_dir("b4ae-agent-");
        let root = dir.path().to_path_buf();
        chmod(&root, 0o755);
        let agent_dir = root.join("agent");
        let run_dir = root.join("run");
        let app_dir = root.join("app");
        for d in [&agent_dir, &run_dir, &app_dir] {
            std::fs::create_dir(d).expect("mkdir");
        }
        let socket = run_dir.join("agent.sock");
        let audit = agent_dir.join("audit.jsonl");
        let hsm = match keys {
            Keys::Store => String::new(),
            Keys::Hsm => {
                let tokens = agent_dir.join("softhsm");
                std::fs::create_dir(&tokens).expect("softhsm dir");
                let conf = agent_dir.join("softhsm2.conf");
                forward_common::write_softhsm_conf(&conf, &tokens);
                let made = Command::new("softhsm2-util")
                    .args(["--init-token", "--free", "--label", "agent-hsm"])
                    .args(["--so-pin", "hsm-so-pin-0", "--pin", HSM_CREDENTIAL])
                    .env("SOFTHSM2_CONF", &conf)
                    .stdout(Stdio::null())
                    .status()
                    .expect("softhsm2-util");
                assert!(made.success());
                let credential = agent_dir.join("hsm.pin");
                std::fs::write(&credential, format!("{HSM_CREDENTIAL}\n")).expect("hsm.pin");
                chmod(&credential, 0o600);
                format!(
                    "backend = \"pkcs11\"\nlibrary = \"{SOFTHSM_LIB}\"\ntoken_label = \"agent-hsm\"\n\
                     credential_file = \"{}\"\n",
                    credential.display()
                )
            }
        };
        std::fs::write(
            agent_dir.join("agent.toml"),
            format!(
                r#"[agent]
socket = "{socket}"
# Anyone may connect: the allow-list is what refuses.
socket_mode = "0666"
timeout_ms = 2000

[[token]]
label = "PQ keys"
{hsm}path = "{store}"
pin_kdf = "test-only-fast"
max_pin_failures = {max_pin_failures}
allow_users = ["{APP_USER}"]

[audit]
path = "{audit}"
"#,
                socket = socket.display(),
                store = agent_dir.join("store").display(),
                audit = audit.display(),
            ),
        )
        .expect("agent.toml");
        let module_conf = root.join("module.toml");
        std::fs::write(
            &module_conf,
            format!(
                "[[token]]\nlabel = \"Agent\"\nbackend = \"agent\"\nsocket = \"{}\"\ntimeout_ms = {}\n",
                socket.display(),
                CALL_TIMEOUT.as_millis()
            ),
        )
        .expect("module.toml");
        chmod(&module_conf, 0o644);
        chown(&agent_dir, AGENT_USER);
        chmod(&agent_dir, 0o700);
        chown(&run_dir, AGENT_USER);
        chmod(&run_dir, 0o755);
        chown(&app_dir, APP_USER);
        let mut run = AgentRun {
            _dir: dir,
            root,
            agent_dir,
            socket,
            audit,
            module_conf,
            child: None,
        };
        run.start();
        run
    }

    fn start(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let child = as_user(AGENT_USER)
            .arg(admin_path())
            .arg("agent")
            .arg("--config")
            .arg(self.agent_dir.join("agent.toml"))
            .env("SOFTHSM2_CONF", self.agent_dir.join("softhsm2.conf"))
            .env("B4AE_PKCS11_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the agent");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&self.socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "the agent did not open its socket"
            );
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("the agent exited: {status}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the agent the way systemd's socket activation does: `systemd-socket-activate`
    /// (as root) creates the socket and hands it over as file descriptor 3 with
    /// `LISTEN_FDS` / `LISTEN_PID`.
    fn start_activated(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.socket);
        let child = Command::new("systemd-socket-activate")
            .arg("--listen")
            .arg(&self.socket)
            .args([
                "--", "setpriv", "--reuid", AGENT_USER, "--regid", AGENT_USER,
            ])
            .args(["--clear-groups", "--"])
            .arg(admin_path())
            .arg("agent")
            .arg("--config")
            .arg(self.agent_dir.join("agent.toml"))
            .env("B4AE_PKCS11_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("systemd-socket-activate (package systemd)");
        self.child = Some(child);
        wait_for("the activator's socket", Duration::from_secs(20), || {
            self.socket.exists()
        });
        // systemd would give it the unit's SocketMode; the activator has no such option.
        chmod(&self.socket, 0o666);
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent running").id()
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, signal).expect("signalling the agent");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A child process of this test binary under `user`, running `test`'s step `step`.
    fn child(&self, user: &str, test: &str, step: &str) -> Command {
        let mut c = as_user(user);
        c.arg(std::env::current_exe().expect("current_exe"))
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_VAR, test)
            .env(STEP_VAR, step)
            .env(CONF_VAR, &self.module_conf)
            .env(MODULE_VAR, module_path())
            .env(AGENT_PID_VAR, self.pid().to_string())
            .env(SOCKET_VAR, &self.socket)
            .env(
                PROGRESS_VAR,
                self.root.join("app").join(format!("{step}.progress")),
            )
            .env(
                "B4AE_PKCS11_LOG",
                format!(
                    "warn:{}",
                    self.root.join("app").join(format!("{step}.log")).display()
                ),
            )
            .stdin(Stdio::null());
        c
    }

    /// Runs a child step to its end; asserts it passed.
    #[track_caller]
    fn run(&self, user: &str, test: &str, step: &str) -> String {
        let out = self.child(user, test, step).output().expect("child");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "child {step} as {user} failed ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            out.status
        );
        stdout
    }

    fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .expect("the audit trail")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    /// A step's progress notes and its module log, for a failure message.
    fn story(&self, step: &str) -> String {
        let log = std::fs::read_to_string(self.root.join("app").join(format!("{step}.log")));
        let stderr = std::fs::read_to_string(self.root.join("signer.stderr")).unwrap_or_default();
        format!(
            "--- progress\n{}--- log\n{}--- stderr\n{stderr}",
            self.progress(step),
            log.unwrap_or_default()
        )
    }

    fn progress(&self, step: &str) -> String {
        std::fs::read_to_string(self.root.join("app").join(format!("{step}.progress")))
            .unwrap_or_default()
    }
}

impl Drop for AgentRun {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// What the children do (as the application's user, through the module)

fn module() -> (Pkcs11, Slot) {
    let pkcs11 = load_module();
    initialize(&pkcs11);
    let slot = ok(pkcs11.get_all_slots())[0];
    (pkcs11, slot)
}

fn rv_of<T>(result: cryptoki::error::Result<T>) -> CK_RV {
    match result {
        Ok(_) => CKR_OK,
        Err(cryptoki::error::Error::Pkcs11(rv, _)) => rv_code(rv),
        Err(e) => panic!("not a PKCS#11 error: {e}"),
    }
}

/// Initializes the agent's token and sets its user PIN.
fn init_token_step() {
    let (pkcs11, slot) = module();
    ok(pkcs11.init_token(slot, &pin(AGENT_SO_PIN), "agent-token"));
    let session = ok(pkcs11.open_rw_session(slot));
    ok(session.login(UserType::So, Some(&pin(AGENT_SO_PIN))));
    ok(session.init_pin(&pin(AGENT_PIN)));
    ok(session.logout());
}

fn user_session(pkcs11: &Pkcs11, slot: Slot) -> Session {
    let session = ok(pkcs11.open_rw_session(slot));
    ok(session.login(UserType::User, Some(&pin(AGENT_PIN))));
    session
}

fn the_private_key(session: &Session) -> ObjectHandle {
    let found = ok(session.find_objects(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Label(KEY_LABEL.into()),
    ]));
    assert_eq!(found.len(), 1, "one private key labelled {KEY_LABEL}");
    found[0]
}

fn the_public_key(session: &Session) -> ObjectHandle {
    let found = ok(session.find_objects(&[
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::Label(KEY_LABEL.into()),
    ]));
    assert_eq!(found.len(), 1);
    found[0]
}

/// Makes the token key pair and signs with it; every way to bring the private key out fails.
fn keys_step() {
    let (pkcs11, slot) = module();
    let session = user_session(&pkcs11, slot);
    let set = Attribute::ParameterSet(Ps::P87.parameter_set());
    let label = Attribute::Label(KEY_LABEL.into());
    let public = [
        Attribute::Token(true),
        Attribute::Verify(true),
        set,
        label.clone(),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sign(true),
        label,
    ];
    let (pk, sk) = ok(session.generate_key_pair(&Mechanism::MlDsaKeyPairGen, &public, &private));
    let signature = ok(session.sign(&pure_ml_dsa(), sk, MESSAGE));
    assert_eq!(signature.len(), 4627);
    ok(session.verify(&pure_ml_dsa(), pk, MESSAGE, &signature));
    assert_eq!(
        attr_ulong(&session, sk, CKA_B4AE_CUSTODY),
        4,
        "custody 4: the agent's"
    );
    let private_keys = ok(session.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)]));
    assert_eq!(private_keys, vec![sk]);

    // Every read of the secret is refused.
    for kind in [CKA_VALUE, CKA_SEED] {
        assert_sensitive(&session, sk, kind);
    }
    // Loosening the key, or copying it loose, is refused.
    for loosen in [Attribute::Sensitive(false), Attribute::Extractable(true)] {
        assert_ne!(
            rv_of(session.update_attributes(sk, std::slice::from_ref(&loosen))),
            CKR_OK
        );
        assert_ne!(rv_of(session.copy_object(sk, &[loosen])), CKR_OK);
    }
    assert!(attr_bool(&session, sk, CKA_SENSITIVE));
    assert!(!attr_bool(&session, sk, CKA_EXTRACTABLE));
    // Wrapping it under a key of the caller's choosing is refused.
    let aes = ok(session.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::ValueLen(32.into()),
            Attribute::Token(false),
            Attribute::Wrap(true),
        ],
    ));
    let wrapped = session.wrap_key(&Mechanism::AesKeyWrap, aes, sk);
    assert_ne!(rv_of(wrapped), CKR_OK);
    // Logged out, the private key is not even visible.
    ok(session.logout());
    let seen = ok(session.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)]));
    assert!(seen.is_empty(), "no private key without the token's PIN");
    let refused = rv_of(session.sign(&pure_ml_dsa(), sk, MESSAGE));
    assert!(
        [CKR_KEY_HANDLE_INVALID, CKR_USER_NOT_LOGGED_IN].contains(&refused),
        "signing logged out: {}",
        rv_name(refused)
    );
}

/// The application's user cannot reach the agent's files, memory or process.
fn intrusion_step() {
    let pid = std::env::var(AGENT_PID_VAR).expect("agent pid");
    let agent_dir = Path::new(&std::env::var(CONF_VAR).unwrap())
        .parent()
        .unwrap()
        .join("agent");
    let secrets = [
        "agent.toml",
        "store",
        "audit.jsonl",
        "hsm.pin",
        "softhsm",
        "softhsm2.conf",
    ];
    for target in secrets.map(|f| agent_dir.join(f)) {
        let e = std::fs::read(&target).err();
        let listed = std::fs::read_dir(&target).err();
        assert!(
            e.is_some() && listed.is_some(),
            "{} is readable by the application's user",
            target.display()
        );
    }
    assert!(
        std::fs::read_dir(&agent_dir).is_err(),
        "the agent's directory is listable"
    );
    for file in ["mem", "environ", "maps"] {
        let path = format!("/proc/{pid}/{file}");
        assert!(std::fs::read(&path).is_err(), "{path} is readable");
    }
    let attach = nix::sys::ptrace::attach(nix::unistd::Pid::from_raw(pid.parse().unwrap()));
    assert_eq!(attach, Err(nix::errno::Errno::EPERM), "ptrace attach");
    println!("intrusion: refused everywhere");
}

/// As the agent's own user: still no ptrace and no /proc/<pid>/mem (the agent is not
/// dumpable), so even code running as that user cannot read a decrypted key.
fn same_user_step() {
    let pid = std::env::var(AGENT_PID_VAR).expect("agent pid");
    assert!(std::fs::read(format!("/proc/{pid}/mem")).is_err());
    let attach = nix::sys::ptrace::attach(nix::unistd::Pid::from_raw(pid.parse().unwrap()));
    assert_eq!(
        attach,
        Err(nix::errno::Errno::EPERM),
        "ptrace attach as the agent's user"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let core = status
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("core limit line");
    assert!(
        core.split_whitespace().nth(4) == Some("0"),
        "no core dumps: {core}"
    );
}

/// A user outside the allow-list: the slot shows no token and nothing opens.
fn outsider_step() {
    let (pkcs11, slot) = module();
    let info = ok(pkcs11.get_slot_info(slot));
    assert!(!info.token_present(), "the outsider sees no token");
    assert_eq!(
        rv_name(rv_of(pkcs11.get_token_info(slot))),
        rv_name(CKR_TOKEN_NOT_PRESENT)
    );
    assert_eq!(
        rv_name(rv_of(pkcs11.open_ro_session(slot))),
        rv_name(CKR_TOKEN_NOT_PRESENT)
    );
}

/// Wrong PINs through the agent count and lock the PIN (limit 3 in this test's agent).
fn wrong_pins_step() {
    let (pkcs11, slot) = module();
    let session = ok(pkcs11.open_ro_session(slot));
    let answers: Vec<_> = (0..5)
        .map(|_| {
            rv_name(rv_of(
                session.login(UserType::User, Some(&pin("wrong-pin-000"))),
            ))
        })
        .collect();
    let mut expected = vec![rv_name(CKR_PIN_INCORRECT); 3];
    expected.extend(vec![rv_name(CKR_PIN_LOCKED); 2]);
    assert_eq!(answers, expected);
    assert_eq!(
        rv_name(rv_of(session.login(UserType::User, Some(&pin(AGENT_PIN))))),
        rv_name(CKR_PIN_LOCKED)
    );
    assert!(ok(pkcs11.get_token_info(slot)).user_pin_locked());
}

fn note(progress: &mut std::fs::File, line: &str) {
    writeln!(progress, "{line}").expect("progress");
    progress.flush().expect("flush");
}

/// Signs in a loop with one session for as long as the parent lets it, noting each call's
/// answer and how long it took; ends after 20 good signatures following the last failure
/// (once at least one failure happened, when B4AE_TEST_EXPECT_FAILURE is set).
fn signing_loop_step() {
    let expect_failure = std::env::var_os("B4AE_TEST_EXPECT_FAILURE").is_some();
    let mut progress = std::fs::File::create(std::env::var(PROGRESS_VAR).unwrap()).unwrap();
    let (pkcs11, slot) = module();
    let session = user_session(&pkcs11, slot);
    let mut sk = the_private_key(&session);
    let mut pk = the_public_key(&session);
    let (mut failures, mut good_since_failure, mut worst) = (0, 0, Duration::ZERO);
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let started = Instant::now();
        let signed = session
            .sign(&pure_ml_dsa(), sk, MESSAGE)
            .and_then(|signature| session.verify(&pure_ml_dsa(), pk, MESSAGE, &signature));
        let took = started.elapsed();
        worst = worst.max(took);
        match signed {
            Ok(()) => {
                good_since_failure += 1;
                note(&mut progress, &format!("ok {}", took.as_millis()));
                if good_since_failure >= 20 && (!expect_failure || failures > 0) {
                    break;
                }
            }
            Err(e) => {
                let rv = rv_of::<()>(Err(e));
                failures += 1;
                good_since_failure = 0;
                note(
                    &mut progress,
                    &format!("error {} {}", rv_name(rv), took.as_millis()),
                );
                assert!(
                    rv == CKR_DEVICE_ERROR || rv == CKR_KEY_HANDLE_INVALID,
                    "a lost agent answers CKR_DEVICE_ERROR, not {}",
                    rv_name(rv)
                );
                if rv == CKR_KEY_HANDLE_INVALID {
                    // The key is found again, as an application does after a reconnect.
                    sk = the_private_key(&session);
                    pk = the_public_key(&session);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    assert!(
        good_since_failure >= 20,
        "signing came back ({failures} failures)"
    );
    // A signature and its check are a few calls; the first to go unanswered ends at the
    // timeout, the others at once.
    assert!(
        worst < CALL_TIMEOUT + Duration::from_millis(1500),
        "no call waited beyond the timeout: {worst:?}"
    );
    note(
        &mut progress,
        &format!("done failures={failures} worst_ms={}", worst.as_millis()),
    );
}

/// A client that greets properly, then sends a request the decoder refuses: the agent drops
/// it. The module of the same process is unaffected (its own connection).
fn malformed_after_hello_step() {
    use b4ae_pkcs11::backend::agent::protocol::{self, Request, VERSION};
    use b4ae_pkcs11::backend::agent::transport::{self, Patience};
    let socket = std::env::var(SOCKET_VAR).unwrap();
    let mut stream = UnixStream::connect(&socket).expect("connect");
    let hello = protocol::encode(&Request::Hello {
        version: VERSION,
        client: [7; 16],
    })
    .unwrap();
    stream.write_all(&hello).unwrap();
    let patience = Patience {
        spin: Duration::ZERO,
        first: Some(Duration::from_secs(5)),
        rest: Duration::from_secs(5),
    };
    let body = transport::recv(&stream, patience).expect("hello answered");
    let answer: protocol::Response = protocol::decode(&body).unwrap();
    assert_eq!(answer.rv, 0);
    stream.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).unwrap();
    let body = transport::recv(&stream, patience).expect("an answer to garbage");
    let answer: protocol::Response = protocol::decode(&body).unwrap();
    #[allow(clippy::unnecessary_cast)] // CK_RV is 32 bits on some platforms
    let device_error = CKR_DEVICE_ERROR as u64;
    assert_eq!(answer.rv, device_error);
    let mut rest = Vec::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(
        stream.read_to_end(&mut rest).unwrap(),
        0,
        "then the agent closes"
    );
    // Another of this user's processes is still served.
    let (pkcs11, slot) = module();
    let session = user_session(&pkcs11, slot);
    let sk = the_private_key(&session);
    ok(session.sign(&pure_ml_dsa(), sk, MESSAGE));
}

fn dispatch(name: &str) -> bool {
    if !is_child(name) {
        return false;
    }
    match std::env::var(STEP_VAR).as_deref() {
        Ok("init") => init_token_step(),
        Ok("keys") => keys_step(),
        Ok("intrusion") => intrusion_step(),
        Ok("same-user") => same_user_step(),
        Ok("outsider") => outsider_step(),
        Ok("wrong-pins") => wrong_pins_step(),
        Ok("signing-loop") => signing_loop_step(),
        Ok("malformed") => malformed_after_hello_step(),
        other => panic!("unknown step {other:?}"),
    }
    true
}

/// An agent with an initialized token holding the test's key pair.
fn agent_with_key(name: &str, max_pin_failures: u32) -> AgentRun {
    let agent = AgentRun::new(max_pin_failures);
    agent.run(APP_USER, name, "init");
    agent.run(APP_USER, name, "keys");
    agent
}

fn events(agent: &AgentRun) -> Vec<String> {
    agent
        .audit_lines()
        .iter()
        .map(|l| l["event"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn audit_verifies(agent: &AgentRun) -> bool {
    Command::new(admin_path())
        .args(["audit", "verify"])
        .arg(&agent.audit)
        .status()
        .expect("audit verify")
        .success()
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn an_allowed_user_signs_through_the_agent_and_can_obtain_no_private_key() {
    let name = test_name!();
    if dispatch(name) {
        return;
    }
    let agent = agent_with_key(name, 10);
    agent.run(APP_USER, name, "intrusion");
    agent.run(AGENT_USER, name, "same-user");
    let seen = events(&agent);
    for event in [
        "agent_started",
        "token_initialized",
        "login_ok",
        "pin_initialized",
        "key_created",
    ] {
        assert!(
            seen.iter().any(|e| e == event),
            "audit trail has {event}: {seen:?}"
        );
    }
    let login = agent
        .audit_lines()
        .into_iter()
        .find(|l| l["event"] == "login_ok")
        .unwrap();
    let app_uid = nix::unistd::User::from_name(APP_USER)
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    assert_eq!(
        login["uid"], app_uid,
        "the audit line names the client's user"
    );
    assert!(
        !std::fs::read_to_string(&agent.audit)
            .unwrap()
            .contains(AGENT_PIN),
        "no PIN in the trail"
    );
    assert!(audit_verifies(&agent));
}

#[test]
fn a_user_outside_the_allow_list_is_refused_and_the_refusal_audited() {
    let name = test_name!();
    if dispatch(name) {
        return;
    }
    let agent = agent_with_key(name, 3);
    agent.run(OUTSIDER, name, "outsider");
    let outsider_uid = nix::unistd::User::from_name(OUTSIDER)
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    let refused = agent
        .audit_lines()
        .into_iter()
        .filter(|l| l["event"] == "agent_client_refused")
        .collect::<Vec<_>>();
    assert!(!refused.is_empty(), "the refusal is in the audit trail");
    assert!(refused.iter().all(|l| l["uid"] == outsider_uid));

    // Wrong PINs count at the agent, lock, and each is audited.
    agent.run(APP_USER, name, "wrong-pins");
    let seen = events(&agent);
    assert_eq!(
        seen.iter().filter(|e| *e == "login_failed").count(),
        3,
        "{seen:?}"
    );
    assert!(seen.iter().any(|e| e == "login_locked"), "{seen:?}");
    assert!(audit_verifies(&agent));
    // A line edited afterwards is found.
    let text = std::fs::read_to_string(&agent.audit).unwrap();
    std::fs::write(&agent.audit, text.replacen("login_failed", "login_ok", 1)).unwrap();
    assert!(!audit_verifies(&agent), "an edited line breaks the chain");
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    wait_for_or(what, timeout, &mut done, String::new)
}

fn wait_for_or(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn finish(child: Child, what: &str) -> String {
    let out = child.wait_with_output().expect("child");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{what} failed ({})\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_agent_killed_mid_signature_costs_errors_not_hangs_and_the_session_comes_back() {
    let name = test_name!();
    if dispatch(name) {
        return;
    }
    let mut agent = agent_with_key(name, 10);
    let signer = agent
        .child(APP_USER, name, "signing-loop")
        .env("B4AE_TEST_EXPECT_FAILURE", "1")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(agent.root.join("signer.stderr")).expect("stderr file"))
        .spawn()
        .expect("signer");
    let oks = |a: &AgentRun| a.progress("signing-loop").matches("ok ").count();
    wait_for(
        "signatures through the agent",
        Duration::from_secs(60),
        || oks(&agent) >= 10,
    );

    // Stopped (not dead): the call in flight answers at the timeout, not later.
    agent.signal(nix::sys::signal::Signal::SIGSTOP);
    let story = || agent.story("signing-loop");
    wait_for_or(
        "an error while the agent is stopped",
        CALL_TIMEOUT * 3,
        || agent.progress("signing-loop").contains("error"),
        story,
    );
    agent.signal(nix::sys::signal::Signal::SIGCONT);
    let before = oks(&agent);
    wait_for_or(
        "signing after SIGCONT",
        Duration::from_secs(30),
        || oks(&agent) >= before + 5,
        story,
    );

    // Killed in the middle of signing, then started again: the same session signs again.
    agent.signal(nix::sys::signal::Signal::SIGKILL);
    agent.kill();
    std::thread::sleep(Duration::from_millis(300));
    agent.start();
    let out = finish(signer, "the signing loop");
    let progress = agent.progress("signing-loop");
    assert!(progress.contains("done"), "{progress}\n{out}");
    let errors: Vec<&str> = progress
        .lines()
        .filter(|l| l.starts_with("error"))
        .collect();
    assert!(
        errors.iter().all(|l| {
            l.contains(&rv_name(CKR_DEVICE_ERROR)) || l.contains(&rv_name(CKR_KEY_HANDLE_INVALID))
        }),
        "{errors:?}"
    );
}

#[test]
fn a_client_killed_mid_call_and_misbehaving_ones_leave_the_others_served() {
    let name = test_name!();
    if dispatch(name) {
        return;
    }
    let agent = agent_with_key(name, 10);
    let mut victim = agent
        .child(APP_USER, name, "signing-loop")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("victim");
    wait_for("the victim signing", Duration::from_secs(60), || {
        agent.progress("signing-loop").matches("ok ").count() >= 3
    });
    victim.kill().expect("SIGKILL the victim mid-loop");
    let _ = victim.wait();

    // Raw connections that misbehave before any greeting: garbage, an oversized length, and
    // one that starts a frame and stalls (the agent drops it at its timeout).
    let mut garbage = UnixStream::connect(&agent.socket).expect("connect");
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut huge = UnixStream::connect(&agent.socket).expect("connect");
    huge.write_all(&u32::MAX.to_be_bytes()).unwrap();
    let mut stall = UnixStream::connect(&agent.socket).expect("connect");
    stall.write_all(&[0, 0, 1]).unwrap();
    let stalled_at = Instant::now();

    // Meanwhile others are served: an allowed process signs, one misbehaves after its greeting.
    agent.run(APP_USER, name, "malformed");
    stall
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = stall.read_to_end(&mut rest);
    assert!(
        stalled_at.elapsed() < Duration::from_secs(8),
        "a stalled request is dropped at the agent's timeout"
    );
    for stream in [&mut garbage, &mut huge] {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = Vec::new();
        let _ = stream.read_to_end(&mut buf);
    }
    let again = agent
        .child(APP_USER, name, "signing-loop")
        .output()
        .expect("another signer");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
}

#[test]
fn the_protocol_decoder_survives_hostile_bytes_through_a_live_agent() {
    let name = test_name!();
    if dispatch(name) {
        return;
    }
    let agent = agent_with_key(name, 10);
    // Frames of random bytes at every length class, each on its own connection: the agent
    // answers or drops each, and stays up.
    let mut seed = 0x9e37_79b9_u32;
    for round in 0..200 {
        let len = [0usize, 1, 3, 17, 64, 300, 4096][round % 7];
        let body: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect();
        let mut s = UnixStream::connect(&agent.socket).expect("the agent is up");
        let mut frame = (len as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        let _ = s.write_all(&frame);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
    }
    agent.run(APP_USER, name, "malformed");
}

#[test]
fn a_token_on_the_hsm_behind_the_agent_keeps_the_credential_and_the_keys_from_the_application() {
    let name = test_name!();
    if dispatch(name) {
        return;
    }
    let mut agent = AgentRun::with(3, Keys::Hsm);
    agent.run(APP_USER, name, "init");
    agent.run(APP_USER, name, "keys");
    agent.run(APP_USER, name, "intrusion");
    agent.run(OUTSIDER, name, "outsider");
    agent.run(APP_USER, name, "wrong-pins");
    let seen = events(&agent);
    assert!(seen.iter().any(|e| e == "login_locked"), "{seen:?}");
    assert!(audit_verifies(&agent));
    let audit = std::fs::read_to_string(&agent.audit).unwrap();
    assert!(
        !audit.contains(HSM_CREDENTIAL),
        "the credential is never written down"
    );

    // A credential file others could read is refused: the agent does not start on it.
    agent.kill();
    chmod(&agent.agent_dir.join("hsm.pin"), 0o644);
    let refused = as_user(AGENT_USER)
        .arg(admin_path())
        .args(["agent", "--config"])
        .arg(agent.agent_dir.join("agent.toml"))
        .env("SOFTHSM2_CONF", agent.agent_dir.join("softhsm2.conf"))
        .output()
        .expect("agent");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("hsm.pin") && stderr.contains("0600"),
        "{stderr}"
    );
}

#[test]
fn the_agent_serves_the_socket_systemd_hands_it() {
    let name = test_name!();
    if dispatch(name) {
        return;
    }
    let mut agent = AgentRun::new(10);
    agent.start_activated();
    agent.run(APP_USER, name, "init");
    agent.run(APP_USER, name, "keys");
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(&agent.socket).expect("socket").uid();
    assert_eq!(
        owner, 0,
        "the socket is the activator's, not one the agent made"
    );
    let seen = events(&agent);
    assert!(seen.iter().any(|e| e == "key_first_use"), "{seen:?}");
}

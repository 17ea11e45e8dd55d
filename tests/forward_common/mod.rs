//! Shared helpers of the pkcs11-backend tests (tests/abi_forward.rs).
//!
//! The fixture is what an application using both the module and SoftHSM2 would have: a SoftHSM2
//! token directory with one token per test, a b4ae configuration with one forwarding slot per
//! SoftHSM token plus one slot forwarding to a second copy of this module (whose embedded token
//! does ML-DSA natively), SoftHSM loaded and initialised directly by the test *before* the
//! module, then the module. A child process ([`Forward::child`]) reuses the parent's files.

#![allow(dead_code)]

use crate::common::{self, ok, run_child, temp_dir, CONF_VAR};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki_sys::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;
use tempfile::TempDir;

pub const SOFTHSM_LIB: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const SOFTHSM_CONF_VAR: &str = "SOFTHSM2_CONF";
/// In a child process: the parent's fixture directory.
pub const FWD_DIR_VAR: &str = "B4AE_FWD_TEST_DIR";
pub const HSM_SO_PIN: &str = "12345678";
pub const HSM_PIN: &str = "1234";
/// The inner embedded token's user PIN (embedded tokens take 8 characters or more).
pub const INNER_PIN: &str = "inner-user-pin";
/// The inner (embedded) token's label, behind the last slot.
pub const INNER_LABEL: &str = "inner";

/// src/backend/pkcs11/records.rs and hierarchy.rs.
pub const RECORD_APPLICATION: &[u8] = b"b4ae-pkcs11 key record v1";
pub const STK_PREFIX: &str = "B4AE-v2-STK-";
pub const STK_ID: &[u8] = b"B4AE-v2-STK";
const ADMIN_TIMEOUT: Duration = Duration::from_secs(120);

/// DER of the P-256 curve OID, for CKA_EC_PARAMS.
pub const P256: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];

/// A PKCS#11 library loaded a second time for raw calls (the same instance as its other loads).
pub struct RawLib {
    _library: cryptoki_sys::Pkcs11,
    pub fl: CK_FUNCTION_LIST,
}

impl RawLib {
    pub fn load(path: &Path) -> Self {
        // SAFETY: loading a PKCS#11 library; nothing else is called until its list is read.
        let library = unsafe { cryptoki_sys::Pkcs11::new(path) }
            .unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()));
        let mut list: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
        // SAFETY: a valid out-pointer.
        let rv = unsafe { library.C_GetFunctionList(&mut list) };
        assert!(
            rv == CKR_OK && !list.is_null(),
            "C_GetFunctionList of {path:?}"
        );
        // SAFETY: the list returned by the library, which stays loaded.
        let fl = unsafe { *list };
        RawLib {
            _library: library,
            fl,
        }
    }

    /// C_GetAttributeValue with the two-call convention.
    pub fn get_attr(
        &self,
        session: &Session,
        object: ObjectHandle,
        kind: CK_ATTRIBUTE_TYPE,
    ) -> Result<Vec<u8>, CK_RV> {
        let get = self.fl.C_GetAttributeValue.expect("C_GetAttributeValue");
        let (s, o) = (session.handle(), object.handle());
        let mut attr = common::raw_query(kind);
        // SAFETY: one attribute, NULL value: asks for the length.
        match unsafe { get(s, o, &mut attr, 1) } {
            CKR_OK => {}
            rv => return Err(rv),
        }
        let mut value = vec![0u8; attr.ulValueLen as usize];
        let mut attr = common::raw_buffer(kind, &mut value);
        // SAFETY: the buffer holds the announced length.
        match unsafe { get(s, o, &mut attr, 1) } {
            CKR_OK => Ok(value),
            rv => Err(rv),
        }
    }

    #[track_caller]
    pub fn attr(
        &self,
        session: &Session,
        object: ObjectHandle,
        kind: CK_ATTRIBUTE_TYPE,
    ) -> Vec<u8> {
        let value = self.get_attr(session, object, kind);
        value.unwrap_or_else(|rv| panic!("C_GetAttributeValue({kind:#x}): {}", common::rv_name(rv)))
    }

    #[track_caller]
    pub fn attr_bool(
        &self,
        session: &Session,
        object: ObjectHandle,
        kind: CK_ATTRIBUTE_TYPE,
    ) -> bool {
        self.attr(session, object, kind) == [CK_TRUE]
    }

    pub fn token_info(&self, slot: Slot) -> CK_TOKEN_INFO {
        let mut info = CK_TOKEN_INFO::default();
        // SAFETY: a valid out-pointer.
        let rv = unsafe { self.fl.C_GetTokenInfo.expect("C_GetTokenInfo")(slot.into(), &mut info) };
        common::assert_rv(rv, CKR_OK);
        info
    }

    pub fn mechanism_info(&self, slot: Slot, mechanism: CK_MECHANISM_TYPE) -> CK_MECHANISM_INFO {
        let mut info = CK_MECHANISM_INFO::default();
        let get = self.fl.C_GetMechanismInfo.expect("C_GetMechanismInfo");
        // SAFETY: a valid out-pointer.
        common::assert_rv(unsafe { get(slot.into(), mechanism, &mut info) }, CKR_OK);
        info
    }

    pub fn mechanisms(&self, slot: Slot) -> Vec<CK_MECHANISM_TYPE> {
        let list = self.fl.C_GetMechanismList.expect("C_GetMechanismList");
        let mut count: CK_ULONG = 0;
        // SAFETY: NULL list: asks for the count.
        common::assert_rv(
            unsafe { list(slot.into(), std::ptr::null_mut(), &mut count) },
            CKR_OK,
        );
        let mut out = vec![0; count as usize];
        // SAFETY: the buffer holds `count` entries.
        common::assert_rv(
            unsafe { list(slot.into(), out.as_mut_ptr(), &mut count) },
            CKR_OK,
        );
        out.truncate(count as usize);
        out
    }
}

/// A key record as SoftHSM holds it.
pub struct Record {
    pub handle: ObjectHandle,
    pub value: Vec<u8>,
    pub private: bool,
}

impl Record {
    /// 1 = private key, 2 = public key (byte 10).
    pub fn kind(&self) -> u8 {
        self.value[10]
    }

    /// Storage epoch (bytes 11..15, little-endian).
    pub fn epoch(&self) -> u32 {
        u32::from_le_bytes(self.value[11..15].try_into().expect("4 bytes"))
    }
}

pub struct Forward {
    pub dir: PathBuf,
    pub conf: PathBuf,
    /// The copy of the module behind the last slot, and its configuration.
    pub inner_library: PathBuf,
    pub inner_conf: PathBuf,
    /// The module under test and its slots.
    pub module: Pkcs11,
    pub slots: Vec<Slot>,
    /// SoftHSM, loaded and initialised by the test itself.
    pub hsm: Pkcs11,
    pub hsm_raw: RawLib,
}

static FIXTURE: OnceLock<Forward> = OnceLock::new();

/// The fixture of this process: SoftHSM tokens labelled `tokens` (slots 0..), then the slot of
/// the inner module (slot `tokens.len()`).
pub fn fixture(tokens: &[&str]) -> &'static Forward {
    FIXTURE.get_or_init(|| {
        assert!(
            Path::new(SOFTHSM_LIB).exists(),
            "{SOFTHSM_LIB} is missing: install SoftHSM2 (scripts/deps.sh installs softhsm2); \
             the pkcs11-backend tests need it and never skip"
        );
        // Loaded (not initialised) first: a stale module or tool fails before files are made.
        let module = common::load_module();
        admin_path();
        // A fresh directory is removed again if anything below fails.
        let (dir, fresh) = match std::env::var_os(FWD_DIR_VAR) {
            Some(dir) => (PathBuf::from(dir), None),
            None => {
                let fresh = temp_dir("b4ae-forward-");
                prepare(fresh.path(), tokens);
                (fresh.path().to_owned(), Some(fresh))
            }
        };
        let hsm = Pkcs11::new(SOFTHSM_LIB).expect("loading SoftHSM2");
        ok(hsm.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)));
        let hsm_raw = RawLib::load(Path::new(SOFTHSM_LIB));
        common::initialize(&module);
        let slots = ok(module.get_all_slots());
        assert_eq!(slots.len(), tokens.len() + 1, "one slot per [[token]]");
        if let Some(fresh) = fresh {
            let _ = fresh.keep();
            // SAFETY: registers a plain function that only reads a static.
            unsafe { libc::atexit(remove_fixture_dir) };
        }
        Forward {
            conf: dir.join("b4ae-pkcs11.toml"),
            inner_library: dir.join("libb4ae_inner.so"),
            inner_conf: dir.join("inner.toml"),
            dir,
            module,
            slots,
            hsm,
            hsm_raw,
        }
    })
}

/// Writes everything a fresh fixture needs into `dir` and sets the environment.
fn prepare(dir: &Path, tokens: &[&str]) {
    let text = |p: &Path| p.to_str().expect("UTF-8 temporary path").to_owned();
    std::fs::create_dir_all(dir.join("tokens")).expect("token directory");
    let softhsm_conf = dir.join("softhsm2.conf");
    write_softhsm_conf(&softhsm_conf, &dir.join("tokens"));
    std::env::set_var(SOFTHSM_CONF_VAR, &softhsm_conf);
    // The module's PIN failure counters, kept out of the user's home.
    std::env::set_var("B4AE_PKCS11_STATE_DIR", dir.join("state"));
    for label in tokens {
        softhsm_init_token(label);
    }

    let inner_library = dir.join("libb4ae_inner.so");
    std::fs::copy(common::module_path(), &inner_library).expect("copying the module");
    let inner_conf = dir.join("inner.toml");
    let inner = format!(
        "[[token]]\nlabel = \"Inner\"\nbackend = \"embedded\"\npath = \"{}\"\npin_kdf = \"test-only-fast\"\n",
        text(&dir.join("inner"))
    );
    std::fs::write(&inner_conf, inner).expect("inner configuration");
    let args = ["init-token", "--label", INNER_LABEL];
    let pins = [("B4AE_SO_PIN", HSM_SO_PIN), ("B4AE_USER_PIN", INNER_PIN)];
    assert_success("admin init-token", &admin_with(&args, &inner_conf, &pins));

    let mut conf = String::new();
    for label in tokens {
        conf += &format!(
            "[[token]]\nlabel = \"HSM {label}\"\nbackend = \"pkcs11\"\nlibrary = \"{SOFTHSM_LIB}\"\ntoken_label = \"{label}\"\n\n"
        );
    }
    conf += &format!(
        "[[token]]\nlabel = \"Native\"\nbackend = \"pkcs11\"\nlibrary = \"{}\"\ntoken_label = \"{INNER_LABEL}\"\ninit_reserved = \"config={}\"\n",
        text(&inner_library),
        text(&inner_conf)
    );
    std::fs::write(dir.join("b4ae-pkcs11.toml"), conf).expect("configuration");
    std::env::set_var(CONF_VAR, dir.join("b4ae-pkcs11.toml"));
}

extern "C" fn remove_fixture_dir() {
    if let Some(f) = FIXTURE.get() {
        let _ = std::fs::remove_dir_all(&f.dir);
    }
}

pub fn write_softhsm_conf(path: &Path, tokens: &Path) {
    let conf = format!(
        "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
        tokens.display()
    );
    std::fs::write(path, conf).expect("softhsm2.conf");
}

/// A path as text for an environment variable.
pub fn text(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temporary path")
}

/// `softhsm2-util --init-token --free` (with the `SOFTHSM2_CONF` of this process).
pub fn softhsm_init_token(label: &str) {
    softhsm_init_token_with(None, label);
}

/// `softhsm2-util --init-token --free` with SoftHSM configuration `conf` (else the process's).
pub fn softhsm_init_token_with(conf: Option<&Path>, label: &str) {
    let mut command = Command::new("softhsm2-util");
    if let Some(conf) = conf {
        command.env(SOFTHSM_CONF_VAR, conf);
    }
    let output = command
        .args(["--init-token", "--free", "--label", label])
        .args(["--so-pin", HSM_SO_PIN, "--pin", HSM_PIN])
        .output()
        .expect("running softhsm2-util (install softhsm2: scripts/deps.sh)");
    assert_success("softhsm2-util --init-token", &output);
}

/// A SoftHSM token directory of its own (outside the fixture), for a test that breaks it.
pub struct OwnSoftHsm {
    pub dir: TempDir,
    /// The `softhsm2.conf` to hand to a process as `SOFTHSM2_CONF`.
    pub conf: PathBuf,
    /// SoftHSM's `directories.tokendir`: one directory per token.
    pub tokens: PathBuf,
}

impl OwnSoftHsm {
    /// A fresh token directory with one initialised token per label (SO PIN [`HSM_SO_PIN`],
    /// user PIN [`HSM_PIN`]).
    pub fn new(prefix: &str, labels: &[&str]) -> Self {
        let dir = temp_dir(prefix);
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).expect("token directory");
        let conf = dir.path().join("softhsm2.conf");
        write_softhsm_conf(&conf, &tokens);
        for label in labels {
            softhsm_init_token_with(Some(&conf), label);
        }
        OwnSoftHsm { dir, conf, tokens }
    }
}

/// The directory SoftHSM keeps the only token of `tokens` (its tokendir) in.
pub fn only_token_dir(tokens: &Path) -> PathBuf {
    let entries = std::fs::read_dir(tokens).expect("reading SoftHSM's tokendir");
    let dirs: Vec<PathBuf> = entries
        .map(|e| e.expect("tokendir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "one token directory in {tokens:?}: {dirs:?}");
    dirs.into_iter().next().expect("one directory")
}

/// Compiles tests/forward_common/faulty_hsm.c (SoftHSM with a switchable CKR_DEVICE_ERROR) into `dir`.
pub fn build_faulty_hsm(dir: &Path) -> PathBuf {
    build_faulty_hsm_as(dir, "libfaulty.so", &[])
}

/// The same library offering a PKCS#11 3.0 interface: a named user and `C_SessionCancel`.
pub fn build_faulty_hsm_3_0(dir: &Path) -> PathBuf {
    build_faulty_hsm_as(dir, "libfaulty30.so", &["-DFAULTY_HSM_3_0"])
}

fn build_faulty_hsm_as(dir: &Path, name: &str, defines: &[&str]) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let library = dir.join(name);
    let output = Command::new("cc")
        .current_dir(root)
        .args(["-shared", "-fPIC", "-Wall", "-Werror", "-I", "include"])
        .args(defines)
        .arg("tests/forward_common/faulty_hsm.c")
        .arg("-ldl")
        .arg("-o")
        .arg(&library)
        .output()
        .expect("running cc (install a C compiler: scripts/deps.sh)");
    assert_success("cc tests/forward_common/faulty_hsm.c", &output);
    library
}

#[track_caller]
pub fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({})\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Newest modification time among the files the crate is built from.
fn newest_source() -> std::time::SystemTime {
    fn walk(dir: &Path, newest: &mut std::time::SystemTime) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, newest);
            } else if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                *newest = (*newest).max(modified);
            }
        }
    }
    let mut newest = std::time::UNIX_EPOCH;
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut newest,
    );
    newest
}

/// The admin tool `b4ae-pkcs11`, built beside the module (refused when older than the sources).
pub fn admin_path() -> PathBuf {
    let module = common::module_path();
    let path = module
        .parent()
        .expect("module directory")
        .join("b4ae-pkcs11");
    let built = path.metadata().and_then(|m| m.modified());
    let built =
        built.unwrap_or_else(|e| panic!("{}: {e}: run `cargo build --bins`", path.display()));
    assert!(
        built >= newest_source(),
        "{} is older than the sources: run `cargo build --lib --bins`",
        path.display()
    );
    path
}

/// Runs the admin tool with configuration `conf`; killed (and the test failed) after 2 minutes.
pub fn admin(args: &[&str], conf: &Path) -> Output {
    admin_with(args, conf, &[])
}

/// [`admin`] with the user PIN in the environment, where the tool reads it.
pub fn admin_with_user_pin(args: &[&str], conf: &Path, user_pin: &str) -> Output {
    admin_with(args, conf, &[("B4AE_USER_PIN", user_pin)])
}

/// [`admin`] with extra environment variables (PINs are never arguments).
pub fn admin_with(args: &[&str], conf: &Path, envs: &[(&str, &str)]) -> Output {
    let child = Command::new(admin_path())
        .args(args)
        .env(CONF_VAR, conf)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running b4ae-pkcs11");
    let pid = child.id();
    let (done, wait) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match wait.recv_timeout(ADMIN_TIMEOUT) {
        Ok(output) => output.expect("waiting for b4ae-pkcs11"),
        Err(_) => {
            // SAFETY: signals the child this test started, by its id.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("b4ae-pkcs11 {args:?} did not finish within {ADMIN_TIMEOUT:?} (deadlock?)");
        }
    }
}

/// Runs `f` on its own thread; fails the test if it has not returned after `limit` (a deadlock
/// in the module would otherwise hang the whole test run).
#[track_caller]
pub fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (done, wait) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(f());
    });
    match wait.recv_timeout(limit) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} did not return within {limit:?} (deadlock?)")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}

impl Forward {
    /// Runs `test` alone in a child process with this fixture's files.
    pub fn child(&self, test: &str) -> String {
        let dir = self.dir.to_str().expect("UTF-8");
        let softhsm = self.dir.join("softhsm2.conf");
        let envs = [
            (FWD_DIR_VAR, dir),
            (SOFTHSM_CONF_VAR, softhsm.to_str().expect("UTF-8")),
        ];
        run_child(test, &self.conf, &envs)
    }

    /// A read/write session of the module on slot `index`, logged in as the user (a test
    /// running at the same time on that slot may have logged the token in already: PKCS#11
    /// keeps one login per token and application).
    pub fn module_session(&self, index: usize) -> Session {
        let session = ok(self.module.open_rw_session(self.slots[index]));
        let login = session.login(UserType::User, Some(&common::pin(self.user_pin(index))));
        if common::ToRv::to_rv(&login) != CKR_USER_ALREADY_LOGGED_IN {
            ok(login);
        }
        session
    }

    /// The user PIN of slot `index`: SoftHSM's, or the inner embedded token's (the last slot).
    pub fn user_pin(&self, index: usize) -> &'static str {
        if index + 1 == self.slots.len() {
            INNER_PIN
        } else {
            HSM_PIN
        }
    }

    /// SoftHSM's own slot of the token labelled `label`.
    pub fn hsm_slot(&self, label: &str) -> Slot {
        let slots = ok(self.hsm.get_slots_with_token());
        let found = slots
            .into_iter()
            .find(|s| ok(self.hsm.get_token_info(*s)).label() == label);
        found.unwrap_or_else(|| panic!("SoftHSM has no token {label:?}"))
    }

    /// A direct SoftHSM session, logged in (SoftHSM keeps one login per token and process, so
    /// the module's login may already hold).
    pub fn hsm_session(&self, label: &str) -> Session {
        let session = ok(self.hsm.open_rw_session(self.hsm_slot(label)));
        match session.login(UserType::User, Some(&common::pin(HSM_PIN))) {
            Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => session,
            Err(e) => panic!("{e}"),
        }
    }

    /// Labels of the B4AE storage keys in SoftHSM (STK-n, and release 1's MIK, DMK and
    /// STK-n), sorted, with handles.
    pub fn storage_keys(&self, session: &Session) -> Vec<(String, ObjectHandle)> {
        let keys = ok(session.find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)]));
        let mut found: Vec<_> = keys
            .into_iter()
            .map(|k| {
                let label = self.hsm_raw.attr(session, k, CKA_LABEL);
                (String::from_utf8(label).expect("UTF-8 label"), k)
            })
            .filter(|(label, _)| label.starts_with("B4AE-v1-") || label.starts_with(STK_PREFIX))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// Labels of the storage keys only ("B4AE-v2-STK-n").
    pub fn stk_labels(&self, session: &Session) -> Vec<String> {
        let keys = self.storage_keys(session).into_iter().map(|(l, _)| l);
        keys.filter(|l| l.starts_with(STK_PREFIX)).collect()
    }

    /// Every key record (CKO_DATA, CKA_APPLICATION = the record tag) SoftHSM holds.
    pub fn records(&self, session: &Session) -> Vec<Record> {
        let template = [
            Attribute::Class(ObjectClass::DATA),
            Attribute::Application(RECORD_APPLICATION.to_vec()),
        ];
        let handles = ok(session.find_objects(&template));
        handles
            .into_iter()
            .map(|handle| Record {
                handle,
                value: self.hsm_raw.attr(session, handle, CKA_VALUE),
                private: self.hsm_raw.attr_bool(session, handle, CKA_PRIVATE),
            })
            .collect()
    }

    /// Generates "B4AE-v2-STK-<epoch>" directly in SoftHSM, with the template of
    /// src/backend/pkcs11/hierarchy.rs (what a rotation does first).
    pub fn generate_stk(&self, session: &Session, epoch: u32) -> ObjectHandle {
        let label = format!("{STK_PREFIX}{epoch}");
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Label(label.into_bytes()),
            Attribute::Id(STK_ID.to_vec()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Derive(false),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::AllowedMechanisms(vec![cryptoki::mechanism::MechanismType::AES_GCM]),
            Attribute::Modifiable(false),
        ];
        ok(session.generate_key(&Mechanism::AesKeyGen, &template))
    }
}

/// An ML-DSA token key pair, both halves labelled `label`; the private key readable when
/// `exportable` (CKA_SENSITIVE=FALSE, CKA_EXTRACTABLE=TRUE).
#[track_caller]
pub fn pq_keypair(
    session: &Session,
    ps: common::Ps,
    label: &str,
    exportable: bool,
) -> (ObjectHandle, ObjectHandle) {
    let (public, private) = pq_templates(ps, label, exportable);
    ok(session.generate_key_pair(&Mechanism::MlDsaKeyPairGen, &public, &private))
}

/// The templates [`pq_keypair`] generates with: (public, private).
pub fn pq_templates(
    ps: common::Ps,
    label: &str,
    exportable: bool,
) -> (Vec<Attribute>, Vec<Attribute>) {
    let public = vec![
        Attribute::Token(true),
        Attribute::Verify(true),
        Attribute::ParameterSet(ps.parameter_set()),
        Attribute::Label(label.into()),
    ];
    let private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sign(true),
        Attribute::Label(label.into()),
        Attribute::Sensitive(!exportable),
        Attribute::Extractable(exportable),
    ];
    (public, private)
}

/// The ML-DSA key pair labelled `label`, found through the module: (public, private).
#[track_caller]
pub fn find_pq_pair(session: &Session, label: &str) -> (ObjectHandle, ObjectHandle) {
    let find = |class| {
        let template = [
            Attribute::Class(class),
            Attribute::KeyType(KeyType::ML_DSA),
            Attribute::Label(label.into()),
        ];
        let found = ok(session.find_objects(&template));
        assert_eq!(found.len(), 1, "{class:?} {label:?}: {found:?}");
        found[0]
    };
    (
        find(ObjectClass::PUBLIC_KEY),
        find(ObjectClass::PRIVATE_KEY),
    )
}

/// Signs MESSAGE through the module, verifies through the module and with the `ml-dsa` crate
/// (a flipped bit must fail both ways); returns the public key.
#[track_caller]
pub fn sign_and_check(
    session: &Session,
    ps: common::Ps,
    public: ObjectHandle,
    private: ObjectHandle,
) -> Vec<u8> {
    let mechanism = common::pure_ml_dsa();
    let signature = ok(session.sign(&mechanism, private, common::MESSAGE));
    assert_eq!(signature.len(), ps.sig_len());
    ok(session.verify(&mechanism, public, common::MESSAGE, &signature));
    let pk = common::attr_bytes(session, public, CKA_VALUE);
    assert_eq!(pk.len(), ps.pk_len());
    assert!(
        ps.verify(&pk, common::MESSAGE, b"", &signature),
        "ml-dsa rejects the signature"
    );
    let mut forged = signature;
    forged[17] ^= 0x40;
    assert!(!ps.verify(&pk, common::MESSAGE, b"", &forged));
    let refused = session.verify(&mechanism, public, common::MESSAGE, &forged);
    common::assert_rv(refused, CKR_SIGNATURE_INVALID);
    pk
}

/// An AES-256 key made through `session`.
pub fn aes_key(session: &Session, label: &str, token: bool) -> ObjectHandle {
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Token(token),
        Attribute::Private(true),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Label(label.into()),
    ];
    ok(session.generate_key(&Mechanism::AesKeyGen, &template))
}

/// An EC P-256 token key pair made through `session`: (public, private).
pub fn ec_keypair(session: &Session, label: &str) -> (ObjectHandle, ObjectHandle) {
    let public = [
        Attribute::Token(true),
        Attribute::Verify(true),
        Attribute::EcParams(P256.to_vec()),
        Attribute::Label(label.into()),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sign(true),
        Attribute::Label(label.into()),
    ];
    ok(session.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private))
}
pub mod both;

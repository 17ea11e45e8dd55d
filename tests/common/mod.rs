//! Shared helpers for the integration tests of b4ae-pkcs11.
//!
//! Every test talks to the *built* `libb4ae_pkcs11.so` (never the rlib): through the
//! `cryptoki` crate for ordinary calls, and through the raw 3.2 function list (`ck!`) where
//! exact return values, lengths or NULL pointers matter. Both load the same shared object, so
//! they share one module instance per process.
//!
//! Each test file has one process-wide [`fixture`]: a temporary configuration with
//! [`FIXTURE_TOKENS`] embedded tokens, initialised once. Each test uses its own slot (a fixed
//! index per test), so tests running as threads never share a token. Tests that finalise the
//! module or need a fresh process re-run the test binary for themselves alone ([`run_child`]).

#![allow(dead_code, unused_macros)]

/// Calls one function of the module's PKCS#11 3.2 function list with raw arguments and
/// evaluates to its `CK_RV`: `ck!(C_GetInfo(&mut info))`. Never use it inside `unsafe {}`.
macro_rules! ck {
    ($function:ident($($arg:expr),* $(,)?)) => {{
        let function = $crate::common::fl()
            .$function
            .expect(concat!(stringify!($function), " is NULL in the 3.2 function list"));
        // SAFETY: callers pass pointers to live buffers of the announced sizes, or NULL
        // pointers that the module must reject.
        unsafe { function($($arg),*) }
    }};
}

/// Raw calls that must all return `expected`, one per line:
/// `assert_ck!(CKR_ARGUMENTS_BAD; C_GetInfo(null()), C_GetSlotList(0, null(), null()))`.
macro_rules! assert_ck {
    ($expected:expr; $($function:ident($($arg:expr),* $(,)?)),+ $(,)?) => {
        $crate::common::assert_all_rv(
            &[$((stringify!($function), ck!($function($($arg),*)))),+],
            $expected,
        )
    };
}

/// The name of the enclosing test function, as libtest knows it.
macro_rules! test_name {
    () => {{
        fn here() {}
        let path = std::any::type_name_of_val(&here);
        let path = path.strip_suffix("::here").unwrap_or(path);
        path.split_once("::").map_or(path, |(_, name)| name)
    }};
}

/// Calls `function::<MlDsa44/65/87>(args)` for a [`Ps`].
macro_rules! per_parameter_set {
    ($ps:expr, $function:ident($($arg:expr),*)) => {
        match $ps {
            Ps::P44 => $function::<MlDsa44>($($arg),*),
            Ps::P65 => $function::<MlDsa65>($($arg),*),
            Ps::P87 => $function::<MlDsa87>($($arg),*),
        }
    };
}

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::ptr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, Rv, RvError};
use cryptoki::mechanism::dsa::{HedgeType, SignAdditionalContext};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{
    Attribute, KeyType, MlDsaParameterSetType, ObjectClass, ObjectHandle, ParameterSetType,
};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use cryptoki_sys::*;
use ml_dsa::{EncodedVerifyingKey, ExpandedSigningKey, ExpandedSigningKeyBytes};
use ml_dsa::{MlDsa44, MlDsa65, MlDsa87, MlDsaParams, VerifyingKey};
use tempfile::TempDir;

pub const SO_PIN: &str = "so-pin-0000";
pub const USER_PIN: &str = "user-pin-1111";

/// Number of embedded tokens (slots 0..FIXTURE_TOKENS) in each file's fixture.
pub const FIXTURE_TOKENS: usize = 16;

pub const CONF_VAR: &str = "B4AE_PKCS11_CONF";
pub const MODULE_VAR: &str = "B4AE_PKCS11_MODULE";
/// Set to the test's name in a process started by [`run_child`].
pub const CHILD_VAR: &str = "B4AE_TEST_CHILD";
pub const LIBRARY_NAME: &str = "libb4ae_pkcs11.so";

/// Vendor attribute from include/b4ae_pkcs11.h, and its value for the embedded store.
pub const CKA_B4AE_CUSTODY: CK_ATTRIBUTE_TYPE = 0xB4AE_0003;
pub const B4AE_CUSTODY_EMBEDDED: CK_ULONG = 3;

/// An attribute type that no PKCS#11 version defines.
pub const UNKNOWN_ATTRIBUTE: CK_ATTRIBUTE_TYPE = 0x7FFF_0001;

pub const RO: CK_FLAGS = CKF_SERIAL_SESSION;
pub const RW: CK_FLAGS = CKF_SERIAL_SESSION | CKF_RW_SESSION;

pub const MESSAGE: &[u8] = b"B4AE integration test message";

const CHILD_TIMEOUT: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------------------------
// Locating and loading the module

/// The built module: `$B4AE_PKCS11_MODULE`, else beside the test binary's `deps/` directory
/// (the profile directory cargo built it into), else `target/debug/`.
pub fn module_path() -> PathBuf {
    if let Some(path) = std::env::var_os(MODULE_VAR) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let beside_tests = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(LIBRARY_NAME));
    match beside_tests {
        Some(path) if path.exists() => path,
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/debug")
            .join(LIBRARY_NAME),
    }
}

/// Newest modification time among the files the module is built from.
fn newest_source() -> Option<std::time::SystemTime> {
    fn walk(dir: &Path, newest: &mut Option<std::time::SystemTime>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, newest);
            } else if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                *newest = (*newest).max(Some(modified));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut newest = None;
    walk(&root.join("src"), &mut newest);
    for file in [
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "include/b4ae_pkcs11.h",
    ] {
        if let Ok(modified) = root.join(file).metadata().and_then(|m| m.modified()) {
            newest = newest.max(Some(modified));
        }
    }
    newest
}

/// Loads the module through `cryptoki` (which selects the 3.2 interface).
///
/// `cargo test` builds the crate's rlib but not its cdylib: a module older than the sources
/// would test old code, so that is refused with the command that fixes it.
pub fn load_module() -> Pkcs11 {
    let path = module_path();
    if std::env::var_os(MODULE_VAR).is_none() {
        let built = path.metadata().and_then(|m| m.modified()).ok();
        if let (Some(built), Some(source)) = (built, newest_source()) {
            assert!(
                built >= source,
                "{} is older than the sources: run `cargo build --lib` (or `cargo build --release --lib` \
                 for --release tests) before `cargo test`",
                path.display()
            );
        }
    }
    let hint = format!(
        "{}: build the crate first, or set {MODULE_VAR}",
        path.display()
    );
    Pkcs11::new(path).unwrap_or_else(|e| panic!("{hint} ({e})"))
}

/// C_Initialize with CKF_OS_LOCKING_OK.
pub fn initialize(pkcs11: &Pkcs11) {
    ok(pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)));
}

/// The module's function lists, as handed out by C_GetFunctionList and C_GetInterface.
pub struct RawModule {
    _library: cryptoki_sys::Pkcs11,
    pub v2_40: CK_FUNCTION_LIST,
    pub v3_2: CK_FUNCTION_LIST_3_2,
}

pub fn raw() -> &'static RawModule {
    static RAW: OnceLock<RawModule> = OnceLock::new();
    RAW.get_or_init(|| {
        let path = module_path();
        // SAFETY: loading the module under test.
        let library = unsafe { cryptoki_sys::Pkcs11::new(&path) }
            .unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()));
        assert!(library.C_GetFunctionList.is_ok(), "no C_GetFunctionList");
        assert!(library.C_GetInterface.is_ok(), "no C_GetInterface");
        let mut list: *mut CK_FUNCTION_LIST = null();
        let mut interface: *mut CK_INTERFACE = null();
        // SAFETY: valid out-pointers; NULL name and version ask for the default interface.
        let rvs = unsafe {
            let rv = library.C_GetFunctionList(&mut list);
            (
                rv,
                library.C_GetInterface(null(), null(), &mut interface, 0),
            )
        };
        assert_eq!(rvs, (CKR_OK, CKR_OK), "C_GetFunctionList, C_GetInterface");
        assert!(
            !list.is_null() && !interface.is_null(),
            "NULL function list"
        );
        // SAFETY: both pointers come from the module; every function list starts with its
        // CK_VERSION, which is checked before the list is read as a 3.2 table.
        let (v2_40, v3_2) = unsafe {
            let functions = (*interface).pFunctionList;
            assert!(
                !functions.is_null(),
                "the default interface has no functions"
            );
            let version = *functions.cast::<CK_VERSION>();
            let version = (version.major, version.minor);
            assert_eq!(version, (3, 2), "the default interface must be PKCS#11 3.2");
            (*list, *functions.cast::<CK_FUNCTION_LIST_3_2>())
        };
        RawModule {
            _library: library,
            v2_40,
            v3_2,
        }
    })
}

/// A NULL pointer of any type, for raw calls.
pub fn null<T>() -> *mut T {
    ptr::null_mut()
}

/// The PKCS#11 3.2 function list used by `ck!`.
pub fn fl() -> &'static CK_FUNCTION_LIST_3_2 {
    &raw().v3_2
}

// ---------------------------------------------------------------------------------------------
// Return values

/// "CKR_OK" or e.g. "PinIncorrect (0xa0)".
pub fn rv_name(rv: CK_RV) -> String {
    match Rv::from(rv) {
        Rv::Ok => "CKR_OK".to_string(),
        Rv::Error(e) => format!("{e:?} ({rv:#x})"),
    }
}

/// The CKR_ value behind a `cryptoki` error code.
pub fn rv_code(error: RvError) -> CK_RV {
    let mut codes: std::ops::Range<CK_RV> = 0..0x1000;
    match error {
        RvError::UnknownErrorCode(code) | RvError::VendorDefined(code) => code,
        _ => codes
            .find(|&code| Rv::from(code) == Rv::Error(error))
            .unwrap_or_else(|| panic!("no CKR_ value for {error:?}")),
    }
}

/// Something that ends in a `CK_RV`: a raw call's result or a `cryptoki` result.
pub trait ToRv {
    fn to_rv(&self) -> CK_RV;
}

impl ToRv for CK_RV {
    fn to_rv(&self) -> CK_RV {
        *self
    }
}

impl<T> ToRv for cryptoki::error::Result<T> {
    fn to_rv(&self) -> CK_RV {
        match self {
            Ok(_) => CKR_OK,
            Err(Error::Pkcs11(error, _)) => rv_code(*error),
            Err(other) => panic!("not a PKCS#11 return value: {other:?}"),
        }
    }
}

/// Unwraps a `cryptoki` result; a failure names the function, the CKR_ value and the caller.
#[track_caller]
pub fn ok<T>(result: cryptoki::error::Result<T>) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{error}"),
    }
}

#[track_caller]
pub fn assert_rv(actual: impl ToRv, expected: CK_RV) {
    let actual = actual.to_rv();
    assert!(
        actual == expected,
        "expected {}, got {}",
        rv_name(expected),
        rv_name(actual)
    );
}

#[track_caller]
pub fn assert_rv_in(actual: impl ToRv, allowed: &[CK_RV]) {
    let actual = actual.to_rv();
    let names: Vec<String> = allowed.iter().map(|&rv| rv_name(rv)).collect();
    let got = rv_name(actual);
    assert!(
        allowed.contains(&actual),
        "expected one of {names:?}, got {got}"
    );
}

/// Checks a batch of named raw results that must all be `expected` (see `assert_ck!`).
#[track_caller]
pub fn assert_all_rv(calls: &[(&str, CK_RV)], expected: CK_RV) {
    let wrong: Vec<String> = calls
        .iter()
        .filter(|(_, rv)| *rv != expected)
        .map(|(name, rv)| format!("{name}: {}", rv_name(*rv)))
        .collect();
    let expected = rv_name(expected);
    assert!(
        wrong.is_empty(),
        "expected {expected}, but:\n  {}",
        wrong.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// Description of slot `index` in every generated configuration.
pub fn slot_label(index: usize) -> String {
    format!("B4AE Test {index}")
}

/// TOML for `tokens` embedded tokens stored under `dir`, with the fast test-only PIN KDF.
pub fn config_toml(dir: &Path, tokens: usize, max_pin_failures: Option<u32>) -> String {
    let mut toml = String::new();
    for index in 0..tokens {
        let path = dir.join(format!("token{index}"));
        let path = path.to_str().expect("UTF-8 temporary path");
        assert!(!path.contains(['"', '\\']), "unusual temporary path {path}");
        let label = slot_label(index);
        writeln!(
            toml,
            "[[token]]\nlabel = \"{label}\"\nbackend = \"embedded\""
        )
        .unwrap();
        writeln!(toml, "path = \"{path}\"\npin_kdf = \"test-only-fast\"").unwrap();
        if let Some(limit) = max_pin_failures {
            writeln!(toml, "max_pin_failures = {limit}").unwrap();
        }
        toml.push('\n');
    }
    toml
}

pub fn write_config(dir: &Path, tokens: usize, max_pin_failures: Option<u32>) -> PathBuf {
    let path = dir.join("b4ae-pkcs11.toml");
    std::fs::write(&path, config_toml(dir, tokens, max_pin_failures)).expect("writing config");
    path
}

/// The store file of the embedded token configured at `token_dir` (the `path` of its
/// `[[token]]`).
pub fn store_file(token_dir: &Path) -> PathBuf {
    b4ae_pkcs11::backend::embedded::store_file(token_dir)
}

/// The store file of token `index` of a configuration written by [`write_config`] in `dir`.
pub fn token_store(dir: &Path, index: usize) -> PathBuf {
    store_file(&dir.join(format!("token{index}")))
}

/// A temporary directory under cargo's target/tmp (so `cargo clean` removes leftovers).
pub fn temp_dir(prefix: &str) -> TempDir {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base).expect("creating target/tmp");
    let dir = tempfile::Builder::new().prefix(prefix).tempdir_in(base);
    dir.expect("creating a temporary directory")
}

/// A configuration file in its own temporary directory, removed on drop.
pub struct TestConfig {
    dir: TempDir,
    pub path: PathBuf,
}

impl TestConfig {
    pub fn new(tokens: usize, max_pin_failures: Option<u32>) -> Self {
        let dir = temp_dir("b4ae-config-");
        let path = write_config(dir.path(), tokens, max_pin_failures);
        TestConfig { dir, path }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

// ---------------------------------------------------------------------------------------------
// The process-wide fixture

pub struct Fixture {
    pub pkcs11: Pkcs11,
    pub slots: Vec<Slot>,
    pub conf: PathBuf,
    pub dir: PathBuf,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

/// The module, initialised once for this process, with [`FIXTURE_TOKENS`] fresh tokens.
pub fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        let dir = temp_dir("b4ae-fixture-").keep();
        let conf = write_config(&dir, FIXTURE_TOKENS, None);
        std::env::set_var(CONF_VAR, &conf);
        let pkcs11 = load_module();
        initialize(&pkcs11);
        let slots = ok(pkcs11.get_all_slots());
        assert_eq!(slots.len(), FIXTURE_TOKENS, "one slot per [[token]]");
        // SAFETY: registers a plain function that only reads a static.
        unsafe { libc::atexit(remove_fixture_dir) };
        Fixture {
            pkcs11,
            slots,
            conf,
            dir,
        }
    })
}

extern "C" fn remove_fixture_dir() {
    if let Some(fixture) = FIXTURE.get() {
        let _ = std::fs::remove_dir_all(&fixture.dir);
    }
}

impl Fixture {
    /// Slot `index`; its token is uninitialised until the test initialises it.
    pub fn slot(&self, index: usize) -> Slot {
        self.slots[index]
    }

    /// Slot `index` with its token initialised (SO PIN, label `tok-<index>`, user PIN).
    pub fn ready_slot(&self, index: usize) -> Slot {
        let slot = self.slot(index);
        init_token(&self.pkcs11, slot, &format!("tok-{index}"));
        slot
    }

    /// A read/write session logged in as the user.
    pub fn user_session(&self, slot: Slot) -> Session {
        user_session(&self.pkcs11, slot)
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens, sessions and login

/// A template for a KEM's shared secret that lets the test read it (a session generic secret).
pub fn readable_shared_secret() -> [Attribute; 5] {
    [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(false),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
    ]
}

/// `C_Initialize` arguments: the library's own locking, and `reserved` as `pReserved`.
pub fn os_locking_args(reserved: *mut std::ffi::c_void) -> CK_C_INITIALIZE_ARGS {
    CK_C_INITIALIZE_ARGS {
        CreateMutex: None,
        DestroyMutex: None,
        LockMutex: None,
        UnlockMutex: None,
        flags: CKF_OS_LOCKING_OK,
        pReserved: reserved,
    }
}

pub fn pin(value: &str) -> AuthPin {
    AuthPin::new(value.into())
}

/// C_InitToken, then in a R/W session: SO login, C_InitPIN(USER_PIN), logout, close.
#[track_caller]
pub fn init_token(pkcs11: &Pkcs11, slot: Slot, label: &str) {
    ok(pkcs11.init_token(slot, &pin(SO_PIN), label));
    let session = ok(pkcs11.open_rw_session(slot));
    ok(session.login(UserType::So, Some(&pin(SO_PIN))));
    ok(session.init_pin(&pin(USER_PIN)));
    ok(session.logout());
}

#[track_caller]
pub fn user_session(pkcs11: &Pkcs11, slot: Slot) -> Session {
    let session = ok(pkcs11.open_rw_session(slot));
    ok(session.login(UserType::User, Some(&pin(USER_PIN))));
    session
}

/// A PIN or other text as the (pointer, length) pair of the C API.
pub fn text_arg(text: &str) -> (*mut u8, CK_ULONG) {
    (text.as_ptr().cast_mut(), text.len() as CK_ULONG)
}

pub fn open_session(slot: Slot, flags: CK_FLAGS) -> Result<CK_SESSION_HANDLE, CK_RV> {
    let mut session = CK_INVALID_HANDLE;
    match ck!(C_OpenSession(
        slot.into(),
        flags,
        null(),
        None,
        &mut session
    )) {
        CKR_OK => Ok(session),
        rv => Err(rv),
    }
}

pub fn login(session: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: &str) -> CK_RV {
    let (pin, len) = text_arg(pin);
    ck!(C_Login(session, user, pin, len))
}

pub fn logout(session: CK_SESSION_HANDLE) -> CK_RV {
    ck!(C_Logout(session))
}

pub fn close_session(session: CK_SESSION_HANDLE) -> CK_RV {
    ck!(C_CloseSession(session))
}

pub fn init_pin(session: CK_SESSION_HANDLE, pin: &str) -> CK_RV {
    let (pin, len) = text_arg(pin);
    ck!(C_InitPIN(session, pin, len))
}

pub fn set_pin(session: CK_SESSION_HANDLE, old: &str, new: &str) -> CK_RV {
    let ((old, old_len), (new, new_len)) = (text_arg(old), text_arg(new));
    ck!(C_SetPIN(session, old, old_len, new, new_len))
}

pub fn session_info(session: CK_SESSION_HANDLE) -> Result<CK_SESSION_INFO, CK_RV> {
    let mut info = CK_SESSION_INFO::default();
    match ck!(C_GetSessionInfo(session, &mut info)) {
        CKR_OK => Ok(info),
        rv => Err(rv),
    }
}

#[track_caller]
pub fn token_info(slot: Slot) -> CK_TOKEN_INFO {
    let mut info = CK_TOKEN_INFO::default();
    assert_rv(ck!(C_GetTokenInfo(slot.into(), &mut info)), CKR_OK);
    info
}

/// Asserts that the token flags in `set` are all set and those in `clear` all clear.
#[track_caller]
pub fn assert_token_flags(slot: Slot, set: CK_FLAGS, clear: CK_FLAGS) {
    let flags = token_info(slot).flags;
    assert_eq!(
        flags & set,
        set,
        "token flags {flags:#x}: expected {set:#x} set"
    );
    assert_eq!(
        flags & clear,
        0,
        "token flags {flags:#x}: expected {clear:#x} clear"
    );
}

pub fn mechanism_list(slot: Slot) -> Vec<CK_MECHANISM_TYPE> {
    let mut count: CK_ULONG = 0;
    assert_ck!(CKR_OK; C_GetMechanismList(slot.into(), null(), &mut count));
    let mut list: Vec<CK_MECHANISM_TYPE> = vec![0; count as usize];
    assert_ck!(CKR_OK; C_GetMechanismList(slot.into(), list.as_mut_ptr(), &mut count));
    list.truncate(count as usize);
    list
}

pub fn mechanism_info(
    slot: Slot,
    mechanism: CK_MECHANISM_TYPE,
) -> Result<CK_MECHANISM_INFO, CK_RV> {
    let mut info = CK_MECHANISM_INFO::default();
    match ck!(C_GetMechanismInfo(slot.into(), mechanism, &mut info)) {
        CKR_OK => Ok(info),
        rv => Err(rv),
    }
}

/// A CK_MECHANISM without parameter.
pub fn mech(mechanism: CK_MECHANISM_TYPE) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism,
        pParameter: null(),
        ulParameterLen: 0,
    }
}

// ---------------------------------------------------------------------------------------------
// Objects and attributes

/// A raw attribute pointing at `value` (a CK_ULONG, CK_BBOOL, ...).
pub fn raw_attr<T>(kind: CK_ATTRIBUTE_TYPE, value: &T) -> CK_ATTRIBUTE {
    let pointer = (value as *const T).cast_mut().cast();
    CK_ATTRIBUTE {
        type_: kind,
        pValue: pointer,
        ulValueLen: size_of::<T>() as CK_ULONG,
    }
}

/// A raw attribute pointing at a byte string.
pub fn raw_bytes(kind: CK_ATTRIBUTE_TYPE, value: &[u8]) -> CK_ATTRIBUTE {
    let pointer = value.as_ptr().cast_mut().cast();
    CK_ATTRIBUTE {
        type_: kind,
        pValue: pointer,
        ulValueLen: value.len() as CK_ULONG,
    }
}

/// A raw attribute for C_GetAttributeValue: NULL pointer and length 0.
pub fn raw_query(kind: CK_ATTRIBUTE_TYPE) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: kind,
        pValue: null(),
        ulValueLen: 0,
    }
}

/// A raw attribute whose value C_GetAttributeValue writes into `buffer`.
pub fn raw_buffer(kind: CK_ATTRIBUTE_TYPE, buffer: &mut [u8]) -> CK_ATTRIBUTE {
    let pointer = buffer.as_mut_ptr().cast();
    CK_ATTRIBUTE {
        type_: kind,
        pValue: pointer,
        ulValueLen: buffer.len() as CK_ULONG,
    }
}

/// C_GetAttributeValue with the two-call convention.
pub fn get_attr(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    kind: CK_ATTRIBUTE_TYPE,
) -> Result<Vec<u8>, CK_RV> {
    let mut attr = raw_query(kind);
    match ck!(C_GetAttributeValue(session, object, &mut attr, 1)) {
        CKR_OK => assert_ne!(
            attr.ulValueLen, CK_UNAVAILABLE_INFORMATION,
            "CKR_OK for {kind:#x}"
        ),
        rv => return Err(rv),
    }
    let mut value = vec![0u8; attr.ulValueLen as usize];
    let mut attr = raw_buffer(kind, &mut value);
    match ck!(C_GetAttributeValue(session, object, &mut attr, 1)) {
        CKR_OK => assert_eq!(attr.ulValueLen as usize, value.len(), "length of {kind:#x}"),
        rv => return Err(rv),
    }
    Ok(value)
}

#[track_caller]
pub fn attr_bytes(session: &Session, object: ObjectHandle, kind: CK_ATTRIBUTE_TYPE) -> Vec<u8> {
    let value = get_attr(session.handle(), object.handle(), kind);
    value.unwrap_or_else(|rv| panic!("C_GetAttributeValue({kind:#x}): {}", rv_name(rv)))
}

#[track_caller]
pub fn attr_ulong(session: &Session, object: ObjectHandle, kind: CK_ATTRIBUTE_TYPE) -> CK_ULONG {
    let value = attr_bytes(session, object, kind);
    match value.as_slice().try_into() {
        Ok(bytes) => CK_ULONG::from_ne_bytes(bytes),
        Err(_) => panic!("attribute {kind:#x} is not a CK_ULONG: {value:?}"),
    }
}

#[track_caller]
pub fn attr_bool(session: &Session, object: ObjectHandle, kind: CK_ATTRIBUTE_TYPE) -> bool {
    match attr_bytes(session, object, kind).as_slice() {
        [CK_FALSE] => false,
        [CK_TRUE] => true,
        other => panic!("attribute {kind:#x} is not a CK_BBOOL: {other:?}"),
    }
}

/// Template of a CKO_DATA object.
pub fn data_template(label: &str, value: &[u8], token: bool, private: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(token),
        Attribute::Private(private),
        Attribute::Label(label.into()),
        Attribute::Value(value.to_vec()),
    ]
}

#[track_caller]
pub fn find_by_label(session: &Session, label: &str) -> Vec<ObjectHandle> {
    ok(session.find_objects(&[Attribute::Label(label.into())]))
}

/// `text` padded with spaces to `len` bytes, as in CK_TOKEN_INFO and CK_SLOT_INFO.
pub fn padded(text: &str, len: usize) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    assert!(bytes.len() <= len, "{text:?} is longer than {len} bytes");
    bytes.resize(len, b' ');
    bytes
}

/// Asserts that a fixed-size text field is non-blank UTF-8 padded with spaces (no NULs);
/// returns the text without its padding.
#[track_caller]
pub fn assert_padded_text(field: &str, bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let clean = std::str::from_utf8(bytes).is_ok() && !text.chars().any(char::is_control);
    assert!(
        clean,
        "{field} must be UTF-8 padded with spaces, not NULs: {text:?}"
    );
    let trimmed = text.trim_end_matches(' ');
    assert!(!trimmed.is_empty(), "{field} is blank");
    trimmed.to_string()
}

// ---------------------------------------------------------------------------------------------
// Child processes

pub fn is_child(test: &str) -> bool {
    std::env::var(CHILD_VAR).is_ok_and(|name| name == test)
}

/// Re-runs this test binary for test `test` alone, with `$B4AE_PKCS11_CONF` = `conf` and the
/// extra variables `envs`, and asserts that the test passed there. Returns its output.
#[track_caller]
pub fn run_child(test: &str, conf: &Path, envs: &[(&str, &str)]) -> String {
    let output = temp_dir("b4ae-child-output-");
    let (stdout_path, stderr_path) = (output.path().join("out"), output.path().join("err"));
    let mut child = Command::new(std::env::current_exe().expect("current_exe"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_VAR, test)
        .env(CONF_VAR, conf)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).expect("child stdout file"))
        .stderr(File::create(&stderr_path).expect("child stderr file"))
        .spawn()
        .expect("re-running the test binary");
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(stderr_path).unwrap_or_default();
    let report = format!("--- child stdout\n{stdout}\n--- child stderr\n{stderr}");
    match status {
        None => panic!("child `{test}` timed out after {CHILD_TIMEOUT:?}\n{report}"),
        Some(status) => {
            let passed = status.success() && stdout.contains("1 passed");
            assert!(passed, "child `{test}` failed ({status})\n{report}");
        }
    }
    stdout
}

// ---------------------------------------------------------------------------------------------
// ML-DSA keys and mechanisms in the module

/// CKM_ML_DSA without a parameter (pure ML-DSA, empty context).
pub fn pure_ml_dsa() -> Mechanism<'static> {
    Mechanism::MlDsa(SignAdditionalContext::new(HedgeType::Preferred, None))
}

/// CKM_ML_DSA with a CK_SIGN_ADDITIONAL_CONTEXT.
pub fn ml_dsa_with(hedge: HedgeType, context: &[u8]) -> Mechanism<'_> {
    Mechanism::MlDsa(SignAdditionalContext::new(hedge, Some(context)))
}

/// C_GenerateKeyPair(CKM_ML_DSA_KEY_PAIR_GEN) with CKA_PARAMETER_SET on the public template.
/// The private key is CKA_PRIVATE and gets CKA_SIGN=TRUE unless `private_extra` says otherwise.
#[track_caller]
pub fn mldsa_keypair(
    session: &Session,
    ps: Ps,
    token: bool,
    private_extra: &[Attribute],
) -> (ObjectHandle, ObjectHandle) {
    let set = Attribute::ParameterSet(ps.parameter_set());
    let public = [Attribute::Token(token), Attribute::Verify(true), set];
    let mut private = vec![Attribute::Token(token), Attribute::Private(true)];
    if !private_extra
        .iter()
        .any(|a| matches!(a, Attribute::Sign(_)))
    {
        private.push(Attribute::Sign(true));
    }
    private.extend_from_slice(private_extra);
    ok(session.generate_key_pair(&Mechanism::MlDsaKeyPairGen, &public, &private))
}

/// A session ML-DSA key pair whose private key is readable (not sensitive, extractable).
pub fn mldsa_exportable_keypair(session: &Session, ps: Ps) -> (ObjectHandle, ObjectHandle) {
    let exportable = [Attribute::Sensitive(false), Attribute::Extractable(true)];
    mldsa_keypair(session, ps, false, &exportable)
}

/// Template of an ML-DSA private key (session object) made from `material`.
pub fn mldsa_private_template(ps: Ps, material: Attribute) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::ML_DSA),
        Attribute::ParameterSet(ps.parameter_set()),
        Attribute::Token(false),
        Attribute::Sign(true),
        material,
    ]
}

/// Template of an ML-DSA public key (session object).
pub fn mldsa_public_template(ps: Ps, pk: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::ML_DSA),
        Attribute::ParameterSet(ps.parameter_set()),
        Attribute::Token(false),
        Attribute::Verify(true),
        Attribute::Value(pk.to_vec()),
    ]
}

/// C_CreateObject of an ML-DSA private key from CKA_SEED or CKA_VALUE (session object).
#[track_caller]
pub fn import_mldsa_private(
    session: &Session,
    ps: Ps,
    material: Attribute,
    exportable: bool,
) -> ObjectHandle {
    let mut template = mldsa_private_template(ps, material);
    template.extend([
        Attribute::Private(true),
        Attribute::Sensitive(!exportable),
        Attribute::Extractable(exportable),
    ]);
    ok(session.create_object(&template))
}

/// C_CreateObject of an ML-DSA public key from CKA_VALUE (session object).
#[track_caller]
pub fn import_mldsa_public(session: &Session, ps: Ps, pk: &[u8]) -> ObjectHandle {
    ok(session.create_object(&mldsa_public_template(ps, pk)))
}

/// A fixed seed, distinct per parameter set and purpose.
pub fn test_seed(ps: Ps, purpose: u8) -> Vec<u8> {
    let salt = purpose ^ (ps.ckp() as u8);
    (0..32u8).map(|i| i.wrapping_mul(37) ^ salt).collect()
}

/// Reading `kind` fails with CKR_ATTRIBUTE_SENSITIVE and CK_UNAVAILABLE_INFORMATION.
#[track_caller]
pub fn assert_sensitive(session: &Session, key: ObjectHandle, kind: CK_ATTRIBUTE_TYPE) {
    let mut attr = raw_query(kind);
    let (s, k) = (session.handle(), key.handle());
    let rv = ck!(C_GetAttributeValue(s, k, &mut attr, 1));
    assert_rv(rv, CKR_ATTRIBUTE_SENSITIVE);
    assert_eq!(attr.ulValueLen, CK_UNAVAILABLE_INFORMATION, "{kind:#x}");
}

// ---------------------------------------------------------------------------------------------
// ML-DSA reference: the independent RustCrypto `ml-dsa` crate

/// An ML-DSA parameter set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ps {
    P44,
    P65,
    P87,
}

impl Ps {
    pub const ALL: [Ps; 3] = [Ps::P44, Ps::P65, Ps::P87];

    /// CKP_ML_DSA_*.
    pub fn ckp(self) -> CK_ULONG {
        [CKP_ML_DSA_44, CKP_ML_DSA_65, CKP_ML_DSA_87][self as usize]
    }

    pub fn parameter_set(self) -> ParameterSetType {
        let sets = [
            MlDsaParameterSetType::ML_DSA_44,
            MlDsaParameterSetType::ML_DSA_65,
            MlDsaParameterSetType::ML_DSA_87,
        ];
        sets[self as usize].into()
    }

    pub fn pk_len(self) -> usize {
        [1312, 1952, 2592][self as usize]
    }

    /// Length of the FIPS 204 expanded private key.
    pub fn sk_len(self) -> usize {
        [2560, 4032, 4896][self as usize]
    }

    pub fn sig_len(self) -> usize {
        [2420, 3309, 4627][self as usize]
    }

    /// From a CKP_ML_DSA_* value or from 44 / 65 / 87.
    pub fn from_number(value: u64) -> Option<Ps> {
        match value {
            1 | 44 => Some(Ps::P44),
            2 | 65 => Some(Ps::P65),
            3 | 87 => Some(Ps::P87),
            _ => None,
        }
    }

    /// ML-DSA.KeyGen_internal from a 32-byte seed: (public key, expanded private key).
    pub fn keygen(self, seed: &[u8]) -> (Vec<u8>, Vec<u8>) {
        per_parameter_set!(self, keygen_with(seed))
    }

    /// The public key of an expanded private key.
    pub fn public_from_private(self, sk: &[u8]) -> Vec<u8> {
        per_parameter_set!(self, public_from_private_with(sk))
    }

    /// Deterministic ML-DSA.Sign (rnd = 0^32) with an expanded private key.
    pub fn sign_deterministic(self, sk: &[u8], message: &[u8], context: &[u8]) -> Vec<u8> {
        per_parameter_set!(self, sign_deterministic_with(sk, message, context))
    }

    /// ML-DSA.Verify (pure, with context).
    pub fn verify(self, pk: &[u8], message: &[u8], context: &[u8], signature: &[u8]) -> bool {
        per_parameter_set!(self, verify_with(pk, message, context, signature))
    }
}

// The expanded key form (deprecated in `ml-dsa` in favour of seeds) is PKCS#11's CKA_VALUE.
#[allow(deprecated)]
fn keygen_with<P: MlDsaParams>(seed: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let seed = ml_dsa::Seed::try_from(seed).expect("ML-DSA seeds are 32 bytes");
    let key = ExpandedSigningKey::<P>::from_seed(&seed);
    (
        key.verifying_key().encode().to_vec(),
        key.to_expanded().to_vec(),
    )
}

#[allow(deprecated)]
fn expanded_key<P: MlDsaParams>(sk: &[u8]) -> ExpandedSigningKey<P> {
    let bytes = ExpandedSigningKeyBytes::<P>::try_from(sk).expect("expanded private key length");
    ExpandedSigningKey::<P>::from_expanded(&bytes)
}

fn public_from_private_with<P: MlDsaParams>(sk: &[u8]) -> Vec<u8> {
    expanded_key::<P>(sk).verifying_key().encode().to_vec()
}

fn sign_deterministic_with<P: MlDsaParams>(sk: &[u8], message: &[u8], context: &[u8]) -> Vec<u8> {
    let signature = expanded_key::<P>(sk).sign_deterministic(message, context);
    signature.expect("ml-dsa signing").encode().to_vec()
}

fn verify_with<P: MlDsaParams>(pk: &[u8], message: &[u8], context: &[u8], sig: &[u8]) -> bool {
    let Ok(encoded) = EncodedVerifyingKey::<P>::try_from(pk) else {
        return false;
    };
    let Ok(signature) = ml_dsa::Signature::<P>::try_from(sig) else {
        return false;
    };
    VerifyingKey::<P>::decode(&encoded).verify_with_context(message, context, &signature)
}
pub mod prehash;

//! Shared helpers for the integration tests of b4ae-pkcs11.
//!
//! Every test talks to the *built* `libb4ae_pkcs11.so` (never the rlib): through the
//! `cryptoki` crate for the ordinary calls, and through the raw function lists (`ck!`) where
//! exact return values, lengths or NULL pointers matter. Both load the same shared object, so
//! they share one module instance per process.
//!
//! Each test file has one process-wide [`fixture`]: a temporary configuration with
//! [`FIXTURE_TOKENS`] embedded tokens, initialised once. Each test uses its own slot (a fixed
//! index per test), so tests running as threads never share a token. Tests that finalise the
//! module or need a fresh process re-run the test binary for just themselves ([`run_child`]).

#![allow(dead_code, unused_macros)]

/// Calls one function of the module's PKCS#11 3.2 function list with raw arguments and
/// evaluates to its `CK_RV`: `ck!(C_GetInfo(&mut info))`.
macro_rules! ck {
    ($function:ident($($arg:expr),* $(,)?)) => {{
        let function = $crate::common::fl()
            .$function
            .expect(concat!(stringify!($function), " is NULL in the 3.2 function list"));
        #[allow(unused_unsafe)]
        // SAFETY: the callers pass pointers to live buffers of the announced sizes, or
        // deliberately NULL pointers that the module must reject.
        let rv = unsafe { function($($arg),*) };
        rv
    }};
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

use std::ffi::{c_void, CStr};
use std::fmt::Write as _;
use std::fs::File;
use std::mem::size_of;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::ptr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, Rv, RvError};
use cryptoki::object::{Attribute, MlDsaParameterSetType, ObjectClass, ObjectHandle};
use cryptoki::object::ParameterSetType;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use cryptoki_sys::*;
use ml_dsa::{
    EncodedVerifyingKey, ExpandedSigningKey, ExpandedSigningKeyBytes, MlDsa44, MlDsa65, MlDsa87,
    MlDsaParams, VerifyingKey,
};
use tempfile::TempDir;

pub const SO_PIN: &str = "so-pin-0000";
pub const USER_PIN: &str = "user-pin-1111";

/// Number of embedded tokens (slots 0..FIXTURE_TOKENS) in each file's fixture.
pub const FIXTURE_TOKENS: usize = 16;

pub const CONF_VAR: &str = "B4AE_PKCS11_CONF";
pub const MODULE_VAR: &str = "B4AE_PKCS11_MODULE";
/// Set (to the test's name) in a process started by [`run_child`].
pub const CHILD_VAR: &str = "B4AE_TEST_CHILD";
pub const LIBRARY_NAME: &str = "libb4ae_pkcs11.so";

/// Vendor attribute from include/b4ae_pkcs11.h and its value for the embedded store.
pub const CKA_B4AE_CUSTODY: CK_ATTRIBUTE_TYPE = 0xB4AE_0003;
pub const B4AE_CUSTODY_EMBEDDED: CK_ULONG = 3;

/// An attribute type that no PKCS#11 version defines.
pub const UNKNOWN_ATTRIBUTE: CK_ATTRIBUTE_TYPE = 0x7FFF_0001;

pub const RO: CK_FLAGS = CKF_SERIAL_SESSION;
pub const RW: CK_FLAGS = CKF_SERIAL_SESSION | CKF_RW_SESSION;

const CHILD_TIMEOUT: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------------------------
// Locating and loading the module

/// The built module: `$B4AE_PKCS11_MODULE`, else next to the test binary's `deps/` directory
/// (the profile directory cargo built it into), else `target/debug/`.
pub fn module_path() -> PathBuf {
    if let Some(path) = std::env::var_os(MODULE_VAR) {
        return PathBuf::from(path);
    }
    let beside_tests = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join(LIBRARY_NAME)))
        .filter(|path| path.exists());
    beside_tests.unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/debug")
            .join(LIBRARY_NAME)
    })
}

/// Loads the module through `cryptoki` (it selects the 3.2 interface by itself).
pub fn load_module() -> Pkcs11 {
    let path = module_path();
    Pkcs11::new(&path).unwrap_or_else(|e| {
        panic!(
            "cannot load {} ({e}); build the crate first or set {MODULE_VAR}",
            path.display()
        )
    })
}

/// C_Initialize with CKF_OS_LOCKING_OK.
pub fn initialize(pkcs11: &Pkcs11) {
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
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
        assert!(library.C_GetFunctionList.is_ok(), "C_GetFunctionList is not exported");
        assert!(library.C_GetInterface.is_ok(), "C_GetInterface is not exported");
        let mut list: *mut CK_FUNCTION_LIST = ptr::null_mut();
        // SAFETY: a valid out-pointer.
        assert_rv(unsafe { library.C_GetFunctionList(&mut list) }, CKR_OK);
        assert!(!list.is_null(), "C_GetFunctionList gave NULL");
        let mut interface: *mut CK_INTERFACE = ptr::null_mut();
        // SAFETY: NULL name and version ask for the default interface.
        let rv = unsafe {
            library.C_GetInterface(ptr::null_mut(), ptr::null_mut(), &mut interface, 0)
        };
        assert_rv(rv, CKR_OK);
        assert!(!interface.is_null(), "C_GetInterface gave NULL");
        // SAFETY: both pointers come from the module; every function list starts with its
        // CK_VERSION, checked before the list is read as a 3.2 table.
        let (v2_40, v3_2) = unsafe {
            let functions = (*interface).pFunctionList;
            assert!(!functions.is_null(), "the default interface has no function list");
            let version = *functions.cast::<CK_VERSION>();
            assert_eq!(
                (version.major, version.minor),
                (3, 2),
                "the default interface must be PKCS#11 3.2"
            );
            (*list, *functions.cast::<CK_FUNCTION_LIST_3_2>())
        };
        RawModule {
            _library: library,
            v2_40,
            v3_2,
        }
    })
}

/// The PKCS#11 3.2 function list used by `ck!`.
pub fn fl() -> &'static CK_FUNCTION_LIST_3_2 {
    &raw().v3_2
}

/// Asserts that every function pointer of a function list (after its CK_VERSION) is set.
#[track_caller]
pub fn assert_table_complete<T>(table: &T, first_function_offset: usize, what: &str) {
    let entries = (size_of::<T>() - first_function_offset) / size_of::<usize>();
    assert!(entries > 0, "{what} has no entries");
    let base = (table as *const T).cast::<u8>();
    for i in 0..entries {
        // SAFETY: reads a pointer-sized word inside `table`.
        let word = unsafe {
            base.add(first_function_offset + i * size_of::<usize>())
                .cast::<usize>()
                .read_unaligned()
        };
        assert_ne!(word, 0, "{what}: function #{i} (0-based) is NULL");
    }
}

/// Name and version of an interface returned by C_GetInterfaceList / C_GetInterface.
pub fn describe_interface(interface: &CK_INTERFACE) -> (String, (u8, u8)) {
    assert!(!interface.pInterfaceName.is_null(), "interface without a name");
    assert!(!interface.pFunctionList.is_null(), "interface without functions");
    // SAFETY: the module returns a NUL-terminated name and a function list that starts with
    // its CK_VERSION.
    unsafe {
        let name = CStr::from_ptr(interface.pInterfaceName.cast())
            .to_string_lossy()
            .into_owned();
        let version = *interface.pFunctionList.cast::<CK_VERSION>();
        (name, (version.major, version.minor))
    }
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
    match error {
        RvError::UnknownErrorCode(code) | RvError::VendorDefined(code) => code,
        _ => (0..0x1000)
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
    assert!(
        allowed.contains(&actual),
        "expected one of {:?}, got {}",
        allowed.iter().map(|&rv| rv_name(rv)).collect::<Vec<_>>(),
        rv_name(actual)
    );
}

/// Checks a batch of raw calls that must all answer `expected`.
#[track_caller]
pub fn assert_all_rv(calls: &[(&str, CK_RV)], expected: CK_RV) {
    let wrong: Vec<String> = calls
        .iter()
        .filter(|(_, rv)| *rv != expected)
        .map(|(name, rv)| format!("{name}: {}", rv_name(*rv)))
        .collect();
    assert!(
        wrong.is_empty(),
        "expected {} from every call, but:\n  {}",
        rv_name(expected),
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
        writeln!(toml, "[[token]]").unwrap();
        writeln!(toml, "label = \"{}\"", slot_label(index)).unwrap();
        writeln!(toml, "backend = \"embedded\"").unwrap();
        writeln!(toml, "path = \"{path}\"").unwrap();
        writeln!(toml, "pin_kdf = \"test-only-fast\"").unwrap();
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

/// A temporary directory under cargo's target/tmp (removed with `cargo clean` if leaked).
pub fn temp_dir(prefix: &str) -> TempDir {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base).expect("creating target/tmp");
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .expect("creating a temporary directory")
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

/// The module initialised once for this process, with [`FIXTURE_TOKENS`] fresh tokens.
pub fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        let dir = temp_dir("b4ae-fixture-").keep();
        let conf = write_config(&dir, FIXTURE_TOKENS, None);
        std::env::set_var(CONF_VAR, &conf);
        let pkcs11 = load_module();
        initialize(&pkcs11);
        let slots = pkcs11.get_all_slots().expect("C_GetSlotList");
        assert_eq!(
            slots.len(),
            FIXTURE_TOKENS,
            "one slot per [[token]] of {}",
            conf.display()
        );
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
    /// Slot `index`, token still uninitialised unless the test initialised it.
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

pub fn pin(value: &str) -> AuthPin {
    AuthPin::new(value.into())
}

/// C_InitToken, then in a R/W session: SO login, C_InitPIN(USER_PIN), logout, close.
pub fn init_token(pkcs11: &Pkcs11, slot: Slot, label: &str) {
    pkcs11
        .init_token(slot, &pin(SO_PIN), label)
        .expect("C_InitToken");
    let session = pkcs11.open_rw_session(slot).expect("C_OpenSession");
    session
        .login(UserType::So, Some(&pin(SO_PIN)))
        .expect("C_Login(SO)");
    session.init_pin(&pin(USER_PIN)).expect("C_InitPIN");
    session.logout().expect("C_Logout");
}

pub fn user_session(pkcs11: &Pkcs11, slot: Slot) -> Session {
    let session = pkcs11.open_rw_session(slot).expect("C_OpenSession");
    session
        .login(UserType::User, Some(&pin(USER_PIN)))
        .expect("C_Login(user)");
    session
}

pub fn open_session(slot: Slot, flags: CK_FLAGS) -> Result<CK_SESSION_HANDLE, CK_RV> {
    let mut session = CK_INVALID_HANDLE;
    let rv = ck!(C_OpenSession(
        slot.into(),
        flags,
        ptr::null_mut(),
        None,
        &mut session
    ));
    if rv == CKR_OK {
        Ok(session)
    } else {
        Err(rv)
    }
}

pub fn login(session: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: &str) -> CK_RV {
    ck!(C_Login(
        session,
        user,
        pin.as_ptr().cast_mut(),
        pin.len() as CK_ULONG
    ))
}

pub fn logout(session: CK_SESSION_HANDLE) -> CK_RV {
    ck!(C_Logout(session))
}

pub fn close_session(session: CK_SESSION_HANDLE) -> CK_RV {
    ck!(C_CloseSession(session))
}

pub fn init_pin(session: CK_SESSION_HANDLE, pin: &str) -> CK_RV {
    ck!(C_InitPIN(session, pin.as_ptr().cast_mut(), pin.len() as CK_ULONG))
}

pub fn set_pin(session: CK_SESSION_HANDLE, old: &str, new: &str) -> CK_RV {
    ck!(C_SetPIN(
        session,
        old.as_ptr().cast_mut(),
        old.len() as CK_ULONG,
        new.as_ptr().cast_mut(),
        new.len() as CK_ULONG
    ))
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
    assert_rv(
        ck!(C_GetMechanismList(slot.into(), ptr::null_mut(), &mut count)),
        CKR_OK,
    );
    let mut list: Vec<CK_MECHANISM_TYPE> = vec![0; count as usize];
    assert_rv(
        ck!(C_GetMechanismList(slot.into(), list.as_mut_ptr(), &mut count)),
        CKR_OK,
    );
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
        pParameter: ptr::null_mut(),
        ulParameterLen: 0,
    }
}

// ---------------------------------------------------------------------------------------------
// Objects and attributes

/// A raw attribute pointing at `value` (a CK_ULONG, CK_BBOOL, ...).
pub fn raw_attr<T>(kind: CK_ATTRIBUTE_TYPE, value: &T) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: kind,
        pValue: (value as *const T).cast_mut().cast::<c_void>(),
        ulValueLen: size_of::<T>() as CK_ULONG,
    }
}

/// A raw attribute pointing at a byte string.
pub fn raw_bytes(kind: CK_ATTRIBUTE_TYPE, value: &[u8]) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: kind,
        pValue: value.as_ptr().cast_mut().cast::<c_void>(),
        ulValueLen: value.len() as CK_ULONG,
    }
}

/// C_GetAttributeValue with the two-call convention.
pub fn get_attr(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    kind: CK_ATTRIBUTE_TYPE,
) -> Result<Vec<u8>, CK_RV> {
    let mut attr = CK_ATTRIBUTE {
        type_: kind,
        pValue: ptr::null_mut(),
        ulValueLen: 0,
    };
    let rv = ck!(C_GetAttributeValue(session, object, &mut attr, 1));
    if rv != CKR_OK {
        return Err(rv);
    }
    assert_ne!(
        attr.ulValueLen, CK_UNAVAILABLE_INFORMATION,
        "CKR_OK but CK_UNAVAILABLE_INFORMATION for attribute {kind:#x}"
    );
    let mut value = vec![0u8; attr.ulValueLen as usize];
    attr.pValue = value.as_mut_ptr().cast();
    let rv = ck!(C_GetAttributeValue(session, object, &mut attr, 1));
    if rv != CKR_OK {
        return Err(rv);
    }
    assert_eq!(
        attr.ulValueLen as usize,
        value.len(),
        "attribute {kind:#x} changed length between the two calls"
    );
    Ok(value)
}

#[track_caller]
pub fn attr_bytes(session: &Session, object: ObjectHandle, kind: CK_ATTRIBUTE_TYPE) -> Vec<u8> {
    get_attr(session.handle(), object.handle(), kind)
        .unwrap_or_else(|rv| panic!("C_GetAttributeValue({kind:#x}): {}", rv_name(rv)))
}

#[track_caller]
pub fn attr_ulong(session: &Session, object: ObjectHandle, kind: CK_ATTRIBUTE_TYPE) -> CK_ULONG {
    let value = attr_bytes(session, object, kind);
    let bytes = value.as_slice().try_into().unwrap_or_else(|_| {
        panic!("attribute {kind:#x} is {} bytes, not a CK_ULONG", value.len())
    });
    CK_ULONG::from_ne_bytes(bytes)
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
    session
        .find_objects(&[Attribute::Label(label.into())])
        .expect("C_FindObjects")
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
    let text = std::str::from_utf8(bytes)
        .unwrap_or_else(|_| panic!("{field} is not UTF-8: {bytes:?}"));
    assert!(
        !text.chars().any(char::is_control),
        "{field} must be padded with spaces (no NULs or control characters): {text:?}"
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

/// Re-runs this test binary for test `test` alone, with `$B4AE_PKCS11_CONF` = `conf`, and
/// asserts that the test passed there. Returns the child's standard output.
#[track_caller]
pub fn run_child(test: &str, conf: &Path, envs: &[(&str, &str)]) -> String {
    let output = temp_dir("b4ae-child-output-");
    let stdout_path = output.path().join("stdout");
    let stderr_path = output.path().join("stderr");
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
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let report = format!("--- child stdout\n{stdout}\n--- child stderr\n{stderr}");
    match status {
        None => panic!("child `{test}` timed out after {CHILD_TIMEOUT:?}\n{report}"),
        Some(status) => assert!(
            status.success() && stdout.contains("1 passed"),
            "child `{test}` failed ({status})\n{report}"
        ),
    }
    stdout
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
        match self {
            Ps::P44 => CKP_ML_DSA_44,
            Ps::P65 => CKP_ML_DSA_65,
            Ps::P87 => CKP_ML_DSA_87,
        }
    }

    pub fn parameter_set(self) -> ParameterSetType {
        match self {
            Ps::P44 => MlDsaParameterSetType::ML_DSA_44.into(),
            Ps::P65 => MlDsaParameterSetType::ML_DSA_65.into(),
            Ps::P87 => MlDsaParameterSetType::ML_DSA_87.into(),
        }
    }

    pub fn pk_len(self) -> usize {
        match self {
            Ps::P44 => 1312,
            Ps::P65 => 1952,
            Ps::P87 => 2592,
        }
    }

    /// Length of the FIPS 204 expanded private key.
    pub fn sk_len(self) -> usize {
        match self {
            Ps::P44 => 2560,
            Ps::P65 => 4032,
            Ps::P87 => 4896,
        }
    }

    pub fn sig_len(self) -> usize {
        match self {
            Ps::P44 => 2420,
            Ps::P65 => 3309,
            Ps::P87 => 4627,
        }
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
        match self {
            Ps::P44 => keygen_with::<MlDsa44>(seed),
            Ps::P65 => keygen_with::<MlDsa65>(seed),
            Ps::P87 => keygen_with::<MlDsa87>(seed),
        }
    }

    /// Public key of an expanded private key.
    pub fn public_from_private(self, sk: &[u8]) -> Vec<u8> {
        match self {
            Ps::P44 => public_from_private_with::<MlDsa44>(sk),
            Ps::P65 => public_from_private_with::<MlDsa65>(sk),
            Ps::P87 => public_from_private_with::<MlDsa87>(sk),
        }
    }

    /// Deterministic ML-DSA.Sign (rnd = 0^32) with the expanded private key.
    pub fn sign_deterministic(self, sk: &[u8], message: &[u8], context: &[u8]) -> Vec<u8> {
        match self {
            Ps::P44 => sign_deterministic_with::<MlDsa44>(sk, message, context),
            Ps::P65 => sign_deterministic_with::<MlDsa65>(sk, message, context),
            Ps::P87 => sign_deterministic_with::<MlDsa87>(sk, message, context),
        }
    }

    /// ML-DSA.Verify (pure, with context).
    pub fn verify(self, pk: &[u8], message: &[u8], context: &[u8], signature: &[u8]) -> bool {
        match self {
            Ps::P44 => verify_with::<MlDsa44>(pk, message, context, signature),
            Ps::P65 => verify_with::<MlDsa65>(pk, message, context, signature),
            Ps::P87 => verify_with::<MlDsa87>(pk, message, context, signature),
        }
    }
}

fn keygen_with<P: MlDsaParams>(seed: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let seed = ml_dsa::Seed::try_from(seed).expect("ML-DSA seeds are 32 bytes");
    let key = ExpandedSigningKey::<P>::from_seed(&seed);
    #[allow(deprecated)]
    let sk = key.to_expanded().to_vec();
    (key.verifying_key().encode().to_vec(), sk)
}

fn expanded_key<P: MlDsaParams>(sk: &[u8]) -> ExpandedSigningKey<P> {
    let bytes = ExpandedSigningKeyBytes::<P>::try_from(sk).expect("expanded private key length");
    #[allow(deprecated)]
    let key = ExpandedSigningKey::<P>::from_expanded(&bytes);
    key
}

fn public_from_private_with<P: MlDsaParams>(sk: &[u8]) -> Vec<u8> {
    expanded_key::<P>(sk).verifying_key().encode().to_vec()
}

fn sign_deterministic_with<P: MlDsaParams>(sk: &[u8], message: &[u8], context: &[u8]) -> Vec<u8> {
    expanded_key::<P>(sk)
        .sign_deterministic(message, context)
        .expect("ml-dsa signing")
        .encode()
        .to_vec()
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

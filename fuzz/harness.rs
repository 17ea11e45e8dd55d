//! The ABI fuzzing harness: one input is a sequence of PKCS#11 calls, decoded from bytes and
//! made in-process through the module's PKCS#11 3.2 function table (the rlib's exported `C_*`
//! functions, as any C caller reaches them).
//!
//! Shared, unchanged, by the libFuzzer target (`fuzz/fuzz_targets/abi.rs`) and the stable
//! replay of the regression corpus (`tests/fuzz_regressions.rs`, which runs every file of
//! `fuzz/regressions/` in `cargo test`).
//!
//! **Set-up, once per process**: a temporary directory with two embedded tokens (slot 0 holds
//! the keys below, slot 1 is left blank for `C_InitToken`), `B4AE_PKCS11_CONF` pointing at
//! them; slot 0 initialised (SO and user PIN) and given token objects of every kind the
//! module holds: ML-DSA-44/65/87, Dilithium5, the hybrid, ML-KEM, data and secret keys. The
//! token directory is then kept as a pristine copy. With `B4AE_FUZZ_BACKEND=pkcs11`, a third
//! slot (2) is a pkcs11-backend token over SoftHSM2, given the same objects (post-quantum keys
//! as sealed records in SoftHSM2, the rest SoftHSM2's own), and the inputs drive it instead:
//! their sessions open there, and SoftHSM2's token directory is restored with the module's.
//!
//! **Each input** starts from that copy (`C_Finalize`, the files put back, `C_Initialize`),
//! with one read/write session logged in as the user and one read-only session, and the
//! handles of the token objects known. Then, until the bytes run out: one byte picks a call,
//! the next ones its arguments — slots, sessions and objects as handles the module handed out
//! earlier (or garbage), templates of any attribute types and values (vendor and
//! post-quantum ones, key material of the right length, valid or not), mechanisms with any
//! parameter (raw bytes, or a `CK_SIGN_ADDITIONAL_CONTEXT` / `CK_HASH_SIGN_ADDITIONAL_CONTEXT`
//! with any context length up to the buffer behind it), output buffers of any length (NULL for
//! the length, short, exact, long). Last, the module is restarted on the files the input left
//! and everything on the tokens is read back.
//!
//! The harness never lies about its own memory: every length it passes is at most the buffer
//! it owns behind the pointer (NULL pointers are passed as NULL, with any length). The module
//! is the thing under test, and these are findings, each one a panic of the harness with
//! `B4AE FUZZ FINDING` and the calls that led to it (libFuzzer's panic hook makes it a crash):
//! - a panic inside the module (caught by the module at its border, seen by the panic hook),
//! - `CKR_GENERAL_ERROR` from any call (the module's answer to internal errors only),
//! - a write past the length the harness announced for an output buffer (guard bytes),
//! - the two-call length convention broken (`CKR_OK` with a length above the buffer's,
//!   `CKR_BUFFER_TOO_SMALL` without the length needed, a second call with the announced
//!   length refused as too small),
//! - the store left by an input that the module cannot open again.
//!
//! Crashes and hangs are findings of the fuzzer itself.

#![allow(
    non_snake_case,
    clippy::missing_safety_doc,
    clippy::too_many_arguments,
    clippy::upper_case_acronyms
)]

use b4ae_pkcs11::mechanism::ParamShape;
use cryptoki_sys::*;
use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::ptr::null_mut;
use std::sync::{Mutex, OnceLock};

// ---------------------------------------------------------------------------------------------
// Numbers

/// Vendor numbers (include/b4ae_pkcs11.h).
const CKK_B4AE_DILITHIUM5: CK_ULONG = 0xB4AE_0001;
const CKK_B4AE_HYBRID: CK_ULONG = 0xB4AE_0002;
const CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN: CK_ULONG = 0xB4AE_0001;
const CKM_B4AE_DILITHIUM5: CK_ULONG = 0xB4AE_0002;
const CKM_B4AE_HYBRID_KEY_PAIR_GEN: CK_ULONG = 0xB4AE_0003;
const CKM_B4AE_HYBRID: CK_ULONG = 0xB4AE_0004;
const CKA_B4AE_ED25519_PUBLIC: CK_ULONG = 0xB4AE_0001;
const CKA_B4AE_MLDSA_PUBLIC: CK_ULONG = 0xB4AE_0002;
const CKA_B4AE_CUSTODY: CK_ULONG = 0xB4AE_0003;

pub const SO_PIN: &[u8] = b"fuzz-so-pin";
pub const USER_PIN: &[u8] = b"fuzz-user-pin";

/// Most calls one input makes.
const MAX_CALLS: usize = 96;
/// Bytes of guard after every output buffer.
const GUARD: usize = 32;
const CANARY: u8 = 0xA5;
const CANARY_ULONG: CK_ULONG = 0xA5A5_A5A5_A5A5_A5A5;

const ATTRIBUTE_TYPES: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CLASS,
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_LABEL,
    CKA_APPLICATION,
    CKA_VALUE,
    CKA_OBJECT_ID,
    CKA_CERTIFICATE_TYPE,
    CKA_TRUSTED,
    CKA_KEY_TYPE,
    CKA_SUBJECT,
    CKA_ID,
    CKA_SENSITIVE,
    CKA_ENCRYPT,
    CKA_DECRYPT,
    CKA_WRAP,
    CKA_UNWRAP,
    CKA_SIGN,
    CKA_SIGN_RECOVER,
    CKA_VERIFY,
    CKA_VERIFY_RECOVER,
    CKA_DERIVE,
    CKA_START_DATE,
    CKA_END_DATE,
    CKA_MODULUS_BITS,
    CKA_VALUE_LEN,
    CKA_EXTRACTABLE,
    CKA_LOCAL,
    CKA_NEVER_EXTRACTABLE,
    CKA_ALWAYS_SENSITIVE,
    CKA_KEY_GEN_MECHANISM,
    CKA_MODIFIABLE,
    CKA_COPYABLE,
    CKA_DESTROYABLE,
    CKA_EC_PARAMS,
    CKA_CHECK_VALUE,
    CKA_ALWAYS_AUTHENTICATE,
    CKA_WRAP_WITH_TRUSTED,
    CKA_WRAP_TEMPLATE,
    CKA_UNWRAP_TEMPLATE,
    CKA_DERIVE_TEMPLATE,
    CKA_ALLOWED_MECHANISMS,
    CKA_UNIQUE_ID,
    CKA_PUBLIC_KEY_INFO,
    CKA_PARAMETER_SET,
    CKA_SEED,
    CKA_ENCAPSULATE,
    CKA_DECAPSULATE,
    CKA_PROFILE_ID,
    CKA_B4AE_ED25519_PUBLIC,
    CKA_B4AE_MLDSA_PUBLIC,
    CKA_B4AE_CUSTODY,
    0xB4AE_0004,
    CKA_VENDOR_DEFINED,
    0x7FFF_0001,
];

const MECHANISMS: &[CK_MECHANISM_TYPE] = &[
    CKM_ML_DSA,
    CKM_ML_DSA,
    CKM_ML_DSA_KEY_PAIR_GEN,
    CKM_HASH_ML_DSA,
    CKM_HASH_ML_DSA_SHA224,
    CKM_HASH_ML_DSA_SHA256,
    CKM_HASH_ML_DSA_SHA384,
    CKM_HASH_ML_DSA_SHA512,
    CKM_HASH_ML_DSA_SHA3_224,
    CKM_HASH_ML_DSA_SHA3_256,
    CKM_HASH_ML_DSA_SHA3_384,
    CKM_HASH_ML_DSA_SHA3_512,
    CKM_HASH_ML_DSA_SHAKE128,
    CKM_HASH_ML_DSA_SHAKE256,
    CKM_ML_KEM,
    CKM_ML_KEM_KEY_PAIR_GEN,
    CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN,
    CKM_B4AE_DILITHIUM5,
    CKM_B4AE_HYBRID_KEY_PAIR_GEN,
    CKM_B4AE_HYBRID,
    CKM_SHA256,
    CKM_SHA384,
    CKM_SHA512,
    CKM_SHA_1,
    CKM_SHA224,
    CKM_SHA3_256,
    CKM_SHAKE_128_KEY_DERIVATION,
    CKM_EC_KEY_PAIR_GEN,
    CKM_EC_EDWARDS_KEY_PAIR_GEN,
    CKM_ECDSA,
    CKM_EDDSA,
    CKM_RSA_PKCS,
    CKM_AES_KEY_GEN,
    CKM_AES_GCM,
    CKM_VENDOR_DEFINED,
    0xB4AE_0005,
];

/// Hash mechanisms for CK_HASH_SIGN_ADDITIONAL_CONTEXT.hash.
const HASHES: &[CK_MECHANISM_TYPE] = &[
    CKM_SHA224,
    CKM_SHA256,
    CKM_SHA384,
    CKM_SHA512,
    CKM_SHA3_224,
    CKM_SHA3_256,
    CKM_SHA3_384,
    CKM_SHA3_512,
    CKM_SHAKE_128_KEY_DERIVATION,
    CKM_SHAKE_256_KEY_DERIVATION,
    CKM_SHA_1,
    CKM_ML_DSA,
    0,
];

/// CK_ULONG values worth trying anywhere a number goes.
const ULONGS: &[CK_ULONG] = &[
    0,
    1,
    2,
    3,
    4,
    5,
    CKO_DATA,
    CKO_PUBLIC_KEY,
    CKO_PRIVATE_KEY,
    CKO_SECRET_KEY,
    CKO_CERTIFICATE,
    CKO_PROFILE,
    CKK_ML_DSA,
    CKK_ML_KEM,
    CKK_AES,
    CKK_GENERIC_SECRET,
    CKK_EC,
    CKK_EC_EDWARDS,
    CKK_RSA,
    CKK_B4AE_DILITHIUM5,
    CKK_B4AE_HYBRID,
    CKP_ML_DSA_44,
    CKP_ML_DSA_65,
    CKP_ML_DSA_87,
    16,
    24,
    32,
    33,
    44,
    64,
    65,
    87,
    512,
    768,
    1024,
    CKM_ML_DSA,
    CKM_ML_KEM,
    CKM_B4AE_HYBRID,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFF,
    0x1_0000_0000,
    CK_UNAVAILABLE_INFORMATION,
];

/// Buffer lengths worth trying: key, signature and ciphertext sizes of every algorithm here,
/// and their neighbours.
const LENGTHS: &[usize] = &[
    0, 1, 2, 7, 8, 16, 20, 28, 31, 32, 33, 48, 63, 64, 65, 255, 256, 767, 768, 800, 1088, 1184,
    1311, 1312, 1568, 1632, 1952, 2400, 2419, 2420, 2560, 2592, 2624, 3168, 3308, 3309, 4032, 4594,
    4595, 4626, 4627, 4864, 4896, 4928, 4694, 4695, 4696, 5000,
];

// ---------------------------------------------------------------------------------------------
// Findings, the panic hook, the trace

thread_local! {
    /// The calls of the current input, for the finding's report.
    static TRACE: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// Whether this thread is inside a call of the module.
    static IN_MODULE: Cell<bool> = const { Cell::new(false) };
    /// Whether the current call panicked in a way `B4AE_FUZZ_KNOWN` lets pass.
    static KNOWN_PANIC: Cell<bool> = const { Cell::new(false) };
}

/// A panic seen while the module was running (the module catches it and answers
/// CKR_GENERAL_ERROR; the message is kept here for the finding).
static MODULE_PANIC: Mutex<Option<String>> = Mutex::new(None);

fn tracing_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("B4AE_FUZZ_TRACE").is_some_and(|v| v != "0"))
}

/// Whether CKR_GENERAL_ERROR is tolerated (`B4AE_FUZZ_ALLOW_GENERAL=1`: to look for panics
/// past a known one).
fn general_error_allowed() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("B4AE_FUZZ_ALLOW_GENERAL").is_some_and(|v| v != "0"))
}

fn trace(line: String) {
    if tracing_enabled() {
        eprintln!("[b4ae-fuzz] {line}");
    }
    TRACE.with(|t| t.borrow_mut().push(line));
}

/// Ends the input with a finding: the message and the calls that led to it.
#[track_caller]
fn finding(what: String) -> ! {
    let calls = TRACE.with(|t| {
        let t = t.borrow();
        let skip = t.len().saturating_sub(60);
        t[skip..].join("\n    ")
    });
    panic!("B4AE FUZZ FINDING: {what}\n  calls of this input (last 60):\n    {calls}");
}

fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if IN_MODULE.with(Cell::get) {
            let message = format!("{info}");
            if known_panic(&message) {
                // Known and reported: the module answers CKR_GENERAL_ERROR, which is let pass.
                KNOWN_PANIC.with(|k| k.set(true));
                return;
            }
            let mut slot = MODULE_PANIC.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert(message);
        }
        // libFuzzer's hook (when fuzzing) aborts here: a panic inside the module is a crash.
        previous(info);
    }));
}

/// `B4AE_FUZZ_KNOWN`: comma-separated parts of panic messages (e.g. `encode.rs:76`) to let
/// pass, so that a fuzzing run can look past bugs already reported.
fn known_panic(message: &str) -> bool {
    static KNOWN: OnceLock<Vec<String>> = OnceLock::new();
    let known = KNOWN.get_or_init(|| {
        std::env::var("B4AE_FUZZ_KNOWN")
            .unwrap_or_default()
            .split(',')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    });
    known.iter().any(|part| message.contains(part.as_str()))
}

pub fn rv_name(rv: CK_RV) -> String {
    let name = b4ae_pkcs11::error::rv_name(rv);
    if name == "CKR_?" {
        format!("{rv:#x}")
    } else {
        name.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// The function table

extern "C" {
    // The module's own export (the rlib is linked into this program).
    fn C_GetInterface(
        name: *mut CK_UTF8CHAR,
        version: *mut CK_VERSION,
        interface: *mut *mut CK_INTERFACE,
        flags: CK_FLAGS,
    ) -> CK_RV;
}

fn function_list() -> &'static CK_FUNCTION_LIST_3_2 {
    // Keeps the module's crate linked (the table below is reached through its C export).
    std::hint::black_box(b4ae_pkcs11::abi::function_list_240());
    let mut interface: *mut CK_INTERFACE = null_mut();
    let mut version = CK_VERSION { major: 3, minor: 2 };
    // SAFETY: valid out-pointers; NULL name asks for the default interface.
    let rv = unsafe { C_GetInterface(null_mut(), &mut version, &mut interface, 0) };
    assert!(
        rv == CKR_OK && !interface.is_null(),
        "C_GetInterface: {}",
        rv_name(rv)
    );
    // SAFETY: the module's 3.2 table, a static of the module.
    unsafe { &*((*interface).pFunctionList as *const CK_FUNCTION_LIST_3_2) }
}

/// Calls one function of the 3.2 table and checks the answer: a panic inside the module, or
/// CKR_GENERAL_ERROR, is a finding.
macro_rules! ck {
    ($run:expr, $function:ident($($arg:expr),* $(,)?)) => {{
        let f = $run.h.fl.$function.expect(stringify!($function));
        IN_MODULE.with(|c| c.set(true));
        // SAFETY: every pointer argument is NULL or points at a buffer the harness owns, at
        // least as long as the length passed with it.
        let rv = unsafe { f($($arg),*) };
        IN_MODULE.with(|c| c.set(false));
        $run.answered(stringify!($function), rv);
        rv
    }};
}

// ---------------------------------------------------------------------------------------------
// Reading the input

struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        for b in &mut bytes {
            *b = self.u8();
        }
        u64::from_le_bytes(bytes)
    }

    /// A number below `n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        match n {
            0 => 0,
            1..=256 => self.u8() as usize % n,
            _ => self.u16() as usize % n,
        }
    }

    fn chance(&mut self, one_in: u8) -> bool {
        self.u8().is_multiple_of(one_in)
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }

    fn pick_clone<T: Clone>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())].clone()
    }

    /// Up to `max` bytes of the input itself.
    fn take(&mut self, max: usize) -> Vec<u8> {
        let n = max.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head.to_vec()
    }

    /// A length: small, one of [`LENGTHS`], or any up to 2^16.
    fn length(&mut self) -> usize {
        match self.u8() % 8 {
            0..=2 => self.below(34),
            3..=5 => self.pick(LENGTHS),
            6 => self.below(300),
            _ => self.u16() as usize,
        }
    }

    fn ulong(&mut self) -> CK_ULONG {
        match self.u8() % 8 {
            0..=5 => self.pick(ULONGS),
            6 => self.u8() as CK_ULONG,
            _ => self.u64() as CK_ULONG,
        }
    }
}

/// Bytes from a seed (xorshift), for key material of a given length that is not valid.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Buffers the harness owns

/// A template: attributes pointing into buffers owned here (moving a `Vec` keeps its heap
/// buffer in place, so the pointers stay valid while the template lives).
#[derive(Default)]
struct Template {
    attrs: Vec<CK_ATTRIBUTE>,
    values: Vec<Vec<u8>>,
    nested: Vec<Template>,
}

impl Template {
    fn push(&mut self, kind: CK_ATTRIBUTE_TYPE, mut value: Vec<u8>) {
        value.reserve(1); // a real allocation even when empty
        self.attrs.push(CK_ATTRIBUTE {
            type_: kind,
            pValue: value.as_mut_ptr().cast(),
            ulValueLen: value.len() as CK_ULONG,
        });
        self.values.push(value);
    }

    fn push_bool(&mut self, kind: CK_ATTRIBUTE_TYPE, value: bool) {
        self.push(kind, vec![value as u8]);
    }

    fn push_ulong(&mut self, kind: CK_ATTRIBUTE_TYPE, value: CK_ULONG) {
        self.push(kind, value.to_ne_bytes().to_vec());
    }

    /// NULL value with any length: the module must refuse it without reading.
    fn push_null(&mut self, kind: CK_ATTRIBUTE_TYPE, len: CK_ULONG) {
        self.attrs.push(CK_ATTRIBUTE {
            type_: kind,
            pValue: null_mut(),
            ulValueLen: len,
        });
    }

    /// An attribute-array value (CKA_WRAP_TEMPLATE...): the inner array lives in `nested`.
    fn push_nested(&mut self, kind: CK_ATTRIBUTE_TYPE, mut inner: Template) {
        let len = inner.attrs.len() * std::mem::size_of::<CK_ATTRIBUTE>();
        inner.attrs.reserve(1);
        self.attrs.push(CK_ATTRIBUTE {
            type_: kind,
            pValue: inner.attrs.as_mut_ptr().cast(),
            ulValueLen: len as CK_ULONG,
        });
        self.nested.push(inner);
    }

    fn remove(&mut self, index: usize) {
        if index < self.attrs.len() {
            self.attrs.remove(index);
        }
    }
}

/// How a template reaches the call: (pointer, count), the count at most the attributes here.
struct TemplateArg {
    template: Template,
    null: bool,
    count: CK_ULONG,
}

impl TemplateArg {
    fn ptr(&mut self) -> *mut CK_ATTRIBUTE {
        if self.null {
            null_mut()
        } else {
            self.template.attrs.as_mut_ptr()
        }
    }
}

/// An output buffer for the two-call convention: NULL (asks the length), or `cap` bytes of
/// which `declared` are announced, followed by guard bytes that must stay untouched.
struct Out {
    buf: Vec<u8>,
    null: bool,
    declared: CK_ULONG,
    len: CK_ULONG,
    null_len: bool,
}

impl Out {
    fn new(null: bool, cap: usize, declared: CK_ULONG) -> Self {
        Out {
            buf: vec![CANARY; cap + GUARD],
            null,
            declared,
            len: declared,
            null_len: false,
        }
    }

    fn ptr(&mut self) -> *mut u8 {
        if self.null {
            null_mut()
        } else {
            self.buf.as_mut_ptr()
        }
    }

    fn len_ptr(&mut self) -> *mut CK_ULONG {
        if self.null_len {
            null_mut()
        } else {
            &mut self.len
        }
    }

    /// The bytes the module produced (after CKR_OK).
    fn produced(&self) -> Vec<u8> {
        let n = (self.len as usize).min(self.buf.len());
        self.buf[..n].to_vec()
    }

    /// The guard bytes and the length convention after the call.
    fn check(&self, call: &str, rv: CK_RV) {
        if self.null {
            return;
        }
        let from = (self.declared as usize).min(self.buf.len());
        if let Some(at) = self.buf[from..].iter().position(|&b| b != CANARY) {
            finding(format!(
                "{call} ({}) wrote at offset {} of a buffer announced as {} bytes",
                rv_name(rv),
                from + at,
                self.declared
            ));
        }
        if self.null_len {
            return;
        }
        if rv == CKR_OK && self.len > self.declared {
            finding(format!(
                "{call}: CKR_OK with length {} for a buffer of {}",
                self.len, self.declared
            ));
        }
        if rv == CKR_BUFFER_TOO_SMALL && self.len <= self.declared {
            finding(format!(
                "{call}: CKR_BUFFER_TOO_SMALL for a buffer of {} but needs {}",
                self.declared, self.len
            ));
        }
    }
}

/// Input bytes for the module: (pointer, length), the length at most the buffer here.
struct Data {
    buf: Vec<u8>,
    null: bool,
    len: CK_ULONG,
}

impl Data {
    fn ptr(&mut self) -> *mut u8 {
        if self.null {
            null_mut()
        } else {
            self.buf.as_mut_ptr()
        }
    }
}

/// A mechanism and the parameter behind it (stored as u64 words: the structures the module
/// reads from it need their alignment), and the buffers the parameter points at.
struct Mech {
    mechanism: CK_MECHANISM,
    _param: Vec<u64>,
    _buffers: Vec<Vec<u8>>,
    null: bool,
}

impl Mech {
    fn ptr(&mut self) -> *mut CK_MECHANISM {
        if self.null {
            null_mut()
        } else {
            &mut self.mechanism
        }
    }
}

unsafe extern "C" fn notify(_: CK_SESSION_HANDLE, _: CK_NOTIFICATION, _: *mut c_void) -> CK_RV {
    CKR_OK
}

unsafe extern "C" fn create_mutex(out: *mut *mut c_void) -> CK_RV {
    if !out.is_null() {
        // SAFETY: the module passes a location for the new mutex.
        unsafe { *out = Box::into_raw(Box::new(0u8)).cast() };
    }
    CKR_OK
}

unsafe extern "C" fn mutex_op(_: *mut c_void) -> CK_RV {
    CKR_OK
}

// ---------------------------------------------------------------------------------------------
// The process-wide set-up

pub struct Harness {
    fl: &'static CK_FUNCTION_LIST_3_2,
    dir: PathBuf,
    token: PathBuf,
    blank: PathBuf,
    pristine: PathBuf,
    /// Key material: valid keys, seeds and public keys of every algorithm here.
    materials: Vec<Vec<u8>>,
    /// With `B4AE_FUZZ_BACKEND=pkcs11`: the SoftHSM2 token behind slot 2, which inputs then
    /// drive (their sessions open there).
    hsm: Option<SoftHsm>,
    /// The module's log file, when it logs to one.
    module_log: Option<PathBuf>,
}

/// How much of the module's log file earlier calls have read.
static LOG_READ: Mutex<u64> = Mutex::new(0);

impl Harness {
    /// Whether the module's log says, since the last look, that the HSM itself answered
    /// `CKR_GENERAL_ERROR` to `name`: the module passes an HSM's answer on unchanged, so that is
    /// a finding about the HSM (SoftHSM2 answers it, e.g., to Ed25519ph signing), not the module.
    fn hsm_answered_general_error(&self, name: &str) -> bool {
        let Some(path) = &self.module_log else {
            return false;
        };
        let Ok(text) = std::fs::read(path) else {
            return false;
        };
        let mut read = LOG_READ.lock().unwrap_or_else(|e| e.into_inner());
        let new = text.get(*read as usize..).unwrap_or_default();
        *read = text.len() as u64;
        let new = String::from_utf8_lossy(new);
        let real = name.trim_start_matches('#');
        new.lines().any(|l| {
            l.contains(&format!("{real}: the HSM library")) && l.contains("CKR_GENERAL_ERROR")
        })
    }
}

/// The slot of the pkcs11 backend's token (over SoftHSM2), when the harness has one.
pub const HSM_SLOT: CK_SLOT_ID = 2;
const SOFTHSM_LIB: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// SoftHSM2's token directory and its pristine copy.
struct SoftHsm {
    tokens: PathBuf,
    pristine: PathBuf,
}

/// Which backend's token the inputs drive: `B4AE_FUZZ_BACKEND` = `embedded` (default) or
/// `pkcs11` (a token over SoftHSM2, forwarded through the module).
fn fuzz_pkcs11_backend() -> bool {
    match std::env::var("B4AE_FUZZ_BACKEND").as_deref() {
        Ok("pkcs11") => true,
        Ok("embedded") | Err(_) => false,
        Ok(other) => panic!("B4AE_FUZZ_BACKEND={other}: embedded or pkcs11"),
    }
}

/// SoftHSM2 set up under `dir`: a configuration, a token directory with one token ("fuzz-hsm",
/// SO and user PIN as the embedded token's), `SOFTHSM2_CONF` pointing at it.
fn softhsm(dir: &Path) -> SoftHsm {
    assert!(
        Path::new(SOFTHSM_LIB).exists(),
        "B4AE_FUZZ_BACKEND=pkcs11 needs SoftHSM2 ({SOFTHSM_LIB}; scripts/deps.sh installs it)"
    );
    let tokens = dir.join("softhsm-tokens");
    std::fs::create_dir_all(&tokens).expect("SoftHSM2 token directory");
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .expect("softhsm2.conf");
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let pin = |p: &[u8]| String::from_utf8(p.to_vec()).expect("ASCII PIN");
    let output = std::process::Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "fuzz-hsm"])
        .args(["--so-pin", &pin(SO_PIN), "--pin", &pin(USER_PIN)])
        .output()
        .expect("running softhsm2-util");
    assert!(
        output.status.success(),
        "softhsm2-util --init-token: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    SoftHsm {
        pristine: dir.join("softhsm-pristine"),
        tokens,
    }
}

/// Copies a directory tree (SoftHSM2 keeps one directory per token).
fn copy_tree(from: &Path, to: &Path) {
    retrying("creating a directory", || std::fs::create_dir_all(to));
    let entries = retrying("reading a directory", || {
        std::fs::read_dir(from)?.collect::<std::io::Result<Vec<_>>>()
    });
    for entry in entries {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            retrying("copying a file", || std::fs::copy(entry.path(), &target));
        }
    }
}

static HARNESS: OnceLock<Harness> = OnceLock::new();

extern "C" fn remove_harness_dir() {
    if let Some(h) = HARNESS.get() {
        let _ = std::fs::remove_dir_all(&h.dir);
    }
}

/// Where the harness keeps its tokens: `$B4AE_FUZZ_TMPDIR`, else /dev/shm (fast), else the
/// system's temporary directory.
fn base_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("B4AE_FUZZ_TMPDIR") {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    let writable = shm.is_dir()
        && std::fs::metadata(shm).is_ok_and(|m| !m.permissions().readonly())
        && std::fs::write(shm.join(format!(".b4ae-fuzz-{}", std::process::id())), b"")
            .and_then(|()| {
                std::fs::remove_file(shm.join(format!(".b4ae-fuzz-{}", std::process::id())))
            })
            .is_ok();
    if writable {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Removes the directories of harness processes that are gone (a crash skips `atexit`).
fn remove_abandoned(base: &Path) {
    for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("b4ae-fuzz-")) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        let gone = !pid.is_empty() && !Path::new("/proc").join(pid).exists();
        if gone && entry.path().is_dir() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A file operation, again when a signal interrupted it (libFuzzer's timer signal does).
fn retrying<T>(what: &str, mut f: impl FnMut() -> std::io::Result<T>) -> T {
    let mut tries = 0;
    loop {
        match f() {
            Ok(value) => return value,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted && tries < 100 => tries += 1,
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    retrying("creating the token directory", || {
        std::fs::create_dir_all(to)
    });
    let entries = retrying("reading the pristine token", || {
        std::fs::read_dir(from)?.collect::<std::io::Result<Vec<_>>>()
    });
    for entry in entries {
        let target = to.join(entry.file_name());
        // The store lives in a directory of its own inside the token's directory.
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            retrying("copying the token", || std::fs::copy(entry.path(), &target));
        }
    }
}

/// Removes a token directory (absent already is fine).
fn remove_dir(dir: &Path) {
    retrying(
        "removing a token directory",
        || match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        },
    );
}

impl Harness {
    /// The harness of this process, set up on first use.
    pub fn get() -> &'static Harness {
        HARNESS.get_or_init(|| {
            let h = Harness::setup();
            // SAFETY: registers a plain function that only reads a static.
            unsafe { libc::atexit(remove_harness_dir) };
            h
        })
    }

    fn setup() -> Harness {
        let base = base_dir();
        std::fs::create_dir_all(&base).expect("creating the harness's base directory");
        remove_abandoned(&base);
        let dir = base.join(format!(
            "b4ae-fuzz-{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).expect("creating the harness directory");
        let token = dir.join("token");
        let blank = dir.join("blank");
        let pristine = dir.join("pristine");
        let text = |p: &Path| p.to_str().expect("UTF-8 temporary path").to_owned();
        let conf = dir.join("b4ae-pkcs11.toml");
        let hsm = fuzz_pkcs11_backend().then(|| softhsm(&dir));
        let mut config = format!(
            "[[token]]\nlabel = \"fuzz\"\nbackend = \"embedded\"\npath = \"{}\"\n\
             pin_kdf = \"test-only-fast\"\nmax_pin_failures = 3\n\n\
             [[token]]\nlabel = \"blank\"\nbackend = \"embedded\"\npath = \"{}\"\n\
             pin_kdf = \"test-only-fast\"\n",
            text(&token),
            text(&blank)
        );
        if hsm.is_some() {
            config.push_str(&format!(
                "\n[[token]]\nlabel = \"hsm\"\nbackend = \"pkcs11\"\nlibrary = \"{SOFTHSM_LIB}\"\n\
                 token_label = \"fuzz-hsm\"\n"
            ));
        }
        std::fs::write(&conf, config).expect("writing the configuration");
        std::env::set_var("B4AE_PKCS11_CONF", &conf);
        if std::env::var_os("B4AE_PKCS11_LOG").is_none() {
            // On the pkcs11 backend the module's warnings say which errors the HSM answered.
            let setting = match &hsm {
                Some(_) => format!("warn:{}", text(&dir.join("module.log"))),
                None => "off".to_string(),
            };
            std::env::set_var("B4AE_PKCS11_LOG", setting);
        }
        let module_log = std::env::var("B4AE_PKCS11_LOG")
            .ok()
            .and_then(|v| v.split_once(':').map(|(_, path)| PathBuf::from(path)));
        install_panic_hook();
        let mut h = Harness {
            fl: function_list(),
            dir,
            token,
            blank,
            pristine,
            materials: Vec::new(),
            hsm,
            module_log,
        };
        h.materials = materials();
        h.make_pristine_token();
        h
    }

    /// Slot 0: initialised, with token objects of every kind; kept as the pristine copy.
    fn make_pristine_token(&self) {
        let f = self.fl;
        let ok = |name: &str, rv: CK_RV| assert!(rv == CKR_OK, "set-up: {name}: {}", rv_name(rv));
        // SAFETY: NULL arguments.
        unsafe { ok("C_Initialize", f.C_Initialize.unwrap()(null_mut())) };
        // SAFETY (all calls below): pointers to live values of the announced sizes.
        let s = unsafe {
            let mut label = [b' '; 32];
            label[..4].copy_from_slice(b"fuzz");
            let rv = f.C_InitToken.unwrap()(
                0,
                SO_PIN.as_ptr().cast_mut(),
                SO_PIN.len() as CK_ULONG,
                label.as_mut_ptr(),
            );
            ok("C_InitToken", rv);
            let mut s = 0;
            let rv = f.C_OpenSession.unwrap()(
                0,
                CKF_SERIAL_SESSION | CKF_RW_SESSION,
                null_mut(),
                None,
                &mut s,
            );
            ok("C_OpenSession", rv);
            ok(
                "C_Login(SO)",
                f.C_Login.unwrap()(
                    s,
                    CKU_SO,
                    SO_PIN.as_ptr().cast_mut(),
                    SO_PIN.len() as CK_ULONG,
                ),
            );
            ok(
                "C_InitPIN",
                f.C_InitPIN.unwrap()(s, USER_PIN.as_ptr().cast_mut(), USER_PIN.len() as CK_ULONG),
            );
            ok("C_Logout", f.C_Logout.unwrap()(s));
            ok(
                "C_Login(user)",
                f.C_Login.unwrap()(
                    s,
                    CKU_USER,
                    USER_PIN.as_ptr().cast_mut(),
                    USER_PIN.len() as CK_ULONG,
                ),
            );
            s
        };
        self.populate(s);
        if let Some(hsm) = &self.hsm {
            // The SoftHSM2 token was initialised by softhsm2-util; its user logs in here.
            let mut s = 0;
            // SAFETY: pointers to live values of the announced sizes.
            unsafe {
                let flags = CKF_SERIAL_SESSION | CKF_RW_SESSION;
                let rv = f.C_OpenSession.unwrap()(HSM_SLOT, flags, null_mut(), None, &mut s);
                ok("C_OpenSession(HSM)", rv);
                let pin = USER_PIN.as_ptr().cast_mut();
                let rv = f.C_Login.unwrap()(s, CKU_USER, pin, USER_PIN.len() as CK_ULONG);
                ok("C_Login(HSM)", rv);
            }
            self.populate(s);
            // SAFETY: no pointer arguments.
            unsafe { ok("C_Finalize", f.C_Finalize.unwrap()(null_mut())) };
            copy_tree(&hsm.tokens, &hsm.pristine);
            copy_dir(&self.token, &self.pristine);
            return;
        }
        // SAFETY: no pointer arguments.
        unsafe {
            ok("C_Finalize", f.C_Finalize.unwrap()(null_mut()));
        }
        copy_dir(&self.token, &self.pristine);
    }

    /// Token objects of every kind, made through session `s` (logged in as the user).
    fn populate(&self, s: CK_SESSION_HANDLE) {
        let f = self.fl;
        let ok = |name: &str, rv: CK_RV| assert!(rv == CKR_OK, "set-up: {name}: {}", rv_name(rv));
        let keypair = |mech: CK_MECHANISM_TYPE,
                       set: Option<CK_ULONG>,
                       label: &[u8],
                       extra: &dyn Fn(&mut Template)| {
            let mut public = Template::default();
            let mut private = Template::default();
            for t in [&mut public, &mut private] {
                t.push_bool(CKA_TOKEN, true);
                t.push(CKA_LABEL, label.to_vec());
                t.push(CKA_ID, label.to_vec());
            }
            if let Some(set) = set {
                public.push_ulong(CKA_PARAMETER_SET, set);
            }
            if mech == CKM_EC_EDWARDS_KEY_PAIR_GEN {
                public.push(CKA_EC_PARAMS, vec![0x06, 0x03, 0x2B, 0x65, 0x70]);
            }
            private.push_bool(CKA_PRIVATE, true);
            extra(&mut private);
            let mut m = CK_MECHANISM {
                mechanism: mech,
                pParameter: null_mut(),
                ulParameterLen: 0,
            };
            let (mut a, mut b) = (0, 0);
            // SAFETY: templates and out-pointers live through the call.
            let rv = unsafe {
                f.C_GenerateKeyPair.unwrap()(
                    s,
                    &mut m,
                    public.attrs.as_mut_ptr(),
                    public.attrs.len() as CK_ULONG,
                    private.attrs.as_mut_ptr(),
                    private.attrs.len() as CK_ULONG,
                    &mut a,
                    &mut b,
                )
            };
            ok("C_GenerateKeyPair", rv);
        };
        let create = |t: &mut Template| {
            let mut handle = 0;
            // SAFETY: the template lives through the call.
            let rv = unsafe {
                f.C_CreateObject.unwrap()(
                    s,
                    t.attrs.as_mut_ptr(),
                    t.attrs.len() as CK_ULONG,
                    &mut handle,
                )
            };
            ok("C_CreateObject", rv);
        };
        keypair(
            CKM_ML_DSA_KEY_PAIR_GEN,
            Some(CKP_ML_DSA_44),
            b"mldsa44",
            &|_| {},
        );
        keypair(
            CKM_ML_DSA_KEY_PAIR_GEN,
            Some(CKP_ML_DSA_65),
            b"mldsa65-only-pure",
            &|t| {
                t.push(CKA_ALLOWED_MECHANISMS, CKM_ML_DSA.to_ne_bytes().to_vec());
            },
        );
        keypair(
            CKM_ML_DSA_KEY_PAIR_GEN,
            Some(CKP_ML_DSA_87),
            b"mldsa87-exportable",
            &|t| {
                t.push_bool(CKA_SENSITIVE, false);
                t.push_bool(CKA_EXTRACTABLE, true);
            },
        );
        keypair(
            CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN,
            None,
            b"dilithium5",
            &|_| {},
        );
        keypair(CKM_B4AE_HYBRID_KEY_PAIR_GEN, None, b"hybrid", &|_| {});
        keypair(
            CKM_ML_KEM_KEY_PAIR_GEN,
            Some(CKP_ML_KEM_768),
            b"mlkem768",
            &|_| {},
        );
        keypair(CKM_EC_EDWARDS_KEY_PAIR_GEN, None, b"ed25519", &|_| {});
        // Imported keys: ML-DSA-65 from its seed, ML-KEM-512 from its seed, an AES key.
        let mut t = Template::default();
        t.push_ulong(CKA_CLASS, CKO_PRIVATE_KEY);
        t.push_ulong(CKA_KEY_TYPE, CKK_ML_DSA);
        t.push_ulong(CKA_PARAMETER_SET, CKP_ML_DSA_65);
        t.push(CKA_SEED, vec![0x65; 32]);
        t.push_bool(CKA_TOKEN, true);
        t.push_bool(CKA_SIGN, true);
        t.push(CKA_LABEL, b"mldsa65-imported".to_vec());
        create(&mut t);
        let mut t = Template::default();
        t.push_ulong(CKA_CLASS, CKO_PRIVATE_KEY);
        t.push_ulong(CKA_KEY_TYPE, CKK_ML_KEM);
        t.push_ulong(CKA_PARAMETER_SET, CKP_ML_KEM_512);
        t.push(CKA_SEED, vec![0x51; 64]);
        t.push_bool(CKA_TOKEN, true);
        t.push_bool(CKA_DECAPSULATE, true);
        t.push(CKA_LABEL, b"mlkem512-imported".to_vec());
        create(&mut t);
        let mut t = Template::default();
        t.push_ulong(CKA_CLASS, CKO_SECRET_KEY);
        t.push_ulong(CKA_KEY_TYPE, CKK_AES);
        t.push(CKA_VALUE, vec![0xAE; 32]);
        t.push_bool(CKA_TOKEN, true);
        t.push(CKA_LABEL, b"aes".to_vec());
        create(&mut t);
        let mut t = Template::default();
        t.push_ulong(CKA_VALUE_LEN, 16);
        t.push_bool(CKA_TOKEN, true);
        t.push_bool(CKA_ENCRYPT, true);
        t.push_bool(CKA_DECRYPT, true);
        t.push(CKA_LABEL, b"aes-generated".to_vec());
        let mut m = CK_MECHANISM {
            mechanism: CKM_AES_KEY_GEN,
            pParameter: null_mut(),
            ulParameterLen: 0,
        };
        let mut handle = 0;
        // SAFETY: mechanism, template and out-pointer live through the call.
        let rv = unsafe {
            f.C_GenerateKey.unwrap()(
                s,
                &mut m,
                t.attrs.as_mut_ptr(),
                t.attrs.len() as CK_ULONG,
                &mut handle,
            )
        };
        ok("C_GenerateKey", rv);
        // Data objects: public, private, and one that may be neither changed, copied nor
        // destroyed.
        for (label, private, locked) in [
            (&b"data-public"[..], false, false),
            (b"data-private", true, false),
            (b"data-locked", false, true),
        ] {
            let mut t = Template::default();
            t.push_ulong(CKA_CLASS, CKO_DATA);
            t.push_bool(CKA_TOKEN, true);
            t.push_bool(CKA_PRIVATE, private);
            t.push(CKA_LABEL, label.to_vec());
            t.push(CKA_APPLICATION, b"fuzz".to_vec());
            t.push(CKA_VALUE, label.repeat(3));
            if locked {
                t.push_bool(CKA_MODIFIABLE, false);
                t.push_bool(CKA_COPYABLE, false);
                t.push_bool(CKA_DESTROYABLE, false);
            }
            create(&mut t);
        }
    }
}

/// Key material of every algorithm here (valid; the harness mutates it per input), made with
/// the module's own algorithm code from fixed seeds where it has them.
fn materials() -> Vec<Vec<u8>> {
    use b4ae_pkcs11::mechanism::{dilithium5, hybrid, mldsa, mlkem};
    let mut out = Vec::new();
    for (i, set) in mldsa::ParamSet::ALL.into_iter().enumerate() {
        let seed = [0x40 + i as u8; 32];
        let (pk, sk) = set.keygen_from_seed(&seed).expect("ML-DSA key generation");
        out.extend([seed.to_vec(), pk, sk.to_vec()]);
    }
    for (i, set) in mlkem::ParamSet::ALL.into_iter().enumerate() {
        let seed = [0x50 + i as u8; 64];
        let (ek, dk) = set.keygen_from_seed(&seed);
        out.extend([seed.to_vec(), ek, dk.to_vec()]);
    }
    let (pk, sk) = dilithium5::keypair();
    out.extend([pk, sk.to_vec()]);
    let (_, ml_sk) = mldsa::ParamSet::MlDsa87
        .keygen_from_seed(&[0x87; 32])
        .expect("ML-DSA-87 key generation");
    let hybrid_sk = [&[0x25u8; 32][..], &ml_sk].concat();
    let hybrid_pk = hybrid::public_of_private(&hybrid_sk).expect("hybrid public key");
    out.extend([hybrid_pk, hybrid_sk]);
    // Ed25519: CKA_EC_PARAMS in both forms, a seed, its CKA_EC_POINT.
    let ed_seed = [0xED; 32];
    let point = b4ae_pkcs11::mechanism::eddsa::public_of_seed(&ed_seed).expect("Ed25519");
    out.extend([
        vec![0x06, 0x03, 0x2B, 0x65, 0x70],
        b"\x13\x0cedwards25519".to_vec(),
        ed_seed.to_vec(),
        [&[0x04, 0x20][..], &point].concat(),
    ]);
    // Run::material_for knows each entry by its index.
    assert_eq!(out.len(), 26, "materials and Run::material_for disagree");
    out
}

// ---------------------------------------------------------------------------------------------
// One input

pub struct Run<'h, 'a> {
    h: &'h Harness,
    inp: Input<'a>,
    sessions: Vec<CK_SESSION_HANDLE>,
    objects: Vec<CK_OBJECT_HANDLE>,
    /// (handle, class, key type) of the objects known, as the module answered.
    kinds: Vec<(CK_OBJECT_HANDLE, CK_ULONG, CK_ULONG)>,
    signatures: Vec<Vec<u8>>,
    ciphertexts: Vec<Vec<u8>>,
    pins: Vec<Vec<u8>>,
    call: usize,
    /// The slot whose token the input drives: 0 (embedded) or [`HSM_SLOT`].
    home: CK_SLOT_ID,
}

/// Runs one input from the pristine token.
pub fn run(data: &[u8]) {
    let h = Harness::get();
    TRACE.with(|t| t.borrow_mut().clear());
    *MODULE_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let mut run = Run::new(h, data);
    run.restore();
    run.prologue();
    while !run.inp.is_empty() && run.call < MAX_CALLS {
        run.call += 1;
        run.step();
    }
    run.epilogue();
}

impl<'h, 'a> Run<'h, 'a> {
    fn new(h: &'h Harness, data: &'a [u8]) -> Self {
        Run {
            h,
            inp: Input { data },
            sessions: Vec::new(),
            objects: Vec::new(),
            kinds: Vec::new(),
            signatures: Vec::new(),
            ciphertexts: Vec::new(),
            pins: vec![USER_PIN.to_vec(), SO_PIN.to_vec()],
            call: 0,
            home: if h.hsm.is_some() { HSM_SLOT } else { 0 },
        }
    }

    /// After every call: a panic inside the module or CKR_GENERAL_ERROR ends the input.
    fn answered(&mut self, name: &str, rv: CK_RV) {
        trace(format!("#{} {name} -> {}", self.call, rv_name(rv)));
        let panic = MODULE_PANIC
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(panic) = panic {
            finding(format!(
                "{name} panicked inside the module ({}): {panic}",
                rv_name(rv)
            ));
        }
        let known = KNOWN_PANIC.with(|k| k.replace(false));
        if rv == CKR_GENERAL_ERROR
            && !general_error_allowed()
            && !known
            && !self.h.hsm_answered_general_error(name)
        {
            finding(format!("{name} answered CKR_GENERAL_ERROR"));
        }
    }

    /// The module restarted on the pristine token; slot 1 blank.
    fn restore(&mut self) {
        let f = self.h.fl;
        // SAFETY: no pointer arguments.
        let _ = unsafe { f.C_Finalize.unwrap()(null_mut()) };
        remove_dir(&self.h.token);
        remove_dir(&self.h.blank);
        copy_dir(&self.h.pristine, &self.h.token);
        if let Some(log) = &self.h.module_log {
            // A fresh log per input (the module appends, so it writes at the new end).
            if let Ok(file) = std::fs::OpenOptions::new().write(true).open(log) {
                let _ = file.set_len(0);
            }
            *LOG_READ.lock().unwrap_or_else(|e| e.into_inner()) = 0;
        }
        if let Some(hsm) = &self.h.hsm {
            remove_dir(&hsm.tokens);
            copy_tree(&hsm.pristine, &hsm.tokens);
        }
        // SAFETY: NULL arguments.
        let rv = unsafe { f.C_Initialize.unwrap()(null_mut()) };
        assert!(
            rv == CKR_OK,
            "C_Initialize on the pristine token: {}",
            rv_name(rv)
        );
    }

    /// A logged-in read/write session and a read-only one, and the handles of the token's
    /// objects.
    fn prologue(&mut self) {
        for flags in [CKF_SERIAL_SESSION | CKF_RW_SESSION, CKF_SERIAL_SESSION] {
            let mut s = 0;
            if ck!(
                self,
                C_OpenSession(self.home, flags, null_mut(), None, &mut s)
            ) == CKR_OK
            {
                self.sessions.push(s);
            }
        }
        let s = self.sessions[0];
        let pin = USER_PIN;
        ck!(
            self,
            C_Login(s, CKU_USER, pin.as_ptr().cast_mut(), pin.len() as CK_ULONG)
        );
        self.find_all(s);
    }

    /// Every object the session sees, added to the known handles.
    fn find_all(&mut self, s: CK_SESSION_HANDLE) -> Vec<CK_OBJECT_HANDLE> {
        let mut found = Vec::new();
        if ck!(self, C_FindObjectsInit(s, null_mut(), 0)) != CKR_OK {
            return found;
        }
        let mut buf = [0 as CK_OBJECT_HANDLE; 64];
        loop {
            let mut n = 0;
            let rv = ck!(
                self,
                C_FindObjects(s, buf.as_mut_ptr(), buf.len() as CK_ULONG, &mut n)
            );
            if rv != CKR_OK || n == 0 || n as usize > buf.len() {
                break;
            }
            found.extend_from_slice(&buf[..n as usize]);
        }
        ck!(self, C_FindObjectsFinal(s));
        for &o in &found {
            self.know_object(o);
        }
        found
    }

    /// The module restarted on what the input left: the store must open, and every object
    /// on it must be readable.
    fn epilogue(&mut self) {
        self.call += 1;
        trace("-- restart on the store this input left".to_string());
        ck!(self, C_Finalize(null_mut()));
        let rv = ck!(self, C_Initialize(null_mut()));
        if rv != CKR_OK {
            finding(format!(
                "C_Initialize on the store this input left: {}",
                rv_name(rv)
            ));
        }
        let slots: &[CK_SLOT_ID] = if self.h.hsm.is_some() {
            &[0, 1, HSM_SLOT]
        } else {
            &[0, 1]
        };
        for &slot in slots {
            let mut s = 0;
            if ck!(
                self,
                C_OpenSession(
                    slot,
                    CKF_SERIAL_SESSION | CKF_RW_SESSION,
                    null_mut(),
                    None,
                    &mut s
                )
            ) != CKR_OK
            {
                continue;
            }
            for pin in self.pins.clone() {
                let rv = ck!(
                    self,
                    C_Login(s, CKU_USER, pin.as_ptr().cast_mut(), pin.len() as CK_ULONG)
                );
                if rv == CKR_OK {
                    break;
                }
            }
            for o in self.find_all(s) {
                let mut class: CK_ULONG = 0;
                let mut attrs = [
                    CK_ATTRIBUTE {
                        type_: CKA_CLASS,
                        pValue: (&mut class as *mut CK_ULONG).cast(),
                        ulValueLen: 8,
                    },
                    CK_ATTRIBUTE {
                        type_: CKA_LABEL,
                        pValue: null_mut(),
                        ulValueLen: 0,
                    },
                    CK_ATTRIBUTE {
                        type_: CKA_VALUE,
                        pValue: null_mut(),
                        ulValueLen: 0,
                    },
                ];
                ck!(
                    self,
                    C_GetAttributeValue(s, o, attrs.as_mut_ptr(), attrs.len() as CK_ULONG)
                );
            }
            ck!(self, C_CloseSession(s));
        }
    }

    /// A handle the module handed out: kept, with its class and key type (asked through the
    /// first session), so that later calls can pick a key that fits their mechanism.
    fn know_object(&mut self, o: CK_OBJECT_HANDLE) {
        if self.objects.contains(&o) || self.objects.len() >= 256 {
            return;
        }
        self.objects.push(o);
        let Some(&s) = self.sessions.first() else {
            return;
        };
        let (mut class, mut key_type): (CK_ULONG, CK_ULONG) = (0, 0);
        let mut attrs = [
            CK_ATTRIBUTE {
                type_: CKA_CLASS,
                pValue: (&mut class as *mut CK_ULONG).cast(),
                ulValueLen: 8,
            },
            CK_ATTRIBUTE {
                type_: CKA_KEY_TYPE,
                pValue: (&mut key_type as *mut CK_ULONG).cast(),
                ulValueLen: 8,
            },
        ];
        let rv = ck!(self, C_GetAttributeValue(s, o, attrs.as_mut_ptr(), 2));
        let answered = |a: &CK_ATTRIBUTE, v| (a.ulValueLen == 8).then_some(v);
        let class = answered(&attrs[0], class).unwrap_or(CK_UNAVAILABLE_INFORMATION);
        let key_type = answered(&attrs[1], key_type).unwrap_or(CK_UNAVAILABLE_INFORMATION);
        if rv == CKR_OK || rv == CKR_ATTRIBUTE_TYPE_INVALID {
            self.kinds.push((o, class, key_type));
        }
    }

    /// A key of this class and type, mostly; any handle sometimes.
    fn key_for(&mut self, class: CK_ULONG, key_type: CK_ULONG) -> CK_OBJECT_HANDLE {
        let fitting: Vec<CK_OBJECT_HANDLE> = self
            .kinds
            .iter()
            .filter(|(_, c, k)| *c == class && *k == key_type)
            .map(|(o, _, _)| *o)
            .collect();
        if fitting.is_empty() || self.inp.chance(4) {
            return self.object();
        }
        self.inp.pick(&fitting)
    }

    fn know_session(&mut self, s: CK_SESSION_HANDLE) {
        if !self.sessions.contains(&s) && self.sessions.len() < 64 {
            self.sessions.push(s);
        }
    }

    // ---- argument choices ----

    fn slot(&mut self) -> CK_SLOT_ID {
        match self.inp.u8() % 16 {
            0..=11 => self.home,
            12 | 13 => 1,
            14 => HSM_SLOT - self.home,
            _ => self.inp.u64() as CK_SLOT_ID,
        }
    }

    fn handle_from(&mut self, known: &[CK_ULONG]) -> CK_ULONG {
        let b = self.inp.u8();
        if b < 128 && !known.is_empty() {
            return known[b as usize % known.len()];
        }
        if b < 224 && !known.is_empty() {
            // One of the newest: what the input itself just made.
            return known[known.len() - 1 - (b as usize % 4).min(known.len() - 1)];
        }
        let last = known.last().copied().unwrap_or(0);
        match b % 8 {
            0 => CK_INVALID_HANDLE,
            1 => last.wrapping_add(1),
            2 => last.wrapping_add(1000),
            3 => CK_ULONG::MAX,
            4 => 0xFFFF_FFFF,
            5 => 0x8000_0000_0000_0000,
            _ => self.inp.u64() as CK_ULONG,
        }
    }

    fn session(&mut self) -> CK_SESSION_HANDLE {
        let known = self.sessions.clone();
        self.handle_from(&known)
    }

    fn object(&mut self) -> CK_OBJECT_HANDLE {
        let known = self.objects.clone();
        self.handle_from(&known)
    }

    fn material(&mut self) -> Vec<u8> {
        let m = self.inp.pick_clone(&self.h.materials);
        self.mutate(m)
    }

    /// Material that fits this attribute of this kind of key (indices into [`materials`]),
    /// mostly; any material sometimes.
    fn material_for(&mut self, class: CK_ULONG, key_type: CK_ULONG, attr: CK_ULONG) -> Vec<u8> {
        let private = class == CKO_PRIVATE_KEY;
        let fitting: &[usize] = match (key_type, attr) {
            (CKK_ML_DSA, CKA_SEED) => &[0, 3, 6],
            (CKK_ML_DSA, _) if private => &[2, 5, 8],
            (CKK_ML_DSA, _) => &[1, 4, 7],
            (CKK_ML_KEM, CKA_SEED) => &[9, 12, 15],
            (CKK_ML_KEM, _) if private => &[11, 14, 17],
            (CKK_ML_KEM, _) => &[10, 13, 16],
            (CKK_B4AE_DILITHIUM5, _) if private => &[19],
            (CKK_B4AE_DILITHIUM5, _) => &[18],
            (CKK_B4AE_HYBRID, _) if private => &[21],
            (CKK_B4AE_HYBRID, _) => &[20],
            (CKK_EC_EDWARDS, CKA_EC_PARAMS) => &[22, 23],
            (CKK_EC_EDWARDS, CKA_EC_POINT) => &[25],
            (CKK_EC_EDWARDS, _) => &[24],
            _ => &[],
        };
        if fitting.is_empty() || self.inp.chance(8) {
            return self.material();
        }
        let index = self.inp.pick(fitting);
        let m = self.h.materials[index % self.h.materials.len()].clone();
        self.mutate(m)
    }

    /// Material as it is (mostly), with a byte changed, of the same length but not valid,
    /// one byte short or long.
    fn mutate(&mut self, mut m: Vec<u8>) -> Vec<u8> {
        match self.inp.u8() % 8 {
            0..=3 => {}
            4 => {
                if !m.is_empty() {
                    let at = self.inp.below(m.len());
                    m[at] ^= self.inp.u8() | 1;
                }
            }
            5 | 6 => m = pattern(m.len(), self.inp.u64()),
            7 if self.inp.chance(2) => {
                m.pop();
            }
            _ => m.push(self.inp.u8()),
        }
        m
    }

    /// Bytes of any length: from the input, key material, a pattern, a PIN.
    fn bytes(&mut self) -> Vec<u8> {
        match self.inp.u8() % 8 {
            0..=3 => {
                let n = self.inp.length();
                self.inp.take(n)
            }
            4 | 5 => self.material(),
            6 => {
                let n = self.inp.length();
                pattern(n, self.inp.u64())
            }
            _ => self.inp.pick_clone(&self.pins.clone()),
        }
    }

    fn data(&mut self) -> Data {
        let buf = self.bytes();
        let (null, len) = match self.inp.u8() % 16 {
            0 => (true, 0),
            1 => (true, self.inp.ulong()),
            2 => (false, self.inp.below(buf.len() + 1) as CK_ULONG),
            _ => (false, buf.len() as CK_ULONG),
        };
        let mut buf = buf;
        buf.reserve(1);
        Data { buf, null, len }
    }

    fn out(&mut self) -> Out {
        match self.inp.u8() % 8 {
            0 => {
                let len = self.inp.ulong();
                Out::new(true, 0, len)
            }
            1 => {
                let mut out = Out::new(false, 0, 0);
                out.null_len = self.inp.chance(2);
                out.null = !out.null_len;
                out
            }
            2 => {
                let cap = self.inp.length();
                let declared = self.inp.below(cap + 1);
                Out::new(false, cap, declared as CK_ULONG)
            }
            _ => {
                let cap = self.inp.length();
                Out::new(false, cap, cap as CK_ULONG)
            }
        }
    }

    fn pin(&mut self) -> Data {
        let buf = match self.inp.u8() % 8 {
            0..=3 => self.inp.pick_clone(&self.pins.clone()),
            4 => b"wrong-pin".to_vec(),
            5 => {
                let n = self.inp.below(300);
                self.inp.take(n)
            }
            _ => {
                let n = self.inp.below(300);
                pattern(n, self.inp.u8() as u64)
            }
        };
        let (null, len) = match self.inp.u8() % 16 {
            0 => (true, self.inp.ulong()),
            1 => (false, self.inp.below(buf.len() + 1) as CK_ULONG),
            _ => (false, buf.len() as CK_ULONG),
        };
        let mut buf = buf;
        buf.reserve(1);
        Data { buf, null, len }
    }

    fn attribute_type(&mut self) -> CK_ATTRIBUTE_TYPE {
        if self.inp.chance(32) {
            self.inp.u64() as CK_ATTRIBUTE_TYPE
        } else {
            self.inp.pick(ATTRIBUTE_TYPES)
        }
    }

    /// One attribute of any type and value.
    fn attribute(&mut self, t: &mut Template, depth: usize) {
        let kind = self.attribute_type();
        match self.inp.u8() % 16 {
            0..=2 => t.push_bool(kind, !self.inp.u8().is_multiple_of(3)),
            3..=5 => {
                let v = self.inp.ulong();
                t.push_ulong(kind, v)
            }
            6 => {
                let v = self.inp.u8();
                t.push(kind, vec![v])
            }
            7 => {
                let v = self.material();
                t.push(kind, v)
            }
            8 => t.push(kind, Vec::new()),
            9 => {
                let len = match self.inp.u8() % 4 {
                    0 => 0,
                    1 => 1,
                    2 => 8,
                    _ => self.inp.ulong(),
                };
                t.push_null(kind, len)
            }
            10 if depth == 0 => {
                let mut inner = Template::default();
                for _ in 0..self.inp.below(4) {
                    self.attribute(&mut inner, depth + 1);
                }
                t.push_nested(kind | CKF_ARRAY_ATTRIBUTE, inner)
            }
            11 => {
                // CKA_ALLOWED_MECHANISMS-shaped: an array of mechanism numbers.
                let n = self.inp.below(4);
                let v: Vec<u8> = (0..n)
                    .flat_map(|_| self.inp.pick(MECHANISMS).to_ne_bytes())
                    .collect();
                t.push(kind, v)
            }
            _ => {
                let v = self.bytes();
                t.push(kind, v)
            }
        }
    }

    /// A template: one of the shapes the module makes objects from, plus attributes of any
    /// type and value, perhaps with one left out.
    fn template(&mut self) -> Template {
        let mut t = Template::default();
        let token = !self.inp.u8().is_multiple_of(4);
        match self.inp.u8() % 16 {
            0 => {}
            1 | 2 => {
                t.push_ulong(CKA_CLASS, CKO_DATA);
                t.push_bool(CKA_TOKEN, token);
                t.push(CKA_LABEL, b"fuzz-data".to_vec());
                let v = self.bytes();
                t.push(CKA_VALUE, v);
            }
            3 | 4 => {
                let (class, key_type) = self.inp.pick(&[
                    (CKO_PUBLIC_KEY, CKK_ML_DSA),
                    (CKO_PRIVATE_KEY, CKK_ML_DSA),
                    (CKO_PUBLIC_KEY, CKK_ML_KEM),
                    (CKO_PRIVATE_KEY, CKK_ML_KEM),
                    (CKO_PUBLIC_KEY, CKK_B4AE_DILITHIUM5),
                    (CKO_PRIVATE_KEY, CKK_B4AE_DILITHIUM5),
                    (CKO_PUBLIC_KEY, CKK_B4AE_HYBRID),
                    (CKO_PRIVATE_KEY, CKK_B4AE_HYBRID),
                    (CKO_PUBLIC_KEY, CKK_EC_EDWARDS),
                    (CKO_PRIVATE_KEY, CKK_EC_EDWARDS),
                ]);
                t.push_ulong(CKA_CLASS, class);
                t.push_ulong(CKA_KEY_TYPE, key_type);
                t.push_bool(CKA_TOKEN, token);
                if self.inp.chance(2) {
                    let set = self.inp.ulong();
                    t.push_ulong(CKA_PARAMETER_SET, set);
                }
                let material = match self.inp.u8() % 6 {
                    0 | 1 => CKA_SEED,
                    2 if key_type == CKK_EC_EDWARDS => CKA_EC_POINT,
                    _ => CKA_VALUE,
                };
                if key_type == CKK_EC_EDWARDS || self.inp.chance(16) {
                    let v = self.material_for(class, key_type, CKA_EC_PARAMS);
                    t.push(CKA_EC_PARAMS, v);
                }
                let v = self.material_for(class, key_type, material);
                t.push(material, v);
                let usage = match (class, key_type) {
                    (CKO_PUBLIC_KEY, CKK_ML_KEM) => CKA_ENCAPSULATE,
                    (CKO_PRIVATE_KEY, CKK_ML_KEM) => CKA_DECAPSULATE,
                    (CKO_PUBLIC_KEY, _) => CKA_VERIFY,
                    _ => CKA_SIGN,
                };
                t.push_bool(usage, true);
                if class == CKO_PRIVATE_KEY && self.inp.chance(2) {
                    t.push_bool(CKA_SENSITIVE, false);
                    t.push_bool(CKA_EXTRACTABLE, true);
                }
            }
            5 => {
                t.push_ulong(CKA_CLASS, CKO_SECRET_KEY);
                let key_type = self.inp.pick(&[CKK_AES, CKK_GENERIC_SECRET, CKK_EC]);
                t.push_ulong(CKA_KEY_TYPE, key_type);
                t.push_bool(CKA_TOKEN, token);
                let v = self.bytes();
                t.push(CKA_VALUE, v);
            }
            6 | 7 => {
                // A key-pair generation half.
                t.push_bool(CKA_TOKEN, token);
                if self.inp.chance(2) {
                    let set = self.inp.pick(&[1, 2, 3, 0, 4, CK_UNAVAILABLE_INFORMATION]);
                    t.push_ulong(CKA_PARAMETER_SET, set);
                }
                let usage =
                    self.inp
                        .pick(&[CKA_SIGN, CKA_VERIFY, CKA_ENCAPSULATE, CKA_DECAPSULATE]);
                t.push_bool(usage, true);
                if self.inp.chance(2) {
                    t.push_bool(CKA_PRIVATE, true);
                }
                t.push(CKA_LABEL, b"fuzz-key".to_vec());
            }
            8 => {
                // A secret key from encapsulation.
                t.push_ulong(CKA_CLASS, CKO_SECRET_KEY);
                let key_type = self.inp.pick(&[CKK_AES, CKK_GENERIC_SECRET]);
                t.push_ulong(CKA_KEY_TYPE, key_type);
                if self.inp.chance(2) {
                    let len = self.inp.pick(&[16, 24, 32, 0, 33, 64]);
                    t.push_ulong(CKA_VALUE_LEN, len);
                }
                t.push_bool(CKA_TOKEN, token);
                t.push_bool(CKA_EXTRACTABLE, self.inp.chance(2));
            }
            9 => {
                // A search.
                let class =
                    self.inp
                        .pick(&[CKO_DATA, CKO_PUBLIC_KEY, CKO_PRIVATE_KEY, CKO_SECRET_KEY]);
                t.push_ulong(CKA_CLASS, class);
                if self.inp.chance(2) {
                    let key_type = self.inp.pick(&[
                        CKK_ML_DSA,
                        CKK_ML_KEM,
                        CKK_B4AE_DILITHIUM5,
                        CKK_B4AE_HYBRID,
                        CKK_AES,
                    ]);
                    t.push_ulong(CKA_KEY_TYPE, key_type);
                }
            }
            _ => {}
        }
        let extra = match self.inp.u8() % 4 {
            0 | 1 => 0,
            _ => self.inp.below(6),
        };
        for _ in 0..extra {
            self.attribute(&mut t, 0);
        }
        if self.inp.chance(8) {
            let at = self.inp.below(t.attrs.len().max(1));
            t.remove(at);
        }
        t
    }

    fn template_arg(&mut self) -> TemplateArg {
        let template = self.template();
        let n = template.attrs.len() as CK_ULONG;
        let (null, count) = match self.inp.u8() % 16 {
            0 => (true, 0),
            1 => (true, self.inp.ulong()),
            2 => (false, self.inp.below(n as usize + 1) as CK_ULONG),
            _ => (false, n),
        };
        TemplateArg {
            template,
            null,
            count,
        }
    }

    fn mechanism_type(&mut self) -> CK_MECHANISM_TYPE {
        if self.inp.chance(32) {
            self.inp.u64() as CK_MECHANISM_TYPE
        } else {
            self.inp.pick(MECHANISMS)
        }
    }

    fn mechanism(&mut self, kind: CK_MECHANISM_TYPE) -> Mech {
        // What the module reads behind pParameter for this mechanism. Raw bytes only go where
        // it reads none or copies them as they are: a structure it reads must be the structure
        // it expects (its pointers are followed), whatever length is announced for it.
        let shape = b4ae_pkcs11::mechanism::param_shape(kind);
        let raw_ok = matches!(shape, ParamShape::Opaque | ParamShape::Empty);
        let mut m = Mech {
            mechanism: CK_MECHANISM {
                mechanism: kind,
                pParameter: null_mut(),
                ulParameterLen: 0,
            },
            _param: Vec::new(),
            _buffers: Vec::new(),
            null: false,
        };
        match self.inp.u8() % 8 {
            0..=2 => {}
            3 => {
                // NULL with a length.
                m.mechanism.ulParameterLen = self.inp.ulong();
            }
            4 if raw_ok => {
                // Raw bytes with their length.
                let bytes = self.bytes();
                let mut param = vec![0u64; bytes.len().div_ceil(8).max(1)];
                // SAFETY: `param` holds at least `bytes.len()` bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        bytes.as_ptr(),
                        param.as_mut_ptr().cast::<u8>(),
                        bytes.len(),
                    )
                };
                m.mechanism.ulParameterLen = bytes.len() as CK_ULONG;
                m._param = param;
                m.mechanism.pParameter = m._param.as_mut_ptr().cast();
            }
            _ => {
                let shape = if raw_ok {
                    self.inp.pick(&[
                        ParamShape::SignContext,
                        ParamShape::HashSignContext,
                        ParamShape::Gcm,
                        ParamShape::Eddsa,
                    ])
                } else {
                    shape
                };
                self.structured_param(shape, &mut m);
            }
        }
        m.null = self.inp.chance(64);
        m
    }

    /// A buffer owned by the mechanism (context, IV, AAD): (pointer, announced length), the
    /// length at most the buffer, or NULL with a length.
    fn param_buffer(&mut self, m: &mut Mech, lengths: &[usize]) -> (*mut CK_BYTE, CK_ULONG) {
        let n = match self.inp.u8() % 4 {
            0 => 0,
            1 => self.inp.pick(lengths),
            _ => self.inp.below(260),
        };
        let mut buf = self.inp.take(n);
        buf.resize(n, 0x63);
        buf.reserve(1);
        let ptr = buf.as_mut_ptr();
        m._buffers.push(buf);
        match self.inp.u8() % 16 {
            0 => (null_mut(), 0),
            1 => (null_mut(), self.inp.pick(&[1, 12, 255, 256]) as CK_ULONG),
            2 => (ptr, self.inp.below(n + 1) as CK_ULONG),
            _ => (ptr, n as CK_ULONG),
        }
    }

    /// One of the parameter structures the module reads, with any values, announced with its
    /// own size or another (a wrong size must be refused without reading).
    fn structured_param(&mut self, shape: ParamShape, m: &mut Mech) {
        let hedge = |inp: &mut Input| match inp.u8() % 8 {
            0..=2 => CKH_HEDGE_PREFERRED,
            3 => CKH_HEDGE_REQUIRED,
            4 | 5 => CKH_DETERMINISTIC_REQUIRED,
            _ => inp.ulong(),
        };
        let contexts = [1, 32, 254, 255, 256, 300];
        match shape {
            ParamShape::SignContext => {
                let hedgeVariant = hedge(&mut self.inp);
                let (pContext, ulContextLen) = self.param_buffer(m, &contexts);
                self.store(
                    m,
                    CK_SIGN_ADDITIONAL_CONTEXT {
                        hedgeVariant,
                        pContext,
                        ulContextLen,
                    },
                )
            }
            ParamShape::HashSignContext => {
                let hedgeVariant = hedge(&mut self.inp);
                let (pContext, ulContextLen) = self.param_buffer(m, &contexts);
                let hash = self.inp.pick(HASHES);
                self.store(
                    m,
                    CK_HASH_SIGN_ADDITIONAL_CONTEXT {
                        hedgeVariant,
                        pContext,
                        ulContextLen,
                        hash,
                    },
                )
            }
            ParamShape::Gcm => {
                let (pIv, ulIvLen) = self.param_buffer(m, &[12, 12, 12, 16, 11, 13, 1]);
                let ulIvBits = match self.inp.u8() % 4 {
                    0 => self.inp.ulong(),
                    _ => ulIvLen * 8,
                };
                let (pAAD, ulAADLen) = self.param_buffer(m, &[0, 1, 16, 64]);
                let ulTagBits = match self.inp.u8() % 8 {
                    0 => self.inp.ulong(),
                    1 => self.inp.pick(&[0, 8, 96, 104, 112, 120, 129]),
                    _ => 128,
                };
                self.store(
                    m,
                    CK_GCM_PARAMS {
                        pIv,
                        ulIvLen,
                        ulIvBits,
                        pAAD,
                        ulAADLen,
                        ulTagBits,
                    },
                )
            }
            ParamShape::Eddsa => {
                let phFlag = self.inp.pick(&[CK_FALSE, CK_TRUE, 2]);
                let (pContextData, ulContextDataLen) = self.param_buffer(m, &contexts);
                self.store(
                    m,
                    CK_EDDSA_PARAMS {
                        phFlag,
                        ulContextDataLen,
                        pContextData,
                    },
                )
            }
            // A structure this harness does not know yet: no parameter at all.
            _ => {}
        }
    }

    /// Puts a parameter structure behind the mechanism, announced with its own size or another
    /// (the buffer always holds at least what is announced).
    fn store<T>(&mut self, m: &mut Mech, value: T) {
        let size = std::mem::size_of::<T>();
        let len = match self.inp.u8() % 16 {
            0 => 0,
            1 => size - 8,
            2 => size + 8,
            3 => self.inp.pick(&[16, 24, 32, 48]),
            _ => size,
        };
        m._param = vec![0u64; len.max(size).div_ceil(8)];
        assert!(std::mem::align_of::<T>() <= 8);
        // SAFETY: the buffer is 8-aligned and holds at least `size` bytes.
        unsafe { m._param.as_mut_ptr().cast::<T>().write(value) };
        m.mechanism.pParameter = m._param.as_mut_ptr().cast();
        m.mechanism.ulParameterLen = len as CK_ULONG;
    }

    /// The key type a signing, encryption or encapsulation mechanism works with.
    fn key_type_of(mechanism: CK_MECHANISM_TYPE) -> CK_ULONG {
        match mechanism {
            CKM_B4AE_DILITHIUM5 => CKK_B4AE_DILITHIUM5,
            CKM_B4AE_HYBRID => CKK_B4AE_HYBRID,
            CKM_EDDSA => CKK_EC_EDWARDS,
            CKM_AES_GCM => CKK_AES,
            CKM_ML_KEM => CKK_ML_KEM,
            _ => CKK_ML_DSA,
        }
    }

    /// CKM_AES_GCM with what the token takes (96-bit IV, 128-bit tag, any AAD) mostly.
    fn gcm(&mut self) -> Mech {
        if self.inp.chance(4) {
            return self.mechanism(CKM_AES_GCM);
        }
        let mut m = Mech {
            mechanism: CK_MECHANISM {
                mechanism: CKM_AES_GCM,
                pParameter: null_mut(),
                ulParameterLen: 0,
            },
            _param: Vec::new(),
            _buffers: Vec::new(),
            null: false,
        };
        let mut iv = self.inp.take(12);
        iv.resize(12, 0x12);
        let n = self.inp.below(40);
        let mut aad = self.inp.take(n);
        aad.resize(n, 0xAD);
        aad.reserve(1);
        let params = CK_GCM_PARAMS {
            pIv: iv.as_mut_ptr(),
            ulIvLen: 12,
            ulIvBits: 96,
            pAAD: aad.as_mut_ptr(),
            ulAADLen: n as CK_ULONG,
            ulTagBits: 128,
        };
        m._buffers = vec![iv, aad];
        m._param = vec![0u64; std::mem::size_of::<CK_GCM_PARAMS>() / 8];
        // SAFETY: the buffer is 8-aligned and exactly one CK_GCM_PARAMS long.
        unsafe { m._param.as_mut_ptr().cast::<CK_GCM_PARAMS>().write(params) };
        m.mechanism.pParameter = m._param.as_mut_ptr().cast();
        m.mechanism.ulParameterLen = std::mem::size_of::<CK_GCM_PARAMS>() as CK_ULONG;
        m
    }

    /// A template for the secret key C_EncapsulateKey / C_DecapsulateKey make: empty or the
    /// shape they take, mostly.
    fn secret_template_arg(&mut self) -> TemplateArg {
        match self.inp.u8() % 4 {
            0 => TemplateArg {
                template: Template::default(),
                null: false,
                count: 0,
            },
            1 => {
                let mut t = Template::default();
                t.push_ulong(CKA_CLASS, CKO_SECRET_KEY);
                t.push_ulong(CKA_KEY_TYPE, CKK_AES);
                t.push_ulong(CKA_VALUE_LEN, 32);
                t.push_bool(CKA_ENCRYPT, true);
                t.push_bool(CKA_DECRYPT, true);
                t.push_bool(CKA_TOKEN, self.inp.chance(4));
                let count = t.attrs.len() as CK_ULONG;
                TemplateArg {
                    template: t,
                    null: false,
                    count,
                }
            }
            _ => self.template_arg(),
        }
    }

    /// The two templates of a key pair for this mechanism, as an application writes them
    /// (plus an attribute of any kind sometimes), or anything.
    fn pair_templates(&mut self, mechanism: CK_MECHANISM_TYPE) -> (TemplateArg, TemplateArg) {
        if self.inp.chance(4) {
            return (self.template_arg(), self.template_arg());
        }
        let (mut public, mut private) = (Template::default(), Template::default());
        let token = self.inp.chance(2);
        for t in [&mut public, &mut private] {
            t.push_bool(CKA_TOKEN, token);
            t.push(CKA_LABEL, b"fuzz-pair".to_vec());
        }
        private.push_bool(CKA_PRIVATE, true);
        match mechanism {
            CKM_ML_DSA_KEY_PAIR_GEN | CKM_ML_KEM_KEY_PAIR_GEN => {
                let set = self.inp.pick(&[1, 2, 3, 1, 2, 3, 0, 4]);
                public.push_ulong(CKA_PARAMETER_SET, set);
            }
            CKM_EC_EDWARDS_KEY_PAIR_GEN => {
                let params = self.material_for(CKO_PUBLIC_KEY, CKK_EC_EDWARDS, CKA_EC_PARAMS);
                public.push(CKA_EC_PARAMS, params);
            }
            _ => {}
        }
        if mechanism == CKM_ML_KEM_KEY_PAIR_GEN {
            public.push_bool(CKA_ENCAPSULATE, true);
            private.push_bool(CKA_DECAPSULATE, true);
        } else {
            public.push_bool(CKA_VERIFY, true);
            private.push_bool(CKA_SIGN, true);
        }
        if self.inp.chance(2) {
            private.push_bool(CKA_SENSITIVE, false);
            private.push_bool(CKA_EXTRACTABLE, true);
        }
        if self.inp.chance(4) {
            self.attribute(&mut private, 0);
        }
        if self.inp.chance(4) {
            self.attribute(&mut public, 0);
        }
        let arg = |template: Template| {
            let count = template.attrs.len() as CK_ULONG;
            TemplateArg {
                template,
                null: false,
                count,
            }
        };
        (arg(public), arg(private))
    }

    fn any_mechanism(&mut self) -> Mech {
        let kind = self.mechanism_type();
        self.mechanism(kind)
    }

    fn signature(&mut self) -> Data {
        let mut d = self.data();
        if !self.signatures.is_empty() && !self.inp.u8().is_multiple_of(4) {
            let mut sig = self.inp.pick_clone(&self.signatures.clone());
            if self.inp.chance(3) && !sig.is_empty() {
                let at = self.inp.below(sig.len());
                sig[at] ^= 1;
            }
            d.len = sig.len() as CK_ULONG;
            d.null = false;
            sig.reserve(1);
            d.buf = sig;
        }
        d
    }

    // ---- the calls ----

    fn step(&mut self) {
        match self.inp.u8() % 45 {
            0 => self.open_session(),
            1 => {
                let s = self.session();
                ck!(self, C_CloseSession(s));
            }
            2 => {
                let slot = self.slot();
                ck!(self, C_CloseAllSessions(slot));
            }
            3 => self.login(false),
            4 => {
                let s = self.session();
                ck!(self, C_Logout(s));
            }
            5 => {
                let s = self.session();
                let mut info = CK_SESSION_INFO::default();
                let p = if self.inp.chance(16) {
                    null_mut()
                } else {
                    &mut info
                };
                ck!(self, C_GetSessionInfo(s, p));
            }
            6 => self.create_object(),
            7 => self.copy_object(),
            8 => {
                let (s, o) = (self.session(), self.object());
                ck!(self, C_DestroyObject(s, o));
            }
            9 => {
                let (s, o) = (self.session(), self.object());
                let mut size: CK_ULONG = 0;
                let p = if self.inp.chance(16) {
                    null_mut()
                } else {
                    &mut size
                };
                ck!(self, C_GetObjectSize(s, o, p));
            }
            10 => self.get_attribute_value(),
            11 => {
                let (s, o) = (self.session(), self.object());
                let mut t = self.template_arg();
                let (p, n) = (t.ptr(), t.count);
                ck!(self, C_SetAttributeValue(s, o, p, n));
            }
            12 => {
                let s = self.session();
                let mut t = self.template_arg();
                let (p, n) = (t.ptr(), t.count);
                ck!(self, C_FindObjectsInit(s, p, n));
            }
            13 => self.find_objects(),
            14 => {
                let s = self.session();
                ck!(self, C_FindObjectsFinal(s));
            }
            15 => {
                let s = self.session();
                let mut m = self.any_mechanism();
                let p = m.ptr();
                ck!(self, C_DigestInit(s, p));
            }
            16 => {
                let s = self.session();
                let mut d = self.data();
                let mut out = self.out();
                let (dp, dl, op, ol) = (d.ptr(), d.len, out.ptr(), out.len_ptr());
                let rv = ck!(self, C_Digest(s, dp, dl, op, ol));
                out.check("C_Digest", rv);
            }
            17 => {
                let s = self.session();
                let mut d = self.data();
                let (dp, dl) = (d.ptr(), d.len);
                ck!(self, C_DigestUpdate(s, dp, dl));
            }
            18 => {
                let s = self.session();
                let mut out = self.out();
                let (op, ol) = (out.ptr(), out.len_ptr());
                let rv = ck!(self, C_DigestFinal(s, op, ol));
                out.check("C_DigestFinal", rv);
            }
            19 => {
                let (s, k) = (self.session(), self.object());
                let mut m = self.any_mechanism();
                let p = m.ptr();
                ck!(self, C_SignInit(s, p, k));
            }
            20 => {
                let s = self.session();
                let mut d = self.data();
                let mut out = self.out();
                let (dp, dl, op, ol) = (d.ptr(), d.len, out.ptr(), out.len_ptr());
                let rv = ck!(self, C_Sign(s, dp, dl, op, ol));
                out.check("C_Sign", rv);
                self.keep_signature(&out, rv);
            }
            21 => {
                let s = self.session();
                let mut d = self.data();
                let (dp, dl) = (d.ptr(), d.len);
                ck!(self, C_SignUpdate(s, dp, dl));
            }
            22 => {
                let s = self.session();
                let mut out = self.out();
                let (op, ol) = (out.ptr(), out.len_ptr());
                let rv = ck!(self, C_SignFinal(s, op, ol));
                out.check("C_SignFinal", rv);
                self.keep_signature(&out, rv);
            }
            23 => {
                let (s, k) = (self.session(), self.object());
                let mut m = self.any_mechanism();
                let p = m.ptr();
                ck!(self, C_VerifyInit(s, p, k));
            }
            24 => {
                let s = self.session();
                let mut d = self.data();
                let mut sig = self.signature();
                let (dp, dl, sp, sl) = (d.ptr(), d.len, sig.ptr(), sig.len);
                ck!(self, C_Verify(s, dp, dl, sp, sl));
            }
            25 => {
                let s = self.session();
                let mut d = self.data();
                let (dp, dl) = (d.ptr(), d.len);
                ck!(self, C_VerifyUpdate(s, dp, dl));
            }
            26 => {
                let s = self.session();
                let mut sig = self.signature();
                let (sp, sl) = (sig.ptr(), sig.len);
                ck!(self, C_VerifyFinal(s, sp, sl));
            }
            27 => self.generate_key_pair(),
            28 => self.encapsulate(),
            29 => self.decapsulate(),
            30 => self.random(),
            31 => self.information(),
            32 => self.init_token(),
            33 => {
                let s = self.session();
                let mut pin = self.pin();
                let (p, l) = (pin.ptr(), pin.len);
                if ck!(self, C_InitPIN(s, p, l)) == CKR_OK {
                    self.remember_pin(&pin);
                }
            }
            34 => {
                let s = self.session();
                let mut old = self.pin();
                let mut new = self.pin();
                let (op, ol, np, nl) = (old.ptr(), old.len, new.ptr(), new.len);
                if ck!(self, C_SetPIN(s, op, ol, np, nl)) == CKR_OK {
                    self.remember_pin(&new);
                }
            }
            35 => self.reinitialize(),
            36 => self.login(true),
            37 => self.unsupported(),
            38 => self.sign_and_verify(),
            39 => self.encapsulate_and_decapsulate(),
            40 => self.message_functions(),
            41 => self.generate_key(),
            42 => self.sign_and_verify(),
            43 => self.encrypt_and_decrypt(),
            _ => self.get_attribute_value(),
        }
    }

    fn remember_pin(&mut self, pin: &Data) {
        if !pin.null && self.pins.len() < 8 {
            self.pins.push(pin.buf[..pin.len as usize].to_vec());
        }
    }

    fn keep_signature(&mut self, out: &Out, rv: CK_RV) {
        if rv == CKR_OK && !out.null && !out.null_len && self.signatures.len() < 16 {
            self.signatures.push(out.produced());
        }
    }

    fn open_session(&mut self) {
        let slot = self.slot();
        let flags = match self.inp.u8() % 8 {
            0..=3 => CKF_SERIAL_SESSION | CKF_RW_SESSION,
            4 | 5 => CKF_SERIAL_SESSION,
            6 => CKF_RW_SESSION,
            _ => self.inp.ulong(),
        };
        let mut application = 0u8;
        let app: *mut c_void = if self.inp.chance(4) {
            (&mut application as *mut u8).cast()
        } else {
            null_mut()
        };
        let callback: CK_NOTIFY = if self.inp.chance(4) {
            Some(notify)
        } else {
            None
        };
        let mut s = CK_INVALID_HANDLE;
        let out = if self.inp.chance(32) {
            null_mut()
        } else {
            &mut s as *mut CK_SESSION_HANDLE
        };
        if ck!(self, C_OpenSession(slot, flags, app, callback, out)) == CKR_OK {
            self.know_session(s);
        }
    }

    fn login(&mut self, as_user: bool) {
        let s = self.session();
        let user = match self.inp.u8() % 8 {
            0..=3 => CKU_USER,
            4 | 5 => CKU_SO,
            6 => CKU_CONTEXT_SPECIFIC,
            _ => self.inp.ulong(),
        };
        let mut pin = self.pin();
        let (p, l) = (pin.ptr(), pin.len);
        if as_user {
            let mut name = self.data();
            let (np, nl) = (name.ptr(), name.len);
            ck!(self, C_LoginUser(s, user, p, l, np, nl));
        } else {
            ck!(self, C_Login(s, user, p, l));
        }
    }

    fn create_object(&mut self) {
        let s = self.session();
        let mut t = self.template_arg();
        let mut o = CK_INVALID_HANDLE;
        let out = if self.inp.chance(32) {
            null_mut()
        } else {
            &mut o as *mut CK_OBJECT_HANDLE
        };
        let (p, n) = (t.ptr(), t.count);
        if ck!(self, C_CreateObject(s, p, n, out)) == CKR_OK {
            self.know_object(o);
        }
    }

    fn copy_object(&mut self) {
        let (s, from) = (self.session(), self.object());
        let mut t = self.template_arg();
        let mut o = CK_INVALID_HANDLE;
        let out = if self.inp.chance(32) {
            null_mut()
        } else {
            &mut o as *mut CK_OBJECT_HANDLE
        };
        let (p, n) = (t.ptr(), t.count);
        if ck!(self, C_CopyObject(s, from, p, n, out)) == CKR_OK {
            self.know_object(o);
        }
    }

    /// C_GetAttributeValue with any mix of length queries, short, exact and long buffers; a
    /// CKR_OK answer to length queries is followed by the second call with those lengths.
    fn get_attribute_value(&mut self) {
        let (s, o) = (self.session(), self.object());
        let n = self.inp.below(9);
        let mut bufs: Vec<Option<Vec<u8>>> = Vec::with_capacity(n);
        let mut declared: Vec<CK_ULONG> = Vec::with_capacity(n);
        let mut attrs: Vec<CK_ATTRIBUTE> = Vec::with_capacity(n.max(1));
        for _ in 0..n {
            let kind = self.attribute_type();
            match self.inp.u8() % 4 {
                0 => {
                    let len = self.inp.ulong();
                    bufs.push(None);
                    declared.push(len);
                }
                _ => {
                    let cap = self.inp.length();
                    let len = if self.inp.chance(4) {
                        self.inp.below(cap + 1)
                    } else {
                        cap
                    };
                    bufs.push(Some(vec![CANARY; cap + GUARD]));
                    declared.push(len as CK_ULONG);
                }
            }
            let value = match bufs.last_mut().and_then(|b| b.as_mut()) {
                Some(b) => b.as_mut_ptr().cast(),
                None => null_mut(),
            };
            attrs.push(CK_ATTRIBUTE {
                type_: kind,
                pValue: value,
                ulValueLen: *declared.last().unwrap_or(&0),
            });
        }
        let (ptr, count) = match self.inp.u8() % 32 {
            0 => (null_mut(), n as CK_ULONG),
            1 => (attrs.as_mut_ptr(), self.inp.below(n + 1) as CK_ULONG),
            _ => (attrs.as_mut_ptr(), n as CK_ULONG),
        };
        let rv = ck!(self, C_GetAttributeValue(s, o, ptr, count));
        for (i, buf) in bufs.iter().enumerate() {
            let Some(buf) = buf else { continue };
            let from = (declared[i] as usize).min(buf.len());
            if buf[from..].iter().any(|&b| b != CANARY) {
                finding(format!(
                    "C_GetAttributeValue ({}) wrote past the {} bytes announced for attribute {:#x}",
                    rv_name(rv),
                    declared[i],
                    attrs[i].type_
                ));
            }
            let len = attrs[i].ulValueLen;
            if (i as CK_ULONG) < count
                && !ptr.is_null()
                && len != CK_UNAVAILABLE_INFORMATION
                && len > declared[i]
            {
                finding(format!(
                    "C_GetAttributeValue ({}): attribute {:#x} answered length {len} for a buffer of {}",
                    rv_name(rv),
                    attrs[i].type_,
                    declared[i]
                ));
            }
        }
        // The second call of the convention, with the lengths just announced.
        let all_answered = rv == CKR_OK && !ptr.is_null() && count == n as CK_ULONG && n > 0;
        if !all_answered || attrs.iter().any(|a| a.ulValueLen > 1 << 20) {
            return;
        }
        let mut second: Vec<Vec<u8>> = attrs
            .iter()
            .map(|a| vec![CANARY; a.ulValueLen as usize + GUARD])
            .collect();
        let mut again: Vec<CK_ATTRIBUTE> = attrs
            .iter()
            .zip(second.iter_mut())
            .map(|(a, b)| CK_ATTRIBUTE {
                type_: a.type_,
                pValue: b.as_mut_ptr().cast(),
                ulValueLen: a.ulValueLen,
            })
            .collect();
        let rv2 = ck!(
            self,
            C_GetAttributeValue(s, o, again.as_mut_ptr(), again.len() as CK_ULONG)
        );
        if rv2 != CKR_OK {
            finding(format!(
                "C_GetAttributeValue answered CKR_OK with lengths {:?}, then {} with buffers of those lengths",
                attrs.iter().map(|a| a.ulValueLen).collect::<Vec<_>>(),
                rv_name(rv2)
            ));
        }
        for (a, (b, first)) in again.iter().zip(second.iter().zip(attrs.iter())) {
            let declared = first.ulValueLen as usize;
            if a.ulValueLen != first.ulValueLen || b[declared..].iter().any(|&x| x != CANARY) {
                finding(format!(
                    "C_GetAttributeValue: attribute {:#x} announced {} bytes, then answered {} (or wrote past them)",
                    a.type_, first.ulValueLen, a.ulValueLen
                ));
            }
        }
    }

    fn find_objects(&mut self) {
        let s = self.session();
        let cap = match self.inp.u8() % 4 {
            0 => 0,
            1 => 1,
            _ => self.inp.below(80),
        };
        let mut buf = vec![CANARY_ULONG; cap + 4];
        let max = match self.inp.u8() % 8 {
            0 => self.inp.below(cap + 1),
            _ => cap,
        } as CK_ULONG;
        let null = self.inp.chance(16);
        let ptr = if null { null_mut() } else { buf.as_mut_ptr() };
        let max = if null { self.inp.ulong() } else { max };
        let mut found: CK_ULONG = CANARY_ULONG;
        let fp = if self.inp.chance(32) {
            null_mut()
        } else {
            &mut found as *mut CK_ULONG
        };
        let rv = ck!(self, C_FindObjects(s, ptr, max, fp));
        if null {
            return;
        }
        if buf[max as usize..].iter().any(|&x| x != CANARY_ULONG) {
            finding(format!(
                "C_FindObjects ({}) wrote past the {max} handles announced",
                rv_name(rv)
            ));
        }
        if rv == CKR_OK && !fp.is_null() {
            if found > max {
                finding(format!("C_FindObjects found {found} for at most {max}"));
            }
            for &o in &buf[..found as usize] {
                self.know_object(o);
            }
        }
    }

    fn generate_key_pair(&mut self) {
        let s = self.session();
        let kind = match self.inp.u8() % 8 {
            0 | 1 => CKM_ML_DSA_KEY_PAIR_GEN,
            2 => CKM_ML_KEM_KEY_PAIR_GEN,
            3 => CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN,
            4 => CKM_B4AE_HYBRID_KEY_PAIR_GEN,
            5 => CKM_EC_EDWARDS_KEY_PAIR_GEN,
            _ => self.mechanism_type(),
        };
        let mut m = self.mechanism(kind);
        let (mut public, mut private) = self.pair_templates(kind);
        let (mut a, mut b) = (CK_INVALID_HANDLE, CK_INVALID_HANDLE);
        let pa = if self.inp.chance(32) {
            null_mut()
        } else {
            &mut a as *mut CK_OBJECT_HANDLE
        };
        let pb = if self.inp.chance(32) {
            null_mut()
        } else {
            &mut b as *mut CK_OBJECT_HANDLE
        };
        let mp = m.ptr();
        let (pp, pn, qp, qn) = (public.ptr(), public.count, private.ptr(), private.count);
        if ck!(self, C_GenerateKeyPair(s, mp, pp, pn, qp, qn, pa, pb)) == CKR_OK {
            self.know_object(a);
            self.know_object(b);
        }
    }

    fn encapsulate(&mut self) {
        let (s, k) = (self.session(), self.object());
        let kind = if self.inp.chance(4) {
            self.mechanism_type()
        } else {
            CKM_ML_KEM
        };
        let mut m = self.mechanism(kind);
        let mut t = self.template_arg();
        let mut out = self.out();
        let mut key = CK_INVALID_HANDLE;
        let kp = if self.inp.chance(32) {
            null_mut()
        } else {
            &mut key as *mut CK_OBJECT_HANDLE
        };
        let (mp, tp, tn, op, ol) = (m.ptr(), t.ptr(), t.count, out.ptr(), out.len_ptr());
        let rv = ck!(self, C_EncapsulateKey(s, mp, k, tp, tn, op, ol, kp));
        out.check("C_EncapsulateKey", rv);
        if rv == CKR_OK && !out.null {
            self.know_object(key);
            if self.ciphertexts.len() < 8 {
                self.ciphertexts.push(out.produced());
            }
        }
    }

    fn decapsulate(&mut self) {
        let (s, k) = (self.session(), self.object());
        let kind = if self.inp.chance(4) {
            self.mechanism_type()
        } else {
            CKM_ML_KEM
        };
        let mut m = self.mechanism(kind);
        let mut t = self.template_arg();
        let mut ct = self.data();
        if !self.ciphertexts.is_empty() && self.inp.chance(2) {
            let mut c = self.inp.pick_clone(&self.ciphertexts.clone());
            if self.inp.chance(3) && !c.is_empty() {
                let at = self.inp.below(c.len());
                c[at] ^= 0x80;
            }
            ct.len = c.len() as CK_ULONG;
            ct.null = false;
            c.reserve(1);
            ct.buf = c;
        }
        let mut key = CK_INVALID_HANDLE;
        let kp = if self.inp.chance(32) {
            null_mut()
        } else {
            &mut key as *mut CK_OBJECT_HANDLE
        };
        let (mp, tp, tn, cp, cl) = (m.ptr(), t.ptr(), t.count, ct.ptr(), ct.len);
        if ck!(self, C_DecapsulateKey(s, mp, k, tp, tn, cp, cl, kp)) == CKR_OK {
            self.know_object(key);
        }
    }

    fn random(&mut self) {
        let s = self.session();
        if self.inp.chance(4) {
            let mut d = self.data();
            let (p, l) = (d.ptr(), d.len);
            ck!(self, C_SeedRandom(s, p, l));
            return;
        }
        let cap = self.inp.length();
        let mut buf = vec![CANARY; cap + GUARD];
        let (ptr, len) = match self.inp.u8() % 16 {
            0 => (null_mut(), self.inp.pick(&[0, 1, 64])),
            1 => (buf.as_mut_ptr(), self.inp.below(cap + 1) as CK_ULONG),
            _ => (buf.as_mut_ptr(), cap as CK_ULONG),
        };
        let rv = ck!(self, C_GenerateRandom(s, ptr, len));
        if !ptr.is_null() && buf[len as usize..].iter().any(|&b| b != CANARY) {
            finding(format!(
                "C_GenerateRandom ({}) wrote past {len} bytes",
                rv_name(rv)
            ));
        }
    }

    /// Slot, token, mechanism and interface information.
    fn information(&mut self) {
        let slot = self.slot();
        match self.inp.u8() % 10 {
            0 => {
                let mut info = CK_INFO::default();
                let p = if self.inp.chance(8) {
                    null_mut()
                } else {
                    &mut info
                };
                ck!(self, C_GetInfo(p));
            }
            1 => {
                let mut info = CK_SLOT_INFO::default();
                let p = if self.inp.chance(8) {
                    null_mut()
                } else {
                    &mut info
                };
                ck!(self, C_GetSlotInfo(slot, p));
            }
            2 => {
                let mut info = CK_TOKEN_INFO::default();
                let p = if self.inp.chance(8) {
                    null_mut()
                } else {
                    &mut info
                };
                ck!(self, C_GetTokenInfo(slot, p));
            }
            3 => {
                let kind = self.mechanism_type();
                let mut info = CK_MECHANISM_INFO::default();
                let p = if self.inp.chance(8) {
                    null_mut()
                } else {
                    &mut info
                };
                ck!(self, C_GetMechanismInfo(slot, kind, p));
            }
            4 | 5 => {
                let (cap, declared, null) = self.list_shape();
                let mut list = vec![CANARY_ULONG; cap + 4];
                let mut count = declared;
                let p = if null { null_mut() } else { list.as_mut_ptr() };
                let rv = ck!(self, C_GetMechanismList(slot, p, &mut count));
                self.check_list("C_GetMechanismList", rv, null, declared, count, &list);
            }
            6 => {
                let (cap, declared, null) = self.list_shape();
                let mut list = vec![CANARY_ULONG; cap + 4];
                let mut count = declared;
                let p = if null { null_mut() } else { list.as_mut_ptr() };
                let present = self.inp.u8() & 1;
                let rv = ck!(self, C_GetSlotList(present, p, &mut count));
                self.check_list("C_GetSlotList", rv, null, declared, count, &list);
            }
            7 => {
                let (cap, declared, null) = self.list_shape();
                let mut list = vec![
                    CK_INTERFACE {
                        pInterfaceName: null_mut(),
                        pFunctionList: null_mut(),
                        flags: CANARY_ULONG,
                    };
                    cap + 4
                ];
                let mut count = declared;
                let p = if null { null_mut() } else { list.as_mut_ptr() };
                let rv = ck!(self, C_GetInterfaceList(p, &mut count));
                let flags: Vec<CK_ULONG> = list.iter().map(|i| i.flags).collect();
                self.check_list("C_GetInterfaceList", rv, null, declared, count, &flags);
            }
            8 => {
                let mut name: Vec<u8> = self
                    .inp
                    .pick(&[
                        &b"PKCS 11\0"[..],
                        b"PKCS\0",
                        b"\0",
                        b"PKCS 11 \0",
                        b"PKCS 12\0",
                    ])
                    .to_vec();
                let mut version = match self.inp.u8() % 5 {
                    0 => CK_VERSION { major: 3, minor: 2 },
                    1 => CK_VERSION { major: 3, minor: 0 },
                    2 => CK_VERSION {
                        major: 2,
                        minor: 40,
                    },
                    _ => CK_VERSION {
                        major: self.inp.u8(),
                        minor: self.inp.u8(),
                    },
                };
                let np = if self.inp.chance(2) {
                    null_mut()
                } else {
                    name.as_mut_ptr()
                };
                let vp = if self.inp.chance(2) {
                    null_mut()
                } else {
                    &mut version as *mut CK_VERSION
                };
                let mut out: *mut CK_INTERFACE = null_mut();
                let op = if self.inp.chance(16) {
                    null_mut()
                } else {
                    &mut out as *mut *mut CK_INTERFACE
                };
                let flags = if self.inp.chance(4) {
                    self.inp.ulong()
                } else {
                    0
                };
                ck!(self, C_GetInterface(np, vp, op, flags));
            }
            _ => {
                let mut list: *mut CK_FUNCTION_LIST = null_mut();
                let p = if self.inp.chance(8) {
                    null_mut()
                } else {
                    &mut list as *mut *mut CK_FUNCTION_LIST
                };
                ck!(self, C_GetFunctionList(p));
            }
        }
    }

    /// (capacity, announced count, NULL list) for a two-call list.
    fn list_shape(&mut self) -> (usize, CK_ULONG, bool) {
        let cap = self.inp.below(40);
        match self.inp.u8() % 4 {
            0 => (0, self.inp.ulong(), true),
            1 => (cap, self.inp.below(cap + 1) as CK_ULONG, false),
            _ => (cap, cap as CK_ULONG, false),
        }
    }

    fn check_list(
        &self,
        call: &str,
        rv: CK_RV,
        null: bool,
        declared: CK_ULONG,
        count: CK_ULONG,
        list: &[CK_ULONG],
    ) {
        if null {
            return;
        }
        if list[declared as usize..].iter().any(|&x| x != CANARY_ULONG) {
            finding(format!(
                "{call} ({}) wrote past the {declared} entries announced",
                rv_name(rv)
            ));
        }
        if rv == CKR_OK && count > declared {
            finding(format!(
                "{call}: CKR_OK with {count} entries for {declared}"
            ));
        }
        if rv == CKR_BUFFER_TOO_SMALL && count <= declared {
            finding(format!(
                "{call}: CKR_BUFFER_TOO_SMALL for {declared} but needs {count}"
            ));
        }
    }

    fn init_token(&mut self) {
        let slot = self.slot();
        if self.inp.chance(2) {
            // C_InitToken refuses a token with sessions: close them first, as an application
            // re-initialising its token would.
            ck!(self, C_CloseAllSessions(slot));
        }
        let mut pin = self.pin();
        let mut label = [b' '; 32];
        let text = self.inp.take(32);
        label[..text.len()].copy_from_slice(&text);
        let lp = if self.inp.chance(16) {
            null_mut()
        } else {
            label.as_mut_ptr()
        };
        let (p, l) = (pin.ptr(), pin.len);
        ck!(self, C_InitToken(slot, p, l, lp));
    }

    /// C_Finalize, then C_Initialize with any arguments (the module may end up not initialised:
    /// later calls must say so).
    fn reinitialize(&mut self) {
        let mut reserved = 0u8;
        let rp: *mut c_void = if self.inp.chance(16) {
            (&mut reserved as *mut u8).cast()
        } else {
            null_mut()
        };
        ck!(self, C_Finalize(rp));
        let mut args = CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: 0,
            pReserved: null_mut(),
        };
        let with_args = self.inp.u8() % 4;
        if with_args > 0 {
            args.flags = match self.inp.u8() % 4 {
                0 => 0,
                1 => CKF_OS_LOCKING_OK,
                2 => CKF_LIBRARY_CANT_CREATE_OS_THREADS,
                _ => self.inp.ulong(),
            };
            let callbacks = self.inp.u8();
            if callbacks & 1 != 0 {
                args.CreateMutex = Some(create_mutex);
            }
            if callbacks & 2 != 0 {
                args.DestroyMutex = Some(mutex_op);
            }
            if callbacks & 4 != 0 {
                args.LockMutex = Some(mutex_op);
            }
            if callbacks & 8 != 0 {
                args.UnlockMutex = Some(mutex_op);
            }
        }
        let p: *mut c_void = if with_args > 0 {
            (&mut args as *mut CK_C_INITIALIZE_ARGS).cast()
        } else {
            null_mut()
        };
        ck!(self, C_Initialize(p));
    }

    /// Functions the embedded token does not perform: each must say so, whatever it is given.
    fn unsupported(&mut self) {
        let s = self.session();
        let k = self.object();
        let mut m = self.any_mechanism();
        let mut d = self.data();
        let mut out = self.out();
        let mut t = self.template_arg();
        let mut h = CK_INVALID_HANDLE;
        let (mp, dp, dl, op, ol, tp, tn) = (
            m.ptr(),
            d.ptr(),
            d.len,
            out.ptr(),
            out.len_ptr(),
            t.ptr(),
            t.count,
        );
        let (name, rv) = match self.inp.u8() % 24 {
            0 => ("C_EncryptInit", ck!(self, C_EncryptInit(s, mp, k))),
            1 => ("C_Encrypt", ck!(self, C_Encrypt(s, dp, dl, op, ol))),
            2 => (
                "C_EncryptUpdate",
                ck!(self, C_EncryptUpdate(s, dp, dl, op, ol)),
            ),
            3 => ("C_EncryptFinal", ck!(self, C_EncryptFinal(s, op, ol))),
            4 => ("C_DecryptInit", ck!(self, C_DecryptInit(s, mp, k))),
            5 => ("C_Decrypt", ck!(self, C_Decrypt(s, dp, dl, op, ol))),
            6 => (
                "C_DecryptUpdate",
                ck!(self, C_DecryptUpdate(s, dp, dl, op, ol)),
            ),
            7 => ("C_DecryptFinal", ck!(self, C_DecryptFinal(s, op, ol))),
            8 => ("C_DigestKey", ck!(self, C_DigestKey(s, k))),
            9 => ("C_SignRecoverInit", ck!(self, C_SignRecoverInit(s, mp, k))),
            10 => ("C_SignRecover", ck!(self, C_SignRecover(s, dp, dl, op, ol))),
            11 => (
                "C_VerifyRecoverInit",
                ck!(self, C_VerifyRecoverInit(s, mp, k)),
            ),
            12 => (
                "C_VerifyRecover",
                ck!(self, C_VerifyRecover(s, dp, dl, op, ol)),
            ),
            13 => (
                "C_DigestEncryptUpdate",
                ck!(self, C_DigestEncryptUpdate(s, dp, dl, op, ol)),
            ),
            14 => (
                "C_DecryptVerifyUpdate",
                ck!(self, C_DecryptVerifyUpdate(s, dp, dl, op, ol)),
            ),
            15 => (
                "C_GenerateKey",
                ck!(self, C_GenerateKey(s, mp, tp, tn, &mut h)),
            ),
            16 => {
                let k2 = self.object();
                ("C_WrapKey", ck!(self, C_WrapKey(s, mp, k, k2, op, ol)))
            }
            17 => (
                "C_UnwrapKey",
                ck!(self, C_UnwrapKey(s, mp, k, dp, dl, tp, tn, &mut h)),
            ),
            18 => (
                "C_DeriveKey",
                ck!(self, C_DeriveKey(s, mp, k, tp, tn, &mut h)),
            ),
            19 => (
                "C_GetOperationState",
                ck!(self, C_GetOperationState(s, op, ol)),
            ),
            20 => (
                "C_SetOperationState",
                ck!(self, C_SetOperationState(s, dp, dl, k, 0)),
            ),
            21 => ("C_GetFunctionStatus", ck!(self, C_GetFunctionStatus(s))),
            22 => ("C_CancelFunction", ck!(self, C_CancelFunction(s))),
            _ => {
                let mut slot = 0;
                // Only the non-blocking form: the blocking one may wait for ever.
                (
                    "C_WaitForSlotEvent",
                    ck!(
                        self,
                        C_WaitForSlotEvent(CKF_DONT_BLOCK, &mut slot, null_mut())
                    ),
                )
            }
        };
        out.check(name, rv);
    }

    /// The 3.0 message functions and the 3.2 functions this release does not perform.
    fn message_functions(&mut self) {
        let s = self.session();
        let k = self.object();
        let mut m = self.any_mechanism();
        let mut d = self.data();
        let mut out = self.out();
        let (mp, dp, dl, op, ol) = (m.ptr(), d.ptr(), d.len, out.ptr(), out.len_ptr());
        let mut param = [0u64; 8];
        let pp: *mut c_void = param.as_mut_ptr().cast();
        let pl = self.inp.below(65) as CK_ULONG;
        let mut flags: CK_FLAGS = 0;
        let (name, rv) = match self.inp.u8() % 16 {
            0 => ("C_MessageSignInit", ck!(self, C_MessageSignInit(s, mp, k))),
            1 => (
                "C_SignMessage",
                ck!(self, C_SignMessage(s, pp, pl, dp, dl, op, ol)),
            ),
            2 => (
                "C_SignMessageBegin",
                ck!(self, C_SignMessageBegin(s, pp, pl)),
            ),
            3 => (
                "C_SignMessageNext",
                ck!(self, C_SignMessageNext(s, pp, pl, dp, dl, op, ol)),
            ),
            4 => ("C_MessageSignFinal", ck!(self, C_MessageSignFinal(s))),
            5 => (
                "C_MessageVerifyInit",
                ck!(self, C_MessageVerifyInit(s, mp, k)),
            ),
            6 => (
                "C_VerifyMessage",
                ck!(self, C_VerifyMessage(s, pp, pl, dp, dl, dp, dl)),
            ),
            7 => (
                "C_MessageEncryptInit",
                ck!(self, C_MessageEncryptInit(s, mp, k)),
            ),
            8 => (
                "C_EncryptMessage",
                ck!(self, C_EncryptMessage(s, pp, pl, dp, dl, dp, dl, op, ol)),
            ),
            9 => (
                "C_DecryptMessage",
                ck!(self, C_DecryptMessage(s, pp, pl, dp, dl, dp, dl, op, ol)),
            ),
            10 => (
                "C_VerifySignatureInit",
                ck!(self, C_VerifySignatureInit(s, mp, k, dp, dl)),
            ),
            11 => ("C_VerifySignature", ck!(self, C_VerifySignature(s, dp, dl))),
            12 => (
                "C_VerifySignatureUpdate",
                ck!(self, C_VerifySignatureUpdate(s, dp, dl)),
            ),
            13 => (
                "C_VerifySignatureFinal",
                ck!(self, C_VerifySignatureFinal(s)),
            ),
            14 => {
                let kind = self.inp.ulong();
                (
                    "C_GetSessionValidationFlags",
                    ck!(self, C_GetSessionValidationFlags(s, kind, &mut flags)),
                )
            }
            _ => {
                let f = self.inp.ulong();
                ("C_SessionCancel", ck!(self, C_SessionCancel(s, f)))
            }
        };
        out.check(name, rv);
    }

    /// C_SignInit and C_Sign (or Update/Final) with the two-call convention, then the
    /// signature verified with a key of the input's choosing: reaches the algorithms quickly.
    fn sign_and_verify(&mut self) {
        let s = self.session();
        let kind = self.inp.pick(&[
            CKM_ML_DSA,
            CKM_ML_DSA,
            CKM_HASH_ML_DSA,
            CKM_HASH_ML_DSA_SHA256,
            CKM_HASH_ML_DSA_SHA3_512,
            CKM_HASH_ML_DSA_SHAKE128,
            CKM_B4AE_DILITHIUM5,
            CKM_B4AE_HYBRID,
            CKM_EDDSA,
        ]);
        let key = self.key_for(CKO_PRIVATE_KEY, Self::key_type_of(kind));
        let mut m = self.mechanism(kind);
        let mp = m.ptr();
        if ck!(self, C_SignInit(s, mp, key)) != CKR_OK {
            return;
        }
        let mut d = self.data();
        let multipart = self.inp.chance(3);
        let mut len: CK_ULONG = 0;
        let rv = if multipart {
            let (dp, dl) = (d.ptr(), d.len);
            ck!(self, C_SignUpdate(s, dp, dl));
            ck!(self, C_SignFinal(s, null_mut(), &mut len))
        } else {
            let (dp, dl) = (d.ptr(), d.len);
            ck!(self, C_Sign(s, dp, dl, null_mut(), &mut len))
        };
        if rv != CKR_OK || len > 1 << 16 {
            return;
        }
        let mut out = Out::new(false, len as usize, len);
        let (op, ol) = (out.ptr(), out.len_ptr());
        let rv = if multipart {
            ck!(self, C_SignFinal(s, op, ol))
        } else {
            let (dp, dl) = (d.ptr(), d.len);
            ck!(self, C_Sign(s, dp, dl, op, ol))
        };
        out.check(if multipart { "C_SignFinal" } else { "C_Sign" }, rv);
        if rv == CKR_BUFFER_TOO_SMALL {
            finding(format!(
                "signing announced {len} bytes, then refused a buffer of {len} as too small"
            ));
        }
        self.keep_signature(&out, rv);
        if rv != CKR_OK {
            return;
        }
        let verifier = self.key_for(CKO_PUBLIC_KEY, Self::key_type_of(kind));
        let mut m = self.mechanism(kind);
        let mp = m.ptr();
        if ck!(self, C_VerifyInit(s, mp, verifier)) != CKR_OK {
            return;
        }
        let mut sig = out.produced();
        if self.inp.chance(4) && !sig.is_empty() {
            let at = self.inp.below(sig.len());
            sig[at] ^= 0x10;
        }
        sig.reserve(1);
        let (dp, dl, sp, sl) = (d.ptr(), d.len, sig.as_mut_ptr(), sig.len() as CK_ULONG);
        if multipart {
            ck!(self, C_VerifyUpdate(s, dp, dl));
            ck!(self, C_VerifyFinal(s, sp, sl));
        } else {
            ck!(self, C_Verify(s, dp, dl, sp, sl));
        }
    }

    /// C_GenerateKey (AES on the embedded token) with any template.
    fn generate_key(&mut self) {
        let s = self.session();
        let kind = if self.inp.chance(4) {
            self.mechanism_type()
        } else {
            CKM_AES_KEY_GEN
        };
        let mut m = self.mechanism(kind);
        let mut t = self.template_arg();
        if self.inp.chance(2) {
            let len = self.inp.pick(&[16, 24, 32, 0, 15, 64]);
            t.template.push_ulong(CKA_VALUE_LEN, len);
            t.count = t.template.attrs.len() as CK_ULONG;
        }
        let mut key = CK_INVALID_HANDLE;
        let kp = if self.inp.chance(32) {
            null_mut()
        } else {
            &mut key as *mut CK_OBJECT_HANDLE
        };
        let (mp, tp, tn) = (m.ptr(), t.ptr(), t.count);
        if ck!(self, C_GenerateKey(s, mp, tp, tn, kp)) == CKR_OK {
            self.know_object(key);
        }
    }

    /// C_EncryptInit and C_Encrypt (or Update/Final) with the two-call convention, then the
    /// result decrypted (perhaps altered, perhaps with other parameters or another key).
    fn encrypt_and_decrypt(&mut self) {
        let s = self.session();
        let key = self.key_for(CKO_SECRET_KEY, CKK_AES);
        let kind = if self.inp.chance(8) {
            self.mechanism_type()
        } else {
            CKM_AES_GCM
        };
        let mut m = if kind == CKM_AES_GCM {
            self.gcm()
        } else {
            self.mechanism(kind)
        };
        let mp = m.ptr();
        let mut d = self.data();
        let Some(ciphertext) = self.cipher(s, true, mp, key, &mut d) else {
            return;
        };
        let mut other = if kind == CKM_AES_GCM {
            self.gcm()
        } else {
            self.mechanism(kind)
        };
        let mp = if self.inp.chance(4) { other.ptr() } else { mp };
        let key = if self.inp.chance(4) {
            self.key_for(CKO_SECRET_KEY, CKK_AES)
        } else {
            key
        };
        let mut input = Data {
            len: ciphertext.len() as CK_ULONG,
            buf: ciphertext,
            null: false,
        };
        if self.inp.chance(4) && !input.buf.is_empty() {
            let at = self.inp.below(input.buf.len());
            input.buf[at] ^= 0x01;
        }
        input.buf.reserve(1);
        self.cipher(s, false, mp, key, &mut input);
    }

    /// One encryption or decryption, whole or in parts, with the two-call convention: the
    /// output after CKR_OK.
    fn cipher(
        &mut self,
        s: CK_SESSION_HANDLE,
        encrypt: bool,
        mp: *mut CK_MECHANISM,
        key: CK_OBJECT_HANDLE,
        d: &mut Data,
    ) -> Option<Vec<u8>> {
        let init = if encrypt {
            ck!(self, C_EncryptInit(s, mp, key))
        } else {
            ck!(self, C_DecryptInit(s, mp, key))
        };
        if init != CKR_OK {
            return None;
        }
        let multipart = self.inp.chance(3);
        let (dp, dl) = (d.ptr(), d.len);
        let mut len: CK_ULONG = 0;
        let rv = match (multipart, encrypt) {
            (true, true) => {
                let mut part = Out::new(false, 64, 64);
                let (pp, pl) = (part.ptr(), part.len_ptr());
                let rv = ck!(self, C_EncryptUpdate(s, dp, dl, pp, pl));
                part.check("C_EncryptUpdate", rv);
                ck!(self, C_EncryptFinal(s, null_mut(), &mut len))
            }
            (true, false) => {
                let mut part = Out::new(false, 64, 64);
                let (pp, pl) = (part.ptr(), part.len_ptr());
                let rv = ck!(self, C_DecryptUpdate(s, dp, dl, pp, pl));
                part.check("C_DecryptUpdate", rv);
                ck!(self, C_DecryptFinal(s, null_mut(), &mut len))
            }
            (false, true) => ck!(self, C_Encrypt(s, dp, dl, null_mut(), &mut len)),
            (false, false) => ck!(self, C_Decrypt(s, dp, dl, null_mut(), &mut len)),
        };
        if rv != CKR_OK || len > 1 << 20 {
            return None;
        }
        let mut out = Out::new(false, len as usize, len);
        let (op, ol) = (out.ptr(), out.len_ptr());
        let (name, rv) = match (multipart, encrypt) {
            (true, true) => ("C_EncryptFinal", ck!(self, C_EncryptFinal(s, op, ol))),
            (true, false) => ("C_DecryptFinal", ck!(self, C_DecryptFinal(s, op, ol))),
            (false, true) => ("C_Encrypt", ck!(self, C_Encrypt(s, dp, dl, op, ol))),
            (false, false) => ("C_Decrypt", ck!(self, C_Decrypt(s, dp, dl, op, ol))),
        };
        out.check(name, rv);
        if rv == CKR_BUFFER_TOO_SMALL {
            finding(format!(
                "{name} announced {len} bytes, then refused a buffer of {len} as too small"
            ));
        }
        (rv == CKR_OK).then(|| out.produced())
    }

    /// C_EncapsulateKey with the two-call convention, then C_DecapsulateKey of its ciphertext.
    fn encapsulate_and_decapsulate(&mut self) {
        let s = self.session();
        let public = self.key_for(CKO_PUBLIC_KEY, CKK_ML_KEM);
        let mut m = self.mechanism(CKM_ML_KEM);
        let mut t = self.secret_template_arg();
        let mut len: CK_ULONG = 0;
        let mut key = CK_INVALID_HANDLE;
        let (mp, tp, tn) = (m.ptr(), t.ptr(), t.count);
        if ck!(
            self,
            C_EncapsulateKey(s, mp, public, tp, tn, null_mut(), &mut len, &mut key)
        ) != CKR_OK
            || len > 1 << 16
        {
            return;
        }
        let mut out = Out::new(false, len as usize, len);
        let (op, ol) = (out.ptr(), out.len_ptr());
        let rv = ck!(
            self,
            C_EncapsulateKey(s, mp, public, tp, tn, op, ol, &mut key)
        );
        out.check("C_EncapsulateKey", rv);
        if rv == CKR_BUFFER_TOO_SMALL {
            finding(format!("C_EncapsulateKey announced {len} bytes, then refused a buffer of {len} as too small"));
        }
        if rv != CKR_OK {
            return;
        }
        self.know_object(key);
        let mut ct = out.produced();
        ct.reserve(1);
        if self.ciphertexts.len() < 8 {
            self.ciphertexts.push(ct.clone());
        }
        let private = self.key_for(CKO_PRIVATE_KEY, CKK_ML_KEM);
        let mut t2 = self.secret_template_arg();
        let mut secret = CK_INVALID_HANDLE;
        let (tp2, tn2) = (t2.ptr(), t2.count);
        let (cp, cl) = (ct.as_mut_ptr(), ct.len() as CK_ULONG);
        if ck!(
            self,
            C_DecapsulateKey(s, mp, private, tp2, tn2, cp, cl, &mut secret)
        ) == CKR_OK
        {
            self.know_object(secret);
        }
    }
}

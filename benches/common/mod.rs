//! Shared by the benchmarks: interleaved rounds, loading a PKCS#11 library, raw calls.

#![allow(dead_code)]

use cryptoki_sys::*;
use std::ptr;
use std::time::{Duration, Instant};

pub const ROUNDS: usize = 11;
pub const ROUND_TIME: Duration = Duration::from_millis(400);

/// Ops/s of one round of `op`.
pub fn round(op: &mut impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < ROUND_TIME {
        for _ in 0..20 {
            op();
        }
        n += 20;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// A SoftHSM2 token directory in `dir` with one token (SO PIN 12345678, user PIN `pin`),
/// made the process's `SOFTHSM2_CONF`.
pub fn softhsm_token(dir: &std::path::Path, label: &str, pin: &str) {
    std::fs::create_dir(dir.join("tokens")).expect("tokens dir");
    let conf = dir.join("softhsm2.conf");
    let text = format!(
        "directories.tokendir = {}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n",
        dir.display()
    );
    std::fs::write(&conf, text).expect("softhsm2.conf");
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let status = std::process::Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", label])
        .args(["--so-pin", "12345678", "--pin", pin])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("softhsm2-util (apt-get install softhsm2)");
    assert!(status.success(), "softhsm2-util failed");
}

/// The median time of `n` runs of `op`.
pub fn median_time(n: usize, mut op: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            op();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[n / 2]
}

/// Median ops/s of `a` and of `b` over `ROUNDS` rounds, the two alternating round by round so
/// that both see the same machine.
pub fn side_by_side(mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    for _ in 0..50 {
        a();
        b();
    }
    let (mut ra, mut rb): (Vec<f64>, Vec<f64>) =
        (0..ROUNDS).map(|_| (round(&mut a), round(&mut b))).unzip();
    ra.sort_by(|x, y| x.total_cmp(y));
    rb.sort_by(|x, y| x.total_cmp(y));
    (ra[ROUNDS / 2], rb[ROUNDS / 2])
}

/// As [`side_by_side`], running `cleanup` after every round, outside the timing.
pub fn rounds_with_cleanup(
    mut a: impl FnMut(),
    mut b: impl FnMut(),
    cleanup: &mut impl FnMut(),
) -> (f64, f64) {
    for _ in 0..50 {
        a();
        b();
    }
    cleanup();
    let (mut ra, mut rb): (Vec<f64>, Vec<f64>) = (0..ROUNDS)
        .map(|_| {
            let r = (round(&mut a), round(&mut b));
            cleanup();
            r
        })
        .unzip();
    ra.sort_by(|x, y| x.total_cmp(y));
    rb.sort_by(|x, y| x.total_cmp(y));
    (ra[ROUNDS / 2], rb[ROUNDS / 2])
}

pub fn rv(what: &str, rv: CK_RV) {
    assert_eq!(rv, CKR_OK, "{what} failed: {rv:#x}");
}

pub struct Module {
    lib: libloading::Library,
    pub f: &'static CK_FUNCTION_LIST,
}

impl Module {
    /// An exported function outside the 2.40 table (`C_EncapsulateKey`...).
    pub fn symbol<T: Copy>(&self, name: &[u8]) -> T {
        // SAFETY: the caller names the symbol's true type; the library stays loaded.
        unsafe { *self.lib.get::<T>(name).expect("exported symbol") }
    }
}

/// The release module, or `$B4AE_PKCS11_MODULE`.
pub fn module_path() -> String {
    std::env::var("B4AE_PKCS11_MODULE").unwrap_or_else(|_| {
        format!(
            "{}/target/release/libb4ae_pkcs11.so",
            env!("CARGO_MANIFEST_DIR")
        )
    })
}

/// Loads a PKCS#11 library and takes its 2.40 function table.
pub fn load(path: &str) -> Module {
    // SAFETY: loading our own module, whose initializers are trivial.
    let lib = unsafe { libloading::Library::new(path) }
        .unwrap_or_else(|e| panic!("{path}: {e} (build it first: cargo build --release)"));
    let mut list: CK_FUNCTION_LIST_PTR = ptr::null_mut();
    // SAFETY: the PKCS#11 entry point, with a valid out-pointer.
    unsafe {
        let get: libloading::Symbol<unsafe extern "C" fn(CK_FUNCTION_LIST_PTR_PTR) -> CK_RV> =
            lib.get(b"C_GetFunctionList").expect("C_GetFunctionList");
        rv("C_GetFunctionList", get(&mut list));
    }
    // SAFETY: the table is a static inside the library, which stays loaded.
    let f = unsafe { &*list };
    Module { lib, f }
}

macro_rules! call {
    ($m:expr, $name:ident($($arg:expr),*)) => {
        // SAFETY: arguments follow the PKCS#11 contract for this call.
        unsafe { ($m.f.$name.expect(stringify!($name)))($($arg),*) }
    };
}

pub fn attr<T>(kind: CK_ATTRIBUTE_TYPE, value: &T) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: kind,
        pValue: value as *const T as *mut _,
        ulValueLen: std::mem::size_of::<T>() as CK_ULONG,
    }
}

/// A `CK_MECHANISM`, with an optional parameter structure.
pub fn mechanism<T>(mechanism: CK_MECHANISM_TYPE, param: Option<&mut T>) -> CK_MECHANISM {
    let (ptr, len) = match param {
        Some(p) => (p as *mut T as *mut _, std::mem::size_of::<T>() as CK_ULONG),
        None => (ptr::null_mut(), 0),
    };
    CK_MECHANISM {
        mechanism,
        pParameter: ptr,
        ulParameterLen: len,
    }
}

/// A byte-string attribute.
pub fn bytes(kind: CK_ATTRIBUTE_TYPE, value: &[u8]) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: kind,
        pValue: value.as_ptr() as *mut _,
        ulValueLen: value.len() as CK_ULONG,
    }
}

/// `C_SignInit` + `C_Sign` without a mechanism parameter.
pub fn sign(
    m: &Module,
    s: CK_SESSION_HANDLE,
    mech: CK_MECHANISM_TYPE,
    key: CK_OBJECT_HANDLE,
    data: &[u8],
    out: &mut [u8],
) {
    let mut mech = mechanism::<()>(mech, None);
    let mut len = out.len() as CK_ULONG;
    rv("C_SignInit", call!(m, C_SignInit(s, &mut mech, key)));
    rv(
        "C_Sign",
        call!(
            m,
            C_Sign(
                s,
                data.as_ptr() as *mut _,
                data.len() as CK_ULONG,
                out.as_mut_ptr(),
                &mut len
            )
        ),
    );
}

/// `C_VerifyInit` + `C_Verify` without a mechanism parameter.
pub fn verify(
    m: &Module,
    s: CK_SESSION_HANDLE,
    mech: CK_MECHANISM_TYPE,
    key: CK_OBJECT_HANDLE,
    data: &[u8],
    signature: &[u8],
) {
    let mut mech = mechanism::<()>(mech, None);
    rv("C_VerifyInit", call!(m, C_VerifyInit(s, &mut mech, key)));
    let (d, dl) = (data.as_ptr() as *mut _, data.len() as CK_ULONG);
    let (g, gl) = (signature.as_ptr() as *mut _, signature.len() as CK_ULONG);
    rv("C_Verify", call!(m, C_Verify(s, d, dl, g, gl)));
}

/// Prints rows of (operation, module ops/s, raw ops/s) with their ratio.
pub fn print_table(title: &str, raw_name: &str, rows: &[(&str, f64, f64)]) {
    println!("{title}");
    println!(
        "{:<10} {:>14} {:>18} {:>8}",
        "operation", "module C ABI", raw_name, "ratio"
    );
    for (name, module, raw) in rows {
        println!(
            "{name:<10} {module:>14.0} {raw:>18.0} {:>8.3}",
            module / raw
        );
    }
}

/// A read/write session on `slot`.
pub fn open_rw(m: &Module, slot: CK_SLOT_ID) -> CK_SESSION_HANDLE {
    let mut s = 0;
    let flags = CKF_SERIAL_SESSION | CKF_RW_SESSION;
    rv(
        "C_OpenSession",
        call!(m, C_OpenSession(slot, flags, ptr::null_mut(), None, &mut s)),
    );
    s
}

/// `C_Login`; already logged in (another session of the token) is fine.
pub fn login_as(m: &Module, s: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: &str) {
    let r = call!(
        m,
        C_Login(s, user, pin.as_ptr() as *mut _, pin.len() as CK_ULONG)
    );
    assert!(
        r == CKR_OK || r == CKR_USER_ALREADY_LOGGED_IN,
        "C_Login: {r:#x}"
    );
}

/// `C_GenerateKeyPair` without a mechanism parameter; returns (public, private).
pub fn key_pair(
    m: &Module,
    s: CK_SESSION_HANDLE,
    mechanism_type: CK_MECHANISM_TYPE,
    public: &mut [CK_ATTRIBUTE],
    private: &mut [CK_ATTRIBUTE],
) -> (CK_OBJECT_HANDLE, CK_OBJECT_HANDLE) {
    let (mut p, mut k) = (0, 0);
    let mut mech = mechanism::<()>(mechanism_type, None);
    let (np, nk) = (public.len() as CK_ULONG, private.len() as CK_ULONG);
    let (pp, kp) = (public.as_mut_ptr(), private.as_mut_ptr());
    rv(
        "C_GenerateKeyPair",
        call!(
            m,
            C_GenerateKeyPair(s, &mut mech, pp, np, kp, nk, &mut p, &mut k)
        ),
    );
    (p, k)
}

/// `C_InitToken` on slot 0 (label "bench", SO PIN 12345678), `C_InitPIN(user_pin)`; returns
/// a read/write session logged in as the user. The module is initialized already.
pub fn init_bench_token(m: &Module, user_pin: &str) -> CK_SESSION_HANDLE {
    let mut label = [b' '; 32];
    label[..5].copy_from_slice(b"bench");
    let so = "12345678";
    rv(
        "C_InitToken",
        call!(
            m,
            C_InitToken(0, so.as_ptr() as *mut _, 8, label.as_mut_ptr())
        ),
    );
    let s = open_rw(m, 0);
    login_as(m, s, CKU_SO, so);
    let len = user_pin.len() as CK_ULONG;
    rv(
        "C_InitPIN",
        call!(m, C_InitPIN(s, user_pin.as_ptr() as *mut _, len)),
    );
    rv("C_Logout", call!(m, C_Logout(s)));
    login_as(m, s, CKU_USER, user_pin);
    s
}

/// The release module initialized over one embedded token in `dir` (the test-only KDF cost),
/// not yet initialized as a token.
pub fn embedded_bench_module(dir: &std::path::Path) -> Module {
    let conf = dir.join("b4ae.toml");
    std::fs::write(
        &conf,
        format!(
            "[[token]]\nlabel = \"bench\"\npath = \"{}\"\npin_kdf = \"test-only-fast\"\n",
            dir.join("token").display()
        ),
    )
    .expect("write config");
    std::env::set_var("B4AE_PKCS11_CONF", &conf);
    let m = load(&module_path());
    rv("C_Initialize", call!(m, C_Initialize(ptr::null_mut())));
    m
}

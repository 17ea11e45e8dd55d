//! The embedded store's own costs through the module's C ABI: `C_Login` with the production
//! PIN KDF (Argon2id, 64 MiB, 3 passes), and opening a token of 10,000 objects (C_Initialize,
//! a session, the login that reads and authenticates every object, C_Finalize).
//!
//! `cargo bench --bench store` measures the release module, or `$B4AE_PKCS11_MODULE`: run it
//! against two builds to compare them. Each figure is the median of several rounds.

use cryptoki_sys::*;
use std::path::Path;
use std::ptr;
use std::time::{Duration, Instant};

#[macro_use]
mod common;

use common::*;

const SO_PIN: &[u8] = b"so-pin-bench-0000";
const USER_PIN: &[u8] = b"user-pin-bench-1111";
const OBJECTS: usize = 10_000;
const LOGINS: usize = 9;
const OPENS: usize = 7;

fn pin_ptr(pin: &[u8]) -> (*mut CK_UTF8CHAR, CK_ULONG) {
    (pin.as_ptr() as *mut _, pin.len() as CK_ULONG)
}

fn open_rw(m: &Module, slot: CK_SLOT_ID) -> CK_SESSION_HANDLE {
    let mut s: CK_SESSION_HANDLE = 0;
    let flags = CKF_SERIAL_SESSION | CKF_RW_SESSION;
    rv(
        "C_OpenSession",
        call!(m, C_OpenSession(slot, flags, ptr::null_mut(), None, &mut s)),
    );
    s
}

fn login(m: &Module, s: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: &[u8]) {
    let (p, l) = pin_ptr(pin);
    rv("C_Login", call!(m, C_Login(s, user, p, l)));
}

/// C_InitToken, C_InitPIN; leaves a R/W session logged in as the user.
fn init_token(m: &Module, slot: CK_SLOT_ID) -> CK_SESSION_HANDLE {
    let mut label = [b' '; 32];
    label[..5].copy_from_slice(b"bench");
    let (so, so_len) = pin_ptr(SO_PIN);
    rv(
        "C_InitToken",
        call!(m, C_InitToken(slot, so, so_len, label.as_mut_ptr())),
    );
    let s = open_rw(m, slot);
    login(m, s, CKU_SO, SO_PIN);
    let (p, l) = pin_ptr(USER_PIN);
    rv("C_InitPIN", call!(m, C_InitPIN(s, p, l)));
    rv("C_Logout", call!(m, C_Logout(s)));
    login(m, s, CKU_USER, USER_PIN);
    s
}

/// Half private AES keys, half public data objects: both kinds of row are authenticated.
fn fill(m: &Module, s: CK_SESSION_HANDLE) {
    let yes: CK_BBOOL = CK_TRUE;
    let no: CK_BBOOL = CK_FALSE;
    let secret: CK_OBJECT_CLASS = CKO_SECRET_KEY;
    let data: CK_OBJECT_CLASS = CKO_DATA;
    let aes: CK_KEY_TYPE = CKK_AES;
    let value = [7u8; 32];
    for n in 0..OBJECTS {
        let label = format!("object-{n:05}");
        let mut object = 0;
        if n % 2 == 0 {
            let mut t = [
                attr(CKA_CLASS, &secret),
                attr(CKA_KEY_TYPE, &aes),
                attr(CKA_TOKEN, &yes),
                attr(CKA_PRIVATE, &yes),
                attr(CKA_ENCRYPT, &yes),
                bytes(CKA_LABEL, label.as_bytes()),
                bytes(CKA_VALUE, &value),
            ];
            let n = t.len() as CK_ULONG;
            rv(
                "C_CreateObject",
                call!(m, C_CreateObject(s, t.as_mut_ptr(), n, &mut object)),
            );
        } else {
            let mut t = [
                attr(CKA_CLASS, &data),
                attr(CKA_TOKEN, &yes),
                attr(CKA_PRIVATE, &no),
                bytes(CKA_LABEL, label.as_bytes()),
                bytes(CKA_VALUE, label.as_bytes()),
            ];
            let n = t.len() as CK_ULONG;
            rv(
                "C_CreateObject",
                call!(m, C_CreateObject(s, t.as_mut_ptr(), n, &mut object)),
            );
        }
    }
}

fn count_objects(m: &Module, s: CK_SESSION_HANDLE) -> usize {
    rv(
        "C_FindObjectsInit",
        call!(m, C_FindObjectsInit(s, ptr::null_mut(), 0)),
    );
    let mut found = vec![0; OBJECTS + 16];
    let mut n: CK_ULONG = 0;
    let max = found.len() as CK_ULONG;
    rv(
        "C_FindObjects",
        call!(m, C_FindObjects(s, found.as_mut_ptr(), max, &mut n)),
    );
    rv("C_FindObjectsFinal", call!(m, C_FindObjectsFinal(s)));
    n as usize
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("b4ae.toml");
    let token = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(
        &conf,
        format!(
            "[[token]]\nlabel = \"big\"\npath = \"{}\"\npin_kdf = \"test-only-fast\"\n\n\
             [[token]]\nlabel = \"login\"\npath = \"{}\"\npin_kdf = \"argon2id\"\n",
            token("big"),
            token("login")
        ),
    )
    .expect("write config");
    std::env::set_var("B4AE_PKCS11_CONF", &conf);
    let path = module_path();
    println!("module: {path}");
    let m = load(&path);

    rv("C_Initialize", call!(m, C_Initialize(ptr::null_mut())));
    let s = init_token(&m, 0);
    let start = Instant::now();
    fill(&m, s);
    let fill_time = start.elapsed();
    assert_eq!(count_objects(&m, s), OBJECTS);
    let s1 = init_token(&m, 1);
    rv("C_Logout", call!(m, C_Logout(s1)));
    let logins: Vec<Duration> = (0..LOGINS)
        .map(|_| {
            let start = Instant::now();
            login(&m, s1, CKU_USER, USER_PIN);
            let t = start.elapsed();
            rv("C_Logout", call!(m, C_Logout(s1)));
            t
        })
        .collect();
    rv("C_Finalize", call!(m, C_Finalize(ptr::null_mut())));

    let opens: Vec<Duration> = (0..OPENS)
        .map(|_| {
            let start = Instant::now();
            rv("C_Initialize", call!(m, C_Initialize(ptr::null_mut())));
            let s = open_rw(&m, 0);
            login(&m, s, CKU_USER, USER_PIN);
            let n = count_objects(&m, s);
            rv("C_Finalize", call!(m, C_Finalize(ptr::null_mut())));
            let t = start.elapsed();
            assert_eq!(n, OBJECTS);
            t
        })
        .collect();
    let public_opens: Vec<Duration> = (0..OPENS)
        .map(|_| {
            let start = Instant::now();
            rv("C_Initialize", call!(m, C_Initialize(ptr::null_mut())));
            let s = open_rw(&m, 0);
            let n = count_objects(&m, s);
            rv("C_Finalize", call!(m, C_Finalize(ptr::null_mut())));
            let t = start.elapsed();
            assert_eq!(n, OBJECTS / 2);
            t
        })
        .collect();
    let store = Path::new(&token("big")).to_path_buf();
    let size: u64 = walk_size(&store);
    println!(
        "filling {OBJECTS} objects: {:.1} s ({size} bytes on disk)",
        fill_time.as_secs_f64()
    );
    println!(
        "C_Login, production KDF, median of {LOGINS}: {:.1} ms",
        median(logins).as_secs_f64() * 1e3
    );
    println!(
        "open a token of {OBJECTS} objects and log in (test-only KDF), median of {OPENS}: {:.1} ms",
        median(opens).as_secs_f64() * 1e3
    );
    println!(
        "open it without login (public objects only), median of {OPENS}: {:.1} ms",
        median(public_opens).as_secs_f64() * 1e3
    );
    offline_guessing();
}

/// What a copy of the file buys an attacker: one production Argon2id derivation per guess
/// (the wrap is checked with one AES-GCM open, negligible beside it).
fn offline_guessing() {
    use b4ae_pkcs11::backend::embedded::KdfCost;
    use b4ae_pkcs11::config::PinKdf;
    let cost = KdfCost::for_setting(PinKdf::Argon2id);
    let params = argon2::Params::new(cost.memory_kib, cost.passes, 1, Some(32)).expect("params");
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let times: Vec<Duration> = (0..LOGINS)
        .map(|n| {
            let mut out = [0u8; 32];
            let start = Instant::now();
            let pin = format!("guess-{n:04}");
            argon
                .hash_password_into(pin.as_bytes(), b"saltsaltsaltsalt", &mut out)
                .expect("argon2id");
            start.elapsed()
        })
        .collect();
    let guess = median(times).as_secs_f64();
    println!(
        "one Argon2id guess ({} MiB, {} passes, 1 lane), median of {LOGINS}: {:.1} ms per core",
        cost.memory_kib / 1024,
        cost.passes,
        guess * 1e3
    );
    let day = 86_400.0;
    for (what, space) in [
        ("4 digits (the earlier minimum)", 1e4),
        ("8 digits", 1e8),
        ("8 characters of [a-z0-9]", 36f64.powi(8)),
        ("8 characters of printable ASCII", 95f64.powi(8)),
    ] {
        let core_days = space * guess / day;
        println!(
            "  exhausting {what} ({space:.2e} PINs): {core_days:.3e} core-days \
             ({:.3e} days on 1,000 cores)",
            core_days / 1000.0
        );
    }
}

fn walk_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => walk_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

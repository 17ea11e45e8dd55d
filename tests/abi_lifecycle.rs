//! The module's lifecycle under a careful user's worst cases, on both backends (an embedded
//! token and a token over SoftHSM2): threads racing `C_Initialize` in fresh processes,
//! `C_Finalize` while other threads are inside forwarded and local signing calls, and a forked
//! child that must start logged out of the real HSM. Every scenario runs in processes of its
//! own, since each initializes and finalizes the module.

#[macro_use]
mod common;
mod forward_common;

use common::*;
use cryptoki_sys::*;
use forward_common::{softhsm_init_token_with, write_softhsm_conf, HSM_PIN, P256, SOFTHSM_LIB};
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::Duration;

const EMBEDDED_SLOT: CK_SLOT_ID = 0;
const HSM_SLOT: CK_SLOT_ID = 1;
const HSM_LABEL: &str = "lifecycle";

/// A configuration with one embedded token (initialized, user PIN set) and one token over a
/// fresh SoftHSM2 token; returns the directory and the environment children need.
fn prepare(prefix: &str) -> (tempfile::TempDir, Vec<(String, String)>) {
    let dir = temp_dir(prefix);
    let softhsm_conf = dir.path().join("softhsm2.conf");
    std::fs::create_dir_all(dir.path().join("softhsm")).expect("token directory");
    write_softhsm_conf(&softhsm_conf, &dir.path().join("softhsm"));
    // Tests run as threads of one process: the environment is not theirs to change.
    softhsm_init_token_with(Some(&softhsm_conf), HSM_LABEL);
    let mut conf = config_toml(dir.path(), 1, None);
    conf += &format!(
        "[[token]]\nlabel = \"HSM\"\nbackend = \"pkcs11\"\nlibrary = \"{SOFTHSM_LIB}\"\ntoken_label = \"{HSM_LABEL}\"\n"
    );
    let conf_path = dir.path().join("b4ae-pkcs11.toml");
    std::fs::write(&conf_path, conf).expect("configuration");
    let env = vec![
        (
            forward_common::SOFTHSM_CONF_VAR.to_string(),
            softhsm_conf.display().to_string(),
        ),
        (CONF_VAR.to_string(), conf_path.display().to_string()),
    ];
    (dir, env)
}

fn conf_of(env: &[(String, String)]) -> PathBuf {
    let conf = env.iter().find(|(k, _)| k == CONF_VAR).expect("conf");
    PathBuf::from(&conf.1)
}

fn child(test: &str, env: &[(String, String)]) -> String {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    run_child(test, &conf_of(env), &pairs)
}

/// Initializes the embedded token of slot 0 through the module (C_InitToken, C_InitPIN).
fn init_embedded_token() {
    let mut label = [b' '; 32];
    label[..4].copy_from_slice(b"life");
    let (so, so_len) = text_arg(SO_PIN);
    assert_rv(
        ck!(C_InitToken(EMBEDDED_SLOT, so, so_len, label.as_mut_ptr())),
        CKR_OK,
    );
    let h = open_session(Slot(EMBEDDED_SLOT), RW).expect("session");
    assert_rv(login(h, CKU_SO, SO_PIN), CKR_OK);
    assert_rv(init_pin(h, USER_PIN), CKR_OK);
    assert_rv(close_session(h), CKR_OK);
}

#[allow(non_snake_case)]
fn Slot(id: CK_SLOT_ID) -> cryptoki::slot::Slot {
    cryptoki::slot::Slot::try_from(id).expect("slot")
}

/// A logged-in R/W session on `slot`.
fn user_session_raw(slot: CK_SLOT_ID) -> CK_SESSION_HANDLE {
    let h = open_session(Slot(slot), RW).expect("session");
    let pin = if slot == HSM_SLOT { HSM_PIN } else { USER_PIN };
    assert_rv(login(h, CKU_USER, pin), CKR_OK);
    h
}

/// A P-256 session key pair made inside SoftHSM2 through the module: (public, private).
fn ec_pair(h: CK_SESSION_HANDLE) -> (CK_OBJECT_HANDLE, CK_OBJECT_HANDLE) {
    let yes: CK_BBOOL = CK_TRUE;
    let no: CK_BBOOL = CK_FALSE;
    let mut public = [
        raw_bytes(CKA_EC_PARAMS, P256),
        raw_attr(CKA_TOKEN, &no),
        raw_attr(CKA_VERIFY, &yes),
    ];
    let mut private = [raw_attr(CKA_TOKEN, &no), raw_attr(CKA_SIGN, &yes)];
    let mut m = mech(CKM_EC_KEY_PAIR_GEN);
    let (mut p, mut s) = (CK_INVALID_HANDLE, CK_INVALID_HANDLE);
    assert_rv(
        ck!(C_GenerateKeyPair(
            h,
            &mut m,
            public.as_mut_ptr(),
            public.len() as CK_ULONG,
            private.as_mut_ptr(),
            private.len() as CK_ULONG,
            &mut p,
            &mut s
        )),
        CKR_OK,
    );
    (p, s)
}

/// An ML-DSA-65 key pair (token objects when `token`) labelled `label`: (public, private).
fn mldsa_pair(
    h: CK_SESSION_HANDLE,
    label: &str,
    token: bool,
) -> (CK_OBJECT_HANDLE, CK_OBJECT_HANDLE) {
    let yes: CK_BBOOL = CK_TRUE;
    let on_token: CK_BBOOL = if token { CK_TRUE } else { CK_FALSE };
    let set: CK_ULONG = CKP_ML_DSA_65;
    let mut public = [
        raw_attr(CKA_PARAMETER_SET, &set),
        raw_attr(CKA_TOKEN, &on_token),
        raw_attr(CKA_VERIFY, &yes),
        raw_bytes(CKA_LABEL, label.as_bytes()),
    ];
    let mut private = [
        raw_attr(CKA_TOKEN, &on_token),
        raw_attr(CKA_PRIVATE, &yes),
        raw_attr(CKA_SIGN, &yes),
        raw_bytes(CKA_LABEL, label.as_bytes()),
    ];
    let mut m = mech(CKM_ML_DSA_KEY_PAIR_GEN);
    let (mut p, mut s) = (CK_INVALID_HANDLE, CK_INVALID_HANDLE);
    assert_rv(
        ck!(C_GenerateKeyPair(
            h,
            &mut m,
            public.as_mut_ptr(),
            public.len() as CK_ULONG,
            private.as_mut_ptr(),
            private.len() as CK_ULONG,
            &mut p,
            &mut s
        )),
        CKR_OK,
    );
    (p, s)
}

/// C_SignInit + C_Sign with `mechanism` (no parameter) over 32 bytes.
fn sign_once(h: CK_SESSION_HANDLE, mechanism: CK_MECHANISM_TYPE, key: CK_OBJECT_HANDLE) -> CK_RV {
    let mut m = mech(mechanism);
    let rv = ck!(C_SignInit(h, &mut m, key));
    if rv != CKR_OK {
        return rv;
    }
    let mut data = [7u8; 32];
    let mut signature = vec![0u8; 8192];
    let mut len = signature.len() as CK_ULONG;
    ck!(C_Sign(
        h,
        data.as_mut_ptr(),
        32,
        signature.as_mut_ptr(),
        &mut len
    ))
}

// ---------------------------------------------------------------------------------------------
// Point 1: two threads calling C_Initialize at once

const RACE_PROCESSES: usize = 100;

#[test]
fn initialize_raced_by_two_threads_in_fresh_processes() {
    let name = test_name!();
    if is_child(name) {
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    ck!(C_Initialize(null()))
                })
            })
            .collect();
        let mut rvs: Vec<CK_RV> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        rvs.sort_unstable();
        assert_eq!(
            rvs,
            vec![CKR_OK, CKR_CRYPTOKI_ALREADY_INITIALIZED],
            "exactly one C_Initialize wins"
        );
        // The winner's module is whole: both backends answer.
        let mut count: CK_ULONG = 0;
        assert_rv(ck!(C_GetSlotList(CK_TRUE, null(), &mut count)), CKR_OK);
        assert_eq!(count, 2);
        let mut info = CK_TOKEN_INFO::default();
        assert_rv(ck!(C_GetTokenInfo(HSM_SLOT, &mut info)), CKR_OK);
        let h = open_session(Slot(HSM_SLOT), RW).expect("a session on the HSM slot");
        let mut random = [0u8; 16];
        assert_rv(ck!(C_GenerateRandom(h, random.as_mut_ptr(), 16)), CKR_OK);
        assert_rv(ck!(C_Finalize(null())), CKR_OK);
        return;
    }
    let (_dir, env) = prepare("b4ae-init-race-");
    let env = Arc::new(env);
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let env = env.clone();
            std::thread::spawn(move || {
                for _ in 0..RACE_PROCESSES / 2 {
                    child(name, &env);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("every racing process passed");
    }
}

// ---------------------------------------------------------------------------------------------
// Point 2: C_Finalize while other threads are inside signing calls

const FINALIZE_ROUNDS: usize = 40;

#[test]
fn finalize_while_other_threads_sign() {
    let name = test_name!();
    if !is_child(name) {
        let (_dir, env) = prepare("b4ae-finalize-");
        child(name, &env);
        return;
    }
    assert_rv(ck!(C_Initialize(null())), CKR_OK);
    init_embedded_token();
    assert_rv(ck!(C_Finalize(null())), CKR_OK);
    for round in 0..FINALIZE_ROUNDS {
        assert_rv(ck!(C_Initialize(null())), CKR_OK);
        let hsm = user_session_raw(HSM_SLOT);
        let (_, ec) = ec_pair(hsm);
        let embedded = user_session_raw(EMBEDDED_SLOT);
        let (_, ml) = mldsa_pair(embedded, "finalize", false);
        let started = Arc::new(Barrier::new(3));
        let signers: Vec<_> = [(hsm, CKM_ECDSA, ec), (embedded, CKM_ML_DSA, ml)]
            .into_iter()
            .map(|(h, m, key)| {
                let started = started.clone();
                std::thread::spawn(move || {
                    started.wait();
                    let mut signatures = 0u32;
                    loop {
                        match sign_once(h, m, key) {
                            CKR_OK => signatures += 1,
                            rv => return (rv, signatures),
                        }
                    }
                })
            })
            .collect();
        started.wait();
        std::thread::sleep(Duration::from_micros(200 + 300 * (round as u64 % 7)));
        assert_rv(ck!(C_Finalize(null())), CKR_OK);
        for signer in signers {
            let (rv, _) = signer.join().expect("a signing thread crashed");
            assert_rv_in(
                rv,
                &[CKR_CRYPTOKI_NOT_INITIALIZED, CKR_SESSION_HANDLE_INVALID],
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Point 3: a forked child starts logged out of the HSM

/// The forked child's work: 0 on success, else the number of the step that failed.
fn forked_child_checks() -> i32 {
    if ck!(C_Initialize(null())) != CKR_OK {
        return 1;
    }
    let Ok(h) = open_session(Slot(HSM_SLOT), RW) else {
        return 2;
    };
    if !session_info(h).is_ok_and(|info| info.state == CKS_RW_PUBLIC_SESSION) {
        return 3;
    }
    // Without a login the parent's private key is neither found nor usable.
    let class: CK_OBJECT_CLASS = CKO_PRIVATE_KEY;
    let mut template = [raw_attr(CKA_CLASS, &class), raw_bytes(CKA_LABEL, b"forked")];
    if ck!(C_FindObjectsInit(h, template.as_mut_ptr(), 2)) != CKR_OK {
        return 4;
    }
    let mut found = [CK_INVALID_HANDLE; 4];
    let mut n: CK_ULONG = 0;
    if ck!(C_FindObjects(h, found.as_mut_ptr(), 4, &mut n)) != CKR_OK || n != 0 {
        return 5;
    }
    let _ = ck!(C_FindObjectsFinal(h));
    let parent_key: CK_OBJECT_HANDLE = std::env::var("B4AE_PARENT_KEY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if sign_once(h, CKM_ML_DSA, parent_key) == CKR_OK {
        return 6;
    }
    // With its own login the child finds and uses the key.
    if login(h, CKU_USER, HSM_PIN) != CKR_OK {
        return 7;
    }
    if ck!(C_FindObjectsInit(h, template.as_mut_ptr(), 2)) != CKR_OK {
        return 8;
    }
    if ck!(C_FindObjects(h, found.as_mut_ptr(), 4, &mut n)) != CKR_OK || n != 1 {
        return 9;
    }
    let _ = ck!(C_FindObjectsFinal(h));
    if sign_once(h, CKM_ML_DSA, found[0]) != CKR_OK {
        return 10;
    }
    if ck!(C_Finalize(null())) != CKR_OK {
        return 11;
    }
    0
}

#[test]
fn a_forked_child_starts_logged_out_of_the_hsm() {
    let name = test_name!();
    if !is_child(name) {
        let (_dir, env) = prepare("b4ae-fork-login-");
        child(name, &env);
        return;
    }
    assert_rv(ck!(C_Initialize(null())), CKR_OK);
    let h = user_session_raw(HSM_SLOT);
    let (_, key) = mldsa_pair(h, "forked", true);
    assert_rv(sign_once(h, CKM_ML_DSA, key), CKR_OK);
    std::env::set_var("B4AE_PARENT_KEY", key.to_string());
    // SAFETY: the child only calls the module, then leaves with _exit().
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = forked_child_checks();
        // SAFETY: ends the forked child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the forked child failed at step {} (status {status:#x})",
        libc::WEXITSTATUS(status)
    );
    // The parent is still logged in and signs.
    assert!(session_info(h).is_ok_and(|i| i.state == CKS_RW_USER_FUNCTIONS));
    assert_rv(sign_once(h, CKM_ML_DSA, key), CKR_OK);
    assert_rv(ck!(C_Finalize(null())), CKR_OK);
}

// ---------------------------------------------------------------------------------------------
// Point 6: pReserved that is not a configuration string

fn initialize_with_reserved(reserved: *mut std::ffi::c_void) -> CK_RV {
    let mut args = os_locking_args(reserved);
    ck!(C_Initialize(
        (&mut args as *mut CK_C_INITIALIZE_ARGS).cast()
    ))
}

#[test]
fn initialize_refuses_a_reserved_pointer_that_is_not_a_string() {
    let name = test_name!();
    if !is_child(name) {
        let (_dir, env) = prepare("b4ae-reserved-");
        child(name, &env);
        return;
    }
    // A conformance suite's (void*)1, and an address that is not mapped at all.
    assert_rv(
        initialize_with_reserved(std::ptr::without_provenance_mut(1)),
        CKR_ARGUMENTS_BAD,
    );
    // SAFETY: maps one page and unmaps it again, leaving an address known to be unmapped.
    let unmapped = unsafe {
        let page = libc::mmap(
            null(),
            4096,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(page, libc::MAP_FAILED);
        libc::munmap(page, 4096);
        page
    };
    assert_rv(initialize_with_reserved(unmapped), CKR_ARGUMENTS_BAD);
    // A string that ends exactly at the end of a readable page, followed by nothing mapped.
    // SAFETY: two fresh pages, the second unmapped; the string's NUL is the first page's last
    // byte.
    let edge = unsafe {
        let pages = libc::mmap(
            null(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(pages, libc::MAP_FAILED);
        libc::munmap(pages.cast::<u8>().add(4096).cast(), 4096);
        std::ptr::write_bytes(pages.cast::<u8>(), b'x', 4096);
        pages
    };
    assert_rv(initialize_with_reserved(edge), CKR_ARGUMENTS_BAD);
    // NSS's module parameters are not a configuration of this module.
    let mut nss = *b"configdir='sql:/tmp/nssdb' certPrefix='' keyPrefix='' secmod='secmod.db'\0";
    assert_rv(
        initialize_with_reserved(nss.as_mut_ptr().cast()),
        CKR_ARGUMENTS_BAD,
    );
    // Nothing was initialized by the refusals; a proper call still works.
    assert_rv(ck!(C_Finalize(null())), CKR_CRYPTOKI_NOT_INITIALIZED);
    assert_rv(initialize_with_reserved(null()), CKR_OK);
    assert_rv(ck!(C_Finalize(null())), CKR_OK);
}

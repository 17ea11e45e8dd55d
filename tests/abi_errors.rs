//! Error handling at the raw C ABI: initialisation rules, configuration errors, NULL pointers,
//! absurd counts and lengths, unknown handles, unsupported functions and fork().

#[macro_use]
mod common;

use std::ffi::{c_void, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use cryptoki::slot::Slot;
use cryptoki_sys::*;

const SLOT_NULL_POINTERS: usize = 0;
const SLOT_BAD_HANDLES: usize = 1;
const SLOT_UNSUPPORTED: usize = 2;

const BOGUS: CK_ULONG = 0xDEAD_BEEF;
const HUGE: CK_ULONG = 1 << 32;

fn initialize_args(flags: CK_FLAGS, reserved: *mut c_void) -> CK_C_INITIALIZE_ARGS {
    CK_C_INITIALIZE_ARGS {
        CreateMutex: None,
        DestroyMutex: None,
        LockMutex: None,
        UnlockMutex: None,
        flags,
        pReserved: reserved,
    }
}

fn initialize_with(mut args: CK_C_INITIALIZE_ARGS) -> CK_RV {
    ck!(C_Initialize(
        (&mut args as *mut CK_C_INITIALIZE_ARGS).cast()
    ))
}

/// C_Initialize with a configuration string in pReserved (p11-kit's x-init-reserved).
fn initialize_with_reserved(config: &str) -> CK_RV {
    let config = CString::new(config).expect("no NUL in the configuration");
    initialize_with(initialize_args(
        CKF_OS_LOCKING_OK,
        config.as_ptr().cast_mut().cast(),
    ))
}

fn slot_count() -> CK_ULONG {
    let mut count: CK_ULONG = 0;
    assert_ck!(CKR_OK; C_GetSlotList(CK_FALSE, null(), &mut count));
    count
}

#[track_caller]
fn assert_not_initialized() {
    let mut info = CK_INFO::default();
    assert_ck!(CKR_CRYPTOKI_NOT_INITIALIZED; C_GetInfo(&mut info));
}

/// Runs the calling test in a fresh process with `tokens` embedded tokens; true in that child.
#[track_caller]
fn in_fresh_process(name: &str, tokens: usize) -> bool {
    if is_child(name) {
        return true;
    }
    let config = TestConfig::new(tokens, None);
    run_child(name, &config.path, &[]);
    false
}

// ---------------------------------------------------------------------------------------------
// Initialisation, each in a fresh process

#[test]
fn every_call_before_c_initialize_is_refused() {
    if !in_fresh_process(test_name!(), 1) {
        return;
    }
    let (pin, pin_len) = text_arg(USER_PIN);
    let label = padded("x", 32);
    let label = label.as_ptr().cast_mut();
    let mut info = CK_INFO::default();
    let mut slot_info = CK_SLOT_INFO::default();
    let mut token = CK_TOKEN_INFO::default();
    let mut mechanism = CK_MECHANISM_INFO::default();
    let mut session_info = CK_SESSION_INFO::default();
    let mut count: CK_ULONG = 0;
    let mut session = CK_INVALID_HANDLE;
    let mut random = [0u8; 16];
    let mut sha256 = mech(CKM_SHA256);
    assert_ck!(CKR_CRYPTOKI_NOT_INITIALIZED;
        C_GetInfo(&mut info),
        C_GetSlotList(CK_FALSE, null(), &mut count),
        C_GetSlotInfo(0, &mut slot_info),
        C_GetTokenInfo(0, &mut token),
        C_GetMechanismList(0, null(), &mut count),
        C_GetMechanismInfo(0, CKM_SHA256, &mut mechanism),
        C_InitToken(0, pin, pin_len, label),
        C_OpenSession(0, RO, null(), None, &mut session),
        C_CloseSession(1),
        C_CloseAllSessions(0),
        C_GetSessionInfo(1, &mut session_info),
        C_Login(1, CKU_USER, pin, pin_len),
        C_Logout(1),
        C_FindObjectsInit(1, null(), 0),
        C_DigestInit(1, &mut sha256),
        C_GenerateRandom(1, random.as_mut_ptr(), 16),
        C_Finalize(null()),
    );

    // Function lists and interfaces are available before C_Initialize.
    let mut list: *mut CK_FUNCTION_LIST = null();
    assert_ck!(CKR_OK; C_GetFunctionList(&mut list), C_GetInterfaceList(null(), &mut count));
    assert_ck!(CKR_OK; C_Initialize(null()), C_GetInfo(&mut info), C_Finalize(null()));
}

#[test]
fn initialize_twice_then_finalize_twice() {
    if !in_fresh_process(test_name!(), 2) {
        return;
    }
    let os_locking = || initialize_args(CKF_OS_LOCKING_OK, null());
    assert_ck!(CKR_OK; C_Initialize(null()));
    assert_ck!(CKR_CRYPTOKI_ALREADY_INITIALIZED; C_Initialize(null()));
    assert_rv(
        initialize_with(os_locking()),
        CKR_CRYPTOKI_ALREADY_INITIALIZED,
    );
    assert_eq!(slot_count(), 2);
    assert_ck!(CKR_OK; C_Finalize(null()));
    assert_ck!(CKR_CRYPTOKI_NOT_INITIALIZED; C_Finalize(null()));
    assert_not_initialized();

    assert_rv(initialize_with(os_locking()), CKR_OK);
    assert_eq!(slot_count(), 2);
    assert_ck!(CKR_OK; C_Finalize(null()));
}

extern "C" fn create_mutex(mutex: *mut *mut c_void) -> CK_RV {
    if mutex.is_null() {
        return CKR_ARGUMENTS_BAD;
    }
    let lock = Box::into_raw(Box::new(AtomicBool::new(false)));
    // SAFETY: checked non-NULL; the module gives a place for the new mutex.
    unsafe { *mutex = lock.cast() };
    CKR_OK
}

extern "C" fn destroy_mutex(mutex: *mut c_void) -> CK_RV {
    if mutex.is_null() {
        return CKR_MUTEX_BAD;
    }
    // SAFETY: `mutex` was made by create_mutex.
    drop(unsafe { Box::from_raw(mutex.cast::<AtomicBool>()) });
    CKR_OK
}

extern "C" fn lock_mutex(mutex: *mut c_void) -> CK_RV {
    // SAFETY: `mutex` was made by create_mutex and is not destroyed yet.
    let Some(lock) = (unsafe { mutex.cast::<AtomicBool>().as_ref() }) else {
        return CKR_MUTEX_BAD;
    };
    while lock
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::thread::yield_now();
    }
    CKR_OK
}

extern "C" fn unlock_mutex(mutex: *mut c_void) -> CK_RV {
    // SAFETY: as in lock_mutex.
    let Some(lock) = (unsafe { mutex.cast::<AtomicBool>().as_ref() }) else {
        return CKR_MUTEX_BAD;
    };
    if lock.swap(false, Ordering::Release) {
        CKR_OK
    } else {
        CKR_MUTEX_NOT_LOCKED
    }
}

fn with_mutexes(flags: CK_FLAGS) -> CK_C_INITIALIZE_ARGS {
    CK_C_INITIALIZE_ARGS {
        CreateMutex: Some(create_mutex),
        DestroyMutex: Some(destroy_mutex),
        LockMutex: Some(lock_mutex),
        UnlockMutex: Some(unlock_mutex),
        ..initialize_args(flags, null())
    }
}

#[test]
fn mutex_callbacks_are_all_or_nothing() {
    if !in_fresh_process(test_name!(), 1) {
        return;
    }
    // All four callbacks with CKF_OS_LOCKING_OK, as p11-kit passes them.
    assert_rv(initialize_with(with_mutexes(CKF_OS_LOCKING_OK)), CKR_OK);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| (0..50).for_each(|_| assert_eq!(slot_count(), 1)));
        }
    });
    assert_ck!(CKR_OK; C_Finalize(null()));

    // Only some of them: refused, with or without CKF_OS_LOCKING_OK.
    for flags in [CKF_OS_LOCKING_OK, 0] {
        let two = CK_C_INITIALIZE_ARGS {
            LockMutex: None,
            UnlockMutex: None,
            ..with_mutexes(flags)
        };
        assert_rv(initialize_with(two), CKR_ARGUMENTS_BAD);
        assert_not_initialized();
        let one = CK_C_INITIALIZE_ARGS {
            UnlockMutex: Some(unlock_mutex),
            ..initialize_args(flags, null())
        };
        assert_rv(initialize_with(one), CKR_ARGUMENTS_BAD);
        assert_not_initialized();
    }

    // All four without CKF_OS_LOCKING_OK: the module must use them, or say it cannot lock.
    let rv = initialize_with(with_mutexes(0));
    assert_rv_in(rv, &[CKR_OK, CKR_CANT_LOCK]);
    if rv == CKR_OK {
        assert_eq!(slot_count(), 1);
        assert_ck!(CKR_OK; C_Finalize(null()));
    }
}

#[test]
fn finalize_with_a_reserved_pointer_is_refused() {
    if !in_fresh_process(test_name!(), 1) {
        return;
    }
    assert_ck!(CKR_OK; C_Initialize(null()));
    let mut reserved: CK_ULONG = 0;
    let reserved = (&mut reserved as *mut CK_ULONG).cast();
    assert_ck!(CKR_ARGUMENTS_BAD; C_Finalize(reserved));
    assert_eq!(slot_count(), 1, "the module is still initialised");
    assert_ck!(CKR_OK; C_Finalize(null()));
}

#[test]
fn bad_configurations_fail_initialize_cleanly() {
    let name = test_name!();
    if !is_child(name) {
        let good = TestConfig::new(3, None);
        let bad = good.dir().join("bad.toml");
        std::fs::write(&bad, "[[token]\nlabel = ").expect("writing bad.toml");
        let good_path = good.path.to_str().expect("UTF-8 path");
        run_child(name, &bad, &[("B4AE_TEST_GOOD_CONF", good_path)]);
        return;
    }
    // $B4AE_PKCS11_CONF names a file that is not TOML.
    assert_ck!(CKR_GENERAL_ERROR; C_Initialize(null()));
    assert_not_initialized();

    let good = std::env::var("B4AE_TEST_GOOD_CONF").expect("B4AE_TEST_GOOD_CONF");
    let dir = std::path::Path::new(&good).with_file_name("inline");
    std::fs::create_dir_all(&dir).expect("creating the inline tokens' directory");
    let dir_text = dir.to_str().expect("UTF-8 path");
    // Text that is not TOML is no configuration at all (SPEC §1: not read as one).
    assert_rv(initialize_with_reserved("[[token]\n"), CKR_ARGUMENTS_BAD);
    assert_not_initialized();
    let broken = [
        "[[token]]\nlabel = \"no path\"\nbackend = \"embedded\"\n".to_string(),
        format!("[[token]]\nbackend = \"no-such-backend\"\npath = \"{dir_text}/t\"\n"),
    ];
    for config in broken {
        assert_rv(initialize_with_reserved(&config), CKR_GENERAL_ERROR);
        assert_not_initialized();
    }

    // pReserved "config=<file>" takes precedence over the environment...
    assert_rv(initialize_with_reserved(&format!("config={good}")), CKR_OK);
    assert_eq!(slot_count(), 3);
    assert_ck!(CKR_OK; C_Finalize(null()));

    // ... and so does TOML text in pReserved.
    assert_rv(
        initialize_with_reserved(&config_toml(&dir, 2, None)),
        CKR_OK,
    );
    assert_eq!(slot_count(), 2);
    assert_ck!(CKR_OK; C_Finalize(null()));
}

// ---------------------------------------------------------------------------------------------
// Arguments

#[test]
fn null_pointers_are_arguments_bad() {
    let f = fixture();
    let slot = f.ready_slot(SLOT_NULL_POINTERS);
    let slot_id = CK_SLOT_ID::from(slot);

    // Before anyone logs in: C_Login and C_SetPIN with a NULL PIN of non-zero length.
    let public = open_session(slot, RW).expect("C_OpenSession");
    let (new_pin, new_pin_len) = text_arg("new-pin-333");
    assert_ck!(CKR_ARGUMENTS_BAD;
        C_Login(public, CKU_USER, null(), 4),
        C_SetPIN(public, null(), 4, new_pin, new_pin_len),
    );

    let session = f.user_session(slot);
    let h = session.handle();
    let object = ok(session.create_object(&data_template("nulls", b"v", false, false)));
    let object = object.handle();
    let (public_key, private_key) = mldsa_keypair(&session, Ps::P44, false, &[]);
    let (public_key, private_key) = (public_key.handle(), private_key.handle());
    let class: CK_OBJECT_CLASS = CKO_DATA;
    let mut template = [raw_attr(CKA_CLASS, &class)];
    let template = template.as_mut_ptr();
    let (mut handle, mut other) = (CK_INVALID_HANDLE, CK_INVALID_HANDLE);
    let mut keygen = mech(CKM_ML_DSA_KEY_PAIR_GEN);
    assert_ck!(CKR_ARGUMENTS_BAD;
        C_GetInfo(null()),
        C_GetFunctionList(null()),
        C_GetInterfaceList(null(), null()),
        C_GetInterface(null(), null(), null(), 0),
        C_GetSlotList(CK_FALSE, null(), null()),
        C_GetSlotInfo(slot_id, null()),
        C_GetTokenInfo(slot_id, null()),
        C_GetMechanismList(slot_id, null(), null()),
        C_GetMechanismInfo(slot_id, CKM_SHA256, null()),
        C_OpenSession(slot_id, RO, null(), None, null()),
        C_GetSessionInfo(h, null()),
        C_GetAttributeValue(h, object, null(), 1),
        C_SetAttributeValue(h, object, null(), 1),
        C_CreateObject(h, null(), 1, &mut handle),
        C_CreateObject(h, template, 1, null()),
        C_CopyObject(h, object, null(), 0, null()),
        C_GetObjectSize(h, object, null()),
        C_FindObjectsInit(h, null(), 1),
        C_GenerateKeyPair(h, null(), null(), 0, null(), 0, &mut handle, &mut other),
        C_GenerateKeyPair(h, &mut keygen, null(), 0, null(), 0, null(), null()),
        C_GenerateRandom(h, null(), 16),
    );
    // PKCS#11 3.0: a NULL mechanism cancels the operation of that kind (none is active here).
    assert_ck!(CKR_OK;
        C_DigestInit(h, null()),
        C_SignInit(h, null(), private_key),
        C_VerifyInit(h, null(), public_key),
    );
    let seed = ck!(C_SeedRandom(h, null(), 16));
    assert_rv_in(seed, &[CKR_ARGUMENTS_BAD, CKR_RANDOM_SEED_NOT_SUPPORTED]);

    // NULL with a zero count is a valid, empty template.
    let mut found = [CK_INVALID_HANDLE; 4];
    let mut count: CK_ULONG = 0;
    assert_ck!(CKR_OK; C_FindObjectsInit(h, null(), 0));
    assert_ck!(CKR_ARGUMENTS_BAD;
        C_FindObjects(h, null(), 4, &mut count),
        C_FindObjects(h, found.as_mut_ptr(), 4, null()),
    );
    assert_ck!(CKR_OK; C_FindObjectsFinal(h));

    // Inside active operations, each in its own session (an error may end the operation).
    let (data, data_len) = (MESSAGE.as_ptr().cast_mut(), MESSAGE.len() as CK_ULONG);
    let mut buffer = vec![0u8; Ps::P44.sig_len()];
    let (out, mut len) = (buffer.as_mut_ptr(), buffer.len() as CK_ULONG);
    let (mut ml_dsa, mut sha256) = (mech(CKM_ML_DSA), mech(CKM_SHA256));
    let sessions: Vec<_> = (0..3).map(|_| ok(f.pkcs11.open_ro_session(slot))).collect();
    let [s1, s2, s3] = [0, 1, 2].map(|i| sessions[i].handle());
    assert_ck!(CKR_OK; C_SignInit(s1, &mut ml_dsa, private_key));
    assert_ck!(CKR_ARGUMENTS_BAD; C_Sign(s1, data, data_len, out, null()));
    assert_ck!(CKR_OK; C_SignInit(s2, &mut ml_dsa, private_key));
    assert_ck!(CKR_ARGUMENTS_BAD; C_Sign(s2, null(), 10, out, &mut len));
    assert_ck!(CKR_OK; C_DigestInit(s3, &mut sha256));
    assert_ck!(CKR_ARGUMENTS_BAD; C_Digest(s3, data, data_len, null(), null()));
    assert_rv(close_session(public), CKR_OK);
}

#[test]
fn absurd_counts_and_lengths_are_refused_without_crashing() {
    // In a fresh process, so that a crash is reported as one.
    if !in_fresh_process(test_name!(), 1) {
        return;
    }
    let pkcs11 = load_module();
    initialize(&pkcs11);
    let slot = ok(pkcs11.get_all_slots())[0];
    init_token(&pkcs11, slot, "absurd");
    let session = user_session(&pkcs11, slot);
    let h = session.handle();
    let object = ok(session.create_object(&data_template("absurd", b"v", false, false)));
    let o = object.handle();
    let class: CK_OBJECT_CLASS = CKO_DATA;
    let mut one = [raw_attr(CKA_CLASS, &class)];
    let one = one.as_mut_ptr();
    let mut handle = CK_INVALID_HANDLE;
    assert_ck!(CKR_ARGUMENTS_BAD;
        C_GetAttributeValue(h, o, one, HUGE),
        C_SetAttributeValue(h, o, one, HUGE),
        C_CreateObject(h, one, HUGE, &mut handle),
        C_FindObjectsInit(h, one, HUGE),
    );

    let label = *b"eight-b!";
    let lying = CK_ATTRIBUTE {
        ulValueLen: HUGE,
        ..raw_bytes(CKA_LABEL, &label)
    };
    let allowed = [CKR_ATTRIBUTE_VALUE_INVALID, CKR_ARGUMENTS_BAD];
    let mut create = [raw_attr(CKA_CLASS, &class), lying];
    let created = ck!(C_CreateObject(h, create.as_mut_ptr(), 2, &mut handle));
    assert_rv_in(created, &allowed);
    let mut update = [lying];
    assert_rv_in(
        ck!(C_SetAttributeValue(h, o, update.as_mut_ptr(), 1)),
        &allowed,
    );
    let mut search = [lying];
    let searched = ck!(C_FindObjectsInit(h, search.as_mut_ptr(), 1));
    if searched == CKR_OK {
        assert_ck!(CKR_OK; C_FindObjectsFinal(h));
    }
    assert_rv_in(searched, &allowed);

    // Still alive, and the object is unchanged.
    assert!(session_info(h).is_ok());
    assert_eq!(attr_bytes(&session, object, CKA_LABEL), b"absurd");
}

// ---------------------------------------------------------------------------------------------
// Handles and unsupported functions

#[test]
fn unknown_session_and_object_handles() {
    let f = fixture();
    let session = f.user_session(f.ready_slot(SLOT_BAD_HANDLES));
    let h = session.handle();
    let (pin, pin_len) = text_arg(USER_PIN);
    let mut info = CK_SESSION_INFO::default();
    let mut random = [0u8; 8];
    let mut sha256 = mech(CKM_SHA256);
    let class: CK_OBJECT_CLASS = CKO_DATA;
    let mut template = [raw_attr(CKA_CLASS, &class)];
    let template = template.as_mut_ptr();
    let mut handle = CK_INVALID_HANDLE;
    assert_ck!(CKR_SESSION_HANDLE_INVALID;
        C_GetSessionInfo(BOGUS, &mut info),
        C_GetSessionInfo(CK_INVALID_HANDLE, &mut info),
        C_CloseSession(BOGUS),
        C_Login(BOGUS, CKU_USER, pin, pin_len),
        C_Logout(BOGUS),
        C_FindObjectsInit(BOGUS, null(), 0),
        C_DigestInit(BOGUS, &mut sha256),
        C_GenerateRandom(BOGUS, random.as_mut_ptr(), 8),
        C_CreateObject(BOGUS, template, 1, &mut handle),
    );

    let mut label = [0u8; 16];
    let mut attr = [raw_buffer(CKA_LABEL, &mut label)];
    let attr = attr.as_mut_ptr();
    let mut size: CK_ULONG = 0;
    assert_ck!(CKR_OBJECT_HANDLE_INVALID;
        C_GetAttributeValue(h, BOGUS, attr, 1),
        C_GetAttributeValue(h, CK_INVALID_HANDLE, attr, 1),
        C_SetAttributeValue(h, BOGUS, attr, 1),
        C_DestroyObject(h, BOGUS),
        C_GetObjectSize(h, BOGUS, &mut size),
        C_CopyObject(h, BOGUS, null(), 0, &mut handle),
    );
    let mut ml_dsa = mech(CKM_ML_DSA);
    let bad_key = [CKR_KEY_HANDLE_INVALID, CKR_OBJECT_HANDLE_INVALID];
    assert_rv_in(ck!(C_SignInit(h, &mut ml_dsa, BOGUS)), &bad_key);
    assert_rv_in(ck!(C_VerifyInit(h, &mut ml_dsa, BOGUS)), &bad_key);

    // The real session is unharmed.
    let state = session_info(h).expect("C_GetSessionInfo").state;
    assert_eq!(state, CKS_RW_USER_FUNCTIONS);
}

#[test]
fn unsupported_functions_answer_function_not_supported() {
    let f = fixture();
    let session = f.user_session(f.ready_slot(SLOT_UNSUPPORTED));
    let h = session.handle();
    let (mut aes, mut kem, mut sha256) = (mech(CKM_AES_ECB), mech(CKM_ML_KEM), mech(CKM_SHA256));
    let mut len: CK_ULONG = 0;
    let mut part = [0u8; 16];
    let part = part.as_mut_ptr();
    let mut handle = CK_INVALID_HANDLE;
    let none = CK_INVALID_HANDLE;
    // Not implemented yet: remove a line when its function lands.
    assert_ck!(CKR_FUNCTION_NOT_SUPPORTED;
        C_WrapKey(h, &mut aes, none, none, null(), &mut len),
    );
    // Encryption landed (AES-GCM only): another mechanism is refused as such.
    assert_ck!(CKR_MECHANISM_INVALID; C_EncryptInit(h, &mut aes, none));
    // Encapsulation landed: a missing key is now the answer.
    assert_ck!(CKR_KEY_HANDLE_INVALID;
        C_EncapsulateKey(h, &mut kem, none, null(), 0, null(), &mut len, &mut handle),
        C_DecapsulateKey(h, &mut kem, none, null(), 0, part, 16, &mut handle),
    );
    // Not planned.
    assert_ck!(CKR_FUNCTION_NOT_SUPPORTED;
        C_GetOperationState(h, null(), &mut len),
        C_SignRecoverInit(h, &mut sha256, none),
        C_VerifyRecoverInit(h, &mut sha256, none),
        C_DigestEncryptUpdate(h, part, 16, null(), &mut len),
        C_DecryptVerifyUpdate(h, part, 16, null(), &mut len),
        C_MessageEncryptInit(h, &mut aes, none),
    );
    // Legacy parallel-function calls: PKCS#11 prescribes CKR_FUNCTION_NOT_PARALLEL.
    let legacy = [CKR_FUNCTION_NOT_PARALLEL, CKR_FUNCTION_NOT_SUPPORTED];
    assert_rv_in(ck!(C_GetFunctionStatus(h)), &legacy);
    assert_rv_in(ck!(C_CancelFunction(h)), &legacy);
}

// ---------------------------------------------------------------------------------------------
// fork()

/// Waits for `pid` at most `timeout`: its exit code, 128 + signal, or None (then kills it).
fn wait_for(pid: libc::pid_t, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child.
        let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if done == pid {
            let exited = libc::WIFEXITED(status);
            let code = if exited {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
            return Some(code);
        }
        assert_eq!(done, 0, "waitpid failed");
        if Instant::now() > deadline {
            // SAFETY: kills and reaps our own child, by its pid.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The forked child's work: 0 on success, else the number of the step that failed.
fn in_forked_child(slot: Slot) -> i32 {
    let slot_id = CK_SLOT_ID::from(slot);
    if ck!(C_Initialize(null())) != CKR_OK {
        return 1;
    }
    let mut h = CK_INVALID_HANDLE;
    if ck!(C_OpenSession(slot_id, RW, null(), None, &mut h)) != CKR_OK {
        return 2;
    }
    // A fresh module instance: not logged in, whatever the parent's state.
    if !session_info(h).is_ok_and(|info| info.state == CKS_RW_PUBLIC_SESSION) {
        return 3;
    }
    if login(h, CKU_USER, USER_PIN) != CKR_OK {
        return 4;
    }
    let class: CK_OBJECT_CLASS = CKO_DATA;
    let (token, private): (CK_BBOOL, CK_BBOOL) = (CK_TRUE, CK_FALSE);
    let mut template = [
        raw_attr(CKA_CLASS, &class),
        raw_attr(CKA_TOKEN, &token),
        raw_attr(CKA_PRIVATE, &private),
        raw_bytes(CKA_LABEL, b"from-fork"),
    ];
    let mut object = CK_INVALID_HANDLE;
    if ck!(C_CreateObject(h, template.as_mut_ptr(), 4, &mut object)) != CKR_OK {
        return 5;
    }
    let mut random = [0u8; 32];
    if ck!(C_GenerateRandom(h, random.as_mut_ptr(), 32)) != CKR_OK {
        return 6;
    }
    if ck!(C_Finalize(null())) != CKR_OK {
        return 7;
    }
    0
}

#[test]
fn a_forked_child_initializes_its_own_instance() {
    if !in_fresh_process(test_name!(), 1) {
        return;
    }
    let pkcs11 = load_module();
    initialize(&pkcs11);
    let slot = ok(pkcs11.get_all_slots())[0];
    init_token(&pkcs11, slot, "fork");
    let session = user_session(&pkcs11, slot);
    ok(session.create_object(&data_template("before-fork", b"parent", true, false)));

    let _ = raw(); // load the raw function list before fork(), not in the child

    // SAFETY: the child only calls the module, then leaves with _exit().
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = in_forked_child(slot);
        // SAFETY: ends the forked child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    let status = wait_for(pid, Duration::from_secs(120));
    assert_eq!(
        status,
        Some(0),
        "the forked child failed (step number, or 128 + signal)"
    );

    // The parent's session, login and objects are intact, and it sees the child's object.
    let info = session_info(session.handle()).expect("the parent's session survives");
    assert_eq!(info.state, CKS_RW_USER_FUNCTIONS);
    assert_eq!(find_by_label(&session, "before-fork").len(), 1);
    assert_eq!(find_by_label(&session, "from-fork").len(), 1);
    assert_eq!(ok(session.generate_random_vec(16)).len(), 16);
}

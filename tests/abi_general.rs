//! General-purpose functions, interfaces, slots and tokens, sessions and login, digest and
//! random numbers.

#[macro_use]
mod common;

use std::ffi::CStr;
use std::mem::offset_of;

use common::*;
use cryptoki::mechanism::Mechanism;
use cryptoki::slot::Slot;
use cryptoki_sys::*;
use sha2::Digest as _;

// One fixture slot per test, so that tests never share a token.
const SLOT_TOKEN_INFO: usize = 0;
const SLOT_MECHANISMS: usize = 1;
const SLOT_SESSION_STATES: usize = 2;
const SLOT_SERIAL_FLAG: usize = 3;
const SLOT_SO_AND_RO: usize = 4;
const SLOT_LOGIN_ERRORS: usize = 5;
const SLOT_WRONG_PIN: usize = 6;
const SLOT_SET_PIN: usize = 7;
const SLOT_REINIT: usize = 8;
const SLOT_CLOSE_ALL: usize = 9;
const SLOT_DIGEST: usize = 10;
const SLOT_DIGEST_STATE: usize = 11;
const SLOT_RANDOM: usize = 12;

const USER_PIN_FLAGS: CK_FLAGS =
    CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY | CKF_USER_PIN_LOCKED;
const SO_PIN_FLAGS: CK_FLAGS = CKF_SO_PIN_COUNT_LOW | CKF_SO_PIN_FINAL_TRY | CKF_SO_PIN_LOCKED;

// ---------------------------------------------------------------------------------------------
// Library, function lists and interfaces

/// Asserts that every function pointer of a function list (after its CK_VERSION) is set.
#[track_caller]
fn assert_table_complete<T>(table: &T, first_function_offset: usize, what: &str) {
    let entries = (size_of::<T>() - first_function_offset) / size_of::<usize>();
    assert!(entries > 60, "{what} has only {entries} entries");
    let base = (table as *const T).cast::<u8>();
    for i in 0..entries {
        let offset = first_function_offset + i * size_of::<usize>();
        // SAFETY: reads a pointer-sized word inside `table`.
        let word = unsafe { base.add(offset).cast::<usize>().read_unaligned() };
        assert_ne!(word, 0, "{what}: function #{i} (0-based) is NULL");
    }
}

/// Name and version of an interface from C_GetInterfaceList / C_GetInterface.
fn describe_interface(interface: &CK_INTERFACE) -> (String, (u8, u8)) {
    assert!(
        !interface.pInterfaceName.is_null(),
        "interface without a name"
    );
    assert!(
        !interface.pFunctionList.is_null(),
        "interface without functions"
    );
    // SAFETY: the module returns a NUL-terminated name and a function list that starts with
    // its CK_VERSION.
    let (name, version) = unsafe {
        let name = CStr::from_ptr(interface.pInterfaceName.cast());
        (name, *interface.pFunctionList.cast::<CK_VERSION>())
    };
    (
        name.to_string_lossy().into_owned(),
        (version.major, version.minor),
    )
}

#[test]
fn get_info_reports_cryptoki_3_2_and_a_manufacturer() {
    let _ = fixture();
    let mut info = CK_INFO::default();
    assert_ck!(CKR_OK; C_GetInfo(&mut info));
    let version = (info.cryptokiVersion.major, info.cryptokiVersion.minor);
    assert_eq!(version, (3, 2));
    assert_eq!(info.flags, 0);
    assert_padded_text("manufacturerID", &info.manufacturerID);
    assert_padded_text("libraryDescription", &info.libraryDescription);
}

#[test]
fn get_function_list_returns_a_complete_2_40_table() {
    let list = &raw().v2_40;
    assert_eq!((list.version.major, list.version.minor), (2, 40));
    assert_table_complete(
        list,
        offset_of!(CK_FUNCTION_LIST, C_Initialize),
        "2.40 list",
    );
    // The table's own C_GetFunctionList gives the 2.40 table as well.
    let mut again: *mut CK_FUNCTION_LIST = null();
    assert_ck!(CKR_OK; C_GetFunctionList(&mut again));
    assert!(!again.is_null());
    // SAFETY: the module returned a valid function list.
    let version = unsafe { (*again).version };
    assert_eq!((version.major, version.minor), (2, 40));
}

#[test]
fn interface_list_offers_pkcs11_3_2_3_0_and_2_40() {
    let mut count: CK_ULONG = 0;
    assert_ck!(CKR_OK; C_GetInterfaceList(null(), &mut count));
    assert!(count >= 3, "only {count} interfaces");
    let mut list = vec![CK_INTERFACE::default(); count as usize];
    let mut short = count - 1;
    assert_ck!(CKR_BUFFER_TOO_SMALL; C_GetInterfaceList(list.as_mut_ptr(), &mut short));
    assert_eq!(short, count, "CKR_BUFFER_TOO_SMALL must report the count");
    assert_ck!(CKR_OK; C_GetInterfaceList(list.as_mut_ptr(), &mut count));
    let found: Vec<_> = list[..count as usize]
        .iter()
        .map(describe_interface)
        .collect();
    for version in [(3, 2), (3, 0), (2, 40)] {
        let wanted = ("PKCS 11".to_string(), version);
        assert!(found.contains(&wanted), "no {wanted:?} among {found:?}");
    }
}

/// C_GetInterface: the interface's name, version and function list.
fn get_interface(
    name: Option<&CStr>,
    version: Option<(u8, u8)>,
) -> Result<(String, (u8, u8), *mut std::ffi::c_void), CK_RV> {
    let name: *mut CK_UTF8CHAR = name.map_or(null(), |name| name.as_ptr().cast_mut().cast());
    let mut version = version.map(|(major, minor)| CK_VERSION { major, minor });
    let version = version.as_mut().map_or(null(), |v| v as *mut CK_VERSION);
    let mut interface: *mut CK_INTERFACE = null();
    match ck!(C_GetInterface(name, version, &mut interface, 0)) {
        CKR_OK => {
            assert!(!interface.is_null(), "CKR_OK but no interface");
            // SAFETY: the module returned a valid interface.
            let interface = unsafe { *interface };
            let (name, version) = describe_interface(&interface);
            Ok((name, version, interface.pFunctionList))
        }
        rv => Err(rv),
    }
}

#[test]
fn get_interface_selects_by_name_and_version() {
    let (name, version, _) = get_interface(None, None).expect("the default interface");
    assert_eq!((name.as_str(), version), ("PKCS 11", (3, 2)));
    let (_, version, _) = get_interface(Some(c"PKCS 11"), None).expect("PKCS 11");
    assert_eq!(version, (3, 2), "a NULL version means the newest");

    for wanted in [(3, 2), (3, 0), (2, 40)] {
        for name in [None, Some(c"PKCS 11")] {
            let (_, version, functions) = get_interface(name, Some(wanted)).expect("offered");
            assert_eq!(version, wanted, "asked for {wanted:?} with name {name:?}");
            // SAFETY: the module returned a function list of the version it announced.
            unsafe {
                match wanted {
                    (3, 2) => assert_table_complete(
                        &*functions.cast::<CK_FUNCTION_LIST_3_2>(),
                        offset_of!(CK_FUNCTION_LIST_3_2, C_Initialize),
                        "3.2 list",
                    ),
                    (3, 0) => assert_table_complete(
                        &*functions.cast::<CK_FUNCTION_LIST_3_0>(),
                        offset_of!(CK_FUNCTION_LIST_3_0, C_Initialize),
                        "3.0 list",
                    ),
                    _ => assert_table_complete(
                        &*functions.cast::<CK_FUNCTION_LIST>(),
                        offset_of!(CK_FUNCTION_LIST, C_Initialize),
                        "2.40 list",
                    ),
                }
            }
        }
    }
    let unknown = get_interface(Some(c"Vendor No Such Interface"), None);
    assert_eq!(unknown.err(), Some(CKR_ARGUMENTS_BAD));
}

// ---------------------------------------------------------------------------------------------
// Slots, tokens and mechanisms

#[test]
fn slot_list_and_slot_info_describe_every_configured_token() {
    let f = fixture();
    let all_ids: Vec<CK_SLOT_ID> = (0..FIXTURE_TOKENS as CK_SLOT_ID).collect();
    for present in [CK_FALSE, CK_TRUE] {
        let mut count: CK_ULONG = 0;
        assert_ck!(CKR_OK; C_GetSlotList(present, null(), &mut count));
        assert_eq!(count as usize, FIXTURE_TOKENS, "tokenPresent={present}");
        let mut ids = vec![CK_UNAVAILABLE_INFORMATION; count as usize];
        let mut short = count - 1;
        assert_ck!(CKR_BUFFER_TOO_SMALL; C_GetSlotList(present, ids.as_mut_ptr(), &mut short));
        assert_eq!(short, count, "CKR_BUFFER_TOO_SMALL must report the count");
        assert_ck!(CKR_OK; C_GetSlotList(present, ids.as_mut_ptr(), &mut count));
        assert_eq!(ids, all_ids, "slot IDs follow the order of the file");
    }
    for (index, &slot) in f.slots.iter().enumerate() {
        let mut info = CK_SLOT_INFO::default();
        assert_ck!(CKR_OK; C_GetSlotInfo(slot.into(), &mut info));
        assert_ne!(info.flags & CKF_TOKEN_PRESENT, 0, "slot {index}");
        let description = String::from_utf8_lossy(&info.slotDescription);
        let expected = String::from_utf8(padded(&slot_label(index), 64)).unwrap();
        assert_eq!(description, expected, "slotDescription");
        assert_padded_text("slot manufacturerID", &info.manufacturerID);
    }
}

#[test]
fn token_info_flags_before_and_after_initialization() {
    let f = fixture();
    let slot = f.slot(SLOT_TOKEN_INFO);
    assert_token_flags(
        slot,
        CKF_RNG,
        CKF_TOKEN_INITIALIZED | CKF_USER_PIN_INITIALIZED,
    );

    ok(f.pkcs11.init_token(slot, &pin(SO_PIN), "Token Info Label"));
    let ready = CKF_TOKEN_INITIALIZED | CKF_LOGIN_REQUIRED | CKF_RNG;
    assert_token_flags(slot, ready, CKF_USER_PIN_INITIALIZED);
    let info = token_info(slot);
    assert_eq!(info.label.to_vec(), padded("Token Info Label", 32));
    assert_padded_text("token manufacturerID", &info.manufacturerID);
    assert_padded_text("model", &info.model);
    assert_padded_text("serialNumber", &info.serialNumber);
    assert!(info.ulMinPinLen <= USER_PIN.len() as CK_ULONG);
    assert!(info.ulMaxPinLen >= SO_PIN.len() as CK_ULONG);

    let session = open_session(slot, RW).expect("C_OpenSession");
    assert_rv(login(session, CKU_SO, SO_PIN), CKR_OK);
    assert_rv(init_pin(session, USER_PIN), CKR_OK);
    assert_rv(close_session(session), CKR_OK);
    assert_token_flags(slot, ready | CKF_USER_PIN_INITIALIZED, USER_PIN_FLAGS);
}

#[test]
fn mechanism_list_and_info_cover_ml_dsa_and_sha2() {
    let slot = fixture().slot(SLOT_MECHANISMS);
    let list = mechanism_list(slot);
    let wanted = [
        CKM_ML_DSA_KEY_PAIR_GEN,
        CKM_ML_DSA,
        CKM_SHA256,
        CKM_SHA384,
        CKM_SHA512,
    ];
    for mechanism in wanted {
        assert!(
            list.contains(&mechanism),
            "{mechanism:#x} missing from {list:x?}"
        );
    }
    let mut unique = list.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), list.len(), "duplicates in {list:x?}");

    let ml_dsa = mechanism_info(slot, CKM_ML_DSA).expect("C_GetMechanismInfo(CKM_ML_DSA)");
    assert_eq!(
        ml_dsa.flags & (CKF_SIGN | CKF_VERIFY),
        CKF_SIGN | CKF_VERIFY
    );
    assert!(ml_dsa.ulMaxKeySize > 0 && ml_dsa.ulMinKeySize <= ml_dsa.ulMaxKeySize);
    let keygen = mechanism_info(slot, CKM_ML_DSA_KEY_PAIR_GEN).expect("key pair generation");
    assert_ne!(keygen.flags & CKF_GENERATE_KEY_PAIR, 0);
    for digest in [CKM_SHA256, CKM_SHA384, CKM_SHA512] {
        let info = mechanism_info(slot, digest).expect("C_GetMechanismInfo(digest)");
        assert_ne!(info.flags & CKF_DIGEST, 0, "{digest:#x}");
    }
}

#[test]
fn invalid_slot_ids_and_mechanisms_are_rejected() {
    let slot = fixture().slot(SLOT_MECHANISMS);
    let (so_pin, so_pin_len) = text_arg(SO_PIN);
    let label = padded("x", 32);
    let label = label.as_ptr().cast_mut();
    for bad in [
        FIXTURE_TOKENS as CK_SLOT_ID,
        0x7777,
        CK_UNAVAILABLE_INFORMATION,
    ] {
        let mut slot_info = CK_SLOT_INFO::default();
        let mut token = CK_TOKEN_INFO::default();
        let mut mechanism = CK_MECHANISM_INFO::default();
        let mut count: CK_ULONG = 0;
        let mut session = CK_INVALID_HANDLE;
        assert_ck!(CKR_SLOT_ID_INVALID;
            C_GetSlotInfo(bad, &mut slot_info),
            C_GetTokenInfo(bad, &mut token),
            C_GetMechanismList(bad, null(), &mut count),
            C_GetMechanismInfo(bad, CKM_SHA256, &mut mechanism),
            C_OpenSession(bad, RW, null(), None, &mut session),
            C_InitToken(bad, so_pin, so_pin_len, label),
            C_CloseAllSessions(bad),
        );
    }
    for unknown in [0x7FFF_0000, CKM_VENDOR_DEFINED | 0x0BAD] {
        assert_eq!(
            mechanism_info(slot, unknown).err(),
            Some(CKR_MECHANISM_INVALID)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions and login

#[track_caller]
fn assert_session(session: CK_SESSION_HANDLE, slot: Slot, state: CK_STATE) {
    let info = session_info(session).expect("C_GetSessionInfo");
    assert_eq!(info.state, state, "session state");
    assert_eq!(info.slotID, CK_SLOT_ID::from(slot));
    let read_write = [
        CKS_RW_PUBLIC_SESSION,
        CKS_RW_USER_FUNCTIONS,
        CKS_RW_SO_FUNCTIONS,
    ];
    let flags = if read_write.contains(&state) { RW } else { RO };
    assert_eq!(info.flags, flags, "session flags");
}

#[test]
fn session_states_follow_login() {
    let slot = fixture().ready_slot(SLOT_SESSION_STATES);
    let ro = open_session(slot, RO).expect("RO session");
    let rw = open_session(slot, RW).expect("RW session");
    assert_session(ro, slot, CKS_RO_PUBLIC_SESSION);
    assert_session(rw, slot, CKS_RW_PUBLIC_SESSION);

    assert_rv(login(rw, CKU_USER, USER_PIN), CKR_OK);
    assert_session(ro, slot, CKS_RO_USER_FUNCTIONS);
    assert_session(rw, slot, CKS_RW_USER_FUNCTIONS);
    assert_rv(logout(ro), CKR_OK);
    assert_session(ro, slot, CKS_RO_PUBLIC_SESSION);
    assert_session(rw, slot, CKS_RW_PUBLIC_SESSION);

    assert_rv(close_session(ro), CKR_OK);
    assert_rv(login(rw, CKU_SO, SO_PIN), CKR_OK);
    assert_session(rw, slot, CKS_RW_SO_FUNCTIONS);
    let second = open_session(slot, RW).expect("RW session while the SO is logged in");
    assert_session(second, slot, CKS_RW_SO_FUNCTIONS);
    assert_rv(logout(rw), CKR_OK);
    assert_session(second, slot, CKS_RW_PUBLIC_SESSION);
    assert_rv(close_session(second), CKR_OK);
    assert_rv(close_session(rw), CKR_OK);
}

#[test]
fn sessions_must_be_serial() {
    let slot = fixture().ready_slot(SLOT_SERIAL_FLAG);
    for flags in [0, CKF_RW_SESSION] {
        let refused = Some(CKR_SESSION_PARALLEL_NOT_SUPPORTED);
        assert_eq!(open_session(slot, flags).err(), refused, "flags {flags:#x}");
    }
}

#[test]
fn so_login_and_read_only_sessions_exclude_each_other() {
    let slot = fixture().ready_slot(SLOT_SO_AND_RO);
    let ro = open_session(slot, RO).expect("RO session");
    let rw = open_session(slot, RW).expect("RW session");
    assert_rv(login(rw, CKU_SO, SO_PIN), CKR_SESSION_READ_ONLY_EXISTS);
    assert_rv(close_session(ro), CKR_OK);
    assert_rv(login(rw, CKU_SO, SO_PIN), CKR_OK);
    let refused = Some(CKR_SESSION_READ_WRITE_SO_EXISTS);
    assert_eq!(open_session(slot, RO).err(), refused);
    assert_rv(logout(rw), CKR_OK);
    let ro = open_session(slot, RO).expect("RO session once the SO logged out");
    assert_rv(close_session(ro), CKR_OK);
    assert_rv(close_session(rw), CKR_OK);
}

#[test]
fn login_state_errors() {
    let slot = fixture().ready_slot(SLOT_LOGIN_ERRORS);
    let rw = open_session(slot, RW).expect("RW session");
    assert_rv(logout(rw), CKR_USER_NOT_LOGGED_IN);

    assert_rv(login(rw, CKU_USER, USER_PIN), CKR_OK);
    assert_rv(login(rw, CKU_USER, USER_PIN), CKR_USER_ALREADY_LOGGED_IN);
    assert_rv(
        login(rw, CKU_SO, SO_PIN),
        CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
    );
    assert_rv(logout(rw), CKR_OK);
    assert_rv(logout(rw), CKR_USER_NOT_LOGGED_IN);

    assert_rv(login(rw, CKU_SO, SO_PIN), CKR_OK);
    assert_rv(login(rw, CKU_SO, SO_PIN), CKR_USER_ALREADY_LOGGED_IN);
    assert_rv(
        login(rw, CKU_USER, USER_PIN),
        CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
    );
    assert_rv(logout(rw), CKR_OK);

    assert_rv(login(rw, 7, USER_PIN), CKR_USER_TYPE_INVALID);
    assert_rv(close_session(rw), CKR_OK);
}

#[test]
fn wrong_pins_set_count_low_and_a_good_login_clears_it() {
    let slot = fixture().ready_slot(SLOT_WRONG_PIN);
    let rw = open_session(slot, RW).expect("RW session");

    assert_rv(login(rw, CKU_USER, "not-the-pin"), CKR_PIN_INCORRECT);
    let clear = CKF_USER_PIN_FINAL_TRY | CKF_USER_PIN_LOCKED;
    assert_token_flags(slot, CKF_USER_PIN_COUNT_LOW, clear);
    assert_rv(login(rw, CKU_USER, USER_PIN), CKR_OK);
    assert_token_flags(slot, 0, USER_PIN_FLAGS);
    assert_rv(logout(rw), CKR_OK);

    assert_rv(login(rw, CKU_SO, "not-the-so-pin"), CKR_PIN_INCORRECT);
    let clear = CKF_SO_PIN_FINAL_TRY | CKF_SO_PIN_LOCKED;
    assert_token_flags(slot, CKF_SO_PIN_COUNT_LOW, clear);
    assert_rv(login(rw, CKU_SO, SO_PIN), CKR_OK);
    assert_token_flags(slot, 0, SO_PIN_FLAGS);
    assert_rv(close_session(rw), CKR_OK);
}

#[test]
fn pin_lockout_persists_across_finalize_and_initialize() {
    let name = test_name!();
    if !is_child(name) {
        let config = TestConfig::new(1, Some(3));
        run_child(name, &config.path, &[]);
        return;
    }
    let pkcs11 = load_module();
    initialize(&pkcs11);
    let slot = ok(pkcs11.get_all_slots())[0];
    init_token(&pkcs11, slot, "lockout");
    let rw = open_session(slot, RW).expect("RW session");
    let count_low = (
        CKF_USER_PIN_COUNT_LOW,
        CKF_USER_PIN_FINAL_TRY | CKF_USER_PIN_LOCKED,
    );
    let final_try = (CKF_USER_PIN_FINAL_TRY, CKF_USER_PIN_LOCKED);

    // Two failures, then a good login: the counter starts again.
    assert_rv(login(rw, CKU_USER, "bad-1"), CKR_PIN_INCORRECT);
    assert_token_flags(slot, count_low.0, count_low.1);
    assert_rv(login(rw, CKU_USER, "bad-2"), CKR_PIN_INCORRECT);
    assert_token_flags(slot, final_try.0, final_try.1);
    assert_rv(login(rw, CKU_USER, USER_PIN), CKR_OK);
    assert_token_flags(slot, 0, USER_PIN_FLAGS);
    assert_rv(logout(rw), CKR_OK);

    // Three failures in a row (max_pin_failures = 3) lock the PIN.
    assert_rv(login(rw, CKU_USER, "bad-3"), CKR_PIN_INCORRECT);
    assert_token_flags(slot, count_low.0, count_low.1);
    assert_rv(login(rw, CKU_USER, "bad-4"), CKR_PIN_INCORRECT);
    assert_token_flags(slot, final_try.0, final_try.1);
    let third = login(rw, CKU_USER, "bad-5");
    assert_rv_in(third, &[CKR_PIN_INCORRECT, CKR_PIN_LOCKED]);
    assert_token_flags(slot, CKF_USER_PIN_LOCKED, 0);
    assert_rv(login(rw, CKU_USER, USER_PIN), CKR_PIN_LOCKED);
    assert_rv(close_session(rw), CKR_OK);

    // The lock is kept with the token, not in the process.
    ok(pkcs11.clone().finalize());
    initialize(&pkcs11);
    assert_token_flags(slot, CKF_USER_PIN_LOCKED, 0);
    let rw = open_session(slot, RW).expect("RW session after re-initialization");
    assert_rv(login(rw, CKU_USER, USER_PIN), CKR_PIN_LOCKED);

    // The SO sets a new user PIN, which unlocks it.
    assert_rv(login(rw, CKU_SO, SO_PIN), CKR_OK);
    assert_rv(init_pin(rw, "fresh-user-pin"), CKR_OK);
    assert_rv(logout(rw), CKR_OK);
    assert_rv(login(rw, CKU_USER, "fresh-user-pin"), CKR_OK);
    assert_token_flags(slot, 0, USER_PIN_FLAGS);
    assert_rv(close_session(rw), CKR_OK);
}

#[test]
fn set_pin_replaces_the_user_pin() {
    const NEW_PIN: &str = "user-pin-2222";
    let slot = fixture().ready_slot(SLOT_SET_PIN);
    let rw = open_session(slot, RW).expect("RW session");
    assert_rv(login(rw, CKU_USER, USER_PIN), CKR_OK);

    assert_rv(set_pin(rw, "wrong-old-pin", NEW_PIN), CKR_PIN_INCORRECT);
    let ro = open_session(slot, RO).expect("RO session");
    assert_rv(set_pin(ro, USER_PIN, NEW_PIN), CKR_SESSION_READ_ONLY);
    assert_rv(close_session(ro), CKR_OK);
    assert_rv(set_pin(rw, USER_PIN, NEW_PIN), CKR_OK);
    assert_rv(logout(rw), CKR_OK);

    assert_rv(login(rw, CKU_USER, USER_PIN), CKR_PIN_INCORRECT);
    assert_rv(login(rw, CKU_USER, NEW_PIN), CKR_OK);
    assert_rv(close_session(rw), CKR_OK);
}

#[test]
fn init_token_again_needs_the_so_pin_and_no_open_session() {
    let f = fixture();
    let slot = f.ready_slot(SLOT_REINIT);
    let rw = open_session(slot, RW).expect("RW session");
    let init = |so_pin: &str| f.pkcs11.init_token(slot, &pin(so_pin), "again");
    assert_rv(init(SO_PIN), CKR_SESSION_EXISTS);
    assert_rv(close_session(rw), CKR_OK);
    assert_rv(init("not-the-so-pin"), CKR_PIN_INCORRECT);
    assert_rv(init(SO_PIN), CKR_OK);

    assert_eq!(token_info(slot).label.to_vec(), padded("again", 32));
    assert_token_flags(slot, CKF_TOKEN_INITIALIZED, CKF_USER_PIN_INITIALIZED);
    let rw = open_session(slot, RW).expect("RW session");
    assert_rv(login(rw, CKU_USER, USER_PIN), CKR_USER_PIN_NOT_INITIALIZED);
    assert_rv(login(rw, CKU_SO, SO_PIN), CKR_OK);
    assert_rv(close_session(rw), CKR_OK);
}

#[test]
fn close_all_sessions_invalidates_every_handle() {
    let slot = fixture().ready_slot(SLOT_CLOSE_ALL);
    let open = |flags| open_session(slot, flags).expect("C_OpenSession");
    let sessions = [open(RW), open(RW), open(RO)];
    assert_rv(login(sessions[0], CKU_USER, USER_PIN), CKR_OK);
    assert_ck!(CKR_OK; C_CloseAllSessions(slot.into()));
    for session in sessions {
        assert_eq!(
            session_info(session).err(),
            Some(CKR_SESSION_HANDLE_INVALID)
        );
    }
    assert_rv(close_session(sessions[0]), CKR_SESSION_HANDLE_INVALID);

    // Closing the last session logged the user out.
    let fresh = open(RO);
    assert_session(fresh, slot, CKS_RO_PUBLIC_SESSION);
    assert_rv(close_session(fresh), CKR_OK);
    assert_eq!(session_info(fresh).err(), Some(CKR_SESSION_HANDLE_INVALID));
}

// ---------------------------------------------------------------------------------------------
// Digest and random numbers

fn digest_mechanism(mechanism: CK_MECHANISM_TYPE) -> Mechanism<'static> {
    match mechanism {
        CKM_SHA256 => Mechanism::Sha256,
        CKM_SHA384 => Mechanism::Sha384,
        CKM_SHA512 => Mechanism::Sha512,
        other => panic!("no digest {other:#x}"),
    }
}

fn reference_digest(mechanism: CK_MECHANISM_TYPE, data: &[u8]) -> Vec<u8> {
    match mechanism {
        CKM_SHA256 => sha2::Sha256::digest(data).to_vec(),
        CKM_SHA384 => sha2::Sha384::digest(data).to_vec(),
        CKM_SHA512 => sha2::Sha512::digest(data).to_vec(),
        other => panic!("no digest {other:#x}"),
    }
}

#[test]
fn sha2_digests_match_the_sha2_crate() {
    let f = fixture();
    let session = ok(f.pkcs11.open_ro_session(f.ready_slot(SLOT_DIGEST)));
    let long: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    let inputs: [&[u8]; 4] = [b"", b"abc", &[0x5a; 200], &long];
    for mechanism in [CKM_SHA256, CKM_SHA384, CKM_SHA512] {
        for data in inputs {
            let expected = reference_digest(mechanism, data);
            let single = ok(session.digest(&digest_mechanism(mechanism), data));
            assert_eq!(single, expected, "{mechanism:#x} of {} bytes", data.len());

            ok(session.digest_init(&digest_mechanism(mechanism)));
            data.chunks(333)
                .for_each(|part| ok(session.digest_update(part)));
            let multi = ok(session.digest_final());
            assert_eq!(
                multi,
                expected,
                "multi-part {mechanism:#x} of {} bytes",
                data.len()
            );
        }
    }
}

#[test]
fn digest_length_query_and_operation_state() {
    let slot = fixture().ready_slot(SLOT_DIGEST_STATE);
    let s = open_session(slot, RO).expect("RO session");
    let message = b"length conventions";
    let (data, data_len) = (message.as_ptr().cast_mut(), message.len() as CK_ULONG);
    let mut sha256 = mech(CKM_SHA256);
    let mut sha384 = mech(CKM_SHA384);
    let mut buffer = [0u8; 64];
    let out = buffer.as_mut_ptr();
    let mut len: CK_ULONG = 64;

    assert_ck!(CKR_OPERATION_NOT_INITIALIZED;
        C_Digest(s, data, data_len, out, &mut len),
        C_DigestUpdate(s, data, data_len),
        C_DigestFinal(s, out, &mut len),
    );
    assert_ck!(CKR_OK; C_DigestInit(s, &mut sha256));
    assert_ck!(CKR_OPERATION_ACTIVE; C_DigestInit(s, &mut sha256));

    len = 0;
    assert_ck!(CKR_OK; C_Digest(s, data, data_len, null(), &mut len));
    assert_eq!(len, 32, "length query");
    len = 16;
    assert_ck!(CKR_BUFFER_TOO_SMALL; C_Digest(s, data, data_len, out, &mut len));
    assert_eq!(len, 32, "CKR_BUFFER_TOO_SMALL must report the length");
    len = 64;
    assert_ck!(CKR_OK; C_Digest(s, data, data_len, out, &mut len));
    assert_eq!(
        &buffer[..len as usize],
        reference_digest(CKM_SHA256, message).as_slice()
    );
    assert_ck!(CKR_OPERATION_NOT_INITIALIZED; C_Digest(s, data, data_len, out, &mut len));

    assert_ck!(CKR_OK; C_DigestInit(s, &mut sha384), C_DigestUpdate(s, data, data_len));
    len = 0;
    assert_ck!(CKR_OK; C_DigestFinal(s, null(), &mut len));
    assert_eq!(len, 48);
    len = 64;
    assert_ck!(CKR_OK; C_DigestFinal(s, out, &mut len));
    assert_eq!(
        &buffer[..len as usize],
        reference_digest(CKM_SHA384, message).as_slice()
    );

    let mut not_a_digest = mech(CKM_ML_DSA);
    assert_ck!(CKR_MECHANISM_INVALID; C_DigestInit(s, &mut not_a_digest));
    assert_rv(close_session(s), CKR_OK);
}

#[test]
fn random_values_differ_and_seeding_is_optional() {
    let f = fixture();
    let session = ok(f.pkcs11.open_ro_session(f.ready_slot(SLOT_RANDOM)));
    let first = ok(session.generate_random_vec(32));
    let second = ok(session.generate_random_vec(32));
    assert_ne!(first, second);
    assert_ne!(first, [0u8; 32]);

    let big = ok(session.generate_random_vec(4096));
    let mut seen = [false; 256];
    for byte in big {
        seen[byte as usize] = true;
    }
    let distinct = seen.iter().filter(|&&hit| hit).count();
    assert!(
        distinct > 200,
        "4096 random bytes use only {distinct} byte values"
    );

    let seeded = session.seed_random(b"extra entropy");
    assert_rv_in(seeded, &[CKR_OK, CKR_RANDOM_SEED_NOT_SUPPORTED]);
    assert_ne!(ok(session.generate_random_vec(32)), first);
}

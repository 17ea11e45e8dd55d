//! General-purpose functions: `C_Initialize`, `C_Finalize`, `C_GetInfo`, and the legacy
//! parallel-function calls.

use super::{entry_points, library_version, padded, write_out};
use crate::error::{Error, Result};
use crate::module;
use cryptoki_sys::*;
use std::sync::Once;

/// Longest configuration string accepted in `pReserved`.
const MAX_RESERVED_LEN: usize = 1 << 20;

static ATFORK: Once = Once::new();

extern "C" fn in_forked_child() {
    module::forked();
}

/// Reads `CK_C_INITIALIZE_ARGS`: mutex callbacks all set or all absent; a configuration string
/// may ride in `pReserved` (p11-kit's `x-init-reserved`).
///
/// # Safety
/// `args` must be NULL or point to a valid `CK_C_INITIALIZE_ARGS` whose `pReserved` is NULL or a
/// NUL-terminated string.
unsafe fn read_init_args(args: CK_VOID_PTR) -> Result<Option<String>> {
    // SAFETY: the caller passes NULL or a valid CK_C_INITIALIZE_ARGS.
    let Some(args) = (unsafe { (args as *const CK_C_INITIALIZE_ARGS).as_ref() }) else {
        return Ok(None);
    };
    let callbacks = [
        args.CreateMutex.is_some(),
        args.DestroyMutex.is_some(),
        args.LockMutex.is_some(),
        args.UnlockMutex.is_some(),
    ];
    if callbacks.iter().any(|&c| c) && !callbacks.iter().all(|&c| c) {
        return Err(Error::ARGUMENTS_BAD);
    }
    if callbacks[0] && args.flags & CKF_OS_LOCKING_OK == 0 {
        // The application's mutexes would only stand in for ours; OS locking is equivalent
        // for threads of one process, so it is used in every case.
        tracing::info!("C_Initialize: mutex callbacks without CKF_OS_LOCKING_OK; using OS locking");
    }
    if args.pReserved.is_null() {
        return Ok(None);
    }
    let start = args.pReserved as *const u8;
    let mut len = 0;
    // SAFETY: the string is NUL-terminated (p11-kit's contract); reading stops at the NUL or
    // at the bound.
    while len < MAX_RESERVED_LEN && unsafe { *start.add(len) } != 0 {
        len += 1;
    }
    if len == MAX_RESERVED_LEN {
        return Err(Error::ARGUMENTS_BAD);
    }
    // SAFETY: `len` bytes were just read from `start`.
    let bytes = unsafe { std::slice::from_raw_parts(start, len) };
    String::from_utf8(bytes.to_vec())
        .map(Some)
        .map_err(|_| Error::ARGUMENTS_BAD)
}

entry_points! {
    fn C_Initialize(init_args: CK_VOID_PTR) {
        crate::logging::init();
        // SAFETY: PKCS#11 contract on pInitArgs.
        let reserved = unsafe { read_init_args(init_args) }?;
        ATFORK.call_once(|| {
            // SAFETY: registers a handler that only swaps an atomic pointer in the child.
            let rc = unsafe { libc::pthread_atfork(None, None, Some(in_forked_child)) };
            if rc != 0 {
                tracing::warn!("pthread_atfork failed ({rc}); forked children must not reuse state");
            }
        });
        module::initialize(reserved.as_deref())
    }

    fn C_Finalize(reserved: CK_VOID_PTR) {
        if !reserved.is_null() {
            return Err(Error::ARGUMENTS_BAD);
        }
        module::finalize()
    }

    fn C_GetInfo(info: CK_INFO_PTR) {
        module::get()?;
        let value = CK_INFO {
            cryptokiVersion: CK_VERSION { major: 3, minor: 2 },
            manufacturerID: padded(b"B4AE"),
            flags: 0,
            libraryDescription: padded(b"b4ae-pkcs11 post-quantum module"),
            libraryVersion: library_version(),
        };
        // SAFETY: PKCS#11 contract on pInfo.
        unsafe { write_out(info, value) }
    }

    fn C_GetFunctionStatus(session: CK_SESSION_HANDLE) {
        module::get()?.session(session)?;
        Err(Error(CKR_FUNCTION_NOT_PARALLEL))
    }

    fn C_CancelFunction(session: CK_SESSION_HANDLE) {
        module::get()?.session(session)?;
        Err(Error(CKR_FUNCTION_NOT_PARALLEL))
    }

    fn C_WaitForSlotEvent(flags: CK_FLAGS, slot: CK_SLOT_ID_PTR, reserved: CK_VOID_PTR) {
        let _ = (slot, reserved);
        module::get()?;
        // Slots and tokens never come and go while the module runs.
        if flags & CKF_DONT_BLOCK != 0 {
            Err(Error(CKR_NO_EVENT))
        } else {
            Err(Error::FUNCTION_NOT_SUPPORTED)
        }
    }
}

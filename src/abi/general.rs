//! General-purpose functions: `C_Initialize`, `C_Finalize`, `C_GetInfo`, and the legacy
//! parallel-function calls.

use super::{entry_points, write_out};
use crate::error::{Error, Result};
use crate::module;
use crate::token::info::{library_version, padded};
use cryptoki_sys::*;
use std::sync::Once;

/// Longest configuration string accepted in `pReserved`.
const MAX_RESERVED_LEN: usize = 1 << 20;

static ATFORK: Once = Once::new();
/// Registers the metrics file's last write at exit, once per process.
static ATEXIT: Once = Once::new();

extern "C" fn in_forked_child() {
    module::forked();
}

/// Reads `CK_C_INITIALIZE_ARGS`: mutex callbacks all set or all absent; a configuration string
/// may ride in `pReserved` (p11-kit's `x-init-reserved`).
///
/// # Safety
/// `args` must be NULL or point to a valid `CK_C_INITIALIZE_ARGS` (its `pReserved` may be
/// anything).
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
    // p11-kit passes a configuration string here; other callers pass anything at all (a
    // conformance suite passes (void*)1, NSS its own parameter strings), so the pointer is not
    // trusted: the kernel copies the string, answering EFAULT where a read would crash.
    let bytes = read_string_checked(args.pReserved as usize).ok_or_else(|| {
        tracing::warn!("C_Initialize: pReserved is not a readable string; refused");
        Error::ARGUMENTS_BAD
    })?;
    let text = String::from_utf8(bytes).map_err(|_| Error::ARGUMENTS_BAD)?;
    let trimmed = text.trim();
    if !trimmed.is_empty()
        && !trimmed.starts_with("config=")
        && trimmed.parse::<toml::Table>().is_err()
    {
        tracing::warn!("C_Initialize: pReserved holds no b4ae-pkcs11 configuration; refused");
        return Err(Error::ARGUMENTS_BAD);
    }
    Ok(Some(text))
}

/// Reads the NUL-terminated string at `address` (at most [`MAX_RESERVED_LEN`] bytes) through
/// `process_vm_readv` on this very process, page by page: an address that is not mapped gives
/// `None` instead of a fault.
fn read_string_checked(address: usize) -> Option<Vec<u8>> {
    const PAGE: usize = 4096;
    if address < PAGE {
        return None; // the NULL page: never a string
    }
    let mut out = Vec::new();
    let mut at = address;
    while out.len() < MAX_RESERVED_LEN {
        let mut chunk = vec![0u8; PAGE - at % PAGE];
        let local = libc::iovec {
            iov_base: chunk.as_mut_ptr().cast(),
            iov_len: chunk.len(),
        };
        let remote = libc::iovec {
            iov_base: at as *mut libc::c_void,
            iov_len: chunk.len(),
        };
        // SAFETY: the kernel writes at most `chunk.len()` bytes into `chunk`, which we own; the
        // remote range is only read by the kernel, which checks that it is mapped.
        let copied = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
        if copied != chunk.len() as isize {
            return None;
        }
        if let Some(nul) = chunk.iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..nul]);
            return Some(out);
        }
        out.extend_from_slice(&chunk);
        at += chunk.len();
    }
    None
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
        ATEXIT.call_once(|| {
            // SAFETY: registers a handler (for this library: glibc runs it at exit, or when the
            // library is unloaded first) that marks the exit and writes the metrics file.
            if unsafe { libc::atexit(crate::process_exit::at_exit) } != 0 {
                tracing::warn!("atexit failed: metrics since the last write are lost at exit");
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

//! Slot and token management: slot lists and information, mechanisms, `C_InitToken`,
//! `C_InitPIN`, `C_SetPIN`.

use super::{deliver_list, entry_points, input, library_version, output, padded, write_out};
use crate::error::{Error, Result};
use crate::mechanism;
use crate::module;
use crate::token::{MAX_PIN_LEN, MIN_PIN_LEN};
use cryptoki_sys::*;
use std::sync::atomic::Ordering;

/// PIN counter flags for one role.
fn pin_flags(
    failures: u32,
    max: u32,
    low: CK_FLAGS,
    final_try: CK_FLAGS,
    locked: CK_FLAGS,
) -> CK_FLAGS {
    match failures {
        0 => 0,
        f if f >= max => locked,
        f if f + 1 == max => low | final_try,
        _ => low,
    }
}

/// A PIN argument: bounded before it is read.
///
/// # Safety
/// `pin` must be NULL or valid for `len` bytes.
unsafe fn pin<'a>(pin: *const CK_UTF8CHAR, len: CK_ULONG) -> Result<&'a [u8]> {
    if len > MAX_PIN_LEN as CK_ULONG {
        return Err(Error::PIN_LEN_RANGE);
    }
    // SAFETY: forwarded contract, length bounded above.
    unsafe { input(pin, len) }
}

entry_points! {
    fn C_GetSlotList(token_present: CK_BBOOL, list: CK_SLOT_ID_PTR, count: CK_ULONG_PTR) {
        let _ = token_present; // every slot always holds its token
        let module = module::get()?;
        let slots: Vec<CK_SLOT_ID> = module.tokens.iter().map(|t| t.slot_id).collect();
        // SAFETY: PKCS#11 contract on pSlotList / pulCount.
        unsafe { deliver_list(list, count, &slots) }
    }

    fn C_GetSlotInfo(slot: CK_SLOT_ID, info: CK_SLOT_INFO_PTR) {
        let module = module::get()?;
        let token = module.token(slot)?;
        let value = CK_SLOT_INFO {
            slotDescription: padded(token.description.as_bytes()),
            manufacturerID: padded(b"B4AE"),
            flags: CKF_TOKEN_PRESENT,
            hardwareVersion: library_version(),
            firmwareVersion: library_version(),
        };
        // SAFETY: PKCS#11 contract on pInfo.
        unsafe { write_out(info, value) }
    }

    fn C_GetTokenInfo(slot: CK_SLOT_ID, info: CK_TOKEN_INFO_PTR) {
        let module = module::get()?;
        let token = module.token(slot)?;
        let state = token.state()?;
        let mut flags = CKF_RNG | CKF_LOGIN_REQUIRED;
        if state.initialized {
            flags |= CKF_TOKEN_INITIALIZED;
        }
        if state.user_pin_initialized {
            flags |= CKF_USER_PIN_INITIALIZED;
        }
        flags |= pin_flags(state.user_failures, state.max_failures, CKF_USER_PIN_COUNT_LOW, CKF_USER_PIN_FINAL_TRY, CKF_USER_PIN_LOCKED);
        flags |= pin_flags(state.so_failures, state.max_failures, CKF_SO_PIN_COUNT_LOW, CKF_SO_PIN_FINAL_TRY, CKF_SO_PIN_LOCKED);
        let value = CK_TOKEN_INFO {
            label: state.label,
            manufacturerID: padded(b"B4AE"),
            model: padded(token.model.as_bytes()),
            serialNumber: state.serial,
            flags,
            ulMaxSessionCount: CK_EFFECTIVELY_INFINITE,
            ulSessionCount: token.sessions.load(Ordering::SeqCst) as CK_ULONG,
            ulMaxRwSessionCount: CK_EFFECTIVELY_INFINITE,
            ulRwSessionCount: token.rw_sessions.load(Ordering::SeqCst) as CK_ULONG,
            ulMaxPinLen: MAX_PIN_LEN as CK_ULONG,
            ulMinPinLen: MIN_PIN_LEN as CK_ULONG,
            ulTotalPublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulTotalPrivateMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePrivateMemory: CK_UNAVAILABLE_INFORMATION,
            hardwareVersion: library_version(),
            firmwareVersion: library_version(),
            utcTime: [b' '; 16],
        };
        // SAFETY: PKCS#11 contract on pInfo.
        unsafe { write_out(info, value) }
    }

    fn C_GetMechanismList(slot: CK_SLOT_ID, list: CK_MECHANISM_TYPE_PTR, count: CK_ULONG_PTR) {
        module::get()?.token(slot)?;
        let mechanisms: Vec<CK_MECHANISM_TYPE> = mechanism::REGISTRY.iter().map(|m| m.mechanism).collect();
        // SAFETY: PKCS#11 contract on pMechanismList / pulCount.
        unsafe { deliver_list(list, count, &mechanisms) }
    }

    fn C_GetMechanismInfo(slot: CK_SLOT_ID, kind: CK_MECHANISM_TYPE, info: CK_MECHANISM_INFO_PTR) {
        module::get()?.token(slot)?;
        let m = mechanism::lookup(kind)?;
        let value = CK_MECHANISM_INFO {
            ulMinKeySize: m.min_key_size,
            ulMaxKeySize: m.max_key_size,
            flags: m.flags,
        };
        // SAFETY: PKCS#11 contract on pInfo.
        unsafe { write_out(info, value) }
    }

    fn C_InitToken(slot: CK_SLOT_ID, so_pin: CK_UTF8CHAR_PTR, so_pin_len: CK_ULONG, label: CK_UTF8CHAR_PTR) {
        let module = module::get()?;
        let token = module.token(slot)?;
        // SAFETY: PKCS#11 contract on pPin.
        let so_pin = unsafe { pin(so_pin, so_pin_len) }?;
        // SAFETY: pLabel is 32 bytes, blank-padded (PKCS#11 contract).
        let label: [u8; 32] = *unsafe { output(label as *mut [u8; 32]) }?;
        token.init_token(so_pin, &label)
    }

    fn C_InitPIN(session: CK_SESSION_HANDLE, new_pin: CK_UTF8CHAR_PTR, len: CK_ULONG) {
        let session = module::get()?.session(session)?;
        // SAFETY: PKCS#11 contract on pPin.
        let new_pin = unsafe { pin(new_pin, len) }?;
        if !session.rw {
            return Err(Error::SESSION_READ_ONLY);
        }
        session.token.init_pin(new_pin)
    }

    fn C_SetPIN(session: CK_SESSION_HANDLE, old: CK_UTF8CHAR_PTR, old_len: CK_ULONG, new: CK_UTF8CHAR_PTR, new_len: CK_ULONG) {
        let session = module::get()?.session(session)?;
        // SAFETY: PKCS#11 contract on pOldPin / pNewPin.
        let (old, new) = unsafe { (pin(old, old_len)?, pin(new, new_len)?) };
        if !session.rw {
            return Err(Error::SESSION_READ_ONLY);
        }
        session.token.set_pin(old, new)
    }
}

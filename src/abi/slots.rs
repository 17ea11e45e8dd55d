//! Slot and token management: slot lists and information, mechanisms, `C_InitToken`,
//! `C_InitPIN`, `C_SetPIN`.

use super::forward::{self, real};
use super::{
    deliver_list, entry_points, input, library_version, or_forward, output, padded, write_out,
};
use crate::error::{Error, Result};
use crate::mechanism;
use crate::module;
use crate::module::Slot;
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
        let slots: Vec<CK_SLOT_ID> = (0..module.slots.len() as CK_SLOT_ID).collect();
        // SAFETY: PKCS#11 contract on pSlotList / pulCount.
        unsafe { deliver_list(list, count, &slots) }
    }

    fn C_GetSlotInfo(slot: CK_SLOT_ID, info: CK_SLOT_INFO_PTR) {
        let module = module::get()?;
        let (description, flags) = match module.slot(slot)? {
            Slot::Embedded(token) => (token.description.clone(), CKF_TOKEN_PRESENT),
            Slot::Forwarded(token) => {
                let mut real = CK_SLOT_INFO::default();
                real!(token.lib, C_GetSlotInfo(token.real_slot(), &mut real))?;
                (token.description.clone(), real.flags | CKF_TOKEN_PRESENT)
            }
        };
        let value = CK_SLOT_INFO {
            slotDescription: padded(description.as_bytes()),
            manufacturerID: padded(b"B4AE"),
            flags,
            hardwareVersion: library_version(),
            firmwareVersion: library_version(),
        };
        // SAFETY: PKCS#11 contract on pInfo.
        unsafe { write_out(info, value) }
    }

    fn C_GetTokenInfo(slot: CK_SLOT_ID, info: CK_TOKEN_INFO_PTR) {
        let module = module::get()?;
        let token = match module.slot(slot)? {
            Slot::Embedded(token) => token,
            Slot::Forwarded(token) => {
                // SAFETY: PKCS#11 contract on pInfo.
                let out = unsafe { output(info) }?;
                return real!(token.lib, C_GetTokenInfo(token.real_slot(), out));
            }
        };
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
        let mechanisms: Vec<CK_MECHANISM_TYPE> = match module::get()?.slot(slot)? {
            Slot::Embedded(_) => mechanism::REGISTRY.iter().map(|m| m.mechanism).collect(),
            Slot::Forwarded(token) => token.mechanisms(),
        };
        // SAFETY: PKCS#11 contract on pMechanismList / pulCount.
        unsafe { deliver_list(list, count, &mechanisms) }
    }

    fn C_GetMechanismInfo(slot: CK_SLOT_ID, kind: CK_MECHANISM_TYPE, info: CK_MECHANISM_INFO_PTR) {
        let m = match module::get()?.slot(slot)? {
            Slot::Embedded(_) => mechanism::lookup(kind)?,
            Slot::Forwarded(token) => match token.ours(kind) {
                Some(m) => m,
                None => {
                    // SAFETY: PKCS#11 contract on pInfo.
                    let out = unsafe { output(info) }?;
                    return real!(token.lib, C_GetMechanismInfo(token.real_slot(), kind, out));
                }
            },
        };
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
        let token = match module.slot(slot)? {
            Slot::Embedded(token) => token,
            // SAFETY: PKCS#11 contract on pPin / pLabel.
            Slot::Forwarded(token) => return unsafe { forward::init_token(token, so_pin, so_pin_len, label) },
        };
        // SAFETY: PKCS#11 contract on pPin.
        let so_pin = unsafe { pin(so_pin, so_pin_len) }?;
        // SAFETY: pLabel is 32 bytes, blank-padded (PKCS#11 contract).
        let label: [u8; 32] = *unsafe { output(label as *mut [u8; 32]) }?;
        token.init_token(so_pin, &label)
    }

    fn C_InitPIN(session: CK_SESSION_HANDLE, new_pin: CK_UTF8CHAR_PTR, len: CK_ULONG) {
        let session = or_forward!(session, |f| {
            // SAFETY: PKCS#11 contract on pPin.
            unsafe { forward::check_input(new_pin, len) }?;
            real!(f.token.lib, C_InitPIN(f.real, new_pin, len))
        });
        // SAFETY: PKCS#11 contract on pPin.
        let new_pin = unsafe { pin(new_pin, len) }?;
        if !session.rw {
            return Err(Error::SESSION_READ_ONLY);
        }
        session.token.init_pin(new_pin)
    }

    fn C_SetPIN(session: CK_SESSION_HANDLE, old: CK_UTF8CHAR_PTR, old_len: CK_ULONG, new: CK_UTF8CHAR_PTR, new_len: CK_ULONG) {
        let session = or_forward!(session, |f| {
            // SAFETY: PKCS#11 contract on pOldPin / pNewPin.
            unsafe { forward::check_input(old, old_len).and(forward::check_input(new, new_len)) }?;
            real!(f.token.lib, C_SetPIN(f.real, old, old_len, new, new_len))
        });
        // SAFETY: PKCS#11 contract on pOldPin / pNewPin.
        let (old, new) = unsafe { (pin(old, old_len)?, pin(new, new_len)?) };
        if !session.rw {
            return Err(Error::SESSION_READ_ONLY);
        }
        session.token.set_pin(old, new)
    }
}

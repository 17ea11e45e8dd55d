//! Slot and token management: slot lists and information, mechanisms, `C_InitToken`,
//! `C_InitPIN`, `C_SetPIN`.

use super::{deliver_list, entry_points, input, output, session, write_out};
use crate::error::{Error, Result};
use crate::module;
use crate::token::info::{library_version, padded};
use crate::token::MAX_PIN_LEN;
use cryptoki_sys::*;

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
        let module = module::get()?;
        let present = |s: &std::sync::Arc<dyn crate::backend::Backend>| {
            token_present == CK_FALSE
                || s.slot_info().is_ok_and(|i| i.flags & CKF_TOKEN_PRESENT != 0)
        };
        let slots: Vec<CK_SLOT_ID> =
            module.slots.iter().filter(|s| present(s)).map(|s| s.slot_id()).collect();
        // SAFETY: PKCS#11 contract on pSlotList / pulCount.
        unsafe { deliver_list(list, count, &slots) }
    }

    fn C_GetSlotInfo(slot: CK_SLOT_ID, info: CK_SLOT_INFO_PTR) {
        let slot = module::get()?.slot(slot)?.slot_info()?;
        let value = CK_SLOT_INFO {
            slotDescription: padded(slot.description.as_bytes()),
            manufacturerID: padded(b"B4AE"),
            flags: slot.flags,
            hardwareVersion: library_version(),
            firmwareVersion: library_version(),
        };
        // SAFETY: PKCS#11 contract on pInfo.
        unsafe { write_out(info, value) }
    }

    fn C_GetTokenInfo(slot: CK_SLOT_ID, info: CK_TOKEN_INFO_PTR) {
        let module = module::get()?;
        let slot = module.slot(slot)?;
        // SAFETY: PKCS#11 contract on pInfo.
        let out = unsafe { output(info) }?;
        *out = slot.token_info()?;
        Ok(())
    }

    fn C_GetMechanismList(slot: CK_SLOT_ID, list: CK_MECHANISM_TYPE_PTR, count: CK_ULONG_PTR) {
        let mechanisms = module::get()?.slot(slot)?.mechanisms()?;
        // SAFETY: PKCS#11 contract on pMechanismList / pulCount.
        unsafe { deliver_list(list, count, &mechanisms) }
    }

    fn C_GetMechanismInfo(slot: CK_SLOT_ID, kind: CK_MECHANISM_TYPE, info: CK_MECHANISM_INFO_PTR) {
        let module = module::get()?;
        let slot = module.slot(slot)?;
        // SAFETY: PKCS#11 contract on pInfo.
        let out = unsafe { output(info) }?;
        *out = slot.mechanism_info(kind)?;
        Ok(())
    }

    fn C_InitToken(slot: CK_SLOT_ID, so_pin: CK_UTF8CHAR_PTR, so_pin_len: CK_ULONG, label: CK_UTF8CHAR_PTR) {
        let module = module::get()?;
        let slot = module.slot(slot)?;
        // SAFETY: PKCS#11 contract on pPin.
        let so_pin = unsafe { pin(so_pin, so_pin_len) }?;
        // SAFETY: pLabel is 32 bytes, blank-padded (PKCS#11 contract).
        let label: [u8; 32] = *unsafe { output(label as *mut [u8; 32]) }?;
        let result = slot.init_token(so_pin, &label);
        module.audit("token_initialized", slot.slot_id(), &result);
        result
    }

    fn C_InitPIN(session_handle: CK_SESSION_HANDLE, new_pin: CK_UTF8CHAR_PTR, len: CK_ULONG) {
        let session = session(session_handle)?;
        // SAFETY: PKCS#11 contract on pPin.
        let new_pin = unsafe { pin(new_pin, len) }?;
        let result = session.init_pin(new_pin);
        crate::module::audit("pin_initialized", session_handle, &result);
        result
    }

    fn C_SetPIN(session_handle: CK_SESSION_HANDLE, old: CK_UTF8CHAR_PTR, old_len: CK_ULONG, new: CK_UTF8CHAR_PTR, new_len: CK_ULONG) {
        let session = session(session_handle)?;
        // SAFETY: PKCS#11 contract on pOldPin / pNewPin.
        let (old, new) = unsafe { (pin(old, old_len)?, pin(new, new_len)?) };
        let result = session.set_pin(old, new);
        crate::module::audit("pin_changed", session_handle, &result);
        result
    }
}

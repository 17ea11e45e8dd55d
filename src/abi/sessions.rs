//! Session management and login: open/close, session information, `C_Login`, `C_Logout`,
//! `C_SessionCancel`, operation state.

use super::{entry_points, input, out_buffer, output, session, write_out};
use crate::error::Result;
use crate::module;
use crate::token::operations::OpKind;
use cryptoki_sys::*;

/// `C_Login` and `C_LoginUser` share this (`C_Login` with an empty user name).
///
/// # Safety
/// `pin` must be NULL or valid for `len` bytes.
unsafe fn login(
    handle: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    pin: *const CK_UTF8CHAR,
    len: CK_ULONG,
    username: &[u8],
) -> Result<()> {
    let session = session(handle)?;
    // SAFETY: forwarded contract.
    let pin = unsafe { input(pin, len) }?;
    let result = session.login_named(user, pin, username);
    crate::module::audit("login", handle, &result);
    result
}

entry_points! {
    fn C_OpenSession(slot: CK_SLOT_ID, flags: CK_FLAGS, application: CK_VOID_PTR, notify: CK_NOTIFY, out: CK_SESSION_HANDLE_PTR) {
        let _ = (application, notify); // the module makes no callbacks
        let module = module::get()?;
        // SAFETY: PKCS#11 contract on phSession.
        let out = unsafe { output(out) }?;
        *out = module.open_session(slot, flags)?;
        Ok(())
    }

    fn C_CloseSession(handle: CK_SESSION_HANDLE) {
        module::get()?.close_session(handle)
    }

    fn C_CloseAllSessions(slot: CK_SLOT_ID) {
        module::get()?.close_all_sessions(slot)
    }

    fn C_GetSessionInfo(handle: CK_SESSION_HANDLE, info: CK_SESSION_INFO_PTR) {
        let value = session(handle)?.info()?;
        // SAFETY: PKCS#11 contract on pInfo.
        unsafe { write_out(info, value) }
    }

    fn C_Login(handle: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: CK_UTF8CHAR_PTR, len: CK_ULONG) {
        // SAFETY: PKCS#11 contract on pPin.
        unsafe { login(handle, user, pin, len, b"") }
    }

    fn C_LoginUser(handle: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: CK_UTF8CHAR_PTR, len: CK_ULONG, username: CK_UTF8CHAR_PTR, username_len: CK_ULONG) {
        // Only an HSM with named users takes a name (the slot's backend decides).
        // SAFETY: PKCS#11 contract on pUsername.
        let username = unsafe { input(username, username_len) }?;
        // SAFETY: PKCS#11 contract on pPin.
        unsafe { login(handle, user, pin, len, username) }
    }

    fn C_Logout(handle: CK_SESSION_HANDLE) {
        session(handle)?.logout()?;
        crate::module::logged_out(handle);
        Ok(())
    }

    fn C_SessionCancel(handle: CK_SESSION_HANDLE, flags: CK_FLAGS) {
        let session = session(handle)?;
        for kind in OpKind::ALL.into_iter().filter(|k| flags & k.flag() != 0) {
            session.cancel(kind);
        }
        if flags & CKF_FIND_OBJECTS != 0 {
            let _ = session.ops().find_final();
        }
        if flags & CKF_VERIFY != 0 {
            session.ops().set_signature_first(None);
        }
        if flags & CKF_MESSAGE_SIGN != 0 {
            super::message::cancel(&*session, OpKind::Sign);
        }
        if flags & CKF_MESSAGE_VERIFY != 0 {
            super::message::cancel(&*session, OpKind::Verify);
        }
        // Other operations this module has (key generation, wrapping...) finish within their
        // one call, so there is nothing else to cancel.
        Ok(())
    }

    fn C_GetOperationState(handle: CK_SESSION_HANDLE, state: CK_BYTE_PTR, len: CK_ULONG_PTR) {
        let session = session(handle)?;
        // SAFETY: PKCS#11 contract on pOperationState / pulOperationStateLen.
        let out = unsafe { out_buffer(state, len) }?;
        session.operation_state(out)
    }

    fn C_SetOperationState(handle: CK_SESSION_HANDLE, state: CK_BYTE_PTR, len: CK_ULONG, encryption_key: CK_OBJECT_HANDLE, authentication_key: CK_OBJECT_HANDLE) {
        let session = session(handle)?;
        // SAFETY: PKCS#11 contract on pOperationState.
        let state = unsafe { input(state, len) }?;
        session.set_operation_state(state, encryption_key, authentication_key)
    }
}

//! Session management and login: open/close, session information, `C_Login`, `C_Logout`.

use super::forward::{self, real};
use super::{entry_points, input, or_forward, output, write_out};
use crate::backend::Role;
use crate::error::{Error, Result};
use crate::module;
use crate::module::{AnySession, Slot};
use crate::token::operations::OpKind;
use crate::token::MAX_PIN_LEN;
use cryptoki_sys::*;

/// `C_Login` and `C_LoginUser` share this.
///
/// # Safety
/// `pin` must be NULL or valid for `len` bytes.
unsafe fn login(
    session: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    pin: *const CK_UTF8CHAR,
    len: CK_ULONG,
) -> Result<()> {
    let module = module::get()?;
    let session = match module.session(session)? {
        AnySession::Embedded(session) => session,
        // SAFETY: forwarded contract on pPin.
        AnySession::Forwarded(f) => return unsafe { forward::login(&f, user, pin as *mut _, len) },
    };
    let role = match user {
        CKU_SO => Role::SecurityOfficer,
        CKU_USER => Role::User,
        // No key here demands re-authentication per use.
        CKU_CONTEXT_SPECIFIC => return Err(Error::OPERATION_NOT_INITIALIZED),
        _ => return Err(Error(CKR_USER_TYPE_INVALID)),
    };
    if len > MAX_PIN_LEN as CK_ULONG {
        return Err(Error::PIN_INCORRECT);
    }
    // SAFETY: forwarded contract, length bounded above.
    let pin = unsafe { input(pin, len) }?;
    let read_only = module.has_read_only_sessions(&session.token);
    session.token.login(role, pin, read_only)
}

entry_points! {
    fn C_OpenSession(slot: CK_SLOT_ID, flags: CK_FLAGS, application: CK_VOID_PTR, notify: CK_NOTIFY, session: CK_SESSION_HANDLE_PTR) {
        let _ = (application, notify); // the module makes no callbacks
        let module = module::get()?;
        // SAFETY: PKCS#11 contract on phSession.
        let out = unsafe { output(session) }?;
        *out = match module.slot(slot)? {
            Slot::Embedded(token) => module.open_session(token, flags)?,
            Slot::Forwarded(token) => forward::open_session(&module, token, flags)?,
        };
        Ok(())
    }

    fn C_CloseSession(session: CK_SESSION_HANDLE) {
        module::get()?.close_session(session)
    }

    fn C_CloseAllSessions(slot: CK_SLOT_ID) {
        module::get()?.close_all_sessions(slot)
    }

    fn C_GetSessionInfo(session: CK_SESSION_HANDLE, info: CK_SESSION_INFO_PTR) {
        let session = or_forward!(session, |f| forward::session_info(&f, info));
        let mut flags = CKF_SERIAL_SESSION;
        if session.rw {
            flags |= CKF_RW_SESSION;
        }
        let value = CK_SESSION_INFO {
            slotID: session.token.slot_id,
            state: session.state(),
            flags,
            ulDeviceError: 0,
        };
        // SAFETY: PKCS#11 contract on pInfo.
        unsafe { write_out(info, value) }
    }

    fn C_Login(session: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: CK_UTF8CHAR_PTR, len: CK_ULONG) {
        // SAFETY: PKCS#11 contract on pPin.
        unsafe { login(session, user, pin, len) }
    }

    fn C_LoginUser(session: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: CK_UTF8CHAR_PTR, len: CK_ULONG, username: CK_UTF8CHAR_PTR, username_len: CK_ULONG) {
        // Tokens here have no named users: only an empty user name can match.
        // SAFETY: PKCS#11 contract on pUsername.
        if !unsafe { input(username, username_len) }?.is_empty() {
            return Err(Error::ARGUMENTS_BAD);
        }
        // SAFETY: PKCS#11 contract on pPin.
        unsafe { login(session, user, pin, len) }
    }

    fn C_Logout(session: CK_SESSION_HANDLE) {
        or_forward!(session, |f| forward::logout(&f)).token.logout()
    }

    fn C_SessionCancel(session: CK_SESSION_HANDLE, flags: CK_FLAGS) {
        let session = module::get()?.session(session)?;
        for kind in OpKind::ALL.into_iter().filter(|k| flags & k.flag() != 0) {
            match &session {
                AnySession::Forwarded(f) => f.cancel(kind),
                AnySession::Embedded(s) => {
                    s.ops.cancel(kind);
                }
            }
        }
        if flags & CKF_FIND_OBJECTS != 0 {
            let _ = session.ops().find_final();
        }
        // Other operations this module has (key generation, wrapping...) finish within their
        // one call, so there is nothing else to cancel.
        Ok(())
    }

    fn C_GetOperationState(session: CK_SESSION_HANDLE, state: CK_BYTE_PTR, len: CK_ULONG_PTR) {
        or_forward!(session, |f| {
            // SAFETY: PKCS#11 contract on pOperationState / pulOperationStateLen.
            unsafe { forward::check_output(state, len) }?;
            real!(f.token.lib, C_GetOperationState(f.real, state, len))
        });
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }

    fn C_SetOperationState(session: CK_SESSION_HANDLE, state: CK_BYTE_PTR, len: CK_ULONG, encryption_key: CK_OBJECT_HANDLE, authentication_key: CK_OBJECT_HANDLE) {
        or_forward!(session, |f| {
            // SAFETY: PKCS#11 contract on pOperationState.
            unsafe { forward::check_input(state, len) }?;
            real!(f.token.lib, C_SetOperationState(f.real, state, len, encryption_key, authentication_key))
        });
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }
}

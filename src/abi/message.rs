//! Message-based signing and verification (PKCS#11 3.0: `C_MessageSignInit`, `C_SignMessage`,
//! `C_SignMessageBegin` / `Next`, `C_MessageSignFinal` and the verify side) and 3.2's
//! signature-first verification (`C_VerifySignatureInit` ...), for every signature mechanism a
//! session has, whoever performs it: each message is one signing (or verification) of the
//! session, begun with the message's own parameter (a `CK_SIGN_ADDITIONAL_CONTEXT` for ML-DSA,
//! ...; none: the init's). So while a message is under way, or a signature-first verification,
//! the session's `C_SignInit` (or `C_VerifyInit`) answers `CKR_OPERATION_ACTIVE`.

use super::{entry_points, input, mechanism, out_buffer, session};
use crate::backend::BackendSession;
use crate::error::{Error, Result};
use crate::mechanism::Mechanism;
use crate::token::io::{Output, Step};
use crate::token::operations::{MessageOp, OpKind};
use cryptoki_sys::*;

/// `C_MessageSignInit` / `C_MessageVerifyInit`: the mechanism is tried on the key at once, so
/// that a key or mechanism that cannot serve is refused here.
///
/// # Safety
/// `mech` must be NULL or a valid `CK_MECHANISM`.
unsafe fn message_init(
    handle: CK_SESSION_HANDLE,
    kind: OpKind,
    mech: *const CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> Result<()> {
    let session = session(handle)?;
    // SAFETY: forwarded contract.
    let mechanism = unsafe { mechanism(mech) }?;
    let op = MessageOp {
        mechanism: mechanism.clone(),
        key,
        in_message: false,
    };
    session.ops().message_init(kind, op, || {
        session.init(kind, &mechanism, Some(key))?;
        session.cancel(kind);
        Ok(())
    })?;
    crate::module::audit_key_use(handle, key);
    Ok(())
}

/// The mechanism of one message: the init's, with the message's parameter when it has one.
///
/// # Safety
/// `param` must be NULL or valid for `len` bytes.
unsafe fn for_message(op: &MessageOp, param: CK_VOID_PTR, len: CK_ULONG) -> Result<Mechanism> {
    if param.is_null() && len == 0 {
        return Ok(op.mechanism.clone());
    }
    let raw = CK_MECHANISM {
        mechanism: op.mechanism.mechanism,
        pParameter: param,
        ulParameterLen: len,
    };
    // SAFETY: forwarded contract on the parameter; `raw` lives through the call.
    unsafe { mechanism(&raw) }
}

/// Begins one message on the session's operation of `kind`.
///
/// # Safety
/// `param` must be NULL or valid for `len` bytes.
unsafe fn begin(
    session: &dyn BackendSession,
    kind: OpKind,
    param: CK_VOID_PTR,
    len: CK_ULONG,
) -> Result<MessageOp> {
    let op = session.ops().message(kind)?;
    if op.in_message {
        return Err(Error::OPERATION_ACTIVE);
    }
    // SAFETY: forwarded contract.
    let mechanism = unsafe { for_message(&op, param, len) }?;
    session.init(kind, &mechanism, Some(op.key))?;
    Ok(op)
}

/// The message under way of `kind`.
fn under_way(session: &dyn BackendSession, kind: OpKind) -> Result<()> {
    match session.ops().message(kind)?.in_message {
        true => Ok(()),
        false => Err(Error::OPERATION_NOT_INITIALIZED),
    }
}

/// `C_MessageSignFinal` / `C_MessageVerifyFinal`.
fn message_final(handle: CK_SESSION_HANDLE, kind: OpKind) -> Result<()> {
    let session = session(handle)?;
    if session.ops().message_final(kind)? {
        session.cancel(kind);
    }
    Ok(())
}

/// Ends a message-based operation of `kind` and the message under way, if any
/// (`C_SessionCancel`).
pub(super) fn cancel(session: &dyn BackendSession, kind: OpKind) {
    if session.ops().message_final(kind) == Ok(true) {
        session.cancel(kind);
    }
}

entry_points! {
    fn C_MessageSignInit(handle: CK_SESSION_HANDLE, mech: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
        // SAFETY: PKCS#11 contract on pMechanism.
        unsafe { message_init(handle, OpKind::Sign, mech, key) }
    }

    fn C_SignMessage(handle: CK_SESSION_HANDLE, param: CK_VOID_PTR, param_len: CK_ULONG, data: *mut CK_BYTE, data_len: CK_ULONG, signature: *mut CK_BYTE, signature_len: *mut CK_ULONG) {
        let session = session(handle)?;
        // SAFETY: PKCS#11 contract on the buffers.
        let (data, out) = unsafe { (input(data, data_len)?, out_buffer(signature, signature_len)?) };
        let query = out.is_query();
        // SAFETY: PKCS#11 contract on pParameter.
        unsafe { begin(&*session, OpKind::Sign, param, param_len) }?;
        let signed = session.step(OpKind::Sign, Step::Whole(data, out));
        if query || signed == Err(Error::BUFFER_TOO_SMALL) {
            // The length asked, the signing is not left open: the next call begins again.
            session.cancel(OpKind::Sign);
        }
        signed
    }

    fn C_SignMessageBegin(handle: CK_SESSION_HANDLE, param: CK_VOID_PTR, param_len: CK_ULONG) {
        let session = session(handle)?;
        // SAFETY: PKCS#11 contract on pParameter.
        unsafe { begin(&*session, OpKind::Sign, param, param_len) }?;
        session.ops().set_in_message(OpKind::Sign, true);
        Ok(())
    }

    fn C_SignMessageNext(handle: CK_SESSION_HANDLE, param: CK_VOID_PTR, param_len: CK_ULONG, data: *mut CK_BYTE, data_len: CK_ULONG, signature: *mut CK_BYTE, signature_len: *mut CK_ULONG) {
        let _ = (param, param_len); // the message's parameter was given to C_SignMessageBegin
        let session = session(handle)?;
        under_way(&*session, OpKind::Sign)?;
        // SAFETY: PKCS#11 contract on pData.
        let data = unsafe { input(data, data_len) }?;
        if signature_len.is_null() {
            // A part of the message.
            let part = session.step(OpKind::Sign, Step::Update(data));
            if part.is_err() {
                session.ops().set_in_message(OpKind::Sign, false);
            }
            return part;
        }
        // The last part: the length is learnt first, so that a length query or a short buffer
        // (which the caller repeats with the same part) does not take the part twice.
        let mut needed: CK_ULONG = 0;
        session.step(OpKind::Sign, Step::Final(Output::new(None, &mut needed)))?;
        // SAFETY: PKCS#11 contract on pSignature / pulSignatureLen.
        let out = unsafe { out_buffer(signature, signature_len) }?;
        match out.capacity() {
            None => return out.fill(needed, None),
            Some(room) if room < needed as usize => {
                out.fill(needed, None)?;
                return Err(Error::BUFFER_TOO_SMALL);
            }
            Some(_) => {}
        }
        let done = session
            .step(OpKind::Sign, Step::Update(data))
            .and_then(|()| session.step(OpKind::Sign, Step::Final(out)));
        session.ops().set_in_message(OpKind::Sign, false);
        done
    }

    fn C_MessageSignFinal(handle: CK_SESSION_HANDLE) {
        message_final(handle, OpKind::Sign)
    }

    fn C_MessageVerifyInit(handle: CK_SESSION_HANDLE, mech: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE) {
        // SAFETY: PKCS#11 contract on pMechanism.
        unsafe { message_init(handle, OpKind::Verify, mech, key) }
    }

    fn C_VerifyMessage(handle: CK_SESSION_HANDLE, param: CK_VOID_PTR, param_len: CK_ULONG, data: *mut CK_BYTE, data_len: CK_ULONG, signature: *mut CK_BYTE, signature_len: CK_ULONG) {
        let session = session(handle)?;
        // SAFETY: PKCS#11 contract on the buffers.
        let (data, signature) = unsafe { (input(data, data_len)?, input(signature, signature_len)?) };
        // SAFETY: PKCS#11 contract on pParameter.
        unsafe { begin(&*session, OpKind::Verify, param, param_len) }?;
        session.step(OpKind::Verify, Step::Verify(data, signature))
    }

    fn C_VerifyMessageBegin(handle: CK_SESSION_HANDLE, param: CK_VOID_PTR, param_len: CK_ULONG) {
        let session = session(handle)?;
        // SAFETY: PKCS#11 contract on pParameter.
        unsafe { begin(&*session, OpKind::Verify, param, param_len) }?;
        session.ops().set_in_message(OpKind::Verify, true);
        Ok(())
    }

    fn C_VerifyMessageNext(handle: CK_SESSION_HANDLE, param: CK_VOID_PTR, param_len: CK_ULONG, data: *mut CK_BYTE, data_len: CK_ULONG, signature: *mut CK_BYTE, signature_len: CK_ULONG) {
        let _ = (param, param_len); // the message's parameter was given to C_VerifyMessageBegin
        let session = session(handle)?;
        under_way(&*session, OpKind::Verify)?;
        // SAFETY: PKCS#11 contract on pData.
        let data = unsafe { input(data, data_len) }?;
        let last = !signature.is_null();
        let result = session.step(OpKind::Verify, Step::Update(data)).and_then(|()| {
            if !last {
                return Ok(());
            }
            // SAFETY: PKCS#11 contract on pSignature.
            let signature = unsafe { input(signature, signature_len) }?;
            session.step(OpKind::Verify, Step::VerifyFinal(signature))
        });
        if last || result.is_err() {
            session.ops().set_in_message(OpKind::Verify, false);
        }
        result
    }

    fn C_MessageVerifyFinal(handle: CK_SESSION_HANDLE) {
        message_final(handle, OpKind::Verify)
    }

    fn C_VerifySignatureInit(handle: CK_SESSION_HANDLE, mech: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE, signature: *mut CK_BYTE, signature_len: CK_ULONG) {
        let session = session(handle)?;
        // SAFETY: PKCS#11 contract on pMechanism and pSignature.
        let (mechanism, signature) = unsafe { (mechanism(mech)?, input(signature, signature_len)?) };
        session.init(OpKind::Verify, &mechanism, Some(key))?;
        session.ops().set_signature_first(Some(signature.to_vec()));
        crate::module::audit_key_use(handle, key);
        Ok(())
    }

    fn C_VerifySignature(handle: CK_SESSION_HANDLE, data: *mut CK_BYTE, data_len: CK_ULONG) {
        let session = session(handle)?;
        let signature = session.ops().signature_first()?;
        // SAFETY: PKCS#11 contract on pData.
        let data = unsafe { input(data, data_len) };
        let result = data.and_then(|data| session.step(OpKind::Verify, Step::Verify(data, &signature)));
        session.ops().set_signature_first(None);
        session.cancel(OpKind::Verify);
        result
    }

    fn C_VerifySignatureUpdate(handle: CK_SESSION_HANDLE, part: *mut CK_BYTE, part_len: CK_ULONG) {
        let session = session(handle)?;
        session.ops().signature_first()?;
        // SAFETY: PKCS#11 contract on pPart.
        let part = unsafe { input(part, part_len) };
        let result = part.and_then(|part| session.step(OpKind::Verify, Step::Update(part)));
        if result.is_err() {
            session.ops().set_signature_first(None);
            session.cancel(OpKind::Verify);
        }
        result
    }

    fn C_VerifySignatureFinal(handle: CK_SESSION_HANDLE) {
        let session = session(handle)?;
        let signature = session.ops().signature_first()?;
        let result = session.step(OpKind::Verify, Step::VerifyFinal(&signature));
        session.ops().set_signature_first(None);
        session.cancel(OpKind::Verify);
        result
    }
}

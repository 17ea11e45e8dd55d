//! Functions only a real HSM performs here (wrapping, derivation, recovery, dual-function
//! calls...): decoded like every other call and handed to the session's backend; an embedded
//! token answers `CKR_FUNCTION_NOT_SUPPORTED`.

use super::{entry_points, in_out, input, mechanism, out_buffer, output, session, template};
use crate::backend::{Dual, Recover};
use crate::error::Result;
use cryptoki_sys::*;

/// The dual-function updates. Arguments refused here end both operations.
///
/// # Safety
/// PKCS#11 contract on the buffers.
unsafe fn dual(
    handle: CK_SESSION_HANDLE,
    dual: Dual,
    data: *const CK_BYTE,
    len: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> Result<()> {
    let session = session(handle)?;
    // SAFETY: forwarded contract.
    let (data, out) = match unsafe { in_out(data, len, out, out_len) } {
        Ok(args) => args,
        Err(e) => {
            for kind in dual.kinds() {
                session.cancel(kind);
            }
            return Err(e);
        }
    };
    session.dual_update(dual, &data, out)
}

entry_points! {
    fn C_SignRecoverInit(handle: CK_SESSION_HANDLE, mech: CK_MECHANISM_PTR, key: CK_OBJECT_HANDLE) {
        let session = session(handle)?;
        // SAFETY: PKCS#11 contract on pMechanism.
        let mech = unsafe { mechanism(mech) }?;
        session.recover_init(Recover::Sign, &mech, key)
    }

    fn C_VerifyRecoverInit(handle: CK_SESSION_HANDLE, mech: CK_MECHANISM_PTR, key: CK_OBJECT_HANDLE) {
        let session = session(handle)?;
        // SAFETY: PKCS#11 contract on pMechanism.
        let mech = unsafe { mechanism(mech) }?;
        session.recover_init(Recover::Verify, &mech, key)
    }

    fn C_SignRecover(handle: CK_SESSION_HANDLE, data: CK_BYTE_PTR, len: CK_ULONG, out: CK_BYTE_PTR, out_len: CK_ULONG_PTR) {
        let session = session(handle)?;
        // SAFETY: PKCS#11 contract on the buffers.
        let (data, out) = unsafe { in_out(data, len, out, out_len) }?;
        session.recover(Recover::Sign, &data, out)
    }

    fn C_VerifyRecover(handle: CK_SESSION_HANDLE, data: CK_BYTE_PTR, len: CK_ULONG, out: CK_BYTE_PTR, out_len: CK_ULONG_PTR) {
        let session = session(handle)?;
        // SAFETY: PKCS#11 contract on the buffers.
        let (data, out) = unsafe { in_out(data, len, out, out_len) }?;
        session.recover(Recover::Verify, &data, out)
    }

    fn C_DigestEncryptUpdate(handle: CK_SESSION_HANDLE, data: CK_BYTE_PTR, len: CK_ULONG, out: CK_BYTE_PTR, out_len: CK_ULONG_PTR) {
        // SAFETY: PKCS#11 contract on the buffers.
        unsafe { dual(handle, Dual::DigestEncrypt, data, len, out, out_len) }
    }

    fn C_DecryptDigestUpdate(handle: CK_SESSION_HANDLE, data: CK_BYTE_PTR, len: CK_ULONG, out: CK_BYTE_PTR, out_len: CK_ULONG_PTR) {
        // SAFETY: PKCS#11 contract on the buffers.
        unsafe { dual(handle, Dual::DecryptDigest, data, len, out, out_len) }
    }

    fn C_SignEncryptUpdate(handle: CK_SESSION_HANDLE, data: CK_BYTE_PTR, len: CK_ULONG, out: CK_BYTE_PTR, out_len: CK_ULONG_PTR) {
        // SAFETY: PKCS#11 contract on the buffers.
        unsafe { dual(handle, Dual::SignEncrypt, data, len, out, out_len) }
    }

    fn C_DecryptVerifyUpdate(handle: CK_SESSION_HANDLE, data: CK_BYTE_PTR, len: CK_ULONG, out: CK_BYTE_PTR, out_len: CK_ULONG_PTR) {
        // SAFETY: PKCS#11 contract on the buffers.
        unsafe { dual(handle, Dual::DecryptVerify, data, len, out, out_len) }
    }

    fn C_DigestKey(handle: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) {
        session(handle)?.digest_key(key)
    }

    fn C_WrapKey(handle: CK_SESSION_HANDLE, mech: CK_MECHANISM_PTR, wrapping: CK_OBJECT_HANDLE, key: CK_OBJECT_HANDLE, out: CK_BYTE_PTR, out_len: CK_ULONG_PTR) {
        let session = session(handle)?;
        // SAFETY: PKCS#11 contract on pMechanism and the output buffer.
        let (out, mech) = unsafe { (out_buffer(out, out_len)?, mechanism(mech)?) };
        session.wrap_key(&mech, wrapping, key, out)
    }

    fn C_UnwrapKey(handle: CK_SESSION_HANDLE, mech: CK_MECHANISM_PTR, unwrapping: CK_OBJECT_HANDLE, wrapped: CK_BYTE_PTR, wrapped_len: CK_ULONG, attrs: CK_ATTRIBUTE_PTR, count: CK_ULONG, key: CK_OBJECT_HANDLE_PTR) {
        let session = session(handle)?;
        // SAFETY: PKCS#11 contract on every pointer.
        let (wrapped, template, mech, key_out) = unsafe {
            (input(wrapped, wrapped_len)?, template(attrs, count)?, mechanism(mech)?, output(key)?)
        };
        *key_out = session.unwrap_key(&mech, unwrapping, wrapped, template)?;
        Ok(())
    }

    fn C_DeriveKey(handle: CK_SESSION_HANDLE, mech: CK_MECHANISM_PTR, base: CK_OBJECT_HANDLE, attrs: CK_ATTRIBUTE_PTR, count: CK_ULONG, key: CK_OBJECT_HANDLE_PTR) {
        let session = session(handle)?;
        // SAFETY: PKCS#11 contract on pMechanism / pTemplate / phKey.
        let (template, mech, key_out) = unsafe { (template(attrs, count)?, mechanism(mech)?, output(key)?) };
        *key_out = session.derive_key(&mech, base, template)?;
        Ok(())
    }
}

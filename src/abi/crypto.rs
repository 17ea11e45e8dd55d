//! Cryptographic functions: digest, sign, verify, random, key-pair generation. Each decodes
//! the caller's arguments and hands them to the session's backend, which knows who performs
//! the operation (this module, or the HSM behind a pkcs11 slot).

use super::{entry_points, in_out, input, mechanism, out_buffer, output, rv_of, session, template};
use crate::backend::BackendSession;
use crate::error::{Error, Result};
use crate::token::io::Step;
use crate::token::operations::OpKind;
use cryptoki_sys::*;

/// `C_xInit`. A NULL mechanism cancels the active operation (PKCS#11 3.0).
///
/// # Safety
/// `mech` must be NULL or a valid `CK_MECHANISM`.
pub(super) unsafe fn init(
    handle: CK_SESSION_HANDLE,
    kind: OpKind,
    mech: *const CK_MECHANISM,
    key: Option<CK_OBJECT_HANDLE>,
) -> Result<()> {
    let session = session(handle)?;
    if mech.is_null() {
        session.cancel(kind);
        return Ok(());
    }
    // SAFETY: forwarded contract.
    let mech = unsafe { mechanism(mech) }?;
    let begun = session.init(kind, &mech, key);
    crate::metrics::operation(kind.name(), mech.mechanism, rv_of(&begun));
    begun?;
    if let Some(key) = key {
        crate::module::audit_key_use(handle, key);
    }
    Ok(())
}

/// Arguments of a call of an active operation, as decoded: refused ones end the operation,
/// as the call would have ended it (PKCS#11: any answer but `CKR_BUFFER_TOO_SMALL` ends it).
pub(super) fn decoded<T>(session: &dyn BackendSession, kind: OpKind, args: Result<T>) -> Result<T> {
    if args.is_err() {
        session.cancel(kind);
    }
    args
}

/// One call of an active operation whose arguments borrow nothing that needs keeping.
pub(super) fn step<'a>(
    handle: CK_SESSION_HANDLE,
    kind: OpKind,
    decode: impl FnOnce() -> Result<Step<'a>>,
) -> Result<()> {
    let session = session(handle)?;
    let step = decoded(&*session, kind, decode())?;
    session.step(kind, step)
}

/// The single-part call of an operation that produces output.
///
/// # Safety
/// PKCS#11 contract on the four buffer arguments.
pub(super) unsafe fn whole(
    handle: CK_SESSION_HANDLE,
    kind: OpKind,
    data: *const CK_BYTE,
    len: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> Result<()> {
    let session = session(handle)?;
    // SAFETY: forwarded contract.
    let (data, out) = decoded(&*session, kind, unsafe { in_out(data, len, out, out_len) })?;
    session.step(kind, Step::Whole(&data, out))
}

/// `C_xUpdate` of an operation that produces no output per part.
///
/// # Safety
/// PKCS#11 contract on `part`.
pub(super) unsafe fn update(
    handle: CK_SESSION_HANDLE,
    kind: OpKind,
    part: *const CK_BYTE,
    len: CK_ULONG,
) -> Result<()> {
    // SAFETY: forwarded contract.
    step(handle, kind, || {
        Ok(Step::Update(unsafe { input(part, len) }?))
    })
}

/// `C_xFinal` of an operation that produces output.
///
/// # Safety
/// PKCS#11 contract on the buffer.
pub(super) unsafe fn finish(
    handle: CK_SESSION_HANDLE,
    kind: OpKind,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> Result<()> {
    // SAFETY: forwarded contract.
    step(handle, kind, || {
        Ok(Step::Final(unsafe { out_buffer(out, out_len) }?))
    })
}

entry_points! {
    fn C_DigestInit(handle: CK_SESSION_HANDLE, mech: CK_MECHANISM_PTR) {
        // SAFETY: PKCS#11 contract on pMechanism.
        unsafe { init(handle, OpKind::Digest, mech, None) }
    }

    fn C_Digest(handle: CK_SESSION_HANDLE, data: CK_BYTE_PTR, len: CK_ULONG, digest: CK_BYTE_PTR, digest_len: CK_ULONG_PTR) {
        // SAFETY: PKCS#11 contract on the buffers.
        unsafe { whole(handle, OpKind::Digest, data, len, digest, digest_len) }
    }

    fn C_DigestUpdate(handle: CK_SESSION_HANDLE, part: CK_BYTE_PTR, len: CK_ULONG) {
        // SAFETY: PKCS#11 contract on pPart.
        unsafe { update(handle, OpKind::Digest, part, len) }
    }

    fn C_DigestFinal(handle: CK_SESSION_HANDLE, digest: CK_BYTE_PTR, digest_len: CK_ULONG_PTR) {
        // SAFETY: PKCS#11 contract on the buffer.
        unsafe { finish(handle, OpKind::Digest, digest, digest_len) }
    }

    fn C_SignInit(handle: CK_SESSION_HANDLE, mech: CK_MECHANISM_PTR, key: CK_OBJECT_HANDLE) {
        // SAFETY: PKCS#11 contract on pMechanism.
        unsafe { init(handle, OpKind::Sign, mech, Some(key)) }
    }

    fn C_Sign(handle: CK_SESSION_HANDLE, data: CK_BYTE_PTR, len: CK_ULONG, signature: CK_BYTE_PTR, signature_len: CK_ULONG_PTR) {
        // SAFETY: PKCS#11 contract on the buffers.
        unsafe { whole(handle, OpKind::Sign, data, len, signature, signature_len) }
    }

    fn C_SignUpdate(handle: CK_SESSION_HANDLE, part: CK_BYTE_PTR, len: CK_ULONG) {
        // SAFETY: PKCS#11 contract on pPart.
        unsafe { update(handle, OpKind::Sign, part, len) }
    }

    fn C_SignFinal(handle: CK_SESSION_HANDLE, signature: CK_BYTE_PTR, signature_len: CK_ULONG_PTR) {
        // SAFETY: PKCS#11 contract on the buffer.
        unsafe { finish(handle, OpKind::Sign, signature, signature_len) }
    }

    fn C_VerifyInit(handle: CK_SESSION_HANDLE, mech: CK_MECHANISM_PTR, key: CK_OBJECT_HANDLE) {
        // SAFETY: PKCS#11 contract on pMechanism.
        unsafe { init(handle, OpKind::Verify, mech, Some(key)) }
    }

    fn C_Verify(handle: CK_SESSION_HANDLE, data: CK_BYTE_PTR, len: CK_ULONG, signature: CK_BYTE_PTR, signature_len: CK_ULONG) {
        step(handle, OpKind::Verify, || {
            // SAFETY: PKCS#11 contract on pData / pSignature.
            unsafe { Ok(Step::Verify(input(data, len)?, input(signature, signature_len)?)) }
        })
    }

    fn C_VerifyUpdate(handle: CK_SESSION_HANDLE, part: CK_BYTE_PTR, len: CK_ULONG) {
        // SAFETY: PKCS#11 contract on pPart.
        unsafe { update(handle, OpKind::Verify, part, len) }
    }

    fn C_VerifyFinal(handle: CK_SESSION_HANDLE, signature: CK_BYTE_PTR, signature_len: CK_ULONG) {
        step(handle, OpKind::Verify, || {
            // SAFETY: PKCS#11 contract on pSignature.
            Ok(Step::VerifyFinal(unsafe { input(signature, signature_len) }?))
        })
    }

    fn C_GenerateKeyPair(
        handle: CK_SESSION_HANDLE,
        mech: CK_MECHANISM_PTR,
        public_template: CK_ATTRIBUTE_PTR,
        public_count: CK_ULONG,
        private_template: CK_ATTRIBUTE_PTR,
        private_count: CK_ULONG,
        public_key: CK_OBJECT_HANDLE_PTR,
        private_key: CK_OBJECT_HANDLE_PTR,
    ) {
        let session = session(handle)?;
        // SAFETY: PKCS#11 contract on every pointer argument.
        let (mech, public, private, public_out, private_out) = unsafe {
            (
                mechanism(mech)?,
                template(public_template, public_count)?,
                template(private_template, private_count)?,
                output(public_key)?,
                output(private_key)?,
            )
        };
        let public = crate::mechanism::eddsa::with_default_curve(&mech, public);
        let made = session.generate_key_pair(&mech, public, private);
        crate::metrics::operation("generate_key_pair", mech.mechanism, rv_of(&made));
        crate::module::audit("key_created", handle, &made);
        let (public, private) = made?;
        *public_out = public;
        *private_out = private;
        Ok(())
    }

    fn C_SeedRandom(handle: CK_SESSION_HANDLE, seed: CK_BYTE_PTR, len: CK_ULONG) {
        let session = session(handle)?;
        // SAFETY: PKCS#11 contract on pSeed.
        let seed = unsafe { input(seed, len) }?;
        session.seed_random(seed)
    }

    fn C_GenerateRandom(handle: CK_SESSION_HANDLE, out: CK_BYTE_PTR, len: CK_ULONG) {
        let session = session(handle)?;
        if len > super::MAX_DATA_LEN || (out.is_null() && len > 0) {
            return Err(Error::ARGUMENTS_BAD);
        }
        if len == 0 {
            return session.generate_random(&mut []);
        }
        // SAFETY: non-NULL and writable for `len` bytes (PKCS#11 contract), length bounded.
        let buf = unsafe { std::slice::from_raw_parts_mut(out, len as usize) };
        session.generate_random(buf)
    }
}

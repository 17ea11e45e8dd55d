//! Cryptographic functions this module performs: digest, sign, verify, random, key-pair
//! generation. On a forwarded session each call goes to the real HSM, except for operations
//! this module started itself there (post-quantum keys kept as records). Which of the two
//! performs an operation is known to the session's [`Operations`], the one owner of that.

use super::forward::{self, check_input, check_output, checked_mechanism, real};
use super::{deliver, entry_points, input, mechanism, or_forward, output, template};
use crate::error::{Error, Result};
use crate::module::{self, AnySession};
use crate::token::operations::{OpKind, Operations, Performer};
use cryptoki_sys::*;

/// Runs one call of an active operation: an error ends the operation, except
/// `CKR_BUFFER_TOO_SMALL`, after which the caller retries.
pub(super) fn within(
    ops: &Operations,
    kind: OpKind,
    body: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let result = body();
    if matches!(result, Err(e) if e != Error::BUFFER_TOO_SMALL) {
        ops.cancel(kind);
    }
    result
}

/// A call of an operation of `kind`: performed here (`local`) on an embedded token or when
/// this module runs the operation, else by the HSM (`in_hsm` with the forwarded session).
pub(super) fn route(
    handle: CK_SESSION_HANDLE,
    kind: OpKind,
    in_hsm: impl FnOnce(&crate::backend::pkcs11::ForwardSession) -> Result<()>,
    local: impl FnOnce(&Operations) -> Result<()>,
) -> Result<()> {
    let session = module::get()?.session(handle)?;
    match &session {
        AnySession::Forwarded(f) if f.ops.performer(kind) != Performer::Here => in_hsm(f),
        _ => within(session.ops(), kind, || local(session.ops())),
    }
}

/// `C_xInit` with a NULL mechanism: PKCS#11 3.0 makes it cancel the active operation.
pub(super) fn cancel(handle: CK_SESSION_HANDLE, kind: OpKind) -> Result<()> {
    match module::get()?.session(handle)? {
        AnySession::Forwarded(f) => f.cancel(kind),
        AnySession::Embedded(s) => {
            s.ops.cancel(kind);
        }
    }
    Ok(())
}

entry_points! {
    fn C_DigestInit(session: CK_SESSION_HANDLE, mech: CK_MECHANISM_PTR) {
        if mech.is_null() {
            return cancel(session, OpKind::Digest);
        }
        let session = or_forward!(session, |f| {
            // SAFETY: PKCS#11 contract on pMechanism.
            let mut mech = unsafe { checked_mechanism(mech) }?;
            f.ops.begin_in_hsm(OpKind::Digest, || real!(f.token.lib, C_DigestInit(f.real, mech.as_ptr())))
        });
        // SAFETY: PKCS#11 contract on pMechanism.
        let mech = unsafe { mechanism(mech) }?;
        session.ops.digest_init(&mech)
    }

    fn C_Digest(session: CK_SESSION_HANDLE, data: CK_BYTE_PTR, len: CK_ULONG, digest: CK_BYTE_PTR, digest_len: CK_ULONG_PTR) {
        route(session, OpKind::Digest, |f| {
            // SAFETY: PKCS#11 contract on the buffers.
            let check = unsafe { check_input(data, len).and(check_output(digest, digest_len)) };
            f.step_in_hsm(OpKind::Digest, digest.is_null(), check, || {
                real!(f.token.lib, C_Digest(f.real, data, len, digest, digest_len))
            })
        }, |ops| {
            // SAFETY: PKCS#11 contract on pData / pDigest / pulDigestLen.
            unsafe {
                let data = input(data, len)?;
                deliver(digest, digest_len, ops.digest_len()?, || ops.digest(data))
            }
        })
    }

    fn C_DigestUpdate(session: CK_SESSION_HANDLE, part: CK_BYTE_PTR, len: CK_ULONG) {
        route(session, OpKind::Digest, |f| {
            // SAFETY: PKCS#11 contract on pPart.
            let check = unsafe { check_input(part, len) };
            f.step_in_hsm(OpKind::Digest, true, check, || real!(f.token.lib, C_DigestUpdate(f.real, part, len)))
        }, |ops| {
            // SAFETY: PKCS#11 contract on pPart.
            let part = unsafe { input(part, len) }?;
            ops.digest_update(part)
        })
    }

    fn C_DigestFinal(session: CK_SESSION_HANDLE, digest: CK_BYTE_PTR, digest_len: CK_ULONG_PTR) {
        route(session, OpKind::Digest, |f| {
            // SAFETY: PKCS#11 contract on the buffer.
            let check = unsafe { check_output(digest, digest_len) };
            f.step_in_hsm(OpKind::Digest, digest.is_null(), check, || {
                real!(f.token.lib, C_DigestFinal(f.real, digest, digest_len))
            })
        }, |ops| {
            // SAFETY: PKCS#11 contract on pDigest / pulDigestLen.
            unsafe { deliver(digest, digest_len, ops.digest_len()?, || ops.digest_final()) }
        })
    }

    fn C_SignInit(session: CK_SESSION_HANDLE, mech: CK_MECHANISM_PTR, key: CK_OBJECT_HANDLE) {
        if mech.is_null() {
            return cancel(session, OpKind::Sign);
        }
        // SAFETY: PKCS#11 contract on pMechanism.
        let session = or_forward!(session, |f| unsafe { forward::sign_init(&f, mech, key) });
        // SAFETY: PKCS#11 contract on pMechanism.
        let mech = unsafe { mechanism(mech) }?;
        session.sign_init(&mech, key)
    }

    fn C_Sign(session: CK_SESSION_HANDLE, data: CK_BYTE_PTR, len: CK_ULONG, signature: CK_BYTE_PTR, signature_len: CK_ULONG_PTR) {
        route(session, OpKind::Sign, |f| {
            // SAFETY: PKCS#11 contract on the buffers.
            let check = unsafe { check_input(data, len).and(check_output(signature, signature_len)) };
            f.step_in_hsm(OpKind::Sign, signature.is_null(), check, || {
                real!(f.token.lib, C_Sign(f.real, data, len, signature, signature_len))
            })
        }, |ops| {
            // SAFETY: PKCS#11 contract on pData / pSignature / pulSignatureLen.
            unsafe {
                let data = input(data, len)?;
                deliver(signature, signature_len, ops.signature_len()?, || ops.sign(data))
            }
        })
    }

    fn C_SignUpdate(session: CK_SESSION_HANDLE, part: CK_BYTE_PTR, len: CK_ULONG) {
        route(session, OpKind::Sign, |f| {
            // SAFETY: PKCS#11 contract on pPart.
            let check = unsafe { check_input(part, len) };
            f.step_in_hsm(OpKind::Sign, true, check, || real!(f.token.lib, C_SignUpdate(f.real, part, len)))
        }, |ops| {
            // SAFETY: PKCS#11 contract on pPart.
            let part = unsafe { input(part, len) }?;
            ops.sign_update(part)
        })
    }

    fn C_SignFinal(session: CK_SESSION_HANDLE, signature: CK_BYTE_PTR, signature_len: CK_ULONG_PTR) {
        route(session, OpKind::Sign, |f| {
            // SAFETY: PKCS#11 contract on the buffer.
            let check = unsafe { check_output(signature, signature_len) };
            f.step_in_hsm(OpKind::Sign, signature.is_null(), check, || {
                real!(f.token.lib, C_SignFinal(f.real, signature, signature_len))
            })
        }, |ops| {
            // SAFETY: PKCS#11 contract on pSignature / pulSignatureLen.
            unsafe { deliver(signature, signature_len, ops.signature_len()?, || ops.sign_final()) }
        })
    }

    fn C_VerifyInit(session: CK_SESSION_HANDLE, mech: CK_MECHANISM_PTR, key: CK_OBJECT_HANDLE) {
        if mech.is_null() {
            return cancel(session, OpKind::Verify);
        }
        // SAFETY: PKCS#11 contract on pMechanism.
        let session = or_forward!(session, |f| unsafe { forward::verify_init(&f, mech, key) });
        // SAFETY: PKCS#11 contract on pMechanism.
        let mech = unsafe { mechanism(mech) }?;
        session.verify_init(&mech, key)
    }

    fn C_Verify(session: CK_SESSION_HANDLE, data: CK_BYTE_PTR, len: CK_ULONG, signature: CK_BYTE_PTR, signature_len: CK_ULONG) {
        route(session, OpKind::Verify, |f| {
            // SAFETY: PKCS#11 contract on the buffers.
            let check = unsafe { check_input(data, len).and(check_input(signature, signature_len)) };
            f.step_in_hsm(OpKind::Verify, false, check, || {
                real!(f.token.lib, C_Verify(f.real, data, len, signature, signature_len))
            })
        }, |ops| {
            // SAFETY: PKCS#11 contract on pData / pSignature.
            let (data, signature) = unsafe { (input(data, len)?, input(signature, signature_len)?) };
            ops.verify(data, signature)
        })
    }

    fn C_VerifyUpdate(session: CK_SESSION_HANDLE, part: CK_BYTE_PTR, len: CK_ULONG) {
        route(session, OpKind::Verify, |f| {
            // SAFETY: PKCS#11 contract on pPart.
            let check = unsafe { check_input(part, len) };
            f.step_in_hsm(OpKind::Verify, true, check, || real!(f.token.lib, C_VerifyUpdate(f.real, part, len)))
        }, |ops| {
            // SAFETY: PKCS#11 contract on pPart.
            let part = unsafe { input(part, len) }?;
            ops.verify_update(part)
        })
    }

    fn C_VerifyFinal(session: CK_SESSION_HANDLE, signature: CK_BYTE_PTR, signature_len: CK_ULONG) {
        route(session, OpKind::Verify, |f| {
            // SAFETY: PKCS#11 contract on pSignature.
            let check = unsafe { check_input(signature, signature_len) };
            f.step_in_hsm(OpKind::Verify, false, check, || {
                real!(f.token.lib, C_VerifyFinal(f.real, signature, signature_len))
            })
        }, |ops| {
            // SAFETY: PKCS#11 contract on pSignature.
            let signature = unsafe { input(signature, signature_len) }?;
            ops.verify_final(signature)
        })
    }

    fn C_GenerateKeyPair(
        session: CK_SESSION_HANDLE,
        mech: CK_MECHANISM_PTR,
        public_template: CK_ATTRIBUTE_PTR,
        public_count: CK_ULONG,
        private_template: CK_ATTRIBUTE_PTR,
        private_count: CK_ULONG,
        public_key: CK_OBJECT_HANDLE_PTR,
        private_key: CK_OBJECT_HANDLE_PTR,
    ) {
        let session = or_forward!(session, |f| {
            // SAFETY: PKCS#11 contract on every pointer argument.
            unsafe {
                forward::generate_key_pair(&f, mech, public_template, public_count, private_template, private_count, public_key, private_key)
            }
        });
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
        let (public, private) = session.generate_key_pair(&mech, public, private)?;
        *public_out = public;
        *private_out = private;
        Ok(())
    }

    fn C_SeedRandom(session: CK_SESSION_HANDLE, seed: CK_BYTE_PTR, len: CK_ULONG) {
        or_forward!(session, |f| {
            // SAFETY: PKCS#11 contract on pSeed.
            unsafe { check_input(seed, len) }?;
            real!(f.token.lib, C_SeedRandom(f.real, seed, len))
        });
        // SAFETY: PKCS#11 contract on pSeed.
        unsafe { input(seed, len) }?;
        // The operating system's generator takes no seed from callers.
        Err(Error(CKR_RANDOM_SEED_NOT_SUPPORTED))
    }

    fn C_GenerateRandom(session: CK_SESSION_HANDLE, out: CK_BYTE_PTR, len: CK_ULONG) {
        if len > super::MAX_DATA_LEN || (out.is_null() && len > 0) {
            module::get()?.session(session)?;
            return Err(Error::ARGUMENTS_BAD);
        }
        or_forward!(session, |f| real!(f.token.lib, C_GenerateRandom(f.real, out, len)));
        if len == 0 {
            return Ok(());
        }
        // SAFETY: non-NULL and writable for `len` bytes (PKCS#11 contract), length bounded.
        let buf = unsafe { std::slice::from_raw_parts_mut(out, len as usize) };
        getrandom::getrandom(buf).map_err(|_| Error::DEVICE)
    }
}

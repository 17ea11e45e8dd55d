//! Cryptographic functions: digest, sign, verify, random, key-pair generation.

use super::{deliver, entry_points, input, mechanism, output, template};
use crate::error::{Error, Result};
use crate::module;
use crate::token::session::Session;
use cryptoki_sys::*;

/// Runs one call of an active operation: an error ends the operation (through `abort`), except
/// `CKR_BUFFER_TOO_SMALL`, after which the caller retries.
fn within(session: &Session, abort: fn(&Session), body: impl FnOnce() -> Result<()>) -> Result<()> {
    let result = body();
    if matches!(result, Err(e) if e != Error::BUFFER_TOO_SMALL) {
        abort(session);
    }
    result
}

entry_points! {
    fn C_DigestInit(session: CK_SESSION_HANDLE, mech: CK_MECHANISM_PTR) {
        let session = module::get()?.session(session)?;
        // SAFETY: PKCS#11 contract on pMechanism.
        let mech = unsafe { mechanism(mech) }?;
        session.digest_init(&mech)
    }

    fn C_Digest(session: CK_SESSION_HANDLE, data: CK_BYTE_PTR, len: CK_ULONG, digest: CK_BYTE_PTR, digest_len: CK_ULONG_PTR) {
        let session = module::get()?.session(session)?;
        within(&session, Session::digest_abort, || {
            // SAFETY: PKCS#11 contract on pData / pDigest / pulDigestLen.
            unsafe {
                let data = input(data, len)?;
                deliver(digest, digest_len, session.digest_len()?, || session.digest(data))
            }
        })
    }

    fn C_DigestUpdate(session: CK_SESSION_HANDLE, part: CK_BYTE_PTR, len: CK_ULONG) {
        let session = module::get()?.session(session)?;
        within(&session, Session::digest_abort, || {
            // SAFETY: PKCS#11 contract on pPart.
            let part = unsafe { input(part, len) }?;
            session.digest_update(part)
        })
    }

    fn C_DigestFinal(session: CK_SESSION_HANDLE, digest: CK_BYTE_PTR, digest_len: CK_ULONG_PTR) {
        let session = module::get()?.session(session)?;
        within(&session, Session::digest_abort, || {
            // SAFETY: PKCS#11 contract on pDigest / pulDigestLen.
            unsafe { deliver(digest, digest_len, session.digest_len()?, || session.digest_final()) }
        })
    }

    fn C_SignInit(session: CK_SESSION_HANDLE, mech: CK_MECHANISM_PTR, key: CK_OBJECT_HANDLE) {
        let session = module::get()?.session(session)?;
        // SAFETY: PKCS#11 contract on pMechanism.
        let mech = unsafe { mechanism(mech) }?;
        session.sign_init(&mech, key)
    }

    fn C_Sign(session: CK_SESSION_HANDLE, data: CK_BYTE_PTR, len: CK_ULONG, signature: CK_BYTE_PTR, signature_len: CK_ULONG_PTR) {
        let session = module::get()?.session(session)?;
        within(&session, Session::sign_abort, || {
            // SAFETY: PKCS#11 contract on pData / pSignature / pulSignatureLen.
            unsafe {
                let data = input(data, len)?;
                deliver(signature, signature_len, session.signature_len()?, || session.sign(data))
            }
        })
    }

    fn C_SignUpdate(session: CK_SESSION_HANDLE, part: CK_BYTE_PTR, len: CK_ULONG) {
        let session = module::get()?.session(session)?;
        within(&session, Session::sign_abort, || {
            // SAFETY: PKCS#11 contract on pPart.
            let part = unsafe { input(part, len) }?;
            session.sign_update(part)
        })
    }

    fn C_SignFinal(session: CK_SESSION_HANDLE, signature: CK_BYTE_PTR, signature_len: CK_ULONG_PTR) {
        let session = module::get()?.session(session)?;
        within(&session, Session::sign_abort, || {
            // SAFETY: PKCS#11 contract on pSignature / pulSignatureLen.
            unsafe { deliver(signature, signature_len, session.signature_len()?, || session.sign_final()) }
        })
    }

    fn C_VerifyInit(session: CK_SESSION_HANDLE, mech: CK_MECHANISM_PTR, key: CK_OBJECT_HANDLE) {
        let session = module::get()?.session(session)?;
        // SAFETY: PKCS#11 contract on pMechanism.
        let mech = unsafe { mechanism(mech) }?;
        session.verify_init(&mech, key)
    }

    fn C_Verify(session: CK_SESSION_HANDLE, data: CK_BYTE_PTR, len: CK_ULONG, signature: CK_BYTE_PTR, signature_len: CK_ULONG) {
        let session = module::get()?.session(session)?;
        within(&session, Session::verify_abort, || {
            // SAFETY: PKCS#11 contract on pData / pSignature.
            let (data, signature) = unsafe { (input(data, len)?, input(signature, signature_len)?) };
            session.verify(data, signature)
        })
    }

    fn C_VerifyUpdate(session: CK_SESSION_HANDLE, part: CK_BYTE_PTR, len: CK_ULONG) {
        let session = module::get()?.session(session)?;
        within(&session, Session::verify_abort, || {
            // SAFETY: PKCS#11 contract on pPart.
            let part = unsafe { input(part, len) }?;
            session.verify_update(part)
        })
    }

    fn C_VerifyFinal(session: CK_SESSION_HANDLE, signature: CK_BYTE_PTR, signature_len: CK_ULONG) {
        let session = module::get()?.session(session)?;
        within(&session, Session::verify_abort, || {
            // SAFETY: PKCS#11 contract on pSignature.
            let signature = unsafe { input(signature, signature_len) }?;
            session.verify_final(signature)
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
        let session = module::get()?.session(session)?;
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
        module::get()?.session(session)?;
        // SAFETY: PKCS#11 contract on pSeed.
        unsafe { input(seed, len) }?;
        // The operating system's generator takes no seed from callers.
        Err(Error(CKR_RANDOM_SEED_NOT_SUPPORTED))
    }

    fn C_GenerateRandom(session: CK_SESSION_HANDLE, out: CK_BYTE_PTR, len: CK_ULONG) {
        module::get()?.session(session)?;
        if len == 0 {
            return Ok(());
        }
        if out.is_null() || len > super::MAX_DATA_LEN {
            return Err(Error::ARGUMENTS_BAD);
        }
        // SAFETY: non-NULL and writable for `len` bytes (PKCS#11 contract), length bounded.
        let buf = unsafe { std::slice::from_raw_parts_mut(out, len as usize) };
        getrandom::getrandom(buf).map_err(|_| Error::DEVICE)
    }
}

//! Key encapsulation (PKCS#11 3.2, in the 3.2 function table only): `C_EncapsulateKey` and
//! `C_DecapsulateKey`. On a forwarded session the module encapsulates with its own key records
//! and places the resulting secret key in the real HSM.

use super::{entry_points, forward, input, mechanism, output, template};
use crate::error::Error;
use crate::module::{self, AnySession};
use cryptoki_sys::*;

entry_points! {
    fn C_EncapsulateKey(
        session: CK_SESSION_HANDLE,
        mech: CK_MECHANISM_PTR,
        public_key: CK_OBJECT_HANDLE,
        attrs: CK_ATTRIBUTE_PTR,
        count: CK_ULONG,
        ciphertext: CK_BYTE_PTR,
        ciphertext_len: CK_ULONG_PTR,
        key: CK_OBJECT_HANDLE_PTR,
    ) {
        let session = module::get()?.session(session)?;
        // SAFETY: PKCS#11 contract on every pointer argument.
        let (mech, template, len) =
            unsafe { (mechanism(mech)?, template(attrs, count)?, output(ciphertext_len)?) };
        let needed = match &session {
            AnySession::Embedded(s) => s.ciphertext_len(&mech, public_key)?,
            AnySession::Forwarded(f) => forward::ciphertext_len(f, &mech, public_key)?,
        };
        if ciphertext.is_null() {
            *len = needed as CK_ULONG;
            return Ok(());
        }
        if (*len as usize) < needed {
            *len = needed as CK_ULONG;
            return Err(Error::BUFFER_TOO_SMALL);
        }
        // SAFETY: PKCS#11 contract on phKey.
        let key_out = unsafe { output(key) }?;
        let (bytes, handle) = match &session {
            AnySession::Embedded(s) => s.encapsulate(&mech, public_key, template)?,
            AnySession::Forwarded(f) => forward::encapsulate(f, &mech, public_key, template)?,
        };
        if bytes.len() > *len as usize {
            return Err(Error::GENERAL);
        }
        // SAFETY: `ciphertext` is writable for `*len` bytes and the ciphertext fits in it.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ciphertext, bytes.len()) };
        *len = bytes.len() as CK_ULONG;
        *key_out = handle;
        Ok(())
    }

    fn C_DecapsulateKey(
        session: CK_SESSION_HANDLE,
        mech: CK_MECHANISM_PTR,
        private_key: CK_OBJECT_HANDLE,
        attrs: CK_ATTRIBUTE_PTR,
        count: CK_ULONG,
        ciphertext: CK_BYTE_PTR,
        ciphertext_len: CK_ULONG,
        key: CK_OBJECT_HANDLE_PTR,
    ) {
        let session = module::get()?.session(session)?;
        // SAFETY: PKCS#11 contract on every pointer argument.
        let (mech, template, ciphertext, key_out) = unsafe {
            (
                mechanism(mech)?,
                template(attrs, count)?,
                input(ciphertext, ciphertext_len)?,
                output(key)?,
            )
        };
        *key_out = match &session {
            AnySession::Embedded(s) => s.decapsulate(&mech, private_key, template, ciphertext)?,
            AnySession::Forwarded(f) => {
                forward::decapsulate(f, &mech, private_key, template, ciphertext)?
            }
        };
        Ok(())
    }
}

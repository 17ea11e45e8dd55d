//! Key encapsulation (PKCS#11 3.2, in the 3.2 function table only): `C_EncapsulateKey` and
//! `C_DecapsulateKey`.

use super::{entry_points, input, mechanism, out_buffer, output, session, template};
use crate::error::Error;
use cryptoki_sys::*;

entry_points! {
    fn C_EncapsulateKey(
        handle: CK_SESSION_HANDLE,
        mech: CK_MECHANISM_PTR,
        public_key: CK_OBJECT_HANDLE,
        attrs: CK_ATTRIBUTE_PTR,
        count: CK_ULONG,
        ciphertext: CK_BYTE_PTR,
        ciphertext_len: CK_ULONG_PTR,
        key: CK_OBJECT_HANDLE_PTR,
    ) {
        let session = session(handle)?;
        // SAFETY: PKCS#11 contract on every pointer argument.
        let (mech, template, out) = unsafe {
            (mechanism(mech)?, template(attrs, count)?, out_buffer(ciphertext, ciphertext_len)?)
        };
        let needed = session.ciphertext_len(&mech, public_key)?;
        if out.is_query() {
            return out.deliver(needed, || Err(Error::GENERAL));
        }
        // SAFETY: PKCS#11 contract on phKey.
        let key_out = unsafe { output(key) }?;
        let mut handle = CK_INVALID_HANDLE;
        let delivered = out.deliver(needed, || {
            let (bytes, made) = session.encapsulate(&mech, public_key, template)?;
            handle = made;
            Ok(bytes)
        });
        crate::metrics::operation("encapsulate", mech.mechanism, super::rv_of(&delivered));
        delivered?;
        *key_out = handle;
        Ok(())
    }

    fn C_DecapsulateKey(
        handle: CK_SESSION_HANDLE,
        mech: CK_MECHANISM_PTR,
        private_key: CK_OBJECT_HANDLE,
        attrs: CK_ATTRIBUTE_PTR,
        count: CK_ULONG,
        ciphertext: CK_BYTE_PTR,
        ciphertext_len: CK_ULONG,
        key: CK_OBJECT_HANDLE_PTR,
    ) {
        let session = session(handle)?;
        // SAFETY: PKCS#11 contract on every pointer argument.
        let (mech, template, ciphertext, key_out) = unsafe {
            (
                mechanism(mech)?,
                template(attrs, count)?,
                input(ciphertext, ciphertext_len)?,
                output(key)?,
            )
        };
        let made = session.decapsulate(&mech, private_key, template, ciphertext);
        crate::metrics::operation("decapsulate", mech.mechanism, super::rv_of(&made));
        *key_out = made?;
        Ok(())
    }
}

//! Encryption, decryption and secret-key generation: performed here on an embedded token
//! (`CKM_AES_GCM`, `CKM_AES_KEY_GEN`), by the HSM on a pkcs11 slot.

use super::crypto::{decoded, finish, init, whole};
use super::{entry_points, in_out, mechanism, output, session, template};
use crate::token::io::Step;
use crate::token::operations::OpKind;
use cryptoki_sys::*;

/// The four entry points of one direction.
macro_rules! cipher {
    ($kind:expr, $init:ident, $single:ident, $update:ident, $final:ident) => {
        entry_points! {
            fn $init(handle: CK_SESSION_HANDLE, mech: CK_MECHANISM_PTR, key: CK_OBJECT_HANDLE) {
                // SAFETY: PKCS#11 contract on pMechanism.
                unsafe { init(handle, $kind, mech, Some(key)) }
            }

            fn $single(handle: CK_SESSION_HANDLE, data: CK_BYTE_PTR, len: CK_ULONG, out: CK_BYTE_PTR, out_len: CK_ULONG_PTR) {
                // SAFETY: PKCS#11 contract on the buffers.
                unsafe { whole(handle, $kind, data, len, out, out_len) }
            }

            fn $update(handle: CK_SESSION_HANDLE, part: CK_BYTE_PTR, len: CK_ULONG, out: CK_BYTE_PTR, out_len: CK_ULONG_PTR) {
                let session = session(handle)?;
                // SAFETY: PKCS#11 contract on the buffers.
                let (part, out) = decoded(&*session, $kind, unsafe { in_out(part, len, out, out_len) })?;
                session.step($kind, Step::CipherUpdate(&part, out))
            }

            fn $final(handle: CK_SESSION_HANDLE, out: CK_BYTE_PTR, out_len: CK_ULONG_PTR) {
                // SAFETY: PKCS#11 contract on the buffer.
                unsafe { finish(handle, $kind, out, out_len) }
            }
        }
    };
}

cipher!(
    OpKind::Encrypt,
    C_EncryptInit,
    C_Encrypt,
    C_EncryptUpdate,
    C_EncryptFinal
);
cipher!(
    OpKind::Decrypt,
    C_DecryptInit,
    C_Decrypt,
    C_DecryptUpdate,
    C_DecryptFinal
);

entry_points! {
    fn C_GenerateKey(handle: CK_SESSION_HANDLE, mech: CK_MECHANISM_PTR, attrs: CK_ATTRIBUTE_PTR, count: CK_ULONG, key: CK_OBJECT_HANDLE_PTR) {
        let session = session(handle)?;
        // SAFETY: PKCS#11 contract on every pointer argument.
        let (mech, template, key_out) =
            unsafe { (mechanism(mech)?, template(attrs, count)?, output(key)?) };
        let made = session.generate_key(&mech, template);
        crate::metrics::operation("generate_key", mech.mechanism, super::rv_of(&made));
        crate::module::audit("key_created", handle, &made);
        *key_out = made?;
        Ok(())
    }
}

//! Encryption, decryption and secret-key generation: performed here on an embedded token
//! (`CKM_AES_GCM`, `CKM_AES_KEY_GEN`), forwarded to the HSM on a pkcs11 slot.

use super::crypto::{cancel, route};
use super::forward::{check_input, check_output, check_template, checked_mechanism, real};
use super::{deliver, entry_points, input, mechanism, or_forward, output, template};
use crate::error::Error;
use crate::token::operations::Direction;
use cryptoki_sys::*;

/// The four entry points of one direction.
macro_rules! cipher {
    ($direction:expr, $init:ident, $single:ident, $update:ident, $final:ident) => {
        entry_points! {
            fn $init(session: CK_SESSION_HANDLE, mech: CK_MECHANISM_PTR, key: CK_OBJECT_HANDLE) {
                if mech.is_null() {
                    return cancel(session, $direction.into());
                }
                let session = or_forward!(session, |f| {
                    if f.token.keys.is_record(key) {
                        // A post-quantum key record neither encrypts nor decrypts.
                        return Err(Error::KEY_TYPE_INCONSISTENT);
                    }
                    // SAFETY: PKCS#11 contract on pMechanism.
                    let mut mech = unsafe { checked_mechanism(mech) }?;
                    f.ops.begin_in_hsm($direction.into(), || real!(f.token.lib, $init(f.real, mech.as_ptr(), key)))
                });
                // SAFETY: PKCS#11 contract on pMechanism.
                let mech = unsafe { mechanism(mech) }?;
                session.cipher_init($direction, &mech, key)
            }

            fn $single(session: CK_SESSION_HANDLE, data: CK_BYTE_PTR, len: CK_ULONG, out: CK_BYTE_PTR, out_len: CK_ULONG_PTR) {
                route(session, $direction.into(), |f| {
                    // SAFETY: PKCS#11 contract on the buffers.
                    let check = unsafe { check_input(data, len).and(check_output(out, out_len)) };
                    f.step_in_hsm($direction.into(), out.is_null(), check, || {
                        real!(f.token.lib, $single(f.real, data, len, out, out_len))
                    })
                }, |ops| {
                    // SAFETY: PKCS#11 contract on pData / pOut / pulOutLen.
                    unsafe {
                        let data = input(data, len)?;
                        let needed = ops.cipher_len($direction, data.len())?;
                        deliver(out, out_len, needed, || ops.cipher_one_shot($direction, data))
                    }
                })
            }

            fn $update(session: CK_SESSION_HANDLE, data: CK_BYTE_PTR, len: CK_ULONG, out: CK_BYTE_PTR, out_len: CK_ULONG_PTR) {
                route(session, $direction.into(), |f| {
                    // SAFETY: PKCS#11 contract on the buffers.
                    let check = unsafe { check_input(data, len).and(check_output(out, out_len)) };
                    f.step_in_hsm($direction.into(), true, check, || {
                        real!(f.token.lib, $update(f.real, data, len, out, out_len))
                    })
                }, |ops| {
                    // SAFETY: PKCS#11 contract on pPart / pOut / pulOutLen. GCM answers
                    // everything at the final call, so each part yields no output; a call with
                    // a NULL output buffer only asks that length and consumes nothing.
                    unsafe {
                        let data = input(data, len)?;
                        *output(out_len)? = 0;
                        if out.is_null() {
                            return Ok(());
                        }
                        ops.cipher_update($direction, data)
                    }
                })
            }

            fn $final(session: CK_SESSION_HANDLE, out: CK_BYTE_PTR, out_len: CK_ULONG_PTR) {
                route(session, $direction.into(), |f| {
                    // SAFETY: PKCS#11 contract on the buffer.
                    let check = unsafe { check_output(out, out_len) };
                    f.step_in_hsm($direction.into(), out.is_null(), check, || {
                        real!(f.token.lib, $final(f.real, out, out_len))
                    })
                }, |ops| {
                    // SAFETY: PKCS#11 contract on pOut / pulOutLen.
                    unsafe {
                        let needed = ops.cipher_final_len($direction)?;
                        deliver(out, out_len, needed, || ops.cipher_final($direction))
                    }
                })
            }
        }
    };
}

cipher!(
    Direction::Encrypt,
    C_EncryptInit,
    C_Encrypt,
    C_EncryptUpdate,
    C_EncryptFinal
);
cipher!(
    Direction::Decrypt,
    C_DecryptInit,
    C_Decrypt,
    C_DecryptUpdate,
    C_DecryptFinal
);

entry_points! {
    fn C_GenerateKey(session: CK_SESSION_HANDLE, mech: CK_MECHANISM_PTR, attrs: CK_ATTRIBUTE_PTR, count: CK_ULONG, key: CK_OBJECT_HANDLE_PTR) {
        let session = or_forward!(session, |f| {
            // SAFETY: PKCS#11 contract on pMechanism / pTemplate / phKey.
            let mut mech = unsafe { check_template(attrs, count).and_then(|()| checked_mechanism(mech)) }?;
            if key.is_null() {
                return Err(Error::ARGUMENTS_BAD);
            }
            real!(f.token.lib, C_GenerateKey(f.real, mech.as_ptr(), attrs, count, key))
        });
        // SAFETY: PKCS#11 contract on every pointer argument.
        let (mech, template, key_out) =
            unsafe { (mechanism(mech)?, template(attrs, count)?, output(key)?) };
        *key_out = session.generate_key(&mech, template)?;
        Ok(())
    }
}

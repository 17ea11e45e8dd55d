//! Functions only a real HSM performs here (wrapping, derivation, recovery, dual-function
//! calls...): forwarded for sessions of a pkcs11 slot, `CKR_FUNCTION_NOT_SUPPORTED` on an
//! embedded token.

use super::entry_points;
use super::forward::{
    check_input, check_output, check_template, checked_mechanism, checked_or_end, end_real, real,
};
use crate::error::Error;
use crate::module::{self, AnySession};
use crate::token::operations::{OpKind, Performer};
use cryptoki_sys::*;

/// The forwarded session behind a handle, or `CKR_FUNCTION_NOT_SUPPORTED` for an embedded one.
macro_rules! forwarded {
    ($handle:expr) => {
        match module::get()?.session($handle)? {
            AnySession::Forwarded(f) => f,
            AnySession::Embedded(_) => return Err(Error::FUNCTION_NOT_SUPPORTED),
        }
    };
}

/// `C_xInit(session, mechanism, key)`.
macro_rules! init {
    ($($name:ident),*) => {
        entry_points! {
            $(fn $name(session: CK_SESSION_HANDLE, mech: CK_MECHANISM_PTR, key: CK_OBJECT_HANDLE) {
                let f = forwarded!(session);
                // SAFETY: PKCS#11 contract on pMechanism.
                let mut mech = unsafe { checked_mechanism(mech) }?;
                real!(f.token.lib, $name(f.real, mech.as_ptr(), key))
            })*
        }
    };
}

/// `C_x(session, in, in_len, out, out_len)`, with how to end the real operation(s) when the
/// arguments are refused.
macro_rules! in_out {
    ($($name:ident => [$($how:ident $end:ident),+]),* $(,)?) => {
        entry_points! {
            $(fn $name(session: CK_SESSION_HANDLE, data: CK_BYTE_PTR, len: CK_ULONG, out: CK_BYTE_PTR, out_len: CK_ULONG_PTR) {
                let f = forwarded!(session);
                // SAFETY: PKCS#11 contract on the buffers.
                let check = unsafe { check_input(data, len).and(check_output(out, out_len)) };
                checked_or_end(check, || { $(end_real!(f, $how $end);)+ })?;
                real!(f.token.lib, $name(f.real, data, len, out, out_len))
            })*
        }
    };
}

/// The dual-function updates: parts of two active operations at once, both performed by the
/// HSM; an error ends both.
macro_rules! dual {
    ($($name:ident => [$($kind:ident),+]),* $(,)?) => {
        entry_points! {
            $(fn $name(session: CK_SESSION_HANDLE, data: CK_BYTE_PTR, len: CK_ULONG, out: CK_BYTE_PTR, out_len: CK_ULONG_PTR) {
                let f = forwarded!(session);
                // SAFETY: PKCS#11 contract on the buffers.
                let check = unsafe { check_input(data, len).and(check_output(out, out_len)) };
                if check.is_err() {
                    $(f.cancel(OpKind::$kind);)+
                    return check;
                }
                if $(f.ops.performer(OpKind::$kind) != Performer::Hsm)||+ {
                    return Err(Error::OPERATION_NOT_INITIALIZED);
                }
                let result = real!(f.token.lib, $name(f.real, data, len, out, out_len));
                if matches!(result, Err(e) if e != Error::BUFFER_TOO_SMALL) {
                    // The HSM ended both operations.
                    $(f.ops.cancel(OpKind::$kind);)+
                }
                result
            })*
        }
    };
}

init!(C_SignRecoverInit, C_VerifyRecoverInit);
in_out!(
    C_SignRecover => [single C_SignRecover],
    C_VerifyRecover => [single C_VerifyRecover],
);
dual!(
    C_DigestEncryptUpdate => [Digest, Encrypt],
    C_DecryptDigestUpdate => [Decrypt, Digest],
    C_SignEncryptUpdate => [Sign, Encrypt],
    C_DecryptVerifyUpdate => [Decrypt, Verify],
);

entry_points! {
    fn C_DigestKey(session: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) {
        let f = forwarded!(session);
        real!(f.token.lib, C_DigestKey(f.real, key))
    }


    fn C_WrapKey(session: CK_SESSION_HANDLE, mech: CK_MECHANISM_PTR, wrapping: CK_OBJECT_HANDLE, key: CK_OBJECT_HANDLE, out: CK_BYTE_PTR, out_len: CK_ULONG_PTR) {
        let f = forwarded!(session);
        if f.token.keys.is_record(key) {
            // A sealed record is not the HSM's key: it cannot wrap it.
            return Err(Error(CKR_KEY_NOT_WRAPPABLE));
        }
        // SAFETY: PKCS#11 contract on pMechanism and the output buffer.
        let mut mech = unsafe { check_output(out, out_len).and_then(|()| checked_mechanism(mech)) }?;
        real!(f.token.lib, C_WrapKey(f.real, mech.as_ptr(), wrapping, key, out, out_len))
    }

    fn C_UnwrapKey(session: CK_SESSION_HANDLE, mech: CK_MECHANISM_PTR, unwrapping: CK_OBJECT_HANDLE, wrapped: CK_BYTE_PTR, wrapped_len: CK_ULONG, attrs: CK_ATTRIBUTE_PTR, count: CK_ULONG, key: CK_OBJECT_HANDLE_PTR) {
        let f = forwarded!(session);
        // SAFETY: PKCS#11 contract on every pointer.
        let mut mech = unsafe {
            check_input(wrapped, wrapped_len)
                .and_then(|()| check_template(attrs, count))
                .and_then(|()| checked_mechanism(mech))
        }?;
        if key.is_null() {
            return Err(Error::ARGUMENTS_BAD);
        }
        real!(f.token.lib, C_UnwrapKey(f.real, mech.as_ptr(), unwrapping, wrapped, wrapped_len, attrs, count, key))
    }

    fn C_DeriveKey(session: CK_SESSION_HANDLE, mech: CK_MECHANISM_PTR, base: CK_OBJECT_HANDLE, attrs: CK_ATTRIBUTE_PTR, count: CK_ULONG, key: CK_OBJECT_HANDLE_PTR) {
        let f = forwarded!(session);
        // SAFETY: PKCS#11 contract on pMechanism / pTemplate.
        let mut mech = unsafe { check_template(attrs, count).and_then(|()| checked_mechanism(mech)) }?;
        real!(f.token.lib, C_DeriveKey(f.real, mech.as_ptr(), base, attrs, count, key))
    }
}

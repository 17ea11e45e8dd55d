//! Key encapsulation (`C_EncapsulateKey` / `C_DecapsulateKey`) with `CKM_ML_KEM`: the checks on
//! mechanism and key, and the secret key object made from the shared secret.

use crate::error::{Error, Result};
use crate::mechanism::{mlkem, Mechanism};
use crate::token::attributes::Attributes;
use crate::token::factory;
use crate::token::object::Object;
use cryptoki_sys::*;

/// Checks the mechanism and that `key` may do `usage` (`CKA_ENCAPSULATE` / `CKA_DECAPSULATE`).
fn check(
    mechanism: &Mechanism,
    key: &Object,
    class: CK_OBJECT_CLASS,
    usage: CK_ATTRIBUTE_TYPE,
) -> Result<()> {
    if mechanism.mechanism != CKM_ML_KEM {
        return Err(Error::MECHANISM_INVALID);
    }
    mechanism.expect_no_param()?;
    if key.class() != class || key.key_type() != Some(CKK_ML_KEM) {
        return Err(Error::KEY_TYPE_INCONSISTENT);
    }
    if !key.attrs.bool_or(usage, false) {
        return Err(Error::KEY_FUNCTION_NOT_PERMITTED);
    }
    if !key.permits(mechanism.mechanism) {
        return Err(Error::MECHANISM_INVALID);
    }
    Ok(())
}

/// Length of the ciphertext an encapsulation with `key` produces.
pub fn ciphertext_len(mechanism: &Mechanism, key: &Object) -> Result<usize> {
    check(mechanism, key, CKO_PUBLIC_KEY, CKA_ENCAPSULATE)?;
    Ok(mlkem::ParamSet::from_ck(key.ulong(CKA_PARAMETER_SET)?)?.ciphertext_len())
}

/// Encapsulates to `key`: (ciphertext, attributes of the new secret key).
pub fn encapsulate(
    mechanism: &Mechanism,
    key: &Object,
    template: Attributes,
) -> Result<(Vec<u8>, Attributes)> {
    check(mechanism, key, CKO_PUBLIC_KEY, CKA_ENCAPSULATE)?;
    let (ciphertext, secret) = key.encap_key()?.encapsulate()?;
    Ok((ciphertext, factory::shared_secret_key(template, &*secret)?))
}

/// Decapsulates `ciphertext` with `key`: the attributes of the new secret key.
pub fn decapsulate(
    mechanism: &Mechanism,
    key: &Object,
    template: Attributes,
    ciphertext: &[u8],
) -> Result<Attributes> {
    check(mechanism, key, CKO_PRIVATE_KEY, CKA_DECAPSULATE)?;
    let secret = key.decap_key()?.decapsulate(ciphertext)?;
    factory::shared_secret_key(template, &*secret)
}

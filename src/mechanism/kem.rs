//! Key encapsulation (`C_EncapsulateKey` / `C_DecapsulateKey`): the mechanism's family checks
//! the key and produces the shared secret, from which the factory makes the secret key object.

use crate::error::Result;
use crate::mechanism::{family_for, Mechanism};
use crate::token::attributes::Attributes;
use crate::token::factory;
use crate::token::object::Object;
use cryptoki_sys::*;

/// Length of the ciphertext an encapsulation with `key` produces.
pub fn ciphertext_len(mechanism: &Mechanism, key: &Object) -> Result<usize> {
    family_for(mechanism.mechanism, CKF_ENCAPSULATE)?.ciphertext_len(mechanism, key)
}

/// Encapsulates to `key`: (ciphertext, attributes of the new secret key).
pub fn encapsulate(
    mechanism: &Mechanism,
    key: &Object,
    template: Attributes,
) -> Result<(Vec<u8>, Attributes)> {
    let family = family_for(mechanism.mechanism, CKF_ENCAPSULATE)?;
    let (ciphertext, secret) = family.encapsulate(mechanism, key)?;
    Ok((ciphertext, factory::shared_secret_key(template, &secret)?))
}

/// Decapsulates `ciphertext` with `key`: the attributes of the new secret key.
pub fn decapsulate(
    mechanism: &Mechanism,
    key: &Object,
    template: Attributes,
    ciphertext: &[u8],
) -> Result<Attributes> {
    let family = family_for(mechanism.mechanism, CKF_DECAPSULATE)?;
    let secret = family.decapsulate(mechanism, key, ciphertext)?;
    factory::shared_secret_key(template, &secret)
}

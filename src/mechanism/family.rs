//! The trait each mechanism family implements: the mechanisms it serves and the operations
//! behind them.
//!
//! The registry calls an operation only for a mechanism of the family whose
//! [`MechanismInfo::flags`] name it (`CKF_SIGN` for `sign_init`, `CKF_GENERATE_KEY_PAIR` for
//! `generate_key_pair`, ...), so an implementation may trust that `mechanism.mechanism` is one
//! of its own that does the operation. The defaults answer `CKR_MECHANISM_INVALID`, as for a
//! mechanism that cannot do the function.

use crate::error::{Error, Result};
use crate::mechanism::aes_gcm::GcmOperation;
use crate::mechanism::digest::DigestOperation;
use crate::mechanism::hybrid::Ed25519Signer;
use crate::mechanism::signing::{SignOperation, VerifyOperation};
use crate::mechanism::{Mechanism, MechanismInfo, ParamShape};
use crate::token::attributes::Attributes;
use crate::token::object::Object;
use cryptoki_sys::CK_MECHANISM_TYPE;
use std::sync::Arc;
use zeroize::Zeroizing;

/// A family of mechanisms sharing a key type and code: ML-DSA, Ed25519, AES, ...
pub trait MechanismFamily: Send + Sync {
    /// The mechanisms served, in the order `C_GetMechanismList` reports them.
    fn mechanisms(&self) -> &'static [MechanismInfo];

    /// How the ABI layer must read `mechanism`'s parameter. Most take none.
    fn param_shape(&self, _mechanism: CK_MECHANISM_TYPE) -> ParamShape {
        ParamShape::Empty
    }

    /// Classical families run on the embedded token only: on a pkcs11 slot they are the HSM's
    /// business (this module seals only post-quantum keys there).
    fn classical(&self) -> bool {
        false
    }

    /// `C_SignInit`: checks the key against the mechanism and starts the operation. `ed25519`
    /// is the Ed25519 half of a hybrid key when the HSM holds it.
    fn sign_init(
        &self,
        _mechanism: &Mechanism,
        _key: &Object,
        _ed25519: Option<Arc<dyn Ed25519Signer>>,
    ) -> Result<Box<dyn SignOperation>> {
        Err(Error::MECHANISM_INVALID)
    }

    /// `C_VerifyInit`.
    fn verify_init(
        &self,
        _mechanism: &Mechanism,
        _key: &Object,
    ) -> Result<Box<dyn VerifyOperation>> {
        Err(Error::MECHANISM_INVALID)
    }

    /// `C_GenerateKeyPair`: the (public, private) objects from the caller's templates.
    fn generate_key_pair(
        &self,
        _mechanism: &Mechanism,
        _public: Attributes,
        _private: Attributes,
    ) -> Result<(Attributes, Attributes)> {
        Err(Error::MECHANISM_INVALID)
    }

    /// `C_GenerateKey`: the secret key object from the caller's template.
    fn generate_key(&self, _mechanism: &Mechanism, _template: Attributes) -> Result<Attributes> {
        Err(Error::MECHANISM_INVALID)
    }

    /// `C_DigestInit`.
    fn digest_init(&self, _mechanism: &Mechanism) -> Result<DigestOperation> {
        Err(Error::MECHANISM_INVALID)
    }

    /// `C_EncryptInit` (`decrypt` false) / `C_DecryptInit` (`decrypt` true).
    fn cipher_init(
        &self,
        _mechanism: &Mechanism,
        _key: &Object,
        _decrypt: bool,
    ) -> Result<GcmOperation> {
        Err(Error::MECHANISM_INVALID)
    }

    /// Length of the ciphertext an encapsulation to `key` produces.
    fn ciphertext_len(&self, _mechanism: &Mechanism, _key: &Object) -> Result<usize> {
        Err(Error::MECHANISM_INVALID)
    }

    /// `C_EncapsulateKey`: (ciphertext, shared secret). The registry makes the secret key.
    fn encapsulate(
        &self,
        _mechanism: &Mechanism,
        _key: &Object,
    ) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>)> {
        Err(Error::MECHANISM_INVALID)
    }

    /// `C_DecapsulateKey`: the shared secret.
    fn decapsulate(
        &self,
        _mechanism: &Mechanism,
        _key: &Object,
        _ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        Err(Error::MECHANISM_INVALID)
    }
}

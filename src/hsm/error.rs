//! What the HSM interface answers when it cannot do what was asked.

use cryptoki::error::{Error as CkError, RvError};
use std::fmt;

/// An error of the HSM interface. A PKCS#11 failure keeps its return value.
#[derive(Debug)]
pub enum HsmError {
    /// The library could not be loaded or initialised, or a call failed: the function and its
    /// `CKR_*`.
    Pkcs11(CkError),
    /// No slot matches the selector given to [`super::Pkcs11HsmEnhanced::new`].
    NoSuchSlot(String),
    /// No key with this label (and the class the operation needs) in the token.
    KeyNotFound(String),
    /// A key pair with this label exists already: labels name keys here.
    KeyExists(String),
    /// Key material the key type cannot take (an AES key of 17 bytes...).
    InvalidKey(String),
    /// Every HSM of a [`super::FailoverHsm`] failed; the last error.
    AllFailed(Box<HsmError>),
    /// A [`super::FailoverHsm`] without any available HSM.
    Unavailable,
}

/// The interface's results.
pub type HsmResult<T> = Result<T, HsmError>;

impl HsmError {
    /// The `CKR_*` of a PKCS#11 failure.
    pub fn rv(&self) -> Option<RvError> {
        match self {
            HsmError::Pkcs11(CkError::Pkcs11(rv, _)) => Some(*rv),
            HsmError::AllFailed(last) => last.rv(),
            _ => None,
        }
    }
}

impl fmt::Display for HsmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HsmError::Pkcs11(e) => write!(f, "PKCS#11: {e}"),
            HsmError::NoSuchSlot(s) => write!(f, "no slot {s}"),
            HsmError::KeyNotFound(k) => write!(f, "no key labelled {k:?}"),
            HsmError::KeyExists(k) => write!(f, "a key labelled {k:?} exists already"),
            HsmError::InvalidKey(why) => write!(f, "invalid key material: {why}"),
            HsmError::AllFailed(last) => write!(f, "every HSM failed; the last: {last}"),
            HsmError::Unavailable => write!(f, "no HSM available"),
        }
    }
}

impl std::error::Error for HsmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HsmError::Pkcs11(e) => Some(e),
            HsmError::AllFailed(last) => Some(last.as_ref()),
            _ => None,
        }
    }
}

impl From<CkError> for HsmError {
    fn from(e: CkError) -> Self {
        HsmError::Pkcs11(e)
    }
}

//! SHA-2 digests, single- and multi-part.

use crate::error::{Error, Result};
use crate::mechanism::{family_for, Mechanism, MechanismFamily, MechanismInfo};
use cryptoki_sys::*;
use sha2::{Digest as _, Sha256, Sha384, Sha512};

/// The SHA-2 family: `CKM_SHA256`, `CKM_SHA384`, `CKM_SHA512`, classical.
pub struct Sha2;

impl MechanismFamily for Sha2 {
    fn mechanisms(&self) -> &'static [MechanismInfo] {
        const MECHANISMS: &[MechanismInfo] = &[
            MechanismInfo::new(CKM_SHA256, 0, 0, CKF_DIGEST),
            MechanismInfo::new(CKM_SHA384, 0, 0, CKF_DIGEST),
            MechanismInfo::new(CKM_SHA512, 0, 0, CKF_DIGEST),
        ];
        MECHANISMS
    }

    fn classical(&self) -> bool {
        true
    }

    fn digest_init(&self, mechanism: &Mechanism) -> Result<DigestOperation> {
        let op = match mechanism.mechanism {
            CKM_SHA256 => DigestOperation::Sha256(Sha256::new()),
            CKM_SHA384 => DigestOperation::Sha384(Sha384::new()),
            CKM_SHA512 => DigestOperation::Sha512(Sha512::new()),
            _ => return Err(Error::MECHANISM_INVALID),
        };
        mechanism.expect_no_param()?;
        Ok(op)
    }
}

/// A digest in progress.
#[derive(Clone)]
pub enum DigestOperation {
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl DigestOperation {
    /// `C_DigestInit`, by whichever family performs the mechanism.
    pub fn new(mechanism: &Mechanism) -> Result<Self> {
        family_for(mechanism.mechanism, CKF_DIGEST)?.digest_init(mechanism)
    }

    /// Length of the digest.
    pub fn digest_len(&self) -> usize {
        match self {
            DigestOperation::Sha256(_) => 32,
            DigestOperation::Sha384(_) => 48,
            DigestOperation::Sha512(_) => 64,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            DigestOperation::Sha256(h) => h.update(data),
            DigestOperation::Sha384(h) => h.update(data),
            DigestOperation::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        match self {
            DigestOperation::Sha256(h) => h.finalize().to_vec(),
            DigestOperation::Sha384(h) => h.finalize().to_vec(),
            DigestOperation::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

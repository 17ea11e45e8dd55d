//! Mechanisms: the registry keyed by `CKM_*` (what `C_GetMechanismList`/`Info` report) and the
//! operations behind digesting, signing and key generation. One file per algorithm family.

/// Most input a multi-part operation collects before its final call (mechanisms that need the
/// whole message: pure ML-DSA, Dilithium5, the hybrid, AES-GCM). Past it, `C_*Update` answers
/// `CKR_DATA_LEN_RANGE` (`CKR_ENCRYPTED_DATA_LEN_RANGE` when decrypting). HashML-DSA and the
/// digests hash as they go and have no limit.
pub const MAX_COLLECTED_LEN: usize = 64 << 20;

/// Appends a part to the input collected so far, within [`MAX_COLLECTED_LEN`]. The input may be
/// a secret (a plaintext to encrypt), so a buffer outgrown is wiped, not left to the allocator.
pub fn collect(collected: &mut Vec<u8>, part: &[u8], too_long: Error) -> Result<()> {
    use zeroize::Zeroize;
    let needed = collected.len().saturating_add(part.len());
    if needed > MAX_COLLECTED_LEN {
        return Err(too_long);
    }
    if needed > collected.capacity() {
        let mut bigger = Vec::with_capacity(needed.max(collected.capacity() * 2));
        bigger.extend_from_slice(collected);
        collected.zeroize();
        *collected = bigger;
    }
    collected.extend_from_slice(part);
    Ok(())
}

pub mod aes_gcm;
pub mod digest;
pub mod dilithium5;
pub mod eddsa;
pub mod hash_mldsa;
pub mod hybrid;
pub mod kem;
pub mod mldsa;
pub mod mlkem;
pub mod signing;

use crate::consts::{
    CKM_B4AE_DILITHIUM5, CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN, CKM_B4AE_HYBRID,
    CKM_B4AE_HYBRID_KEY_PAIR_GEN,
};
use crate::error::{Error, Result};
use cryptoki_sys::*;
use zeroize::Zeroizing;

/// What `C_GetMechanismInfo` answers for one mechanism.
#[derive(Clone, Copy, Debug)]
pub struct MechanismInfo {
    pub mechanism: CK_MECHANISM_TYPE,
    pub min_key_size: CK_ULONG,
    pub max_key_size: CK_ULONG,
    pub flags: CK_FLAGS,
}

const fn info(
    mechanism: CK_MECHANISM_TYPE,
    min: CK_ULONG,
    max: CK_ULONG,
    flags: CK_FLAGS,
) -> MechanismInfo {
    MechanismInfo {
        mechanism,
        min_key_size: min,
        max_key_size: max,
        flags,
    }
}

/// Every mechanism this module performs itself. ML-DSA and ML-KEM key sizes are given as the
/// range of parameter sets (`CKP_*_44/512`..`CKP_*_87/1024`); Dilithium5's and the hybrid's as
/// their public keys' bytes.
pub const REGISTRY: &[MechanismInfo] = &[
    info(CKM_SHA256, 0, 0, CKF_DIGEST),
    info(CKM_SHA384, 0, 0, CKF_DIGEST),
    info(CKM_SHA512, 0, 0, CKF_DIGEST),
    info(CKM_AES_KEY_GEN, 16, 32, CKF_GENERATE),
    info(CKM_AES_GCM, 16, 32, CKF_ENCRYPT | CKF_DECRYPT),
    info(CKM_EC_EDWARDS_KEY_PAIR_GEN, 255, 255, CKF_GENERATE_KEY_PAIR),
    info(CKM_EDDSA, 255, 255, CKF_SIGN | CKF_VERIFY),
    info(
        CKM_ML_DSA_KEY_PAIR_GEN,
        CKP_ML_DSA_44,
        CKP_ML_DSA_87,
        CKF_GENERATE_KEY_PAIR,
    ),
    info(
        CKM_ML_DSA,
        CKP_ML_DSA_44,
        CKP_ML_DSA_87,
        CKF_SIGN | CKF_VERIFY,
    ),
    info(
        CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN,
        2592,
        2592,
        CKF_GENERATE_KEY_PAIR,
    ),
    info(CKM_B4AE_DILITHIUM5, 2592, 2592, CKF_SIGN | CKF_VERIFY),
    info(
        CKM_B4AE_HYBRID_KEY_PAIR_GEN,
        hybrid::PUBLIC_KEY_LEN as CK_ULONG,
        hybrid::PUBLIC_KEY_LEN as CK_ULONG,
        CKF_GENERATE_KEY_PAIR,
    ),
    info(
        CKM_B4AE_HYBRID,
        hybrid::PUBLIC_KEY_LEN as CK_ULONG,
        hybrid::PUBLIC_KEY_LEN as CK_ULONG,
        CKF_SIGN | CKF_VERIFY,
    ),
    info(
        CKM_HASH_ML_DSA,
        CKP_ML_DSA_44,
        CKP_ML_DSA_87,
        CKF_SIGN | CKF_VERIFY,
    ),
    hash_ml_dsa(CKM_HASH_ML_DSA_SHA224),
    hash_ml_dsa(CKM_HASH_ML_DSA_SHA256),
    hash_ml_dsa(CKM_HASH_ML_DSA_SHA384),
    hash_ml_dsa(CKM_HASH_ML_DSA_SHA512),
    hash_ml_dsa(CKM_HASH_ML_DSA_SHA3_224),
    hash_ml_dsa(CKM_HASH_ML_DSA_SHA3_256),
    hash_ml_dsa(CKM_HASH_ML_DSA_SHA3_384),
    hash_ml_dsa(CKM_HASH_ML_DSA_SHA3_512),
    hash_ml_dsa(CKM_HASH_ML_DSA_SHAKE128),
    hash_ml_dsa(CKM_HASH_ML_DSA_SHAKE256),
    info(
        CKM_ML_KEM_KEY_PAIR_GEN,
        CKP_ML_KEM_512,
        CKP_ML_KEM_1024,
        CKF_GENERATE_KEY_PAIR,
    ),
    info(
        CKM_ML_KEM,
        CKP_ML_KEM_512,
        CKP_ML_KEM_1024,
        CKF_ENCAPSULATE | CKF_DECAPSULATE,
    ),
];

const fn hash_ml_dsa(mechanism: CK_MECHANISM_TYPE) -> MechanismInfo {
    info(
        mechanism,
        CKP_ML_DSA_44,
        CKP_ML_DSA_87,
        CKF_SIGN | CKF_VERIFY,
    )
}

/// The registry's classical mechanisms: the embedded token performs them, while on a pkcs11
/// slot they are the HSM's business (this module seals only post-quantum keys there).
pub fn classical(mechanism: CK_MECHANISM_TYPE) -> bool {
    matches!(
        mechanism,
        CKM_SHA256
            | CKM_SHA384
            | CKM_SHA512
            | CKM_AES_KEY_GEN
            | CKM_AES_GCM
            | CKM_EC_EDWARDS_KEY_PAIR_GEN
            | CKM_EDDSA
    )
}

/// Looks a mechanism up in the registry.
pub fn lookup(mechanism: CK_MECHANISM_TYPE) -> Result<&'static MechanismInfo> {
    REGISTRY
        .iter()
        .find(|m| m.mechanism == mechanism)
        .ok_or(Error::MECHANISM_INVALID)
}

/// How the ABI layer must read a mechanism's parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamShape {
    /// No parameter allowed.
    Empty,
    /// Optional `CK_SIGN_ADDITIONAL_CONTEXT`.
    SignContext,
    /// `CK_HASH_SIGN_ADDITIONAL_CONTEXT`.
    HashSignContext,
    /// `CK_GCM_PARAMS` (required).
    Gcm,
    /// Optional `CK_EDDSA_PARAMS`.
    Eddsa,
    /// Opaque bytes (mechanisms this module does not interpret).
    Opaque,
}

/// The parameter shape of a mechanism.
pub fn param_shape(mechanism: CK_MECHANISM_TYPE) -> ParamShape {
    match mechanism {
        CKM_ML_DSA => ParamShape::SignContext,
        CKM_HASH_ML_DSA => ParamShape::HashSignContext,
        CKM_AES_GCM => ParamShape::Gcm,
        CKM_EDDSA => ParamShape::Eddsa,
        m if hash_mldsa::PreHash::of_mechanism(m).is_some() => ParamShape::SignContext,
        m if lookup(m).is_ok() => ParamShape::Empty,
        _ => ParamShape::Opaque,
    }
}

/// A decoded `CK_MECHANISM`.
#[derive(Clone, Debug)]
pub struct Mechanism {
    pub mechanism: CK_MECHANISM_TYPE,
    pub param: Param,
}

/// A decoded mechanism parameter.
#[derive(Clone, Debug)]
pub enum Param {
    None,
    /// `CK_SIGN_ADDITIONAL_CONTEXT`: hedging choice and context string (≤ 255 bytes).
    SignContext {
        hedge: CK_ULONG,
        context: Vec<u8>,
    },
    /// `CK_HASH_SIGN_ADDITIONAL_CONTEXT`: as above, plus the pre-hash mechanism.
    HashSignContext {
        hedge: CK_ULONG,
        context: Vec<u8>,
        hash: CK_MECHANISM_TYPE,
    },
    Gcm(aes_gcm::GcmParams),
    /// `CK_EDDSA_PARAMS`: pre-hash flag and context (Ed25519ph / Ed25519ctx).
    Eddsa {
        prehash: bool,
        context: Vec<u8>,
    },
    Opaque(Zeroizing<Vec<u8>>),
}

impl Mechanism {
    /// A mechanism without a parameter.
    pub fn plain(mechanism: CK_MECHANISM_TYPE) -> Self {
        Mechanism {
            mechanism,
            param: Param::None,
        }
    }

    /// Fails unless the parameter is absent.
    pub fn expect_no_param(&self) -> Result<()> {
        match self.param {
            Param::None => Ok(()),
            _ => Err(Error::MECHANISM_PARAM_INVALID),
        }
    }
}

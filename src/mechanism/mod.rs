//! Mechanisms: the registry keyed by `CKM_*` (what `C_GetMechanismList`/`Info` report and
//! which code performs each mechanism) and the operations behind digesting, signing,
//! encryption, key encapsulation and key generation. One file per algorithm family.
//!
//! Adding a family: write one file implementing [`MechanismFamily`] (its `MechanismInfo` list,
//! the parameter shapes that are not empty, `classical` if the embedded token alone performs
//! it, and the operations its mechanisms' `CKF_*` flags promise), then add its `pub mod` and
//! one line to [`FAMILIES`]. Lookups, `C_GetMechanismList`, parameter decoding and the
//! `C_*Init` dispatch follow from the registry. A new key type also needs its attribute rules
//! (`token::rules`), its import checks and defaults (`token::factory`) and, to cache parsed
//! keys, an accessor on `token::object::Object`.

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
pub mod family;
pub mod hash_mldsa;
pub mod hash_slhdsa;
pub mod hybrid;
pub mod kem;
pub mod mldsa;
pub mod mlkem;
pub mod prehash;
pub mod signing;
pub mod slhdsa;

pub use family::MechanismFamily;

use crate::error::{Error, Result};
use crate::token::object::Object;
use cryptoki_sys::*;
use std::sync::LazyLock;
use zeroize::Zeroizing;

/// Every family this module performs, one line each. Their mechanisms, in this order, are what
/// `C_GetMechanismList` reports.
pub static FAMILIES: &[&dyn MechanismFamily] = &[
    &digest::Sha2,
    &aes_gcm::Aes,
    &eddsa::EdDsa,
    &mldsa::MlDsa,
    &dilithium5::Dilithium5,
    &hybrid::Hybrid,
    &hash_mldsa::HashMlDsa,
    &mlkem::MlKem,
    &slhdsa::SlhDsa,
    &hash_slhdsa::HashSlhDsa,
];

/// Every mechanism this module performs itself, in `C_GetMechanismList` order: the families'
/// lists end to end. ML-DSA and ML-KEM key sizes are given as the range of parameter sets
/// (`CKP_*_44/512`..`CKP_*_87/1024`); Dilithium5's and the hybrid's as their public keys' bytes.
///
/// Every mechanism that signs or verifies also does so message by message (PKCS#11 3.0
/// `C_MessageSignInit`..., `src/abi/message.rs`): `CKF_MESSAGE_SIGN` / `CKF_MESSAGE_VERIFY`.
pub static REGISTRY: LazyLock<Vec<MechanismInfo>> = LazyLock::new(|| {
    FAMILIES
        .iter()
        .flat_map(|family| family.mechanisms())
        .map(|m| MechanismInfo {
            flags: with_message_flags(m.flags),
            ..*m
        })
        .collect()
});

/// A mechanism's `CKF_*` flags with the message-based ones its signing and verification imply
/// (the module performs message-based signing with any mechanism that signs, its own or the
/// HSM's).
pub fn with_message_flags(flags: CK_FLAGS) -> CK_FLAGS {
    let mut flags = flags;
    if flags & CKF_SIGN != 0 {
        flags |= CKF_MESSAGE_SIGN;
    }
    if flags & CKF_VERIFY != 0 {
        flags |= CKF_MESSAGE_VERIFY;
    }
    flags
}

/// What `C_GetMechanismInfo` answers for one mechanism.
#[derive(Clone, Copy, Debug)]
pub struct MechanismInfo {
    pub mechanism: CK_MECHANISM_TYPE,
    pub min_key_size: CK_ULONG,
    pub max_key_size: CK_ULONG,
    pub flags: CK_FLAGS,
}

impl MechanismInfo {
    /// What `C_GetMechanismInfo` answers.
    pub fn ck(&self) -> CK_MECHANISM_INFO {
        CK_MECHANISM_INFO {
            ulMinKeySize: self.min_key_size,
            ulMaxKeySize: self.max_key_size,
            flags: self.flags,
        }
    }

    pub const fn new(
        mechanism: CK_MECHANISM_TYPE,
        min_key_size: CK_ULONG,
        max_key_size: CK_ULONG,
        flags: CK_FLAGS,
    ) -> Self {
        MechanismInfo {
            mechanism,
            min_key_size,
            max_key_size,
            flags,
        }
    }
}

/// A mechanism's registry entry and the family that performs it. A linear search: a couple
/// dozen entries, and the list order is `C_GetMechanismList`'s.
fn entry(
    mechanism: CK_MECHANISM_TYPE,
) -> Option<(&'static MechanismInfo, &'static dyn MechanismFamily)> {
    FAMILIES.iter().find_map(|&family| {
        let info = family
            .mechanisms()
            .iter()
            .find(|m| m.mechanism == mechanism)?;
        Some((info, family))
    })
}

/// Looks a mechanism up in the registry.
pub fn lookup(mechanism: CK_MECHANISM_TYPE) -> Result<&'static MechanismInfo> {
    REGISTRY
        .iter()
        .find(|m| m.mechanism == mechanism)
        .ok_or(Error::MECHANISM_INVALID)
}

/// The family performing `operation` (a `CKF_*` flag) with `mechanism`: a mechanism does
/// exactly what its registry flags say, anything else is `CKR_MECHANISM_INVALID`.
pub fn family_for(
    mechanism: CK_MECHANISM_TYPE,
    operation: CK_FLAGS,
) -> Result<&'static dyn MechanismFamily> {
    match entry(mechanism) {
        Some((info, family)) if info.flags & operation != 0 => Ok(family),
        _ => Err(Error::MECHANISM_INVALID),
    }
}

/// The registry's classical mechanisms: the embedded token performs them, while on a pkcs11
/// slot they are the HSM's business (this module seals only post-quantum keys there).
pub fn classical(mechanism: CK_MECHANISM_TYPE) -> bool {
    entry(mechanism).is_some_and(|(_, family)| family.classical())
}

/// `C_EncryptInit` / `C_DecryptInit` on `key`, whichever family performs the mechanism.
pub fn cipher_init(
    mechanism: &Mechanism,
    key: &Object,
    decrypt: bool,
) -> Result<aes_gcm::GcmOperation> {
    let operation = if decrypt { CKF_DECRYPT } else { CKF_ENCRYPT };
    family_for(mechanism.mechanism, operation)?.cipher_init(mechanism, key, decrypt)
}

/// The checks every operation makes on its key: class and key type, the usage attribute
/// (`CKA_SIGN`, `CKA_ENCRYPT`, ...), and the key's `CKA_ALLOWED_MECHANISMS`.
pub fn check_key(
    key: &Object,
    class: CK_OBJECT_CLASS,
    key_type: CK_KEY_TYPE,
    usage: CK_ATTRIBUTE_TYPE,
    mechanism: CK_MECHANISM_TYPE,
) -> Result<()> {
    if key.class() != class || key.key_type() != Some(key_type) {
        return Err(Error::KEY_TYPE_INCONSISTENT);
    }
    if !key.attrs.bool_or(usage, false) {
        return Err(Error::KEY_FUNCTION_NOT_PERMITTED);
    }
    if !key.permits(mechanism) {
        return Err(Error::MECHANISM_INVALID);
    }
    Ok(())
}

/// A key's `CKA_VALUE`, copied for an operation into memory wiped when the operation ends. A
/// private key without one is a key this session may not use (its value is only there after
/// login); a public key always has one.
pub fn key_value(key: &Object) -> Result<Zeroizing<Vec<u8>>> {
    let missing = if key.class() == CKO_PRIVATE_KEY {
        Error::USER_NOT_LOGGED_IN
    } else {
        Error::GENERAL
    };
    let value = key.attrs.get(CKA_VALUE).ok_or(missing)?;
    Ok(Zeroizing::new(value.to_vec()))
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

/// The parameter shape of a mechanism; opaque for the ones this module does not know.
pub fn param_shape(mechanism: CK_MECHANISM_TYPE) -> ParamShape {
    entry(mechanism).map_or(ParamShape::Opaque, |(_, family)| {
        family.param_shape(mechanism)
    })
}

/// A decoded `CK_MECHANISM`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Mechanism {
    pub mechanism: CK_MECHANISM_TYPE,
    pub param: Param,
}

/// A decoded mechanism parameter.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::*;

    /// `C_GetMechanismList`'s order before the registry was split into families: kept.
    #[test]
    fn registry_order_is_the_reported_order() {
        let expected = [
            CKM_SHA256,
            CKM_SHA384,
            CKM_SHA512,
            CKM_AES_KEY_GEN,
            CKM_AES_GCM,
            CKM_EC_EDWARDS_KEY_PAIR_GEN,
            CKM_EDDSA,
            CKM_ML_DSA_KEY_PAIR_GEN,
            CKM_ML_DSA,
            CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN,
            CKM_B4AE_DILITHIUM5,
            CKM_B4AE_HYBRID_KEY_PAIR_GEN,
            CKM_B4AE_HYBRID,
            CKM_HASH_ML_DSA,
            CKM_HASH_ML_DSA_SHA224,
            CKM_HASH_ML_DSA_SHA256,
            CKM_HASH_ML_DSA_SHA384,
            CKM_HASH_ML_DSA_SHA512,
            CKM_HASH_ML_DSA_SHA3_224,
            CKM_HASH_ML_DSA_SHA3_256,
            CKM_HASH_ML_DSA_SHA3_384,
            CKM_HASH_ML_DSA_SHA3_512,
            CKM_HASH_ML_DSA_SHAKE128,
            CKM_HASH_ML_DSA_SHAKE256,
            CKM_ML_KEM_KEY_PAIR_GEN,
            CKM_ML_KEM,
            CKM_SLH_DSA_KEY_PAIR_GEN,
            CKM_SLH_DSA,
            CKM_HASH_SLH_DSA,
            CKM_HASH_SLH_DSA_SHA224,
            CKM_HASH_SLH_DSA_SHA256,
            CKM_HASH_SLH_DSA_SHA384,
            CKM_HASH_SLH_DSA_SHA512,
            CKM_HASH_SLH_DSA_SHA3_224,
            CKM_HASH_SLH_DSA_SHA3_256,
            CKM_HASH_SLH_DSA_SHA3_384,
            CKM_HASH_SLH_DSA_SHA3_512,
            CKM_HASH_SLH_DSA_SHAKE128,
            CKM_HASH_SLH_DSA_SHAKE256,
        ];
        let listed: Vec<_> = REGISTRY.iter().map(|m| m.mechanism).collect();
        assert_eq!(listed, expected);
    }

    #[test]
    fn each_mechanism_has_one_family() {
        for (i, m) in REGISTRY.iter().enumerate() {
            assert!(
                REGISTRY[i + 1..].iter().all(|n| n.mechanism != m.mechanism),
                "{:#x} listed twice",
                m.mechanism
            );
        }
    }

    #[test]
    fn classical_and_parameter_shapes() {
        let classical_ones = [
            CKM_SHA256,
            CKM_SHA384,
            CKM_SHA512,
            CKM_AES_KEY_GEN,
            CKM_AES_GCM,
            CKM_EC_EDWARDS_KEY_PAIR_GEN,
            CKM_EDDSA,
        ];
        for m in REGISTRY.iter() {
            assert_eq!(
                classical(m.mechanism),
                classical_ones.contains(&m.mechanism)
            );
        }
        assert!(!classical(CKM_RSA_PKCS));
        let shapes = [
            (CKM_ML_DSA, ParamShape::SignContext),
            (CKM_HASH_ML_DSA, ParamShape::HashSignContext),
            (CKM_HASH_ML_DSA_SHA3_256, ParamShape::SignContext),
            (CKM_HASH_SLH_DSA, ParamShape::HashSignContext),
            (CKM_HASH_SLH_DSA_SHAKE128, ParamShape::SignContext),
            (CKM_AES_GCM, ParamShape::Gcm),
            (CKM_EDDSA, ParamShape::Eddsa),
            (CKM_ML_DSA_KEY_PAIR_GEN, ParamShape::Empty),
            (CKM_B4AE_HYBRID, ParamShape::Empty),
            (CKM_ML_KEM, ParamShape::Empty),
            (CKM_SHA256, ParamShape::Empty),
            (CKM_RSA_PKCS, ParamShape::Opaque),
        ];
        for (m, shape) in shapes {
            assert_eq!(param_shape(m), shape, "{m:#x}");
        }
    }

    #[test]
    fn operations_follow_the_flags() {
        assert!(family_for(CKM_ML_DSA, CKF_SIGN).is_ok());
        assert_eq!(
            family_for(CKM_ML_DSA_KEY_PAIR_GEN, CKF_SIGN).err(),
            Some(Error::MECHANISM_INVALID)
        );
        assert_eq!(
            family_for(CKM_RSA_PKCS, CKF_SIGN).err(),
            Some(Error::MECHANISM_INVALID)
        );
    }
}

//! HashML-DSA (FIPS 204 §5.4): ML-DSA over M' = 1 ‖ len(ctx) ‖ ctx ‖ OID(PH) ‖ PH(M)
//! (`prehash` builds M' and drives the operations).
//!
//! PQClean offers only pure ML-DSA, so this runs on RustCrypto `ml-dsa`'s internal interface,
//! which signs any M'.

#![allow(deprecated)] // `ml-dsa` deprecates the expanded key form; PKCS#11 keeps it in CKA_VALUE.

use crate::error::{Error, Result};
use crate::mechanism::hybrid::Ed25519Signer;
use crate::mechanism::mldsa::ParamSet;
use crate::mechanism::prehash::{PreHashMechanisms, PreHashSigner, PreHashVerifier};
use crate::mechanism::signing::{SignOperation, VerifyOperation};
use crate::mechanism::{
    check_key, key_value, Mechanism, MechanismFamily, MechanismInfo, ParamShape,
};
use crate::token::object::Object;
use cryptoki_sys::*;
use ml_dsa::{EncodedVerifyingKey, ExpandedSigningKey, ExpandedSigningKeyBytes, Signature};
use ml_dsa::{MlDsa44, MlDsa65, MlDsa87, VerifyingKey};
use std::sync::Arc;
use zeroize::Zeroizing;

macro_rules! per_set {
    ($set:expr, |$p:ident| $body:expr) => {
        match $set {
            ParamSet::MlDsa44 => {
                type $p = MlDsa44;
                $body
            }
            ParamSet::MlDsa65 => {
                type $p = MlDsa65;
                $body
            }
            ParamSet::MlDsa87 => {
                type $p = MlDsa87;
                $body
            }
        }
    };
}

/// Signs M' with an expanded private key; `rnd` is 32 zero bytes for the deterministic
/// variant, fresh randomness otherwise.
pub fn sign_internal(
    set: ParamSet,
    private_key: &[u8],
    m: &[u8],
    rnd: &[u8; 32],
) -> Result<Vec<u8>> {
    // `ml-dsa` panics on an out-of-range key encoding; keys are checked at import, and again
    // here since a stored key is outside this function's control.
    set.public_of_private(private_key)
        .map_err(|_| Error::GENERAL)?;
    per_set!(set, |P| {
        let bytes: &ExpandedSigningKeyBytes<P> =
            private_key.try_into().map_err(|_| Error::GENERAL)?;
        // The crate wipes its expanded key when dropped.
        let key = ExpandedSigningKey::<P>::from_expanded(bytes);
        Ok(key.sign_internal(&[m], &(*rnd).into()).encode().to_vec())
    })
}

/// Verifies an ML-DSA signature of M'.
pub fn verify_internal(set: ParamSet, public_key: &[u8], m: &[u8], signature: &[u8]) -> Result<()> {
    if signature.len() != set.signature_len() {
        return Err(Error::SIGNATURE_LEN_RANGE);
    }
    let valid = per_set!(set, |P| {
        let encoded: &EncodedVerifyingKey<P> = public_key.try_into().map_err(|_| Error::GENERAL)?;
        let key = VerifyingKey::<P>::decode(encoded);
        match Signature::<P>::try_from(signature) {
            Ok(sig) => key.verify_internal(m, &sig),
            Err(_) => false,
        }
    });
    if valid {
        Ok(())
    } else {
        Err(Error::SIGNATURE_INVALID)
    }
}

/// The HashML-DSA family: `CKM_HASH_ML_DSA` (the caller hashes; the parameter names the hash)
/// and `CKM_HASH_ML_DSA_<hash>` (this module hashes the message, multi-part).
pub struct HashMlDsa;

impl MechanismFamily for HashMlDsa {
    fn mechanisms(&self) -> &'static [MechanismInfo] {
        const LIST: [MechanismInfo; 11] = MECHANISMS.infos(CKP_ML_DSA_44, CKP_ML_DSA_87);
        &LIST
    }

    fn param_shape(&self, mechanism: CK_MECHANISM_TYPE) -> ParamShape {
        match mechanism {
            CKM_HASH_ML_DSA => ParamShape::HashSignContext,
            _ => ParamShape::SignContext,
        }
    }

    fn sign_init(
        &self,
        mechanism: &Mechanism,
        key: &Object,
        _ed25519: Option<Arc<dyn Ed25519Signer>>,
    ) -> Result<Box<dyn SignOperation>> {
        let parts = MECHANISMS.options_and_hash(mechanism)?;
        check_key(
            key,
            CKO_PRIVATE_KEY,
            CKK_ML_DSA,
            CKA_SIGN,
            mechanism.mechanism,
        )?;
        let set = ParamSet::from_ck(key.ulong(CKA_PARAMETER_SET)?)?;
        let private_key = key_value(key)?;
        let deterministic = parts.0.hedge == CKH_DETERMINISTIC_REQUIRED;
        let sign = move |m: &[u8]| {
            let rnd = if deterministic {
                Zeroizing::new([0u8; 32])
            } else {
                Zeroizing::new(crate::random::random_bytes::<32>()?)
            };
            sign_internal(set, &private_key, m, &rnd)
        };
        Ok(PreHashSigner::boxed(
            set.signature_len(),
            parts,
            Box::new(sign),
        ))
    }

    fn verify_init(&self, mechanism: &Mechanism, key: &Object) -> Result<Box<dyn VerifyOperation>> {
        let parts = MECHANISMS.options_and_hash(mechanism)?;
        check_key(
            key,
            CKO_PUBLIC_KEY,
            CKK_ML_DSA,
            CKA_VERIFY,
            mechanism.mechanism,
        )?;
        let set = ParamSet::from_ck(key.ulong(CKA_PARAMETER_SET)?)?;
        let public_key = key_value(key)?;
        Ok(PreHashVerifier::boxed(
            parts,
            Box::new(move |m, signature| verify_internal(set, &public_key, m, signature)),
        ))
    }
}

const MECHANISMS: PreHashMechanisms = PreHashMechanisms {
    bare: CKM_HASH_ML_DSA,
    first: CKM_HASH_ML_DSA_SHA224,
};

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::mechanism::prehash::PreHash;
    use fips204::traits::{SerDes, Verifier};

    /// `fips204`'s name for each pre-hash's OID.
    pub(crate) fn fips204_oid(hash: PreHash) -> [u8; 11] {
        use fips204::pre_hash::*;
        match hash {
            PreHash::Sha224 => SHA2_224,
            PreHash::Sha256 => SHA2_256,
            PreHash::Sha384 => SHA2_384,
            PreHash::Sha512 => SHA2_512,
            PreHash::Sha3_224 => SHA3_224,
            PreHash::Sha3_256 => SHA3_256,
            PreHash::Sha3_384 => SHA3_384,
            PreHash::Sha3_512 => SHA3_512,
            PreHash::Shake128 => SHAKE_128,
            PreHash::Shake256 => SHAKE_256,
        }
    }

    /// An independent implementation, `fips204`, accepts our signatures for all ten pre-hashes
    /// (its own OID table and M'), and refuses them for another digest or context.
    #[test]
    fn fips204_accepts_every_prehash() {
        let (pk, sk) = ParamSet::MlDsa65.keygen_from_seed(&[9u8; 32]).unwrap();
        let fips_pk =
            fips204::ml_dsa_65::PublicKey::try_from_bytes(pk.clone().try_into().unwrap()).unwrap();
        for hash in PreHash::ALL {
            let mut h = hash.hasher();
            h.update(b"message");
            let digest = h.finish();
            let m = hash.message_prime(&digest, b"ctx").unwrap();
            let sig = sign_internal(ParamSet::MlDsa65, &sk, &m, &[0; 32]).unwrap();
            verify_internal(ParamSet::MlDsa65, &pk, &m, &sig).unwrap();
            let sig: [u8; 3309] = sig.try_into().unwrap();
            let oid = fips204_oid(hash);
            assert!(fips_pk.hash_verify(&digest, &sig, b"ctx", &oid), "{hash:?}");
            let mut other = digest.clone();
            other[0] ^= 1;
            assert!(!fips_pk.hash_verify(&other, &sig, b"ctx", &oid));
            assert!(!fips_pk.hash_verify(&digest, &sig, b"cty", &oid));
        }
    }
}

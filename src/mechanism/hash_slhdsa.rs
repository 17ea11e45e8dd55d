//! HashSLH-DSA (FIPS 205 §10.2): SLH-DSA's internal signature of
//! M' = 1 ‖ len(ctx) ‖ ctx ‖ OID(PH) ‖ PH(M) (`prehash` builds M' and drives the operations),
//! on RustCrypto `slh-dsa`'s internal interface. Keys are SLH-DSA keys (`CKK_SLH_DSA`).

use crate::error::Result;
use crate::mechanism::hybrid::Ed25519Signer;
use crate::mechanism::prehash::{PreHashMechanisms, PreHashSigner, PreHashVerifier};
use crate::mechanism::signing::{SignOperation, VerifyOperation};
use crate::mechanism::slhdsa::ParamSet;
use crate::mechanism::{
    check_key, key_value, Mechanism, MechanismFamily, MechanismInfo, ParamShape,
};
use crate::token::object::Object;
use cryptoki_sys::*;
use std::sync::Arc;

/// `CKM_HASH_SLH_DSA` (the caller hashes; the parameter names the hash) and
/// `CKM_HASH_SLH_DSA_<hash>` (this module hashes the message, multi-part).
pub struct HashSlhDsa;

const MECHANISMS: PreHashMechanisms = PreHashMechanisms {
    bare: CKM_HASH_SLH_DSA,
    first: CKM_HASH_SLH_DSA_SHA224,
};

impl MechanismFamily for HashSlhDsa {
    fn mechanisms(&self) -> &'static [MechanismInfo] {
        const LIST: [MechanismInfo; 11] =
            MECHANISMS.infos(CKP_SLH_DSA_SHA2_128S, CKP_SLH_DSA_SHAKE_256F);
        &LIST
    }

    fn param_shape(&self, mechanism: CK_MECHANISM_TYPE) -> ParamShape {
        match mechanism {
            CKM_HASH_SLH_DSA => ParamShape::HashSignContext,
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
        let ck = mechanism.mechanism;
        check_key(key, CKO_PRIVATE_KEY, CKK_SLH_DSA, CKA_SIGN, ck)?;
        let set = ParamSet::from_ck(key.ulong(CKA_PARAMETER_SET)?)?;
        let private_key = key_value(key)?;
        let deterministic = parts.0.hedge == CKH_DETERMINISTIC_REQUIRED;
        Ok(PreHashSigner::boxed(
            set.signature_len(),
            parts,
            Box::new(move |m| set.sign_internal(&private_key, m, deterministic)),
        ))
    }

    fn verify_init(&self, mechanism: &Mechanism, key: &Object) -> Result<Box<dyn VerifyOperation>> {
        let parts = MECHANISMS.options_and_hash(mechanism)?;
        let ck = mechanism.mechanism;
        check_key(key, CKO_PUBLIC_KEY, CKK_SLH_DSA, CKA_VERIFY, ck)?;
        let set = ParamSet::from_ck(key.ulong(CKA_PARAMETER_SET)?)?;
        let public_key = key_value(key)?;
        Ok(PreHashVerifier::boxed(
            parts,
            Box::new(move |m, signature| set.verify_internal(&public_key, m, signature)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mechanism::hash_mldsa::tests::fips204_oid;
    use crate::mechanism::prehash::PreHash;
    use fips205::traits::{SerDes, Verifier};

    /// `fips205` (its own M'; the OIDs as `fips204` spells them) accepts our HashSLH-DSA signatures for all ten
    /// pre-hashes, and refuses them for another digest or context.
    #[test]
    fn fips205_accepts_every_prehash() {
        let set = ParamSet::Shake128f;
        let (pk, sk) = set.keypair().unwrap();
        let fips_pk =
            fips205::slh_dsa_shake_128f::PublicKey::try_from_bytes(pk.clone().try_into().unwrap())
                .unwrap();
        for hash in PreHash::ALL {
            let mut h = hash.hasher();
            h.update(b"message");
            let digest = h.finish();
            let m = hash.message_prime(&digest, b"ctx").unwrap();
            let sig = set.sign_internal(&sk, &m, true).unwrap();
            assert_eq!(sig, set.sign_internal(&sk, &m, true).unwrap());
            set.verify_internal(&pk, &m, &sig).unwrap();
            let sig: [u8; 17088] = sig.try_into().unwrap();
            let oid = fips204_oid(hash);
            assert!(fips_pk.hash_verify(&digest, &sig, b"ctx", &oid), "{hash:?}");
            let mut other = digest.clone();
            other[0] ^= 1;
            assert!(!fips_pk.hash_verify(&other, &sig, b"ctx", &oid));
            assert!(!fips_pk.hash_verify(&digest, &sig, b"cty", &oid));
        }
    }
}

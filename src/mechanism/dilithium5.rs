//! Round-3 (3.1) CRYSTALS-Dilithium5 through PQClean (`pqcrypto-dilithium` 0.4.6): public key
//! 2592, private key 4864, signature 4595 bytes, deterministic signing. Not ML-DSA-87: the two
//! differ in key format, hashing and signature length, and verify nothing of each other's.

use crate::consts::{CKK_B4AE_DILITHIUM5, CKM_B4AE_DILITHIUM5, CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN};
use crate::error::{Error, Result};
use crate::mechanism::hybrid::Ed25519Signer;
use crate::mechanism::signing::WholeMessageSigner;
use crate::mechanism::signing::{SignOperation, VerifyOperation};
use crate::mechanism::{check_key, Mechanism, MechanismFamily, MechanismInfo};
use crate::token::attributes::Attributes;
use crate::token::factory;
use crate::token::object::Object;
use cryptoki_sys::*;
use pqcrypto_dilithium::dilithium5;
use pqcrypto_traits::sign::{DetachedSignature as _, PublicKey as _, SecretKey as _};
use std::sync::Arc;
use zeroize::Zeroizing;

pub const PUBLIC_KEY_LEN: usize = dilithium5::public_key_bytes();
pub const PRIVATE_KEY_LEN: usize = dilithium5::secret_key_bytes();
pub const SIGNATURE_LEN: usize = dilithium5::signature_bytes();

const _: () = assert!(PUBLIC_KEY_LEN == 2592 && PRIVATE_KEY_LEN == 4864 && SIGNATURE_LEN == 4595);

/// A fresh key pair: (public key, private key).
pub fn keypair() -> (Vec<u8>, Zeroizing<Vec<u8>>) {
    let (pk, sk) = dilithium5::keypair();
    let sk = SigningKey(Box::new(sk));
    let private = Zeroizing::new(sk.0.as_bytes().to_vec());
    (pk.as_bytes().to_vec(), private)
}

/// Verifies a signature of the whole message.
pub fn verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<()> {
    if signature.len() != SIGNATURE_LEN {
        return Err(Error::SIGNATURE_LEN_RANGE);
    }
    let pk = dilithium5::PublicKey::from_bytes(public_key).map_err(|_| Error::GENERAL)?;
    let sig = dilithium5::DetachedSignature::from_bytes(signature)
        .map_err(|_| Error::SIGNATURE_INVALID)?;
    dilithium5::verify_detached_signature(&sig, message, &pk).map_err(|_| Error::SIGNATURE_INVALID)
}

/// A private key ready to sign, wiped when dropped.
pub struct SigningKey(Box<dilithium5::SecretKey>);

impl SigningKey {
    pub fn new(private_key: &[u8]) -> Result<Self> {
        let sk = dilithium5::SecretKey::from_bytes(private_key).map_err(|_| Error::GENERAL)?;
        Ok(SigningKey(Box::new(sk)))
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        dilithium5::detached_sign(message, &self.0)
            .as_bytes()
            .to_vec()
    }
}

impl Drop for SigningKey {
    fn drop(&mut self) {
        // As for ML-DSA: PQClean's key type has no zeroize; overwrite it in place.
        if let Ok(zero) = dilithium5::SecretKey::from_bytes(&[0u8; PRIVATE_KEY_LEN]) {
            *self.0 = zero;
        }
        std::hint::black_box(&*self.0);
    }
}

/// The Dilithium5 family: `CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN` and `CKM_B4AE_DILITHIUM5`. Key
/// sizes are the public key's bytes.
pub struct Dilithium5;

impl MechanismFamily for Dilithium5 {
    fn mechanisms(&self) -> &'static [MechanismInfo] {
        const LEN: CK_ULONG = PUBLIC_KEY_LEN as CK_ULONG;
        const MECHANISMS: &[MechanismInfo] = &[
            MechanismInfo::new(
                CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN,
                LEN,
                LEN,
                CKF_GENERATE_KEY_PAIR,
            ),
            MechanismInfo::new(CKM_B4AE_DILITHIUM5, LEN, LEN, CKF_SIGN | CKF_VERIFY),
        ];
        MECHANISMS
    }

    fn sign_init(
        &self,
        mechanism: &Mechanism,
        key: &Object,
        _ed25519: Option<Arc<dyn Ed25519Signer>>,
    ) -> Result<Box<dyn SignOperation>> {
        mechanism.expect_no_param()?;
        let (class, key_type) = (CKO_PRIVATE_KEY, CKK_B4AE_DILITHIUM5);
        check_key(key, class, key_type, CKA_SIGN, CKM_B4AE_DILITHIUM5)?;
        let key = key.dilithium5_key()?;
        Ok(WholeMessageSigner::boxed(SIGNATURE_LEN, move |m| {
            Ok(key.sign(m))
        }))
    }

    fn verify_init(&self, mechanism: &Mechanism, key: &Object) -> Result<Box<dyn VerifyOperation>> {
        crate::mechanism::signing::value_key_verifier(mechanism, key, CKK_B4AE_DILITHIUM5, verify)
    }

    fn generate_key_pair(
        &self,
        _mechanism: &Mechanism,
        public: Attributes,
        private: Attributes,
    ) -> Result<(Attributes, Attributes)> {
        let (mut public, mut private) =
            factory::pair_templates(public, private, CKK_B4AE_DILITHIUM5)?;
        if public.contains(CKA_VALUE) || private.contains(CKA_VALUE) {
            return Err(Error::TEMPLATE_INCONSISTENT);
        }
        let (pk, sk) = keypair();
        public.set(CKA_VALUE, pk);
        private.set(CKA_VALUE, sk.to_vec());
        Ok(factory::generated_pair(
            CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN,
            CKK_B4AE_DILITHIUM5,
            public,
            private,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_round_trip() {
        let (pk, sk) = keypair();
        assert_eq!((pk.len(), sk.len()), (2592, 4864));
        let key = SigningKey::new(&sk).unwrap();
        let sig = key.sign(b"msg");
        assert_eq!(sig.len(), 4595);
        assert_eq!(sig, key.sign(b"msg"), "round-3 signing is deterministic");
        verify(&pk, b"msg", &sig).unwrap();
        assert_eq!(verify(&pk, b"other", &sig), Err(Error::SIGNATURE_INVALID));
    }
}

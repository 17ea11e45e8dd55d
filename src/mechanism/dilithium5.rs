//! Round-3 (3.1) CRYSTALS-Dilithium5 through PQClean (`pqcrypto-dilithium` 0.4.6): public key
//! 2592, private key 4864, signature 4595 bytes, deterministic signing. Not ML-DSA-87: the two
//! differ in key format, hashing and signature length, and verify nothing of each other's.

use crate::error::{Error, Result};
use pqcrypto_dilithium::dilithium5;
use pqcrypto_traits::sign::{DetachedSignature as _, PublicKey as _, SecretKey as _};
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

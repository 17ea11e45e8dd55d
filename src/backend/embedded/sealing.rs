//! The embedded store's cryptography: PIN-derived keys (Argon2id) and AES-256-GCM sealing with
//! the record's identity as associated data.

use crate::config::PinKdf;
use crate::error::{Error, Result};
pub use crate::random::random_bytes;
use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use zeroize::Zeroizing;

/// A 256-bit key that is wiped when dropped.
pub type Key = Zeroizing<[u8; 32]>;

const NONCE_LEN: usize = 12;

/// Argon2id cost, recorded beside each wrapped key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfCost {
    pub memory_kib: u32,
    pub passes: u32,
}

/// The largest cost accepted from a store: the file is not trusted, and an absurd cost would
/// abort the host process (allocation failure) or hang it. 1 GiB and 16 passes are far above
/// the production setting and still finish.
const MAX_MEMORY_KIB: u32 = 1024 * 1024;
const MAX_PASSES: u32 = 16;
/// Argon2's own minimum for one lane.
const MIN_MEMORY_KIB: u32 = 8;

impl KdfCost {
    /// Whether a cost read from a store is within the bounds this module will run.
    pub fn is_sane(self) -> bool {
        (MIN_MEMORY_KIB..=MAX_MEMORY_KIB).contains(&self.memory_kib)
            && (1..=MAX_PASSES).contains(&self.passes)
    }

    pub fn for_setting(kdf: PinKdf) -> Self {
        match kdf {
            PinKdf::Argon2id => KdfCost {
                memory_kib: 64 * 1024,
                passes: 3,
            },
            PinKdf::TestOnlyFast => KdfCost {
                memory_kib: 256,
                passes: 1,
            },
        }
    }
}

/// A fresh random key.
pub fn random_key() -> Result<Key> {
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::getrandom(key.as_mut()).map_err(|_| Error::DEVICE)?;
    Ok(key)
}

/// The key-encryption key for a PIN.
pub fn pin_key(pin: &[u8], salt: &[u8], cost: KdfCost) -> Result<Key> {
    if !cost.is_sane() {
        return Err(Error::DEVICE);
    }
    let params = argon2::Params::new(cost.memory_kib, cost.passes, 1, Some(32))
        .map_err(|_| Error::DEVICE)?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(pin, salt, key.as_mut())
        .map_err(|_| Error::DEVICE)?;
    Ok(key)
}

/// AES-256-GCM: `nonce || ciphertext || tag`.
pub fn seal(key: &Key, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
    let cipher = Aes256Gcm::new_from_slice(key.as_ref()).map_err(|_| Error::GENERAL)?;
    let nonce = random_bytes::<NONCE_LEN>()?;
    let mut out = nonce.to_vec();
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| Error::GENERAL)?;
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Opens what [`seal`] made. `None` when the key or the associated data is wrong, or the
/// record was altered.
pub fn open(key: &Key, sealed: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let cipher = Aes256Gcm::new_from_slice(key.as_ref()).ok()?;
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
        .map(Zeroizing::new)
}

/// A key for HMAC-SHA-256 derived from the token key for one purpose, so that the token key
/// itself only ever seals.
pub fn derived_mac_key(token_key: &Key, purpose: &[u8]) -> aws_lc_rs::hmac::Key {
    use aws_lc_rs::hmac;
    let root = hmac::Key::new(hmac::HMAC_SHA256, token_key.as_ref());
    let derived = Zeroizing::new(hmac::sign(&root, purpose).as_ref().to_vec());
    hmac::Key::new(hmac::HMAC_SHA256, &derived)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_binds_the_associated_data() {
        let key = random_key().unwrap();
        let sealed = seal(&key, b"secret", b"id-1").unwrap();
        assert_eq!(open(&key, &sealed, b"id-1").unwrap().as_slice(), b"secret");
        assert!(open(&key, &sealed, b"id-2").is_none());
        assert!(open(&random_key().unwrap(), &sealed, b"id-1").is_none());
    }

    #[test]
    fn pin_keys_depend_on_pin_and_salt() {
        let cost = KdfCost::for_setting(PinKdf::TestOnlyFast);
        let a = pin_key(b"1234", b"saltsaltsaltsalt", cost).unwrap();
        let b = pin_key(b"1235", b"saltsaltsaltsalt", cost).unwrap();
        let c = pin_key(b"1234", b"saltsaltsaltsalu", cost).unwrap();
        assert_ne!(*a, *b);
        assert_ne!(*a, *c);
    }

    #[test]
    fn absurd_costs_are_refused_not_run() {
        let huge = KdfCost {
            memory_kib: u32::MAX,
            passes: 1,
        };
        let endless = KdfCost {
            memory_kib: 256,
            passes: u32::MAX,
        };
        assert!(pin_key(b"12345678", b"saltsaltsaltsalt", huge).is_err());
        assert!(pin_key(b"12345678", b"saltsaltsaltsalt", endless).is_err());
        assert!(KdfCost::for_setting(PinKdf::Argon2id).is_sane());
    }
}

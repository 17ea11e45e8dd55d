//! Sealing to a role's public key: X25519 with an ephemeral key, SHA-256 of the shared secret
//! and both public keys as the AES-256-GCM key. It lets whoever holds the token key hand a new
//! one to the other role without knowing that role's PIN, so `C_SetPIN` can change the token
//! key itself.

use super::sealing::{self, Key};
use crate::error::{Error, Result};
use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub const PUBLIC_LEN: usize = 32;

/// A role's key pair: the secret is what its PIN wraps.
pub struct RoleKeys {
    pub secret: Key,
    pub public: [u8; PUBLIC_LEN],
}

fn private_key(secret: &Key) -> Result<PrivateKey> {
    PrivateKey::from_private_key(&X25519, secret.as_ref()).map_err(|_| Error::GENERAL)
}

/// The public key of a secret.
pub fn public_of(secret: &Key) -> Result<[u8; PUBLIC_LEN]> {
    let public = private_key(secret)?
        .compute_public_key()
        .map_err(|_| Error::GENERAL)?;
    public.as_ref().try_into().map_err(|_| Error::GENERAL)
}

pub fn new_role_keys() -> Result<RoleKeys> {
    let secret = sealing::random_key()?;
    let public = public_of(&secret)?;
    Ok(RoleKeys { secret, public })
}

fn box_key(shared: &[u8], ephemeral: &[u8], recipient: &[u8]) -> Key {
    let digest = Sha256::new()
        .chain_update(b"b4ae-pkcs11/box/v2")
        .chain_update(shared)
        .chain_update(ephemeral)
        .chain_update(recipient)
        .finalize();
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&digest);
    key
}

/// `ephemeral public key || AES-GCM record`.
pub fn seal_to(recipient: &[u8; PUBLIC_LEN], plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
    let ephemeral = new_role_keys()?;
    let peer = UnparsedPublicKey::new(&X25519, recipient);
    let key = agreement::agree(
        &private_key(&ephemeral.secret)?,
        peer,
        Error::GENERAL,
        |s| Ok(box_key(s, &ephemeral.public, recipient)),
    )?;
    let mut out = ephemeral.public.to_vec();
    out.extend_from_slice(&sealing::seal(&key, plaintext, aad)?);
    Ok(out)
}

/// Opens what [`seal_to`] made for this secret; `None` if anything does not match.
pub fn open_with(secret: &Key, sealed: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < PUBLIC_LEN {
        return None;
    }
    let (ephemeral, record) = sealed.split_at(PUBLIC_LEN);
    let recipient = public_of(secret).ok()?;
    let peer = UnparsedPublicKey::new(&X25519, ephemeral);
    let key = agreement::agree(&private_key(secret).ok()?, peer, (), |s| {
        Ok(box_key(s, ephemeral, &recipient))
    })
    .ok()?;
    sealing::open(&key, record, aad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_recipient_opens_a_box() {
        let alice = new_role_keys().unwrap();
        let mallory = new_role_keys().unwrap();
        let sealed = seal_to(&alice.public, b"token key", b"aad").unwrap();
        let opened = open_with(&alice.secret, &sealed, b"aad").unwrap();
        assert_eq!(opened.as_slice(), b"token key");
        assert!(open_with(&mallory.secret, &sealed, b"aad").is_none());
        assert!(open_with(&alice.secret, &sealed, b"other").is_none());
        assert_eq!(public_of(&alice.secret).unwrap(), alice.public);
    }
}

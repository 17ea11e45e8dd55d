//! The B4AE hybrid signature: Ed25519 and ML-DSA-87 over the same message, byte-compatible with
//! the B4AE protocol library:
//!
//! ```text
//! signature = u32be(64) || Ed25519 signature (64) || ML-DSA-87 signature (4627)   4695 bytes
//! public    = Ed25519 public key (32) || ML-DSA-87 public key (2592)             2624 bytes
//! private   = Ed25519 seed (32) || ML-DSA-87 expanded private key (4896)         4928 bytes
//! ```
//!
//! Ed25519 is PureEdDSA (RFC 8032); ML-DSA-87 is pure, hedged, with an empty context.
//! Verification needs both halves.

use crate::consts::{CKK_B4AE_HYBRID, CKM_B4AE_HYBRID, CKM_B4AE_HYBRID_KEY_PAIR_GEN};
use crate::error::{Error, Result};
use crate::mechanism::mldsa::{self, ParamSet};
use crate::mechanism::signing::WholeMessageSigner;
use crate::mechanism::signing::{SignOperation, VerifyOperation};
use crate::mechanism::{check_key, Mechanism, MechanismFamily, MechanismInfo};
use crate::token::attributes::Attributes;
use crate::token::factory;
use crate::token::object::Object;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use cryptoki_sys::*;
use std::sync::Arc;
use zeroize::Zeroizing;

pub const ED25519_PUBLIC_LEN: usize = 32;
pub const ED25519_SEED_LEN: usize = 32;
pub const ED25519_SIGNATURE_LEN: usize = 64;
const MLDSA: ParamSet = ParamSet::MlDsa87;
pub const MLDSA_PUBLIC_LEN: usize = 2592;
pub const MLDSA_PRIVATE_LEN: usize = 4896;
const MLDSA_SIGNATURE_LEN: usize = 4627;
pub const PUBLIC_KEY_LEN: usize = ED25519_PUBLIC_LEN + MLDSA_PUBLIC_LEN;
pub const PRIVATE_KEY_LEN: usize = ED25519_SEED_LEN + MLDSA_PRIVATE_LEN;
pub const SIGNATURE_LEN: usize = 4 + ED25519_SIGNATURE_LEN + MLDSA_SIGNATURE_LEN;

const _: () = assert!(PUBLIC_KEY_LEN == 2624 && PRIVATE_KEY_LEN == 4928 && SIGNATURE_LEN == 4695);

/// Whoever holds the Ed25519 half: this module, or the HSM.
pub trait Ed25519Signer: Send + Sync {
    fn sign(&self, message: &[u8]) -> Result<[u8; ED25519_SIGNATURE_LEN]>;
}

/// An Ed25519 key held in this module's memory (AWS-LC; it wipes the key when dropped).
pub struct LocalEd25519(Ed25519KeyPair);

impl LocalEd25519 {
    pub fn new(seed: &[u8]) -> Result<Self> {
        Ed25519KeyPair::from_seed_unchecked(seed)
            .map(LocalEd25519)
            .map_err(|_| Error::GENERAL)
    }

    pub fn public_key(&self) -> [u8; ED25519_PUBLIC_LEN] {
        let mut out = [0u8; ED25519_PUBLIC_LEN];
        out.copy_from_slice(self.0.public_key().as_ref());
        out
    }
}

impl Ed25519Signer for LocalEd25519 {
    fn sign(&self, message: &[u8]) -> Result<[u8; ED25519_SIGNATURE_LEN]> {
        let mut out = [0u8; ED25519_SIGNATURE_LEN];
        out.copy_from_slice(self.0.sign(message).as_ref());
        Ok(out)
    }
}

/// A fresh ML-DSA-87 half: (public key, expanded private key).
pub fn mldsa_keypair() -> Result<(Vec<u8>, Zeroizing<Vec<u8>>)> {
    let seed = Zeroizing::new(crate::random::random_bytes::<{ mldsa::SEED_LEN }>()?);
    MLDSA.keygen_from_seed(&seed)
}

/// A fresh hybrid key pair held by this module: (public key, private key).
pub fn keypair() -> Result<(Vec<u8>, Zeroizing<Vec<u8>>)> {
    let seed = Zeroizing::new(crate::random::random_bytes::<ED25519_SEED_LEN>()?);
    let ed_public = LocalEd25519::new(seed.as_ref())?.public_key();
    let (ml_public, ml_private) = mldsa_keypair()?;
    let mut private = Zeroizing::new(Vec::with_capacity(PRIVATE_KEY_LEN));
    private.extend_from_slice(seed.as_ref());
    private.extend_from_slice(&ml_private);
    Ok(([&ed_public[..], &ml_public].concat(), private))
}

/// The public key of an imported private key, checking both halves.
pub fn public_of_private(private: &[u8]) -> Result<Vec<u8>> {
    if private.len() != PRIVATE_KEY_LEN {
        return Err(Error::ATTRIBUTE_VALUE_INVALID);
    }
    let (seed, ml_private) = private.split_at(ED25519_SEED_LEN);
    let ed_public = LocalEd25519::new(seed)
        .map_err(|_| Error::ATTRIBUTE_VALUE_INVALID)?
        .public_key();
    let ml_public = MLDSA.public_of_private(ml_private)?;
    Ok([&ed_public[..], &ml_public].concat())
}

/// The two halves of a hybrid public key.
pub fn split_public(public: &[u8]) -> Result<(&[u8], &[u8])> {
    if public.len() != PUBLIC_KEY_LEN {
        return Err(Error::GENERAL);
    }
    Ok(public.split_at(ED25519_PUBLIC_LEN))
}

/// A private key ready to sign.
pub struct SigningKey {
    ed25519: Arc<dyn Ed25519Signer>,
    mldsa: mldsa::SigningKey,
}

impl SigningKey {
    /// From the full private key this module holds.
    pub fn new(private: &[u8]) -> Result<Self> {
        if private.len() != PRIVATE_KEY_LEN {
            return Err(Error::GENERAL);
        }
        let (seed, ml_private) = private.split_at(ED25519_SEED_LEN);
        Self::with_ed25519(Arc::new(LocalEd25519::new(seed)?), ml_private)
    }

    /// With the Ed25519 half held elsewhere (in the HSM).
    pub fn with_ed25519(ed25519: Arc<dyn Ed25519Signer>, ml_private: &[u8]) -> Result<Self> {
        Ok(SigningKey {
            ed25519,
            mldsa: mldsa::SigningKey::new(MLDSA, ml_private)?,
        })
    }

    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let ed = self.ed25519.sign(message)?;
        let ml = self.mldsa.sign_hedged(message, b"");
        let mut out = Vec::with_capacity(SIGNATURE_LEN);
        out.extend_from_slice(&(ED25519_SIGNATURE_LEN as u32).to_be_bytes());
        out.extend_from_slice(&ed);
        out.extend_from_slice(&ml);
        Ok(out)
    }
}

/// Verifies a hybrid signature: the length prefix, then both halves.
pub fn verify(public: &[u8], message: &[u8], signature: &[u8]) -> Result<()> {
    if signature.len() != SIGNATURE_LEN {
        return Err(Error::SIGNATURE_LEN_RANGE);
    }
    let (prefix, rest) = signature.split_at(4);
    if prefix != (ED25519_SIGNATURE_LEN as u32).to_be_bytes() {
        return Err(Error::SIGNATURE_INVALID);
    }
    let (ed_sig, ml_sig) = rest.split_at(ED25519_SIGNATURE_LEN);
    let (ed_public, ml_public) = split_public(public)?;
    let ed_ok = UnparsedPublicKey::new(&ED25519, ed_public)
        .verify(message, ed_sig)
        .is_ok();
    let ml_ok = MLDSA.verify(ml_public, message, b"", ml_sig).is_ok();
    if ed_ok && ml_ok {
        Ok(())
    } else {
        Err(Error::SIGNATURE_INVALID)
    }
}

/// The hybrid family: `CKM_B4AE_HYBRID_KEY_PAIR_GEN` and `CKM_B4AE_HYBRID`. Key sizes are the
/// public key's bytes.
pub struct Hybrid;

impl MechanismFamily for Hybrid {
    fn mechanisms(&self) -> &'static [MechanismInfo] {
        const LEN: CK_ULONG = PUBLIC_KEY_LEN as CK_ULONG;
        const MECHANISMS: &[MechanismInfo] = &[
            MechanismInfo::new(
                CKM_B4AE_HYBRID_KEY_PAIR_GEN,
                LEN,
                LEN,
                CKF_GENERATE_KEY_PAIR,
            ),
            MechanismInfo::new(CKM_B4AE_HYBRID, LEN, LEN, CKF_SIGN | CKF_VERIFY),
        ];
        MECHANISMS
    }

    fn sign_init(
        &self,
        mechanism: &Mechanism,
        key: &Object,
        ed25519: Option<Arc<dyn Ed25519Signer>>,
    ) -> Result<Box<dyn SignOperation>> {
        mechanism.expect_no_param()?;
        check_key(
            key,
            CKO_PRIVATE_KEY,
            CKK_B4AE_HYBRID,
            CKA_SIGN,
            CKM_B4AE_HYBRID,
        )?;
        let key = match ed25519 {
            // The record keeps only the ML-DSA-87 half; the HSM signs with the other.
            Some(ed) => {
                let value = key.attrs.get(CKA_VALUE).ok_or(Error::USER_NOT_LOGGED_IN)?;
                Arc::new(SigningKey::with_ed25519(ed, value)?)
            }
            None => key.hybrid_key()?,
        };
        Ok(WholeMessageSigner::boxed(SIGNATURE_LEN, move |m| {
            key.sign(m)
        }))
    }

    fn verify_init(&self, mechanism: &Mechanism, key: &Object) -> Result<Box<dyn VerifyOperation>> {
        crate::mechanism::signing::value_key_verifier(mechanism, key, CKK_B4AE_HYBRID, verify)
    }

    /// Both halves held by this module; a pkcs11 slot whose HSM keeps the Ed25519 half makes
    /// its pairs itself (`factory::hybrid_pair`).
    fn generate_key_pair(
        &self,
        _mechanism: &Mechanism,
        public: Attributes,
        private: Attributes,
    ) -> Result<(Attributes, Attributes)> {
        let (pk, sk) = keypair()?;
        factory::hybrid_pair(public, private, pk, sk.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_either_half_matters() {
        let (public, private) = keypair().unwrap();
        assert_eq!(public_of_private(&private).unwrap(), public);
        let key = SigningKey::new(&private).unwrap();
        let sig = key.sign(b"msg").unwrap();
        assert_eq!(&sig[..4], &[0, 0, 0, 64]);
        verify(&public, b"msg", &sig).unwrap();
        for at in [2, 4 + 10, 4 + 64 + 100] {
            let mut bad = sig.clone();
            bad[at] ^= 1;
            assert_eq!(verify(&public, b"msg", &bad), Err(Error::SIGNATURE_INVALID));
        }
        assert_eq!(
            verify(&public, b"msg", &sig[1..]),
            Err(Error::SIGNATURE_LEN_RANGE)
        );
    }
}

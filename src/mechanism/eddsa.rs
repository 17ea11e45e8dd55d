//! Ed25519 on the embedded token: `CKM_EC_EDWARDS_KEY_PAIR_GEN` and `CKM_EDDSA` (PureEdDSA,
//! RFC 8032). Keys follow PKCS#11's EC conventions: `CKA_EC_PARAMS` names the curve,
//! `CKA_EC_POINT` is the public key as a DER OCTET STRING, the private `CKA_VALUE` is the seed.

use crate::error::{Error, Result};
use crate::mechanism::hybrid::LocalEd25519;
use aws_lc_rs::signature::{UnparsedPublicKey, ED25519};

pub const PUBLIC_KEY_LEN: usize = 32;
pub const SEED_LEN: usize = 32;
pub const SIGNATURE_LEN: usize = 64;

/// `CKA_EC_PARAMS` for edwards25519 in the two forms PKCS#11 3.x allows: the OID 1.3.101.112,
/// and the PrintableString "edwards25519".
const OID: &[u8] = &[0x06, 0x03, 0x2B, 0x65, 0x70];
const NAME: &[u8] = b"\x13\x0cedwards25519";

/// Checks `CKA_EC_PARAMS`: only Ed25519 is offered.
pub fn check_params(params: &[u8]) -> Result<()> {
    if params == OID || params == NAME {
        Ok(())
    } else {
        Err(Error(cryptoki_sys::CKR_CURVE_NOT_SUPPORTED))
    }
}

/// `CKA_EC_POINT`: the public key as a DER OCTET STRING.
pub fn encode_point(public: &[u8; PUBLIC_KEY_LEN]) -> Vec<u8> {
    [&[0x04, PUBLIC_KEY_LEN as u8][..], public].concat()
}

/// The public key of a `CKA_EC_POINT` (DER OCTET STRING, or the bare 32 bytes some
/// applications write).
pub fn decode_point(point: &[u8]) -> Result<[u8; PUBLIC_KEY_LEN]> {
    let raw = match point {
        [0x04, 0x20, rest @ ..] if rest.len() == PUBLIC_KEY_LEN => rest,
        raw => raw,
    };
    raw.try_into().map_err(|_| Error::ATTRIBUTE_VALUE_INVALID)
}

/// A fresh key pair: (seed, public key).
pub fn keypair() -> Result<(zeroize::Zeroizing<[u8; SEED_LEN]>, [u8; PUBLIC_KEY_LEN])> {
    let seed = zeroize::Zeroizing::new(crate::backend::random_bytes::<SEED_LEN>()?);
    let public = LocalEd25519::new(seed.as_ref())?.public_key();
    Ok((seed, public))
}

/// The public key of a seed.
pub fn public_of_seed(seed: &[u8]) -> Result<[u8; PUBLIC_KEY_LEN]> {
    if seed.len() != SEED_LEN {
        return Err(Error::ATTRIBUTE_VALUE_INVALID);
    }
    Ok(LocalEd25519::new(seed)?.public_key())
}

pub fn verify(public: &[u8; PUBLIC_KEY_LEN], message: &[u8], signature: &[u8]) -> Result<()> {
    if signature.len() != SIGNATURE_LEN {
        return Err(Error::SIGNATURE_LEN_RANGE);
    }
    UnparsedPublicKey::new(&ED25519, public)
        .verify(message, signature)
        .map_err(|_| Error::SIGNATURE_INVALID)
}

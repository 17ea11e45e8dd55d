//! Ed25519 on the embedded token: `CKM_EC_EDWARDS_KEY_PAIR_GEN` and `CKM_EDDSA` (PureEdDSA,
//! RFC 8032). Keys follow PKCS#11's EC conventions: `CKA_EC_PARAMS` names the curve,
//! `CKA_EC_POINT` is the public key as a DER OCTET STRING, the private `CKA_VALUE` is the seed.

use crate::error::{Error, Result};
use crate::mechanism::hybrid::{Ed25519Signer, LocalEd25519};
use crate::mechanism::signing::{SignOperation, VerifyOperation};
use crate::mechanism::signing::{WholeMessageSigner, WholeMessageVerifier};
use crate::mechanism::{check_key, Mechanism, MechanismFamily, MechanismInfo, Param, ParamShape};
use crate::token::attributes::Attributes;
use crate::token::factory;
use crate::token::object::Object;
use aws_lc_rs::signature::{UnparsedPublicKey, ED25519};
use cryptoki_sys::*;
use std::sync::Arc;

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
        Err(Error(CKR_CURVE_NOT_SUPPORTED))
    }
}

/// A `CKM_EC_EDWARDS_KEY_PAIR_GEN` public template without `CKA_EC_PARAMS` asks for Ed25519:
/// the B4AE library's own PKCS#11 client (`b4ae` 2.1.3, `Pkcs11HsmEnhanced`) omits the curve,
/// and Ed25519 is the one Edwards curve it uses (SPEC §7). Completed before any backend sees the
/// request, so an HSM gets a standard template. Any other template is left as it is.
pub fn with_default_curve(mechanism: &Mechanism, mut public: Attributes) -> Attributes {
    if mechanism.mechanism == CKM_EC_EDWARDS_KEY_PAIR_GEN && !public.contains(CKA_EC_PARAMS) {
        tracing::info!("CKM_EC_EDWARDS_KEY_PAIR_GEN without CKA_EC_PARAMS: Ed25519 keys");
        public.set(CKA_EC_PARAMS, OID.to_vec());
    }
    public
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
    let seed = zeroize::Zeroizing::new(crate::random::random_bytes::<SEED_LEN>()?);
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

/// The Ed25519 family: `CKM_EC_EDWARDS_KEY_PAIR_GEN` and `CKM_EDDSA`, classical. Key sizes are
/// the curve's bits.
pub struct EdDsa;

impl MechanismFamily for EdDsa {
    fn mechanisms(&self) -> &'static [MechanismInfo] {
        const MECHANISMS: &[MechanismInfo] = &[
            MechanismInfo::new(CKM_EC_EDWARDS_KEY_PAIR_GEN, 255, 255, CKF_GENERATE_KEY_PAIR),
            MechanismInfo::new(CKM_EDDSA, 255, 255, CKF_SIGN | CKF_VERIFY),
        ];
        MECHANISMS
    }

    fn param_shape(&self, mechanism: CK_MECHANISM_TYPE) -> ParamShape {
        match mechanism {
            CKM_EDDSA => ParamShape::Eddsa,
            _ => ParamShape::Empty,
        }
    }

    fn classical(&self) -> bool {
        true
    }

    fn sign_init(
        &self,
        mechanism: &Mechanism,
        key: &Object,
        _ed25519: Option<Arc<dyn Ed25519Signer>>,
    ) -> Result<Box<dyn SignOperation>> {
        pure_eddsa(&mechanism.param)?;
        check_key(key, CKO_PRIVATE_KEY, CKK_EC_EDWARDS, CKA_SIGN, CKM_EDDSA)?;
        let key = key.ed25519_key()?;
        Ok(WholeMessageSigner::boxed(SIGNATURE_LEN, move |m| {
            Ed25519Signer::sign(&*key, m).map(|s| s.to_vec())
        }))
    }

    fn verify_init(&self, mechanism: &Mechanism, key: &Object) -> Result<Box<dyn VerifyOperation>> {
        pure_eddsa(&mechanism.param)?;
        check_key(key, CKO_PUBLIC_KEY, CKK_EC_EDWARDS, CKA_VERIFY, CKM_EDDSA)?;
        let point = key.attrs.get(CKA_EC_POINT).ok_or(Error::GENERAL)?;
        let public_key = decode_point(point)?;
        Ok(WholeMessageVerifier::boxed(move |m, sig| {
            verify(&public_key, m, sig)
        }))
    }

    /// Ed25519 only: `CKA_EC_PARAMS` must name edwards25519.
    fn generate_key_pair(
        &self,
        _mechanism: &Mechanism,
        public: Attributes,
        private: Attributes,
    ) -> Result<(Attributes, Attributes)> {
        let (mut public, mut private) = factory::pair_templates(public, private, CKK_EC_EDWARDS)?;
        let params = public
            .get(CKA_EC_PARAMS)
            .ok_or(Error::TEMPLATE_INCOMPLETE)?
            .to_vec();
        check_params(&params)?;
        if private
            .get(CKA_EC_PARAMS)
            .is_some_and(|p| p != params.as_slice())
            || public.contains(CKA_EC_POINT)
            || private.contains(CKA_VALUE)
        {
            return Err(Error::TEMPLATE_INCONSISTENT);
        }
        let (seed, point) = keypair()?;
        public.set(CKA_EC_POINT, encode_point(&point));
        private.set(CKA_EC_PARAMS, params);
        private.set(CKA_VALUE, seed.to_vec());
        Ok(factory::generated_pair(
            CKM_EC_EDWARDS_KEY_PAIR_GEN,
            CKK_EC_EDWARDS,
            public,
            private,
        ))
    }
}

/// Ed25519 as RFC 8032 PureEdDSA only: no `CK_EDDSA_PARAMS`, or one asking for neither
/// pre-hashing nor a context (Ed25519ph / Ed25519ctx are not offered).
fn pure_eddsa(param: &Param) -> Result<()> {
    match param {
        Param::None => Ok(()),
        Param::Eddsa { prehash, context } if !prehash && context.is_empty() => Ok(()),
        _ => Err(Error::MECHANISM_PARAM_INVALID),
    }
}

//! HashML-DSA (FIPS 204 §5.4): ML-DSA over M' = 1 ‖ len(ctx) ‖ ctx ‖ OID(PH) ‖ PH(M).
//!
//! PQClean offers only pure ML-DSA, and `fips204` only three of the ten pre-hash functions, so
//! this runs on RustCrypto `ml-dsa`'s internal interface, which signs any M'.

#![allow(deprecated)] // `ml-dsa` deprecates the expanded key form; PKCS#11 keeps it in CKA_VALUE.

use crate::error::{Error, Result};
use crate::mechanism::hybrid::Ed25519Signer;
use crate::mechanism::mldsa::ParamSet;
use crate::mechanism::signing::{SignOperation, SignOptions, VerifyOperation};
use crate::mechanism::{check_key, Mechanism, MechanismFamily, MechanismInfo, ParamShape};
use crate::token::object::Object;
use cryptoki_sys::*;
use ml_dsa::{EncodedVerifyingKey, ExpandedSigningKey, ExpandedSigningKeyBytes, Signature};
use ml_dsa::{MlDsa44, MlDsa65, MlDsa87, VerifyingKey};
use sha2::Digest as _;
use sha3::digest::{ExtendableOutput, Update as _};
use std::sync::Arc;
use zeroize::Zeroizing;

/// A pre-hash function FIPS 204 names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreHash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
    Sha3_224,
    Sha3_256,
    Sha3_384,
    Sha3_512,
    Shake128,
    Shake256,
}

impl PreHash {
    /// The hash of a `CKM_HASH_ML_DSA_<hash>` mechanism.
    pub fn of_mechanism(mechanism: CK_MECHANISM_TYPE) -> Option<Self> {
        Some(match mechanism {
            CKM_HASH_ML_DSA_SHA224 => PreHash::Sha224,
            CKM_HASH_ML_DSA_SHA256 => PreHash::Sha256,
            CKM_HASH_ML_DSA_SHA384 => PreHash::Sha384,
            CKM_HASH_ML_DSA_SHA512 => PreHash::Sha512,
            CKM_HASH_ML_DSA_SHA3_224 => PreHash::Sha3_224,
            CKM_HASH_ML_DSA_SHA3_256 => PreHash::Sha3_256,
            CKM_HASH_ML_DSA_SHA3_384 => PreHash::Sha3_384,
            CKM_HASH_ML_DSA_SHA3_512 => PreHash::Sha3_512,
            CKM_HASH_ML_DSA_SHAKE128 => PreHash::Shake128,
            CKM_HASH_ML_DSA_SHAKE256 => PreHash::Shake256,
            _ => return None,
        })
    }

    /// The hash named by `CK_HASH_SIGN_ADDITIONAL_CONTEXT.hash`. PKCS#11 has no plain SHAKE
    /// digest mechanism; the SHAKE key-derivation numbers stand for them.
    pub fn of_hash_mechanism(hash: CK_MECHANISM_TYPE) -> Option<Self> {
        Some(match hash {
            CKM_SHA224 => PreHash::Sha224,
            CKM_SHA256 => PreHash::Sha256,
            CKM_SHA384 => PreHash::Sha384,
            CKM_SHA512 => PreHash::Sha512,
            CKM_SHA3_224 => PreHash::Sha3_224,
            CKM_SHA3_256 => PreHash::Sha3_256,
            CKM_SHA3_384 => PreHash::Sha3_384,
            CKM_SHA3_512 => PreHash::Sha3_512,
            CKM_SHAKE_128_KEY_DERIVATION => PreHash::Shake128,
            CKM_SHAKE_256_KEY_DERIVATION => PreHash::Shake256,
            _ => return None,
        })
    }

    /// Length of PH(M): the digest, or the SHAKE output FIPS 204 fixes.
    pub fn output_len(self) -> usize {
        match self {
            PreHash::Sha224 | PreHash::Sha3_224 => 28,
            PreHash::Sha256 | PreHash::Sha3_256 | PreHash::Shake128 => 32,
            PreHash::Sha384 | PreHash::Sha3_384 => 48,
            PreHash::Sha512 | PreHash::Sha3_512 | PreHash::Shake256 => 64,
        }
    }

    /// DER encoding of the hash's OID (2.16.840.1.101.3.4.2.x).
    fn oid(self) -> [u8; 11] {
        let last = match self {
            PreHash::Sha256 => 0x01,
            PreHash::Sha384 => 0x02,
            PreHash::Sha512 => 0x03,
            PreHash::Sha224 => 0x04,
            PreHash::Sha3_224 => 0x07,
            PreHash::Sha3_256 => 0x08,
            PreHash::Sha3_384 => 0x09,
            PreHash::Sha3_512 => 0x0A,
            PreHash::Shake128 => 0x0B,
            PreHash::Shake256 => 0x0C,
        };
        [
            0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, last,
        ]
    }

    /// A running hash of the message.
    pub fn hasher(self) -> Hasher {
        match self {
            PreHash::Sha224 => Hasher::Sha224(sha2::Sha224::new()),
            PreHash::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            PreHash::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            PreHash::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
            PreHash::Sha3_224 => Hasher::Sha3_224(sha3::Sha3_224::new()),
            PreHash::Sha3_256 => Hasher::Sha3_256(sha3::Sha3_256::new()),
            PreHash::Sha3_384 => Hasher::Sha3_384(sha3::Sha3_384::new()),
            PreHash::Sha3_512 => Hasher::Sha3_512(sha3::Sha3_512::new()),
            PreHash::Shake128 => Hasher::Shake128(sha3::Shake128::default()),
            PreHash::Shake256 => Hasher::Shake256(sha3::Shake256::default()),
        }
    }

    /// The FIPS 204 M' for a digest of this hash and a context.
    fn message_prime(self, digest: &[u8], context: &[u8]) -> Result<Vec<u8>> {
        if digest.len() != self.output_len() {
            return Err(Error::DATA_LEN_RANGE);
        }
        let context_len =
            u8::try_from(context.len()).map_err(|_| Error::MECHANISM_PARAM_INVALID)?;
        let mut m = Vec::with_capacity(2 + context.len() + 11 + digest.len());
        m.extend_from_slice(&[1, context_len]);
        m.extend_from_slice(context);
        m.extend_from_slice(&self.oid());
        m.extend_from_slice(digest);
        Ok(m)
    }
}

/// A message being hashed for HashML-DSA.
#[derive(Clone)]
pub enum Hasher {
    Sha224(sha2::Sha224),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
    Sha3_224(sha3::Sha3_224),
    Sha3_256(sha3::Sha3_256),
    Sha3_384(sha3::Sha3_384),
    Sha3_512(sha3::Sha3_512),
    Shake128(sha3::Shake128),
    Shake256(sha3::Shake256),
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha224(h) => sha2::Digest::update(h, data),
            Hasher::Sha256(h) => sha2::Digest::update(h, data),
            Hasher::Sha384(h) => sha2::Digest::update(h, data),
            Hasher::Sha512(h) => sha2::Digest::update(h, data),
            Hasher::Sha3_224(h) => sha2::Digest::update(h, data),
            Hasher::Sha3_256(h) => sha2::Digest::update(h, data),
            Hasher::Sha3_384(h) => sha2::Digest::update(h, data),
            Hasher::Sha3_512(h) => sha2::Digest::update(h, data),
            Hasher::Shake128(h) => h.update(data),
            Hasher::Shake256(h) => h.update(data),
        }
    }

    /// PH(M).
    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha224(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha384(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
            Hasher::Sha3_224(h) => h.finalize().to_vec(),
            Hasher::Sha3_256(h) => h.finalize().to_vec(),
            Hasher::Sha3_384(h) => h.finalize().to_vec(),
            Hasher::Sha3_512(h) => h.finalize().to_vec(),
            Hasher::Shake128(h) => h.finalize_boxed(32).to_vec(),
            Hasher::Shake256(h) => h.finalize_boxed(64).to_vec(),
        }
    }
}

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

/// Signs PH(M) with an expanded private key; `rnd` is 32 zero bytes for the deterministic
/// variant, fresh randomness otherwise.
pub fn sign(
    set: ParamSet,
    private_key: &[u8],
    hash: PreHash,
    digest: &[u8],
    context: &[u8],
    rnd: &[u8; 32],
) -> Result<Vec<u8>> {
    let m = hash.message_prime(digest, context)?;
    // `ml-dsa` panics on an out-of-range key encoding; keys are checked at import, and again
    // here since a stored key is outside this function's control.
    set.public_of_private(private_key)
        .map_err(|_| Error::GENERAL)?;
    per_set!(set, |P| {
        let bytes: &ExpandedSigningKeyBytes<P> =
            private_key.try_into().map_err(|_| Error::GENERAL)?;
        // The crate wipes its expanded key when dropped.
        let key = ExpandedSigningKey::<P>::from_expanded(bytes);
        Ok(key.sign_internal(&[&m], &(*rnd).into()).encode().to_vec())
    })
}

/// Verifies a HashML-DSA signature of PH(M).
pub fn verify(
    set: ParamSet,
    public_key: &[u8],
    hash: PreHash,
    digest: &[u8],
    context: &[u8],
    signature: &[u8],
) -> Result<()> {
    if signature.len() != set.signature_len() {
        return Err(Error::SIGNATURE_LEN_RANGE);
    }
    let m = hash.message_prime(digest, context)?;
    let valid = per_set!(set, |P| {
        let encoded: &EncodedVerifyingKey<P> = public_key.try_into().map_err(|_| Error::GENERAL)?;
        let key = VerifyingKey::<P>::decode(encoded);
        match Signature::<P>::try_from(signature) {
            Ok(sig) => key.verify_internal(&m, &sig),
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
        const fn signs(mechanism: CK_MECHANISM_TYPE) -> MechanismInfo {
            MechanismInfo::new(
                mechanism,
                CKP_ML_DSA_44,
                CKP_ML_DSA_87,
                CKF_SIGN | CKF_VERIFY,
            )
        }
        const MECHANISMS: &[MechanismInfo] = &[
            signs(CKM_HASH_ML_DSA),
            signs(CKM_HASH_ML_DSA_SHA224),
            signs(CKM_HASH_ML_DSA_SHA256),
            signs(CKM_HASH_ML_DSA_SHA384),
            signs(CKM_HASH_ML_DSA_SHA512),
            signs(CKM_HASH_ML_DSA_SHA3_224),
            signs(CKM_HASH_ML_DSA_SHA3_256),
            signs(CKM_HASH_ML_DSA_SHA3_384),
            signs(CKM_HASH_ML_DSA_SHA3_512),
            signs(CKM_HASH_ML_DSA_SHAKE128),
            signs(CKM_HASH_ML_DSA_SHAKE256),
        ];
        MECHANISMS
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
        let (options, hash, hasher) = options_and_hash(mechanism)?;
        check_key(
            key,
            CKO_PRIVATE_KEY,
            CKK_ML_DSA,
            CKA_SIGN,
            mechanism.mechanism,
        )?;
        Ok(Box::new(HashMlDsaSigner::new(key, options, hash, hasher)?))
    }

    fn verify_init(&self, mechanism: &Mechanism, key: &Object) -> Result<Box<dyn VerifyOperation>> {
        let (options, hash, hasher) = options_and_hash(mechanism)?;
        check_key(
            key,
            CKO_PUBLIC_KEY,
            CKK_ML_DSA,
            CKA_VERIFY,
            mechanism.mechanism,
        )?;
        Ok(Box::new(HashMlDsaVerifier::new(
            key, options, hash, hasher,
        )?))
    }
}

/// The options, pre-hash and, for `CKM_HASH_ML_DSA_<hash>` (which takes the message), the
/// running hash; `CKM_HASH_ML_DSA` takes the digest itself.
fn options_and_hash(mechanism: &Mechanism) -> Result<(SignOptions, PreHash, Option<Hasher>)> {
    if mechanism.mechanism == CKM_HASH_ML_DSA {
        let (options, hash) = SignOptions::from_hash_param(&mechanism.param)?;
        return Ok((options, hash, None));
    }
    let hash = PreHash::of_mechanism(mechanism.mechanism).ok_or(Error::MECHANISM_INVALID)?;
    let options = SignOptions::from_param(&mechanism.param)?;
    Ok((options, hash, Some(hash.hasher())))
}

/// HashML-DSA signing: `hasher` hashes the message (`CKM_HASH_ML_DSA_<hash>`, multi-part);
/// without one the data is the digest itself (`CKM_HASH_ML_DSA`, single-part only).
struct HashMlDsaSigner {
    set: ParamSet,
    private_key: Zeroizing<Vec<u8>>,
    deterministic: bool,
    context: Vec<u8>,
    hash: PreHash,
    hasher: Option<Hasher>,
    started: bool,
}

impl HashMlDsaSigner {
    fn new(
        key: &Object,
        options: SignOptions,
        hash: PreHash,
        hasher: Option<Hasher>,
    ) -> Result<Self> {
        Ok(HashMlDsaSigner {
            set: ParamSet::from_ck(key.ulong(CKA_PARAMETER_SET)?)?,
            private_key: Zeroizing::new(
                key.attrs
                    .get(CKA_VALUE)
                    .ok_or(Error::USER_NOT_LOGGED_IN)?
                    .to_vec(),
            ),
            deterministic: options.hedge == CKH_DETERMINISTIC_REQUIRED,
            context: options.context,
            hash,
            hasher,
            started: false,
        })
    }

    fn sign_digest(&self, digest: &[u8]) -> Result<Vec<u8>> {
        let rnd = if self.deterministic {
            Zeroizing::new([0u8; 32])
        } else {
            Zeroizing::new(crate::random::random_bytes::<32>()?)
        };
        sign(
            self.set,
            &self.private_key,
            self.hash,
            digest,
            &self.context,
            &rnd,
        )
    }
}

impl SignOperation for HashMlDsaSigner {
    fn signature_len(&self) -> usize {
        self.set.signature_len()
    }

    fn update(&mut self, data: &[u8]) -> Result<()> {
        self.started = true;
        self.hasher
            .as_mut()
            .ok_or(Error::FUNCTION_NOT_SUPPORTED)?
            .update(data);
        Ok(())
    }

    fn sign(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        if self.started {
            return Err(Error::OPERATION_ACTIVE);
        }
        match self.hasher.take() {
            Some(mut hasher) => {
                hasher.update(data);
                self.sign_digest(&hasher.finish())
            }
            None => self.sign_digest(data),
        }
    }

    fn finish(&mut self) -> Result<Vec<u8>> {
        let hasher = self.hasher.take().ok_or(Error::FUNCTION_NOT_SUPPORTED)?;
        self.sign_digest(&hasher.finish())
    }
}

struct HashMlDsaVerifier {
    set: ParamSet,
    public_key: Vec<u8>,
    context: Vec<u8>,
    hash: PreHash,
    hasher: Option<Hasher>,
    started: bool,
}

impl HashMlDsaVerifier {
    fn new(
        key: &Object,
        options: SignOptions,
        hash: PreHash,
        hasher: Option<Hasher>,
    ) -> Result<Self> {
        Ok(HashMlDsaVerifier {
            set: ParamSet::from_ck(key.ulong(CKA_PARAMETER_SET)?)?,
            public_key: key.attrs.get(CKA_VALUE).ok_or(Error::GENERAL)?.to_vec(),
            context: options.context,
            hash,
            hasher,
            started: false,
        })
    }

    fn check(&self, digest: &[u8], signature: &[u8]) -> Result<()> {
        verify(
            self.set,
            &self.public_key,
            self.hash,
            digest,
            &self.context,
            signature,
        )
    }
}

impl VerifyOperation for HashMlDsaVerifier {
    fn update(&mut self, data: &[u8]) -> Result<()> {
        self.started = true;
        self.hasher
            .as_mut()
            .ok_or(Error::FUNCTION_NOT_SUPPORTED)?
            .update(data);
        Ok(())
    }

    fn verify(&mut self, data: &[u8], signature: &[u8]) -> Result<()> {
        if self.started {
            return Err(Error::OPERATION_ACTIVE);
        }
        match self.hasher.take() {
            Some(mut hasher) => {
                hasher.update(data);
                self.check(&hasher.finish(), signature)
            }
            None => self.check(data, signature),
        }
    }

    fn finish(&mut self, signature: &[u8]) -> Result<()> {
        let hasher = self.hasher.take().ok_or(Error::FUNCTION_NOT_SUPPORTED)?;
        self.check(&hasher.finish(), signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fips204::traits::{SerDes, Verifier};

    /// `fips204` knows three of the pre-hash functions: its verifier must accept ours.
    #[test]
    fn fips204_accepts_sha256_sha512_shake128() {
        let (pk, sk) = ParamSet::MlDsa65.keygen_from_seed(&[9u8; 32]).unwrap();
        let fips_pk =
            fips204::ml_dsa_65::PublicKey::try_from_bytes(pk.clone().try_into().unwrap()).unwrap();
        for (hash, ph) in [
            (PreHash::Sha256, fips204::Ph::SHA256),
            (PreHash::Sha512, fips204::Ph::SHA512),
            (PreHash::Shake128, fips204::Ph::SHAKE128),
        ] {
            let mut h = hash.hasher();
            h.update(b"message");
            let digest = h.finish();
            let sig = sign(ParamSet::MlDsa65, &sk, hash, &digest, b"ctx", &[0; 32]).unwrap();
            verify(ParamSet::MlDsa65, &pk, hash, &digest, b"ctx", &sig).unwrap();
            let sig: [u8; 3309] = sig.try_into().unwrap();
            assert!(
                fips_pk.hash_verify(b"message", &sig, b"ctx", &ph),
                "{hash:?}"
            );
            assert!(!fips_pk.hash_verify(b"messagf", &sig, b"ctx", &ph));
        }
    }
}

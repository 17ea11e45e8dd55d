//! Sign and verify operations: what `C_SignInit`/`C_VerifyInit` start and the later calls drive.

use crate::consts::{CKK_B4AE_DILITHIUM5, CKK_B4AE_HYBRID, CKM_B4AE_DILITHIUM5, CKM_B4AE_HYBRID};
use crate::error::{Error, Result};
use crate::mechanism::hash_mldsa::{self, Hasher, PreHash};
use crate::mechanism::mldsa::{ParamSet, MAX_CONTEXT_LEN};
use crate::mechanism::{dilithium5, eddsa, hybrid};
use crate::mechanism::{Mechanism, Param};
use crate::token::object::Object;
use cryptoki_sys::*;
use std::sync::Arc;
use zeroize::Zeroizing;

/// A signature in progress.
pub trait SignOperation: Send {
    /// Length of the signature this operation will produce.
    fn signature_len(&self) -> usize;
    /// `C_SignUpdate`.
    fn update(&mut self, data: &[u8]) -> Result<()>;
    /// `C_Sign`: the whole message at once.
    fn sign(&mut self, data: &[u8]) -> Result<Vec<u8>>;
    /// `C_SignFinal`.
    fn finish(&mut self) -> Result<Vec<u8>>;
}

/// A verification in progress.
pub trait VerifyOperation: Send {
    fn update(&mut self, data: &[u8]) -> Result<()>;
    fn verify(&mut self, data: &[u8], signature: &[u8]) -> Result<()>;
    fn finish(&mut self, signature: &[u8]) -> Result<()>;
}

/// `C_SignInit`: checks the key against the mechanism and starts the operation.
pub fn sign_init(mechanism: &Mechanism, key: &Object) -> Result<Box<dyn SignOperation>> {
    sign_init_with(mechanism, key, None)
}

/// `C_SignInit` where the HSM holds a hybrid key's Ed25519 half (`ed25519`).
pub fn sign_init_with(
    mechanism: &Mechanism,
    key: &Object,
    ed25519: Option<std::sync::Arc<dyn hybrid::Ed25519Signer>>,
) -> Result<Box<dyn SignOperation>> {
    match mechanism.mechanism {
        CKM_EDDSA => {
            pure_eddsa(&mechanism.param)?;
            check_key(key, CKO_PRIVATE_KEY, CKK_EC_EDWARDS, CKA_SIGN, CKM_EDDSA)?;
            let key = key.ed25519_key()?;
            Ok(WholeMessageSigner::boxed(eddsa::SIGNATURE_LEN, move |m| {
                hybrid::Ed25519Signer::sign(&*key, m).map(|s| s.to_vec())
            }))
        }
        CKM_B4AE_HYBRID => {
            mechanism.expect_no_param()?;
            check_key(
                key,
                CKO_PRIVATE_KEY,
                CKK_B4AE_HYBRID,
                CKA_SIGN,
                mechanism.mechanism,
            )?;
            let key = match ed25519 {
                Some(ed) => {
                    let value = key.attrs.get(CKA_VALUE).ok_or(Error::USER_NOT_LOGGED_IN)?;
                    Arc::new(hybrid::SigningKey::with_ed25519(ed, value)?)
                }
                None => key.hybrid_key()?,
            };
            Ok(WholeMessageSigner::boxed(hybrid::SIGNATURE_LEN, move |m| {
                key.sign(m)
            }))
        }
        m if m == CKM_HASH_ML_DSA || PreHash::of_mechanism(m).is_some() => {
            let (options, hash, hasher) = hash_ml_dsa(mechanism)?;
            check_key(key, CKO_PRIVATE_KEY, CKK_ML_DSA, CKA_SIGN, m)?;
            Ok(Box::new(HashMlDsaSigner::new(key, options, hash, hasher)?))
        }
        CKM_B4AE_DILITHIUM5 => {
            mechanism.expect_no_param()?;
            check_key(
                key,
                CKO_PRIVATE_KEY,
                CKK_B4AE_DILITHIUM5,
                CKA_SIGN,
                mechanism.mechanism,
            )?;
            let key = key.dilithium5_key()?;
            Ok(WholeMessageSigner::boxed(
                dilithium5::SIGNATURE_LEN,
                move |m| Ok(key.sign(m)),
            ))
        }
        CKM_ML_DSA => {
            let options = SignOptions::from_param(&mechanism.param)?;
            check_key(
                key,
                CKO_PRIVATE_KEY,
                CKK_ML_DSA,
                CKA_SIGN,
                mechanism.mechanism,
            )?;
            let set = ParamSet::from_ck(key.ulong(CKA_PARAMETER_SET)?)?;
            let deterministic_key = match options.hedge {
                CKH_DETERMINISTIC_REQUIRED => Some(Zeroizing::new(
                    key.attrs
                        .get(CKA_VALUE)
                        .ok_or(Error::USER_NOT_LOGGED_IN)?
                        .to_vec(),
                )),
                _ => None,
            };
            let key = key.signing_key()?;
            let context = options.context;
            Ok(WholeMessageSigner::boxed(
                set.signature_len(),
                move |m| match &deterministic_key {
                    Some(sk) => set.sign_deterministic(sk, m, &context),
                    None => Ok(key.sign_hedged(m, &context)),
                },
            ))
        }
        _ => Err(Error::MECHANISM_INVALID),
    }
}

/// `C_VerifyInit`.
pub fn verify_init(mechanism: &Mechanism, key: &Object) -> Result<Box<dyn VerifyOperation>> {
    match mechanism.mechanism {
        CKM_EDDSA => {
            pure_eddsa(&mechanism.param)?;
            check_key(key, CKO_PUBLIC_KEY, CKK_EC_EDWARDS, CKA_VERIFY, CKM_EDDSA)?;
            let point = key.attrs.get(CKA_EC_POINT).ok_or(Error::GENERAL)?;
            let public_key = eddsa::decode_point(point)?;
            Ok(WholeMessageVerifier::boxed(move |m, sig| {
                eddsa::verify(&public_key, m, sig)
            }))
        }
        CKM_B4AE_HYBRID => {
            mechanism.expect_no_param()?;
            check_key(
                key,
                CKO_PUBLIC_KEY,
                CKK_B4AE_HYBRID,
                CKA_VERIFY,
                mechanism.mechanism,
            )?;
            let public_key = key.attrs.get(CKA_VALUE).ok_or(Error::GENERAL)?.to_vec();
            Ok(WholeMessageVerifier::boxed(move |m, sig| {
                hybrid::verify(&public_key, m, sig)
            }))
        }
        m if m == CKM_HASH_ML_DSA || PreHash::of_mechanism(m).is_some() => {
            let (options, hash, hasher) = hash_ml_dsa(mechanism)?;
            check_key(key, CKO_PUBLIC_KEY, CKK_ML_DSA, CKA_VERIFY, m)?;
            Ok(Box::new(HashMlDsaVerifier::new(
                key, options, hash, hasher,
            )?))
        }
        CKM_B4AE_DILITHIUM5 => {
            mechanism.expect_no_param()?;
            check_key(
                key,
                CKO_PUBLIC_KEY,
                CKK_B4AE_DILITHIUM5,
                CKA_VERIFY,
                mechanism.mechanism,
            )?;
            let public_key = key.attrs.get(CKA_VALUE).ok_or(Error::GENERAL)?.to_vec();
            Ok(WholeMessageVerifier::boxed(move |m, sig| {
                dilithium5::verify(&public_key, m, sig)
            }))
        }
        CKM_ML_DSA => {
            let options = SignOptions::from_param(&mechanism.param)?;
            check_key(
                key,
                CKO_PUBLIC_KEY,
                CKK_ML_DSA,
                CKA_VERIFY,
                mechanism.mechanism,
            )?;
            let set = ParamSet::from_ck(key.ulong(CKA_PARAMETER_SET)?)?;
            let public_key = key.attrs.get(CKA_VALUE).ok_or(Error::GENERAL)?.to_vec();
            let context = options.context;
            Ok(WholeMessageVerifier::boxed(move |m, sig| {
                set.verify(&public_key, m, &context, sig)
            }))
        }
        _ => Err(Error::MECHANISM_INVALID),
    }
}

/// HashML-DSA's options, pre-hash and, for `CKM_HASH_ML_DSA_<hash>` (which takes the message),
/// the running hash; `CKM_HASH_ML_DSA` takes the digest itself.
fn hash_ml_dsa(mechanism: &Mechanism) -> Result<(SignOptions, PreHash, Option<Hasher>)> {
    if mechanism.mechanism == CKM_HASH_ML_DSA {
        let (options, hash) = SignOptions::from_hash_param(&mechanism.param)?;
        return Ok((options, hash, None));
    }
    let hash = PreHash::of_mechanism(mechanism.mechanism).ok_or(Error::MECHANISM_INVALID)?;
    let options = SignOptions::from_param(&mechanism.param)?;
    Ok((options, hash, Some(hash.hasher())))
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

fn check_key(
    key: &Object,
    class: CK_OBJECT_CLASS,
    key_type: CK_KEY_TYPE,
    usage: CK_ATTRIBUTE_TYPE,
    mechanism: CK_MECHANISM_TYPE,
) -> Result<()> {
    if key.class() != class || key.key_type() != Some(key_type) {
        return Err(Error::KEY_TYPE_INCONSISTENT);
    }
    if !key.attrs.bool_or(usage, false) {
        return Err(Error::KEY_FUNCTION_NOT_PERMITTED);
    }
    if !key.permits(mechanism) {
        return Err(Error::MECHANISM_INVALID);
    }
    Ok(())
}

/// The options `CK_SIGN_ADDITIONAL_CONTEXT` carries.
struct SignOptions {
    hedge: CK_ULONG,
    context: Vec<u8>,
}

impl SignOptions {
    fn from_param(param: &Param) -> Result<Self> {
        match param {
            Param::None => Ok(SignOptions {
                hedge: CKH_HEDGE_PREFERRED,
                context: Vec::new(),
            }),
            Param::SignContext { hedge, context } => {
                if context.len() > MAX_CONTEXT_LEN
                    || !matches!(
                        *hedge,
                        CKH_HEDGE_PREFERRED | CKH_HEDGE_REQUIRED | CKH_DETERMINISTIC_REQUIRED
                    )
                {
                    return Err(Error::MECHANISM_PARAM_INVALID);
                }
                Ok(SignOptions {
                    hedge: *hedge,
                    context: context.clone(),
                })
            }
            _ => Err(Error::MECHANISM_PARAM_INVALID),
        }
    }

    /// `CKM_HASH_ML_DSA`'s parameter: required, since it names the hash.
    fn from_hash_param(param: &Param) -> Result<(Self, PreHash)> {
        match param {
            Param::HashSignContext {
                hedge,
                context,
                hash,
            } => {
                let hash =
                    PreHash::of_hash_mechanism(*hash).ok_or(Error::MECHANISM_PARAM_INVALID)?;
                let options = Self::from_param(&Param::SignContext {
                    hedge: *hedge,
                    context: context.clone(),
                })?;
                Ok((options, hash))
            }
            _ => Err(Error::MECHANISM_PARAM_INVALID),
        }
    }
}

/// Signs the whole message at once: single-part, or the collected parts at `C_SignFinal`
/// (pure ML-DSA, Dilithium5, the hybrid and PureEdDSA all sign the message itself).
struct WholeMessageSigner<F> {
    len: usize,
    sign: F,
    message: Multipart,
}

impl<F: Fn(&[u8]) -> Result<Vec<u8>> + Send + 'static> WholeMessageSigner<F> {
    fn boxed(len: usize, sign: F) -> Box<dyn SignOperation> {
        Box::new(WholeMessageSigner {
            len,
            sign,
            message: Multipart::default(),
        })
    }
}

impl<F: Fn(&[u8]) -> Result<Vec<u8>> + Send> SignOperation for WholeMessageSigner<F> {
    fn signature_len(&self) -> usize {
        self.len
    }

    fn update(&mut self, data: &[u8]) -> Result<()> {
        self.message.update(data)
    }

    fn sign(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        self.message.single_part_allowed()?;
        (self.sign)(data)
    }

    fn finish(&mut self) -> Result<Vec<u8>> {
        let message = std::mem::take(&mut self.message.data);
        (self.sign)(&message)
    }
}

/// Verifies a signature of the whole message, single-part or collected.
struct WholeMessageVerifier<F> {
    verify: F,
    message: Multipart,
}

impl<F: Fn(&[u8], &[u8]) -> Result<()> + Send + 'static> WholeMessageVerifier<F> {
    fn boxed(verify: F) -> Box<dyn VerifyOperation> {
        Box::new(WholeMessageVerifier {
            verify,
            message: Multipart::default(),
        })
    }
}

impl<F: Fn(&[u8], &[u8]) -> Result<()> + Send> VerifyOperation for WholeMessageVerifier<F> {
    fn update(&mut self, data: &[u8]) -> Result<()> {
        self.message.update(data)
    }

    fn verify(&mut self, data: &[u8], signature: &[u8]) -> Result<()> {
        self.message.single_part_allowed()?;
        (self.verify)(data, signature)
    }

    fn finish(&mut self, signature: &[u8]) -> Result<()> {
        let message = std::mem::take(&mut self.message.data);
        (self.verify)(&message, signature)
    }
}

/// Collects a multi-part message for the mechanisms that sign the message as a whole.
#[derive(Default)]
struct Multipart {
    data: Zeroizing<Vec<u8>>,
    started: bool,
}

impl Multipart {
    fn update(&mut self, data: &[u8]) -> Result<()> {
        self.started = true;
        super::collect(&mut self.data, data, Error::DATA_LEN_RANGE)
    }

    /// A single-part call after `*Update` is out of order.
    fn single_part_allowed(&self) -> Result<()> {
        if self.started {
            Err(Error::OPERATION_ACTIVE)
        } else {
            Ok(())
        }
    }
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
            Zeroizing::new(crate::backend::random_bytes::<32>()?)
        };
        hash_mldsa::sign(
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
        hash_mldsa::verify(
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

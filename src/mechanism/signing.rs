//! Sign and verify operations: what `C_SignInit`/`C_VerifyInit` start and the later calls drive,
//! and the pieces the signing families share (options, whole-message signers).

use crate::error::{Error, Result};
use crate::mechanism::hybrid::Ed25519Signer;
use crate::mechanism::mldsa::MAX_CONTEXT_LEN;
use crate::mechanism::prehash::PreHash;
use crate::mechanism::{family_for, Mechanism, Param};
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
    ed25519: Option<Arc<dyn Ed25519Signer>>,
) -> Result<Box<dyn SignOperation>> {
    family_for(mechanism.mechanism, CKF_SIGN)?.sign_init(mechanism, key, ed25519)
}

/// `C_VerifyInit`.
pub fn verify_init(mechanism: &Mechanism, key: &Object) -> Result<Box<dyn VerifyOperation>> {
    family_for(mechanism.mechanism, CKF_VERIFY)?.verify_init(mechanism, key)
}

/// The options `CK_SIGN_ADDITIONAL_CONTEXT` carries.
pub struct SignOptions {
    pub hedge: CK_ULONG,
    pub context: Vec<u8>,
}

impl SignOptions {
    pub fn from_param(param: &Param) -> Result<Self> {
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
    pub fn from_hash_param(param: &Param) -> Result<(Self, PreHash)> {
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
pub struct WholeMessageSigner<F> {
    len: usize,
    sign: F,
    message: Multipart,
}

impl<F: Fn(&[u8]) -> Result<Vec<u8>> + Send + 'static> WholeMessageSigner<F> {
    pub fn boxed(len: usize, sign: F) -> Box<dyn SignOperation> {
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
pub struct WholeMessageVerifier<F> {
    verify: F,
    message: Multipart,
}

impl<F: Fn(&[u8], &[u8]) -> Result<()> + Send + 'static> WholeMessageVerifier<F> {
    pub fn boxed(verify: F) -> Box<dyn VerifyOperation> {
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

/// Verifies (public key, message, signature).
pub type VerifyFn = fn(&[u8], &[u8], &[u8]) -> Result<()>;

/// Verifies (parameter set, public key, message, context, signature).
pub type ContextVerifyFn<S> = fn(S, &[u8], &[u8], &[u8], &[u8]) -> Result<()>;

/// A whole-message verifier for a mechanism with an optional `CK_SIGN_ADDITIONAL_CONTEXT`
/// (pure ML-DSA, SLH-DSA) on a public key of `key_type` with a `CKA_PARAMETER_SET`, which
/// `parameter_set` reads.
pub fn context_verifier<S: Copy + Send + 'static>(
    mechanism: &Mechanism,
    key: &Object,
    key_type: CK_KEY_TYPE,
    parameter_set: fn(CK_ULONG) -> Result<S>,
    verify: ContextVerifyFn<S>,
) -> Result<Box<dyn VerifyOperation>> {
    let options = SignOptions::from_param(&mechanism.param)?;
    let ck = mechanism.mechanism;
    crate::mechanism::check_key(key, CKO_PUBLIC_KEY, key_type, CKA_VERIFY, ck)?;
    let set = parameter_set(key.ulong(CKA_PARAMETER_SET)?)?;
    let public_key = crate::mechanism::key_value(key)?;
    let context = options.context;
    Ok(WholeMessageVerifier::boxed(move |m, sig| {
        verify(set, &public_key, m, &context, sig)
    }))
}

/// A whole-message verifier for a parameterless mechanism whose public key is the key's
/// `CKA_VALUE` (Dilithium5, the hybrid).
pub fn value_key_verifier(
    mechanism: &Mechanism,
    key: &Object,
    key_type: CK_KEY_TYPE,
    verify: VerifyFn,
) -> Result<Box<dyn VerifyOperation>> {
    mechanism.expect_no_param()?;
    let ck = mechanism.mechanism;
    crate::mechanism::check_key(key, CKO_PUBLIC_KEY, key_type, CKA_VERIFY, ck)?;
    let public_key = key.attrs.get(CKA_VALUE).ok_or(Error::GENERAL)?.to_vec();
    Ok(WholeMessageVerifier::boxed(move |m, sig| {
        verify(&public_key, m, sig)
    }))
}

//! An object as the token holds it: its attributes, plus a lazily loaded signing key.

use crate::error::{Error, Result};
use crate::mechanism::mldsa::{ParamSet, SigningKey};
use crate::mechanism::{dilithium5, hybrid, mlkem};
use crate::token::attributes::Attributes;
use crate::token::rules::{self, Rule};
use cryptoki_sys::*;
use std::sync::Arc;
use std::sync::OnceLock;

/// One object. Immutable once made: a change builds a new `Object` and replaces the old one,
/// so an operation that started with the old version finishes with it.
pub struct Object {
    pub attrs: Attributes,
    signing_key: OnceLock<Arc<SigningKey>>,
    dilithium5_key: OnceLock<Arc<dilithium5::SigningKey>>,
    hybrid_key: OnceLock<Arc<hybrid::SigningKey>>,
    ed25519_key: OnceLock<Arc<hybrid::LocalEd25519>>,
    decap_key: OnceLock<Arc<mlkem::DecapKey>>,
    encap_key: OnceLock<Arc<mlkem::EncapKey>>,
}

/// What `C_GetAttributeValue` may reveal of one attribute.
pub enum Readable<'a> {
    Value(&'a [u8]),
    Sensitive,
    Invalid,
}

impl Object {
    pub fn new(attrs: Attributes) -> Self {
        Object {
            attrs,
            signing_key: OnceLock::new(),
            dilithium5_key: OnceLock::new(),
            hybrid_key: OnceLock::new(),
            ed25519_key: OnceLock::new(),
            decap_key: OnceLock::new(),
            encap_key: OnceLock::new(),
        }
    }

    pub fn class(&self) -> CK_OBJECT_CLASS {
        self.attrs
            .ulong(CKA_CLASS)
            .ok()
            .flatten()
            .unwrap_or(CK_UNAVAILABLE_INFORMATION)
    }

    pub fn key_type(&self) -> Option<CK_KEY_TYPE> {
        self.attrs.ulong(CKA_KEY_TYPE).ok().flatten()
    }

    /// A `CK_ULONG` attribute the object must have.
    pub fn ulong(&self, attr: CK_ATTRIBUTE_TYPE) -> Result<CK_ULONG> {
        self.attrs.ulong(attr)?.ok_or(Error::GENERAL)
    }

    pub fn is_token(&self) -> bool {
        self.attrs.bool_or(CKA_TOKEN, false)
    }

    pub fn is_private(&self) -> bool {
        self.attrs.bool_or(CKA_PRIVATE, false)
    }

    pub fn is_modifiable(&self) -> bool {
        self.attrs.bool_or(CKA_MODIFIABLE, true)
    }

    pub fn is_copyable(&self) -> bool {
        self.attrs.bool_or(CKA_COPYABLE, true)
    }

    pub fn is_destroyable(&self) -> bool {
        self.attrs.bool_or(CKA_DESTROYABLE, true)
    }

    /// Whether `CKA_ALLOWED_MECHANISMS` (absent: any) lets this key be used with `mechanism`.
    pub fn permits(&self, mechanism: CK_MECHANISM_TYPE) -> bool {
        match self.attrs.get(CKA_ALLOWED_MECHANISMS) {
            None => true,
            Some(allowed) => allowed
                .chunks_exact(std::mem::size_of::<CK_ULONG>())
                .filter_map(|c| c.try_into().ok().map(CK_ULONG::from_ne_bytes))
                .any(|m| m == mechanism),
        }
    }

    /// The attribute tables of this object's kind.
    pub fn tables(&self) -> Vec<&'static [Rule]> {
        rules::tables(self.class(), self.key_type()).unwrap_or_default()
    }

    /// Whether secret attributes are hidden from `C_GetAttributeValue`.
    fn hides_secrets(&self) -> bool {
        self.attrs.bool_or(CKA_SENSITIVE, true) || !self.attrs.bool_or(CKA_EXTRACTABLE, false)
    }

    /// `C_GetAttributeValue` for one attribute.
    pub fn readable(&self, attr: CK_ATTRIBUTE_TYPE) -> Readable<'_> {
        let Some(rule) = rules::find(&self.tables(), attr) else {
            return Readable::Invalid;
        };
        if rule.sensitive && self.hides_secrets() {
            return Readable::Sensitive;
        }
        match self.attrs.get(attr) {
            Some(v) => Readable::Value(v),
            None => Readable::Invalid,
        }
    }

    /// Whether an attribute holds secret key material (stored encrypted, never logged).
    pub fn is_secret_attribute(&self, attr: CK_ATTRIBUTE_TYPE) -> bool {
        rules::find(&self.tables(), attr).is_some_and(|r| r.sensitive)
    }

    /// The ML-DSA signing key, loaded on first use and kept with the object.
    pub fn signing_key(&self) -> Result<Arc<SigningKey>> {
        cached(&self.signing_key, || {
            let set = ParamSet::from_ck(self.ulong(CKA_PARAMETER_SET)?)?;
            let value = self.attrs.get(CKA_VALUE).ok_or(Error::USER_NOT_LOGGED_IN)?;
            SigningKey::new(set, value).map(Arc::new)
        })
    }

    /// The Dilithium5 signing key, loaded on first use and kept with the object.
    pub fn dilithium5_key(&self) -> Result<Arc<dilithium5::SigningKey>> {
        cached(&self.dilithium5_key, || {
            let value = self.attrs.get(CKA_VALUE).ok_or(Error::USER_NOT_LOGGED_IN)?;
            dilithium5::SigningKey::new(value).map(Arc::new)
        })
    }

    /// The hybrid signing key (both halves held here), loaded on first use.
    pub fn hybrid_key(&self) -> Result<Arc<hybrid::SigningKey>> {
        cached(&self.hybrid_key, || {
            let value = self.attrs.get(CKA_VALUE).ok_or(Error::USER_NOT_LOGGED_IN)?;
            hybrid::SigningKey::new(value).map(Arc::new)
        })
    }

    /// The Ed25519 signing key (`CKK_EC_EDWARDS`), loaded on first use.
    pub fn ed25519_key(&self) -> Result<Arc<hybrid::LocalEd25519>> {
        cached(&self.ed25519_key, || {
            let seed = self.attrs.get(CKA_VALUE).ok_or(Error::USER_NOT_LOGGED_IN)?;
            hybrid::LocalEd25519::new(seed).map(Arc::new)
        })
    }

    /// The ML-KEM decapsulation key, parsed on first use.
    pub fn decap_key(&self) -> Result<Arc<mlkem::DecapKey>> {
        cached(&self.decap_key, || {
            let set = mlkem::ParamSet::from_ck(self.ulong(CKA_PARAMETER_SET)?)?;
            let value = self.attrs.get(CKA_VALUE).ok_or(Error::USER_NOT_LOGGED_IN)?;
            set.decap_key(value).map(Arc::new)
        })
    }

    /// The ML-KEM encapsulation key, parsed on first use.
    pub fn encap_key(&self) -> Result<Arc<mlkem::EncapKey>> {
        cached(&self.encap_key, || {
            let set = mlkem::ParamSet::from_ck(self.ulong(CKA_PARAMETER_SET)?)?;
            let value = self.attrs.get(CKA_VALUE).ok_or(Error::GENERAL)?;
            set.encap_key(value).map(Arc::new)
        })
    }
}

/// The value in `cell`, made by `make` on first use. Two threads may both make it; one keeps
/// it (the key material is the same either way).
fn cached<T>(cell: &OnceLock<Arc<T>>, make: impl FnOnce() -> Result<Arc<T>>) -> Result<Arc<T>> {
    if let Some(value) = cell.get() {
        return Ok(value.clone());
    }
    let made = make()?;
    Ok(cell.get_or_init(|| made).clone())
}

//! Attribute values as raw PKCS#11 bytes, with typed accessors and a stable serialization
//! for the store. Every value is zeroized when dropped: attribute sets carry key material.

use crate::error::{Error, Result};
use cryptoki_sys::*;
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// Size of a `CK_ULONG` on this platform.
pub const ULONG_LEN: usize = std::mem::size_of::<CK_ULONG>();

/// A set of attributes of one object or template.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// Zeroizing values: a value replaced, removed, duplicated in a template or dropped with
    /// the set is wiped.
    values: BTreeMap<CK_ATTRIBUTE_TYPE, Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for Attributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Types only: values may be secret.
        f.debug_set()
            .entries(self.values.keys().map(|t| format!("{t:#x}")))
            .finish()
    }
}

/// Encodes a `CK_BBOOL`.
pub fn bool_bytes(v: bool) -> Vec<u8> {
    vec![if v { CK_TRUE } else { CK_FALSE }]
}

/// Encodes a `CK_ULONG` in native byte order.
pub fn ulong_bytes(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

/// Decodes a `CK_BBOOL`; any other length is invalid.
pub fn decode_bool(bytes: &[u8]) -> Result<bool> {
    match bytes {
        [b] => Ok(*b != CK_FALSE),
        _ => Err(Error::ATTRIBUTE_VALUE_INVALID),
    }
}

/// Decodes a `CK_ULONG`; any other length is invalid.
pub fn decode_ulong(bytes: &[u8]) -> Result<CK_ULONG> {
    let array: [u8; ULONG_LEN] = bytes
        .try_into()
        .map_err(|_| Error::ATTRIBUTE_VALUE_INVALID)?;
    Ok(CK_ULONG::from_ne_bytes(array))
}

impl Attributes {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a set from a caller's template. Repeating an attribute with a different value
    /// is inconsistent; repeating it with the same value is harmless.
    pub fn from_template(template: Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>) -> Result<Self> {
        let mut attrs = Self::new();
        for (t, v) in template {
            attrs.add_from_template(t, &Zeroizing::new(v))?;
        }
        Ok(attrs)
    }

    /// Adds one entry of a caller's template (see [`Attributes::from_template`]).
    pub fn add_from_template(&mut self, t: CK_ATTRIBUTE_TYPE, v: &[u8]) -> Result<()> {
        match self.values.get(&t) {
            Some(old) if old.as_slice() != v => Err(Error::TEMPLATE_INCONSISTENT),
            Some(_) => Ok(()),
            None => {
                self.values.insert(t, Zeroizing::new(v.to_vec()));
                Ok(())
            }
        }
    }

    pub fn get(&self, t: CK_ATTRIBUTE_TYPE) -> Option<&[u8]> {
        self.values.get(&t).map(|v| v.as_slice())
    }

    pub fn contains(&self, t: CK_ATTRIBUTE_TYPE) -> bool {
        self.values.contains_key(&t)
    }

    pub fn set(&mut self, t: CK_ATTRIBUTE_TYPE, v: Vec<u8>) {
        self.values.insert(t, Zeroizing::new(v));
    }

    pub fn set_bool(&mut self, t: CK_ATTRIBUTE_TYPE, v: bool) {
        self.set(t, bool_bytes(v));
    }

    pub fn set_ulong(&mut self, t: CK_ATTRIBUTE_TYPE, v: CK_ULONG) {
        self.set(t, ulong_bytes(v));
    }

    pub fn remove(&mut self, t: CK_ATTRIBUTE_TYPE) {
        self.values.remove(&t);
    }

    /// A boolean attribute; absent reads as `None`.
    pub fn bool(&self, t: CK_ATTRIBUTE_TYPE) -> Result<Option<bool>> {
        self.get(t).map(decode_bool).transpose()
    }

    /// A boolean attribute with a default.
    pub fn bool_or(&self, t: CK_ATTRIBUTE_TYPE, default: bool) -> bool {
        self.bool(t).ok().flatten().unwrap_or(default)
    }

    /// A `CK_ULONG` attribute; absent reads as `None`.
    pub fn ulong(&self, t: CK_ATTRIBUTE_TYPE) -> Result<Option<CK_ULONG>> {
        self.get(t).map(decode_ulong).transpose()
    }

    pub fn iter(&self) -> impl Iterator<Item = (CK_ATTRIBUTE_TYPE, &[u8])> {
        self.values.iter().map(|(t, v)| (*t, v.as_slice()))
    }

    pub fn types(&self) -> impl Iterator<Item = CK_ATTRIBUTE_TYPE> + '_ {
        self.values.keys().copied()
    }

    /// Whether every attribute of `template` is present here with the same value.
    pub fn matches(&self, template: &Attributes) -> bool {
        template.iter().all(|(t, v)| self.get(t) == Some(v))
    }

    /// Moves out the attributes `pick` selects, leaving the rest.
    pub fn split_off(&mut self, pick: impl Fn(CK_ATTRIBUTE_TYPE) -> bool) -> Attributes {
        let chosen: Vec<CK_ATTRIBUTE_TYPE> = self.types().filter(|t| pick(*t)).collect();
        let mut out = Attributes::new();
        for t in chosen {
            if let Some(v) = self.values.remove(&t) {
                out.values.insert(t, v);
            }
        }
        out
    }

    /// Adds every attribute of `other`, replacing equal types.
    pub fn merge(&mut self, mut other: Attributes) {
        let moved = std::mem::take(&mut other.values);
        self.values.extend(moved);
    }

    /// Byte size of the values, for `C_GetObjectSize`.
    pub fn size(&self) -> usize {
        self.values.values().map(|v| v.len() + 16).sum()
    }

    /// Stable encoding: `u64 type || u32 length || bytes`, little-endian, in type order.
    pub fn serialize(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(self.size()));
        for (t, v) in &self.values {
            // CK_ULONG is 32 bits on some platforms: the record format is always 64.
            #[allow(clippy::unnecessary_cast)]
            out.extend_from_slice(&(*t as u64).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
        out
    }

    /// Inverse of [`Attributes::serialize`]; a malformed record is a device error.
    pub fn deserialize(mut bytes: &[u8]) -> Result<Self> {
        let mut attrs = Attributes::new();
        while !bytes.is_empty() {
            if bytes.len() < 12 {
                return Err(Error::DEVICE);
            }
            let t = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
            let len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
            let rest = &bytes[12..];
            if rest.len() < len {
                return Err(Error::DEVICE);
            }
            attrs
                .values
                .insert(t as CK_ATTRIBUTE_TYPE, Zeroizing::new(rest[..len].to_vec()));
            bytes = &rest[len..];
        }
        Ok(attrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialization_round_trips() {
        let mut a = Attributes::new();
        a.set_bool(CKA_TOKEN, true);
        a.set_ulong(CKA_CLASS, CKO_DATA);
        a.set(CKA_LABEL, b"x".to_vec());
        a.set(CKA_VALUE, Vec::new());
        let b = Attributes::deserialize(&a.serialize()).unwrap();
        assert!(a == b);
        assert!(Attributes::deserialize(&[1, 2, 3]).is_err());
    }

    #[test]
    fn duplicate_template_entries() {
        let same = vec![(CKA_LABEL, b"a".to_vec()), (CKA_LABEL, b"a".to_vec())];
        assert!(Attributes::from_template(same).is_ok());
        let diff = vec![(CKA_LABEL, b"a".to_vec()), (CKA_LABEL, b"b".to_vec())];
        assert_eq!(
            Attributes::from_template(diff).unwrap_err(),
            Error::TEMPLATE_INCONSISTENT
        );
    }
}

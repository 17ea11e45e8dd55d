//! Which attributes each kind of object has, and how a caller may touch each one
//! (PKCS#11 3.2 §4 tables: read-only, create-only, modifiable, sensitive).

use crate::consts::*;
use crate::error::{Error, Result};
use crate::token::attributes::{decode_bool, decode_ulong, ULONG_LEN};
use cryptoki_sys::*;

/// Shape of an attribute's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Ulong,
    Bytes,
    /// A `CK_DATE` (8 bytes) or empty.
    Date,
    /// An array of `CK_ULONG`s.
    UlongArray,
}

/// Who may set an attribute, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Set by the token only (CKA_LOCAL, CKA_ALWAYS_SENSITIVE...).
    ReadOnly,
    /// Set when the object is made; never changed after.
    CreateOnly,
    /// Set when the object is made, or changed by `C_CopyObject` (CKA_TOKEN, CKA_PRIVATE...).
    CreateOrCopy,
    /// Changeable with `C_SetAttributeValue`.
    Modifiable,
}

/// The rule for one attribute of one kind of object.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub attr: CK_ATTRIBUTE_TYPE,
    pub kind: Kind,
    pub access: Access,
    /// Hidden when the key is sensitive or not extractable.
    pub sensitive: bool,
}

const fn r(attr: CK_ATTRIBUTE_TYPE, kind: Kind, access: Access) -> Rule {
    Rule {
        attr,
        kind,
        access,
        sensitive: false,
    }
}

const fn secret(attr: CK_ATTRIBUTE_TYPE, kind: Kind) -> Rule {
    Rule {
        attr,
        kind,
        access: Access::CreateOnly,
        sensitive: true,
    }
}

use Access::*;
use Kind::*;

const STORAGE: &[Rule] = &[
    r(CKA_CLASS, Ulong, CreateOnly),
    r(CKA_TOKEN, Bool, CreateOrCopy),
    r(CKA_PRIVATE, Bool, CreateOrCopy),
    r(CKA_MODIFIABLE, Bool, CreateOrCopy),
    r(CKA_COPYABLE, Bool, CreateOrCopy),
    r(CKA_DESTROYABLE, Bool, CreateOrCopy),
    r(CKA_LABEL, Bytes, Modifiable),
    r(CKA_UNIQUE_ID, Bytes, ReadOnly),
];

const DATA: &[Rule] = &[
    r(CKA_APPLICATION, Bytes, Modifiable),
    r(CKA_OBJECT_ID, Bytes, Modifiable),
    r(CKA_VALUE, Bytes, Modifiable),
];

const KEY: &[Rule] = &[
    r(CKA_KEY_TYPE, Ulong, CreateOnly),
    r(CKA_ID, Bytes, Modifiable),
    r(CKA_START_DATE, Date, Modifiable),
    r(CKA_END_DATE, Date, Modifiable),
    r(CKA_DERIVE, Bool, Modifiable),
    r(CKA_LOCAL, Bool, ReadOnly),
    r(CKA_KEY_GEN_MECHANISM, Ulong, ReadOnly),
    r(CKA_ALLOWED_MECHANISMS, UlongArray, CreateOnly),
];

const PUBLIC_KEY: &[Rule] = &[
    r(CKA_SUBJECT, Bytes, Modifiable),
    r(CKA_ENCRYPT, Bool, Modifiable),
    r(CKA_VERIFY, Bool, Modifiable),
    r(CKA_VERIFY_RECOVER, Bool, Modifiable),
    r(CKA_WRAP, Bool, Modifiable),
    r(CKA_TRUSTED, Bool, CreateOnly),
    r(CKA_ENCAPSULATE, Bool, Modifiable),
    r(CKA_PUBLIC_KEY_INFO, Bytes, CreateOnly),
];

const PRIVATE_KEY: &[Rule] = &[
    r(CKA_SUBJECT, Bytes, Modifiable),
    r(CKA_SENSITIVE, Bool, Modifiable),
    r(CKA_DECRYPT, Bool, Modifiable),
    r(CKA_SIGN, Bool, Modifiable),
    r(CKA_SIGN_RECOVER, Bool, Modifiable),
    r(CKA_UNWRAP, Bool, Modifiable),
    r(CKA_EXTRACTABLE, Bool, Modifiable),
    r(CKA_ALWAYS_SENSITIVE, Bool, ReadOnly),
    r(CKA_NEVER_EXTRACTABLE, Bool, ReadOnly),
    r(CKA_WRAP_WITH_TRUSTED, Bool, Modifiable),
    r(CKA_ALWAYS_AUTHENTICATE, Bool, CreateOnly),
    r(CKA_DECAPSULATE, Bool, Modifiable),
    r(CKA_PUBLIC_KEY_INFO, Bytes, CreateOnly),
];

const SECRET_KEY: &[Rule] = &[
    r(CKA_SENSITIVE, Bool, Modifiable),
    r(CKA_ENCRYPT, Bool, Modifiable),
    r(CKA_DECRYPT, Bool, Modifiable),
    r(CKA_SIGN, Bool, Modifiable),
    r(CKA_VERIFY, Bool, Modifiable),
    r(CKA_WRAP, Bool, Modifiable),
    r(CKA_UNWRAP, Bool, Modifiable),
    r(CKA_EXTRACTABLE, Bool, Modifiable),
    r(CKA_ALWAYS_SENSITIVE, Bool, ReadOnly),
    r(CKA_NEVER_EXTRACTABLE, Bool, ReadOnly),
    r(CKA_WRAP_WITH_TRUSTED, Bool, Modifiable),
    r(CKA_TRUSTED, Bool, CreateOnly),
    r(CKA_CHECK_VALUE, Bytes, ReadOnly),
    secret(CKA_VALUE, Bytes),
    r(CKA_VALUE_LEN, Ulong, CreateOnly),
];

const ML_DSA_PUBLIC: &[Rule] = &[
    r(CKA_PARAMETER_SET, Ulong, CreateOnly),
    r(CKA_VALUE, Bytes, CreateOnly),
];

const ML_DSA_PRIVATE: &[Rule] = &[
    r(CKA_PARAMETER_SET, Ulong, CreateOnly),
    secret(CKA_VALUE, Bytes),
    secret(CKA_SEED, Bytes),
    r(CKA_B4AE_CUSTODY, Ulong, ReadOnly),
];

const DILITHIUM5_PUBLIC: &[Rule] = &[r(CKA_VALUE, Bytes, CreateOnly)];

const DILITHIUM5_PRIVATE: &[Rule] = &[
    secret(CKA_VALUE, Bytes),
    r(CKA_B4AE_CUSTODY, Ulong, ReadOnly),
];

const ML_KEM_PUBLIC: &[Rule] = ML_DSA_PUBLIC;

const SLH_DSA_PUBLIC: &[Rule] = ML_DSA_PUBLIC;

const SLH_DSA_PRIVATE: &[Rule] = &[
    r(CKA_PARAMETER_SET, Ulong, CreateOnly),
    secret(CKA_VALUE, Bytes),
    r(CKA_B4AE_CUSTODY, Ulong, ReadOnly),
];
const ML_KEM_PRIVATE: &[Rule] = ML_DSA_PRIVATE;

const HYBRID_HALVES: &[Rule] = &[
    r(CKA_B4AE_ED25519_PUBLIC, Bytes, ReadOnly),
    r(CKA_B4AE_MLDSA_PUBLIC, Bytes, ReadOnly),
];

const HYBRID_PUBLIC: &[Rule] = &[r(CKA_VALUE, Bytes, CreateOnly)];

const HYBRID_PRIVATE: &[Rule] = DILITHIUM5_PRIVATE;

const EC_EDWARDS_PUBLIC: &[Rule] = &[
    r(CKA_EC_PARAMS, Bytes, CreateOnly),
    r(CKA_EC_POINT, Bytes, CreateOnly),
];

const EC_EDWARDS_PRIVATE: &[Rule] = &[
    r(CKA_EC_PARAMS, Bytes, CreateOnly),
    secret(CKA_VALUE, Bytes),
];

/// The attribute tables that apply to an object of this class and key type, most general
/// first. `None` when the module does not hold such objects.
pub fn tables(
    class: CK_OBJECT_CLASS,
    key_type: Option<CK_KEY_TYPE>,
) -> Option<Vec<&'static [Rule]>> {
    let specific: &'static [&'static [Rule]] = match (class, key_type) {
        (CKO_DATA, _) => &[DATA],
        (CKO_PUBLIC_KEY, Some(CKK_ML_DSA)) => &[KEY, PUBLIC_KEY, ML_DSA_PUBLIC],
        (CKO_PRIVATE_KEY, Some(CKK_ML_DSA)) => &[KEY, PRIVATE_KEY, ML_DSA_PRIVATE],
        (CKO_PUBLIC_KEY, Some(CKK_B4AE_DILITHIUM5)) => &[KEY, PUBLIC_KEY, DILITHIUM5_PUBLIC],
        (CKO_PRIVATE_KEY, Some(CKK_B4AE_DILITHIUM5)) => &[KEY, PRIVATE_KEY, DILITHIUM5_PRIVATE],
        (CKO_PUBLIC_KEY, Some(CKK_ML_KEM)) => &[KEY, PUBLIC_KEY, ML_KEM_PUBLIC],
        (CKO_PUBLIC_KEY, Some(CKK_SLH_DSA)) => &[KEY, PUBLIC_KEY, SLH_DSA_PUBLIC],
        (CKO_PRIVATE_KEY, Some(CKK_SLH_DSA)) => &[KEY, PRIVATE_KEY, SLH_DSA_PRIVATE],
        (CKO_PRIVATE_KEY, Some(CKK_ML_KEM)) => &[KEY, PRIVATE_KEY, ML_KEM_PRIVATE],
        (CKO_PUBLIC_KEY, Some(CKK_B4AE_HYBRID)) => &[KEY, PUBLIC_KEY, HYBRID_HALVES, HYBRID_PUBLIC],
        (CKO_PRIVATE_KEY, Some(CKK_B4AE_HYBRID)) => {
            &[KEY, PRIVATE_KEY, HYBRID_HALVES, HYBRID_PRIVATE]
        }
        (CKO_PUBLIC_KEY, Some(CKK_EC_EDWARDS)) => &[KEY, PUBLIC_KEY, EC_EDWARDS_PUBLIC],
        (CKO_PRIVATE_KEY, Some(CKK_EC_EDWARDS)) => &[KEY, PRIVATE_KEY, EC_EDWARDS_PRIVATE],
        (CKO_SECRET_KEY, Some(CKK_GENERIC_SECRET | CKK_AES)) => &[KEY, SECRET_KEY],
        _ => return None,
    };
    let mut all = vec![STORAGE];
    all.extend_from_slice(specific);
    Some(all)
}

/// The rule for `attr` in these tables (the most specific wins).
pub fn find(tables: &[&'static [Rule]], attr: CK_ATTRIBUTE_TYPE) -> Option<Rule> {
    tables
        .iter()
        .rev()
        .flat_map(|t| t.iter())
        .find(|rule| rule.attr == attr)
        .copied()
}

/// Checks the shape of a value against its rule.
pub fn check_value(rule: &Rule, value: &[u8]) -> Result<()> {
    match rule.kind {
        Bool => decode_bool(value).map(drop),
        Ulong => decode_ulong(value).map(drop),
        Bytes => Ok(()),
        Date if value.is_empty() || value.len() == 8 => Ok(()),
        UlongArray if value.len().is_multiple_of(ULONG_LEN) => Ok(()),
        _ => Err(Error::ATTRIBUTE_VALUE_INVALID),
    }
}

//! Making and changing objects: template checks, defaults, and the key-type rules that turn a
//! caller's template into a complete, consistent object (`C_CreateObject`, `C_GenerateKeyPair`,
//! `C_CopyObject`, `C_SetAttributeValue`).

use crate::consts::*;
use crate::error::{Error, Result};
use crate::mechanism::mldsa::{ParamSet, SEED_LEN};
use crate::mechanism::{dilithium5, eddsa, family_for, hybrid, mlkem, slhdsa, Mechanism};
use crate::token::attributes::Attributes;
use crate::token::object::Object;
use crate::token::rules::{self, Access, Rule};
use cryptoki_sys::*;
use zeroize::Zeroizing;

/// How an object came to be: it decides CKA_LOCAL, CKA_KEY_GEN_MECHANISM and the
/// ALWAYS_SENSITIVE / NEVER_EXTRACTABLE history.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Created,
    Generated(CK_MECHANISM_TYPE),
    /// Made inside the token from another key (a decapsulated or encapsulated secret).
    Derived,
}

/// `C_CreateObject`: a complete object from the caller's template.
pub fn create(template: Attributes) -> Result<Attributes> {
    let class = template
        .ulong(CKA_CLASS)?
        .ok_or(Error::TEMPLATE_INCOMPLETE)?;
    let key_type = template.ulong(CKA_KEY_TYPE)?;
    if is_key(class) && key_type.is_none() {
        return Err(Error::TEMPLATE_INCOMPLETE);
    }
    let tables = rules::tables(class, key_type).ok_or(match key_type {
        Some(_) if is_key(class) => Error(CKR_KEY_TYPE_INCONSISTENT),
        _ => Error::ATTRIBUTE_VALUE_INVALID,
    })?;
    check_template(&tables, &template, |a| a != Access::ReadOnly)?;
    let mut attrs = template;
    complete_key_material(class, key_type, &mut attrs)?;
    apply_defaults(class, key_type, &mut attrs, Origin::Created);
    Ok(attrs)
}

/// `C_GenerateKeyPair` with one of this module's mechanisms: (public, private) objects. The
/// mechanism's family makes the key material (see [`generated_pair`]).
pub fn generate_pair(
    mechanism: &Mechanism,
    public: Attributes,
    private: Attributes,
) -> Result<(Attributes, Attributes)> {
    mechanism.expect_no_param()?;
    family_for(mechanism.mechanism, CKF_GENERATE_KEY_PAIR)?
        .generate_key_pair(mechanism, public, private)
}

/// `C_GenerateKey` with one of this module's mechanisms: the secret key object.
pub fn generate_key(mechanism: &Mechanism, template: Attributes) -> Result<Attributes> {
    let family = family_for(mechanism.mechanism, CKF_GENERATE)?;
    mechanism.expect_no_param()?;
    family.generate_key(mechanism, template)
}

/// A key-pair template checked and typed, for a family's key generation to fill in.
pub fn pair_templates(
    public: Attributes,
    private: Attributes,
    key_type: CK_KEY_TYPE,
) -> Result<(Attributes, Attributes)> {
    Ok((
        key_template(public, CKO_PUBLIC_KEY, key_type)?,
        key_template(private, CKO_PRIVATE_KEY, key_type)?,
    ))
}

/// A pair a family generated with `mechanism`, completed: the defaults, `CKA_LOCAL`,
/// `CKA_KEY_GEN_MECHANISM` and the ALWAYS_SENSITIVE / NEVER_EXTRACTABLE history.
pub fn generated_pair(
    mechanism: CK_MECHANISM_TYPE,
    key_type: CK_KEY_TYPE,
    mut public: Attributes,
    mut private: Attributes,
) -> (Attributes, Attributes) {
    let origin = Origin::Generated(mechanism);
    apply_defaults(CKO_PUBLIC_KEY, Some(key_type), &mut public, origin);
    apply_defaults(CKO_PRIVATE_KEY, Some(key_type), &mut private, origin);
    (public, private)
}

/// A secret key a family generated with `mechanism`, completed as [`generated_pair`] does.
pub fn generated_key(
    mechanism: CK_MECHANISM_TYPE,
    key_type: CK_KEY_TYPE,
    mut key: Attributes,
) -> Attributes {
    let origin = Origin::Generated(mechanism);
    apply_defaults(CKO_SECRET_KEY, Some(key_type), &mut key, origin);
    key
}

/// A hybrid pair from its key material; `private_value` is whatever this module keeps of the
/// private key (both halves, or only ML-DSA-87's when the HSM holds the Ed25519 half).
pub fn hybrid_pair(
    public: Attributes,
    private: Attributes,
    public_value: Vec<u8>,
    private_value: Vec<u8>,
) -> Result<(Attributes, Attributes)> {
    let (mut public, mut private) = pair_templates(public, private, CKK_B4AE_HYBRID)?;
    if public.contains(CKA_VALUE) || private.contains(CKA_VALUE) {
        return Err(Error::TEMPLATE_INCONSISTENT);
    }
    set_hybrid_halves(&mut public, &public_value)?;
    set_hybrid_halves(&mut private, &public_value)?;
    public.set(CKA_VALUE, public_value);
    private.set(CKA_VALUE, private_value);
    Ok(generated_pair(
        CKM_B4AE_HYBRID_KEY_PAIR_GEN,
        CKK_B4AE_HYBRID,
        public,
        private,
    ))
}

/// The readable halves of a hybrid public key, on either object of the pair.
fn set_hybrid_halves(attrs: &mut Attributes, public_value: &[u8]) -> Result<()> {
    let (ed, ml) = hybrid::split_public(public_value)?;
    attrs.set(CKA_B4AE_ED25519_PUBLIC, ed.to_vec());
    attrs.set(CKA_B4AE_MLDSA_PUBLIC, ml.to_vec());
    Ok(())
}

/// The secret key `C_EncapsulateKey` / `C_DecapsulateKey` make from a shared secret and the
/// caller's template: generic secret by default, as long as `CKA_VALUE_LEN` (default: all of
/// the secret), taken from the front of the secret.
pub fn shared_secret_key(mut template: Attributes, secret: &[u8]) -> Result<Attributes> {
    if template
        .ulong(CKA_CLASS)?
        .is_some_and(|c| c != CKO_SECRET_KEY)
    {
        return Err(Error::TEMPLATE_INCONSISTENT);
    }
    let key_type = template.ulong(CKA_KEY_TYPE)?.unwrap_or(CKK_GENERIC_SECRET);
    let tables =
        rules::tables(CKO_SECRET_KEY, Some(key_type)).ok_or(Error(CKR_KEY_TYPE_INCONSISTENT))?;
    check_template(&tables, &template, |a| a != Access::ReadOnly)?;
    if template.contains(CKA_VALUE) {
        return Err(Error::TEMPLATE_INCONSISTENT);
    }
    let len = match template.ulong(CKA_VALUE_LEN)? {
        Some(len) => len as usize,
        None => secret.len(),
    };
    if len == 0 || len > secret.len() || (key_type == CKK_AES && !matches!(len, 16 | 24 | 32)) {
        return Err(Error::ATTRIBUTE_VALUE_INVALID);
    }
    template.set_ulong(CKA_CLASS, CKO_SECRET_KEY);
    template.set_ulong(CKA_KEY_TYPE, key_type);
    template.set_ulong(CKA_VALUE_LEN, len as CK_ULONG);
    template.set(CKA_VALUE, secret[..len].to_vec());
    apply_defaults(
        CKO_SECRET_KEY,
        Some(key_type),
        &mut template,
        Origin::Derived,
    );
    Ok(template)
}

/// The parameter set a key-pair template names: in either half, the same in both if in both.
pub fn pair_parameter_set(public: &Attributes, private: &Attributes) -> Result<CK_ULONG> {
    for half in [public, private] {
        if half.contains(CKA_VALUE) || half.contains(CKA_SEED) {
            return Err(Error::TEMPLATE_INCONSISTENT);
        }
    }
    match (
        public.ulong(CKA_PARAMETER_SET)?,
        private.ulong(CKA_PARAMETER_SET)?,
    ) {
        (Some(a), Some(b)) if a != b => Err(Error::TEMPLATE_INCONSISTENT),
        (Some(a), _) | (None, Some(a)) => Ok(a),
        (None, None) => Err(Error::TEMPLATE_INCOMPLETE),
    }
}

/// A template for a key to generate: checked, with its class and key type filled in.
pub fn key_template(
    mut template: Attributes,
    class: CK_OBJECT_CLASS,
    key_type: CK_KEY_TYPE,
) -> Result<Attributes> {
    if template.ulong(CKA_CLASS)?.is_some_and(|c| c != class)
        || template.ulong(CKA_KEY_TYPE)?.is_some_and(|k| k != key_type)
    {
        return Err(Error::TEMPLATE_INCONSISTENT);
    }
    let tables = rules::tables(class, Some(key_type)).ok_or(Error::GENERAL)?;
    check_template(&tables, &template, |a| a != Access::ReadOnly)?;
    template.set_ulong(CKA_CLASS, class);
    template.set_ulong(CKA_KEY_TYPE, key_type);
    Ok(template)
}

/// `C_CopyObject`: the copy's attributes.
pub fn copy(source: &Object, template: Attributes) -> Result<Attributes> {
    if !source.is_copyable() {
        return Err(Error::ACTION_PROHIBITED);
    }
    let tables = source.tables();
    check_template(&tables, &template, |a| {
        matches!(a, Access::CreateOrCopy | Access::Modifiable)
    })?;
    let mut attrs = source.attrs.clone();
    attrs.remove(CKA_UNIQUE_ID);
    for (attr, value) in template.iter() {
        check_change(source, attr, value, true)?;
        attrs.set(attr, value.to_vec());
    }
    Ok(attrs)
}

/// `C_SetAttributeValue`: the object's new attributes.
pub fn modify(object: &Object, template: Attributes) -> Result<Attributes> {
    if !object.is_modifiable() {
        return Err(Error::ACTION_PROHIBITED);
    }
    check_template(&object.tables(), &template, |a| a == Access::Modifiable)?;
    let mut attrs = object.attrs.clone();
    for (attr, value) in template.iter() {
        check_change(object, attr, value, false)?;
        attrs.set(attr, value.to_vec());
    }
    Ok(attrs)
}

/// The one-way attributes: SENSITIVE may only become TRUE, EXTRACTABLE only FALSE, and a copy
/// may only make MODIFIABLE / COPYABLE FALSE.
fn check_change(
    object: &Object,
    attr: CK_ATTRIBUTE_TYPE,
    value: &[u8],
    copying: bool,
) -> Result<()> {
    let new = || crate::token::attributes::decode_bool(value);
    let old = |default| object.attrs.bool_or(attr, default);
    let allowed = match attr {
        CKA_SENSITIVE => new()? || !old(true),
        CKA_EXTRACTABLE => !new()? || old(false),
        CKA_WRAP_WITH_TRUSTED => new()? || !old(false),
        CKA_MODIFIABLE | CKA_COPYABLE if copying => !new()? || old(true),
        _ => true,
    };
    if allowed {
        Ok(())
    } else {
        Err(Error::ATTRIBUTE_READ_ONLY)
    }
}

/// Every attribute of the template must belong to the object's kind, have the right shape,
/// and be one the caller may set in this call.
fn check_template(
    tables: &[&'static [Rule]],
    template: &Attributes,
    settable: impl Fn(Access) -> bool,
) -> Result<()> {
    for (attr, value) in template.iter() {
        let rule = rules::find(tables, attr).ok_or(Error::ATTRIBUTE_TYPE_INVALID)?;
        if !settable(rule.access) {
            return Err(Error::ATTRIBUTE_READ_ONLY);
        }
        rules::check_value(&rule, value)?;
    }
    Ok(())
}

fn is_key(class: CK_OBJECT_CLASS) -> bool {
    matches!(class, CKO_PUBLIC_KEY | CKO_PRIVATE_KEY | CKO_SECRET_KEY)
}

/// Checks imported key material and derives what follows from it (ML-DSA: the expanded key
/// from the seed, the parameter set from the key length).
fn complete_key_material(
    class: CK_OBJECT_CLASS,
    key_type: Option<CK_KEY_TYPE>,
    attrs: &mut Attributes,
) -> Result<()> {
    match (class, key_type) {
        (CKO_PUBLIC_KEY, Some(CKK_ML_DSA)) => {
            let value = attrs.get(CKA_VALUE).ok_or(Error::TEMPLATE_INCOMPLETE)?;
            let set = parameter_set(attrs, ParamSet::by_public_key_len(value.len()))?;
            if value.len() != set.public_key_len() {
                return Err(Error::ATTRIBUTE_VALUE_INVALID);
            }
            attrs.set_ulong(CKA_PARAMETER_SET, set.ck());
        }
        (CKO_PRIVATE_KEY, Some(CKK_ML_DSA)) => {
            let by_len = attrs
                .get(CKA_VALUE)
                .and_then(|v| ParamSet::by_private_key_len(v.len()));
            let set = parameter_set(attrs, by_len)?;
            private_from_seed_or_value(
                attrs,
                |seed: &[u8; SEED_LEN]| set.keygen_from_seed(seed).map(|(_, sk)| sk),
                |value| set.public_of_private(value).map(drop),
            )?;
            attrs.set_ulong(CKA_PARAMETER_SET, set.ck());
        }
        (CKO_PUBLIC_KEY | CKO_PRIVATE_KEY, Some(CKK_SLH_DSA)) => {
            let set = slhdsa::ParamSet::from_ck(
                attrs
                    .ulong(CKA_PARAMETER_SET)?
                    .ok_or(Error::TEMPLATE_INCOMPLETE)?,
            )?;
            let value = attrs.get(CKA_VALUE).ok_or(Error::TEMPLATE_INCOMPLETE)?;
            if class == CKO_PRIVATE_KEY {
                set.public_of_private(value)?;
            } else if value.len() != set.public_key_len() {
                return Err(Error::ATTRIBUTE_VALUE_INVALID);
            }
        }
        (CKO_PUBLIC_KEY | CKO_PRIVATE_KEY, Some(CKK_B4AE_DILITHIUM5)) => {
            let expected = if class == CKO_PUBLIC_KEY {
                dilithium5::PUBLIC_KEY_LEN
            } else {
                dilithium5::PRIVATE_KEY_LEN
            };
            let value = attrs.get(CKA_VALUE).ok_or(Error::TEMPLATE_INCOMPLETE)?;
            if value.len() != expected {
                return Err(Error::ATTRIBUTE_VALUE_INVALID);
            }
        }
        (CKO_PUBLIC_KEY, Some(CKK_ML_KEM)) => {
            let value = attrs.get(CKA_VALUE).ok_or(Error::TEMPLATE_INCOMPLETE)?;
            let implied = mlkem::ParamSet::by_public_key_len(value.len());
            let set = mlkem_parameter_set(attrs, implied)?;
            // Parsing applies FIPS 203's input check to the key.
            set.encap_key(attrs.get(CKA_VALUE).unwrap_or_default())?;
            attrs.set_ulong(CKA_PARAMETER_SET, set.ck());
        }
        (CKO_PRIVATE_KEY, Some(CKK_ML_KEM)) => {
            let implied = attrs
                .get(CKA_VALUE)
                .and_then(|v| mlkem::ParamSet::by_private_key_len(v.len()));
            let set = mlkem_parameter_set(attrs, implied)?;
            private_from_seed_or_value(
                attrs,
                |seed: &[u8; mlkem::SEED_LEN]| Ok(set.keygen_from_seed(seed).1),
                |value| set.decap_key(value).map(drop),
            )?;
            attrs.set_ulong(CKA_PARAMETER_SET, set.ck());
        }
        (CKO_PUBLIC_KEY, Some(CKK_B4AE_HYBRID)) => {
            let value = attrs.get(CKA_VALUE).ok_or(Error::TEMPLATE_INCOMPLETE)?;
            if value.len() != hybrid::PUBLIC_KEY_LEN {
                return Err(Error::ATTRIBUTE_VALUE_INVALID);
            }
            let value = value.to_vec();
            set_hybrid_halves(attrs, &value)?;
        }
        (CKO_PRIVATE_KEY, Some(CKK_B4AE_HYBRID)) => {
            let value = attrs.get(CKA_VALUE).ok_or(Error::TEMPLATE_INCOMPLETE)?;
            let public = hybrid::public_of_private(value)?;
            set_hybrid_halves(attrs, &public)?;
        }
        (CKO_PUBLIC_KEY, Some(CKK_EC_EDWARDS)) => {
            eddsa::check_params(attrs.get(CKA_EC_PARAMS).ok_or(Error::TEMPLATE_INCOMPLETE)?)?;
            let point = attrs.get(CKA_EC_POINT).ok_or(Error::TEMPLATE_INCOMPLETE)?;
            let point = eddsa::encode_point(&eddsa::decode_point(point)?);
            attrs.set(CKA_EC_POINT, point);
        }
        (CKO_PRIVATE_KEY, Some(CKK_EC_EDWARDS)) => {
            eddsa::check_params(attrs.get(CKA_EC_PARAMS).ok_or(Error::TEMPLATE_INCOMPLETE)?)?;
            eddsa::public_of_seed(attrs.get(CKA_VALUE).ok_or(Error::TEMPLATE_INCOMPLETE)?)?;
        }
        (CKO_SECRET_KEY, Some(key_type)) => {
            if attrs.contains(CKA_VALUE_LEN) {
                return Err(Error::TEMPLATE_INCONSISTENT);
            }
            let len = attrs
                .get(CKA_VALUE)
                .ok_or(Error::TEMPLATE_INCOMPLETE)?
                .len();
            if key_type == CKK_AES && !matches!(len, 16 | 24 | 32) {
                return Err(Error::ATTRIBUTE_VALUE_INVALID);
            }
            attrs.set_ulong(CKA_VALUE_LEN, len as CK_ULONG);
        }
        _ => {}
    }
    Ok(())
}

/// The parameter set named by the template, or implied by the key length.
fn parameter_set(attrs: &Attributes, implied: Option<ParamSet>) -> Result<ParamSet> {
    match (attrs.ulong(CKA_PARAMETER_SET)?, implied) {
        (Some(v), _) => ParamSet::from_ck(v),
        (None, Some(set)) => Ok(set),
        (None, None) if attrs.contains(CKA_VALUE) => Err(Error::ATTRIBUTE_VALUE_INVALID),
        (None, None) => Err(Error::TEMPLATE_INCOMPLETE),
    }
}

/// A private key imported by `CKA_SEED`, `CKA_VALUE` or both: the value is derived from the
/// seed (and must equal a given one), or checked by `check` when it comes alone.
fn private_from_seed_or_value<const N: usize>(
    attrs: &mut Attributes,
    expand: impl Fn(&[u8; N]) -> Result<Zeroizing<Vec<u8>>>,
    check: impl Fn(&[u8]) -> Result<()>,
) -> Result<()> {
    let Some(seed) = attrs.get(CKA_SEED) else {
        return check(attrs.get(CKA_VALUE).ok_or(Error::TEMPLATE_INCOMPLETE)?);
    };
    let seed: &[u8; N] = seed
        .try_into()
        .map_err(|_| Error::ATTRIBUTE_VALUE_INVALID)?;
    let expanded = expand(seed)?;
    match attrs.get(CKA_VALUE) {
        Some(value) if value != expanded.as_slice() => Err(Error::TEMPLATE_INCONSISTENT),
        Some(_) => Ok(()),
        None => {
            attrs.set(CKA_VALUE, expanded.to_vec());
            Ok(())
        }
    }
}

/// The ML-KEM parameter set named by the template, or implied by the key length.
fn mlkem_parameter_set(
    attrs: &Attributes,
    implied: Option<mlkem::ParamSet>,
) -> Result<mlkem::ParamSet> {
    match (attrs.ulong(CKA_PARAMETER_SET)?, implied) {
        (Some(v), _) => {
            let set = mlkem::ParamSet::from_ck(v)?;
            if attrs.contains(CKA_VALUE) && implied != Some(set) {
                return Err(Error::ATTRIBUTE_VALUE_INVALID);
            }
            Ok(set)
        }
        (None, Some(set)) => Ok(set),
        (None, None) if attrs.contains(CKA_VALUE) => Err(Error::ATTRIBUTE_VALUE_INVALID),
        (None, None) => Err(Error::TEMPLATE_INCOMPLETE),
    }
}

fn default(attrs: &mut Attributes, attr: CK_ATTRIBUTE_TYPE, value: Vec<u8>) {
    if !attrs.contains(attr) {
        attrs.set(attr, value);
    }
}

fn default_bool(attrs: &mut Attributes, attr: CK_ATTRIBUTE_TYPE, value: bool) {
    if !attrs.contains(attr) {
        attrs.set_bool(attr, value);
    }
}

/// Fills every attribute the caller left out, and the token-set ones.
fn apply_defaults(
    class: CK_OBJECT_CLASS,
    key_type: Option<CK_KEY_TYPE>,
    attrs: &mut Attributes,
    origin: Origin,
) {
    let secret_bearing = matches!(class, CKO_PRIVATE_KEY | CKO_SECRET_KEY);
    let post_quantum = matches!(
        key_type,
        Some(CKK_ML_DSA | CKK_B4AE_DILITHIUM5 | CKK_B4AE_HYBRID | CKK_ML_KEM | CKK_SLH_DSA)
    );
    let signs = (post_quantum && key_type != Some(CKK_ML_KEM)) || key_type == Some(CKK_EC_EDWARDS);
    let encapsulates = key_type == Some(CKK_ML_KEM);
    default_bool(attrs, CKA_TOKEN, false);
    default_bool(attrs, CKA_PRIVATE, secret_bearing);
    default_bool(attrs, CKA_MODIFIABLE, true);
    default_bool(attrs, CKA_COPYABLE, true);
    default_bool(attrs, CKA_DESTROYABLE, true);
    default(attrs, CKA_LABEL, Vec::new());
    match class {
        CKO_DATA => {
            default(attrs, CKA_APPLICATION, Vec::new());
            default(attrs, CKA_OBJECT_ID, Vec::new());
            default(attrs, CKA_VALUE, Vec::new());
            return;
        }
        _ if !is_key(class) => return,
        _ => {}
    }
    default(attrs, CKA_ID, Vec::new());
    default(attrs, CKA_START_DATE, Vec::new());
    default(attrs, CKA_END_DATE, Vec::new());
    default_bool(attrs, CKA_DERIVE, false);
    attrs.set_bool(CKA_LOCAL, matches!(origin, Origin::Generated(_)));
    attrs.set_ulong(
        CKA_KEY_GEN_MECHANISM,
        match origin {
            Origin::Generated(m) => m,
            Origin::Created | Origin::Derived => CK_UNAVAILABLE_INFORMATION,
        },
    );
    match class {
        CKO_PUBLIC_KEY => {
            default(attrs, CKA_SUBJECT, Vec::new());
            for attr in [CKA_ENCRYPT, CKA_VERIFY_RECOVER, CKA_WRAP, CKA_TRUSTED] {
                default_bool(attrs, attr, false);
            }
            default_bool(attrs, CKA_VERIFY, signs);
            default_bool(attrs, CKA_ENCAPSULATE, encapsulates);
        }
        _ => {
            if class == CKO_PRIVATE_KEY {
                default(attrs, CKA_SUBJECT, Vec::new());
                for attr in [CKA_SIGN_RECOVER, CKA_ALWAYS_AUTHENTICATE] {
                    default_bool(attrs, attr, false);
                }
                default_bool(attrs, CKA_SIGN, signs);
                default_bool(attrs, CKA_DECAPSULATE, encapsulates);
            } else {
                for attr in [CKA_ENCRYPT, CKA_SIGN, CKA_VERIFY, CKA_WRAP, CKA_TRUSTED] {
                    default_bool(attrs, attr, false);
                }
            }
            for attr in [CKA_DECRYPT, CKA_UNWRAP, CKA_WRAP_WITH_TRUSTED] {
                default_bool(attrs, attr, false);
            }
            default_bool(attrs, CKA_SENSITIVE, true);
            default_bool(attrs, CKA_EXTRACTABLE, false);
            let generated = origin != Origin::Created;
            let sensitive = attrs.bool_or(CKA_SENSITIVE, true);
            let extractable = attrs.bool_or(CKA_EXTRACTABLE, false);
            attrs.set_bool(CKA_ALWAYS_SENSITIVE, generated && sensitive);
            attrs.set_bool(CKA_NEVER_EXTRACTABLE, generated && !extractable);
            if post_quantum {
                attrs.set_ulong(CKA_B4AE_CUSTODY, B4AE_CUSTODY_EMBEDDED);
            }
        }
    }
}

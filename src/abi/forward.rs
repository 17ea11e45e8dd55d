//! Forwarding to the real HSM: the caller's arguments are checked here first (NULL pointers,
//! lengths of 2^32 or more, absurd template counts, NULL IV/AAD pointers in GCM parameters), so
//! a real library that would crash or hang on them never sees them; then the real function runs
//! on the real session. Post-quantum keys kept as records are handled by this module instead.

use super::{
    attribute_array, attribute_array_mut, input, output, template, MAX_DATA_LEN, MAX_PARAM_LEN,
};
use crate::backend::pkcs11::{ed25519, ForwardSession, ForwardToken};
use crate::error::{Error, Result};
use crate::mechanism::{hybrid, signing, Mechanism};
use crate::module;
use crate::token::attributes::Attributes;
use crate::token::factory;
use crate::token::object::Object;
use crate::token::operations::OpKind;
use cryptoki_sys::*;
use std::sync::Arc;

/// Calls a real function; its return value becomes ours.
macro_rules! real {
    ($lib:expr, $name:ident($($arg:expr),* $(,)?)) => {{
        let func = $lib.functions().$name.ok_or(Error::FUNCTION_NOT_SUPPORTED)?;
        // SAFETY: a function of the loaded HSM library, called with arguments checked by this
        // module (or built by it) per PKCS#11.
        let rv = unsafe { func($($arg),*) };
        $lib.outcome(stringify!($name), rv)
    }};
}
pub(super) use real;

use crate::backend::pkcs11::library::EMPTY;

/// Ends the real operation that a call this module refused would have ended (PKCS#11: any
/// answer but `CKR_BUFFER_TOO_SMALL` ends it): the real function runs on empty input with a
/// large buffer, and whatever it answers, the operation is over.
macro_rules! end_real {
    ($f:expr, single $name:ident) => {{
        let mut out = vec![0u8; 1 << 16];
        let mut len = out.len() as CK_ULONG;
        let empty = $crate::backend::pkcs11::library::EMPTY.as_ptr() as *mut CK_BYTE;
        let _ = (|| {
            real!(
                $f.token.lib,
                $name($f.real, empty, 0, out.as_mut_ptr(), &mut len)
            )
        })();
    }};
}
pub(super) use end_real;

/// Checks a forwarded call's arguments; when they are refused, the real operation is ended as
/// the refused call would have ended it.
pub(super) fn checked_or_end(check: Result<()>, end: impl FnOnce()) -> Result<()> {
    if check.is_err() {
        end();
    }
    check
}

/// A checked copy of the caller's mechanism, ready to hand to the real library.
pub(super) struct CheckedMechanism {
    pub mechanism: CK_MECHANISM,
    _gcm: Option<Box<CK_GCM_PARAMS>>,
}

impl CheckedMechanism {
    pub fn as_ptr(&mut self) -> *mut CK_MECHANISM {
        &mut self.mechanism
    }
}

/// Checks a mechanism for forwarding.
///
/// # Safety
/// `ptr` must be NULL or a valid `CK_MECHANISM` whose parameter is valid for its length.
pub(super) unsafe fn checked_mechanism(ptr: *const CK_MECHANISM) -> Result<CheckedMechanism> {
    // SAFETY: forwarded contract.
    let m = *unsafe { ptr.as_ref() }.ok_or(Error::ARGUMENTS_BAD)?;
    if m.ulParameterLen > MAX_PARAM_LEN || (m.ulParameterLen > 0 && m.pParameter.is_null()) {
        return Err(Error::MECHANISM_PARAM_INVALID);
    }
    let mut checked = CheckedMechanism {
        mechanism: m,
        _gcm: None,
    };
    if m.mechanism == CKM_AES_GCM
        && m.ulParameterLen as usize == std::mem::size_of::<CK_GCM_PARAMS>()
    {
        // SAFETY: non-NULL and exactly a CK_GCM_PARAMS, as checked above.
        let mut gcm = Box::new(unsafe { *(m.pParameter as *const CK_GCM_PARAMS) });
        let bad = |p: *mut CK_BYTE, len: CK_ULONG| (p.is_null() && len > 0) || len > MAX_DATA_LEN;
        // An empty IV is refused too: PKCS#11 wants at least one byte, and GCM without one is
        // unsafe (SoftHSM2 would accept it).
        if bad(gcm.pIv, gcm.ulIvLen)
            || gcm.ulIvLen == 0
            || bad(gcm.pAAD, gcm.ulAADLen)
            || gcm.ulTagBits > 128
        {
            return Err(Error::MECHANISM_PARAM_INVALID);
        }
        if gcm.pAAD.is_null() {
            gcm.pAAD = EMPTY.as_ptr() as *mut _;
        }
        checked.mechanism.pParameter = &mut *gcm as *mut CK_GCM_PARAMS as *mut _;
        checked._gcm = Some(gcm);
    }
    Ok(checked)
}

/// Checks a template for forwarding (bounds, NULL values); the caller's array is then passed on.
///
/// # Safety
/// As [`template`].
pub(super) unsafe fn check_template(ptr: *const CK_ATTRIBUTE, count: CK_ULONG) -> Result<()> {
    // SAFETY: forwarded contract.
    unsafe { template(ptr, count) }.map(drop)
}

/// Checks an output length pointer and the buffer's size.
///
/// # Safety
/// `len` must be NULL or valid.
pub(super) unsafe fn check_output(buf: *mut CK_BYTE, len: *mut CK_ULONG) -> Result<()> {
    // SAFETY: forwarded contract.
    let len = unsafe { output(len) }?;
    if !buf.is_null() && *len > MAX_DATA_LEN {
        return Err(Error::ARGUMENTS_BAD);
    }
    Ok(())
}

/// Checks an input buffer.
///
/// # Safety
/// As [`input`].
pub(super) unsafe fn check_input(ptr: *const CK_BYTE, len: CK_ULONG) -> Result<()> {
    // SAFETY: forwarded contract.
    unsafe { input(ptr, len) }.map(drop)
}

// ---- slots ----

pub(super) fn open_session(
    module: &module::Module,
    token: &Arc<ForwardToken>,
    flags: CK_FLAGS,
) -> Result<CK_SESSION_HANDLE> {
    if flags & CKF_SERIAL_SESSION == 0 {
        return Err(Error(CKR_SESSION_PARALLEL_NOT_SUPPORTED));
    }
    let real = token.lib.open_session(
        token.real_slot(),
        flags & (CKF_SERIAL_SESSION | CKF_RW_SESSION),
    )?;
    Ok(module.add_forwarded_session(token, real, flags & CKF_RW_SESSION != 0))
}

/// # Safety
/// `label` must be NULL or 32 readable bytes; `pin` NULL or `len` bytes.
pub(super) unsafe fn init_token(
    token: &ForwardToken,
    pin: *mut CK_UTF8CHAR,
    len: CK_ULONG,
    label: *mut CK_UTF8CHAR,
) -> Result<()> {
    // SAFETY: forwarded contract.
    unsafe { check_input(pin, len) }?;
    // SAFETY: pLabel is 32 bytes (PKCS#11 contract).
    let new_label = unsafe { (label as *const [u8; 32]).as_ref() }.ok_or(Error::ARGUMENTS_BAD)?;
    if token.sessions.load(std::sync::atomic::Ordering::SeqCst) > 0 {
        return Err(Error(CKR_SESSION_EXISTS));
    }
    token.keys.close();
    real!(token.lib, C_InitToken(token.real_slot(), pin, len, label))?;
    let label = String::from_utf8_lossy(new_label).trim_end().to_owned();
    token.reresolve(Some(label));
    Ok(())
}

// ---- sessions ----

pub(super) fn session_info(f: &ForwardSession, info: *mut CK_SESSION_INFO) -> Result<()> {
    let mut real = f.token.lib.session_info(f.real)?;
    real.slotID = f.token.slot_id;
    // SAFETY: PKCS#11 contract on pInfo.
    *unsafe { output(info) }? = real;
    Ok(())
}

/// # Safety
/// `pin` must be NULL or valid for `len` bytes.
pub(super) unsafe fn login(
    f: &ForwardSession,
    user: CK_USER_TYPE,
    pin: *mut CK_UTF8CHAR,
    len: CK_ULONG,
) -> Result<()> {
    // SAFETY: forwarded contract.
    unsafe { check_input(pin, len) }?;
    real!(f.token.lib, C_Login(f.real, user, pin, len)).inspect_err(|e| {
        if *e == Error::PIN_INCORRECT || *e == Error::PIN_LOCKED {
            tracing::info!("slot {}: the HSM refused the PIN: {e}", f.token.slot_id);
        }
    })?;
    if user == CKU_USER {
        // Finish a storage-key rotation a crash interrupted; this also reads the records.
        if let Err(e) = f.token.keys.rotate(false) {
            tracing::warn!(
                "slot {}: post-quantum key records unavailable: {e}",
                f.token.slot_id
            );
        }
    }
    Ok(())
}

pub(super) fn logout(f: &ForwardSession) -> Result<()> {
    real!(f.token.lib, C_Logout(f.real))?;
    f.token.keys.forget_secrets();
    Ok(())
}

// ---- objects ----

/// Whether an object template describes a post-quantum key this module keeps for the HSM.
fn local_key_type(token: &ForwardToken, attrs: &Attributes) -> bool {
    token.holds_as_records(attrs.ulong(CKA_KEY_TYPE).ok().flatten())
}

/// # Safety
/// As [`template`]; `object` must be NULL or valid.
pub(super) unsafe fn create_object(
    f: &ForwardSession,
    attrs: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    object: *mut CK_OBJECT_HANDLE,
) -> Result<()> {
    // SAFETY: forwarded contract.
    let (template, out) = unsafe { (template(attrs, count)?, output(object)?) };
    if !local_key_type(&f.token, &template) {
        return real!(f.token.lib, C_CreateObject(f.real, attrs, count, out));
    }
    let mut made = factory::create(template)?;
    let hybrid_private = made.ulong(CKA_CLASS)? == Some(CKO_PRIVATE_KEY)
        && made.ulong(CKA_KEY_TYPE)? == Some(crate::consts::CKK_B4AE_HYBRID);
    if hybrid_private && f.token.hsm_ed25519() {
        refuse_extractable_hybrid(&made)?;
        let value = zeroize::Zeroizing::new(made.get(CKA_VALUE).ok_or(Error::GENERAL)?.to_vec());
        let (seed, ml_private) = value.split_at(hybrid::ED25519_SEED_LEN);
        let token = made.bool_or(CKA_TOKEN, false);
        let label = ed25519::import(&f.token.lib, f.real, token, seed)?;
        made.set(CKA_VALUE, ml_private.to_vec());
        made.set(ed25519::HSM_KEY_LABEL, label);
    }
    made.set_ulong(
        crate::consts::CKA_B4AE_CUSTODY,
        crate::consts::B4AE_CUSTODY_HSM_WRAPPED,
    );
    *out = f.token.keys.store_one(f.real, made)?;
    Ok(())
}

pub(super) fn destroy_object(f: &ForwardSession, object: CK_OBJECT_HANDLE) -> Result<()> {
    let label = f.token.keys.indexed(object).and_then(|e| {
        e.object
            .attrs
            .get(ed25519::HSM_KEY_LABEL)
            .map(<[u8]>::to_vec)
    });
    real!(f.token.lib, C_DestroyObject(f.real, object))?;
    f.token.keys.removed(object);
    if let Some(label) = label {
        // The hybrid key is gone; so is its Ed25519 half.
        f.token.keys.ed25519_removed(&label);
        if let Err(e) = ed25519::destroy(&f.token.lib, f.real, &label) {
            tracing::warn!("a destroyed hybrid key's Ed25519 half stays in the HSM: {e:?}");
        }
    }
    Ok(())
}

/// # Safety
/// As [`template`]; `new_object` NULL or valid.
pub(super) unsafe fn copy_object(
    f: &ForwardSession,
    object: CK_OBJECT_HANDLE,
    attrs: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    new_object: *mut CK_OBJECT_HANDLE,
) -> Result<()> {
    // SAFETY: forwarded contract.
    unsafe { check_template(attrs, count) }?;
    if f.token.keys.is_record(object) {
        // A copy would be a second sealed record of one key; import the key again instead.
        return Err(Error::ACTION_PROHIBITED);
    }
    real!(
        f.token.lib,
        C_CopyObject(f.real, object, attrs, count, new_object)
    )
}

/// # Safety
/// `attrs` must be NULL or valid for `count` attributes with writable values.
pub(super) unsafe fn get_attribute_value(
    f: &ForwardSession,
    object: CK_OBJECT_HANDLE,
    attrs: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> Result<()> {
    // SAFETY: forwarded contract; the view ends before anything writes into the array.
    unsafe { attribute_array(attrs, count) }?;
    let Some(entry) = f.token.keys.indexed(object) else {
        let result = real!(
            f.token.lib,
            C_GetAttributeValue(f.real, object, attrs, count)
        );
        // SAFETY: forwarded contract; the real call above has returned.
        let answered = unsafe { attribute_array_mut(attrs, count) }?;
        return native_custody(f, object, answered, result);
    };
    // SAFETY: forwarded contract; the view ends before `answer_attributes` writes.
    let wants_secret = unsafe { attribute_array(attrs, count) }?
        .iter()
        .any(|a| entry.object.is_secret_attribute(a.type_));
    let object = if wants_secret {
        f.token.keys.open(object)?
    } else {
        entry.object
    };
    // SAFETY: forwarded contract.
    unsafe { super::objects::answer_attributes(&object, attrs, count) }
}

/// # Safety
/// As [`template`].
pub(super) unsafe fn set_attribute_value(
    f: &ForwardSession,
    object: CK_OBJECT_HANDLE,
    attrs: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> Result<()> {
    // SAFETY: forwarded contract.
    let changes = unsafe { template(attrs, count) }?;
    if !f.token.keys.is_record(object) {
        return real!(
            f.token.lib,
            C_SetAttributeValue(f.real, object, attrs, count)
        );
    }
    let current = f.token.keys.open(object)?;
    let changed = factory::modify(&current, changes)?;
    f.token.keys.rewrite(f.real, object, changed)
}

/// # Safety
/// As [`template`].
pub(super) unsafe fn find_init(
    f: &ForwardSession,
    attrs: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> Result<()> {
    // SAFETY: forwarded contract.
    let wanted = unsafe { template(attrs, count) }?;
    f.ops.find_init(|| f.token.find(f.real, &wanted))
}

// ---- keys and signatures ----

/// # Safety
/// Every pointer per PKCS#11 for `C_GenerateKeyPair`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn generate_key_pair(
    f: &ForwardSession,
    mech: *mut CK_MECHANISM,
    public_template: *mut CK_ATTRIBUTE,
    public_count: CK_ULONG,
    private_template: *mut CK_ATTRIBUTE,
    private_count: CK_ULONG,
    public_key: *mut CK_OBJECT_HANDLE,
    private_key: *mut CK_OBJECT_HANDLE,
) -> Result<()> {
    // SAFETY: forwarded contract.
    let mut checked = unsafe { checked_mechanism(mech) }?;
    // SAFETY: forwarded contract.
    let (public, private, public_out, private_out) = unsafe {
        (
            template(public_template, public_count)?,
            template(private_template, private_count)?,
            output(public_key)?,
            output(private_key)?,
        )
    };
    if f.token.ours(checked.mechanism.mechanism).is_none() {
        return real!(
            f.token.lib,
            C_GenerateKeyPair(
                f.real,
                checked.as_ptr(),
                public_template,
                public_count,
                private_template,
                private_count,
                public_out,
                private_out
            )
        );
    }
    // SAFETY: forwarded contract.
    let decoded = unsafe { super::mechanism(mech) }?;
    let hybrid_in_hsm =
        decoded.mechanism == crate::consts::CKM_B4AE_HYBRID_KEY_PAIR_GEN && f.token.hsm_ed25519();
    let (public, private) = if hybrid_in_hsm {
        decoded.expect_no_param()?;
        hybrid_with_hsm_ed25519(f, public, private)?
    } else {
        factory::generate_pair(&decoded, public, private)?
    };
    if (public.bool_or(CKA_TOKEN, false) || private.bool_or(CKA_TOKEN, false)) && !f.rw {
        return Err(Error::SESSION_READ_ONLY);
    }
    let label = private.get(ed25519::HSM_KEY_LABEL).map(<[u8]>::to_vec);
    let (p, s) = match f.token.keys.store_pair(f.real, public, private) {
        Ok(pair) => pair,
        Err(e) => {
            if let Some(label) = label {
                let _ = ed25519::destroy(&f.token.lib, f.real, &label);
            }
            return Err(e);
        }
    };
    *public_out = p;
    *private_out = s;
    Ok(())
}

/// A hybrid pair whose Ed25519 half the HSM generates and keeps; the record holds the ML-DSA-87
/// half and the label of the HSM's key.
fn hybrid_with_hsm_ed25519(
    f: &ForwardSession,
    public: Attributes,
    private: Attributes,
) -> Result<(Attributes, Attributes)> {
    refuse_extractable_hybrid(&private)?;
    let token = private.bool_or(CKA_TOKEN, false);
    if token && !f.rw {
        return Err(Error::SESSION_READ_ONLY);
    }
    let (ml_public, ml_private) = hybrid::mldsa_keypair()?;
    let (label, ed_public) = ed25519::generate(&f.token.lib, f.real, token)?;
    let value = [&ed_public[..], &ml_public].concat();
    match factory::hybrid_pair(public, private, value, ml_private.to_vec()) {
        Ok((public, mut private)) => {
            private.set(ed25519::HSM_KEY_LABEL, label);
            Ok((public, private))
        }
        Err(e) => {
            let _ = ed25519::destroy(&f.token.lib, f.real, &label);
            Err(e)
        }
    }
}

/// The HSM's Ed25519 half never leaves it, so neither may the hybrid key.
fn refuse_extractable_hybrid(private: &Attributes) -> Result<()> {
    if private.bool_or(CKA_EXTRACTABLE, false) || !private.bool_or(CKA_SENSITIVE, true) {
        return Err(Error::TEMPLATE_INCONSISTENT);
    }
    Ok(())
}

/// The answer for a key the mechanism cannot use: a post-quantum mechanism of this module given
/// one of the HSM's own keys, or a classical mechanism given a post-quantum key record.
fn wrong_key_type(f: &ForwardSession, key: CK_OBJECT_HANDLE, record: bool) -> Error {
    if !record {
        // The HSM knows whether the handle names a key at all.
        if let Err(e) = f.token.lib.attribute(f.real, key, CKA_CLASS) {
            return key_handle(Err(e))
                .err()
                .unwrap_or(Error::KEY_HANDLE_INVALID);
        }
    }
    Error::KEY_TYPE_INCONSISTENT
}

/// Starts a signing or verification whose key is one of the HSM's own, in the HSM.
fn begin_in_hsm(
    f: &ForwardSession,
    kind: OpKind,
    checked: &mut CheckedMechanism,
    key: CK_OBJECT_HANDLE,
) -> Result<()> {
    if f.token.ours(checked.mechanism.mechanism).is_some() {
        return Err(wrong_key_type(f, key, false));
    }
    let mech = checked.as_ptr();
    f.ops.begin_in_hsm(kind, || {
        key_handle(match kind {
            OpKind::Sign => real!(f.token.lib, C_SignInit(f.real, mech, key)),
            _ => real!(f.token.lib, C_VerifyInit(f.real, mech, key)),
        })
    })
}

/// The decoded mechanism for a key record, which only this module's mechanisms can use.
///
/// # Safety
/// As [`checked_mechanism`].
unsafe fn record_mechanism(
    f: &ForwardSession,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> Result<Mechanism> {
    // SAFETY: forwarded contract.
    let decoded = unsafe { super::mechanism(mech) }?;
    if f.token.ours(decoded.mechanism).is_none() {
        let known =
            f.token.native(decoded.mechanism) || crate::mechanism::classical(decoded.mechanism);
        return Err(if known {
            wrong_key_type(f, key, true)
        } else {
            Error::MECHANISM_INVALID
        });
    }
    Ok(decoded)
}

/// # Safety
/// As [`checked_mechanism`].
pub(super) unsafe fn sign_init(
    f: &ForwardSession,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> Result<()> {
    if !f.token.keys.is_record(key) {
        // SAFETY: forwarded contract.
        let mut checked = unsafe { checked_mechanism(mech) }?;
        return begin_in_hsm(f, OpKind::Sign, &mut checked, key);
    }
    // SAFETY: forwarded contract.
    let decoded = unsafe { record_mechanism(f, mech, key) }?;
    f.ops.sign_init(|| {
        let object = f.token.keys.open(key)?;
        let in_hsm = match object.attrs.get(ed25519::HSM_KEY_LABEL) {
            Some(label) if decoded.mechanism == crate::consts::CKM_B4AE_HYBRID => {
                let signer = ed25519::HsmEd25519 {
                    lib: f.token.lib.clone(),
                    session: f.real,
                    key: f.token.ed25519_key(f.real, label)?,
                };
                Some(Arc::new(signer) as Arc<dyn hybrid::Ed25519Signer>)
            }
            _ => None,
        };
        signing::sign_init_with(&decoded, &object, in_hsm)
    })
}

/// # Safety
/// As [`checked_mechanism`].
pub(super) unsafe fn verify_init(
    f: &ForwardSession,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> Result<()> {
    let Some(entry) = f.token.keys.indexed(key) else {
        // SAFETY: forwarded contract.
        let mut checked = unsafe { checked_mechanism(mech) }?;
        return begin_in_hsm(f, OpKind::Verify, &mut checked, key);
    };
    // SAFETY: forwarded contract.
    let decoded = unsafe { record_mechanism(f, mech, key) }?;
    f.ops
        .verify_init(|| signing::verify_init(&decoded, &entry.object))
}

// ---- key encapsulation ----

/// The ML-KEM key record behind `key` (the HSM itself is never asked to encapsulate: the
/// module loads only its 2.40 functions).
fn kem_record(f: &ForwardSession, key: CK_OBJECT_HANDLE) -> Result<std::sync::Arc<Object>> {
    if !f.token.keys.is_record(key) {
        return Err(wrong_key_type(f, key, false));
    }
    f.token.keys.open(key)
}

pub(super) fn ciphertext_len(
    f: &ForwardSession,
    mechanism: &Mechanism,
    key: CK_OBJECT_HANDLE,
) -> Result<usize> {
    crate::mechanism::kem::ciphertext_len(mechanism, &*kem_record(f, key)?)
}

pub(super) fn encapsulate(
    f: &ForwardSession,
    mechanism: &Mechanism,
    key: CK_OBJECT_HANDLE,
    template: Attributes,
) -> Result<(Vec<u8>, CK_OBJECT_HANDLE)> {
    let caller = template.clone();
    let (ciphertext, made) =
        crate::mechanism::kem::encapsulate(mechanism, &*kem_record(f, key)?, template)?;
    Ok((ciphertext, place_secret(f, caller, &made)?))
}

pub(super) fn decapsulate(
    f: &ForwardSession,
    mechanism: &Mechanism,
    key: CK_OBJECT_HANDLE,
    template: Attributes,
    ciphertext: &[u8],
) -> Result<CK_OBJECT_HANDLE> {
    let caller = template.clone();
    let made =
        crate::mechanism::kem::decapsulate(mechanism, &*kem_record(f, key)?, template, ciphertext)?;
    place_secret(f, caller, &made)
}

/// Creates the shared-secret key inside the HSM: the caller's template with the class, key
/// type, value and protection the module worked out (so the HSM's own defaults, which may
/// leave a created key readable, do not apply).
fn place_secret(
    f: &ForwardSession,
    mut caller: Attributes,
    made: &Attributes,
) -> Result<CK_OBJECT_HANDLE> {
    for attr in [
        CKA_CLASS,
        CKA_KEY_TYPE,
        CKA_VALUE,
        CKA_PRIVATE,
        CKA_SENSITIVE,
        CKA_EXTRACTABLE,
    ] {
        caller.set(attr, made.get(attr).ok_or(Error::GENERAL)?.to_vec());
    }
    caller.remove(CKA_VALUE_LEN);
    if caller.bool_or(CKA_TOKEN, false) && !f.rw {
        return Err(Error::SESSION_READ_ONLY);
    }
    f.token.lib.create(f.real, &caller)
}

/// `CKA_B4AE_CUSTODY` of an object the HSM holds: 1 for a post-quantum private key it holds
/// natively; other objects do not have the attribute.
fn native_custody(
    f: &ForwardSession,
    object: CK_OBJECT_HANDLE,
    requested: &mut [CK_ATTRIBUTE],
    result: Result<()>,
) -> Result<()> {
    let custody = crate::consts::CKA_B4AE_CUSTODY;
    if !requested.iter().any(|a| a.type_ == custody) {
        return result;
    }
    let ulong = |t| -> Result<Option<CK_ULONG>> {
        let v = f.token.lib.attribute(f.real, object, t)?;
        Ok(v.and_then(|v| v.try_into().ok())
            .map(CK_ULONG::from_ne_bytes))
    };
    let post_quantum = ulong(CKA_CLASS)? == Some(CKO_PRIVATE_KEY)
        && matches!(ulong(CKA_KEY_TYPE)?, Some(CKK_ML_DSA | CKK_ML_KEM));
    if !post_quantum {
        return result;
    }
    let value = crate::consts::B4AE_CUSTODY_HSM_NATIVE.to_ne_bytes();
    let mut too_small = false;
    for a in requested.iter_mut().filter(|a| a.type_ == custody) {
        if a.pValue.is_null() {
            a.ulValueLen = value.len() as CK_ULONG;
        } else if (a.ulValueLen as usize) < value.len() {
            a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
            too_small = true;
        } else {
            // SAFETY: the caller's value buffer, writable for ulValueLen >= value.len() bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(value.as_ptr(), a.pValue as *mut u8, value.len())
            };
            a.ulValueLen = value.len() as CK_ULONG;
        }
    }
    let others_failed = requested
        .iter()
        .any(|a| a.type_ != custody && a.ulValueLen == CK_UNAVAILABLE_INFORMATION);
    match result {
        Err(Error(CKR_ATTRIBUTE_TYPE_INVALID)) if !others_failed && !too_small => Ok(()),
        _ if too_small => Err(Error::BUFFER_TOO_SMALL),
        other => other,
    }
}

/// PKCS#11 names a bad key argument `CKR_KEY_HANDLE_INVALID`; some libraries (SoftHSM2, for an
/// object that vanished) say `CKR_OBJECT_HANDLE_INVALID`.
fn key_handle(result: Result<()>) -> Result<()> {
    result.map_err(|e| match e {
        Error(CKR_OBJECT_HANDLE_INVALID) => Error::KEY_HANDLE_INVALID,
        e => e,
    })
}

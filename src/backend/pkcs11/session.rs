//! A session of a pkcs11 slot: one real session in the HSM. Calls on the HSM's own objects
//! and mechanisms go to it; post-quantum keys it cannot hold natively are this module's sealed
//! records, and operations with them run here. Which of the two performs an operation is
//! recorded in the session's [`Operations`], the one owner of that.

use super::{ed25519, keystore, ForwardToken};
use crate::backend::{BackendSession, Dual, Recover};
use crate::consts::{
    B4AE_CUSTODY_HSM_NATIVE, B4AE_CUSTODY_HSM_WRAPPED, CKA_B4AE_CUSTODY, CKK_B4AE_HYBRID,
    CKM_B4AE_HYBRID, CKM_B4AE_HYBRID_KEY_PAIR_GEN,
};
use crate::error::{Error, Result};
use crate::mechanism::{self, hybrid, kem, signing, Mechanism};
use crate::token::attributes::Attributes;
use crate::token::factory;
use crate::token::io::{answer_attributes, AttributeRequest, Output, Step};
use crate::token::object::Object;
use crate::token::operations::{OpKind, Operations, Performer};
use cryptoki_sys::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use zeroize::Zeroizing;

/// A session of a forwarded slot: ours, backed by one real session.
pub struct ForwardSession {
    pub handle: CK_SESSION_HANDLE,
    pub real: CK_SESSION_HANDLE,
    pub token: Arc<ForwardToken>,
    pub rw: bool,
    /// Every active operation: those this module performs and those the HSM performs.
    pub ops: Operations,
}

impl ForwardSession {
    pub fn new(
        handle: CK_SESSION_HANDLE,
        real: CK_SESSION_HANDLE,
        token: Arc<ForwardToken>,
        rw: bool,
    ) -> Self {
        token.sessions.fetch_add(1, Ordering::SeqCst);
        ForwardSession {
            handle,
            real,
            token,
            rw,
            ops: Operations::default(),
        }
    }

    fn lib(&self) -> &super::library::HsmLibrary {
        &self.token.lib
    }

    /// Refuses a storage key's handle with `refusal`, as if it named no object.
    fn guard(&self, object: CK_OBJECT_HANDLE, refusal: Error) -> Result<()> {
        self.token.not_a_storage_key(self.real, object, refusal)
    }

    /// The record behind a handle when it is one this module presents; an error for a record
    /// it does not (never opened by the HSM: someone else wrote it); `None` for the HSM's own.
    fn record(&self, object: CK_OBJECT_HANDLE) -> Result<Option<keystore::Indexed>> {
        match self.token.keys.indexed(object) {
            Some(entry) => Ok(Some(entry)),
            None if self.token.keys.is_record(object) => Err(Error::OBJECT_HANDLE_INVALID),
            None => Ok(None),
        }
    }

    /// Starts an operation on one of the HSM's own keys, in the HSM.
    fn begin_in_hsm(
        &self,
        kind: OpKind,
        mechanism: &Mechanism,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        self.guard(key, Error::KEY_HANDLE_INVALID)?;
        if self.token.ours(mechanism.mechanism).is_some() {
            return Err(self.wrong_key_type(key, false));
        }
        self.ops.begin_in_hsm(kind, || {
            key_handle(
                self.token
                    .check_key_type(self.real, mechanism.mechanism, key)
                    .and_then(|()| self.lib().init(self.real, kind, mechanism, key)),
            )
        })
    }

    /// The answer for a key the mechanism cannot use: a post-quantum mechanism of this module
    /// given one of the HSM's own keys, or a classical mechanism given a key record.
    fn wrong_key_type(&self, key: CK_OBJECT_HANDLE, record: bool) -> Error {
        if let Err(e) = self.guard(key, Error::KEY_HANDLE_INVALID) {
            return e;
        }
        if !record {
            // The HSM knows whether the handle names a key at all.
            if let Err(e) = self.lib().attribute(self.real, key, CKA_CLASS) {
                return key_handle::<()>(Err(e))
                    .err()
                    .unwrap_or(Error::KEY_HANDLE_INVALID);
            }
        }
        Error::KEY_TYPE_INCONSISTENT
    }

    /// Checks that a mechanism can use a key record (only this module's mechanisms can).
    fn record_mechanism(&self, mechanism: &Mechanism, key: CK_OBJECT_HANDLE) -> Result<()> {
        if self.token.ours(mechanism.mechanism).is_some() {
            return Ok(());
        }
        let known =
            self.token.native(mechanism.mechanism) || mechanism::classical(mechanism.mechanism);
        Err(if known {
            self.wrong_key_type(key, true)
        } else {
            Error::MECHANISM_INVALID
        })
    }

    fn sign_init(&self, mechanism: &Mechanism, key: CK_OBJECT_HANDLE) -> Result<()> {
        if !self.token.keys.is_record(key) {
            return self.begin_in_hsm(OpKind::Sign, mechanism, key);
        }
        self.record_mechanism(mechanism, key)?;
        self.ops.sign_init(|| {
            let object = self.token.keys.open(key)?;
            let in_hsm = match object.attrs.get(ed25519::HSM_KEY_LABEL) {
                Some(label) if mechanism.mechanism == CKM_B4AE_HYBRID => {
                    let signer = ed25519::HsmEd25519 {
                        lib: self.token.lib.clone(),
                        session: self.real,
                        key: self.token.ed25519_key(self.real, label)?,
                    };
                    Some(Arc::new(signer) as Arc<dyn hybrid::Ed25519Signer>)
                }
                _ => None,
            };
            signing::sign_init_with(mechanism, &object, in_hsm)
        })
    }

    fn verify_init(&self, mechanism: &Mechanism, key: CK_OBJECT_HANDLE) -> Result<()> {
        let entry = self.record(key).map_err(|_| Error::KEY_HANDLE_INVALID)?;
        let Some(entry) = entry else {
            return self.begin_in_hsm(OpKind::Verify, mechanism, key);
        };
        self.record_mechanism(mechanism, key)?;
        self.ops
            .verify_init(|| signing::verify_init(mechanism, &entry.object))
    }

    /// A hybrid pair whose Ed25519 half the HSM generates and keeps; the record holds the
    /// ML-DSA-87 half and the label of the HSM's key.
    fn hybrid_with_hsm_ed25519(
        &self,
        public: Attributes,
        private: Attributes,
    ) -> Result<(Attributes, Attributes)> {
        refuse_extractable_hybrid(&private)?;
        let token = private.bool_or(CKA_TOKEN, false);
        if token && !self.rw {
            return Err(Error::SESSION_READ_ONLY);
        }
        let (ml_public, ml_private) = hybrid::mldsa_keypair()?;
        let (label, ed_public) = ed25519::generate(self.lib(), self.real, token)?;
        let value = [&ed_public[..], &ml_public].concat();
        match factory::hybrid_pair(public, private, value, ml_private.to_vec()) {
            Ok((public, mut private)) => {
                private.set(ed25519::HSM_KEY_LABEL, label);
                Ok((public, private))
            }
            Err(e) => {
                let _ = ed25519::destroy(self.lib(), self.real, &label);
                Err(e)
            }
        }
    }

    /// Whether `key` is one of the HSM's own and the HSM encapsulates (its 3.2 interface).
    fn kem_in_hsm(&self, key: CK_OBJECT_HANDLE) -> bool {
        !self.token.keys.is_record(key) && self.token.native(CKM_ML_KEM)
    }

    /// The ML-KEM key record behind `key`.
    fn kem_record(&self, key: CK_OBJECT_HANDLE) -> Result<Arc<Object>> {
        if !self.token.keys.is_record(key) {
            return Err(self.wrong_key_type(key, false));
        }
        self.token.keys.open(key)
    }

    /// Creates the shared-secret key inside the HSM: the caller's template with the class,
    /// key type, value and protection the module worked out (so the HSM's own defaults, which
    /// may leave a created key readable, do not apply).
    fn place_secret(&self, mut caller: Attributes, made: &Attributes) -> Result<CK_OBJECT_HANDLE> {
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
        if caller.bool_or(CKA_TOKEN, false) && !self.rw {
            return Err(Error::SESSION_READ_ONLY);
        }
        self.lib().create(self.real, &caller)
    }

    /// `CKA_B4AE_CUSTODY` of an object the HSM holds: 1 for a post-quantum private key it
    /// holds natively; other objects do not have the attribute.
    fn native_custody(
        &self,
        object: CK_OBJECT_HANDLE,
        requests: &mut [AttributeRequest],
        result: Result<()>,
    ) -> Result<()> {
        if !requests.iter().any(|a| a.type_ == CKA_B4AE_CUSTODY) {
            return result;
        }
        let ulong = |t| -> Result<Option<CK_ULONG>> {
            let v = self.lib().attribute(self.real, object, t)?;
            Ok(v.and_then(|v| v.try_into().ok())
                .map(CK_ULONG::from_ne_bytes))
        };
        let post_quantum = ulong(CKA_CLASS)? == Some(CKO_PRIVATE_KEY)
            && matches!(
                ulong(CKA_KEY_TYPE)?,
                Some(CKK_ML_DSA | CKK_ML_KEM | CKK_SLH_DSA)
            );
        if !post_quantum {
            return result;
        }
        let value = B4AE_CUSTODY_HSM_NATIVE.to_ne_bytes();
        let mut too_small = false;
        for a in requests.iter_mut().filter(|a| a.type_ == CKA_B4AE_CUSTODY) {
            too_small |= a.answer_with(&value).is_err();
        }
        let others_failed = requests
            .iter()
            .any(|a| a.type_ != CKA_B4AE_CUSTODY && a.answer == CK_UNAVAILABLE_INFORMATION);
        match result {
            Err(Error(CKR_ATTRIBUTE_TYPE_INVALID)) if !others_failed && !too_small => Ok(()),
            _ if too_small => Err(Error::BUFFER_TOO_SMALL),
            other => other,
        }
    }
}

impl BackendSession for ForwardSession {
    fn slot_id(&self) -> CK_SLOT_ID {
        self.token.slot_id
    }

    fn ops(&self) -> &Operations {
        &self.ops
    }

    // The real session closes when the last call using it returns (see `Drop`).
    fn closed(&self) {}

    fn info(&self) -> Result<CK_SESSION_INFO> {
        let mut real = self.lib().session_info(self.real)?;
        real.slotID = self.token.slot_id;
        Ok(real)
    }

    fn login(&self, user: CK_USER_TYPE, pin: &[u8]) -> Result<()> {
        self.login_named(user, pin, b"")
    }

    fn login_named(&self, user: CK_USER_TYPE, pin: &[u8], username: &[u8]) -> Result<()> {
        let identity = self.token.identity()?;
        let checked = || {
            self.lib()
                .login_user(self.real, user, pin, username)
                .inspect_err(|e| {
                    if *e == Error::PIN_INCORRECT || *e == Error::PIN_LOCKED {
                        tracing::info!("slot {}: the HSM refused the PIN: {e}", self.token.slot_id);
                    }
                })
        };
        // A context-specific login is a check of the user's PIN too.
        self.token.pins.attempt(&identity, user, checked)?;
        self.token.keys.forget_verdicts();
        if user == CKU_USER {
            // Finish a storage-key rotation or migration a crash interrupted; this also reads
            // the records.
            if let Err(e) = self.token.keys.rotate(false) {
                tracing::warn!(
                    "slot {}: post-quantum key records unavailable: {e}",
                    self.token.slot_id
                );
            }
        }
        Ok(())
    }

    fn logout(&self) -> Result<()> {
        self.lib().logout(self.real)?;
        self.token.keys.forget_secrets();
        Ok(())
    }

    fn init_pin(&self, pin: &[u8]) -> Result<()> {
        self.lib().init_pin(self.real, pin)?;
        self.token.pins.reset_user(&self.token.identity()?)
    }

    fn set_pin(&self, old: &[u8], new: &[u8]) -> Result<()> {
        let state = self.lib().session_info(self.real)?.state;
        let user = if state == CKS_RW_SO_FUNCTIONS {
            CKU_SO
        } else {
            CKU_USER
        };
        let identity = self.token.identity()?;
        self.token
            .pins
            .attempt(&identity, user, || self.lib().set_pin(self.real, old, new))
    }

    fn operation_state(&self, out: Output) -> Result<()> {
        self.lib().operation_state(self.real, out)
    }

    fn set_operation_state(
        &self,
        state: &[u8],
        encryption_key: CK_OBJECT_HANDLE,
        authentication_key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        for key in [encryption_key, authentication_key] {
            self.guard(key, Error::KEY_HANDLE_INVALID)?;
        }
        self.lib()
            .set_operation_state(self.real, state, encryption_key, authentication_key)
    }

    fn create_object(&self, template: Attributes) -> Result<CK_OBJECT_HANDLE> {
        if !self
            .token
            .holds_as_records(template.ulong(CKA_KEY_TYPE).ok().flatten())
        {
            return self.lib().create(self.real, &template);
        }
        let mut made = factory::create(template)?;
        let hybrid_private = made.ulong(CKA_CLASS)? == Some(CKO_PRIVATE_KEY)
            && made.ulong(CKA_KEY_TYPE)? == Some(CKK_B4AE_HYBRID);
        if hybrid_private && self.token.hsm_ed25519() {
            refuse_extractable_hybrid(&made)?;
            let value = Zeroizing::new(made.get(CKA_VALUE).ok_or(Error::GENERAL)?.to_vec());
            let (seed, ml_private) = value.split_at(hybrid::ED25519_SEED_LEN);
            let token = made.bool_or(CKA_TOKEN, false);
            let label = ed25519::import(self.lib(), self.real, token, seed)?;
            made.set(CKA_VALUE, ml_private.to_vec());
            made.set(ed25519::HSM_KEY_LABEL, label);
        }
        made.set_ulong(CKA_B4AE_CUSTODY, B4AE_CUSTODY_HSM_WRAPPED);
        self.token.keys.store_one(self.real, made)
    }

    fn copy_object(
        &self,
        object: CK_OBJECT_HANDLE,
        template: Attributes,
    ) -> Result<CK_OBJECT_HANDLE> {
        if self.record(object)?.is_some() {
            // A copy would be a second sealed record of one key; import the key again instead.
            return Err(Error::ACTION_PROHIBITED);
        }
        self.guard(object, Error::OBJECT_HANDLE_INVALID)?;
        self.lib().copy_object(self.real, object, &template)
    }

    fn destroy_object(&self, object: CK_OBJECT_HANDLE) -> Result<()> {
        let entry = self.record(object)?;
        if entry.is_some() && !self.token.keys.confirmed_now(self.real, object) {
            // The handle no longer names that record (the HSM renumbered its objects).
            return Err(Error::OBJECT_HANDLE_INVALID);
        }
        let label = entry.and_then(|e| {
            e.object
                .attrs
                .get(ed25519::HSM_KEY_LABEL)
                .map(<[u8]>::to_vec)
        });
        self.guard(object, Error::OBJECT_HANDLE_INVALID)?;
        self.lib().destroy(self.real, object)?;
        self.token.forget_key_type(object);
        self.token.keys.removed(object);
        if let Some(label) = label {
            // The hybrid key is gone; so is its Ed25519 half.
            self.token.keys.ed25519_removed(&label);
            if let Err(e) = ed25519::destroy(self.lib(), self.real, &label) {
                tracing::warn!("a destroyed hybrid key's Ed25519 half stays in the HSM: {e:?}");
            }
        }
        Ok(())
    }

    fn object_size(&self, object: CK_OBJECT_HANDLE) -> Result<CK_ULONG> {
        self.record(object)?;
        self.guard(object, Error::OBJECT_HANDLE_INVALID)?;
        self.lib().object_size(self.real, object)
    }

    fn get_attributes(
        &self,
        object: CK_OBJECT_HANDLE,
        requests: &mut [AttributeRequest],
    ) -> Result<()> {
        let Some(entry) = self.record(object)? else {
            self.guard(object, Error::OBJECT_HANDLE_INVALID)?;
            let result = self.lib().get_attributes(self.real, object, requests);
            return self.native_custody(object, requests, result);
        };
        let wants_secret = requests
            .iter()
            .any(|a| entry.object.is_secret_attribute(a.type_));
        let object = if wants_secret {
            self.token.keys.open(object)?
        } else {
            entry.object
        };
        answer_attributes(&object, requests)
    }

    fn set_attributes(&self, object: CK_OBJECT_HANDLE, template: Attributes) -> Result<()> {
        if self.record(object)?.is_none() {
            self.guard(object, Error::OBJECT_HANDLE_INVALID)?;
            return self.lib().set_attributes(self.real, object, &template);
        }
        if !self.token.keys.confirmed_now(self.real, object) {
            return Err(Error::OBJECT_HANDLE_INVALID);
        }
        let current = self.token.keys.open(object)?;
        let changed = factory::modify(&current, template)?;
        self.token.keys.rewrite(self.real, object, changed)
    }

    fn find_init(&self, template: Attributes) -> Result<()> {
        self.ops.find_init(|| self.token.find(self.real, &template))
    }

    fn init(
        &self,
        kind: OpKind,
        mechanism: &Mechanism,
        key: Option<CK_OBJECT_HANDLE>,
    ) -> Result<()> {
        let key = key.unwrap_or(CK_INVALID_HANDLE);
        match kind {
            OpKind::Digest => self
                .ops
                .begin_in_hsm(kind, || self.lib().init(self.real, kind, mechanism, key)),
            OpKind::Sign => self.sign_init(mechanism, key),
            OpKind::Verify => self.verify_init(mechanism, key),
            OpKind::Encrypt | OpKind::Decrypt => {
                if self
                    .record(key)
                    .map_err(|_| Error::KEY_HANDLE_INVALID)?
                    .is_some()
                {
                    // A post-quantum key record neither encrypts nor decrypts.
                    return Err(Error::KEY_TYPE_INCONSISTENT);
                }
                self.guard(key, Error::KEY_HANDLE_INVALID)?;
                self.ops
                    .begin_in_hsm(kind, || self.lib().init(self.real, kind, mechanism, key))
            }
        }
    }

    fn cancel(&self, kind: OpKind) {
        if self.ops.cancel(kind) == Performer::Hsm {
            self.lib().end_operation(self.real, kind);
        }
    }

    fn step(&self, kind: OpKind, step: Step) -> Result<()> {
        if self.ops.performer(kind) == Performer::Here {
            return self.ops.perform(kind, step);
        }
        let continues = step.continues();
        self.ops
            .step_in_hsm(kind, continues, || self.lib().step(self.real, kind, step))
    }

    fn generate_key(
        &self,
        mechanism: &Mechanism,
        template: Attributes,
    ) -> Result<CK_OBJECT_HANDLE> {
        self.lib().generate_key(self.real, mechanism, &template)
    }

    fn generate_key_pair(
        &self,
        mechanism: &Mechanism,
        public: Attributes,
        private: Attributes,
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        if self.token.ours(mechanism.mechanism).is_none() {
            return self
                .lib()
                .generate_key_pair(self.real, mechanism, &public, &private);
        }
        let hybrid_in_hsm =
            mechanism.mechanism == CKM_B4AE_HYBRID_KEY_PAIR_GEN && self.token.hsm_ed25519();
        let (public, private) = if hybrid_in_hsm {
            mechanism.expect_no_param()?;
            self.hybrid_with_hsm_ed25519(public, private)?
        } else {
            factory::generate_pair(mechanism, public, private)?
        };
        if (public.bool_or(CKA_TOKEN, false) || private.bool_or(CKA_TOKEN, false)) && !self.rw {
            return Err(Error::SESSION_READ_ONLY);
        }
        let label = private.get(ed25519::HSM_KEY_LABEL).map(<[u8]>::to_vec);
        self.token
            .keys
            .store_pair(self.real, public, private)
            .inspect_err(|_| {
                if let Some(label) = label {
                    let _ = ed25519::destroy(self.lib(), self.real, &label);
                }
            })
    }

    fn seed_random(&self, seed: &[u8]) -> Result<()> {
        self.lib().seed_random(self.real, seed)
    }

    fn generate_random(&self, out: &mut [u8]) -> Result<()> {
        self.lib().generate_random(self.real, out)
    }

    fn ciphertext_len(&self, mechanism: &Mechanism, key: CK_OBJECT_HANDLE) -> Result<usize> {
        if self.kem_in_hsm(key) {
            self.guard(key, Error::KEY_HANDLE_INVALID)?;
            let set = key_handle(self.lib().attribute(self.real, key, CKA_PARAMETER_SET))?
                .and_then(|v| v.try_into().ok())
                .map(CK_ULONG::from_ne_bytes)
                .ok_or(Error::KEY_TYPE_INCONSISTENT)?;
            return Ok(mechanism::mlkem::ParamSet::from_ck(set)?.ciphertext_len());
        }
        kem::ciphertext_len(mechanism, &*self.kem_record(key)?)
    }

    fn encapsulate(
        &self,
        mechanism: &Mechanism,
        key: CK_OBJECT_HANDLE,
        template: Attributes,
    ) -> Result<(Vec<u8>, CK_OBJECT_HANDLE)> {
        if self.kem_in_hsm(key) {
            self.guard(key, Error::KEY_HANDLE_INVALID)?;
            return key_handle(self.lib().encapsulate(self.real, mechanism, key, &template));
        }
        let caller = template.clone();
        let (ciphertext, made) = kem::encapsulate(mechanism, &*self.kem_record(key)?, template)?;
        Ok((ciphertext, self.place_secret(caller, &made)?))
    }

    fn decapsulate(
        &self,
        mechanism: &Mechanism,
        key: CK_OBJECT_HANDLE,
        template: Attributes,
        ciphertext: &[u8],
    ) -> Result<CK_OBJECT_HANDLE> {
        if self.kem_in_hsm(key) {
            self.guard(key, Error::KEY_HANDLE_INVALID)?;
            return key_handle(
                self.lib()
                    .decapsulate(self.real, mechanism, key, &template, ciphertext),
            );
        }
        let caller = template.clone();
        let made = kem::decapsulate(mechanism, &*self.kem_record(key)?, template, ciphertext)?;
        self.place_secret(caller, &made)
    }

    fn digest_key(&self, key: CK_OBJECT_HANDLE) -> Result<()> {
        self.guard(key, Error::KEY_HANDLE_INVALID)?;
        self.lib().digest_key(self.real, key)
    }

    fn wrap_key(
        &self,
        mechanism: &Mechanism,
        wrapping: CK_OBJECT_HANDLE,
        key: CK_OBJECT_HANDLE,
        out: Output,
    ) -> Result<()> {
        if self.token.keys.is_record(key) {
            // A sealed record is not the HSM's key: it cannot wrap it.
            return Err(Error(CKR_KEY_NOT_WRAPPABLE));
        }
        self.guard(wrapping, Error(CKR_WRAPPING_KEY_HANDLE_INVALID))?;
        self.guard(key, Error::KEY_HANDLE_INVALID)?;
        self.lib()
            .wrap_key(self.real, mechanism, wrapping, key, out)
    }

    fn unwrap_key(
        &self,
        mechanism: &Mechanism,
        unwrapping: CK_OBJECT_HANDLE,
        wrapped: &[u8],
        template: Attributes,
    ) -> Result<CK_OBJECT_HANDLE> {
        self.guard(unwrapping, Error(CKR_UNWRAPPING_KEY_HANDLE_INVALID))?;
        self.lib()
            .unwrap_key(self.real, mechanism, unwrapping, wrapped, &template)
    }

    fn derive_key(
        &self,
        mechanism: &Mechanism,
        base: CK_OBJECT_HANDLE,
        template: Attributes,
    ) -> Result<CK_OBJECT_HANDLE> {
        self.guard(base, Error::KEY_HANDLE_INVALID)?;
        self.lib().derive_key(self.real, mechanism, base, &template)
    }

    fn recover_init(
        &self,
        recover: Recover,
        mechanism: &Mechanism,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        self.guard(key, Error::KEY_HANDLE_INVALID)?;
        self.lib().recover_init(self.real, recover, mechanism, key)
    }

    fn recover(&self, recover: Recover, data: &[u8], out: Output) -> Result<()> {
        self.lib().recover(self.real, recover, data, out)
    }

    /// Both operations must be the HSM's; an error ends both.
    fn dual_update(&self, dual: Dual, data: &[u8], out: Output) -> Result<()> {
        let kinds = dual.kinds();
        if kinds
            .iter()
            .any(|k| self.ops.performer(*k) != Performer::Hsm)
        {
            return Err(Error::OPERATION_NOT_INITIALIZED);
        }
        let result = self.lib().dual_update(self.real, dual, data, out);
        if matches!(result, Err(e) if e != Error::BUFFER_TOO_SMALL) {
            // The HSM ended both operations.
            for kind in kinds {
                self.ops.cancel(kind);
            }
        }
        result
    }
}

impl Drop for ForwardSession {
    /// The application closed the session (or finalized the module) and no call is using it
    /// any more: only now is the real session closed, never under a running call.
    fn drop(&mut self) {
        let _ = self.token.lib.close_session(self.real);
        if self.token.sessions.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.token.all_sessions_closed();
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

/// PKCS#11 names a bad key argument `CKR_KEY_HANDLE_INVALID`; some libraries (SoftHSM2, for
/// an object that vanished) say `CKR_OBJECT_HANDLE_INVALID`.
fn key_handle<T>(result: Result<T>) -> Result<T> {
    result.map_err(|e| match e {
        Error(CKR_OBJECT_HANDLE_INVALID) => Error::KEY_HANDLE_INVALID,
        e => e,
    })
}

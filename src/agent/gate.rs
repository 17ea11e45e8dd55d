//! A token the agent serves from an HSM (custody 2 behind the agent). The HSM is logged in
//! once, by the agent, with the credential only the agent's user can read; clients never see
//! it. What a client logs in to is the token's own PINs, kept in a small embedded store of
//! their own (the *gate*: policy, lockout and SO role as on any token of this module, SPEC §4),
//! one instance per client so each application's login is its own. Until a client has logged
//! in as the user, its sessions see no private object and change nothing on the token.

use crate::backend::{Backend, BackendSession, SlotInfo};
use crate::error::{Error, Result};
use crate::mechanism::Mechanism;
use crate::token::attributes::{decode_bool, Attributes};
use crate::token::io::{AttributeRequest, Output, Step};
use crate::token::operations::{OpKind, Operations};
use cryptoki_sys::*;
use std::sync::Arc;

/// The slot a client sees: its own gate in front of the token the agent shares.
pub struct GatedSlot {
    pub gate: Arc<dyn Backend>,
    pub inner: Arc<dyn Backend>,
}

pub struct GatedSession {
    gate: Arc<dyn BackendSession>,
    inner: Arc<dyn BackendSession>,
}

impl Backend for GatedSlot {
    fn slot_id(&self) -> CK_SLOT_ID {
        self.inner.slot_id()
    }

    fn slot_info(&self) -> Result<SlotInfo> {
        self.inner.slot_info()
    }

    /// The gate's label, serial, PIN state and counts; the HSM's memory figures are not
    /// this token's business.
    fn token_info(&self) -> Result<CK_TOKEN_INFO> {
        let mut info = self.gate.token_info()?;
        info.flags |= self.inner.token_info()?.flags & CKF_RNG;
        Ok(info)
    }

    fn mechanisms(&self) -> Result<Vec<CK_MECHANISM_TYPE>> {
        self.inner.mechanisms()
    }

    fn mechanism_info(&self, mechanism: CK_MECHANISM_TYPE) -> Result<CK_MECHANISM_INFO> {
        self.inner.mechanism_info(mechanism)
    }

    /// Sets the token's PINs. Re-initializing an initialized token erases its objects, as
    /// `C_InitToken` does, once the SO PIN is proven.
    fn init_token(&self, so_pin: &[u8], label: &[u8; 32]) -> Result<()> {
        let initialized = self.gate.token_info()?.flags & CKF_TOKEN_INITIALIZED != 0;
        self.gate.init_token(so_pin, label)?;
        if initialized {
            let session = self
                .inner
                .open_session(0, CKF_SERIAL_SESSION | CKF_RW_SESSION)?;
            session.find_init(Attributes::new())?;
            let all = session.ops().find_next(usize::MAX);
            let _ = session.ops().find_final();
            for object in all? {
                let _ = session.destroy_object(object);
            }
            session.closed();
        }
        Ok(())
    }

    fn open_session(
        &self,
        handle: CK_SESSION_HANDLE,
        flags: CK_FLAGS,
    ) -> Result<Arc<dyn BackendSession>> {
        let gate = self.gate.open_session(handle, flags)?;
        let inner = match self.inner.open_session(handle, flags) {
            Ok(inner) => inner,
            Err(e) => {
                gate.closed();
                return Err(e);
            }
        };
        Ok(Arc::new(GatedSession { gate, inner }))
    }

    fn forget_secrets(&self) {
        self.gate.forget_secrets();
        self.inner.forget_secrets();
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl GatedSession {
    /// Whether this client is logged in as the token's user.
    fn user(&self) -> bool {
        self.gate
            .info()
            .is_ok_and(|i| i.state == CKS_RO_USER_FUNCTIONS || i.state == CKS_RW_USER_FUNCTIONS)
    }

    fn private(&self, object: CK_OBJECT_HANDLE) -> Result<bool> {
        let mut value = [0u8; 1];
        let mut request = [AttributeRequest::new(CKA_PRIVATE, Some(&mut value[..]), 1)];
        self.inner.get_attributes(object, &mut request)?;
        decode_bool(&value)
    }

    /// An object this client may use: public ones always, private ones once logged in.
    fn visible(&self, object: CK_OBJECT_HANDLE, invalid: Error) -> Result<()> {
        if self.user() || !self.private(object).map_err(|_| invalid)? {
            Ok(())
        } else {
            Err(invalid)
        }
    }

    fn logged_in(&self) -> Result<()> {
        if self.user() {
            Ok(())
        } else {
            Err(Error::USER_NOT_LOGGED_IN)
        }
    }
}

impl BackendSession for GatedSession {
    fn slot_id(&self) -> CK_SLOT_ID {
        self.inner.slot_id()
    }

    fn ops(&self) -> &Operations {
        self.inner.ops()
    }

    fn closed(&self) {
        self.inner.closed();
        self.gate.closed();
    }

    fn info(&self) -> Result<CK_SESSION_INFO> {
        let mut info = self.gate.info()?;
        info.slotID = self.inner.slot_id();
        Ok(info)
    }

    fn login(&self, user: CK_USER_TYPE, pin: &[u8]) -> Result<()> {
        self.gate.login(user, pin)
    }

    fn logout(&self) -> Result<()> {
        self.gate.logout()
    }

    fn init_pin(&self, pin: &[u8]) -> Result<()> {
        self.gate.init_pin(pin)
    }

    fn set_pin(&self, old: &[u8], new: &[u8]) -> Result<()> {
        self.gate.set_pin(old, new)
    }

    fn create_object(&self, template: Attributes) -> Result<CK_OBJECT_HANDLE> {
        self.logged_in()?;
        self.inner.create_object(template)
    }

    fn copy_object(
        &self,
        object: CK_OBJECT_HANDLE,
        template: Attributes,
    ) -> Result<CK_OBJECT_HANDLE> {
        self.logged_in()?;
        self.inner.copy_object(object, template)
    }

    fn destroy_object(&self, object: CK_OBJECT_HANDLE) -> Result<()> {
        self.logged_in()?;
        self.inner.destroy_object(object)
    }

    fn object_size(&self, object: CK_OBJECT_HANDLE) -> Result<CK_ULONG> {
        self.visible(object, Error::OBJECT_HANDLE_INVALID)?;
        self.inner.object_size(object)
    }

    fn get_attributes(
        &self,
        object: CK_OBJECT_HANDLE,
        requests: &mut [AttributeRequest],
    ) -> Result<()> {
        self.visible(object, Error::OBJECT_HANDLE_INVALID)?;
        self.inner.get_attributes(object, requests)
    }

    fn set_attributes(&self, object: CK_OBJECT_HANDLE, template: Attributes) -> Result<()> {
        self.logged_in()?;
        self.inner.set_attributes(object, template)
    }

    fn find_init(&self, template: Attributes) -> Result<()> {
        if self.user() {
            return self.inner.find_init(template);
        }
        // The search runs in the HSM's session; its public results are what this client gets
        // (none when it asks for private objects).
        if template.bool_or(CKA_PRIVATE, false) {
            return self.inner.ops().find_init(|| Ok(Vec::new()));
        }
        let mut public = template;
        public.set_bool(CKA_PRIVATE, false);
        self.inner.find_init(public)
    }

    fn init(
        &self,
        kind: OpKind,
        mechanism: &Mechanism,
        key: Option<CK_OBJECT_HANDLE>,
    ) -> Result<()> {
        if let Some(key) = key {
            self.visible(key, Error::KEY_HANDLE_INVALID)?;
        }
        self.inner.init(kind, mechanism, key)
    }

    fn cancel(&self, kind: OpKind) {
        self.inner.cancel(kind)
    }

    fn step(&self, kind: OpKind, step: Step) -> Result<()> {
        self.inner.step(kind, step)
    }

    fn generate_key(
        &self,
        mechanism: &Mechanism,
        template: Attributes,
    ) -> Result<CK_OBJECT_HANDLE> {
        self.logged_in()?;
        self.inner.generate_key(mechanism, template)
    }

    fn generate_key_pair(
        &self,
        mechanism: &Mechanism,
        public: Attributes,
        private: Attributes,
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        self.logged_in()?;
        self.inner.generate_key_pair(mechanism, public, private)
    }

    fn seed_random(&self, seed: &[u8]) -> Result<()> {
        self.inner.seed_random(seed)
    }

    fn generate_random(&self, out: &mut [u8]) -> Result<()> {
        self.inner.generate_random(out)
    }

    fn ciphertext_len(&self, mechanism: &Mechanism, key: CK_OBJECT_HANDLE) -> Result<usize> {
        self.visible(key, Error::KEY_HANDLE_INVALID)?;
        self.inner.ciphertext_len(mechanism, key)
    }

    fn encapsulate(
        &self,
        mechanism: &Mechanism,
        key: CK_OBJECT_HANDLE,
        template: Attributes,
    ) -> Result<(Vec<u8>, CK_OBJECT_HANDLE)> {
        self.logged_in()?;
        self.inner.encapsulate(mechanism, key, template)
    }

    fn decapsulate(
        &self,
        mechanism: &Mechanism,
        key: CK_OBJECT_HANDLE,
        template: Attributes,
        ciphertext: &[u8],
    ) -> Result<CK_OBJECT_HANDLE> {
        self.logged_in()?;
        self.inner.decapsulate(mechanism, key, template, ciphertext)
    }

    fn operation_state(&self, out: Output) -> Result<()> {
        self.inner.operation_state(out)
    }
}

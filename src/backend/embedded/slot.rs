//! The embedded token behind the backend interface: a [`Token`] on an [`EmbeddedStore`], whose
//! sessions perform every operation in this process.
//!
//! [`EmbeddedStore`]: super::EmbeddedStore

use crate::backend::{Backend, BackendSession, SlotInfo};
use crate::error::{Error, Result};
use crate::mechanism::{self, Mechanism};
use crate::token::attributes::Attributes;
use crate::token::info::{library_version, padded};
use crate::token::io::{answer_attributes, AttributeRequest, Step};
use crate::token::operations::{Direction, OpKind, Operations};
use crate::token::session::Session;
use crate::token::store::Role;
use crate::token::{Login, Token, MAX_PIN_LEN};
use cryptoki_sys::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// An embedded token's slot.
pub struct EmbeddedSlot(pub Arc<Token>);

/// PIN counter flags for one role.
fn pin_flags(
    failures: u32,
    max: u32,
    low: CK_FLAGS,
    final_try: CK_FLAGS,
    locked: CK_FLAGS,
) -> CK_FLAGS {
    match failures {
        0 => 0,
        f if f >= max => locked,
        f if f + 1 == max => low | final_try,
        _ => low,
    }
}

impl Backend for EmbeddedSlot {
    fn slot_id(&self) -> CK_SLOT_ID {
        self.0.slot_id
    }

    fn slot_info(&self) -> Result<SlotInfo> {
        Ok(SlotInfo {
            description: self.0.description.clone(),
            flags: CKF_TOKEN_PRESENT,
        })
    }

    fn token_info(&self) -> Result<CK_TOKEN_INFO> {
        let token = &self.0;
        let state = token.state()?;
        let mut flags = CKF_RNG | CKF_LOGIN_REQUIRED;
        if state.initialized {
            flags |= CKF_TOKEN_INITIALIZED;
        }
        if state.user_pin_initialized {
            flags |= CKF_USER_PIN_INITIALIZED;
        }
        flags |= pin_flags(
            state.user_failures,
            state.max_failures,
            CKF_USER_PIN_COUNT_LOW,
            CKF_USER_PIN_FINAL_TRY,
            CKF_USER_PIN_LOCKED,
        );
        flags |= pin_flags(
            state.so_failures,
            state.max_failures,
            CKF_SO_PIN_COUNT_LOW,
            CKF_SO_PIN_FINAL_TRY,
            CKF_SO_PIN_LOCKED,
        );
        Ok(CK_TOKEN_INFO {
            label: state.label,
            manufacturerID: padded(b"B4AE"),
            model: padded(token.model.as_bytes()),
            serialNumber: state.serial,
            flags,
            ulMaxSessionCount: CK_EFFECTIVELY_INFINITE,
            ulSessionCount: token.sessions.load(Ordering::SeqCst) as CK_ULONG,
            ulMaxRwSessionCount: CK_EFFECTIVELY_INFINITE,
            ulRwSessionCount: token.rw_sessions.load(Ordering::SeqCst) as CK_ULONG,
            ulMaxPinLen: MAX_PIN_LEN as CK_ULONG,
            ulMinPinLen: state.min_pin_len as CK_ULONG,
            ulTotalPublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulTotalPrivateMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePrivateMemory: CK_UNAVAILABLE_INFORMATION,
            hardwareVersion: library_version(),
            firmwareVersion: library_version(),
            utcTime: [b' '; 16],
        })
    }

    fn mechanisms(&self) -> Result<Vec<CK_MECHANISM_TYPE>> {
        Ok(mechanism::REGISTRY.iter().map(|m| m.mechanism).collect())
    }

    fn mechanism_info(&self, kind: CK_MECHANISM_TYPE) -> Result<CK_MECHANISM_INFO> {
        Ok(mechanism::lookup(kind)?.ck())
    }

    fn init_token(&self, so_pin: &[u8], label: &[u8; 32]) -> Result<()> {
        self.0.init_token(so_pin, label)
    }

    fn open_session(
        &self,
        handle: CK_SESSION_HANDLE,
        flags: CK_FLAGS,
    ) -> Result<Arc<dyn BackendSession>> {
        let token = &self.0;
        if !token.state()?.initialized {
            return Err(Error::TOKEN_NOT_RECOGNIZED);
        }
        let rw = flags & CKF_RW_SESSION != 0;
        if !rw && token.login_state() == Login::SecurityOfficer {
            return Err(Error(CKR_SESSION_READ_WRITE_SO_EXISTS));
        }
        token.sessions.fetch_add(1, Ordering::SeqCst);
        if rw {
            token.rw_sessions.fetch_add(1, Ordering::SeqCst);
        }
        Ok(Arc::new(Session::new(handle, token.clone(), rw)))
    }

    fn forget_secrets(&self) {
        self.0.forget_secrets()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl BackendSession for Session {
    fn slot_id(&self) -> CK_SLOT_ID {
        self.token.slot_id
    }

    fn ops(&self) -> &Operations {
        &self.ops
    }

    fn closed(&self) {
        let token = &self.token;
        token.session_closed(self.handle);
        if self.rw {
            token.rw_sessions.fetch_sub(1, Ordering::SeqCst);
        }
        if token.sessions.fetch_sub(1, Ordering::SeqCst) == 1 {
            token.all_sessions_closed();
        }
    }

    fn info(&self) -> Result<CK_SESSION_INFO> {
        let mut flags = CKF_SERIAL_SESSION;
        if self.rw {
            flags |= CKF_RW_SESSION;
        }
        Ok(CK_SESSION_INFO {
            slotID: self.token.slot_id,
            state: self.state(),
            flags,
            ulDeviceError: 0,
        })
    }

    fn login(&self, user: CK_USER_TYPE, pin: &[u8]) -> Result<()> {
        let role = match user {
            CKU_SO => Role::SecurityOfficer,
            CKU_USER => Role::User,
            // No key here demands re-authentication per use.
            CKU_CONTEXT_SPECIFIC => return Err(Error::OPERATION_NOT_INITIALIZED),
            _ => return Err(Error(CKR_USER_TYPE_INVALID)),
        };
        let token = &self.token;
        let read_only_sessions =
            token.sessions.load(Ordering::SeqCst) > token.rw_sessions.load(Ordering::SeqCst);
        token.login(role, pin, read_only_sessions)
    }

    fn logout(&self) -> Result<()> {
        self.token.logout()
    }

    fn init_pin(&self, pin: &[u8]) -> Result<()> {
        if !self.rw {
            return Err(Error::SESSION_READ_ONLY);
        }
        self.token.init_pin(pin)
    }

    fn set_pin(&self, old: &[u8], new: &[u8]) -> Result<()> {
        if !self.rw {
            return Err(Error::SESSION_READ_ONLY);
        }
        self.token.set_pin(old, new)
    }

    fn create_object(&self, template: Attributes) -> Result<CK_OBJECT_HANDLE> {
        Session::create_object(self, template)
    }

    fn copy_object(
        &self,
        object: CK_OBJECT_HANDLE,
        template: Attributes,
    ) -> Result<CK_OBJECT_HANDLE> {
        Session::copy_object(self, object, template)
    }

    fn destroy_object(&self, object: CK_OBJECT_HANDLE) -> Result<()> {
        Session::destroy_object(self, object)
    }

    fn object_size(&self, object: CK_OBJECT_HANDLE) -> Result<CK_ULONG> {
        Ok(Session::object_size(self, object)? as CK_ULONG)
    }

    fn get_attributes(
        &self,
        object: CK_OBJECT_HANDLE,
        requests: &mut [AttributeRequest],
    ) -> Result<()> {
        answer_attributes(&*self.attributes(object)?, requests)
    }

    fn set_attributes(&self, object: CK_OBJECT_HANDLE, template: Attributes) -> Result<()> {
        Session::set_attributes(self, object, template)
    }

    fn find_init(&self, template: Attributes) -> Result<()> {
        Session::find_init(self, template)
    }

    fn init(
        &self,
        kind: OpKind,
        mechanism: &Mechanism,
        key: Option<CK_OBJECT_HANDLE>,
    ) -> Result<()> {
        let key = || key.ok_or(Error::KEY_HANDLE_INVALID);
        match kind {
            OpKind::Digest => self.ops.digest_init(mechanism),
            OpKind::Sign => self.sign_init(mechanism, key()?),
            OpKind::Verify => self.verify_init(mechanism, key()?),
            OpKind::Encrypt => self.cipher_init(Direction::Encrypt, mechanism, key()?),
            OpKind::Decrypt => self.cipher_init(Direction::Decrypt, mechanism, key()?),
        }
    }

    fn cancel(&self, kind: OpKind) {
        self.ops.cancel(kind);
    }

    fn step(&self, kind: OpKind, step: Step) -> Result<()> {
        self.ops.perform(kind, step)
    }

    fn generate_key(
        &self,
        mechanism: &Mechanism,
        template: Attributes,
    ) -> Result<CK_OBJECT_HANDLE> {
        Session::generate_key(self, mechanism, template)
    }

    fn generate_key_pair(
        &self,
        mechanism: &Mechanism,
        public: Attributes,
        private: Attributes,
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        Session::generate_key_pair(self, mechanism, public, private)
    }

    fn seed_random(&self, _seed: &[u8]) -> Result<()> {
        // The operating system's generator takes no seed from callers.
        Err(Error(CKR_RANDOM_SEED_NOT_SUPPORTED))
    }

    fn generate_random(&self, out: &mut [u8]) -> Result<()> {
        getrandom::getrandom(out).map_err(|_| Error::DEVICE)
    }

    fn ciphertext_len(&self, mechanism: &Mechanism, key: CK_OBJECT_HANDLE) -> Result<usize> {
        Session::ciphertext_len(self, mechanism, key)
    }

    fn encapsulate(
        &self,
        mechanism: &Mechanism,
        key: CK_OBJECT_HANDLE,
        template: Attributes,
    ) -> Result<(Vec<u8>, CK_OBJECT_HANDLE)> {
        Session::encapsulate(self, mechanism, key, template)
    }

    fn decapsulate(
        &self,
        mechanism: &Mechanism,
        key: CK_OBJECT_HANDLE,
        template: Attributes,
        ciphertext: &[u8],
    ) -> Result<CK_OBJECT_HANDLE> {
        Session::decapsulate(self, mechanism, key, template, ciphertext)
    }
}

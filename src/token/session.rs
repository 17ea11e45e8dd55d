//! A session of an embedded token: its token, its read/write flag, its operations.

use crate::error::{Error, Result};
use crate::mechanism::{self, Mechanism};
use crate::mechanism::{kem, signing};
use crate::token::attributes::Attributes;
use crate::token::factory;
use crate::token::object::Object;
use crate::token::operations::Direction;
use crate::token::operations::Operations;
use crate::token::{Login, Token};
use cryptoki_sys::*;
use std::sync::Arc;

pub struct Session {
    pub handle: CK_SESSION_HANDLE,
    pub token: Arc<Token>,
    pub rw: bool,
    pub ops: Operations,
}

impl Session {
    pub fn new(handle: CK_SESSION_HANDLE, token: Arc<Token>, rw: bool) -> Self {
        Session {
            handle,
            token,
            rw,
            ops: Operations::default(),
        }
    }

    /// `CKS_*` for `C_GetSessionInfo`.
    pub fn state(&self) -> CK_STATE {
        match (self.token.login_state(), self.rw) {
            (Login::Public, false) => CKS_RO_PUBLIC_SESSION,
            (Login::User, false) => CKS_RO_USER_FUNCTIONS,
            (Login::Public, true) => CKS_RW_PUBLIC_SESSION,
            (Login::User, true) => CKS_RW_USER_FUNCTIONS,
            (Login::SecurityOfficer, _) => CKS_RW_SO_FUNCTIONS,
        }
    }

    fn object(&self, handle: CK_OBJECT_HANDLE) -> Result<Arc<Object>> {
        self.token.object(handle).map(|(o, _)| o)
    }

    fn key(&self, handle: CK_OBJECT_HANDLE) -> Result<Arc<Object>> {
        self.object(handle).map_err(|e| match e {
            Error::OBJECT_HANDLE_INVALID => Error::KEY_HANDLE_INVALID,
            e => e,
        })
    }

    // ---- objects ----

    pub fn create_object(&self, template: Attributes) -> Result<CK_OBJECT_HANDLE> {
        let attrs = factory::create(template)?;
        self.add_one(attrs)
    }

    pub fn copy_object(
        &self,
        handle: CK_OBJECT_HANDLE,
        template: Attributes,
    ) -> Result<CK_OBJECT_HANDLE> {
        let source = self.object(handle)?;
        let attrs = factory::copy(&source, template)?;
        self.add_one(attrs)
    }

    pub fn destroy_object(&self, handle: CK_OBJECT_HANDLE) -> Result<()> {
        self.token.destroy_object(handle, self.rw)
    }

    pub fn object_size(&self, handle: CK_OBJECT_HANDLE) -> Result<usize> {
        Ok(self.object(handle)?.attrs.size())
    }

    /// Looks the attributes up; the answers borrow from the returned object.
    pub fn attributes(&self, handle: CK_OBJECT_HANDLE) -> Result<Arc<Object>> {
        self.object(handle)
    }

    pub fn set_attributes(&self, handle: CK_OBJECT_HANDLE, template: Attributes) -> Result<()> {
        let (object, home) = self.token.object(handle)?;
        self.token.check_trusted(&template)?;
        let attrs = factory::modify(&object, template)?;
        self.token.replace_object(handle, home, self.rw, attrs)
    }

    // ---- find, sign, verify ----

    pub fn find_init(&self, template: Attributes) -> Result<()> {
        self.ops.find_init(|| self.token.find(&template))
    }

    pub fn sign_init(&self, mechanism: &Mechanism, key: CK_OBJECT_HANDLE) -> Result<()> {
        self.ops.sign_init(|| {
            mechanism::lookup(mechanism.mechanism)?;
            let key = self.key(key)?;
            if key.is_private() && self.token.login_state() != Login::User {
                return Err(Error::USER_NOT_LOGGED_IN);
            }
            signing::sign_init(mechanism, &key)
        })
    }

    pub fn verify_init(&self, mechanism: &Mechanism, key: CK_OBJECT_HANDLE) -> Result<()> {
        self.ops.verify_init(|| {
            mechanism::lookup(mechanism.mechanism)?;
            signing::verify_init(mechanism, &*self.key(key)?)
        })
    }

    // ---- keys ----

    pub fn generate_key_pair(
        &self,
        mechanism: &Mechanism,
        public: Attributes,
        private: Attributes,
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        mechanism::lookup(mechanism.mechanism)?;
        let (public, private) = factory::generate_pair(mechanism, public, private)?;
        match self
            .token
            .add_objects(self.handle, self.rw, vec![public, private])?[..]
        {
            [public, private] => Ok((public, private)),
            _ => Err(Error::GENERAL),
        }
    }

    fn add_one(&self, attrs: Attributes) -> Result<CK_OBJECT_HANDLE> {
        self.token
            .add_objects(self.handle, self.rw, vec![attrs])?
            .pop()
            .ok_or(Error::GENERAL)
    }

    // ---- AES ----

    /// `C_EncryptInit` / `C_DecryptInit`: an unknown mechanism is reported before the key is
    /// looked up (its parameter was checked when the ABI layer decoded it).
    pub fn cipher_init(
        &self,
        direction: Direction,
        mechanism: &Mechanism,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        self.ops.cipher_init(direction, || {
            let operation = match direction {
                Direction::Encrypt => CKF_ENCRYPT,
                Direction::Decrypt => CKF_DECRYPT,
            };
            mechanism::family_for(mechanism.mechanism, operation)?;
            let key = self.key(key)?;
            if key.is_private() && self.token.login_state() != Login::User {
                return Err(Error::USER_NOT_LOGGED_IN);
            }
            mechanism::cipher_init(mechanism, &key, direction == Direction::Decrypt)
        })
    }

    /// `C_GenerateKey`.
    pub fn generate_key(
        &self,
        mechanism: &Mechanism,
        template: Attributes,
    ) -> Result<CK_OBJECT_HANDLE> {
        self.add_one(factory::generate_key(mechanism, template)?)
    }

    // ---- key encapsulation ----

    /// `C_EncapsulateKey`: (ciphertext, handle of the new secret key).
    pub fn encapsulate(
        &self,
        mechanism: &Mechanism,
        key: CK_OBJECT_HANDLE,
        template: Attributes,
    ) -> Result<(Vec<u8>, CK_OBJECT_HANDLE)> {
        let key = self.key(key)?;
        let (ciphertext, attrs) = kem::encapsulate(mechanism, &key, template)?;
        Ok((ciphertext, self.add_one(attrs)?))
    }

    /// The ciphertext length `C_EncapsulateKey` would produce with this key.
    pub fn ciphertext_len(&self, mechanism: &Mechanism, key: CK_OBJECT_HANDLE) -> Result<usize> {
        kem::ciphertext_len(mechanism, &*self.key(key)?)
    }

    /// `C_DecapsulateKey`: the handle of the new secret key.
    pub fn decapsulate(
        &self,
        mechanism: &Mechanism,
        key: CK_OBJECT_HANDLE,
        template: Attributes,
        ciphertext: &[u8],
    ) -> Result<CK_OBJECT_HANDLE> {
        let key = self.key(key)?;
        if key.is_private() && self.token.login_state() != Login::User {
            return Err(Error::USER_NOT_LOGGED_IN);
        }
        let attrs = kem::decapsulate(mechanism, &key, template, ciphertext)?;
        self.add_one(attrs)
    }
}

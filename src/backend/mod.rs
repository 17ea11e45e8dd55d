//! The one backend interface: what a slot and its sessions do, whoever serves them. The ABI
//! layer decodes the caller's arguments once and calls these traits with typed values; it never
//! asks which backend serves a slot. Implementations: [`embedded`] (the module's own token, on
//! a local store), [`pkcs11`] (a token of a real HSM, with post-quantum keys the HSM lacks
//! kept as sealed records inside it) and [`agent`] (a token the custody agent serves from
//! another process) and [`replicas`] (a pkcs11 token served by several HSMs holding the same
//! keys, with failover).

pub mod agent;
pub mod embedded;
pub mod pkcs11;
pub mod replicas;

use crate::error::{Error, Result};
use crate::mechanism::Mechanism;
use crate::token::attributes::Attributes;
use crate::token::io::{AttributeRequest, Output, Step};
use crate::token::operations::{OpKind, Operations};
use cryptoki_sys::*;
use std::sync::Arc;

/// What `C_GetSlotInfo` reports of a slot besides the module's constants.
pub struct SlotInfo {
    pub description: String,
    pub flags: CK_FLAGS,
}

/// A slot and the token in it.
pub trait Backend: Send + Sync {
    fn slot_id(&self) -> CK_SLOT_ID;
    fn slot_info(&self) -> Result<SlotInfo>;
    fn token_info(&self) -> Result<CK_TOKEN_INFO>;
    /// `C_GetMechanismList`, in the order it is reported.
    fn mechanisms(&self) -> Result<Vec<CK_MECHANISM_TYPE>>;
    fn mechanism_info(&self, mechanism: CK_MECHANISM_TYPE) -> Result<CK_MECHANISM_INFO>;
    /// `C_InitToken` (`label` is the 32 blank-padded bytes the caller gave).
    fn init_token(&self, so_pin: &[u8], label: &[u8; 32]) -> Result<()>;
    /// `C_OpenSession` with a handle the module chose (flags checked for `CKF_SERIAL_SESSION`).
    fn open_session(
        &self,
        handle: CK_SESSION_HANDLE,
        flags: CK_FLAGS,
    ) -> Result<Arc<dyn BackendSession>>;
    /// In a forked child: drops the parent's decrypted secrets without taking any lock.
    fn forget_secrets(&self);
    /// The implementation, for the admin tool's backend-specific commands.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// One session of a slot. Operations the backend lacks answer `CKR_FUNCTION_NOT_SUPPORTED`.
pub trait BackendSession: Send + Sync {
    fn slot_id(&self) -> CK_SLOT_ID;
    /// The session's operations (the one owner of which are active, and who performs them).
    fn ops(&self) -> &Operations;
    /// The application closed the session (`C_CloseSession`, `C_CloseAllSessions`, `C_Finalize`).
    fn closed(&self);
    fn info(&self) -> Result<CK_SESSION_INFO>;

    // ---- login ----
    fn login(&self, user: CK_USER_TYPE, pin: &[u8]) -> Result<()>;
    /// `C_LoginUser`: with an empty name, `C_Login`; a name only where the token has named
    /// users (an HSM whose library has `C_LoginUser`), a bad argument elsewhere.
    fn login_named(&self, user: CK_USER_TYPE, pin: &[u8], username: &[u8]) -> Result<()> {
        if username.is_empty() {
            self.login(user, pin)
        } else {
            Err(Error::ARGUMENTS_BAD)
        }
    }
    fn logout(&self) -> Result<()>;
    fn init_pin(&self, pin: &[u8]) -> Result<()>;
    fn set_pin(&self, old: &[u8], new: &[u8]) -> Result<()>;
    fn operation_state(&self, out: Output) -> Result<()> {
        let _ = out;
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }
    fn set_operation_state(
        &self,
        state: &[u8],
        encryption_key: CK_OBJECT_HANDLE,
        authentication_key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let _ = (state, encryption_key, authentication_key);
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }

    // ---- objects ----
    fn create_object(&self, template: Attributes) -> Result<CK_OBJECT_HANDLE>;
    fn copy_object(
        &self,
        object: CK_OBJECT_HANDLE,
        template: Attributes,
    ) -> Result<CK_OBJECT_HANDLE>;
    fn destroy_object(&self, object: CK_OBJECT_HANDLE) -> Result<()>;
    fn object_size(&self, object: CK_OBJECT_HANDLE) -> Result<CK_ULONG>;
    /// `C_GetAttributeValue`: every request answered, the error (if any) one of theirs.
    fn get_attributes(
        &self,
        object: CK_OBJECT_HANDLE,
        requests: &mut [AttributeRequest],
    ) -> Result<()>;
    fn set_attributes(&self, object: CK_OBJECT_HANDLE, template: Attributes) -> Result<()>;
    /// `C_FindObjectsInit`; the search then runs on [`Self::ops`].
    fn find_init(&self, template: Attributes) -> Result<()>;

    // ---- operations ----
    /// `C_xInit` of an operation (`key` is `None` for a digest).
    fn init(
        &self,
        kind: OpKind,
        mechanism: &Mechanism,
        key: Option<CK_OBJECT_HANDLE>,
    ) -> Result<()>;
    /// Ends the operation of `kind`, wherever it runs (`C_xInit(NULL)`, `C_SessionCancel`,
    /// arguments refused before the backend saw them).
    fn cancel(&self, kind: OpKind);
    /// One call of the active operation of `kind`.
    fn step(&self, kind: OpKind, step: Step) -> Result<()>;

    // ---- keys and random ----
    fn generate_key(&self, mechanism: &Mechanism, template: Attributes)
        -> Result<CK_OBJECT_HANDLE>;
    fn generate_key_pair(
        &self,
        mechanism: &Mechanism,
        public: Attributes,
        private: Attributes,
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)>;
    fn seed_random(&self, seed: &[u8]) -> Result<()>;
    fn generate_random(&self, out: &mut [u8]) -> Result<()>;

    // ---- key encapsulation ----
    /// The ciphertext length `encapsulate` would produce with this key.
    fn ciphertext_len(&self, mechanism: &Mechanism, key: CK_OBJECT_HANDLE) -> Result<usize>;
    fn encapsulate(
        &self,
        mechanism: &Mechanism,
        key: CK_OBJECT_HANDLE,
        template: Attributes,
    ) -> Result<(Vec<u8>, CK_OBJECT_HANDLE)>;
    fn decapsulate(
        &self,
        mechanism: &Mechanism,
        key: CK_OBJECT_HANDLE,
        template: Attributes,
        ciphertext: &[u8],
    ) -> Result<CK_OBJECT_HANDLE>;

    // ---- functions only an HSM performs here ----
    fn digest_key(&self, key: CK_OBJECT_HANDLE) -> Result<()> {
        let _ = key;
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }
    fn wrap_key(
        &self,
        mechanism: &Mechanism,
        wrapping: CK_OBJECT_HANDLE,
        key: CK_OBJECT_HANDLE,
        out: Output,
    ) -> Result<()> {
        let _ = (mechanism, wrapping, key, out);
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }
    fn unwrap_key(
        &self,
        mechanism: &Mechanism,
        unwrapping: CK_OBJECT_HANDLE,
        wrapped: &[u8],
        template: Attributes,
    ) -> Result<CK_OBJECT_HANDLE> {
        let _ = (mechanism, unwrapping, wrapped, template);
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }
    fn derive_key(
        &self,
        mechanism: &Mechanism,
        base: CK_OBJECT_HANDLE,
        template: Attributes,
    ) -> Result<CK_OBJECT_HANDLE> {
        let _ = (mechanism, base, template);
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }
    /// `C_SignRecoverInit` / `C_VerifyRecoverInit`.
    fn recover_init(
        &self,
        recover: Recover,
        mechanism: &Mechanism,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let _ = (recover, mechanism, key);
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }
    /// `C_SignRecover` / `C_VerifyRecover`.
    fn recover(&self, recover: Recover, data: &[u8], out: Output) -> Result<()> {
        let _ = (recover, data, out);
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }
    /// The dual-function updates (`C_DigestEncryptUpdate`...).
    fn dual_update(&self, dual: Dual, data: &[u8], out: Output) -> Result<()> {
        let _ = (dual, data, out);
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }
}

/// Which recovering operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recover {
    Sign,
    Verify,
}

/// The dual-function updates: parts of two active operations at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dual {
    DigestEncrypt,
    DecryptDigest,
    SignEncrypt,
    DecryptVerify,
}

impl Dual {
    /// The two operations the call continues.
    pub fn kinds(self) -> [OpKind; 2] {
        match self {
            Dual::DigestEncrypt => [OpKind::Digest, OpKind::Encrypt],
            Dual::DecryptDigest => [OpKind::Decrypt, OpKind::Digest],
            Dual::SignEncrypt => [OpKind::Sign, OpKind::Encrypt],
            Dual::DecryptVerify => [OpKind::Decrypt, OpKind::Verify],
        }
    }
}

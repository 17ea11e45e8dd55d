//! A session: its token, its read/write flag, and at most one active operation of each kind.
//! Each session has its own lock, so sessions never wait on one another.

use crate::error::{Error, Result};
use crate::mechanism::digest::DigestOperation;
use crate::mechanism::signing::{self, SignOperation, VerifyOperation};
use crate::mechanism::{self, Mechanism};
use crate::token::attributes::Attributes;
use crate::token::factory;
use crate::token::object::Object;
use crate::token::{Login, Token};
use cryptoki_sys::*;
use parking_lot::Mutex;
use std::sync::Arc;

/// The operations a session may have under way.
#[derive(Default)]
struct Operations {
    find: Option<FindOperation>,
    digest: Option<DigestOperation>,
    sign: Option<Box<dyn SignOperation>>,
    verify: Option<Box<dyn VerifyOperation>>,
}

struct FindOperation {
    handles: Vec<CK_OBJECT_HANDLE>,
    next: usize,
}

pub struct Session {
    pub handle: CK_SESSION_HANDLE,
    pub token: Arc<Token>,
    pub rw: bool,
    ops: Mutex<Operations>,
}

/// Runs one step of an operation: an error ends the operation, except `CKR_BUFFER_TOO_SMALL`
/// (the caller will retry with a bigger buffer).
fn step<T, O>(slot: &mut Option<O>, f: impl FnOnce(&mut O) -> Result<T>) -> Result<T> {
    let op = slot.as_mut().ok_or(Error::OPERATION_NOT_INITIALIZED)?;
    let result = f(op);
    if matches!(result, Err(e) if e != Error::BUFFER_TOO_SMALL) {
        *slot = None;
    }
    result
}

impl Session {
    pub fn new(handle: CK_SESSION_HANDLE, token: Arc<Token>, rw: bool) -> Self {
        Session {
            handle,
            token,
            rw,
            ops: Mutex::new(Operations::default()),
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
        let attrs = factory::modify(&object, template)?;
        self.token.replace_object(handle, home, self.rw, attrs)
    }

    // ---- find ----

    pub fn find_init(&self, template: Attributes) -> Result<()> {
        let mut ops = self.ops.lock();
        if ops.find.is_some() {
            return Err(Error::OPERATION_ACTIVE);
        }
        let handles = self.token.find(&template)?;
        ops.find = Some(FindOperation { handles, next: 0 });
        Ok(())
    }

    pub fn find_next(&self, max: usize) -> Result<Vec<CK_OBJECT_HANDLE>> {
        let mut ops = self.ops.lock();
        let find = ops.find.as_mut().ok_or(Error::OPERATION_NOT_INITIALIZED)?;
        let end = find.handles.len().min(find.next.saturating_add(max));
        let out = find.handles[find.next..end].to_vec();
        find.next = end;
        Ok(out)
    }

    pub fn find_final(&self) -> Result<()> {
        self.ops
            .lock()
            .find
            .take()
            .map(drop)
            .ok_or(Error::OPERATION_NOT_INITIALIZED)
    }

    // ---- digest ----

    pub fn digest_init(&self, mechanism: &Mechanism) -> Result<()> {
        let mut ops = self.ops.lock();
        if ops.digest.is_some() {
            return Err(Error::OPERATION_ACTIVE);
        }
        ops.digest = Some(DigestOperation::new(mechanism)?);
        Ok(())
    }

    /// Length of the digest of the active operation.
    pub fn digest_len(&self) -> Result<usize> {
        self.ops
            .lock()
            .digest
            .as_ref()
            .map(DigestOperation::digest_len)
            .ok_or(Error::OPERATION_NOT_INITIALIZED)
    }

    pub fn digest(&self, data: &[u8]) -> Result<Vec<u8>> {
        let mut op = self
            .ops
            .lock()
            .digest
            .take()
            .ok_or(Error::OPERATION_NOT_INITIALIZED)?;
        op.update(data);
        Ok(op.finish())
    }

    pub fn digest_update(&self, data: &[u8]) -> Result<()> {
        step(&mut self.ops.lock().digest, |op| {
            op.update(data);
            Ok(())
        })
    }

    pub fn digest_final(&self) -> Result<Vec<u8>> {
        let op = self
            .ops
            .lock()
            .digest
            .take()
            .ok_or(Error::OPERATION_NOT_INITIALIZED)?;
        Ok(op.finish())
    }

    /// Ends the digest operation (a failed call).
    pub fn digest_abort(&self) {
        self.ops.lock().digest = None;
    }

    // ---- sign / verify ----

    pub fn sign_init(&self, mechanism: &Mechanism, key: CK_OBJECT_HANDLE) -> Result<()> {
        let mut ops = self.ops.lock();
        if ops.sign.is_some() {
            return Err(Error::OPERATION_ACTIVE);
        }
        mechanism::lookup(mechanism.mechanism)?;
        let key = self.key(key)?;
        if key.is_private() && self.token.login_state() != Login::User {
            return Err(Error::USER_NOT_LOGGED_IN);
        }
        ops.sign = Some(signing::sign_init(mechanism, &key)?);
        Ok(())
    }

    pub fn signature_len(&self) -> Result<usize> {
        step(&mut self.ops.lock().sign, |op| Ok(op.signature_len()))
    }

    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>> {
        let mut op = self
            .ops
            .lock()
            .sign
            .take()
            .ok_or(Error::OPERATION_NOT_INITIALIZED)?;
        // Signing happens outside the session lock, so a slow signature never blocks
        // C_GetSessionInfo or a C_SignInit error path on the same session.
        op.sign(data)
    }

    pub fn sign_update(&self, data: &[u8]) -> Result<()> {
        step(&mut self.ops.lock().sign, |op| op.update(data))
    }

    pub fn sign_final(&self) -> Result<Vec<u8>> {
        let mut op = self
            .ops
            .lock()
            .sign
            .take()
            .ok_or(Error::OPERATION_NOT_INITIALIZED)?;
        op.finish()
    }

    /// Ends the sign operation (a failed call).
    pub fn sign_abort(&self) {
        self.ops.lock().sign = None;
    }

    pub fn verify_init(&self, mechanism: &Mechanism, key: CK_OBJECT_HANDLE) -> Result<()> {
        let mut ops = self.ops.lock();
        if ops.verify.is_some() {
            return Err(Error::OPERATION_ACTIVE);
        }
        mechanism::lookup(mechanism.mechanism)?;
        let key = self.key(key)?;
        ops.verify = Some(signing::verify_init(mechanism, &key)?);
        Ok(())
    }

    pub fn verify(&self, data: &[u8], signature: &[u8]) -> Result<()> {
        let mut op = self
            .ops
            .lock()
            .verify
            .take()
            .ok_or(Error::OPERATION_NOT_INITIALIZED)?;
        op.verify(data, signature)
    }

    pub fn verify_update(&self, data: &[u8]) -> Result<()> {
        step(&mut self.ops.lock().verify, |op| op.update(data))
    }

    pub fn verify_final(&self, signature: &[u8]) -> Result<()> {
        let mut op = self
            .ops
            .lock()
            .verify
            .take()
            .ok_or(Error::OPERATION_NOT_INITIALIZED)?;
        op.finish(signature)
    }

    /// Ends the verify operation (a failed call).
    pub fn verify_abort(&self) {
        self.ops.lock().verify = None;
    }

    // ---- keys ----

    pub fn generate_key_pair(
        &self,
        mechanism: &Mechanism,
        public: Attributes,
        private: Attributes,
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        mechanism::lookup(mechanism.mechanism)?;
        let (public, private) = match mechanism.mechanism {
            CKM_ML_DSA_KEY_PAIR_GEN => {
                mechanism.expect_no_param()?;
                factory::generate_ml_dsa(public, private)?
            }
            _ => return Err(Error::MECHANISM_INVALID),
        };
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
}

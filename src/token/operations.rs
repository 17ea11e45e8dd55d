//! The operations a session may have under way: at most one of each kind. Shared by sessions of
//! embedded tokens and by forwarded sessions (for the operations this module performs itself).
//! Each session has its own lock, so sessions never wait on one another, and signing itself runs
//! with no lock held.

use crate::error::{Error, Result};
use crate::mechanism::aes_gcm::GcmOperation;
use crate::mechanism::digest::DigestOperation;
use crate::mechanism::signing::{SignOperation, VerifyOperation};
use crate::mechanism::Mechanism;
use cryptoki_sys::CK_OBJECT_HANDLE;
use parking_lot::Mutex;

#[derive(Default)]
struct Slots {
    find: Option<(Vec<CK_OBJECT_HANDLE>, usize)>,
    digest: Option<DigestOperation>,
    sign: Option<Box<dyn SignOperation>>,
    verify: Option<Box<dyn VerifyOperation>>,
    encrypt: Option<GcmOperation>,
    decrypt: Option<GcmOperation>,
}

/// Which of the two cipher operation slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Encrypt,
    Decrypt,
}

#[derive(Default)]
pub struct Operations(Mutex<Slots>);

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

/// Starts an operation in an empty slot; `make` runs only when the slot is free.
fn start<O>(slot: &mut Option<O>, make: impl FnOnce() -> Result<O>) -> Result<()> {
    if slot.is_some() {
        return Err(Error::OPERATION_ACTIVE);
    }
    *slot = Some(make()?);
    Ok(())
}

impl Operations {
    // ---- find ----

    pub fn find_init(&self, search: impl FnOnce() -> Result<Vec<CK_OBJECT_HANDLE>>) -> Result<()> {
        start(&mut self.0.lock().find, || Ok((search()?, 0)))
    }

    pub fn find_next(&self, max: usize) -> Result<Vec<CK_OBJECT_HANDLE>> {
        let mut slots = self.0.lock();
        let (handles, next) = slots
            .find
            .as_mut()
            .ok_or(Error::OPERATION_NOT_INITIALIZED)?;
        let end = handles.len().min(next.saturating_add(max));
        let out = handles[*next..end].to_vec();
        *next = end;
        Ok(out)
    }

    pub fn find_final(&self) -> Result<()> {
        self.0
            .lock()
            .find
            .take()
            .map(drop)
            .ok_or(Error::OPERATION_NOT_INITIALIZED)
    }

    // ---- digest ----

    pub fn digest_init(&self, mechanism: &Mechanism) -> Result<()> {
        start(&mut self.0.lock().digest, || {
            DigestOperation::new(mechanism)
        })
    }

    pub fn digest_len(&self) -> Result<usize> {
        step(&mut self.0.lock().digest, |op| Ok(op.digest_len()))
    }

    pub fn digest(&self, data: &[u8]) -> Result<Vec<u8>> {
        let mut op = self
            .0
            .lock()
            .digest
            .take()
            .ok_or(Error::OPERATION_NOT_INITIALIZED)?;
        op.update(data);
        Ok(op.finish())
    }

    pub fn digest_update(&self, data: &[u8]) -> Result<()> {
        step(&mut self.0.lock().digest, |op| {
            op.update(data);
            Ok(())
        })
    }

    pub fn digest_final(&self) -> Result<Vec<u8>> {
        let op = self
            .0
            .lock()
            .digest
            .take()
            .ok_or(Error::OPERATION_NOT_INITIALIZED)?;
        Ok(op.finish())
    }

    pub fn digest_abort(&self) {
        self.0.lock().digest = None;
    }

    // ---- sign ----

    pub fn sign_init(&self, make: impl FnOnce() -> Result<Box<dyn SignOperation>>) -> Result<()> {
        start(&mut self.0.lock().sign, make)
    }

    pub fn signing(&self) -> bool {
        self.0.lock().sign.is_some()
    }

    pub fn signature_len(&self) -> Result<usize> {
        step(&mut self.0.lock().sign, |op| Ok(op.signature_len()))
    }

    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>> {
        let mut op = self
            .0
            .lock()
            .sign
            .take()
            .ok_or(Error::OPERATION_NOT_INITIALIZED)?;
        op.sign(data)
    }

    pub fn sign_update(&self, data: &[u8]) -> Result<()> {
        step(&mut self.0.lock().sign, |op| op.update(data))
    }

    pub fn sign_final(&self) -> Result<Vec<u8>> {
        let mut op = self
            .0
            .lock()
            .sign
            .take()
            .ok_or(Error::OPERATION_NOT_INITIALIZED)?;
        op.finish()
    }

    pub fn sign_abort(&self) {
        self.0.lock().sign = None;
    }

    // ---- verify ----

    pub fn verify_init(
        &self,
        make: impl FnOnce() -> Result<Box<dyn VerifyOperation>>,
    ) -> Result<()> {
        start(&mut self.0.lock().verify, make)
    }

    pub fn verifying(&self) -> bool {
        self.0.lock().verify.is_some()
    }

    pub fn verify(&self, data: &[u8], signature: &[u8]) -> Result<()> {
        let mut op = self
            .0
            .lock()
            .verify
            .take()
            .ok_or(Error::OPERATION_NOT_INITIALIZED)?;
        op.verify(data, signature)
    }

    pub fn verify_update(&self, data: &[u8]) -> Result<()> {
        step(&mut self.0.lock().verify, |op| op.update(data))
    }

    pub fn verify_final(&self, signature: &[u8]) -> Result<()> {
        let mut op = self
            .0
            .lock()
            .verify
            .take()
            .ok_or(Error::OPERATION_NOT_INITIALIZED)?;
        op.finish(signature)
    }

    pub fn verify_abort(&self) {
        self.0.lock().verify = None;
    }

    // ---- encrypt / decrypt ----

    fn cipher(slots: &mut Slots, direction: Direction) -> &mut Option<GcmOperation> {
        match direction {
            Direction::Encrypt => &mut slots.encrypt,
            Direction::Decrypt => &mut slots.decrypt,
        }
    }

    pub fn cipher_init(
        &self,
        direction: Direction,
        make: impl FnOnce() -> Result<GcmOperation>,
    ) -> Result<()> {
        start(Self::cipher(&mut self.0.lock(), direction), make)
    }

    /// Output length of the single-part call on `input_len` bytes.
    pub fn cipher_len(&self, direction: Direction, input_len: usize) -> Result<usize> {
        step(Self::cipher(&mut self.0.lock(), direction), |op| {
            op.output_len(input_len)
        })
    }

    pub fn cipher_final_len(&self, direction: Direction) -> Result<usize> {
        step(Self::cipher(&mut self.0.lock(), direction), |op| {
            op.final_len()
        })
    }

    /// `C_Encrypt` / `C_Decrypt`: ends the operation.
    pub fn cipher_one_shot(&self, direction: Direction, data: &[u8]) -> Result<Vec<u8>> {
        let mut op = Self::cipher(&mut self.0.lock(), direction)
            .take()
            .ok_or(Error::OPERATION_NOT_INITIALIZED)?;
        op.one_shot(data)
    }

    pub fn cipher_update(&self, direction: Direction, data: &[u8]) -> Result<()> {
        step(Self::cipher(&mut self.0.lock(), direction), |op| {
            op.update(data);
            Ok(())
        })
    }

    pub fn cipher_final(&self, direction: Direction) -> Result<Vec<u8>> {
        let mut op = Self::cipher(&mut self.0.lock(), direction)
            .take()
            .ok_or(Error::OPERATION_NOT_INITIALIZED)?;
        op.finish()
    }

    pub fn cipher_abort(&self, direction: Direction) {
        *Self::cipher(&mut self.0.lock(), direction) = None;
    }
}

//! The operations a session may have under way: at most one of each kind, whoever performs it.
//! This is the one owner of "is an operation active?": for a forwarded session it also records
//! the operations the real HSM performs, so a second `C_SignInit` answers `CKR_OPERATION_ACTIVE`
//! whether the first went to the HSM or stayed here. Each session has its own lock, so sessions
//! never wait on one another, and signing itself runs with no lock held.

use crate::error::{Error, Result};
use crate::mechanism::aes_gcm::GcmOperation;
use crate::mechanism::digest::DigestOperation;
use crate::mechanism::signing::{SignOperation, VerifyOperation};
use crate::mechanism::Mechanism;
use crate::token::io::Step;
use cryptoki_sys::CK_OBJECT_HANDLE;
use parking_lot::Mutex;

/// The kinds of operation a session can have under way, one of each at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Digest,
    Sign,
    Verify,
    Encrypt,
    Decrypt,
}

impl OpKind {
    pub const ALL: [OpKind; 5] = [
        OpKind::Digest,
        OpKind::Sign,
        OpKind::Verify,
        OpKind::Encrypt,
        OpKind::Decrypt,
    ];

    fn bit(self) -> u8 {
        1 << self as u8
    }

    /// Its name in metrics.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Digest => "digest",
            OpKind::Sign => "sign",
            OpKind::Verify => "verify",
            OpKind::Encrypt => "encrypt",
            OpKind::Decrypt => "decrypt",
        }
    }

    /// The `CKF_*` flag `C_SessionCancel` names it by.
    pub fn flag(self) -> cryptoki_sys::CK_FLAGS {
        use cryptoki_sys::*;
        match self {
            OpKind::Digest => CKF_DIGEST,
            OpKind::Sign => CKF_SIGN,
            OpKind::Verify => CKF_VERIFY,
            OpKind::Encrypt => CKF_ENCRYPT,
            OpKind::Decrypt => CKF_DECRYPT,
        }
    }
}

impl From<Direction> for OpKind {
    fn from(direction: Direction) -> Self {
        match direction {
            Direction::Encrypt => OpKind::Encrypt,
            Direction::Decrypt => OpKind::Decrypt,
        }
    }
}

/// Who performs the active operation of a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Performer {
    None,
    /// This module.
    Here,
    /// The real HSM behind a forwarded session.
    Hsm,
}

#[derive(Default)]
struct Slots {
    /// Kinds whose active operation the real HSM performs.
    hsm: u8,
    find: Option<(Vec<CK_OBJECT_HANDLE>, usize)>,
    digest: Option<DigestOperation>,
    sign: Option<Box<dyn SignOperation>>,
    verify: Option<Box<dyn VerifyOperation>>,
    encrypt: Option<GcmOperation>,
    decrypt: Option<GcmOperation>,
    /// Message-based signing and verification (`C_MessageSignInit`...), by kind.
    message_sign: Option<MessageOp>,
    message_verify: Option<MessageOp>,
    /// The signature of a signature-first verification (`C_VerifySignatureInit`).
    signature_first: Option<Vec<u8>>,
}

/// A message-based operation (PKCS#11 3.0): the mechanism and key of its init; each message is
/// one signing or verification of the session's `Sign` / `Verify` kind, and `in_message` says
/// one is under way (between `C_xMessageBegin` and its last `C_xMessageNext`).
#[derive(Clone)]
pub struct MessageOp {
    pub mechanism: Mechanism,
    pub key: CK_OBJECT_HANDLE,
    pub in_message: bool,
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

impl Slots {
    fn here(&self, kind: OpKind) -> bool {
        match kind {
            OpKind::Digest => self.digest.is_some(),
            OpKind::Sign => self.sign.is_some(),
            OpKind::Verify => self.verify.is_some(),
            OpKind::Encrypt => self.encrypt.is_some(),
            OpKind::Decrypt => self.decrypt.is_some(),
        }
    }

    fn performer(&self, kind: OpKind) -> Performer {
        if self.here(kind) {
            Performer::Here
        } else if self.hsm & kind.bit() != 0 {
            Performer::Hsm
        } else {
            Performer::None
        }
    }

    fn clear(&mut self, kind: OpKind) {
        self.hsm &= !kind.bit();
        match kind {
            OpKind::Digest => self.digest = None,
            OpKind::Sign => self.sign = None,
            OpKind::Verify => self.verify = None,
            OpKind::Encrypt => self.encrypt = None,
            OpKind::Decrypt => self.decrypt = None,
        }
    }
}

/// Starts an operation of `kind` in its empty slot; `make` runs only when no operation of that
/// kind is active, here or in the HSM.
fn start<O>(
    slots: &mut Slots,
    kind: OpKind,
    slot: impl FnOnce(&mut Slots) -> &mut Option<O>,
    make: impl FnOnce() -> Result<O>,
) -> Result<()> {
    if slots.performer(kind) != Performer::None {
        return Err(Error::OPERATION_ACTIVE);
    }
    *slot(slots) = Some(make()?);
    Ok(())
}

impl Operations {
    /// Who performs the active operation of `kind`.
    pub fn performer(&self, kind: OpKind) -> Performer {
        self.0.lock().performer(kind)
    }

    /// Whether no operation (search included) is active.
    pub fn idle(&self) -> bool {
        let slots = self.0.lock();
        slots.hsm == 0
            && slots.find.is_none()
            && [
                OpKind::Digest,
                OpKind::Sign,
                OpKind::Verify,
                OpKind::Encrypt,
                OpKind::Decrypt,
            ]
            .iter()
            .all(|k| !slots.here(*k))
    }

    /// Ends the operation of `kind`, wherever it runs; returns who was performing it (the
    /// caller ends the HSM's).
    pub fn cancel(&self, kind: OpKind) -> Performer {
        let mut slots = self.0.lock();
        let performer = slots.performer(kind);
        slots.clear(kind);
        performer
    }

    /// Starts an operation the HSM performs: `init` (the real `C_xInit`) runs only when no
    /// operation of that kind is active here or there.
    pub fn begin_in_hsm(&self, kind: OpKind, init: impl FnOnce() -> Result<()>) -> Result<()> {
        let mut slots = self.0.lock();
        if slots.performer(kind) != Performer::None {
            return Err(Error::OPERATION_ACTIVE);
        }
        init()?;
        slots.hsm |= kind.bit();
        Ok(())
    }

    /// One call of an operation the HSM performs. The operation ends with the call (PKCS#11)
    /// unless it asked a length, was a part (`continues`), or answered `CKR_BUFFER_TOO_SMALL`.
    pub fn step_in_hsm(
        &self,
        kind: OpKind,
        continues: bool,
        call: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        if self.performer(kind) != Performer::Hsm {
            return Err(Error::OPERATION_NOT_INITIALIZED);
        }
        let result = call();
        let ended = match result {
            Ok(()) => !continues,
            Err(e) => e != Error::BUFFER_TOO_SMALL,
        };
        if ended {
            self.0.lock().hsm &= !kind.bit();
        }
        result
    }

    // ---- message-based operations and signature-first verification ----

    fn message_slot(slots: &mut Slots, kind: OpKind) -> Result<&mut Option<MessageOp>> {
        match kind {
            OpKind::Sign => Ok(&mut slots.message_sign),
            OpKind::Verify => Ok(&mut slots.message_verify),
            _ => Err(Error::FUNCTION_NOT_SUPPORTED),
        }
    }

    /// `C_MessageSignInit` / `C_MessageVerifyInit`: `check` (which tries the mechanism on the
    /// key) runs only when no message-based operation of that kind is active.
    pub fn message_init(
        &self,
        kind: OpKind,
        op: MessageOp,
        check: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let active =
            |slots: &mut Slots| -> Result<bool> { Ok(Self::message_slot(slots, kind)?.is_some()) };
        if active(&mut self.0.lock())? {
            return Err(Error::OPERATION_ACTIVE);
        }
        // Unlocked: the check starts and ends an operation of this session.
        check()?;
        let mut slots = self.0.lock();
        if active(&mut slots)? {
            return Err(Error::OPERATION_ACTIVE);
        }
        *Self::message_slot(&mut slots, kind)? = Some(op);
        Ok(())
    }

    /// The active message-based operation of `kind`.
    pub fn message(&self, kind: OpKind) -> Result<MessageOp> {
        let mut slots = self.0.lock();
        Self::message_slot(&mut slots, kind)?
            .clone()
            .ok_or(Error::OPERATION_NOT_INITIALIZED)
    }

    /// Marks a message begun or ended.
    pub fn set_in_message(&self, kind: OpKind, in_message: bool) {
        let mut slots = self.0.lock();
        if let Ok(Some(op)) = Self::message_slot(&mut slots, kind).map(Option::as_mut) {
            op.in_message = in_message;
        }
    }

    /// `C_MessageSignFinal` / `C_MessageVerifyFinal` (and `C_SessionCancel`): the operation
    /// ends; whether a message was under way (the caller ends it).
    pub fn message_final(&self, kind: OpKind) -> Result<bool> {
        let mut slots = self.0.lock();
        Self::message_slot(&mut slots, kind)?
            .take()
            .map(|op| op.in_message)
            .ok_or(Error::OPERATION_NOT_INITIALIZED)
    }

    /// Keeps the signature a signature-first verification checks at its end.
    pub fn set_signature_first(&self, signature: Option<Vec<u8>>) {
        self.0.lock().signature_first = signature;
    }

    /// The signature of the signature-first verification under way.
    pub fn signature_first(&self) -> Result<Vec<u8>> {
        self.0
            .lock()
            .signature_first
            .clone()
            .ok_or(Error::OPERATION_NOT_INITIALIZED)
    }

    // ---- find ----

    pub fn find_init(&self, search: impl FnOnce() -> Result<Vec<CK_OBJECT_HANDLE>>) -> Result<()> {
        let mut slots = self.0.lock();
        if slots.find.is_some() {
            return Err(Error::OPERATION_ACTIVE);
        }
        slots.find = Some((search()?, 0));
        Ok(())
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
        start(
            &mut self.0.lock(),
            OpKind::Digest,
            |s| &mut s.digest,
            || DigestOperation::new(mechanism),
        )
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

    // ---- sign ----

    pub fn sign_init(&self, make: impl FnOnce() -> Result<Box<dyn SignOperation>>) -> Result<()> {
        start(&mut self.0.lock(), OpKind::Sign, |s| &mut s.sign, make)
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

    // ---- verify ----

    pub fn verify_init(
        &self,
        make: impl FnOnce() -> Result<Box<dyn VerifyOperation>>,
    ) -> Result<()> {
        start(&mut self.0.lock(), OpKind::Verify, |s| &mut s.verify, make)
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
        start(
            &mut self.0.lock(),
            direction.into(),
            |s| Self::cipher(s, direction),
            make,
        )
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
            op.update(data)
        })
    }

    pub fn cipher_final(&self, direction: Direction) -> Result<Vec<u8>> {
        let mut op = Self::cipher(&mut self.0.lock(), direction)
            .take()
            .ok_or(Error::OPERATION_NOT_INITIALIZED)?;
        op.finish()
    }
}

impl Operations {
    /// Runs one call of an active operation: an error ends the operation, except
    /// `CKR_BUFFER_TOO_SMALL`, after which the caller retries. The one owner of that rule for
    /// operations this module performs.
    pub fn within(&self, kind: OpKind, body: impl FnOnce() -> Result<()>) -> Result<()> {
        let result = body();
        if matches!(result, Err(e) if e != Error::BUFFER_TOO_SMALL) {
            self.cancel(kind);
        }
        result
    }

    /// One call of an operation this module performs.
    pub fn perform(&self, kind: OpKind, step: Step) -> Result<()> {
        self.within(kind, || match (kind, step) {
            (OpKind::Digest, Step::Whole(data, out)) => {
                out.deliver(self.digest_len()?, || self.digest(data))
            }
            (OpKind::Digest, Step::Update(part)) => self.digest_update(part),
            (OpKind::Digest, Step::Final(out)) => {
                out.deliver(self.digest_len()?, || self.digest_final())
            }
            (OpKind::Sign, Step::Whole(data, out)) => {
                out.deliver(self.signature_len()?, || self.sign(data))
            }
            (OpKind::Sign, Step::Update(part)) => self.sign_update(part),
            (OpKind::Sign, Step::Final(out)) => {
                out.deliver(self.signature_len()?, || self.sign_final())
            }
            (OpKind::Verify, Step::Verify(data, signature)) => self.verify(data, signature),
            (OpKind::Verify, Step::Update(part)) => self.verify_update(part),
            (OpKind::Verify, Step::VerifyFinal(signature)) => self.verify_final(signature),
            (OpKind::Encrypt | OpKind::Decrypt, step) => {
                let direction = match kind {
                    OpKind::Encrypt => Direction::Encrypt,
                    _ => Direction::Decrypt,
                };
                self.cipher_step(direction, step)
            }
            _ => Err(Error::GENERAL),
        })
    }

    fn cipher_step(&self, direction: Direction, step: Step) -> Result<()> {
        match step {
            Step::Whole(data, out) => {
                let needed = self.cipher_len(direction, data.len())?;
                out.deliver(needed, || self.cipher_one_shot(direction, data))
            }
            // GCM answers everything at the final call, so a part yields no output; a call
            // with no output buffer only asks that length and consumes nothing.
            Step::CipherUpdate(part, out) => {
                let query = out.is_query();
                out.nothing();
                if query {
                    return Ok(());
                }
                self.cipher_update(direction, part)
            }
            Step::Final(out) => {
                let needed = self.cipher_final_len(direction)?;
                out.deliver(needed, || self.cipher_final(direction))
            }
            _ => Err(Error::GENERAL),
        }
    }
}

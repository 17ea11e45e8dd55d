//! The caller's buffers as the ABI layer hands them to a backend, already decoded and bounded:
//! an output buffer with the two-call length convention, one call of an active operation, and
//! the slots `C_GetAttributeValue` answers in. Backends answer into them without knowing where
//! they came from (the caller's memory, or a test's).

use crate::error::{Error, Result};
use crate::token::object::{Object, Readable};
use cryptoki_sys::*;

/// A caller's output buffer and its length: `buf` is `None` when the caller asks only the
/// length (a NULL buffer); otherwise it spans the `*len` bytes the caller offered.
pub struct Output<'a> {
    buf: Option<&'a mut [u8]>,
    len: &'a mut CK_ULONG,
}

impl<'a> Output<'a> {
    pub fn new(buf: Option<&'a mut [u8]>, len: &'a mut CK_ULONG) -> Self {
        Output { buf, len }
    }

    /// Whether the caller asks only the length.
    pub fn is_query(&self) -> bool {
        self.buf.is_none()
    }

    /// The two-call convention for output this module produces: a length query is answered
    /// with `needed`; a short buffer with `CKR_BUFFER_TOO_SMALL` and `needed`; otherwise
    /// `produce` runs and its bytes are copied out.
    pub fn deliver(self, needed: usize, produce: impl FnOnce() -> Result<Vec<u8>>) -> Result<()> {
        let Some(buf) = self.buf else {
            *self.len = needed as CK_ULONG;
            return Ok(());
        };
        if buf.len() < needed {
            *self.len = needed as CK_ULONG;
            return Err(Error::BUFFER_TOO_SMALL);
        }
        let data = zeroize::Zeroizing::new(produce()?);
        let out = buf.get_mut(..data.len()).ok_or(Error::GENERAL)?;
        out.copy_from_slice(&data);
        *self.len = data.len() as CK_ULONG;
        Ok(())
    }

    /// The size of the caller's buffer; `None` for a length query.
    pub fn capacity(&self) -> Option<usize> {
        self.buf.as_ref().map(|b| b.len())
    }

    /// Answers with what another party produced for this call: `len` is the length to report
    /// and `data`, when given, the bytes delivered (at most the caller's buffer).
    pub fn fill(self, len: CK_ULONG, data: Option<&[u8]>) -> Result<()> {
        if let (Some(buf), Some(data)) = (self.buf, data) {
            buf.get_mut(..data.len())
                .ok_or(Error::GENERAL)?
                .copy_from_slice(data);
        }
        *self.len = len;
        Ok(())
    }

    /// Answers "no output" (a cipher part whose output comes at the final call).
    pub fn nothing(self) {
        *self.len = 0;
    }

    /// The buffer and length as an outbound C call takes them (NULL for a length query); the
    /// callee writes the length.
    pub fn raw(&mut self) -> (*mut CK_BYTE, &mut CK_ULONG) {
        let ptr = match &mut self.buf {
            Some(buf) => buf.as_mut_ptr(),
            None => std::ptr::null_mut(),
        };
        (ptr, self.len)
    }
}

/// One call of an active operation.
pub enum Step<'a> {
    /// `C_Digest`, `C_Sign`, `C_Encrypt`, `C_Decrypt`: the whole input; ends the operation.
    Whole(&'a [u8], Output<'a>),
    /// `C_DigestUpdate`, `C_SignUpdate`, `C_VerifyUpdate`.
    Update(&'a [u8]),
    /// `C_EncryptUpdate`, `C_DecryptUpdate`.
    CipherUpdate(&'a [u8], Output<'a>),
    /// `C_DigestFinal`, `C_SignFinal`, `C_EncryptFinal`, `C_DecryptFinal`.
    Final(Output<'a>),
    /// `C_Verify`: data and signature.
    Verify(&'a [u8], &'a [u8]),
    /// `C_VerifyFinal`: the signature.
    VerifyFinal(&'a [u8]),
}

impl Step<'_> {
    /// Whether the operation goes on after this call succeeds (a part, or a length query).
    pub fn continues(&self) -> bool {
        match self {
            Step::Update(_) | Step::CipherUpdate(..) => true,
            Step::Whole(_, out) | Step::Final(out) => out.is_query(),
            Step::Verify(..) | Step::VerifyFinal(_) => false,
        }
    }
}

/// One attribute of a `C_GetAttributeValue` template: the type, the caller's value buffer
/// (`None` asks the length), and the answer (`ulValueLen` to write back; the caller's own
/// until answered).
pub struct AttributeRequest<'a> {
    pub type_: CK_ATTRIBUTE_TYPE,
    pub value: Option<&'a mut [u8]>,
    pub answer: CK_ULONG,
}

impl<'a> AttributeRequest<'a> {
    pub fn new(type_: CK_ATTRIBUTE_TYPE, value: Option<&'a mut [u8]>, given: CK_ULONG) -> Self {
        AttributeRequest {
            type_,
            value,
            answer: given,
        }
    }

    /// Answers with `value`, or `CKR_BUFFER_TOO_SMALL` when the caller's buffer is short.
    pub fn answer_with(&mut self, value: &[u8]) -> Result<()> {
        match &mut self.value {
            None => self.answer = value.len() as CK_ULONG,
            Some(buf) if buf.len() < value.len() => {
                self.answer = CK_UNAVAILABLE_INFORMATION;
                return Err(Error::BUFFER_TOO_SMALL);
            }
            Some(buf) => {
                buf[..value.len()].copy_from_slice(value);
                self.answer = value.len() as CK_ULONG;
            }
        }
        Ok(())
    }

    /// Answers "unavailable" with the reason.
    pub fn refuse(&mut self, why: Error) -> Result<()> {
        self.answer = CK_UNAVAILABLE_INFORMATION;
        Err(why)
    }
}

/// `C_GetAttributeValue` answered from one of this module's objects: every attribute is
/// answered (value, length, or unavailable), and the error, if any, is one of theirs.
pub fn answer_attributes(object: &Object, requests: &mut [AttributeRequest]) -> Result<()> {
    let mut result = Ok(());
    for wanted in requests.iter_mut() {
        let answered = match object.readable(wanted.type_) {
            Readable::Value(value) => wanted.answer_with(value),
            Readable::Sensitive => wanted.refuse(Error(CKR_ATTRIBUTE_SENSITIVE)),
            Readable::Invalid => wanted.refuse(Error::ATTRIBUTE_TYPE_INVALID),
        };
        if let Err(e) = answered {
            result = Err(e);
        }
    }
    result
}

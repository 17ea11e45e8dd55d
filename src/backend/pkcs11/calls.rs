//! The real HSM's functions as the forwarding backend calls them on the application's behalf:
//! typed arguments (already decoded and bounded by the ABI layer) turned back into the C
//! structures the library takes. The caller's own buffers are passed through, never copied.

use super::library::{raw_template, HsmLibrary, EMPTY};
use crate::backend::{Dual, Recover};
use crate::error::{Error, Result};
use crate::mechanism::{Mechanism, Param};
use crate::token::attributes::Attributes;
use crate::token::io::{AttributeRequest, Output, Step};
use crate::token::operations::OpKind;
use cryptoki_sys::*;
use std::ptr;

/// Calls a function of the library; its return value becomes ours.
macro_rules! real {
    ($lib:expr, $name:ident($($arg:expr),* $(,)?)) => {{
        let func = $lib.functions().$name.ok_or(Error::FUNCTION_NOT_SUPPORTED)?;
        // SAFETY: a function of the loaded library, called per PKCS#11 with arguments built
        // here from live Rust values (slices, owned structures) that outlive the call.
        let rv = unsafe { func($($arg),*) };
        $lib.outcome(stringify!($name), rv)
    }};
}

/// A `CK_MECHANISM` rebuilt from a decoded one; its parameter points into `self` and into
/// the decoded mechanism, which must outlive it.
pub struct RawMechanism {
    mechanism: CK_MECHANISM,
    _param: Option<Box<dyn std::any::Any>>,
}

impl RawMechanism {
    pub fn new(m: &Mechanism) -> Result<Self> {
        fn boxed<T: 'static>(value: T) -> (Box<dyn std::any::Any>, *mut T) {
            let mut b = Box::new(value);
            let p: *mut T = &mut *b;
            (b, p)
        }
        let context_ptr = |c: &Vec<u8>| {
            if c.is_empty() {
                ptr::null_mut()
            } else {
                c.as_ptr() as *mut CK_BYTE
            }
        };
        let (param, ptr, len): (Option<Box<dyn std::any::Any>>, *mut std::ffi::c_void, usize) =
            match &m.param {
                Param::None => (None, ptr::null_mut(), 0),
                Param::Opaque(bytes) => (None, bytes.as_ptr() as *mut _, bytes.len()),
                Param::Gcm(gcm) => {
                    // An empty IV is refused: PKCS#11 wants at least one byte, and GCM without
                    // one is unsafe (SoftHSM2 would accept it).
                    if gcm.iv.is_empty() || gcm.tag_bits > 128 {
                        return Err(Error::MECHANISM_PARAM_INVALID);
                    }
                    let (b, p) = boxed(CK_GCM_PARAMS {
                        pIv: gcm.iv.as_ptr() as *mut _,
                        ulIvLen: gcm.iv.len() as CK_ULONG,
                        ulIvBits: (gcm.iv.len() * 8) as CK_ULONG,
                        // Some libraries read the AAD pointer even when its length is 0.
                        pAAD: input(&gcm.aad).0,
                        ulAADLen: gcm.aad.len() as CK_ULONG,
                        ulTagBits: gcm.tag_bits as CK_ULONG,
                    });
                    (Some(b), p as *mut _, std::mem::size_of::<CK_GCM_PARAMS>())
                }
                Param::SignContext { hedge, context } => {
                    let (b, p) = boxed(CK_SIGN_ADDITIONAL_CONTEXT {
                        hedgeVariant: *hedge,
                        pContext: context_ptr(context),
                        ulContextLen: context.len() as CK_ULONG,
                    });
                    let size = std::mem::size_of::<CK_SIGN_ADDITIONAL_CONTEXT>();
                    (Some(b), p as *mut _, size)
                }
                Param::HashSignContext {
                    hedge,
                    context,
                    hash,
                } => {
                    let (b, p) = boxed(CK_HASH_SIGN_ADDITIONAL_CONTEXT {
                        hedgeVariant: *hedge,
                        pContext: context_ptr(context),
                        ulContextLen: context.len() as CK_ULONG,
                        hash: *hash,
                    });
                    let size = std::mem::size_of::<CK_HASH_SIGN_ADDITIONAL_CONTEXT>();
                    (Some(b), p as *mut _, size)
                }
                Param::Eddsa { prehash, context } => {
                    let (b, p) = boxed(CK_EDDSA_PARAMS {
                        phFlag: CK_BBOOL::from(*prehash),
                        ulContextDataLen: context.len() as CK_ULONG,
                        pContextData: context_ptr(context),
                    });
                    (Some(b), p as *mut _, std::mem::size_of::<CK_EDDSA_PARAMS>())
                }
            };
        Ok(RawMechanism {
            mechanism: CK_MECHANISM {
                mechanism: m.mechanism,
                pParameter: ptr,
                ulParameterLen: len as CK_ULONG,
            },
            _param: param,
        })
    }

    fn as_ptr(&mut self) -> *mut CK_MECHANISM {
        &mut self.mechanism
    }
}

/// An input buffer's pointer: never NULL (some libraries dereference it at length 0).
fn input(data: &[u8]) -> (*mut CK_BYTE, CK_ULONG) {
    let ptr = if data.is_empty() {
        EMPTY.as_ptr()
    } else {
        data.as_ptr()
    };
    (ptr as *mut _, data.len() as CK_ULONG)
}

impl HsmLibrary {
    pub fn slot_info(&self, slot: CK_SLOT_ID) -> Result<CK_SLOT_INFO> {
        let mut info = CK_SLOT_INFO::default();
        real!(self, C_GetSlotInfo(slot, &mut info))?;
        Ok(info)
    }

    pub fn mechanism_info(
        &self,
        slot: CK_SLOT_ID,
        kind: CK_MECHANISM_TYPE,
    ) -> Result<CK_MECHANISM_INFO> {
        let mut info = CK_MECHANISM_INFO::default();
        real!(self, C_GetMechanismInfo(slot, kind, &mut info))?;
        Ok(info)
    }

    pub fn init_token(&self, slot: CK_SLOT_ID, so_pin: &[u8], label: &[u8; 32]) -> Result<()> {
        let (pin, len) = input(so_pin);
        real!(self, C_InitToken(slot, pin, len, label.as_ptr() as *mut _))
    }

    pub fn init_pin(&self, session: CK_SESSION_HANDLE, pin: &[u8]) -> Result<()> {
        let (pin, len) = input(pin);
        real!(self, C_InitPIN(session, pin, len))
    }

    pub fn set_pin(&self, session: CK_SESSION_HANDLE, old: &[u8], new: &[u8]) -> Result<()> {
        let ((old, old_len), (new, new_len)) = (input(old), input(new));
        real!(self, C_SetPIN(session, old, old_len, new, new_len))
    }

    /// `C_Login`, or with a user name the library's `C_LoginUser` (3.0); a library without
    /// one has no named users, so a name is a bad argument.
    pub fn login_user(
        &self,
        session: CK_SESSION_HANDLE,
        user: CK_USER_TYPE,
        pin: &[u8],
        username: &[u8],
    ) -> Result<()> {
        let (pin, len) = input(pin);
        if username.is_empty() {
            return real!(self, C_Login(session, user, pin, len));
        }
        let login_user = self.newer.login_user.ok_or(Error::ARGUMENTS_BAD)?;
        let (name, name_len) = input(username);
        // SAFETY: the library's own function on a session of ours, with the PIN and the name
        // borrowed for the call.
        let rv = unsafe { login_user(session, user, pin, len, name, name_len) };
        self.outcome("C_LoginUser", rv)
    }

    pub fn operation_state(&self, session: CK_SESSION_HANDLE, mut out: Output) -> Result<()> {
        let (buf, len) = out.raw();
        real!(self, C_GetOperationState(session, buf, len))
    }

    pub fn set_operation_state(
        &self,
        session: CK_SESSION_HANDLE,
        state: &[u8],
        encryption_key: CK_OBJECT_HANDLE,
        authentication_key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let (state, len) = input(state);
        real!(
            self,
            C_SetOperationState(session, state, len, encryption_key, authentication_key)
        )
    }

    pub fn copy_object(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        template: &Attributes,
    ) -> Result<CK_OBJECT_HANDLE> {
        let mut raw = raw_template(template);
        let mut copy = CK_INVALID_HANDLE;
        real!(
            self,
            C_CopyObject(
                session,
                object,
                raw.as_mut_ptr(),
                raw.len() as CK_ULONG,
                &mut copy
            )
        )?;
        Ok(copy)
    }

    pub fn object_size(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
    ) -> Result<CK_ULONG> {
        let mut size = 0;
        real!(self, C_GetObjectSize(session, object, &mut size))?;
        Ok(size)
    }

    /// `C_GetAttributeValue` into the caller's buffers; every request gets the library's answer.
    pub fn get_attributes(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        requests: &mut [AttributeRequest],
    ) -> Result<()> {
        let mut raw: Vec<CK_ATTRIBUTE> = requests
            .iter_mut()
            .map(|r| {
                let (ptr, len) = match &mut r.value {
                    Some(buf) => (buf.as_mut_ptr() as *mut _, buf.len() as CK_ULONG),
                    None => (ptr::null_mut(), 0),
                };
                CK_ATTRIBUTE {
                    type_: r.type_,
                    pValue: ptr,
                    ulValueLen: len,
                }
            })
            .collect();
        let result = real!(
            self,
            C_GetAttributeValue(session, object, raw.as_mut_ptr(), raw.len() as CK_ULONG)
        );
        for (request, answered) in requests.iter_mut().zip(&raw) {
            request.answer = answered.ulValueLen;
        }
        result
    }

    /// `C_xInit` of an operation the HSM performs.
    pub fn init(
        &self,
        session: CK_SESSION_HANDLE,
        kind: OpKind,
        mechanism: &Mechanism,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let mut raw = RawMechanism::new(mechanism)?;
        let m = raw.as_ptr();
        match kind {
            OpKind::Digest => real!(self, C_DigestInit(session, m)),
            OpKind::Sign => real!(self, C_SignInit(session, m, key)),
            OpKind::Verify => real!(self, C_VerifyInit(session, m, key)),
            OpKind::Encrypt => real!(self, C_EncryptInit(session, m, key)),
            OpKind::Decrypt => real!(self, C_DecryptInit(session, m, key)),
        }
    }

    /// One call of an operation the HSM performs.
    pub fn step(&self, session: CK_SESSION_HANDLE, kind: OpKind, step: Step) -> Result<()> {
        use OpKind::*;
        match (kind, step) {
            (_, Step::Whole(data, mut out)) => {
                let (data, len) = input(data);
                let (buf, out_len) = out.raw();
                match kind {
                    Digest => real!(self, C_Digest(session, data, len, buf, out_len)),
                    Sign => real!(self, C_Sign(session, data, len, buf, out_len)),
                    Encrypt => real!(self, C_Encrypt(session, data, len, buf, out_len)),
                    Decrypt => real!(self, C_Decrypt(session, data, len, buf, out_len)),
                    Verify => Err(Error::GENERAL),
                }
            }
            (_, Step::Update(part)) => {
                let (part, len) = input(part);
                match kind {
                    Digest => real!(self, C_DigestUpdate(session, part, len)),
                    Sign => real!(self, C_SignUpdate(session, part, len)),
                    Verify => real!(self, C_VerifyUpdate(session, part, len)),
                    Encrypt | Decrypt => Err(Error::GENERAL),
                }
            }
            (_, Step::CipherUpdate(part, mut out)) => {
                let (part, len) = input(part);
                let (buf, out_len) = out.raw();
                match kind {
                    Encrypt => real!(self, C_EncryptUpdate(session, part, len, buf, out_len)),
                    Decrypt => real!(self, C_DecryptUpdate(session, part, len, buf, out_len)),
                    _ => Err(Error::GENERAL),
                }
            }
            (_, Step::Final(mut out)) => {
                let (buf, out_len) = out.raw();
                match kind {
                    Digest => real!(self, C_DigestFinal(session, buf, out_len)),
                    Sign => real!(self, C_SignFinal(session, buf, out_len)),
                    Encrypt => real!(self, C_EncryptFinal(session, buf, out_len)),
                    Decrypt => real!(self, C_DecryptFinal(session, buf, out_len)),
                    Verify => Err(Error::GENERAL),
                }
            }
            (Verify, Step::Verify(data, signature)) => {
                let ((data, len), (sig, sig_len)) = (input(data), input(signature));
                real!(self, C_Verify(session, data, len, sig, sig_len))
            }
            (Verify, Step::VerifyFinal(signature)) => {
                let (sig, sig_len) = input(signature);
                real!(self, C_VerifyFinal(session, sig, sig_len))
            }
            _ => Err(Error::GENERAL),
        }
    }

    /// A secret key generated inside the HSM.
    pub fn generate_key(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: &Mechanism,
        template: &Attributes,
    ) -> Result<CK_OBJECT_HANDLE> {
        let mut raw = RawMechanism::new(mechanism)?;
        let mut attrs = raw_template(template);
        let mut key = CK_INVALID_HANDLE;
        real!(
            self,
            C_GenerateKey(
                session,
                raw.as_ptr(),
                attrs.as_mut_ptr(),
                attrs.len() as CK_ULONG,
                &mut key
            )
        )?;
        Ok(key)
    }

    /// A key pair generated inside the HSM: (public, private) handles.
    /// Whether the HSM encapsulates keys itself (its 3.2 interface has the functions).
    pub fn has_kem(&self) -> bool {
        self.newer.encapsulate.is_some() && self.newer.decapsulate.is_some()
    }

    /// `C_EncapsulateKey` in the HSM: the ciphertext (its length asked first) and the new
    /// secret key's handle.
    pub fn encapsulate(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: &Mechanism,
        public_key: CK_OBJECT_HANDLE,
        template: &Attributes,
    ) -> Result<(Vec<u8>, CK_OBJECT_HANDLE)> {
        let f = self
            .newer
            .encapsulate
            .ok_or(Error::FUNCTION_NOT_SUPPORTED)?;
        let mut raw = RawMechanism::new(mechanism)?;
        let mut attrs = raw_template(template);
        let n = attrs.len() as CK_ULONG;
        let (mut len, mut key): (CK_ULONG, CK_OBJECT_HANDLE) = (0, CK_INVALID_HANDLE);
        // SAFETY: the library's own function; mechanism, template and out-pointers are live
        // values of this frame; a NULL ciphertext asks the length only.
        let rv = unsafe {
            f(
                session,
                raw.as_ptr(),
                public_key,
                attrs.as_mut_ptr(),
                n,
                ptr::null_mut(),
                &mut len,
                &mut key,
            )
        };
        self.outcome("C_EncapsulateKey", rv)?;
        let mut ciphertext = vec![0u8; len as usize];
        // SAFETY: as above, with a buffer of the length the library asked.
        let rv = unsafe {
            f(
                session,
                raw.as_ptr(),
                public_key,
                attrs.as_mut_ptr(),
                n,
                ciphertext.as_mut_ptr(),
                &mut len,
                &mut key,
            )
        };
        self.outcome("C_EncapsulateKey", rv)?;
        ciphertext.truncate(len as usize);
        Ok((ciphertext, key))
    }

    /// `C_DecapsulateKey` in the HSM: the new secret key's handle.
    pub fn decapsulate(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: &Mechanism,
        private_key: CK_OBJECT_HANDLE,
        template: &Attributes,
        ciphertext: &[u8],
    ) -> Result<CK_OBJECT_HANDLE> {
        let f = self
            .newer
            .decapsulate
            .ok_or(Error::FUNCTION_NOT_SUPPORTED)?;
        let mut raw = RawMechanism::new(mechanism)?;
        let mut attrs = raw_template(template);
        let (data, len) = input(ciphertext);
        let mut key = CK_INVALID_HANDLE;
        // SAFETY: the library's own function; every pointer is a live value of this frame.
        let rv = unsafe {
            f(
                session,
                raw.as_ptr(),
                private_key,
                attrs.as_mut_ptr(),
                attrs.len() as CK_ULONG,
                data,
                len,
                &mut key,
            )
        };
        self.outcome("C_DecapsulateKey", rv)?;
        Ok(key)
    }

    pub fn generate_key_pair(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: &Mechanism,
        public: &Attributes,
        private: &Attributes,
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        let mut raw = RawMechanism::new(mechanism)?;
        let (mut public, mut private) = (raw_template(public), raw_template(private));
        let (mut public_key, mut private_key) = (CK_INVALID_HANDLE, CK_INVALID_HANDLE);
        real!(
            self,
            C_GenerateKeyPair(
                session,
                raw.as_ptr(),
                public.as_mut_ptr(),
                public.len() as CK_ULONG,
                private.as_mut_ptr(),
                private.len() as CK_ULONG,
                &mut public_key,
                &mut private_key
            )
        )?;
        Ok((public_key, private_key))
    }

    pub fn seed_random(&self, session: CK_SESSION_HANDLE, seed: &[u8]) -> Result<()> {
        let (seed, len) = input(seed);
        real!(self, C_SeedRandom(session, seed, len))
    }

    pub fn generate_random(&self, session: CK_SESSION_HANDLE, out: &mut [u8]) -> Result<()> {
        if out.is_empty() {
            return real!(self, C_GenerateRandom(session, EMPTY.as_ptr() as *mut _, 0));
        }
        real!(
            self,
            C_GenerateRandom(session, out.as_mut_ptr(), out.len() as CK_ULONG)
        )
    }

    pub fn digest_key(&self, session: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) -> Result<()> {
        real!(self, C_DigestKey(session, key))
    }

    pub fn wrap_key(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: &Mechanism,
        wrapping: CK_OBJECT_HANDLE,
        key: CK_OBJECT_HANDLE,
        mut out: Output,
    ) -> Result<()> {
        let mut raw = RawMechanism::new(mechanism)?;
        let (buf, len) = out.raw();
        real!(
            self,
            C_WrapKey(session, raw.as_ptr(), wrapping, key, buf, len)
        )
    }

    pub fn unwrap_key(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: &Mechanism,
        unwrapping: CK_OBJECT_HANDLE,
        wrapped: &[u8],
        template: &Attributes,
    ) -> Result<CK_OBJECT_HANDLE> {
        let mut raw = RawMechanism::new(mechanism)?;
        let mut attrs = raw_template(template);
        let (wrapped, wrapped_len) = input(wrapped);
        let mut key = CK_INVALID_HANDLE;
        real!(
            self,
            C_UnwrapKey(
                session,
                raw.as_ptr(),
                unwrapping,
                wrapped,
                wrapped_len,
                attrs.as_mut_ptr(),
                attrs.len() as CK_ULONG,
                &mut key
            )
        )?;
        Ok(key)
    }

    pub fn derive_key(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: &Mechanism,
        base: CK_OBJECT_HANDLE,
        template: &Attributes,
    ) -> Result<CK_OBJECT_HANDLE> {
        let mut raw = RawMechanism::new(mechanism)?;
        let mut attrs = raw_template(template);
        let mut key = CK_INVALID_HANDLE;
        real!(
            self,
            C_DeriveKey(
                session,
                raw.as_ptr(),
                base,
                attrs.as_mut_ptr(),
                attrs.len() as CK_ULONG,
                &mut key
            )
        )?;
        Ok(key)
    }

    pub fn recover_init(
        &self,
        session: CK_SESSION_HANDLE,
        recover: Recover,
        mechanism: &Mechanism,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let mut raw = RawMechanism::new(mechanism)?;
        match recover {
            Recover::Sign => real!(self, C_SignRecoverInit(session, raw.as_ptr(), key)),
            Recover::Verify => real!(self, C_VerifyRecoverInit(session, raw.as_ptr(), key)),
        }
    }

    pub fn recover(
        &self,
        session: CK_SESSION_HANDLE,
        recover: Recover,
        data: &[u8],
        mut out: Output,
    ) -> Result<()> {
        let (data, len) = input(data);
        let (buf, out_len) = out.raw();
        match recover {
            Recover::Sign => real!(self, C_SignRecover(session, data, len, buf, out_len)),
            Recover::Verify => real!(self, C_VerifyRecover(session, data, len, buf, out_len)),
        }
    }

    pub fn dual_update(
        &self,
        session: CK_SESSION_HANDLE,
        dual: Dual,
        data: &[u8],
        mut out: Output,
    ) -> Result<()> {
        let (data, len) = input(data);
        let (buf, out_len) = out.raw();
        match dual {
            Dual::DigestEncrypt => {
                real!(
                    self,
                    C_DigestEncryptUpdate(session, data, len, buf, out_len)
                )
            }
            Dual::DecryptDigest => {
                real!(
                    self,
                    C_DecryptDigestUpdate(session, data, len, buf, out_len)
                )
            }
            Dual::SignEncrypt => real!(self, C_SignEncryptUpdate(session, data, len, buf, out_len)),
            Dual::DecryptVerify => {
                real!(
                    self,
                    C_DecryptVerifyUpdate(session, data, len, buf, out_len)
                )
            }
        }
    }
}

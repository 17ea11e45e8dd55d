//! A session of an agent slot: each call is one request on the agent's session that stands
//! for it, opened again (and the login replayed) when the agent has restarted.

// The protocol's numbers are 64-bit; CK_ULONG is 32 bits on some platforms, so the casts stay.
#![allow(clippy::unnecessary_cast)]

use super::link::Conn;
use super::protocol::{Reply, Request, Response, Secret, SessionCall, WireStep, MAX_OUTPUT};
use super::AgentToken;
use crate::backend::BackendSession;
use crate::error::{Error, Result};
use crate::mechanism::Mechanism;
use crate::token::attributes::Attributes;
use crate::token::io::{AttributeRequest, Output, Step};
use crate::token::operations::{OpKind, Operations};
use cryptoki_sys::*;
use parking_lot::Mutex;
use std::sync::Arc;

pub(crate) struct AgentSession {
    pub token: Arc<AgentToken>,
    pub flags: CK_FLAGS,
    /// The agent instance (epoch) and the agent's session that stands for this one; epoch 0
    /// after a request went unanswered.
    pub remote: Mutex<(u64, u64)>,
    /// An agent session given up after a request on it went unanswered (its state unknown:
    /// the request may still run there), closed when the agent answers again.
    pub abandoned: Mutex<Option<(u64, u64)>>,
    pub ops: Operations,
    /// Signing and verification this session has begun at the agent: the same `C_xInit`
    /// again is answered here and travels with the operation's first step (one round trip
    /// per signature instead of two). Forgotten when the key changes here, at login and
    /// logout, and with the agent session.
    pub leases: Mutex<Vec<Lease>>,
    /// Per kind, an init answered here and not sent yet.
    pub deferred: Mutex<[Option<Deferred>; 5]>,
}

/// An init answered here: its mechanism and key, sent with the operation's first step.
pub type Deferred = (Mechanism, Option<u64>);

/// A `C_xInit` the agent accepted: kind, key and the mechanism as encoded.
#[derive(PartialEq, Eq)]
pub struct Lease {
    kind: OpKind,
    key: CK_OBJECT_HANDLE,
    mechanism: Vec<u8>,
}

/// The most leases a session keeps (an application signs with few keys at a time).
const MAX_LEASES: usize = 16;

fn slot_of(kind: OpKind) -> usize {
    kind as usize
}

fn secret(bytes: &[u8]) -> Secret {
    Secret::new(bytes.to_vec())
}

/// The buffer size a request announces: what the caller offers, capped to what one answer
/// can carry.
fn offered(out: &Output) -> Option<u64> {
    out.capacity().map(|c| (c as u64).min(MAX_OUTPUT))
}

fn handle(reply: Reply) -> Result<CK_OBJECT_HANDLE> {
    match reply {
        Reply::Handle(h) => Ok(h as CK_OBJECT_HANDLE),
        _ => Err(Error::DEVICE),
    }
}

impl AgentSession {
    /// The agent's session for this one on `conn`'s agent instance, opened there when the
    /// agent restarted since. An operation under way went with the old one: its next step
    /// answers `CKR_OPERATION_NOT_INITIALIZED` from the new one, which ends it here too (the
    /// operations' lock may be held by the caller, so they are not touched here).
    fn remote(&self, conn: &mut Conn) -> Result<u64> {
        let mut remote = self.remote.lock();
        if remote.0 == conn.epoch {
            return Ok(remote.1);
        }
        let token = self.token.token_id(conn)?;
        let request = Request::OpenSession {
            token,
            flags: self.flags as u64,
        };
        let Reply::Session(id) = conn.request(&request)?.into_result()? else {
            return Err(Error::DEVICE);
        };
        self.token.replay_login(conn, id)?;
        *remote = (conn.epoch, id);
        self.leases.lock().clear();
        if let Some((epoch, old)) = self.abandoned.lock().take() {
            if epoch == conn.epoch {
                let call = SessionCall::Close;
                let _ = conn.request(&Request::Session { session: old, call });
            }
        }
        Ok(id)
    }

    /// A request on `session` went unanswered: the next call starts on a fresh agent session
    /// (an operation the agent may still have begun there cannot get in its way).
    fn unanswered(&self, conn: &Conn, session: u64) {
        if conn.is_broken() {
            let mut remote = self.remote.lock();
            if remote.1 == session && remote.0 != 0 {
                *self.abandoned.lock() = Some(*remote);
                remote.0 = 0;
                self.leases.lock().clear();
            }
        }
    }

    /// One request on this session's agent session.
    fn on_remote(&self, conn: &mut Conn, call: SessionCall) -> Result<Response> {
        let session = self.remote(conn)?;
        let response = conn.request(&Request::Session { session, call });
        self.unanswered(conn, session);
        response
    }

    /// One call; the whole response (some carry data with an error).
    fn exchange(&self, call: SessionCall) -> Result<Response> {
        self.token.link.with_conn(|conn| self.on_remote(conn, call))
    }

    fn call(&self, call: SessionCall) -> Result<Reply> {
        self.exchange(call)?.into_result()
    }

    /// A call whose answer fills the caller's output buffer.
    fn call_out(&self, call: SessionCall, out: Output) -> Result<()> {
        let response = self.exchange(call)?;
        let rv = response.rv;
        match response.reply {
            Reply::Output { len, data } => {
                out.fill(len as CK_ULONG, data.as_ref().map(|d| &d[..]))?
            }
            Reply::None => {}
            _ => return Err(Error::DEVICE),
        }
        match rv {
            0 => Ok(()),
            rv => Err(Error(rv as CK_RV)),
        }
    }

    fn wire_step(step: Step) -> (WireStep, Option<Output>) {
        match step {
            Step::Whole(data, out) => {
                let wire = WireStep::Whole {
                    data: secret(data),
                    out: offered(&out),
                };
                (wire, Some(out))
            }
            Step::Update(data) => (WireStep::Update { data: secret(data) }, None),
            Step::CipherUpdate(data, out) => {
                let wire = WireStep::CipherUpdate {
                    data: secret(data),
                    out: offered(&out),
                };
                (wire, Some(out))
            }
            Step::Final(out) => (WireStep::Final { out: offered(&out) }, Some(out)),
            Step::Verify(data, signature) => (
                WireStep::Verify {
                    data: secret(data),
                    signature: signature.to_vec(),
                },
                None,
            ),
            Step::VerifyFinal(signature) => (
                WireStep::VerifyFinal {
                    signature: signature.to_vec(),
                },
                None,
            ),
        }
    }
}

impl BackendSession for AgentSession {
    fn slot_id(&self) -> CK_SLOT_ID {
        self.token.slot_id
    }

    fn ops(&self) -> &Operations {
        &self.ops
    }

    fn closed(&self) {
        let (epoch, session) = *self.remote.lock();
        // A session of an agent instance that is gone needs no closing.
        let _ = self.token.link.with_conn(|conn| {
            if conn.epoch == epoch {
                let call = SessionCall::Close;
                conn.request(&Request::Session { session, call })?;
            }
            Ok(())
        });
    }

    fn info(&self) -> Result<CK_SESSION_INFO> {
        match self.call(SessionCall::Info)? {
            Reply::SessionInfo {
                state,
                flags,
                device_error,
            } => Ok(CK_SESSION_INFO {
                slotID: self.token.slot_id,
                state: state as _,
                flags: flags as _,
                ulDeviceError: device_error as _,
            }),
            _ => Err(Error::DEVICE),
        }
    }

    fn login(&self, user: CK_USER_TYPE, pin: &[u8]) -> Result<()> {
        let epoch = self.token.link.with_conn(|conn| {
            let call = SessionCall::Login {
                user: user as u64,
                pin: secret(pin),
            };
            self.on_remote(conn, call)?.into_result()?;
            Ok(conn.epoch)
        })?;
        if user != CKU_CONTEXT_SPECIFIC {
            self.token.remember_login(user, pin, epoch);
        }
        self.leases.lock().clear();
        Ok(())
    }

    fn logout(&self) -> Result<()> {
        self.leases.lock().clear();
        self.call(SessionCall::Logout)?;
        self.token.forget_login();
        Ok(())
    }

    fn init_pin(&self, pin: &[u8]) -> Result<()> {
        self.call(SessionCall::InitPin { pin: secret(pin) })?;
        Ok(())
    }

    fn set_pin(&self, old: &[u8], new: &[u8]) -> Result<()> {
        self.call(SessionCall::SetPin {
            old: secret(old),
            new: secret(new),
        })?;
        if let Some(login) = self.token.login.lock().as_mut() {
            login.pin = secret(new);
        }
        Ok(())
    }

    fn create_object(&self, template: Attributes) -> Result<CK_OBJECT_HANDLE> {
        let template = template.serialize().into();
        handle(self.call(SessionCall::CreateObject { template })?)
    }

    fn copy_object(
        &self,
        object: CK_OBJECT_HANDLE,
        template: Attributes,
    ) -> Result<CK_OBJECT_HANDLE> {
        let call = SessionCall::CopyObject {
            object: object as u64,
            template: template.serialize().into(),
        };
        handle(self.call(call)?)
    }

    fn destroy_object(&self, object: CK_OBJECT_HANDLE) -> Result<()> {
        self.leases.lock().retain(|l| l.key != object);
        let object = object as u64;
        self.call(SessionCall::DestroyObject { object })?;
        Ok(())
    }

    fn object_size(&self, object: CK_OBJECT_HANDLE) -> Result<CK_ULONG> {
        let object = object as u64;
        match self.call(SessionCall::ObjectSize { object })? {
            Reply::Size(size) => Ok(size as CK_ULONG),
            _ => Err(Error::DEVICE),
        }
    }

    fn get_attributes(
        &self,
        object: CK_OBJECT_HANDLE,
        requests: &mut [AttributeRequest],
    ) -> Result<()> {
        let call = SessionCall::GetAttributes {
            object: object as u64,
            requests: requests
                .iter()
                .map(|r| {
                    let size = r.value.as_ref().map(|v| (v.len() as u64).min(MAX_OUTPUT));
                    (r.type_ as u64, size)
                })
                .collect(),
        };
        let response = self.exchange(call)?;
        match response.reply {
            Reply::Attributes(answers) if answers.len() == requests.len() => {
                for (request, (answer, value)) in requests.iter_mut().zip(answers) {
                    if let (Some(buf), Some(value)) = (request.value.as_mut(), value) {
                        buf.get_mut(..value.len())
                            .ok_or(Error::DEVICE)?
                            .copy_from_slice(&value);
                    }
                    request.answer = answer as CK_ULONG;
                }
            }
            Reply::None if response.rv != 0 => {}
            _ => return Err(Error::DEVICE),
        }
        match response.rv {
            0 => Ok(()),
            rv => Err(Error(rv as CK_RV)),
        }
    }

    fn set_attributes(&self, object: CK_OBJECT_HANDLE, template: Attributes) -> Result<()> {
        self.leases.lock().retain(|l| l.key != object);
        let call = SessionCall::SetAttributes {
            object: object as u64,
            template: template.serialize().into(),
        };
        self.call(call)?;
        Ok(())
    }

    fn find_init(&self, template: Attributes) -> Result<()> {
        self.ops.find_init(|| {
            let template = template.serialize().into();
            match self.call(SessionCall::Find { template })? {
                Reply::Handles(found) => Ok(found.into_iter().map(|h| h as _).collect()),
                _ => Err(Error::DEVICE),
            }
        })
    }

    fn init(
        &self,
        kind: OpKind,
        mechanism: &Mechanism,
        key: Option<CK_OBJECT_HANDLE>,
    ) -> Result<()> {
        self.ops.begin_in_hsm(kind, || {
            let lease = match (kind, key) {
                (OpKind::Sign | OpKind::Verify, Some(key)) => Some(Lease {
                    kind,
                    key,
                    mechanism: postcard::to_stdvec(mechanism).map_err(|_| Error::GENERAL)?,
                }),
                _ => None,
            };
            if let Some(lease) = &lease {
                if self.leases.lock().contains(lease) {
                    let key = Some(lease.key as u64);
                    self.deferred.lock()[slot_of(kind)] = Some((mechanism.clone(), key));
                    return Ok(());
                }
            }
            self.call(SessionCall::Init {
                kind: kind.into(),
                mechanism: mechanism.clone(),
                key: key.map(|k| k as u64),
            })?;
            if let Some(lease) = lease {
                let mut leases = self.leases.lock();
                if leases.len() >= MAX_LEASES {
                    leases.remove(0);
                }
                leases.push(lease);
            }
            Ok(())
        })
    }

    fn cancel(&self, kind: OpKind) {
        if self.ops.cancel(kind) != crate::token::operations::Performer::None
            && self.deferred.lock()[slot_of(kind)].take().is_none()
        {
            let _ = self.call(SessionCall::Cancel { kind: kind.into() });
        }
    }

    fn step(&self, kind: OpKind, step: Step) -> Result<()> {
        let continues = step.continues();
        self.ops.step_in_hsm(kind, continues, || {
            let (step, out) = Self::wire_step(step);
            let call = match self.deferred.lock()[slot_of(kind)].take() {
                Some((mechanism, key)) => SessionCall::Begin {
                    kind: kind.into(),
                    mechanism,
                    key,
                    step,
                },
                None => SessionCall::Step {
                    kind: kind.into(),
                    step,
                },
            };
            match out {
                Some(out) => self.call_out(call, out),
                None => self.call(call).map(drop),
            }
        })
    }

    fn generate_key(
        &self,
        mechanism: &Mechanism,
        template: Attributes,
    ) -> Result<CK_OBJECT_HANDLE> {
        handle(self.call(SessionCall::GenerateKey {
            mechanism: mechanism.clone(),
            template: template.serialize().into(),
        })?)
    }

    fn generate_key_pair(
        &self,
        mechanism: &Mechanism,
        public: Attributes,
        private: Attributes,
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        let call = SessionCall::GenerateKeyPair {
            mechanism: mechanism.clone(),
            public: public.serialize().into(),
            private: private.serialize().into(),
        };
        match self.call(call)? {
            Reply::Pair(public, private) => Ok((public as _, private as _)),
            _ => Err(Error::DEVICE),
        }
    }

    fn seed_random(&self, seed: &[u8]) -> Result<()> {
        self.call(SessionCall::SeedRandom { seed: secret(seed) })?;
        Ok(())
    }

    fn generate_random(&self, out: &mut [u8]) -> Result<()> {
        // Big requests go as several calls, each answer inside one frame.
        for chunk in out.chunks_mut(64 * 1024) {
            let len = chunk.len() as u32;
            match self.call(SessionCall::GenerateRandom { len })? {
                Reply::Random(bytes) if bytes.len() == chunk.len() => chunk.copy_from_slice(&bytes),
                _ => return Err(Error::DEVICE),
            }
        }
        Ok(())
    }

    fn ciphertext_len(&self, mechanism: &Mechanism, key: CK_OBJECT_HANDLE) -> Result<usize> {
        let call = SessionCall::CiphertextLen {
            mechanism: mechanism.clone(),
            key: key as u64,
        };
        match self.call(call)? {
            Reply::Size(len) => Ok(len as usize),
            _ => Err(Error::DEVICE),
        }
    }

    fn encapsulate(
        &self,
        mechanism: &Mechanism,
        key: CK_OBJECT_HANDLE,
        template: Attributes,
    ) -> Result<(Vec<u8>, CK_OBJECT_HANDLE)> {
        let call = SessionCall::Encapsulate {
            mechanism: mechanism.clone(),
            key: key as u64,
            template: template.serialize().into(),
        };
        match self.call(call)? {
            Reply::Encapsulated { ciphertext, handle } => Ok((ciphertext, handle as _)),
            _ => Err(Error::DEVICE),
        }
    }

    fn decapsulate(
        &self,
        mechanism: &Mechanism,
        key: CK_OBJECT_HANDLE,
        template: Attributes,
        ciphertext: &[u8],
    ) -> Result<CK_OBJECT_HANDLE> {
        handle(self.call(SessionCall::Decapsulate {
            mechanism: mechanism.clone(),
            key: key as u64,
            template: template.serialize().into(),
            ciphertext: ciphertext.to_vec(),
        })?)
    }
}

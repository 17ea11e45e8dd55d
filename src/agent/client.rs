//! One client of the agent (one initialized module in one process, over one or more
//! connections): its own instance of each token it may use, so its login is its own, and its
//! sessions. Requests are answered here by the same backends the module uses in-process.

// The protocol's numbers are 64-bit; CK_ULONG is 32 bits on some platforms, so the casts stay.
#![allow(clippy::unnecessary_cast)]

use super::gate::GatedSlot;
use super::Agent;
use crate::backend::agent::protocol::{
    Kind, Reply, Request, Response, Secret, SessionCall, TokenEntry, WireStep, MAX_OUTPUT,
};
use crate::backend::embedded::{EmbeddedSlot, EmbeddedStore};
use crate::backend::{Backend, BackendSession};
use crate::consts::{
    B4AE_CUSTODY_AGENT, B4AE_CUSTODY_EMBEDDED, B4AE_CUSTODY_HSM_WRAPPED, CKA_B4AE_CUSTODY,
};
use crate::error::{Error, Result};
use crate::token::attributes::{ulong_bytes, Attributes};
use crate::token::io::{AttributeRequest, Output, Step};
use crate::token::operations::OpKind;
use crate::token::Token;
use cryptoki_sys::*;
use parking_lot::{Mutex, RwLock};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

// Custody as clients see it: the keys the agent opens (sealed in the HSM, or in its store) are
// held by the agent; keys the HSM holds natively stay custody 1.
const CUSTODY_AGENT: CK_ULONG = B4AE_CUSTODY_AGENT;
const CUSTODY_SEALED: CK_ULONG = B4AE_CUSTODY_HSM_WRAPPED;
const CUSTODY_EMBEDDED: CK_ULONG = B4AE_CUSTODY_EMBEDDED;

/// A session and the token (configuration index) it is on.
type TokenSession = (usize, Arc<dyn BackendSession>);

pub struct Client {
    /// Names this client state: a module whose connections all closed and that comes back
    /// finds a new one (its sessions and login gone) and opens them again.
    pub incarnation: [u8; 16],
    pub uid: u32,
    pub pid: i32,
    /// The tokens (indices into the agent's configuration) this client may use.
    allowed: Vec<usize>,
    tokens: Mutex<HashMap<usize, Arc<dyn Backend>>>,
    sessions: RwLock<HashMap<u64, TokenSession>>,
    next_session: AtomicU64,
    /// Keys (token, handle) used since this client's login: the first use is audited.
    used: Mutex<std::collections::HashSet<(usize, u64)>>,
}

fn template(bytes: &[u8]) -> Result<Attributes> {
    Attributes::deserialize(bytes).map_err(|_| Error::TEMPLATE_INCONSISTENT)
}

/// A buffer of the size a request announced (capped), for an [`Output`] or attribute value.
fn buffer(size: Option<u64>) -> Option<Secret> {
    size.map(|s| Secret::new(vec![0; s.min(MAX_OUTPUT) as usize]))
}

fn reply(result: Result<Reply>) -> Response {
    match result {
        Ok(r) => Response::ok(r),
        Err(e) => Response::error(e),
    }
}

/// Runs `f` with an [`Output`] over a buffer of `size`, answering what it delivered.
fn with_output(size: Option<u64>, f: impl FnOnce(Output) -> Result<()>) -> Response {
    let mut buf = buffer(size);
    let mut len: CK_ULONG = buf.as_ref().map_or(0, |b| b.len() as CK_ULONG);
    let result = f(Output::new(
        buf.as_deref_mut().map(|b| &mut b[..]),
        &mut len,
    ));
    let delivered = match (&result, &buf) {
        (Ok(()), Some(b)) => b.get(..len as usize).map(|d| Secret::new(d.to_vec())),
        _ => None,
    };
    Response {
        rv: result.err().map_or(0, |e| e.0 as u64),
        reply: Reply::Output {
            len: len as u64,
            data: delivered,
        },
        spin: false,
    }
}

impl Client {
    pub fn new(uid: u32, pid: i32, allowed: Vec<usize>) -> Result<Self> {
        Ok(Client {
            incarnation: crate::random::random_bytes()?,
            uid,
            pid,
            allowed,
            tokens: Mutex::new(HashMap::new()),
            sessions: RwLock::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            used: Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// This client's instance of token `id`, opened on first use.
    fn token(&self, agent: &Agent, id: u32) -> Result<Arc<dyn Backend>> {
        let index = id as usize;
        if !self.allowed.contains(&index) {
            agent.audit(
                "agent_client_refused",
                self.fields(json!({"token": id, "reason": "token not in the allow-list"})),
            );
            return Err(Error::SLOT_ID_INVALID);
        }
        let config = &agent.config.tokens[index];
        let mut tokens = self.tokens.lock();
        let token = tokens.entry(index).or_insert_with(|| {
            let store =
                EmbeddedStore::new(config.path.clone(), config.pin_kdf, config.max_pin_failures);
            let own: Arc<dyn Backend> = Arc::new(EmbeddedSlot(Arc::new(Token::new(
                0,
                config.label.clone(),
                "agent",
                Box::new(store),
            ))));
            match agent.hsm(index) {
                // The store holds this token's PINs only; the keys are in the HSM.
                Some(hsm) => Arc::new(GatedSlot {
                    gate: own,
                    inner: hsm,
                }),
                None => own,
            }
        });
        Ok(token.clone())
    }

    fn session(&self, id: u64) -> Result<TokenSession> {
        self.sessions
            .read()
            .get(&id)
            .cloned()
            .ok_or(Error::SESSION_HANDLE_INVALID)
    }

    /// The client and `extra`'s fields, for an audit line.
    fn fields(&self, extra: Value) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("uid".into(), self.uid.into());
        m.insert("client_pid".into(), self.pid.into());
        if let Value::Object(extra) = extra {
            m.extend(extra);
        }
        m
    }

    /// The application is gone: its sessions close (and with the last, its logins).
    pub fn gone(&self) {
        let sessions: Vec<_> = self.sessions.write().drain().collect();
        for (_, (_, session)) in sessions {
            session.closed();
        }
    }

    pub fn handle(&self, agent: &Agent, request: Request) -> Response {
        match request {
            // Once per connection, before anything else: a second one is the client's mistake.
            Request::Hello { .. } => Response::error(Error::DEVICE),
            Request::Tokens => Response::ok(Reply::Tokens(
                self.allowed
                    .iter()
                    .map(|&i| TokenEntry {
                        id: i as u32,
                        description: agent.config.tokens[i].label.clone(),
                    })
                    .collect(),
            )),
            Request::TokenInfo { token } => reply(
                self.token(agent, token)
                    .and_then(|t| t.token_info())
                    .map(|info| Reply::TokenInfo(Box::new((&info).into()))),
            ),
            Request::Mechanisms { token } => reply(
                self.token(agent, token)
                    .and_then(|t| t.mechanisms())
                    .map(|l| Reply::Mechanisms(l.into_iter().map(|m| m as u64).collect())),
            ),
            Request::MechanismInfo { token, mechanism } => reply(
                self.token(agent, token)
                    .and_then(|t| t.mechanism_info(mechanism as _))
                    .map(|i| Reply::MechanismInfo {
                        min: i.ulMinKeySize as u64,
                        max: i.ulMaxKeySize as u64,
                        flags: i.flags as u64,
                    }),
            ),
            Request::InitToken {
                token,
                so_pin,
                label,
            } => {
                let result = self
                    .token(agent, token)
                    .and_then(|t| t.init_token(&so_pin, &label));
                self.audit_result(agent, token as usize, "token_initialized", &result);
                reply(result.map(|_| Reply::None))
            }
            Request::OpenSession { token, flags } => reply(self.open_session(agent, token, flags)),
            Request::Session { session, call } => match self.session(session) {
                Ok((token, s)) => self.session_call(agent, token, session, &s, call),
                Err(e) => Response::error(e),
            },
        }
    }

    fn open_session(&self, agent: &Agent, token: u32, flags: u64) -> Result<Reply> {
        let flags = flags as CK_FLAGS;
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(Error(CKR_SESSION_PARALLEL_NOT_SUPPORTED));
        }
        let backend = self.token(agent, token)?;
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let session = backend.open_session(id as CK_SESSION_HANDLE, flags)?;
        self.sessions.write().insert(id, (token as usize, session));
        Ok(Reply::Session(id))
    }

    /// Audits the first use of a key since this client's login (SPEC §6).
    fn first_use(&self, agent: &Agent, token: usize, key: Option<u64>, result: &Result<()>) {
        let Some(key) = key.filter(|_| result.is_ok() && agent.audits()) else {
            return;
        };
        if self.used.lock().insert((token, key)) {
            let label = agent.config.tokens[token].label.as_str();
            agent.audit(
                "key_first_use",
                self.fields(json!({"token": label, "key": key})),
            );
        }
    }

    /// Writes the audit line of a security event, named by its outcome.
    fn audit_result<T>(&self, agent: &Agent, token: usize, event: &str, result: &Result<T>) {
        let label = agent
            .config
            .tokens
            .get(token)
            .map_or("", |t| t.label.as_str());
        let mut fields = self.fields(json!({"token": label}));
        match result {
            Ok(_) => agent.audit(event, fields),
            Err(e) => {
                fields.insert("error".into(), e.to_string().into());
                agent.audit(&format!("{event}_refused"), fields);
            }
        }
    }

    fn session_call(
        &self,
        agent: &Agent,
        token: usize,
        id: u64,
        s: &Arc<dyn BackendSession>,
        call: SessionCall,
    ) -> Response {
        let audit = |event: &str, r: &Result<Reply>| self.audit_result(agent, token, event, r);
        match call {
            SessionCall::Close => {
                if let Some((_, s)) = self.sessions.write().remove(&id) {
                    s.closed();
                }
                Response::ok(Reply::None)
            }
            SessionCall::Info => reply(s.info().map(|i| Reply::SessionInfo {
                state: i.state as u64,
                flags: i.flags as u64,
                device_error: i.ulDeviceError as u64,
            })),
            SessionCall::Login { user, pin } => {
                let result = s.login(user as CK_USER_TYPE, &pin).map(|_| Reply::None);
                let event = match result {
                    Ok(_) => Some("login_ok"),
                    Err(Error::PIN_INCORRECT) => Some("login_failed"),
                    Err(Error::PIN_LOCKED) => Some("login_locked"),
                    Err(_) => None,
                };
                if result.is_ok() {
                    self.used.lock().clear();
                }
                if let Some(event) = event {
                    let role = if user as CK_USER_TYPE == CKU_SO {
                        "so"
                    } else {
                        "user"
                    };
                    let label = agent.config.tokens[token].label.as_str();
                    agent.audit(event, self.fields(json!({"token": label, "role": role})));
                }
                reply(result)
            }
            SessionCall::Logout => {
                self.used.lock().clear();
                reply(s.logout().map(|_| Reply::None))
            }
            SessionCall::InitPin { pin } => {
                let r = s.init_pin(&pin).map(|_| Reply::None);
                audit("pin_initialized", &r);
                reply(r)
            }
            SessionCall::SetPin { old, new } => {
                let r = s.set_pin(&old, &new).map(|_| Reply::None);
                audit("pin_changed", &r);
                reply(r)
            }
            SessionCall::CreateObject { template: t } => {
                let r = template(&t)
                    .and_then(|t| s.create_object(t))
                    .map(|h| Reply::Handle(h as u64));
                audit("object_created", &r);
                reply(r)
            }
            SessionCall::CopyObject {
                object,
                template: t,
            } => {
                let r = template(&t)
                    .and_then(|t| s.copy_object(object as _, t))
                    .map(|h| Reply::Handle(h as u64));
                audit("object_copied", &r);
                reply(r)
            }
            SessionCall::DestroyObject { object } => {
                let r = s.destroy_object(object as _).map(|_| Reply::None);
                audit("object_destroyed", &r);
                reply(r)
            }
            SessionCall::ObjectSize { object } => {
                reply(s.object_size(object as _).map(|n| Reply::Size(n as u64)))
            }
            SessionCall::GetAttributes { object, requests } => {
                get_attributes(s.as_ref(), object, requests)
            }
            SessionCall::SetAttributes {
                object,
                template: t,
            } => reply(
                template(&t)
                    .and_then(|t| s.set_attributes(object as _, t))
                    .map(|_| Reply::None),
            ),
            SessionCall::Find { template: t } => {
                let held = match agent.hsm(token) {
                    Some(_) => CUSTODY_SEALED,
                    None => CUSTODY_EMBEDDED,
                };
                reply(find(s.as_ref(), &t, held))
            }
            SessionCall::Init {
                kind,
                mechanism,
                key,
            } => {
                let r = s.init(kind.into(), &mechanism, key.map(|k| k as _));
                self.first_use(agent, token, key, &r);
                reply(r.map(|_| Reply::None))
            }
            SessionCall::Cancel { kind } => {
                s.cancel(kind.into());
                Response::ok(Reply::None)
            }
            SessionCall::Step { kind, step } => self.step(s.as_ref(), kind, step),
            SessionCall::Begin {
                kind,
                mechanism,
                key,
                step,
            } => {
                let r = s.init(kind.into(), &mechanism, key.map(|k| k as _));
                self.first_use(agent, token, key, &r);
                match r {
                    Ok(()) => self.step(s.as_ref(), kind, step),
                    Err(e) => Response::error(e),
                }
            }
            SessionCall::GenerateKey {
                mechanism,
                template: t,
            } => {
                let r = template(&t)
                    .and_then(|t| s.generate_key(&mechanism, t))
                    .map(|h| Reply::Handle(h as u64));
                audit("key_created", &r);
                reply(r)
            }
            SessionCall::GenerateKeyPair {
                mechanism,
                public,
                private,
            } => {
                let r = template(&public)
                    .and_then(|p| Ok((p, template(&private)?)))
                    .and_then(|(p, q)| s.generate_key_pair(&mechanism, p, q))
                    .map(|(p, q)| Reply::Pair(p as u64, q as u64));
                audit("key_created", &r);
                reply(r)
            }
            SessionCall::SeedRandom { seed } => reply(s.seed_random(&seed).map(|_| Reply::None)),
            SessionCall::GenerateRandom { len } => {
                if len as u64 > MAX_OUTPUT {
                    return Response::error(Error::ARGUMENTS_BAD);
                }
                let mut out = Secret::new(vec![0; len as usize]);
                reply(s.generate_random(&mut out).map(|_| Reply::Random(out)))
            }
            SessionCall::CiphertextLen { mechanism, key } => reply(
                s.ciphertext_len(&mechanism, key as _)
                    .map(|n| Reply::Size(n as u64)),
            ),
            SessionCall::Encapsulate {
                mechanism,
                key,
                template: t,
            } => reply(
                template(&t)
                    .and_then(|t| s.encapsulate(&mechanism, key as _, t))
                    .map(|(ciphertext, h)| Reply::Encapsulated {
                        ciphertext,
                        handle: h as u64,
                    }),
            ),
            SessionCall::Decapsulate {
                mechanism,
                key,
                template: t,
                ciphertext,
            } => reply(
                template(&t)
                    .and_then(|t| s.decapsulate(&mechanism, key as _, t, &ciphertext))
                    .map(|h| Reply::Handle(h as u64)),
            ),
        }
    }

    fn step(&self, s: &dyn BackendSession, kind: Kind, step: WireStep) -> Response {
        let kind = OpKind::from(kind);
        if !step.fits(kind) {
            // The operation ends, as any failed call ends it.
            s.cancel(kind);
            return Response::error(Error::ARGUMENTS_BAD);
        }
        match step {
            WireStep::Whole { data, out } => {
                with_output(out, |o| s.step(kind, Step::Whole(&data, o)))
            }
            WireStep::CipherUpdate { data, out } => {
                with_output(out, |o| s.step(kind, Step::CipherUpdate(&data, o)))
            }
            WireStep::Final { out } => with_output(out, |o| s.step(kind, Step::Final(o))),
            WireStep::Update { data } => {
                reply(s.step(kind, Step::Update(&data)).map(|_| Reply::None))
            }
            WireStep::Verify { data, signature } => reply(
                s.step(kind, Step::Verify(&data, &signature))
                    .map(|_| Reply::None),
            ),
            WireStep::VerifyFinal { signature } => reply(
                s.step(kind, Step::VerifyFinal(&signature))
                    .map(|_| Reply::None),
            ),
        }
    }
}

/// The whole search, with custody 4 (what clients see) asked as the backend's own `held`.
fn find(s: &dyn BackendSession, bytes: &[u8], held: CK_ULONG) -> Result<Reply> {
    let mut wanted = template(bytes)?;
    if wanted.ulong(CKA_B4AE_CUSTODY).ok().flatten() == Some(CUSTODY_AGENT) {
        wanted.set_ulong(CKA_B4AE_CUSTODY, held);
    }
    s.find_init(wanted)?;
    let found = s.ops().find_next(usize::MAX);
    let _ = s.ops().find_final();
    Ok(Reply::Handles(
        found?.into_iter().map(|h| h as u64).collect(),
    ))
}

fn get_attributes(
    s: &dyn BackendSession,
    object: u64,
    requests: Vec<(u64, Option<u64>)>,
) -> Response {
    let mut buffers: Vec<Option<Secret>> = requests.iter().map(|(_, size)| buffer(*size)).collect();
    let mut answers: Vec<AttributeRequest> = requests
        .iter()
        .zip(buffers.iter_mut())
        .map(|((t, _), buf)| {
            let given = buf.as_ref().map_or(0, |b| b.len() as CK_ULONG);
            AttributeRequest::new(*t as _, buf.as_deref_mut().map(|b| &mut b[..]), given)
        })
        .collect();
    let result = s.get_attributes(object as _, &mut answers);
    let lens: Vec<CK_ULONG> = answers.iter().map(|a| a.answer).collect();
    drop(answers);
    if matches!(result, Err(e) if e != Error(CKR_ATTRIBUTE_SENSITIVE)
        && e != Error::ATTRIBUTE_TYPE_INVALID && e != Error::BUFFER_TOO_SMALL)
    {
        return Response::error(result.unwrap_err());
    }
    let held = [CUSTODY_SEALED, CUSTODY_EMBEDDED].map(ulong_bytes);
    let out = requests
        .iter()
        .zip(buffers)
        .zip(lens)
        .map(|(((t, _), buf), len)| {
            let value = buf.filter(|_| len != CK_UNAVAILABLE_INFORMATION).map(|b| {
                let mut v = Secret::new(b[..(len as usize).min(b.len())].to_vec());
                if *t as CK_ATTRIBUTE_TYPE == CKA_B4AE_CUSTODY
                    && held.iter().any(|h| v[..] == h[..])
                {
                    v = Secret::new(ulong_bytes(CUSTODY_AGENT));
                }
                v
            });
            (len as u64, value)
        })
        .collect();
    Response {
        rv: result.err().map_or(0, |e| e.0 as u64),
        reply: Reply::Attributes(out),
        spin: false,
    }
}

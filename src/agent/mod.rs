//! The custody agent (SPEC §4, custody 4; `b4ae-pkcs11 agent --config FILE`): a separate
//! process, under its own user, that alone holds the keys of its tokens and serves the module's
//! agent slots over a local socket. Each connection has its own thread (one client never waits
//! on another's signature), each request a bound on its size and on how long it may take to
//! arrive; a client that misbehaves loses its connection, nobody else's.

// The protocol's numbers are 64-bit; CK_ULONG is 32 bits on some platforms, so the casts stay.
#![allow(clippy::unnecessary_cast)]

mod client;
pub mod config;
mod gate;
mod hardening;
mod peer;

use crate::audit::AuditLog;
use crate::backend::agent::protocol::{self, FrameError, Reply, Request, Response, VERSION};
use crate::backend::agent::transport::{self, Patience};
use crate::backend::pkcs11::library::HsmLibrary;
use crate::backend::pkcs11::{ForwardToken, HsmSlot};
use crate::backend::{Backend, BackendSession};
use crate::error::Error;
use client::Client;
use config::{AgentBackend, AgentConfig, AgentToken, AllowList};
use cryptoki_sys::*;
use parking_lot::Mutex;
use peer::Peer;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use config::AgentConfig as Config;

/// How long a connection's thread polls for the next request before sleeping: a
/// `C_Sign` follows its `C_SignInit` within microseconds.
const REQUEST_SPIN: Duration = Duration::from_micros(300);

/// A client without a connection (see [`Agent::local_client`]); its sessions close on drop.
pub struct LocalClient(Client);

impl Drop for LocalClient {
    fn drop(&mut self) {
        self.0.gone();
    }
}

/// A client and how many connections it has open.
type Clients = HashMap<[u8; 16], (Arc<Client>, usize)>;

/// An HSM token the agent shares among its clients, and the session that keeps the agent's
/// login to it.
struct SharedHsm {
    slot: Arc<dyn Backend>,
    _login: Arc<dyn BackendSession>,
}

pub struct Agent {
    config: AgentConfig,
    allow: Vec<AllowList>,
    /// Per token: the HSM token behind it (pkcs11 tokens).
    hsm: Vec<Option<SharedHsm>>,
    clients: Mutex<Clients>,
    connections: AtomicUsize,
    /// Connection threads handling a request right now, and the processors there are: a
    /// thread (or a client) polls for the next request only while one is to spare.
    busy: AtomicUsize,
    cpus: usize,
    audit: Option<AuditLog>,
}

impl Agent {
    pub fn new(config: AgentConfig) -> Result<Self, String> {
        let allow = config
            .tokens
            .iter()
            .map(|t| t.allow_list())
            .collect::<Result<_, _>>()?;
        let audit = config.audit.as_ref().map(|a| AuditLog::new(a.path.clone()));
        let hsm = config
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| match t.backend {
                AgentBackend::Embedded => Ok(None),
                AgentBackend::Pkcs11 => open_hsm(i, t).map(Some),
            })
            .collect::<Result<_, _>>()?;
        Ok(Agent {
            config,
            allow,
            hsm,
            clients: Mutex::new(HashMap::new()),
            connections: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            audit,
        })
    }

    /// Whether an audit trail is configured.
    fn audits(&self) -> bool {
        self.audit.is_some()
    }

    fn audit(&self, event: &str, fields: Map<String, Value>) {
        if let Some(log) = &self.audit {
            log.record(event, fields);
        }
    }

    /// The HSM token behind agent token `index`, if it is a pkcs11 one.
    fn hsm(&self, index: usize) -> Option<Arc<dyn Backend>> {
        self.hsm.get(index)?.as_ref().map(|h| h.slot.clone())
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.agent.timeout_ms)
    }

    /// The tokens `peer` may use.
    fn allowed(&self, peer: &Peer) -> Vec<usize> {
        (0..self.allow.len())
            .filter(|&i| peer.allowed_by(&self.allow[i]))
            .collect()
    }

    /// Serves connections until the process is stopped.
    pub fn serve(self: Arc<Self>, listener: UnixListener) -> ! {
        loop {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            if self.connections.fetch_add(1, Ordering::SeqCst) >= self.config.agent.max_connections
            {
                self.connections.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!(
                    "connection refused: {} already open",
                    self.config.agent.max_connections
                );
                continue;
            }
            let agent = self.clone();
            let spawned = std::thread::Builder::new()
                .name("b4ae-agent-conn".into())
                .spawn(move || {
                    agent.connection(stream);
                    agent.connections.fetch_sub(1, Ordering::SeqCst);
                });
            if spawned.is_err() {
                self.connections.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// One connection: the greeting (who, which version), then requests until it closes.
    fn connection(&self, stream: UnixStream) {
        let Ok(peer) = Peer::of(&stream) else {
            return;
        };
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let Some(client) = self.greet(&stream, &peer) else {
            return;
        };
        let client_key = client.0;
        self.requests(&stream, &client.1);
        let mut clients = self.clients.lock();
        if let Some((c, count)) = clients.get_mut(&client_key) {
            *count -= 1;
            if *count == 0 {
                let c = c.clone();
                clients.remove(&client_key);
                drop(clients);
                c.gone();
            }
        }
    }

    /// Reads the `Hello`; answers it (or the refusal) and returns the client.
    fn greet(&self, stream: &UnixStream, peer: &Peer) -> Option<([u8; 16], Arc<Client>)> {
        let patience = Patience {
            spin: Duration::ZERO,
            first: Some(self.timeout()),
            rest: self.timeout(),
        };
        let body = transport::recv(stream, patience).ok()?;
        let (version, id) = match protocol::decode::<Request>(&body) {
            Ok(Request::Hello { version, client }) => (version, client),
            _ => {
                self.refuse(
                    stream,
                    peer,
                    "the first request is not a Hello",
                    Error::DEVICE,
                );
                return None;
            }
        };
        if version != VERSION {
            let why = format!("protocol version {version}; this agent speaks {VERSION}");
            self.refuse(stream, peer, &why, Error::DEVICE);
            return None;
        }
        let allowed = self.allowed(peer);
        if allowed.is_empty() {
            self.refuse(
                stream,
                peer,
                "not in any token's allow-list",
                Error(CKR_TOKEN_NOT_PRESENT),
            );
            return None;
        }
        let client = {
            let mut clients = self.clients.lock();
            if !clients.contains_key(&id) {
                let Ok(client) = Client::new(peer.uid, peer.pid, allowed) else {
                    drop(clients);
                    self.refuse(stream, peer, "no randomness", Error::DEVICE);
                    return None;
                };
                clients.insert(id, (Arc::new(client), 0));
            }
            let entry = clients.get_mut(&id)?;
            // A client's sessions and login are its process's alone.
            if entry.0.uid != peer.uid || entry.0.pid != peer.pid {
                drop(clients);
                self.refuse(stream, peer, "another process's client id", Error::DEVICE);
                return None;
            }
            entry.1 += 1;
            entry.0.clone()
        };
        let hello = Response::ok(Reply::Hello {
            version: VERSION,
            instance: client.incarnation,
        });
        // Unsent, the connection ends at its first read; the count taken above is given
        // back then.
        self.send(stream, &hello);
        Some((id, client))
    }

    /// The answer to one request's body; `None` when the body is no request (the client
    /// misbehaves: its connection is dropped).
    fn answer(&self, client: &Client, body: &[u8]) -> Option<Response> {
        let request = match protocol::decode::<Request>(body) {
            Ok(request) => request,
            Err(e) => {
                tracing::info!(
                    "client pid {}: malformed request ({e}); dropped",
                    client.pid
                );
                return None;
            }
        };
        let busy = self.busy.fetch_add(1, Ordering::Relaxed) + 1;
        let mut response = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            client.handle(self, request)
        }))
        .unwrap_or_else(|_| {
            tracing::error!("a request panicked; answered CKR_GENERAL_ERROR");
            Response::error(Error::GENERAL)
        });
        self.busy.fetch_sub(1, Ordering::Relaxed);
        response.spin = busy < self.cpus;
        Some(response)
    }

    /// A client in this process with the allow-list rights of user `uid` (no groups), for the
    /// fuzzer: its requests take the path of a connection's, minus the socket.
    pub fn local_client(&self, uid: u32) -> Option<LocalClient> {
        let allowed: Vec<usize> = (0..self.allow.len())
            .filter(|&i| self.allow[i].uids.contains(&uid))
            .collect();
        let client = Client::new(uid, std::process::id() as i32, allowed).ok()?;
        Some(LocalClient(client))
    }

    /// Answers one request body of a [`LocalClient`], as for a connection.
    pub fn answer_local(&self, client: &LocalClient, body: &[u8]) -> Option<Response> {
        self.answer(&client.0, body)
    }

    /// Sends a response within the timeout; false when the client is gone or not reading.
    fn send(&self, stream: &UnixStream, response: &Response) -> bool {
        let frame = protocol::encode(response)
            .or_else(|_| protocol::encode(&Response::error(Error::GENERAL)));
        frame.is_ok_and(|f| transport::send(stream, &f, self.timeout()).is_ok())
    }

    fn refuse(&self, stream: &UnixStream, peer: &Peer, why: &str, answer: Error) {
        tracing::warn!("client uid {} pid {} refused: {why}", peer.uid, peer.pid);
        self.audit(
            "agent_client_refused",
            json!({"uid": peer.uid, "user": peer.name, "client_pid": peer.pid, "reason": why})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        self.send(stream, &Response::error(answer));
    }

    /// Requests until the client closes the connection or misbehaves. Waiting for a request
    /// to begin has no limit (an application may hold a session idle for hours); once begun
    /// it must arrive within the timeout.
    fn requests(&self, stream: &UnixStream, client: &Client) {
        let mut patience = Patience {
            spin: REQUEST_SPIN,
            first: None,
            rest: self.timeout(),
        };
        loop {
            patience.spin = if self.busy.load(Ordering::Relaxed) < self.cpus {
                REQUEST_SPIN
            } else {
                Duration::ZERO
            };
            let body = match transport::recv(stream, patience) {
                Ok(body) => body,
                Err(FrameError::Closed) => return,
                Err(e) => {
                    tracing::info!("client pid {}: connection dropped: {e:?}", client.pid);
                    return;
                }
            };
            let Some(response) = self.answer(client, &body) else {
                self.send(stream, &Response::error(Error::DEVICE));
                return;
            };
            if !self.send(stream, &response) {
                return;
            }
        }
    }
}

/// Opens the HSM token behind agent token `index` and logs in with the credential file.
fn open_hsm(index: usize, token: &AgentToken) -> Result<SharedHsm, String> {
    let why = |e: Error| format!("token {index} (\"{}\"): {e}", token.label);
    let config = token.hsm_config();
    let library = config.library.clone().unwrap_or_default();
    let lib = HsmLibrary::open(&library, config.init_reserved.as_deref()).map_err(why)?;
    let forward = ForwardToken::open(index as CK_SLOT_ID, &config, lib).map_err(why)?;
    let slot: Arc<dyn Backend> = Arc::new(HsmSlot(Arc::new(forward)));
    let credential_file = token
        .credential_file
        .as_deref()
        .unwrap_or(std::path::Path::new(""));
    let pin = config::read_credential(credential_file)?;
    let login = slot.open_session(0, CKF_SERIAL_SESSION).map_err(why)?;
    match login.login(CKU_USER, pin.as_bytes()) {
        Ok(()) | Err(Error(CKR_USER_ALREADY_LOGGED_IN)) => {}
        Err(e) => return Err(format!("{}: the HSM refused the credential", why(e))),
    }
    Ok(SharedHsm {
        slot,
        _login: login,
    })
}

/// The listening socket: systemd's (socket activation), else one created at the configured
/// path with the configured mode and group (a stale socket file is replaced; anything else
/// at that path is an error).
fn listener(config: &AgentConfig) -> Result<UnixListener, String> {
    let mut fds = listenfd::ListenFd::from_env();
    if let Ok(Some(listener)) = fds.take_unix_listener(0) {
        tracing::info!("socket from systemd (socket activation)");
        return Ok(listener);
    }
    let path = &config.agent.socket;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(format!("{}: exists and is not a socket", path.display()));
        }
        std::fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    // Created with no access at all, then opened to its mode: no moment with a wider one.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o777));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(group) = &config.agent.socket_group {
        let gid = nix::unistd::Group::from_name(group)
            .ok()
            .flatten()
            .ok_or_else(|| format!("socket_group {group:?}: no such group"))?
            .gid;
        nix::unistd::chown(path, None, Some(gid))
            .map_err(|e| format!("{}: chown to group {group}: {e}", path.display()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(config.socket_mode()))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(listener)
}

/// `b4ae-pkcs11 agent`: hardens the process, opens the socket, serves.
pub fn run(config: AgentConfig) -> Result<(), String> {
    let hardened = hardening::harden()?;
    let listener = listener(&config)?;
    let agent = Arc::new(Agent::new(config)?);
    tracing::info!(
        "custody agent serving {} token(s) at {} (memory locked: {})",
        agent.config.tokens.len(),
        agent.config.agent.socket.display(),
        hardened.memory_locked
    );
    agent.audit(
        "agent_started",
        json!({"tokens": agent.config.tokens.len(), "memory_locked": hardened.memory_locked})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    agent.serve(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::agent::protocol::{encode, SessionCall};

    fn agent(dir: &std::path::Path) -> Agent {
        let conf = dir.join("agent.toml");
        std::fs::write(
            &conf,
            format!(
                "[agent]\nsocket = \"{0}/s\"\n[[token]]\nlabel = \"t\"\npath = \"{0}/store\"\n\
                 pin_kdf = \"test-only-fast\"\nallow_users = [\"4242\"]\n",
                dir.display()
            ),
        )
        .unwrap();
        Agent::new(AgentConfig::from_file(&conf).unwrap()).unwrap()
    }

    fn rv(agent: &Agent, client: &LocalClient, request: Request) -> u64 {
        let frame = encode(&request).unwrap();
        agent.answer_local(client, &frame[4..]).unwrap().rv
    }

    /// Found by the fuzzer: a second Hello answered CKR_GENERAL_ERROR.
    #[test]
    fn protocol_mistakes_answer_device_error_never_general_error() {
        let dir = tempfile::tempdir().unwrap();
        let agent = agent(dir.path());
        let client = agent.local_client(4242).unwrap();
        let hello = Request::Hello {
            version: VERSION,
            client: [1; 16],
        };
        assert_eq!(rv(&agent, &client, hello), CKR_DEVICE_ERROR as u64);
        let unknown_session = Request::Session {
            session: 99,
            call: SessionCall::Info,
        };
        assert_eq!(
            rv(&agent, &client, unknown_session),
            CKR_SESSION_HANDLE_INVALID as u64
        );
        assert!(agent.answer_local(&client, &[0xff, 0xff, 0xff]).is_none());
    }

    /// Found by the fuzzer: a step the operation has no call for (`C_EncryptUpdate`'s on a
    /// signature, `C_SignUpdate`'s on an encryption) answered CKR_GENERAL_ERROR. Now a bad
    /// argument, and, as any failed call, the end of the operation.
    #[test]
    fn a_step_of_another_kind_of_operation_is_a_bad_argument() {
        use crate::backend::agent::protocol::{Kind, Secret, WireStep};
        let dir = tempfile::tempdir().unwrap();
        let agent = agent(dir.path());
        let client = agent.local_client(4242).unwrap();
        let init = Request::InitToken {
            token: 0,
            so_pin: Secret::new(b"so-pin-0000".to_vec()),
            label: [b'x'; 32],
        };
        assert_eq!(rv(&agent, &client, init), 0);
        let open = Request::OpenSession {
            token: 0,
            flags: (CKF_SERIAL_SESSION | CKF_RW_SESSION) as u64,
        };
        assert_eq!(rv(&agent, &client, open), 0);
        let call = |call| Request::Session { session: 1, call };
        let digest_init = || {
            call(SessionCall::Init {
                kind: Kind::Digest,
                mechanism: crate::mechanism::Mechanism::plain(CKM_SHA256),
                key: None,
            })
        };
        let misfits = [
            WireStep::CipherUpdate {
                data: Secret::new(vec![1]),
                out: Some(16),
            },
            WireStep::Verify {
                data: Secret::new(vec![1]),
                signature: vec![2],
            },
            WireStep::VerifyFinal { signature: vec![2] },
        ];
        for step in misfits {
            assert_eq!(rv(&agent, &client, digest_init()), 0);
            let misfit = call(SessionCall::Step {
                kind: Kind::Digest,
                step,
            });
            assert_eq!(rv(&agent, &client, misfit), CKR_ARGUMENTS_BAD as u64);
            let update = call(SessionCall::Step {
                kind: Kind::Digest,
                step: WireStep::Update {
                    data: Secret::new(vec![1]),
                },
            });
            assert_eq!(
                rv(&agent, &client, update),
                CKR_OPERATION_NOT_INITIALIZED as u64,
                "the misfit ended the digest"
            );
        }
    }

    #[test]
    fn a_user_sees_only_the_tokens_of_its_allow_lists() {
        let dir = tempfile::tempdir().unwrap();
        let agent = agent(dir.path());
        let stranger = agent.local_client(1).unwrap();
        assert_eq!(
            rv(&agent, &stranger, Request::TokenInfo { token: 0 }),
            CKR_SLOT_ID_INVALID as u64
        );
        let member = agent.local_client(4242).unwrap();
        assert_eq!(rv(&agent, &member, Request::TokenInfo { token: 0 }), 0);
    }
}

//! The custody agent (SPEC §4, custody 4; `b4ae-pkcs11 agent --config FILE`): a separate
//! process, under its own user, that alone holds the keys of its tokens and serves the module's
//! agent slots over a local socket. Each connection has its own thread (one client never waits
//! on another's signature), each request a bound on its size and on how long it may take to
//! arrive; a client that misbehaves loses its connection, nobody else's.

mod client;
pub mod config;
mod hardening;
mod peer;

use crate::audit::AuditLog;
use crate::backend::agent::protocol::{self, FrameError, Reply, Request, Response, VERSION};
use crate::error::Error;
use client::Client;
use config::{AgentConfig, AllowList};
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

/// A client and how many connections it has open.
type Clients = HashMap<[u8; 16], (Arc<Client>, usize)>;

pub struct Agent {
    config: AgentConfig,
    allow: Vec<AllowList>,
    clients: Mutex<Clients>,
    connections: AtomicUsize,
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
        Ok(Agent {
            config,
            allow,
            clients: Mutex::new(HashMap::new()),
            connections: AtomicUsize::new(0),
            audit,
        })
    }

    fn audit(&self, event: &str, fields: Map<String, Value>) {
        if let Some(log) = &self.audit {
            log.record(event, fields);
        }
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
                tracing::warn!("connection refused: {} already open", self.config.agent.max_connections);
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
        let timeout = Some(self.timeout());
        if stream.set_write_timeout(timeout).is_err() || stream.set_read_timeout(timeout).is_err()
        {
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
        let mut reader = stream;
        let body = protocol::read_frame(&mut reader, || {}).ok()?;
        let (version, id) = match protocol::decode::<Request>(&body) {
            Ok(Request::Hello { version, client }) => (version, client),
            _ => {
                self.refuse(stream, peer, "the first request is not a Hello", Error::DEVICE);
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
            self.refuse(stream, peer, "not in any token's allow-list", Error(CKR_TOKEN_NOT_PRESENT));
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
        send(stream, &hello);
        Some((id, client))
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
        send(stream, &Response::error(answer));
    }

    /// Requests until the client closes the connection or misbehaves. Waiting for a request
    /// to begin has no limit (an application may hold a session idle for hours); once begun
    /// it must arrive within the timeout.
    fn requests(&self, stream: &UnixStream, client: &Client) {
        loop {
            if stream.set_read_timeout(None).is_err() {
                return;
            }
            let mut reader = stream;
            let body = match protocol::read_frame(&mut reader, || {
                let _ = stream.set_read_timeout(Some(self.timeout()));
            }) {
                Ok(body) => body,
                Err(FrameError::Closed) => return,
                Err(e) => {
                    tracing::info!("client pid {}: connection dropped: {e:?}", client.pid);
                    return;
                }
            };
            let response = match protocol::decode::<Request>(&body) {
                Ok(request) => {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        client.handle(self, request)
                    }))
                    .unwrap_or_else(|_| {
                        tracing::error!("a request panicked; answered CKR_GENERAL_ERROR");
                        Response::error(Error::GENERAL)
                    })
                }
                Err(e) => {
                    tracing::info!("client pid {}: malformed request ({e}); dropped", client.pid);
                    send(stream, &Response::error(Error::DEVICE));
                    return;
                }
            };
            if !send(stream, &response) {
                return;
            }
        }
    }
}

fn send(stream: &UnixStream, response: &Response) -> bool {
    let mut writer = stream;
    match protocol::encode(response) {
        Ok(frame) => protocol::write_frame(&mut writer, &frame).is_ok(),
        Err(_) => {
            let frame = protocol::encode(&Response::error(Error::GENERAL));
            frame.is_ok_and(|f| protocol::write_frame(&mut writer, &f).is_ok())
        }
    }
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

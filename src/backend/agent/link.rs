//! The module's connections to the custody agent: a small pool (each thread of the
//! application takes its own connection, so calls never queue behind one another), every call
//! bounded by a timeout, and the agent's restarts noticed (an *epoch* per agent instance).

use super::protocol::{self, Reply, Request, Response, VERSION};
use super::transport::{self, Patience};
use crate::error::{Error, Result};
use parking_lot::Mutex;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One connection, and the agent instance (epoch) it talks to.
pub struct Conn {
    stream: UnixStream,
    timeout: Duration,
    /// Whether the agent's last answer said it had a processor to spare.
    spin: bool,
    pub epoch: u64,
    broken: bool,
}

/// The pool of connections to one agent socket.
pub struct Link {
    socket: PathBuf,
    timeout: Duration,
    /// This module instance, as the agent knows it.
    client: [u8; 16],
    idle: Mutex<Vec<Conn>>,
    /// The last agent instance seen and its epoch number.
    instance: Mutex<([u8; 16], u64)>,
    /// When talking to the agent last failed: for a moment after, calls fail at once instead
    /// of each waiting out its own timeout (one PKCS#11 call may make several requests).
    failed_at: Mutex<Option<Instant>>,
}

/// How long a caller polls for the agent's answer before sleeping: a signature's time, a few
/// times over.
const ANSWER_SPIN: Duration = Duration::from_millis(2);

/// How long after a failure calls fail without trying.
const HOLD_OFF: Duration = Duration::from_millis(500);

impl Link {
    pub fn new(socket: PathBuf, timeout: Duration) -> Result<Self> {
        Ok(Link {
            socket,
            timeout,
            client: crate::random::random_bytes()?,
            idle: Mutex::new(Vec::new()),
            instance: Mutex::new(([0; 16], 0)),
            failed_at: Mutex::new(None),
        })
    }

    /// Runs `f` on a connection (an idle one, else a new one). A connection that failed is
    /// dropped together with every idle one (they lead to the same, gone, agent), so one call
    /// answers the error and the next connects afresh.
    pub fn with_conn<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T>) -> Result<T> {
        let taken = self.idle.lock().pop();
        let mut conn = match taken {
            Some(conn) => conn,
            None => {
                if self
                    .failed_at
                    .lock()
                    .is_some_and(|t| t.elapsed() < HOLD_OFF)
                {
                    return Err(Error::DEVICE);
                }
                self.connect()?
            }
        };
        let result = f(&mut conn);
        if conn.broken {
            self.failed();
            self.idle.lock().clear();
        } else {
            self.idle.lock().push(conn);
        }
        result
    }

    fn failed(&self) {
        *self.failed_at.lock() = Some(Instant::now());
    }

    fn connect(&self) -> Result<Conn> {
        let stream = UnixStream::connect(&self.socket).map_err(|e| {
            tracing::warn!("custody agent at {}: {e}", self.socket.display());
            self.failed();
            Error::DEVICE
        })?;
        stream.set_nonblocking(true).map_err(|_| Error::DEVICE)?;
        let mut conn = Conn {
            stream,
            timeout: self.timeout,
            spin: false,
            epoch: 0,
            broken: false,
        };
        let hello = Request::Hello {
            version: VERSION,
            client: self.client,
        };
        let answer = conn.request(&hello).inspect_err(|_| self.failed())?;
        match answer.into_result()? {
            Reply::Hello { version, instance } if version == VERSION => {
                let mut seen = self.instance.lock();
                if seen.0 != instance || seen.1 == 0 {
                    *seen = (instance, seen.1 + 1);
                }
                conn.epoch = seen.1;
                Ok(conn)
            }
            other => {
                tracing::error!("custody agent: unexpected answer to Hello: {other:?}");
                Err(Error::DEVICE)
            }
        }
    }
}

impl Conn {
    /// Whether a request on this connection failed to get its answer.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// One request and its response. A failure to talk (the agent gone, a timeout, a
    /// malformed answer) marks the connection broken and answers `CKR_DEVICE_ERROR`.
    pub fn request(&mut self, request: &Request) -> Result<Response> {
        let result = self.exchange(request);
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    fn exchange(&mut self, request: &Request) -> Result<Response> {
        let frame = protocol::encode(request)?;
        transport::send(&self.stream, &frame, self.timeout).map_err(|e| {
            tracing::warn!("custody agent: sending: {e}");
            Error::DEVICE
        })?;
        let patience = Patience {
            spin: if self.spin {
                ANSWER_SPIN
            } else {
                Duration::ZERO
            },
            first: Some(self.timeout),
            rest: self.timeout,
        };
        let body = transport::recv(&self.stream, patience).map_err(|e| {
            tracing::warn!("custody agent: no answer: {e:?}");
            Error::DEVICE
        })?;
        let response: Response = protocol::decode(&body).map_err(|e| {
            tracing::error!("custody agent: malformed answer: {e}");
            Error::DEVICE
        })?;
        self.spin = response.spin;
        Ok(response)
    }
}

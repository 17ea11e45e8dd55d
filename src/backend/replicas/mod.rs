//! A pkcs11 token served by several replicas: HSMs (or tokens) holding the same keys
//! (SPEC §3). Each replica is a [`ForwardToken`] of its own; this backend chooses which one
//! serves each session (`balance`), moves a session to the next healthy replica when its own
//! fails (sessions, object handles and the login survive: [`handles`], [`session`]), and
//! probes failed replicas in the background ([`probe`]) so that they are used again.

mod handles;
mod probe;
mod session;

use crate::audit::AuditLog;
use crate::backend::pkcs11::library::HsmLibrary;
use crate::backend::pkcs11::{ForwardToken, HsmSlot};
use crate::backend::{Backend, BackendSession, SlotInfo};
use crate::config::{Balance, TokenConfig};
use crate::error::{Error, Result};
use cryptoki_sys::*;
use handles::{Handles, Incarnation};
use parking_lot::{Mutex, RwLock};
use session::ReplicaSession;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use zeroize::Zeroizing;

/// Answers that mean a replica failed (rather than refused a request).
pub fn replica_failed(e: Error) -> bool {
    crate::backend::pkcs11::keystore::hsm_lost(e) || e.0 == CKR_SLOT_ID_INVALID
}

/// One replica: its configuration, its token when reachable, and its health.
pub struct Replica {
    pub index: usize,
    pub config: TokenConfig,
    slot: RwLock<Option<Arc<HsmSlot>>>,
    up: AtomicBool,
    /// Counts the replica's returns to service: handles and sessions of an earlier epoch are
    /// void.
    epoch: AtomicU64,
    error: Mutex<Option<String>>,
    /// Times this replica was found failed.
    pub failures: AtomicU64,
}

/// What `health` reports of a replica.
#[derive(Debug, Clone)]
pub struct ReplicaState {
    pub library: String,
    pub token_label: Option<String>,
    pub up: bool,
    pub error: Option<String>,
    pub failures: u64,
}

impl Replica {
    fn new(index: usize, config: TokenConfig) -> Self {
        let replica = Replica {
            index,
            config,
            slot: RwLock::new(None),
            up: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            error: Mutex::new(None),
            failures: AtomicU64::new(0),
        };
        match replica.reach() {
            Ok(()) => replica.enter_service(),
            Err(e) => replica.down_with(format!("not reachable at start: {e}")),
        }
        replica
    }

    fn library(&self) -> String {
        self.config
            .library
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    /// Loads the replica's library and finds its token, or probes the token it has.
    fn reach(&self) -> Result<()> {
        let existing = self.slot.read().clone();
        match existing {
            Some(slot) => slot.0.probe()?,
            None => {
                let path = self.config.library.clone().ok_or(Error::GENERAL)?;
                let lib = HsmLibrary::open(&path, self.config.init_reserved.as_deref())?;
                let token = ForwardToken::open(0, &self.config, lib)?;
                *self.slot.write() = Some(Arc::new(HsmSlot(Arc::new(token))));
            }
        }
        Ok(())
    }

    /// Puts the replica (back) into service as a new incarnation.
    fn enter_service(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        *self.error.lock() = None;
        self.up.store(true, Ordering::Release);
    }

    fn down_with(&self, error: String) {
        *self.error.lock() = Some(error);
        self.up.store(false, Ordering::Release);
    }

    fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// The replica's slot and incarnation, when it is up.
    fn serving(&self) -> Option<(Arc<HsmSlot>, Incarnation)> {
        if !self.is_up() {
            return None;
        }
        let slot = self.slot.read().clone()?;
        let at = Incarnation {
            replica: self.index,
            epoch: self.epoch.load(Ordering::Acquire),
            era: slot.0.eras.load(Ordering::Acquire),
        };
        Some((slot, at))
    }

    fn state(&self) -> ReplicaState {
        ReplicaState {
            library: self.library(),
            token_label: self.config.token_label.clone(),
            up: self.is_up(),
            error: self.error.lock().clone(),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }
}

/// A login (user type, PIN and, from `C_LoginUser`, user name), replayed on each replica.
pub(super) struct Login {
    pub user: CK_USER_TYPE,
    pub pin: Zeroizing<Vec<u8>>,
    pub username: Vec<u8>,
}

/// What the replicas of one token share.
pub struct Shared {
    pub slot_id: CK_SLOT_ID,
    description: String,
    balance: Balance,
    pub replicas: Vec<Replica>,
    turn: AtomicUsize,
    /// The application's login, replayed on a replica a session moves to (PKCS#11 keeps the
    /// login per token); the PIN only while logged in.
    login: Mutex<Option<Login>>,
    sessions: AtomicUsize,
    handles: Handles,
    audit: Option<AuditLog>,
    /// Whether "no replica serves" was logged since a replica last entered service (every
    /// call says so while all are down).
    unserved_told: AtomicBool,
}

impl Shared {
    /// The replicas to try for a new session, best first.
    fn candidates(&self) -> Vec<usize> {
        let n = self.replicas.len();
        let start = match self.balance {
            Balance::Failover => 0,
            Balance::RoundRobin => self.turn.fetch_add(1, Ordering::Relaxed) % n,
        };
        (0..n)
            .map(|i| (start + i) % n)
            .filter(|i| self.replicas[*i].is_up())
            .collect()
    }

    /// The replica a failover-balanced session belongs on now.
    fn preferred(&self) -> Option<usize> {
        self.replicas.iter().position(Replica::is_up)
    }

    /// `at` failed with `error`: it is taken out of service (once per incarnation), and the
    /// prober takes over.
    fn failed(&self, at: Incarnation, error: Error) {
        let replica = &self.replicas[at.replica];
        if replica.epoch.load(Ordering::Acquire) != at.epoch {
            return;
        }
        if replica.up.swap(false, Ordering::AcqRel) {
            replica.failures.fetch_add(1, Ordering::Relaxed);
            *replica.error.lock() = Some(error.to_string());
            tracing::warn!(
                "slot {}: replica {} ({}) failed ({error}); its sessions move to the next",
                self.slot_id,
                at.replica,
                replica.library()
            );
            self.record("replica_down", at.replica, Some(error));
        }
    }

    /// A probe found replica `index` answering again: what was known of it before is dropped
    /// (it may have restarted), then it serves.
    fn recovered(&self, index: usize) {
        let replica = &self.replicas[index];
        if let Some(slot) = replica.slot.read().clone() {
            slot.0.restarted();
        }
        self.handles.forget_replica(index);
        replica.enter_service();
        self.unserved_told.store(false, Ordering::Release);
        tracing::info!(
            "slot {}: replica {index} ({}) is back in service",
            self.slot_id,
            replica.library()
        );
        self.record("replica_up", index, None);
    }

    fn record(&self, event: &str, index: usize, error: Option<Error>) {
        let Some(log) = &self.audit else { return };
        let mut fields = serde_json::Map::new();
        #[allow(clippy::unnecessary_cast)] // CK_SLOT_ID is 32 bits on some platforms
        fields.insert("slot".into(), (self.slot_id as u64).into());
        fields.insert("replica".into(), index.into());
        fields.insert("library".into(), self.replicas[index].library().into());
        if let Some(e) = error {
            fields.insert("error".into(), e.to_string().into());
        }
        log.record(event, fields);
    }

    /// Logs once per outage that no replica serves.
    fn unserved(&self) {
        if !self.unserved_told.swap(true, Ordering::AcqRel) {
            tracing::error!("slot {}: no replica serves", self.slot_id);
        }
    }

    /// Runs a slot-level call on the first replica up (in the order configured, whatever the
    /// balance: these calls are no sessions to spread), moving on when one fails.
    fn on_replica<T>(&self, f: impl Fn(&HsmSlot) -> Result<T>) -> Result<T> {
        let mut last = Error(CKR_TOKEN_NOT_PRESENT);
        for index in 0..self.replicas.len() {
            let Some((slot, at)) = self.replicas[index].serving() else {
                continue;
            };
            match f(&slot) {
                Err(e) if replica_failed(e) => {
                    self.failed(at, e);
                    last = Error(CKR_TOKEN_NOT_PRESENT);
                }
                other => return other,
            }
        }
        Err(last)
    }
}

/// The backend of a token with replicas.
pub struct ReplicaSet {
    shared: Arc<Shared>,
    _prober: probe::Prober,
}

impl ReplicaSet {
    /// The token of `config` and its `replicas`, each opened now (one that cannot be is
    /// down, and probed).
    pub fn open(slot_id: CK_SLOT_ID, config: &TokenConfig, audit: Option<AuditLog>) -> Self {
        let mut configs = vec![config.clone()];
        configs.extend(config.replicas.iter().map(|r| TokenConfig {
            library: Some(r.library.clone()),
            token_label: r.token_label.clone(),
            token_serial: r.token_serial.clone(),
            init_reserved: r.init_reserved.clone(),
            replicas: Vec::new(),
            ..config.clone()
        }));
        let replicas = configs
            .into_iter()
            .enumerate()
            .map(|(i, c)| Replica::new(i, c))
            .collect();
        let shared = Arc::new(Shared {
            slot_id,
            description: config.label.clone(),
            balance: config.balance,
            replicas,
            turn: AtomicUsize::new(0),
            login: Mutex::new(None),
            sessions: AtomicUsize::new(0),
            handles: Handles::default(),
            audit,
            unserved_told: AtomicBool::new(false),
        });
        let interval = std::time::Duration::from_millis(config.probe_interval_ms);
        ReplicaSet {
            _prober: probe::Prober::start(shared.clone(), interval),
            shared,
        }
    }

    /// Each replica's state, for `health`.
    pub fn states(&self) -> Vec<ReplicaState> {
        self.shared.replicas.iter().map(Replica::state).collect()
    }
}

impl Backend for ReplicaSet {
    fn slot_id(&self) -> CK_SLOT_ID {
        self.shared.slot_id
    }

    fn slot_info(&self) -> Result<SlotInfo> {
        match self.shared.on_replica(|slot| slot.slot_info()) {
            Ok(mut info) => {
                info.description = self.shared.description.clone();
                Ok(info)
            }
            // No replica serves: the slot stays, without a token.
            Err(_) => Ok(SlotInfo {
                description: self.shared.description.clone(),
                flags: CKF_REMOVABLE_DEVICE | CKF_HW_SLOT,
            }),
        }
    }

    fn token_info(&self) -> Result<CK_TOKEN_INFO> {
        self.shared.on_replica(|slot| slot.token_info())
    }

    fn mechanisms(&self) -> Result<Vec<CK_MECHANISM_TYPE>> {
        self.shared.on_replica(|slot| slot.mechanisms())
    }

    fn mechanism_info(&self, mechanism: CK_MECHANISM_TYPE) -> Result<CK_MECHANISM_INFO> {
        self.shared
            .on_replica(|slot| slot.mechanism_info(mechanism))
    }

    /// Initializes the token on every replica: all must be up, so that they stay alike.
    fn init_token(&self, so_pin: &[u8], label: &[u8; 32]) -> Result<()> {
        if self.shared.sessions.load(Ordering::SeqCst) > 0 {
            return Err(Error(CKR_SESSION_EXISTS));
        }
        let serving: Vec<_> = self
            .shared
            .replicas
            .iter()
            .map(Replica::serving)
            .collect::<Option<Vec<_>>>()
            .ok_or(Error::DEVICE)?;
        for (slot, at) in serving {
            slot.init_token(so_pin, label)?;
            self.shared.handles.forget_replica(at.replica);
        }
        Ok(())
    }

    fn open_session(
        &self,
        handle: CK_SESSION_HANDLE,
        flags: CK_FLAGS,
    ) -> Result<Arc<dyn BackendSession>> {
        Ok(Arc::new(ReplicaSession::open(
            self.shared.clone(),
            handle,
            flags,
        )?))
    }

    fn forget_secrets(&self) {
        for replica in &self.shared.replicas {
            if let Some(slot) = replica.slot.try_read().and_then(|s| s.clone()) {
                slot.forget_secrets();
            }
        }
        if let Some(mut login) = self.shared.login.try_lock() {
            *login = None;
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

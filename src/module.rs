//! The module's process-wide state between `C_Initialize` and `C_Finalize`: the slots from the
//! configuration and the open sessions. Reached without a lock (an atomic pointer swap), so no
//! global lock sits on any call's path.

use crate::audit::AuditLog;
use crate::backend::agent::AgentSlot;
use crate::backend::embedded::{EmbeddedSlot, EmbeddedStore};
use crate::backend::pkcs11::library::HsmLibrary;
use crate::backend::pkcs11::{AbsentToken, ForwardToken, HsmSlot};
use crate::backend::replicas::{ReplicaSet, ReplicaState};
use crate::backend::{Backend, BackendSession};
use crate::config::{BackendKind, Config, TokenConfig};
use crate::error::{Error, Result};
use crate::forksafe::{self, PerProcess};
use crate::metrics;
use crate::token::Token;
use arc_swap::{ArcSwap, ArcSwapOption};
use cryptoki_sys::*;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// The initialized module, if any.
static MODULE: ArcSwapOption<Module> = ArcSwapOption::const_empty();
/// The parent's state, in a forked child, until `C_Initialize` wipes its secrets.
static ABANDONED: ArcSwapOption<Module> = ArcSwapOption::const_empty();
/// Serializes `C_Initialize` and `C_Finalize` (never taken by any other call).
static LIFECYCLE: PerProcess<Mutex<()>> = PerProcess::new();

pub struct Module {
    pub slots: Vec<Arc<dyn Backend>>,
    audit: Option<AuditLog>,
    /// With an audit trail: the keys (slot, handle) used since the last login on their token,
    /// so that each one's first use is audited once. Read at every `C_xInit` with a key and
    /// changed at first uses, logins and logouts: swapped whole, so readers take no lock.
    used: ArcSwap<std::collections::HashSet<(CK_SLOT_ID, CK_OBJECT_HANDLE)>>,
    sessions: RwLock<HashMap<CK_SESSION_HANDLE, Arc<dyn BackendSession>>>,
    next_session: AtomicU64,
    generation: u64,
    /// Open sessions per slot (a metrics gauge).
    open_sessions: Arc<Vec<AtomicI64>>,
    /// With `[metrics]`: the thread rewriting the metrics file (a last time when dropped).
    _metrics: Option<metrics::Writer>,
}

/// The gauges the module adds to the metrics: sessions per slot and replica states.
struct ModuleGauges {
    slots: Vec<Arc<dyn Backend>>,
    open_sessions: Arc<Vec<AtomicI64>>,
}

impl metrics::Gauges for ModuleGauges {
    fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        metrics::family(
            out,
            "b4ae_pkcs11_sessions",
            "gauge",
            "Open sessions per slot.",
        );
        for (slot, n) in self.open_sessions.iter().enumerate() {
            let _ = writeln!(
                out,
                "b4ae_pkcs11_sessions{{slot=\"{slot}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let replicated: Vec<(usize, Vec<ReplicaState>)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i, s.as_any().downcast_ref::<ReplicaSet>()?.states())))
            .collect();
        if replicated.is_empty() {
            return;
        }
        metrics::family(
            out,
            "b4ae_pkcs11_replica_up",
            "gauge",
            "Whether a replica is in service (1) or not (0).",
        );
        for (slot, states) in &replicated {
            for (i, r) in states.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "b4ae_pkcs11_replica_up{{slot=\"{slot}\",replica=\"{i}\",library=\"{}\"}} {}",
                    metrics::escape(&r.library),
                    u8::from(r.up)
                );
            }
        }
        metrics::family(
            out,
            "b4ae_pkcs11_replica_failures_total",
            "counter",
            "Times a replica was found failed.",
        );
        for (slot, states) in &replicated {
            for (i, r) in states.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "b4ae_pkcs11_replica_failures_total{{slot=\"{slot}\",replica=\"{i}\"}} {}",
                    r.failures
                );
            }
        }
    }
}

/// Called in the child right after `fork()`: the parent's state must not be used (its SQLite
/// connections, HSM sessions and locks belong to the parent), so it is set aside, never
/// dropped: closing the parent's connections here could checkpoint or remove files the parent
/// still uses, and finalizing its HSM library would not be ours to do.
pub fn forked() {
    forksafe::note_fork();
    metrics::Metrics::stop();
    if let Some(lock) = LIFECYCLE.take() {
        std::mem::forget(lock);
    }
    crate::backend::pkcs11::library::forked();
    if let Some(old) = MODULE.swap(None) {
        if let Some(older) = ABANDONED.swap(Some(old)) {
            std::mem::forget(older);
        }
    }
}

/// In a forked child, wipes the parent's decrypted keys from this process's memory.
fn wipe_abandoned() {
    if let Some(old) = ABANDONED.swap(None) {
        for slot in &old.slots {
            slot.forget_secrets();
        }
        std::mem::forget(old);
    }
}

/// The initialized module, or `CKR_CRYPTOKI_NOT_INITIALIZED`.
pub fn get() -> Result<Arc<Module>> {
    MODULE
        .load_full()
        .filter(|m| m.generation == forksafe::generation())
        .ok_or(Error::NOT_INITIALIZED)
}

/// Which initialized module instance is current (its address), if any: a call can tell
/// whether `C_Finalize` overtook it.
/// [`Module::audit`] on the initialized module, for the session `handle`.
pub fn audit<T>(event: &str, handle: CK_SESSION_HANDLE, result: &Result<T>) {
    if let Ok(module) = get() {
        if module.audit.is_some() {
            if let Ok(session) = module.session(handle) {
                module.audit(event, session.slot_id(), result);
            }
        }
    }
}

/// With an audit trail, audits the first use of `key` since the last login on its token
/// (SPEC §6). Nothing to do, not even a lock, without one.
pub fn audit_key_use(handle: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) {
    let Ok(module) = get() else { return };
    let Some(log) = &module.audit else { return };
    let Ok(session) = module.session(handle) else {
        return;
    };
    let slot = session.slot_id();
    if module.used.load().contains(&(slot, key)) {
        return;
    }
    let mut first = false;
    module.used.rcu(|used| {
        let mut used = (**used).clone();
        first = used.insert((slot, key));
        used
    });
    if first {
        #[allow(clippy::unnecessary_cast)] // CK_ULONG is 32 bits on some platforms
        let (slot, key) = (slot as u64, key as u64);
        let mut fields = serde_json::Map::new();
        fields.insert("slot".into(), slot.into());
        fields.insert("uid".into(), nix::unistd::getuid().as_raw().into());
        fields.insert("key".into(), key.into());
        log.record("key_first_use", fields);
    }
}

/// After `C_Logout` on session `handle`: the next login's key uses are first uses again.
pub fn logged_out(handle: CK_SESSION_HANDLE) {
    if let Ok(module) = get() {
        if module.audit.is_some() {
            if let Ok(session) = module.session(handle) {
                let slot = session.slot_id();
                module.forget_uses(slot);
            }
        }
    }
}

pub fn instance() -> Option<usize> {
    MODULE.load().as_ref().map(|m| Arc::as_ptr(m) as usize)
}

/// `C_Initialize` after argument checks: reads the configuration and opens the tokens.
pub fn initialize(reserved: Option<&str>) -> Result<()> {
    let lifecycle = LIFECYCLE.get();
    let _serialized = lifecycle.lock();
    wipe_abandoned();
    if get().is_ok() {
        return Err(Error(CKR_CRYPTOKI_ALREADY_INITIALIZED));
    }
    let config = Config::load(reserved).map_err(|e| {
        tracing::error!("C_Initialize: configuration: {e}");
        Error::GENERAL
    })?;
    let module = Arc::new(Module::new(&config).map_err(|e| {
        tracing::error!(
            "C_Initialize: the configured slots cannot be opened ({e}); see the messages above"
        );
        Error::GENERAL
    })?);
    let previous = MODULE.compare_and_swap(&None::<Arc<Module>>, Some(module));
    if previous.is_some() {
        return Err(Error(CKR_CRYPTOKI_ALREADY_INITIALIZED));
    }
    tracing::info!("initialized with {} slot(s)", config.tokens.len());
    Ok(())
}

/// `C_Finalize`: the module is gone for new calls at once; calls already running keep what
/// they hold (their session, the HSM library) until they return, and the HSM's sessions and
/// library are closed after them.
pub fn finalize() -> Result<()> {
    let lifecycle = LIFECYCLE.get();
    let _serialized = lifecycle.lock();
    let module = get()?;
    MODULE.store(None);
    metrics::Metrics::stop();
    let handles: Vec<CK_SESSION_HANDLE> = module.sessions.read().keys().copied().collect();
    for handle in handles {
        let _ = module.close_session(handle);
    }
    Ok(())
}

impl Module {
    fn new(config: &Config) -> Result<Self> {
        let audit = config.audit.as_ref().map(|a| AuditLog::new(a.path.clone()));
        let mut slots = Vec::with_capacity(config.tokens.len());
        for (index, t) in config.tokens.iter().enumerate() {
            let first = slots.len() as CK_SLOT_ID;
            slots.extend(open_slots(first, index, t, audit.clone())?);
        }
        let open_sessions: Arc<Vec<AtomicI64>> =
            Arc::new(slots.iter().map(|_| AtomicI64::new(0)).collect());
        let writer = config.metrics.as_ref().map(|m| {
            let gauges = ModuleGauges {
                slots: slots.clone(),
                open_sessions: open_sessions.clone(),
            };
            metrics::Writer::start(
                metrics::Metrics::start(Box::new(gauges)),
                m.path.clone(),
                std::time::Duration::from_millis(m.interval_ms.max(100)),
            )
        });
        Ok(Module {
            open_sessions,
            _metrics: writer,
            slots,
            audit,
            used: ArcSwap::from_pointee(std::collections::HashSet::new()),
            sessions: RwLock::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            generation: forksafe::generation(),
        })
    }

    /// A login or logout on `slot`: its keys' next uses are first uses again.
    fn forget_uses(&self, slot: CK_SLOT_ID) {
        self.used.rcu(|used| {
            let mut used = (**used).clone();
            used.retain(|(s, _)| *s != slot);
            used
        });
    }

    /// Writes the audit line of a security event on `slot`, named by its outcome: `event`, or
    /// `<event>_refused` with the `CKR_*`; a login's outcome is `login_ok`, `login_failed` or
    /// `login_locked` (other refusals of a login are not security events).
    pub fn audit<T>(&self, event: &str, slot: CK_SLOT_ID, result: &Result<T>) {
        let Some(log) = &self.audit else {
            return;
        };
        if event == "login" && result.is_ok() {
            self.forget_uses(slot);
        }
        let event = match (event, result) {
            ("login", Ok(_)) => "login_ok".to_owned(),
            ("login", Err(Error::PIN_INCORRECT)) => "login_failed".to_owned(),
            ("login", Err(Error::PIN_LOCKED)) => "login_locked".to_owned(),
            ("login", Err(_)) => return,
            (event, Ok(_)) => event.to_owned(),
            (event, Err(_)) => format!("{event}_refused"),
        };
        let mut fields = serde_json::Map::new();
        #[allow(clippy::unnecessary_cast)] // CK_SLOT_ID is 32 bits on some platforms
        let slot = slot as u64;
        fields.insert("slot".into(), slot.into());
        fields.insert("uid".into(), nix::unistd::getuid().as_raw().into());
        if let Err(e) = result {
            fields.insert("error".into(), e.to_string().into());
        }
        log.record(&event, fields);
    }

    pub fn slot(&self, slot: CK_SLOT_ID) -> Result<&Arc<dyn Backend>> {
        usize::try_from(slot)
            .ok()
            .and_then(|i| self.slots.get(i))
            .ok_or(Error::SLOT_ID_INVALID)
    }

    pub fn session(&self, handle: CK_SESSION_HANDLE) -> Result<Arc<dyn BackendSession>> {
        self.sessions
            .read()
            .get(&handle)
            .cloned()
            .ok_or(Error::SESSION_HANDLE_INVALID)
    }

    /// `C_OpenSession`.
    pub fn open_session(&self, slot: CK_SLOT_ID, flags: CK_FLAGS) -> Result<CK_SESSION_HANDLE> {
        let slot = self.slot(slot)?;
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(Error(CKR_SESSION_PARALLEL_NOT_SUPPORTED));
        }
        let handle = self.next_session.fetch_add(1, Ordering::Relaxed) as CK_SESSION_HANDLE;
        let session = slot.open_session(handle, flags)?;
        if let Some(n) = self.open_sessions.get(session.slot_id() as usize) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        self.sessions.write().insert(handle, session);
        Ok(handle)
    }

    /// `C_CloseSession`.
    pub fn close_session(&self, handle: CK_SESSION_HANDLE) -> Result<()> {
        let session = self
            .sessions
            .write()
            .remove(&handle)
            .ok_or(Error::SESSION_HANDLE_INVALID)?;
        if let Some(n) = self.open_sessions.get(session.slot_id() as usize) {
            n.fetch_sub(1, Ordering::Relaxed);
        }
        session.closed();
        Ok(())
    }

    /// `C_CloseAllSessions`.
    pub fn close_all_sessions(&self, slot: CK_SLOT_ID) -> Result<()> {
        self.slot(slot)?;
        let handles: Vec<CK_SESSION_HANDLE> = self
            .sessions
            .read()
            .iter()
            .filter(|(_, s)| s.slot_id() == slot)
            .map(|(h, _)| *h)
            .collect();
        for handle in handles {
            let _ = self.close_session(handle);
        }
        Ok(())
    }
}

/// The slots of configuration token `index` (one, or a library's every token for
/// `ForwardAll`), numbered from `slot_id`. The admin tool's `health` opens each on its own.
pub fn open_slots(
    slot_id: CK_SLOT_ID,
    index: usize,
    t: &TokenConfig,
    audit: Option<AuditLog>,
) -> Result<Vec<Arc<dyn Backend>>> {
    let mut slots: Vec<Arc<dyn Backend>> = Vec::new();
    match t.backend {
        BackendKind::Pkcs11 if !t.replicas.is_empty() => {
            slots.push(Arc::new(ReplicaSet::open(slot_id, t, audit)));
        }
        BackendKind::Embedded => {
            let path = t.path.clone().ok_or(Error::GENERAL)?;
            let store = EmbeddedStore::new(path, t.pin_kdf, t.max_pin_failures);
            slots.push(Arc::new(EmbeddedSlot(Arc::new(Token::new(
                slot_id,
                t.label.clone(),
                "embedded",
                Box::new(store),
            )))) as Arc<dyn Backend>);
        }
        BackendKind::Pkcs11 => {
            let path = t.library.clone().ok_or(Error::GENERAL)?;
            let lib = HsmLibrary::open(&path, t.init_reserved.as_deref()).inspect_err(|_| {
                tracing::error!(
                    "token {index} (\"{}\"): its HSM library cannot be used",
                    t.label
                );
            })?;
            match ForwardToken::open(slot_id, t, lib) {
                Ok(token) => slots.push(Arc::new(HsmSlot(Arc::new(token)))),
                Err(Error(CKR_TOKEN_NOT_PRESENT)) => {
                    tracing::error!(
                        "token {index} (\"{}\"): slot {slot_id} has no token until \
                         the HSM's token is there at a later C_Initialize",
                        t.label
                    );
                    slots.push(Arc::new(AbsentToken {
                        slot_id,
                        description: t.label.clone(),
                    }));
                }
                Err(e) => return Err(e),
            }
        }
        BackendKind::Agent => {
            let socket = t.socket.clone().ok_or(Error::GENERAL)?;
            slots.push(Arc::new(AgentSlot::new(
                slot_id,
                t.label.clone(),
                socket,
                t.token_label.clone(),
                std::time::Duration::from_millis(t.timeout_ms),
            )?));
        }
        BackendKind::ForwardAll => {
            let path = t.library.clone().ok_or(Error::GENERAL)?;
            let lib = HsmLibrary::open(&path, None)?;
            for token in ForwardToken::every_token(slot_id, lib)? {
                slots.push(Arc::new(HsmSlot(Arc::new(token))));
            }
        }
    }
    Ok(slots)
}

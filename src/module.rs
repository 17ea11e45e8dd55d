//! The module's process-wide state between `C_Initialize` and `C_Finalize`: the tokens from the
//! configuration and the open sessions. Reached without a lock (an atomic pointer swap), so no
//! global lock sits on any call's path.

use crate::backend::embedded::EmbeddedStore;
use crate::config::{BackendKind, Config};
use crate::error::{Error, Result};
use crate::token::session::Session;
use crate::token::Token;
use arc_swap::ArcSwapOption;
use cryptoki_sys::*;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The initialized module, if any.
static MODULE: ArcSwapOption<Module> = ArcSwapOption::const_empty();
/// Bumped in a forked child: state made before the fork belongs to the parent.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
/// The parent's state, in a forked child, until `C_Initialize` wipes its secrets.
static ABANDONED: ArcSwapOption<Module> = ArcSwapOption::const_empty();

pub struct Module {
    pub tokens: Vec<Arc<Token>>,
    sessions: RwLock<HashMap<CK_SESSION_HANDLE, Arc<Session>>>,
    next_session: AtomicU64,
    generation: u64,
}

/// Called in the child right after `fork()`: the parent's state must not be used (its SQLite
/// connections and locks belong to the parent), so it is set aside, never dropped: closing the
/// parent's connections here could checkpoint or remove files the parent still uses.
pub fn forked() {
    FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
    if let Some(old) = MODULE.swap(None) {
        if let Some(older) = ABANDONED.swap(Some(old)) {
            std::mem::forget(older);
        }
    }
}

/// In a forked child, wipes the parent's decrypted keys from this process's memory.
fn wipe_abandoned() {
    if let Some(old) = ABANDONED.swap(None) {
        for token in &old.tokens {
            token.forget_secrets();
        }
        std::mem::forget(old);
    }
}

/// The initialized module, or `CKR_CRYPTOKI_NOT_INITIALIZED`.
pub fn get() -> Result<Arc<Module>> {
    MODULE
        .load_full()
        .filter(|m| m.generation == FORK_GENERATION.load(Ordering::Relaxed))
        .ok_or(Error::NOT_INITIALIZED)
}

/// `C_Initialize` after argument checks: reads the configuration and opens the tokens.
pub fn initialize(reserved: Option<&str>) -> Result<()> {
    wipe_abandoned();
    if get().is_ok() {
        return Err(Error(CKR_CRYPTOKI_ALREADY_INITIALIZED));
    }
    let config = Config::load(reserved).map_err(|e| {
        tracing::error!("C_Initialize: configuration: {e}");
        Error::GENERAL
    })?;
    let module = Arc::new(Module::new(&config)?);
    let previous = MODULE.compare_and_swap(&None::<Arc<Module>>, Some(module));
    if previous.is_some() {
        return Err(Error(CKR_CRYPTOKI_ALREADY_INITIALIZED));
    }
    tracing::info!("initialized with {} slot(s)", config.tokens.len());
    Ok(())
}

/// `C_Finalize`.
pub fn finalize() -> Result<()> {
    let module = get()?;
    MODULE.store(None);
    for token in &module.tokens {
        token.all_sessions_closed();
    }
    module.sessions.write().clear();
    Ok(())
}

impl Module {
    fn new(config: &Config) -> Result<Self> {
        let tokens = config
            .tokens
            .iter()
            .enumerate()
            .map(|(slot, t)| {
                let backend = match t.backend {
                    BackendKind::Embedded => {
                        let path = t.path.clone().ok_or(Error::GENERAL)?;
                        Box::new(EmbeddedStore::new(path, t.pin_kdf, t.max_pin_failures))
                    }
                    BackendKind::Pkcs11 => return Err(Error::GENERAL),
                };
                Ok(Arc::new(Token::new(
                    slot as CK_SLOT_ID,
                    t.label.clone(),
                    "embedded",
                    backend,
                )))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Module {
            tokens,
            sessions: RwLock::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            generation: FORK_GENERATION.load(Ordering::SeqCst),
        })
    }

    pub fn token(&self, slot: CK_SLOT_ID) -> Result<&Arc<Token>> {
        usize::try_from(slot)
            .ok()
            .and_then(|i| self.tokens.get(i))
            .ok_or(Error::SLOT_ID_INVALID)
    }

    pub fn session(&self, handle: CK_SESSION_HANDLE) -> Result<Arc<Session>> {
        self.sessions
            .read()
            .get(&handle)
            .cloned()
            .ok_or(Error::SESSION_HANDLE_INVALID)
    }

    /// `C_OpenSession`.
    pub fn open_session(&self, slot: CK_SLOT_ID, flags: CK_FLAGS) -> Result<CK_SESSION_HANDLE> {
        let token = self.token(slot)?.clone();
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(Error(CKR_SESSION_PARALLEL_NOT_SUPPORTED));
        }
        if !token.state()?.initialized {
            return Err(Error::TOKEN_NOT_RECOGNIZED);
        }
        let rw = flags & CKF_RW_SESSION != 0;
        if !rw && token.login_state() == crate::token::Login::SecurityOfficer {
            return Err(Error(CKR_SESSION_READ_WRITE_SO_EXISTS));
        }
        let handle = self.next_session.fetch_add(1, Ordering::Relaxed) as CK_SESSION_HANDLE;
        token.sessions.fetch_add(1, Ordering::SeqCst);
        if rw {
            token.rw_sessions.fetch_add(1, Ordering::SeqCst);
        }
        self.sessions
            .write()
            .insert(handle, Arc::new(Session::new(handle, token, rw)));
        Ok(handle)
    }

    /// `C_CloseSession`.
    pub fn close_session(&self, handle: CK_SESSION_HANDLE) -> Result<()> {
        let session = self
            .sessions
            .write()
            .remove(&handle)
            .ok_or(Error::SESSION_HANDLE_INVALID)?;
        let token = &session.token;
        token.session_closed(handle);
        if session.rw {
            token.rw_sessions.fetch_sub(1, Ordering::SeqCst);
        }
        if token.sessions.fetch_sub(1, Ordering::SeqCst) == 1 {
            token.all_sessions_closed();
        }
        Ok(())
    }

    /// `C_CloseAllSessions`.
    pub fn close_all_sessions(&self, slot: CK_SLOT_ID) -> Result<()> {
        let token = self.token(slot)?;
        let handles: Vec<CK_SESSION_HANDLE> = self
            .sessions
            .read()
            .values()
            .filter(|s| Arc::ptr_eq(&s.token, token))
            .map(|s| s.handle)
            .collect();
        for handle in handles {
            let _ = self.close_session(handle);
        }
        Ok(())
    }

    /// Whether the token has read-only sessions open (blocks SO login).
    pub fn has_read_only_sessions(&self, token: &Arc<Token>) -> bool {
        token.sessions.load(Ordering::SeqCst) > token.rw_sessions.load(Ordering::SeqCst)
    }
}

//! A slot whose token the custody agent serves (SPEC §4, custody 4): every call on it is a
//! request to the agent, a separate process that alone holds the keys and the HSM credential.
//! This process never holds a private key of such a token. When the agent restarts, the
//! sessions the application holds are opened again and its login replayed on the first call
//! that finds the new agent (the call that saw the old one go answers `CKR_DEVICE_ERROR`).

// The protocol's numbers are 64-bit; CK_ULONG is 32 bits on some platforms, so the casts stay.
#![allow(clippy::unnecessary_cast)]

pub mod link;
pub mod protocol;
mod session;
pub mod transport;
pub mod wire;

use crate::backend::{Backend, BackendSession, SlotInfo};
use crate::error::{Error, Result};
use crate::token::operations::Operations;
use cryptoki_sys::*;
use link::{Conn, Link};
use parking_lot::Mutex;
use protocol::{Reply, Request, Secret, SessionCall};
use session::AgentSession;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The application's login, replayed on a restarted agent.
struct Remembered {
    user: CK_USER_TYPE,
    pin: Secret,
    /// The agent instance that has it.
    epoch: u64,
}

/// What a slot and its sessions share.
pub(crate) struct AgentToken {
    slot_id: CK_SLOT_ID,
    description: String,
    /// The agent's token this slot shows (its description there); the first one otherwise.
    wanted: Option<String>,
    link: Link,
    /// The token's id at the agent, per epoch.
    token: Mutex<Option<(u64, u32)>>,
    login: Mutex<Option<Remembered>>,
}

/// The slot.
pub struct AgentSlot(Arc<AgentToken>);

impl AgentSlot {
    pub fn new(
        slot_id: CK_SLOT_ID,
        description: String,
        socket: PathBuf,
        wanted: Option<String>,
        timeout: Duration,
    ) -> Result<Self> {
        Ok(AgentSlot(Arc::new(AgentToken {
            slot_id,
            description,
            wanted,
            link: Link::new(socket, timeout)?,
            token: Mutex::new(None),
            login: Mutex::new(None),
        })))
    }
}

impl AgentToken {
    /// The agent's id of this slot's token, asked once per agent instance.
    fn token_id(&self, conn: &mut Conn) -> Result<u32> {
        if let Some((epoch, id)) = *self.token.lock() {
            if epoch == conn.epoch {
                return Ok(id);
            }
        }
        let Reply::Tokens(tokens) = conn.request(&Request::Tokens)?.into_result()? else {
            return Err(Error::DEVICE);
        };
        let chosen = match &self.wanted {
            Some(name) => tokens.iter().find(|t| &t.description == name),
            None => tokens.first(),
        }
        .ok_or(Error(CKR_TOKEN_NOT_PRESENT))?;
        *self.token.lock() = Some((conn.epoch, chosen.id));
        Ok(chosen.id)
    }

    /// A request about this slot's token.
    fn ask(&self, make: impl FnOnce(u32) -> Request) -> Result<Reply> {
        self.link.with_conn(|conn| {
            let token = self.token_id(conn)?;
            conn.request(&make(token))?.into_result()
        })
    }

    fn remember_login(&self, user: CK_USER_TYPE, pin: &[u8], epoch: u64) {
        *self.login.lock() = Some(Remembered {
            user,
            pin: Secret::new(pin.to_vec()),
            epoch,
        });
    }

    fn forget_login(&self) {
        *self.login.lock() = None;
    }

    /// After a restart of the agent: the login replayed on `session`, once per agent
    /// instance. A refused replay (the PIN changed meanwhile) leaves the application logged out.
    fn replay_login(&self, conn: &mut Conn, session: u64) -> Result<()> {
        let mut login = self.login.lock();
        let Some(remembered) = login.as_mut() else {
            return Ok(());
        };
        if remembered.epoch == conn.epoch {
            return Ok(());
        }
        let call = SessionCall::Login {
            user: remembered.user as u64,
            pin: remembered.pin.clone(),
        };
        match conn
            .request(&Request::Session { session, call })?
            .into_result()
        {
            Ok(_) => {
                remembered.epoch = conn.epoch;
                Ok(())
            }
            Err(e) => {
                tracing::warn!("custody agent restarted; the login could not be replayed: {e}");
                *login = None;
                Ok(())
            }
        }
    }
}

impl Backend for AgentSlot {
    fn slot_id(&self) -> CK_SLOT_ID {
        self.0.slot_id
    }

    fn slot_info(&self) -> Result<SlotInfo> {
        let present = self.0.link.with_conn(|conn| self.0.token_id(conn)).is_ok();
        Ok(SlotInfo {
            description: self.0.description.clone(),
            flags: if present { CKF_TOKEN_PRESENT } else { 0 },
        })
    }

    fn token_info(&self) -> Result<CK_TOKEN_INFO> {
        match self.0.ask(|token| Request::TokenInfo { token })? {
            Reply::TokenInfo(info) => Ok((&*info).into()),
            _ => Err(Error::DEVICE),
        }
    }

    fn mechanisms(&self) -> Result<Vec<CK_MECHANISM_TYPE>> {
        match self.0.ask(|token| Request::Mechanisms { token })? {
            Reply::Mechanisms(list) => Ok(list.into_iter().map(|m| m as _).collect()),
            _ => Err(Error::DEVICE),
        }
    }

    fn mechanism_info(&self, mechanism: CK_MECHANISM_TYPE) -> Result<CK_MECHANISM_INFO> {
        let request = |token| Request::MechanismInfo {
            token,
            mechanism: mechanism as u64,
        };
        match self.0.ask(request)? {
            Reply::MechanismInfo { min, max, flags } => Ok(CK_MECHANISM_INFO {
                ulMinKeySize: min as _,
                ulMaxKeySize: max as _,
                flags: flags as _,
            }),
            _ => Err(Error::DEVICE),
        }
    }

    fn init_token(&self, so_pin: &[u8], label: &[u8; 32]) -> Result<()> {
        self.0.ask(|token| Request::InitToken {
            token,
            so_pin: Secret::new(so_pin.to_vec()),
            label: *label,
        })?;
        self.0.forget_login();
        Ok(())
    }

    fn open_session(
        &self,
        handle: CK_SESSION_HANDLE,
        flags: CK_FLAGS,
    ) -> Result<Arc<dyn BackendSession>> {
        let (epoch, remote) = self.0.link.with_conn(|conn| {
            let token = self.0.token_id(conn)?;
            let request = Request::OpenSession {
                token,
                flags: flags as u64,
            };
            match conn.request(&request)?.into_result()? {
                Reply::Session(id) => Ok((conn.epoch, id)),
                _ => Err(Error::DEVICE),
            }
        })?;
        let _ = handle;
        Ok(Arc::new(AgentSession {
            token: self.0.clone(),
            flags,
            remote: Mutex::new((epoch, remote)),
            abandoned: Mutex::new(None),
            leases: Mutex::new(Vec::new()),
            deferred: Mutex::new(Default::default()),
            ops: Operations::default(),
        }))
    }

    fn forget_secrets(&self) {
        // The keys are in the agent; the remembered PIN is this process's only secret.
        if let Some(mut login) = self.0.login.try_lock() {
            *login = None;
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

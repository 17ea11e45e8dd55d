//! A pkcs11 slot behind the backend interface: the real token's answers, with this module's
//! post-quantum mechanisms added where the HSM lacks them.

use super::pin_counter::{self, PinCounter};
use super::{ForwardSession, ForwardToken};
use crate::backend::{Backend, BackendSession, SlotInfo};
use crate::error::{Error, Result};
use cryptoki_sys::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A slot forwarding to one real token.
pub struct HsmSlot(pub Arc<ForwardToken>);

impl Backend for HsmSlot {
    fn slot_id(&self) -> CK_SLOT_ID {
        self.0.slot_id
    }

    fn slot_info(&self) -> Result<SlotInfo> {
        let real = self.0.lib.slot_info(self.0.real_slot())?;
        Ok(SlotInfo {
            description: self.0.description.clone(),
            flags: real.flags | CKF_TOKEN_PRESENT,
        })
    }

    fn token_info(&self) -> Result<CK_TOKEN_INFO> {
        let mut info = self.0.lib.token_info(self.0.real_slot())?;
        // The module's own count of wrong PINs, beside whatever the HSM reports.
        match self.0.pins.counts(&pin_counter::identity(&info)) {
            Ok((counts, limit)) => info.flags |= PinCounter::flags(&counts, limit),
            Err(e) => tracing::warn!("PIN failure counter unreadable: {e}"),
        }
        Ok(info)
    }

    fn mechanisms(&self) -> Result<Vec<CK_MECHANISM_TYPE>> {
        Ok(self.0.mechanisms())
    }

    fn mechanism_info(&self, kind: CK_MECHANISM_TYPE) -> Result<CK_MECHANISM_INFO> {
        match self.0.ours(kind) {
            Some(m) => Ok(m.ck()),
            None => {
                let mut info = self.0.lib.mechanism_info(self.0.real_slot(), kind)?;
                info.flags = crate::mechanism::with_message_flags(info.flags);
                Ok(info)
            }
        }
    }

    fn init_token(&self, so_pin: &[u8], label: &[u8; 32]) -> Result<()> {
        let token = &self.0;
        if token.sessions.load(Ordering::SeqCst) > 0 {
            return Err(Error(CKR_SESSION_EXISTS));
        }
        token.keys.close();
        token.lib.init_token(token.real_slot(), so_pin, label)?;
        let label = String::from_utf8_lossy(label).trim_end().to_owned();
        token.reresolve(Some(label));
        Ok(())
    }

    fn open_session(
        &self,
        handle: CK_SESSION_HANDLE,
        flags: CK_FLAGS,
    ) -> Result<Arc<dyn BackendSession>> {
        let token = &self.0;
        let rw = flags & CKF_RW_SESSION != 0;
        let real = token.lib.open_session(
            token.real_slot(),
            flags & (CKF_SERIAL_SESSION | CKF_RW_SESSION),
        )?;
        Ok(Arc::new(ForwardSession::new(
            handle,
            real,
            token.clone(),
            rw,
        )))
    }

    fn forget_secrets(&self) {
        self.0.keys.forget_secrets()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// A configured slot whose real token is not there (not inserted, or re-labelled so that the
/// configuration no longer names it): the slot stays, without a token, so the module's other
/// slots keep working. The token is looked for again at the next `C_Initialize`.
pub struct AbsentToken {
    pub slot_id: CK_SLOT_ID,
    pub description: String,
}

impl Backend for AbsentToken {
    fn slot_id(&self) -> CK_SLOT_ID {
        self.slot_id
    }

    fn slot_info(&self) -> Result<SlotInfo> {
        Ok(SlotInfo {
            description: self.description.clone(),
            flags: CKF_REMOVABLE_DEVICE | CKF_HW_SLOT,
        })
    }

    fn token_info(&self) -> Result<CK_TOKEN_INFO> {
        Err(Error(CKR_TOKEN_NOT_PRESENT))
    }

    fn mechanisms(&self) -> Result<Vec<CK_MECHANISM_TYPE>> {
        Err(Error(CKR_TOKEN_NOT_PRESENT))
    }

    fn mechanism_info(&self, _kind: CK_MECHANISM_TYPE) -> Result<CK_MECHANISM_INFO> {
        Err(Error(CKR_TOKEN_NOT_PRESENT))
    }

    fn init_token(&self, _so_pin: &[u8], _label: &[u8; 32]) -> Result<()> {
        Err(Error(CKR_TOKEN_NOT_PRESENT))
    }

    fn open_session(
        &self,
        _handle: CK_SESSION_HANDLE,
        _flags: CK_FLAGS,
    ) -> Result<Arc<dyn BackendSession>> {
        Err(Error(CKR_TOKEN_NOT_PRESENT))
    }

    fn forget_secrets(&self) {}

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

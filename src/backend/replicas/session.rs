//! A session of a replicated token: the application's session, served by a session of one
//! replica at a time. When that replica fails, the call in flight answers `CKR_DEVICE_ERROR`
//! (an operation it had begun is lost with it; a call that begins something is retried at
//! once on the next replica) and the session continues on the next healthy replica, logged
//! in again with the PIN the module keeps while the application is logged in. Object handles
//! are the module's ([`super::handles`]), so they stay valid across the move.

use super::handles::Incarnation;
use super::{replica_failed, Login, Shared};
use crate::backend::{BackendSession, Dual, Recover};
use crate::config::Balance;
use crate::error::{Error, Result};
use crate::mechanism::Mechanism;
use crate::token::attributes::Attributes;
use crate::token::io::{AttributeRequest, Output, Step};
use crate::token::operations::{OpKind, Operations};
use cryptoki_sys::*;
use parking_lot::RwLock;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The replica session that serves the application's session now.
#[derive(Clone)]
struct Attached {
    at: Incarnation,
    inner: Arc<dyn BackendSession>,
}

pub struct ReplicaSession {
    handle: CK_SESSION_HANDLE,
    flags: CK_FLAGS,
    shared: Arc<Shared>,
    /// `None` while no replica serves (all failed): the next call looks again.
    current: RwLock<Option<Attached>>,
    /// The application's object search, in the module's handles.
    ops: Operations,
}

fn logged_in(state: CK_STATE) -> bool {
    !matches!(state, CKS_RO_PUBLIC_SESSION | CKS_RW_PUBLIC_SESSION)
}

impl ReplicaSession {
    pub fn open(shared: Arc<Shared>, handle: CK_SESSION_HANDLE, flags: CK_FLAGS) -> Result<Self> {
        // Counted before anything can fail: a session refused here is dropped, and its drop
        // uncounts it.
        shared.sessions.fetch_add(1, Ordering::SeqCst);
        let session = ReplicaSession {
            handle,
            flags,
            shared,
            current: RwLock::new(None),
            ops: Operations::default(),
        };
        let attached = session.attach()?;
        *session.current.write() = Some(attached);
        Ok(session)
    }

    fn serves(&self, at: Incarnation) -> bool {
        let replica = &self.shared.replicas[at.replica];
        replica.is_up() && replica.epoch.load(Ordering::Acquire) == at.epoch
    }

    /// A session on the best replica up, with the application's login replayed there.
    fn attach(&self) -> Result<Attached> {
        for index in self.shared.candidates() {
            let Some((slot, mut at)) = self.shared.replicas[index].serving() else {
                continue;
            };
            let opened = crate::backend::Backend::open_session(&*slot, self.handle, self.flags)
                .and_then(|inner| self.replay_login(&*inner).map(|()| inner));
            match opened {
                Ok(inner) => {
                    // The era cannot change while this session is open there.
                    at.era = slot.0.eras.load(Ordering::Acquire);
                    return Ok(Attached { at, inner });
                }
                Err(e) if replica_failed(e) => self.shared.failed(at, e),
                Err(e) => return Err(e),
            }
        }
        self.shared.unserved();
        Err(Error::DEVICE)
    }

    /// Logs `inner`'s replica in as the application is (PKCS#11 keeps a login per token, and
    /// each replica is a token of its own). A replica that refuses the PIN the others took
    /// cannot serve this application.
    fn replay_login(&self, inner: &dyn BackendSession) -> Result<()> {
        let login = self.shared.login.lock();
        let Some(login) = login.as_ref() else {
            return Ok(());
        };
        if logged_in(inner.info()?.state) {
            return Ok(());
        }
        match inner.login_named(login.user, &login.pin, &login.username) {
            Ok(()) | Err(Error(CKR_USER_ALREADY_LOGGED_IN)) => Ok(()),
            Err(e) if replica_failed(e) => Err(e),
            Err(e) => {
                tracing::error!(
                    "slot {}: a replica refused the login the others accepted ({e})",
                    self.shared.slot_id
                );
                Err(Error::DEVICE)
            }
        }
    }

    /// The session's replica session, after moving it if its replica is out of service.
    fn attached(&self) -> Result<Attached> {
        if let Some(current) = self.current.read().as_ref() {
            if self.serves(current.at) {
                return Ok(current.clone());
            }
        }
        self.move_on(|_| false)
    }

    /// Moves the session when `leave` says so or its replica is out of service.
    fn move_on(&self, leave: impl Fn(&Attached) -> bool) -> Result<Attached> {
        let mut current = self.current.write();
        if let Some(attached) = current.as_ref() {
            if self.serves(attached.at) && !leave(attached) {
                return Ok(attached.clone());
            }
        }
        let previous = current.take();
        let fresh = self.attach()?;
        *current = Some(fresh.clone());
        drop(current);
        if let Some(previous) = previous {
            tracing::info!(
                "slot {}: session {} moved from replica {} to replica {}",
                self.shared.slot_id,
                self.handle,
                previous.at.replica,
                fresh.at.replica
            );
        }
        Ok(fresh)
    }

    /// Fail-back: with `balance = "failover"`, a session between operations returns to the
    /// first replica once it serves again.
    fn settle(&self) {
        if self.shared.balance != Balance::Failover {
            return;
        }
        let Some(preferred) = self.shared.preferred() else {
            return;
        };
        let away = matches!(self.current.read().as_ref(),
            Some(a) if a.at.replica != preferred && a.inner.ops().idle());
        if away {
            let _ = self.move_on(|a| a.at.replica != preferred && a.inner.ops().idle());
        }
    }

    /// One call on the session's replica. When the replica fails under it the call answers
    /// `CKR_DEVICE_ERROR` (whatever it continued was lost there) and the session moves on.
    fn once<T>(&self, f: impl FnOnce(&Attached) -> Result<T>) -> Result<T> {
        let attached = self.attached()?;
        match f(&attached) {
            Err(e) if replica_failed(e) => {
                self.shared.failed(attached.at, e);
                Err(Error::DEVICE)
            }
            other => other,
        }
    }

    /// A call that begins something (nothing of it is left on the failed replica): when the
    /// replica fails under it, it is made again on the next.
    fn retried<T>(&self, mut f: impl FnMut(&Attached) -> Result<T>) -> Result<T> {
        let attached = self.attached()?;
        match f(&attached) {
            Err(e) if replica_failed(e) => {
                self.shared.failed(attached.at, e);
                self.once(f)
            }
            other => other,
        }
    }

    fn inward(&self, a: &Attached, ours: CK_OBJECT_HANDLE) -> Result<CK_OBJECT_HANDLE> {
        self.shared.handles.inward(a.at, &*a.inner, ours)
    }

    fn inward_key(&self, a: &Attached, ours: CK_OBJECT_HANDLE) -> Result<CK_OBJECT_HANDLE> {
        self.inward(a, ours).map_err(|e| match e {
            Error::OBJECT_HANDLE_INVALID => Error::KEY_HANDLE_INVALID,
            e => e,
        })
    }

    fn outward(&self, a: &Attached, real: CK_OBJECT_HANDLE) -> Result<CK_OBJECT_HANDLE> {
        self.shared.handles.outward(a.at, &*a.inner, real)
    }

    /// Runs `f` on a session of each other replica in service that has sessions of this
    /// application (a login, logout or PIN change is the token's, so theirs too).
    fn on_others(&self, f: impl Fn(&dyn BackendSession) -> Result<()>) {
        let here = self.current.read().as_ref().map(|a| a.at.replica);
        for replica in &self.shared.replicas {
            if Some(replica.index) == here {
                continue;
            }
            let Some((slot, at)) = replica.serving() else {
                continue;
            };
            if slot.0.sessions.load(Ordering::SeqCst) == 0 {
                continue;
            }
            let done = crate::backend::Backend::open_session(
                &*slot,
                0,
                CKF_SERIAL_SESSION | CKF_RW_SESSION,
            )
            .and_then(|s| f(&*s));
            match done {
                Err(e) if replica_failed(e) => self.shared.failed(at, e),
                Err(e) => tracing::warn!(
                    "slot {}: replica {} did not follow ({e})",
                    self.shared.slot_id,
                    replica.index
                ),
                Ok(()) => {}
            }
        }
    }
}

impl Drop for ReplicaSession {
    fn drop(&mut self) {
        if self.shared.sessions.fetch_sub(1, Ordering::SeqCst) == 1 {
            // The application's last session: PKCS#11 logs it out.
            *self.shared.login.lock() = None;
        }
    }
}

impl BackendSession for ReplicaSession {
    fn slot_id(&self) -> CK_SLOT_ID {
        self.shared.slot_id
    }

    fn ops(&self) -> &Operations {
        &self.ops
    }

    fn closed(&self) {
        if let Some(a) = self.current.read().as_ref() {
            a.inner.closed();
        }
    }

    fn info(&self) -> Result<CK_SESSION_INFO> {
        self.retried(|a| a.inner.info())
    }

    fn login(&self, user: CK_USER_TYPE, pin: &[u8]) -> Result<()> {
        self.login_named(user, pin, b"")
    }

    fn login_named(&self, user: CK_USER_TYPE, pin: &[u8], username: &[u8]) -> Result<()> {
        self.retried(|a| a.inner.login_named(user, pin, username))?;
        if user != CKU_CONTEXT_SPECIFIC {
            *self.shared.login.lock() = Some(Login {
                user,
                pin: Zeroizing::new(pin.to_vec()),
                username: username.to_vec(),
            });
            self.on_others(|s| self.replay_login(s));
        }
        Ok(())
    }

    fn logout(&self) -> Result<()> {
        let result = self.once(|a| a.inner.logout());
        if result.is_ok() {
            *self.shared.login.lock() = None;
            self.on_others(|s| {
                if logged_in(s.info()?.state) {
                    s.logout()?;
                }
                Ok(())
            });
        }
        result
    }

    fn init_pin(&self, pin: &[u8]) -> Result<()> {
        self.once(|a| a.inner.init_pin(pin))?;
        self.on_others(|s| {
            self.replay_login(s)?;
            s.init_pin(pin)
        });
        Ok(())
    }

    fn set_pin(&self, old: &[u8], new: &[u8]) -> Result<()> {
        self.once(|a| a.inner.set_pin(old, new))?;
        {
            let mut login = self.shared.login.lock();
            if let Some(login) = login.as_mut().filter(|l| l.pin.as_slice() == old) {
                login.pin = Zeroizing::new(new.to_vec());
            }
        }
        self.on_others(|s| s.set_pin(old, new));
        Ok(())
    }

    fn operation_state(&self, out: Output) -> Result<()> {
        self.once(|a| a.inner.operation_state(out))
    }

    fn set_operation_state(
        &self,
        state: &[u8],
        encryption_key: CK_OBJECT_HANDLE,
        authentication_key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        self.once(|a| {
            let e = self.inward_key(a, encryption_key)?;
            let k = self.inward_key(a, authentication_key)?;
            a.inner.set_operation_state(state, e, k)
        })
    }

    fn create_object(&self, template: Attributes) -> Result<CK_OBJECT_HANDLE> {
        self.retried(|a| {
            let real = a.inner.create_object(template.clone())?;
            self.outward(a, real)
        })
    }

    fn copy_object(
        &self,
        object: CK_OBJECT_HANDLE,
        template: Attributes,
    ) -> Result<CK_OBJECT_HANDLE> {
        self.retried(|a| {
            let real = a
                .inner
                .copy_object(self.inward(a, object)?, template.clone())?;
            self.outward(a, real)
        })
    }

    fn destroy_object(&self, object: CK_OBJECT_HANDLE) -> Result<()> {
        self.retried(|a| a.inner.destroy_object(self.inward(a, object)?))?;
        self.shared.handles.destroyed(object);
        Ok(())
    }

    fn object_size(&self, object: CK_OBJECT_HANDLE) -> Result<CK_ULONG> {
        self.retried(|a| a.inner.object_size(self.inward(a, object)?))
    }

    fn get_attributes(
        &self,
        object: CK_OBJECT_HANDLE,
        requests: &mut [AttributeRequest],
    ) -> Result<()> {
        self.retried(|a| a.inner.get_attributes(self.inward(a, object)?, requests))
    }

    fn set_attributes(&self, object: CK_OBJECT_HANDLE, template: Attributes) -> Result<()> {
        self.retried(|a| {
            a.inner
                .set_attributes(self.inward(a, object)?, template.clone())
        })
    }

    fn find_init(&self, template: Attributes) -> Result<()> {
        self.settle();
        let found = self.retried(|a| {
            a.inner.find_init(template.clone())?;
            let real = a.inner.ops().find_next(usize::MAX);
            let _ = a.inner.ops().find_final();
            real?.into_iter().map(|h| self.outward(a, h)).collect()
        })?;
        self.ops.find_init(|| Ok(found))
    }

    fn init(
        &self,
        kind: OpKind,
        mechanism: &Mechanism,
        key: Option<CK_OBJECT_HANDLE>,
    ) -> Result<()> {
        self.settle();
        self.retried(|a| {
            let key = key.map(|k| self.inward_key(a, k)).transpose()?;
            a.inner.init(kind, mechanism, key)
        })
    }

    fn cancel(&self, kind: OpKind) {
        if let Some(a) = self.current.read().as_ref() {
            a.inner.cancel(kind);
        }
    }

    fn step(&self, kind: OpKind, step: Step) -> Result<()> {
        self.once(|a| a.inner.step(kind, step))
    }

    fn generate_key(
        &self,
        mechanism: &Mechanism,
        template: Attributes,
    ) -> Result<CK_OBJECT_HANDLE> {
        self.retried(|a| {
            let real = a.inner.generate_key(mechanism, template.clone())?;
            self.outward(a, real)
        })
    }

    fn generate_key_pair(
        &self,
        mechanism: &Mechanism,
        public: Attributes,
        private: Attributes,
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        self.retried(|a| {
            let (p, q) = a
                .inner
                .generate_key_pair(mechanism, public.clone(), private.clone())?;
            Ok((self.outward(a, p)?, self.outward(a, q)?))
        })
    }

    fn seed_random(&self, seed: &[u8]) -> Result<()> {
        self.retried(|a| a.inner.seed_random(seed))
    }

    fn generate_random(&self, out: &mut [u8]) -> Result<()> {
        self.retried(|a| a.inner.generate_random(out))
    }

    fn ciphertext_len(&self, mechanism: &Mechanism, key: CK_OBJECT_HANDLE) -> Result<usize> {
        self.retried(|a| a.inner.ciphertext_len(mechanism, self.inward_key(a, key)?))
    }

    fn encapsulate(
        &self,
        mechanism: &Mechanism,
        key: CK_OBJECT_HANDLE,
        template: Attributes,
    ) -> Result<(Vec<u8>, CK_OBJECT_HANDLE)> {
        self.retried(|a| {
            let (ciphertext, real) =
                a.inner
                    .encapsulate(mechanism, self.inward_key(a, key)?, template.clone())?;
            Ok((ciphertext, self.outward(a, real)?))
        })
    }

    fn decapsulate(
        &self,
        mechanism: &Mechanism,
        key: CK_OBJECT_HANDLE,
        template: Attributes,
        ciphertext: &[u8],
    ) -> Result<CK_OBJECT_HANDLE> {
        self.retried(|a| {
            let real = a.inner.decapsulate(
                mechanism,
                self.inward_key(a, key)?,
                template.clone(),
                ciphertext,
            )?;
            self.outward(a, real)
        })
    }

    fn digest_key(&self, key: CK_OBJECT_HANDLE) -> Result<()> {
        self.once(|a| a.inner.digest_key(self.inward_key(a, key)?))
    }

    fn wrap_key(
        &self,
        mechanism: &Mechanism,
        wrapping: CK_OBJECT_HANDLE,
        key: CK_OBJECT_HANDLE,
        out: Output,
    ) -> Result<()> {
        self.once(|a| {
            let wrapping = self.inward_key(a, wrapping).map_err(|e| match e {
                Error::KEY_HANDLE_INVALID => Error(CKR_WRAPPING_KEY_HANDLE_INVALID),
                e => e,
            })?;
            a.inner
                .wrap_key(mechanism, wrapping, self.inward_key(a, key)?, out)
        })
    }

    fn unwrap_key(
        &self,
        mechanism: &Mechanism,
        unwrapping: CK_OBJECT_HANDLE,
        wrapped: &[u8],
        template: Attributes,
    ) -> Result<CK_OBJECT_HANDLE> {
        self.retried(|a| {
            let unwrapping = self.inward_key(a, unwrapping).map_err(|e| match e {
                Error::KEY_HANDLE_INVALID => Error(CKR_UNWRAPPING_KEY_HANDLE_INVALID),
                e => e,
            })?;
            let real = a
                .inner
                .unwrap_key(mechanism, unwrapping, wrapped, template.clone())?;
            self.outward(a, real)
        })
    }

    fn derive_key(
        &self,
        mechanism: &Mechanism,
        base: CK_OBJECT_HANDLE,
        template: Attributes,
    ) -> Result<CK_OBJECT_HANDLE> {
        self.retried(|a| {
            let real =
                a.inner
                    .derive_key(mechanism, self.inward_key(a, base)?, template.clone())?;
            self.outward(a, real)
        })
    }

    fn recover_init(
        &self,
        recover: Recover,
        mechanism: &Mechanism,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        self.retried(|a| {
            a.inner
                .recover_init(recover, mechanism, self.inward_key(a, key)?)
        })
    }

    fn recover(&self, recover: Recover, data: &[u8], out: Output) -> Result<()> {
        self.once(|a| a.inner.recover(recover, data, out))
    }

    fn dual_update(&self, dual: Dual, data: &[u8], out: Output) -> Result<()> {
        self.once(|a| a.inner.dual_update(dual, data, out))
    }
}

//! Post-quantum keys kept in a classical HSM as sealed records (custody 2): the index of the
//! records this process knows, the bounded cache of decrypted keys, making, opening and
//! re-sealing records.
//!
//! A record is presented as a key only once the HSM has opened it under a storage key
//! ([`Trust::Authentic`]): anyone who can open a session, PIN or not, can write a data object
//! that looks like a record, and such an object is never a key here. Without a login nothing
//! can be opened, so a process that has not logged in yet shows no sealed key.

use super::hierarchy::{self, Protection, Stk};
use super::index::Index;
use super::records::{self, Kind, Record};
use crate::backend::pkcs11::library::HsmLibrary;
use crate::consts::*;
use crate::error::{Error, Result};
use crate::random::random_bytes;
use crate::token::attributes::Attributes;
use crate::token::object::Object;
use cryptoki_sys::*;
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Decrypted keys kept at most this long, and at most this many.
const CACHE_TTL: Duration = Duration::from_secs(15 * 60);
const CACHE_CAPACITY: usize = 4096;

/// A record the index knows: its public face and what is needed to open it.
#[derive(Clone)]
pub struct Indexed {
    /// The key as applications see it (public attributes only).
    pub object: Arc<Object>,
    pub record: Arc<Record>,
    /// When the HSM last confirmed the record exists (milliseconds on [`clock`]).
    confirmed: Arc<AtomicU64>,
    /// Whether the HSM has opened the record under a storage key ([`Trust`] as a byte).
    trust: Arc<AtomicU8>,
}

/// What is known of a record's origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Trust {
    /// Not opened yet (no login, or not asked for yet): not presented.
    Unchecked = 0,
    /// Opened by the HSM under one of the storage keys: this module wrote it.
    Authentic = 1,
    /// The HSM refused to open it: written by someone else, or altered. Never presented.
    Refused = 2,
}

/// How long a record the HSM confirmed is trusted without asking again: another process's
/// deletions and rotations show within this time, while a search repeated in a loop does not
/// pay an HSM round trip each time.
const CONFIRMATION_TTL_MS: u64 = 1000;
const NEVER_CONFIRMED: u64 = u64::MAX;

/// Milliseconds since this process first asked.
fn clock() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Indexed {
    /// Whether the record needs the HSM to confirm it again.
    pub fn unconfirmed(&self) -> bool {
        let confirmed = self.confirmed.load(Ordering::Relaxed);
        confirmed == NEVER_CONFIRMED || clock().saturating_sub(confirmed) > CONFIRMATION_TTL_MS
    }

    /// Asks for a confirmation by the HSM before the next use.
    fn doubt(&self) {
        self.confirmed.store(NEVER_CONFIRMED, Ordering::Relaxed);
    }

    pub fn confirm(&self) {
        self.confirmed.store(clock(), Ordering::Relaxed);
    }

    pub fn trust(&self) -> Trust {
        match self.trust.load(Ordering::Acquire) {
            1 => Trust::Authentic,
            2 => Trust::Refused,
            _ => Trust::Unchecked,
        }
    }

    fn set_trust(&self, trust: Trust) {
        self.trust.store(trust as u8, Ordering::Release);
    }
}

struct Cached {
    object: Arc<Object>,
    loaded: Instant,
}

pub struct KeyStore {
    pub(super) lib: Arc<HsmLibrary>,
    /// Whether release 1's storage keys were derived with HKDF (else AES-ECB-encrypt-data).
    pub(super) hkdf: bool,
    /// The storage keys of the current login, read once (cleared at logout).
    stks: RwLock<Option<Vec<Stk>>>,
    /// What the HSM lets storage keys be restricted to, probed before the first one is made.
    protection: Mutex<Option<Protection>>,
    /// This process's own session with the real token, for sealing and opening records.
    internal: Mutex<Option<CK_SESSION_HANDLE>>,
    /// The real slot (it may move when the token is re-initialised).
    real_slot: std::sync::atomic::AtomicU64,
    pub(super) index: RwLock<Index>,
    /// Whether each HSM object looked at is a storage key, for the current login (some HSMs
    /// number objects afresh at each login).
    verdicts: RwLock<HashMap<CK_OBJECT_HANDLE, bool>>,
    /// See [`Self::generation`].
    generation: AtomicU64,
    /// Whether the next [`Self::refresh`] reads every record again (see [`Self::suspect`]).
    stale: std::sync::atomic::AtomicBool,
    /// Whether this process has looked for release 1's storage keys (see `migrate`).
    pub(super) legacy_keys_checked: std::sync::atomic::AtomicBool,
    /// Objects tagged as records that are not well-formed ones: never used, never forwarded.
    foreign: RwLock<HashSet<CK_OBJECT_HANDLE>>,
    cache: RwLock<HashMap<CK_OBJECT_HANDLE, Cached>>,
    /// Whether the index has been read from the HSM since this process started.
    loaded: std::sync::atomic::AtomicBool,
    /// Handles of hybrid keys' Ed25519 halves in the HSM, by label, for the current login.
    ed25519: RwLock<HashMap<Vec<u8>, CK_OBJECT_HANDLE>>,
}

/// A record's template in the HSM.
pub(super) fn record_template(
    value: Vec<u8>,
    token: bool,
    private: bool,
    label: &[u8],
) -> Attributes {
    let mut t = Attributes::new();
    t.set_ulong(CKA_CLASS, CKO_DATA);
    t.set_bool(CKA_TOKEN, token);
    t.set_bool(CKA_PRIVATE, private);
    t.set_bool(CKA_MODIFIABLE, true);
    t.set(CKA_APPLICATION, records::APPLICATION.to_vec());
    t.set(CKA_LABEL, label.to_vec());
    t.set(CKA_VALUE, value);
    t
}

impl KeyStore {
    pub fn new(lib: Arc<HsmLibrary>, real_slot: CK_SLOT_ID, hkdf: bool) -> Self {
        KeyStore {
            lib,
            hkdf,
            stks: RwLock::new(None),
            foreign: RwLock::new(HashSet::new()),
            legacy_keys_checked: std::sync::atomic::AtomicBool::new(false),
            verdicts: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            stale: std::sync::atomic::AtomicBool::new(false),
            protection: Mutex::new(None),
            internal: Mutex::new(None),
            real_slot: std::sync::atomic::AtomicU64::new(real_slot),
            index: RwLock::new(Index::default()),
            cache: RwLock::new(HashMap::new()),
            ed25519: RwLock::new(HashMap::new()),
            loaded: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn real_slot(&self) -> CK_SLOT_ID {
        self.real_slot.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The token moved to another real slot (after `C_InitToken`); the internal session,
    /// if any, was closed with [`Self::close`] before.
    pub fn moved_to(&self, real_slot: CK_SLOT_ID) {
        self.real_slot
            .store(real_slot, std::sync::atomic::Ordering::Release);
    }

    /// Runs `f` with the internal session (opened on first use; it shares the application's
    /// login, which PKCS#11 keeps per token).
    pub(super) fn with_internal<T>(
        &self,
        f: impl FnOnce(CK_SESSION_HANDLE) -> Result<T>,
    ) -> Result<T> {
        let mut guard = self.internal.lock();
        let session = match *guard {
            Some(s) => s,
            None => {
                let s = self
                    .lib
                    .open_session(self.real_slot(), CKF_SERIAL_SESSION | CKF_RW_SESSION)?;
                *guard = Some(s);
                // The HSM may have restarted while no session of ours was open, numbering its
                // objects afresh: nothing indexed is trusted before it is confirmed again.
                self.suspect();
                s
            }
        };
        let result = f(session);
        if let Err(e) = result {
            if hsm_lost(e) {
                tracing::warn!(
                    "the HSM lost this module's session ({e}): its objects are read again"
                );
                *guard = None;
                self.suspect();
            }
        }
        result
    }

    /// The HSM may have renumbered its objects (it restarted, or its sessions were lost):
    /// every indexed record must be confirmed before use, and what is kept by handle goes.
    pub fn suspect(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.stale.store(true, Ordering::Release);
        for (_, entry) in self.index.read().iter() {
            entry.doubt();
        }
        self.cache.write().clear();
        self.ed25519.write().clear();
        *self.stks.write() = None;
        self.forget_verdicts();
    }

    /// Counts [`Self::suspect`]: what is kept by HSM handle elsewhere is dropped when it moves.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// [`Self::confirmed`], asking the HSM whatever it said lately: before a destructive call.
    pub fn confirmed_now(&self, s: CK_SESSION_HANDLE, handle: CK_OBJECT_HANDLE) -> bool {
        if let Some(entry) = self.index.read().get(&handle) {
            entry.doubt();
        }
        self.confirmed(s, handle)
    }

    /// Whether the HSM object `handle` is still exactly the indexed record (asked of the HSM
    /// when not confirmed lately); a record that is gone or changed leaves the index.
    pub fn confirmed(&self, s: CK_SESSION_HANDLE, handle: CK_OBJECT_HANDLE) -> bool {
        let Some(entry) = self.index.read().get(&handle).cloned() else {
            return false;
        };
        if !entry.unconfirmed() {
            return true;
        }
        let value = self.lib.attribute(s, handle, CKA_VALUE);
        let same = matches!(value, Ok(Some(ref v)) if entry.record.is_encoded_as(v));
        if same {
            entry.confirm();
        } else {
            self.removed(handle);
        }
        same
    }

    /// Closes the internal session (the application's last session closed).
    pub fn close(&self) {
        if let Some(s) = self.internal.lock().take() {
            let _ = self.lib.close_session(s);
        }
    }

    /// Forgets every decrypted key (logout, finalize, fork) and the private part of the index.
    pub fn forget_secrets(&self) {
        if let Some(mut cache) = self.cache.try_write() {
            cache.clear();
        }
        if let Some(mut index) = self.index.try_write() {
            index.retain(|_, e| !e.object.is_private());
        }
        if let Some(mut handles) = self.ed25519.try_write() {
            handles.clear();
        }
        if let Some(mut stks) = self.stks.try_write() {
            *stks = None;
        }
        self.forget_verdicts();
    }

    /// Whether `object` is a storage key, if known in this login.
    pub fn storage_key_verdict(&self, object: CK_OBJECT_HANDLE) -> Option<bool> {
        self.verdicts.read().get(&object).copied()
    }

    pub fn remember_verdict(&self, object: CK_OBJECT_HANDLE, storage_key: bool) {
        self.verdicts.write().insert(object, storage_key);
    }

    /// A login or logout: handles may name other objects now.
    pub fn forget_verdicts(&self) {
        if let Some(mut verdicts) = self.verdicts.try_write() {
            verdicts.clear();
        }
    }

    /// The storage keys (read from the HSM when `reload`, or on first use in this login).
    pub(super) fn storage_keys(&self, s: CK_SESSION_HANDLE, reload: bool) -> Result<Vec<Stk>> {
        if !reload {
            if let Some(stks) = self.stks.read().as_ref() {
                return Ok(stks.clone());
            }
        }
        let stks = hierarchy::storage_keys(&self.lib, s)?;
        {
            let mut verdicts = self.verdicts.write();
            for stk in &stks {
                verdicts.insert(stk.handle, true);
            }
        }
        // Without a login the HSM shows no private object: nothing is learnt, nothing kept.
        if !stks.is_empty() {
            *self.stks.write() = Some(stks.clone());
        }
        Ok(stks)
    }

    /// The newest storage key, generated on first use.
    pub(super) fn current_stk(&self, s: CK_SESSION_HANDLE) -> Result<Stk> {
        if let Some(stk) = self.storage_keys(s, false)?.last() {
            return Ok(*stk);
        }
        match self.storage_keys(s, true)?.last() {
            Some(stk) => Ok(*stk),
            None => self.new_stk(s, 1),
        }
    }

    /// Generates the storage key of `epoch` and adds it to the known ones.
    pub(super) fn new_stk(&self, s: CK_SESSION_HANDLE, epoch: u32) -> Result<Stk> {
        let protection = {
            let mut known = self.protection.lock();
            match *known {
                Some(p) => p,
                None => {
                    let p = Protection::probe(&self.lib, s)?;
                    tracing::info!("storage-key protection this HSM offers: {p:?}");
                    *known = Some(p);
                    p
                }
            }
        };
        let stk = hierarchy::new_stk(&self.lib, s, protection, epoch)?;
        self.remember_verdict(stk.handle, true);
        let mut stks = self.storage_keys(s, true)?;
        if !stks.contains(&stk) {
            stks.push(stk);
        }
        *self.stks.write() = Some(stks);
        Ok(stk)
    }

    /// A cached HSM handle for an Ed25519 half, else the one `find` gives.
    pub fn ed25519_handle(
        &self,
        label: &[u8],
        find: impl FnOnce() -> Result<CK_OBJECT_HANDLE>,
    ) -> Result<CK_OBJECT_HANDLE> {
        if let Some(handle) = self.ed25519.read().get(label) {
            return Ok(*handle);
        }
        let handle = find()?;
        self.ed25519.write().insert(label.to_vec(), handle);
        Ok(handle)
    }

    /// Forgets an Ed25519 half that was destroyed.
    pub fn ed25519_removed(&self, label: &[u8]) {
        self.ed25519.write().remove(label);
    }

    /// A record presented as a key: one the HSM has opened (opened now if it was not yet).
    pub fn indexed(&self, handle: CK_OBJECT_HANDLE) -> Option<Indexed> {
        let entry = self.index.read().get(&handle).cloned()?;
        self.authentic(handle, &entry).then_some(entry)
    }

    /// Whether the handle names a record, presented or not (so that it is never handed to the
    /// HSM as one of its own objects).
    pub fn is_record(&self, handle: CK_OBJECT_HANDLE) -> bool {
        self.index.read().contains_key(&handle) || self.foreign.read().contains(&handle)
    }

    /// Records matching a template, from the index, each opened by the HSM before it is shown.
    pub fn find(&self, template: &Attributes) -> Vec<CK_OBJECT_HANDLE> {
        let matches: Vec<(CK_OBJECT_HANDLE, Indexed)> = {
            let index = self.index.read();
            let found = index.find(template);
            found
                .into_iter()
                .filter_map(|h| index.get(&h).map(|e| (h, e.clone())))
                .collect()
        };
        matches
            .into_iter()
            .filter(|(h, e)| self.authentic(*h, e))
            .map(|(h, _)| h)
            .collect()
    }

    /// Whether the HSM opens the record under a storage key (asked once per record; a private
    /// record's key, opened for the purpose, goes to the cache).
    pub(super) fn authentic(&self, handle: CK_OBJECT_HANDLE, entry: &Indexed) -> bool {
        if entry.trust() != Trust::Unchecked || entry.record.legacy {
            return entry.trust() == Trust::Authentic;
        }
        self.with_internal(|s| Ok(self.authentic_in(s, handle, entry)))
            .unwrap_or(false)
    }

    /// [`Self::authentic`] in the internal session `s` (held by the caller).
    pub(super) fn authentic_in(
        &self,
        s: CK_SESSION_HANDLE,
        handle: CK_OBJECT_HANDLE,
        entry: &Indexed,
    ) -> bool {
        match entry.trust() {
            Trust::Authentic => return true,
            Trust::Refused => return false,
            Trust::Unchecked if entry.record.legacy => return false,
            Trust::Unchecked => {}
        }
        match self.open_record(s, handle, entry) {
            Ok(Some(object)) => {
                if entry.record.kind == Kind::Private {
                    self.remember(handle, Arc::new(object));
                }
                true
            }
            Ok(None) | Err(_) => false,
        }
    }

    /// Opens a record in the HSM: the complete key (private record) or its public face (public
    /// record), and records the verdict. `None` when it cannot be opened now (no storage key
    /// of its epoch visible: no login) or ever (refused, and logged).
    pub(super) fn open_record(
        &self,
        s: CK_SESSION_HANDLE,
        handle: CK_OBJECT_HANDLE,
        entry: &Indexed,
    ) -> Result<Option<Object>> {
        let record = &entry.record;
        let epoch_keys = |reload| -> Result<Vec<Stk>> {
            Ok(self
                .storage_keys(s, reload)?
                .into_iter()
                .filter(|k| k.epoch == record.epoch)
                .collect())
        };
        let mut candidates = epoch_keys(false)?;
        if candidates.is_empty() {
            // Another process may have rotated since the keys were read.
            candidates = epoch_keys(true)?;
        }
        if candidates.is_empty() {
            return Ok(None);
        }
        let (iv, aad, sealed) = (&record.iv, &record.authenticated, &record.sealed);
        let mut unavailable = false;
        // Two processes making the first storage key at once may leave two of one epoch.
        for stk in &candidates {
            match self.lib.aes_gcm(s, stk.handle, iv, aad, sealed, true) {
                Ok(secret) => {
                    entry.set_trust(Trust::Authentic);
                    return Ok(Some(match record.kind {
                        Kind::Public => Object::new(entry.object.attrs.clone()),
                        Kind::Private => {
                            let mut attrs = entry.object.attrs.clone();
                            attrs.merge(Attributes::deserialize(&secret)?);
                            Object::new(attrs)
                        }
                    }));
                }
                Err(e) if not_a_verdict(e) => unavailable = true,
                Err(_) => {}
            }
        }
        if unavailable {
            return Ok(None);
        }
        entry.set_trust(Trust::Refused);
        tracing::warn!(
            "HSM object {handle} claims to be a key record but does not open under the storage key \
             of its epoch (written by someone else, or altered): ignored"
        );
        Ok(None)
    }

    /// Re-reads the list of records from the HSM (what this process can see now).
    pub fn refresh(&self) -> Result<()> {
        let mut template = Attributes::new();
        template.set_ulong(CKA_CLASS, CKO_DATA);
        template.set(CKA_APPLICATION, records::APPLICATION.to_vec());
        let handles: HashSet<CK_OBJECT_HANDLE> = self
            .with_internal(|s| self.lib.find(s, &template))?
            .into_iter()
            .collect();
        // After a lost session every handle is read again: the same number may name another
        // object now. A record found unchanged keeps what is known of it.
        let recheck = self.stale.swap(false, Ordering::AcqRel);
        let unknown: Vec<CK_OBJECT_HANDLE> = {
            let index = self.index.read();
            let foreign = self.foreign.read();
            handles
                .iter()
                .copied()
                .filter(|h| recheck || (!index.contains_key(h) && !foreign.contains(h)))
                .collect()
        };
        let mut malformed = Vec::new();
        let mut fresh = HashMap::with_capacity(unknown.len());
        for handle in unknown {
            let value = self.with_internal(|s| self.lib.attribute(s, handle, CKA_VALUE));
            let value = value.inspect_err(|_| self.stale.store(recheck, Ordering::Release))?;
            let known = self.index.read().get(&handle).cloned();
            if let (Some(entry), Some(v)) = (known, value.as_deref()) {
                if entry.record.is_encoded_as(v) {
                    entry.confirm();
                    fresh.insert(handle, entry);
                    continue;
                }
            }
            match value.as_deref().map(Record::parse) {
                Some(Ok(record)) if well_formed(&record) => {
                    fresh.insert(handle, Self::present(record));
                }
                _ => {
                    tracing::warn!(
                        "HSM object {handle} looks like a key record but is not one (written by someone else): ignored"
                    );
                    malformed.push(handle);
                }
            }
        }
        {
            let mut foreign = self.foreign.write();
            foreign.retain(|h| handles.contains(h) && !recheck);
            foreign.extend(malformed);
        }
        let mut index = self.index.write();
        index.retain(|h, _| handles.contains(h) && !recheck);
        index.extend(fresh);
        self.cache.write().retain(|h, _| index.contains_key(h));
        self.loaded.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether the index was ever read from the HSM in this process.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// The face of a record: its public attributes, plus its custody.
    fn present(record: Record) -> Indexed {
        let mut attrs = record.public.clone();
        if record.kind == Kind::Private {
            attrs.set_ulong(CKA_B4AE_CUSTODY, B4AE_CUSTODY_HSM_WRAPPED);
        }
        attrs.set(CKA_UNIQUE_ID, unique_id(&record.key_id, record.kind));
        Indexed {
            object: Arc::new(Object::new(attrs)),
            record: Arc::new(record),
            confirmed: Arc::new(AtomicU64::new(clock())),
            trust: Arc::new(AtomicU8::new(Trust::Unchecked as u8)),
        }
    }

    /// A record this process has just sealed: authentic by construction.
    pub(super) fn made(record: Record) -> Indexed {
        let entry = Self::present(record);
        entry.set_trust(Trust::Authentic);
        entry
    }

    /// Seals `private` under the current storage key and stores both halves as records,
    /// created in the caller's real session (so session keys vanish with it).
    pub fn store_pair(
        &self,
        real_session: CK_SESSION_HANDLE,
        public: Attributes,
        private: Attributes,
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        let key_id: [u8; 16] = random_bytes()?;
        let public_object = Object::new(public);
        let (public_value, private_value, private_object) = self.with_internal(|s| {
            let stk = self.current_stk(s)?;
            let public_value = self.public_value(s, &stk, &key_id, &public_object.attrs)?;
            let private_object = sealable(&key_id, private);
            let private_value = self.private_value(s, &stk, &key_id, &private_object)?;
            Ok((public_value, private_value, private_object))
        })?;
        let public_template = record_template(
            public_value.clone(),
            public_object.is_token(),
            public_object.is_private(),
            public_object.attrs.get(CKA_LABEL).unwrap_or_default(),
        );
        let private_template = record_template(
            private_value.clone(),
            private_object.is_token(),
            true,
            private_object.attrs.get(CKA_LABEL).unwrap_or_default(),
        );
        let public_handle = self.lib.create(real_session, &public_template)?;
        let private_handle = match self.lib.create(real_session, &private_template) {
            Ok(h) => h,
            Err(e) => {
                let _ = self.lib.destroy(real_session, public_handle);
                return Err(e);
            }
        };
        let mut index = self.index.write();
        index.insert(public_handle, Self::made(Record::parse(&public_value)?));
        index.insert(private_handle, Self::made(Record::parse(&private_value)?));
        self.remember(private_handle, Arc::new(private_object));
        Ok((public_handle, private_handle))
    }

    /// Stores one imported key (`C_CreateObject`) as a record.
    pub fn store_one(
        &self,
        real_session: CK_SESSION_HANDLE,
        attrs: Attributes,
    ) -> Result<CK_OBJECT_HANDLE> {
        let key_id: [u8; 16] = random_bytes()?;
        let private = attrs.ulong(CKA_CLASS)? == Some(CKO_PRIVATE_KEY);
        let full = if private {
            sealable(&key_id, attrs)
        } else {
            Object::new(attrs)
        };
        let value = self.with_internal(|s| self.record_value(s, None, &key_id, &full, private))?;
        let template = record_template(
            value.clone(),
            full.is_token(),
            private || full.is_private(),
            full.attrs.get(CKA_LABEL).unwrap_or_default(),
        );
        let handle = self.lib.create(real_session, &template)?;
        self.index
            .write()
            .insert(handle, Self::made(Record::parse(&value)?));
        if private {
            self.remember(handle, Arc::new(full));
        }
        Ok(handle)
    }

    /// Writes a changed key (`C_SetAttributeValue`) back into its record, in place, so its
    /// handle stays.
    pub fn rewrite(
        &self,
        real_session: CK_SESSION_HANDLE,
        handle: CK_OBJECT_HANDLE,
        attrs: Attributes,
    ) -> Result<()> {
        let entry = self.indexed(handle).ok_or(Error::OBJECT_HANDLE_INVALID)?;
        let key_id = entry.record.key_id;
        let private = entry.record.kind == Kind::Private;
        let full = if private {
            sealable(&key_id, attrs)
        } else {
            Object::new(attrs)
        };
        let value = self.with_internal(|s| self.record_value(s, None, &key_id, &full, private))?;
        let mut change = Attributes::new();
        change.set(CKA_VALUE, value.clone());
        change.set(
            CKA_LABEL,
            full.attrs.get(CKA_LABEL).unwrap_or_default().to_vec(),
        );
        self.lib.set_attributes(real_session, handle, &change)?;
        self.index
            .write()
            .insert(handle, Self::made(Record::parse(&value)?));
        if private {
            self.remember(handle, Arc::new(full));
        }
        Ok(())
    }

    /// A record's bytes under `stk` (else the current storage key).
    pub(super) fn record_value(
        &self,
        s: CK_SESSION_HANDLE,
        stk: Option<Stk>,
        key_id: &[u8; 16],
        object: &Object,
        private: bool,
    ) -> Result<Vec<u8>> {
        let stk = match stk {
            Some(stk) => stk,
            None => self.current_stk(s)?,
        };
        if private {
            self.private_value(s, &stk, key_id, object)
        } else {
            self.public_value(s, &stk, key_id, &object.attrs)
        }
    }

    /// A private record's bytes: the object's secret attributes sealed by the HSM under `stk`,
    /// everything else (but the custody, which the record's kind implies) as its public part.
    fn private_value(
        &self,
        s: CK_SESSION_HANDLE,
        stk: &Stk,
        key_id: &[u8; 16],
        object: &Object,
    ) -> Result<Vec<u8>> {
        let mut attrs = object.attrs.clone();
        attrs.remove(CKA_B4AE_CUSTODY);
        let secret = attrs.split_off(|t| object.is_secret_attribute(t));
        self.sealed(s, stk, Kind::Private, key_id, &attrs, &secret.serialize())
    }

    /// A public record's bytes: every attribute in the clear, authenticated by the HSM's tag.
    fn public_value(
        &self,
        s: CK_SESSION_HANDLE,
        stk: &Stk,
        key_id: &[u8; 16],
        attrs: &Attributes,
    ) -> Result<Vec<u8>> {
        let mut attrs = attrs.clone();
        attrs.remove(CKA_UNIQUE_ID);
        self.sealed(s, stk, Kind::Public, key_id, &attrs, &[])
    }

    fn sealed(
        &self,
        s: CK_SESSION_HANDLE,
        stk: &Stk,
        kind: Kind,
        key_id: &[u8; 16],
        public: &Attributes,
        secret: &[u8],
    ) -> Result<Vec<u8>> {
        let iv: [u8; 12] = random_bytes()?;
        let mut value = records::prefix(kind, stk.epoch, key_id, &iv, public);
        let sealed = self
            .lib
            .aes_gcm(s, stk.handle, &iv, &value, secret, false)?;
        value.extend_from_slice(&sealed);
        Ok(value)
    }

    pub(super) fn remember(&self, handle: CK_OBJECT_HANDLE, object: Arc<Object>) {
        let mut cache = self.cache.write();
        if cache.len() >= CACHE_CAPACITY {
            if let Some(oldest) = cache.iter().min_by_key(|(_, c)| c.loaded).map(|(h, _)| *h) {
                cache.remove(&oldest);
            }
        }
        cache.insert(
            handle,
            Cached {
                object,
                loaded: Instant::now(),
            },
        );
    }

    /// The complete private key behind a record: from the cache, else opened by the HSM.
    pub fn open(&self, handle: CK_OBJECT_HANDLE) -> Result<Arc<Object>> {
        if let Some(c) = self.cache.read().get(&handle) {
            if c.loaded.elapsed() < CACHE_TTL {
                crate::metrics::key_cache(true);
                return Ok(c.object.clone());
            }
        }
        let entry = self.index.read().get(&handle).cloned();
        let entry = entry.ok_or(Error::KEY_HANDLE_INVALID)?;
        if entry.record.legacy || entry.trust() == Trust::Refused {
            return Err(Error::KEY_HANDLE_INVALID);
        }
        if entry.record.kind == Kind::Public {
            return match self.authentic(handle, &entry) {
                true => Ok(entry.object),
                false => Err(Error::KEY_HANDLE_INVALID),
            };
        }
        let opened = self.with_internal(|s| self.open_record(s, handle, &entry));
        let object = match opened {
            Ok(Some(object)) => Arc::new(object),
            Ok(None) if entry.trust() == Trust::Refused => return Err(Error::KEY_HANDLE_INVALID),
            Ok(None) => return Err(self.missing_storage_key(handle)),
            Err(e) => return Err(e),
        };
        crate::metrics::key_cache(false);
        self.remember(handle, object.clone());
        Ok(object)
    }

    /// Why a record whose storage key is not visible cannot be opened: a rotation elsewhere
    /// replaced it (the handle is stale), no login, or its storage key was destroyed.
    fn missing_storage_key(&self, handle: CK_OBJECT_HANDLE) -> Error {
        let application = self.with_internal(|s| self.lib.attribute(s, handle, CKA_APPLICATION));
        if !matches!(application, Ok(Some(ref a)) if a == records::APPLICATION) {
            self.removed(handle);
            return Error::KEY_HANDLE_INVALID;
        }
        tracing::error!("no storage key in the HSM opens a live key record (not logged in, or the key was destroyed outside this module)");
        Error::USER_NOT_LOGGED_IN
    }

    /// Forgets a destroyed record.
    pub fn removed(&self, handle: CK_OBJECT_HANDLE) {
        self.index.write().remove(&handle);
        self.cache.write().remove(&handle);
    }

    /// Makes a token record of a key again under `stk` (rotation and migration), in the
    /// internal session; the old record is the caller's to destroy.
    pub(super) fn reseal(
        &self,
        s: CK_SESSION_HANDLE,
        stk: &Stk,
        key_id: &[u8; 16],
        kind: Kind,
        object: &Object,
    ) -> Result<()> {
        let private = kind == Kind::Private;
        let value = self.record_value(s, Some(*stk), key_id, object, private)?;
        let template = record_template(
            value.clone(),
            true,
            private || object.is_private(),
            object.attrs.get(CKA_LABEL).unwrap_or_default(),
        );
        let handle = self.lib.create(s, &template)?;
        let entry = Self::made(Record::parse(&value)?);
        self.index.write().insert(handle, entry);
        if private {
            self.remember(handle, Arc::new(Object::new(object.attrs.clone())));
        }
        Ok(())
    }

    /// Every indexed token record of this release, with its handle.
    pub(super) fn token_records(&self) -> Vec<(CK_OBJECT_HANDLE, Indexed)> {
        self.index
            .read()
            .iter()
            .filter(|(_, e)| e.object.is_token() && !e.record.legacy)
            .map(|(h, e)| (*h, e.clone()))
            .collect()
    }
}

/// A private key's attributes as its record keeps them (custody and unique id set).
fn sealable(key_id: &[u8; 16], mut attrs: Attributes) -> Object {
    attrs.set_ulong(CKA_B4AE_CUSTODY, B4AE_CUSTODY_HSM_WRAPPED);
    attrs.set(CKA_UNIQUE_ID, unique_id(key_id, Kind::Private));
    Object::new(attrs)
}

/// Whether a record's clear part is what this module writes: the kind and the class agree,
/// and no secret attribute is outside the seal. Anything else was written by someone else.
fn well_formed(record: &Record) -> bool {
    let class = record.public.ulong(CKA_CLASS).ok().flatten();
    let kind_fits = match record.kind {
        Kind::Private => class == Some(CKO_PRIVATE_KEY),
        Kind::Public => class == Some(CKO_PUBLIC_KEY),
    };
    let face = Object::new(record.public.clone());
    let secret_outside =
        record.kind == Kind::Private && record.public.types().any(|t| face.is_secret_attribute(t));
    let tag_fits = record.legacy || record.sealed.len() >= records::TAG_LEN;
    kind_fits && !secret_outside && tag_fits
}

/// Answers that mean the session (and with it, perhaps, the HSM's numbering) is gone.
pub fn hsm_lost(e: Error) -> bool {
    matches!(
        e.0,
        CKR_SESSION_HANDLE_INVALID
            | CKR_SESSION_CLOSED
            | CKR_CRYPTOKI_NOT_INITIALIZED
            | CKR_DEVICE_REMOVED
            | CKR_TOKEN_NOT_PRESENT
            | CKR_DEVICE_ERROR
    )
}

/// Errors that say nothing about a record (the HSM could not be asked), as opposed to its
/// refusal to open it.
fn not_a_verdict(e: Error) -> bool {
    matches!(
        e.0,
        CKR_USER_NOT_LOGGED_IN
            | CKR_SESSION_HANDLE_INVALID
            | CKR_SESSION_CLOSED
            | CKR_DEVICE_ERROR
            | CKR_DEVICE_MEMORY
            | CKR_DEVICE_REMOVED
            | CKR_TOKEN_NOT_PRESENT
            | CKR_HOST_MEMORY
            | CKR_KEY_HANDLE_INVALID
            | CKR_OBJECT_HANDLE_INVALID
            | CKR_CRYPTOKI_NOT_INITIALIZED
    )
}

/// `CKA_UNIQUE_ID` of a record's key: stable across processes and rotations, since the key id
/// stays with the key.
fn unique_id(key_id: &[u8; 16], kind: Kind) -> Vec<u8> {
    let id: String = key_id.iter().map(|b| format!("{b:02x}")).collect();
    let half = match kind {
        Kind::Private => "private",
        Kind::Public => "public",
    };
    format!("{id}-{half}").into_bytes()
}

//! Post-quantum keys kept in a classical HSM as sealed records (custody 2): the index of the
//! records this process knows, the bounded cache of decrypted keys, making, opening and
//! re-sealing records.

use super::hierarchy::{self, Stk};
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
use std::sync::atomic::{AtomicU64, Ordering};
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
}

/// How long a record the HSM confirmed is trusted without asking again: another process's
/// deletions and rotations show within this time, while a search repeated in a loop does not
/// pay an HSM round trip each time.
const CONFIRMATION_TTL_MS: u64 = 1000;

/// Milliseconds since this process first asked.
fn clock() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Indexed {
    /// Whether the record needs the HSM to confirm it again.
    pub fn unconfirmed(&self) -> bool {
        clock().saturating_sub(self.confirmed.load(Ordering::Relaxed)) > CONFIRMATION_TTL_MS
    }

    pub fn confirm(&self) {
        self.confirmed.store(clock(), Ordering::Relaxed);
    }
}

struct Cached {
    object: Arc<Object>,
    loaded: Instant,
}

pub struct KeyStore {
    lib: Arc<HsmLibrary>,
    /// Whether the HSM derives with HKDF (else AES-ECB-encrypt-data).
    hkdf: bool,
    /// This process's own session with the real token, for sealing and opening records.
    internal: Mutex<Option<CK_SESSION_HANDLE>>,
    /// The real slot (it may move when the token is re-initialised).
    real_slot: std::sync::atomic::AtomicU64,
    index: RwLock<Index>,
    cache: RwLock<HashMap<CK_OBJECT_HANDLE, Cached>>,
    /// Whether the index has been read from the HSM since this process started.
    loaded: std::sync::atomic::AtomicBool,
    /// Handles of hybrid keys' Ed25519 halves in the HSM, by label, for the current login.
    ed25519: RwLock<HashMap<Vec<u8>, CK_OBJECT_HANDLE>>,
}

/// A record's template in the HSM.
fn record_template(value: Vec<u8>, token: bool, private: bool, label: &[u8]) -> Attributes {
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
    fn with_internal<T>(&self, f: impl FnOnce(CK_SESSION_HANDLE) -> Result<T>) -> Result<T> {
        let mut guard = self.internal.lock();
        let session = match *guard {
            Some(s) => s,
            None => {
                let s = self
                    .lib
                    .open_session(self.real_slot(), CKF_SERIAL_SESSION | CKF_RW_SESSION)?;
                *guard = Some(s);
                s
            }
        };
        let result = f(session);
        if matches!(
            result,
            Err(Error(CKR_SESSION_HANDLE_INVALID | CKR_SESSION_CLOSED))
        ) {
            *guard = None;
        }
        result
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

    pub fn indexed(&self, handle: CK_OBJECT_HANDLE) -> Option<Indexed> {
        self.index.read().get(&handle).cloned()
    }

    pub fn is_record(&self, handle: CK_OBJECT_HANDLE) -> bool {
        self.index.read().contains_key(&handle)
    }

    /// Records matching a template, from the index alone.
    pub fn find(&self, template: &Attributes) -> Vec<CK_OBJECT_HANDLE> {
        self.index.read().find(template)
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
        let unknown: Vec<CK_OBJECT_HANDLE> = {
            let index = self.index.read();
            handles
                .iter()
                .copied()
                .filter(|h| !index.contains_key(h))
                .collect()
        };
        let mut fresh = HashMap::with_capacity(unknown.len());
        for handle in unknown {
            let value = self.with_internal(|s| self.lib.attribute(s, handle, CKA_VALUE))?;
            match value.as_deref().map(Record::parse) {
                Some(Ok(record)) => {
                    fresh.insert(handle, Self::present(record));
                }
                _ => tracing::warn!(
                    "HSM object {handle} looks like a key record but does not parse; ignored"
                ),
            }
        }
        let mut index = self.index.write();
        index.retain(|h, _| handles.contains(h));
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
        }
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
        let public_value = public_value(&key_id, &public);
        let public_template = record_template(
            public_value,
            public.bool_or(CKA_TOKEN, false),
            public.bool_or(CKA_PRIVATE, false),
            public.get(CKA_LABEL).unwrap_or_default(),
        );
        let (private_value, private_object) = self.seal(&key_id, private)?;
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
        index.insert(
            public_handle,
            Self::present(Record::parse(
                public_template.get(CKA_VALUE).unwrap_or_default(),
            )?),
        );
        index.insert(
            private_handle,
            Self::present(Record::parse(&private_value)?),
        );
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
        let (value, full) = if private {
            self.seal(&key_id, attrs)?
        } else {
            let object = Object::new(attrs);
            (public_value(&key_id, &object.attrs), object)
        };
        let template = record_template(
            value.clone(),
            full.is_token(),
            private || full.is_private(),
            full.attrs.get(CKA_LABEL).unwrap_or_default(),
        );
        let handle = self.lib.create(real_session, &template)?;
        self.index
            .write()
            .insert(handle, Self::present(Record::parse(&value)?));
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
        let (value, full) = match entry.record.kind {
            Kind::Private => self.seal(&key_id, attrs)?,
            Kind::Public => {
                let object = Object::new(attrs);
                (public_value(&key_id, &object.attrs), object)
            }
        };
        let mut change = Attributes::new();
        change.set(CKA_VALUE, value.clone());
        change.set(
            CKA_LABEL,
            full.attrs.get(CKA_LABEL).unwrap_or_default().to_vec(),
        );
        self.lib.set_attributes(real_session, handle, &change)?;
        self.index
            .write()
            .insert(handle, Self::present(Record::parse(&value)?));
        if entry.record.kind == Kind::Private {
            self.remember(handle, Arc::new(full));
        }
        Ok(())
    }

    /// A private record's bytes, sealed by the HSM under the current storage key, and the
    /// complete object (with its secrets) for the cache.
    fn seal(&self, key_id: &[u8; 16], mut attrs: Attributes) -> Result<(Vec<u8>, Object)> {
        attrs.set_ulong(CKA_B4AE_CUSTODY, B4AE_CUSTODY_HSM_WRAPPED);
        attrs.set(CKA_UNIQUE_ID, unique_id(key_id, Kind::Private));
        let full = Object::new(attrs);
        self.with_internal(|s| {
            let stk = hierarchy::current_stk(&self.lib, s, self.hkdf)?;
            Ok((self.private_value(s, &stk, key_id, &full)?, full))
        })
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
        let iv: [u8; 12] = random_bytes()?;
        let mut value = records::prefix(Kind::Private, stk.epoch, key_id, &iv, &attrs);
        let sealed = self
            .lib
            .aes_gcm(s, stk.handle, &iv, &value, &secret.serialize(), false)?;
        value.extend_from_slice(&sealed);
        Ok(value)
    }

    fn remember(&self, handle: CK_OBJECT_HANDLE, object: Arc<Object>) {
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
                return Ok(c.object.clone());
            }
        }
        let entry = self.indexed(handle).ok_or(Error::KEY_HANDLE_INVALID)?;
        if entry.record.kind == Kind::Public {
            return Ok(entry.object);
        }
        let object = match self.unseal(handle, &entry) {
            Ok(object) => Arc::new(object),
            Err(Error::KEY_HANDLE_INVALID) => {
                self.removed(handle);
                return Err(Error::KEY_HANDLE_INVALID);
            }
            Err(e) => return Err(e),
        };
        self.remember(handle, object.clone());
        Ok(object)
    }

    fn unseal(&self, handle: CK_OBJECT_HANDLE, entry: &Indexed) -> Result<Object> {
        self.with_internal(|s| self.unseal_in(s, handle, entry))
    }

    fn unseal_in(
        &self,
        s: CK_SESSION_HANDLE,
        handle: CK_OBJECT_HANDLE,
        entry: &Indexed,
    ) -> Result<Object> {
        let record = &entry.record;
        let secret = (|| {
            // Two processes making the first storage key at once may leave two of one epoch:
            // try each.
            let mut candidates: Vec<Stk> = hierarchy::storage_keys(&self.lib, s)?
                .into_iter()
                .filter(|k| k.epoch == record.epoch)
                .collect();
            if candidates.is_empty() {
                // A rotation elsewhere may have replaced this record: then the handle is stale,
                // and nothing is lost.
                let application = self
                    .lib
                    .attribute(s, handle, CKA_APPLICATION)
                    .ok()
                    .flatten();
                if application.as_deref() != Some(records::APPLICATION) {
                    return Err(Error::KEY_HANDLE_INVALID);
                }
                // The record is live but its storage key was deleted by someone.
                match hierarchy::restore_stk(&self.lib, s, self.hkdf, record.epoch)? {
                    Some(stk) => candidates.push(stk),
                    None => {
                        tracing::error!(
                            "no storage key of epoch {} and no MIK in the HSM for a key record",
                            record.epoch
                        );
                        return Err(Error::DEVICE);
                    }
                }
            }
            candidates
                .iter()
                .find_map(|stk| {
                    let (iv, aad, sealed) = (&record.iv, &record.authenticated, &record.sealed);
                    self.lib.aes_gcm(s, stk.handle, iv, aad, sealed, true).ok()
                })
                .ok_or_else(|| {
                    tracing::error!(
                        "the HSM could not open a key record (altered, or its storage key is gone)"
                    );
                    Error::DEVICE
                })
        })()?;
        let mut attrs = entry.object.attrs.clone();
        attrs.merge(Attributes::deserialize(&secret)?);
        Ok(Object::new(attrs))
    }

    /// Forgets a destroyed record.
    pub fn removed(&self, handle: CK_OBJECT_HANDLE) {
        self.index.write().remove(&handle);
        self.cache.write().remove(&handle);
    }

    /// Moves every private token record to the newest storage key (making a new one first when
    /// `new_epoch`), then deletes the storage keys no record needs. Safe to interrupt: a key
    /// always has a record sealed under a key that still exists, and the next call finishes.
    pub fn rotate(&self, new_epoch: bool) -> Result<u32> {
        self.refresh()?;
        self.with_internal(|s| {
            let mut stks = hierarchy::storage_keys(&self.lib, s)?;
            if stks.is_empty() && !new_epoch {
                // No post-quantum key was ever stored here: nothing to finish.
                return Ok(0);
            }
            if new_epoch {
                let next = stks.last().map_or(1, |k| k.epoch + 1);
                stks.push(hierarchy::derive_stk(&self.lib, s, self.hkdf, next)?);
            }
            let newest = *stks.last().expect("at least one storage key");
            let entries: Vec<(CK_OBJECT_HANDLE, Indexed)> = self
                .index
                .read()
                .iter()
                .filter(|(_, e)| e.record.kind == Kind::Private && e.object.is_token())
                .map(|(h, e)| (*h, e.clone()))
                .collect();
            let current: std::collections::HashSet<[u8; 16]> = entries
                .iter()
                .filter(|(_, e)| e.record.epoch == newest.epoch)
                .map(|(_, e)| e.record.key_id)
                .collect();
            for (handle, entry) in entries
                .iter()
                .filter(|(_, e)| e.record.epoch != newest.epoch)
            {
                if !current.contains(&entry.record.key_id) {
                    let object = self.unseal_in(s, *handle, entry)?;
                    self.reseal(s, &newest, &entry.record.key_id, object)?;
                }
                // The key now has a record under the newest storage key: the old one goes.
                self.lib.destroy(s, *handle)?;
                self.removed(*handle);
            }
            for old in stks.iter().filter(|k| k.epoch != newest.epoch) {
                self.lib.destroy(s, old.handle)?;
                tracing::info!("storage key epoch {} retired", old.epoch);
            }
            Ok(newest.epoch)
        })
    }

    fn reseal(
        &self,
        s: CK_SESSION_HANDLE,
        stk: &Stk,
        key_id: &[u8; 16],
        object: Object,
    ) -> Result<()> {
        let value = self.private_value(s, stk, key_id, &object)?;
        let attrs = &object.attrs;
        let template = record_template(
            value.clone(),
            true,
            true,
            attrs.get(CKA_LABEL).unwrap_or_default(),
        );
        let handle = self.lib.create(s, &template)?;
        self.index
            .write()
            .insert(handle, Self::present(Record::parse(&value)?));
        Ok(())
    }
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

/// A public record's bytes: everything is public, nothing sealed.
fn public_value(key_id: &[u8; 16], attrs: &Attributes) -> Vec<u8> {
    records::prefix(Kind::Public, 0, key_id, &[0; 12], attrs)
}

//! The pkcs11 backend: a B4AE slot in front of a token of a real HSM. Standard objects and
//! mechanisms are the HSM's own (the ABI layer forwards them); post-quantum keys the HSM cannot
//! hold natively are sealed records inside it ([`keystore`]), under a storage key that never
//! leaves it ([`hierarchy`]).

pub mod backup;
mod calls;
pub mod ed25519;
pub mod hierarchy;
mod index;
pub mod keystore;
mod legacy;
pub mod library;
pub mod pin_counter;
pub mod records;
mod rotation;
mod session;
mod slot;

pub use session::ForwardSession;
pub use slot::{AbsentToken, HsmSlot};

use crate::backend::pkcs11::library::HsmLibrary;
use crate::config::TokenConfig;
use crate::error::{Error, Result};
use crate::mechanism::{self, MechanismInfo};
use crate::token::attributes::Attributes;
use cryptoki_sys::*;
use keystore::KeyStore;
use parking_lot::RwLock;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

/// Which real token a slot stands for.
#[derive(Clone, Debug)]
enum Selector {
    Label(String),
    Serial(String),
    /// The only token of the library (or, with `PKCS11_LIBRARY_PATH`, one of its tokens).
    Slot(CK_SLOT_ID),
}

fn trimmed(field: &[u8]) -> String {
    String::from_utf8_lossy(field)
        .trim_end_matches([' ', '\0'])
        .to_owned()
}

/// One B4AE slot forwarding to one real token.
pub struct ForwardToken {
    pub slot_id: CK_SLOT_ID,
    pub description: String,
    pub lib: Arc<HsmLibrary>,
    selector: Selector,
    real_slot: RwLock<CK_SLOT_ID>,
    /// The real token's mechanisms, read once.
    real_mechanisms: Vec<CK_MECHANISM_TYPE>,
    pub keys: KeyStore,
    /// Wrong PINs in a row, counted by this module (SPEC §4).
    pub pins: pin_counter::PinCounter,
    identity: RwLock<Option<Vec<u8>>>,
    pub sessions: AtomicUsize,
    /// Counts the times every session of this module on the token closed: SoftHSM2 (and PKCS#11
    /// allows it) numbers the objects afresh after that, so handles kept from an earlier era
    /// name nothing, or something else.
    pub eras: std::sync::atomic::AtomicU64,
    /// The key type of the HSM's keys this module has checked (see [`Self::check_key_type`]).
    key_types: RwLock<std::collections::HashMap<CK_OBJECT_HANDLE, CK_KEY_TYPE>>,
    key_types_generation: std::sync::atomic::AtomicU64,
}

impl ForwardToken {
    /// A slot for the configured real token.
    pub fn open(slot_id: CK_SLOT_ID, config: &TokenConfig, lib: Arc<HsmLibrary>) -> Result<Self> {
        let selector = match (&config.token_label, &config.token_serial) {
            (Some(label), _) => Selector::Label(label.clone()),
            (None, Some(serial)) => Selector::Serial(serial.clone()),
            (None, None) => {
                let slots = lib.slots()?;
                match slots[..] {
                    [only] => Selector::Slot(only),
                    _ => {
                        tracing::error!(
                            "{}: {} tokens present; name one with token_label or token_serial",
                            lib.path.display(),
                            slots.len()
                        );
                        return Err(Error::GENERAL);
                    }
                }
            }
        };
        let pins =
            pin_counter::PinCounter::new(config.state_dir.as_deref(), config.max_pin_failures);
        Self::with_selector(slot_id, config.label.clone(), lib, selector, pins)
    }

    /// One slot per token of `lib` (no configuration, `PKCS11_LIBRARY_PATH` set).
    pub fn every_token(first_slot: CK_SLOT_ID, lib: Arc<HsmLibrary>) -> Result<Vec<Self>> {
        let mut tokens = Vec::new();
        for (i, real) in lib.slots()?.into_iter().enumerate() {
            let description = format!("B4AE over {}", trimmed(&lib.token_info(real)?.label));
            tokens.push(Self::with_selector(
                first_slot + i as CK_SLOT_ID,
                description,
                lib.clone(),
                Selector::Slot(real),
                pin_counter::PinCounter::new(None, crate::config::DEFAULT_MAX_PIN_FAILURES),
            )?);
        }
        Ok(tokens)
    }

    fn with_selector(
        slot_id: CK_SLOT_ID,
        description: String,
        lib: Arc<HsmLibrary>,
        selector: Selector,
        pins: pin_counter::PinCounter,
    ) -> Result<Self> {
        let real_slot = Self::resolve(&lib, &selector)?;
        if lib.inherited {
            Self::drop_inherited_login(&lib, real_slot);
        }
        let real_mechanisms = lib.mechanisms(real_slot)?;
        let hkdf = real_mechanisms.contains(&CKM_HKDF_DERIVE);
        tracing::info!(
            "slot {slot_id} forwards to {} slot {real_slot} ({} mechanisms; storage keys derived with {})",
            lib.path.display(),
            real_mechanisms.len(),
            if hkdf { "HKDF" } else { "AES-ECB-encrypt-data" }
        );
        Ok(ForwardToken {
            slot_id,
            description,
            keys: KeyStore::new(lib.clone(), real_slot, hkdf),
            pins,
            identity: RwLock::new(None),
            lib,
            selector,
            real_slot: RwLock::new(real_slot),
            real_mechanisms,
            sessions: AtomicUsize::new(0),
            eras: std::sync::atomic::AtomicU64::new(0),
            key_types: RwLock::new(std::collections::HashMap::new()),
            key_types_generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// In a forked child whose HSM library the application (not this module) initialized,
    /// the library's state is a copy of the parent's, login included: this process starts
    /// logged out (PKCS#11: a child must log in itself).
    fn drop_inherited_login(lib: &HsmLibrary, real_slot: CK_SLOT_ID) {
        let Ok(session) = lib.open_session(real_slot, CKF_SERIAL_SESSION) else {
            return;
        };
        if let Ok(info) = lib.session_info(session) {
            if info.state != CKS_RO_PUBLIC_SESSION && info.state != CKS_RW_PUBLIC_SESSION {
                tracing::info!("slot {real_slot}: logging out the login a fork copied");
                let _ = lib.logout(session);
            }
        }
        let _ = lib.close_session(session);
    }

    /// Finds the real slot holding the selected token (slot numbers may change, e.g. when
    /// SoftHSM initializes a token).
    fn resolve(lib: &HsmLibrary, selector: &Selector) -> Result<CK_SLOT_ID> {
        if let Selector::Slot(slot) = selector {
            return Ok(*slot);
        }
        for slot in lib.slots()? {
            let info = lib.token_info(slot)?;
            let found = match selector {
                Selector::Label(label) => trimmed(&info.label) == *label,
                Selector::Serial(serial) => trimmed(&info.serialNumber) == *serial,
                Selector::Slot(_) => false,
            };
            if found {
                return Ok(slot);
            }
        }
        tracing::error!("{}: no token matches {selector:?}", lib.path.display());
        Err(Error(CKR_TOKEN_NOT_PRESENT))
    }

    /// The identity of the real token, which names its PIN failure counter.
    pub fn identity(&self) -> Result<Vec<u8>> {
        Ok(pin_counter::identity(
            &self.lib.token_info(self.real_slot())?,
        ))
    }

    /// The real slot now; looked up again if the token moved.
    pub fn real_slot(&self) -> CK_SLOT_ID {
        *self.real_slot.read()
    }

    /// Looks the token up again (after `C_InitToken`, which may renumber slots).
    pub fn reresolve(&self, new_label: Option<String>) {
        let selector = match (&self.selector, new_label) {
            (Selector::Label(_), Some(label)) => Selector::Label(label),
            (s, _) => s.clone(),
        };
        *self.identity.write() = None;
        if let Ok(slot) = Self::resolve(&self.lib, &selector) {
            *self.real_slot.write() = slot;
            self.keys.moved_to(slot);
        }
    }

    /// Looks the real token up again and checks that it answers (a replica's health probe).
    pub fn probe(&self) -> Result<()> {
        let slot = Self::resolve(&self.lib, &self.selector)?;
        self.lib.token_info(slot)?;
        if slot != self.real_slot() {
            *self.real_slot.write() = slot;
            self.keys.moved_to(slot);
        }
        Ok(())
    }

    /// The HSM answers again after a failure (it may have restarted): the internal session is
    /// gone with it, and whatever was known by handle is doubted until confirmed.
    pub fn restarted(&self) {
        self.keys.close();
        self.keys.suspect();
        *self.identity.write() = None;
    }

    /// Whether the real HSM performs this mechanism itself. ML-KEM only when its library has
    /// the 3.2 interface: encapsulation is a 3.2 function.
    pub fn native(&self, mechanism: CK_MECHANISM_TYPE) -> bool {
        let kem = matches!(mechanism, CKM_ML_KEM | CKM_ML_KEM_KEY_PAIR_GEN);
        (!kem || self.lib.has_kem()) && self.real_mechanisms.contains(&mechanism)
    }

    /// Whether keys of this type are this module's sealed records here (the HSM cannot make
    /// them itself).
    pub fn holds_as_records(&self, key_type: Option<CK_KEY_TYPE>) -> bool {
        match key_type {
            Some(CKK_ML_DSA) => !self.native(CKM_ML_DSA_KEY_PAIR_GEN),
            Some(crate::consts::CKK_B4AE_DILITHIUM5) => {
                !self.native(crate::consts::CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN)
            }
            Some(crate::consts::CKK_B4AE_HYBRID) => {
                !self.native(crate::consts::CKM_B4AE_HYBRID_KEY_PAIR_GEN)
            }
            Some(CKK_ML_KEM) => !self.native(CKM_ML_KEM_KEY_PAIR_GEN),
            Some(CKK_SLH_DSA) => !self.native(CKM_SLH_DSA_KEY_PAIR_GEN),
            _ => false,
        }
    }

    /// Whether hybrid keys get their Ed25519 half from the HSM (it has `CKM_EDDSA`).
    pub fn hsm_ed25519(&self) -> bool {
        ed25519::available(&self.real_mechanisms)
    }

    /// The HSM's handle of a hybrid key's Ed25519 half, in `real_session` (cached per login:
    /// some HSMs hand out new handles at each login, and finding an object can be slow).
    pub fn ed25519_key(
        &self,
        real_session: CK_SESSION_HANDLE,
        label: &[u8],
    ) -> Result<CK_OBJECT_HANDLE> {
        self.keys
            .ed25519_handle(label, || ed25519::find(&self.lib, real_session, label))
    }

    /// Our mechanism for this type, when the HSM lacks it.
    pub fn ours(&self, mechanism: CK_MECHANISM_TYPE) -> Option<&'static MechanismInfo> {
        if self.native(mechanism) || mechanism::classical(mechanism) {
            return None;
        }
        mechanism::REGISTRY
            .iter()
            .find(|m| m.mechanism == mechanism)
    }

    /// The slot's mechanism list: the real one plus ours.
    pub fn mechanisms(&self) -> Vec<CK_MECHANISM_TYPE> {
        let mut all: Vec<CK_MECHANISM_TYPE> = self
            .real_mechanisms
            .iter()
            .copied()
            .filter(|m| self.native(*m))
            .collect();
        all.extend(
            mechanism::REGISTRY
                .iter()
                .map(|m| m.mechanism)
                .filter(|m| !self.native(*m) && !mechanism::classical(*m)),
        );
        all
    }

    /// `C_FindObjectsInit`: the HSM's objects without our records, plus the records that match.
    /// A template only records can match (a post-quantum key type the HSM lacks) is answered
    /// from the index, without asking the HSM; when the index has nothing, it is read again
    /// first, since another process may have made the key.
    pub fn find(
        &self,
        real_session: CK_SESSION_HANDLE,
        template: &Attributes,
    ) -> Result<Vec<CK_OBJECT_HANDLE>> {
        let records_only = self.holds_as_records(template.ulong(CKA_KEY_TYPE).ok().flatten());
        if !self.keys.loaded() {
            // The first search of this process: records made by other processes are not in
            // the index yet, and a template naming only class or id would not reveal them.
            self.keys.refresh()?;
        }
        let mut found = self.keys.find(template);
        // Another process may have destroyed or rotated a key since the index was read, or the
        // HSM renumbered its objects: the handles found are checked against the HSM (a stale
        // one leaves the index), and the index read again if one was.
        if (found.is_empty() && records_only) || !self.all_live(real_session, &found) {
            self.keys.refresh()?;
            found = self.keys.find(template);
        }
        if records_only {
            return Ok(found);
        }
        let class = template.ulong(CKA_CLASS).ok().flatten();
        let may_be_record = class.is_none() || class == Some(CKO_DATA);
        let mut unknown_record = false;
        let may_be_storage_key = self.may_name_storage_keys(template);
        for handle in self.lib.find(real_session, template)? {
            if self.keys.is_record(handle)
                || (may_be_storage_key && self.storage_key(real_session, handle))
            {
                continue;
            }
            if may_be_record {
                let application = self.lib.attribute(real_session, handle, CKA_APPLICATION)?;
                if application.as_deref() == Some(records::APPLICATION) {
                    unknown_record = true;
                    continue;
                }
            }
            found.push(handle);
        }
        if unknown_record {
            // Records another process made: learn them, and answer with them too.
            self.keys.refresh()?;
            let known: std::collections::HashSet<_> = found.iter().copied().collect();
            found.extend(
                self.keys
                    .find(template)
                    .into_iter()
                    .filter(|h| !known.contains(h)),
            );
        }
        Ok(found)
    }

    /// Whether every handle still names a key record in the HSM (asking the HSM only about
    /// records it has not confirmed lately).
    fn all_live(&self, real_session: CK_SESSION_HANDLE, handles: &[CK_OBJECT_HANDLE]) -> bool {
        let live: Vec<bool> = handles
            .iter()
            .map(|h| self.keys.confirmed(real_session, *h))
            .collect();
        live.iter().all(|l| *l)
    }

    /// Checks, before the HSM sees it, that a key of the HSM's fits a mechanism whose key type
    /// is certain: SoftHSM2 2.6 crashes the process on `C_VerifyInit(CKM_ECDSA)` with an
    /// Ed25519 key. The key type is asked once per handle and kept (a handle names one object
    /// for as long as it exists).
    pub fn check_key_type(
        &self,
        real_session: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let wanted = match mechanism {
            CKM_ECDSA | CKM_ECDSA_SHA1 | CKM_ECDSA_SHA224 | CKM_ECDSA_SHA256 | CKM_ECDSA_SHA384
            | CKM_ECDSA_SHA512 => CKK_EC,
            CKM_EDDSA => CKK_EC_EDWARDS,
            _ => return Ok(()),
        };
        let generation = self.keys.generation();
        if self
            .key_types_generation
            .swap(generation, std::sync::atomic::Ordering::AcqRel)
            != generation
        {
            // The HSM may have renumbered its objects.
            self.key_types.write().clear();
        }
        let known = self.key_types.read().get(&key).copied();
        let key_type = match known {
            Some(t) => t,
            None => {
                let value = self.lib.attribute(real_session, key, CKA_KEY_TYPE)?;
                let t = value
                    .and_then(|v| v.try_into().ok())
                    .map(CK_KEY_TYPE::from_ne_bytes)
                    .ok_or(Error::KEY_TYPE_INCONSISTENT)?;
                self.key_types.write().insert(key, t);
                t
            }
        };
        if key_type == wanted {
            Ok(())
        } else {
            Err(Error::KEY_TYPE_INCONSISTENT)
        }
    }

    /// An object of the HSM's is gone: its handle no longer names a key.
    pub fn forget_key_type(&self, object: CK_OBJECT_HANDLE) {
        self.key_types.write().remove(&object);
    }

    /// Whether a search template could match a storage key (a secret key labelled like one).
    fn may_name_storage_keys(&self, template: &Attributes) -> bool {
        let class = template.ulong(CKA_CLASS).ok().flatten();
        let label = template.get(CKA_LABEL);
        (class.is_none() || class == Some(CKO_SECRET_KEY))
            && label.is_none_or(hierarchy::is_storage_key_label)
    }

    /// Whether an HSM object is one of the storage keys, which applications never see or use
    /// through this module. Asked once per handle and login (a handle names one object while
    /// it exists, storage keys are never modifiable, and the storage keys this process reads
    /// are marked as such); unknown handles are left to the HSM.
    pub fn storage_key(&self, real_session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE) -> bool {
        if let Some(verdict) = self.keys.storage_key_verdict(object) {
            return verdict;
        }
        let class = self.lib.attribute(real_session, object, CKA_CLASS);
        let secret = matches!(class, Ok(Some(ref c)) if *c == CKO_SECRET_KEY.to_ne_bytes());
        let verdict = secret
            && matches!(
                self.lib.attribute(real_session, object, CKA_LABEL),
                Ok(Some(label)) if hierarchy::is_storage_key_label(&label)
            );
        if class.is_ok() {
            self.keys.remember_verdict(object, verdict);
        }
        verdict
    }

    /// Refuses a handle that names a storage key, as if it named nothing.
    pub fn not_a_storage_key(
        &self,
        real_session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        refusal: Error,
    ) -> Result<()> {
        if object != CK_INVALID_HANDLE
            && !self.keys.is_record(object)
            && self.storage_key(real_session, object)
        {
            tracing::warn!("slot {}: a call on a storage key was refused", self.slot_id);
            return Err(refusal);
        }
        Ok(())
    }

    /// The application's last session on this token closed: the HSM logs it out, so the
    /// internal session goes too (else it would keep the login alive) and secrets are dropped.
    pub fn all_sessions_closed(&self) {
        self.eras.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.keys.close();
        self.keys.forget_secrets();
    }
}

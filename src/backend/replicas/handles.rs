//! Object handles that stay the application's across a failover. Each replica numbers its
//! objects its own way (and again after a restart), so the application is given handles of
//! this module's, each standing for one object on every replica: found there by its identity
//! (class, key type, id, label and public values), read when the handle is first given out,
//! while the replica that showed the object still answers.

use crate::backend::BackendSession;
use crate::error::{Error, Result};
use crate::token::attributes::Attributes;
use crate::token::io::AttributeRequest;
use cryptoki_sys::*;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Where a replica is in its life: its index, how many times it came back, and how many
/// times all of this module's sessions on it closed (its handles of before mean nothing after
/// either).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Incarnation {
    pub replica: usize,
    pub epoch: u64,
    pub era: u64,
}

/// Attributes that tell an object from the others on a token without revealing a secret:
/// public values only.
const IDENTITY: [CK_ATTRIBUTE_TYPE; 8] = [
    CKA_CLASS,
    CKA_KEY_TYPE,
    CKA_ID,
    CKA_LABEL,
    CKA_CERTIFICATE_TYPE,
    CKA_APPLICATION,
    CKA_EC_POINT,
    CKA_MODULUS,
];

struct Entry {
    /// How to find the object on another replica; `None` for a session object, which lives
    /// only where it was made.
    identity: Option<Attributes>,
    /// The object's handle on each incarnation it was seen on.
    real: RwLock<Vec<(Incarnation, CK_OBJECT_HANDLE)>>,
}

/// Lock stripes: calls on different handles rarely meet on one lock.
const STRIPES: usize = 16;

/// The module's object handles of one replicated token.
pub struct Handles {
    next: AtomicU64,
    entries: [RwLock<HashMap<CK_OBJECT_HANDLE, Arc<Entry>>>; STRIPES],
    /// Per incarnation: the replica's handle to ours.
    seen: RwLock<HashMap<(Incarnation, CK_OBJECT_HANDLE), CK_OBJECT_HANDLE>>,
    /// Token objects by identity, so that an object met again under a new handle of its
    /// replica keeps the application's handle.
    by_identity: RwLock<HashMap<IdentityKey, CK_OBJECT_HANDLE>>,
}

fn stripe(handle: CK_OBJECT_HANDLE) -> usize {
    handle as usize % STRIPES
}

/// An identity as a map key: its attributes in type order.
type IdentityKey = Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>;

fn key_of(identity: &Attributes) -> IdentityKey {
    identity.iter().map(|(t, v)| (t, v.to_vec())).collect()
}

impl Default for Handles {
    fn default() -> Self {
        Handles {
            next: AtomicU64::new(1),
            entries: std::array::from_fn(|_| RwLock::new(HashMap::new())),
            seen: RwLock::new(HashMap::new()),
            by_identity: RwLock::new(HashMap::new()),
        }
    }
}

impl Handles {
    fn entry(&self, handle: CK_OBJECT_HANDLE) -> Option<Arc<Entry>> {
        self.entries[stripe(handle)].read().get(&handle).cloned()
    }

    /// Records that `ours` is `real` on `at`; what was known of the object on earlier
    /// incarnations of that replica goes.
    fn place(
        &self,
        entry: &Entry,
        ours: CK_OBJECT_HANDLE,
        at: Incarnation,
        real: CK_OBJECT_HANDLE,
    ) {
        let stale: Vec<_> = {
            let mut known = entry.real.write();
            let stale = known
                .iter()
                .filter(|(i, _)| i.replica == at.replica)
                .copied()
                .collect();
            known.retain(|(i, _)| i.replica != at.replica);
            known.push((at, real));
            stale
        };
        let mut seen = self.seen.write();
        for key in stale {
            seen.remove(&key);
        }
        seen.insert((at, real), ours);
    }

    /// The application's handle for the object `real` names on `at`, made (and the object's
    /// identity read through `session`) on first sight.
    pub fn outward(
        &self,
        at: Incarnation,
        session: &dyn BackendSession,
        real: CK_OBJECT_HANDLE,
    ) -> Result<CK_OBJECT_HANDLE> {
        if real == CK_INVALID_HANDLE {
            return Ok(real);
        }
        if let Some(ours) = self.seen.read().get(&(at, real)) {
            return Ok(*ours);
        }
        let identity = identity(session, real)?;
        let mut by_identity = self.by_identity.write();
        if let Some(ours) = self.seen.read().get(&(at, real)) {
            return Ok(*ours);
        }
        // The same object met under a new handle (its replica came back, or numbered its
        // objects afresh), unless the handle known for it there is current: then this is
        // another object that looks the same.
        if let Some(key) = identity.as_ref().map(key_of) {
            if let Some((ours, entry)) = by_identity
                .get(&key)
                .and_then(|ours| Some((*ours, self.entry(*ours)?)))
            {
                let current = entry.real.read().iter().any(|(i, _)| *i == at);
                if !current {
                    self.place(&entry, ours, at, real);
                    return Ok(ours);
                }
            }
        }
        let ours = self.next.fetch_add(1, Ordering::Relaxed) as CK_OBJECT_HANDLE;
        if let Some(key) = identity.as_ref().map(key_of) {
            by_identity.entry(key).or_insert(ours);
        }
        let entry = Arc::new(Entry {
            identity,
            real: RwLock::new(Vec::new()),
        });
        self.place(&entry, ours, at, real);
        self.entries[stripe(ours)].write().insert(ours, entry);
        Ok(ours)
    }

    /// The handle on `at` of the application's `ours`: known, or found there by identity
    /// through `session`. `CKR_OBJECT_HANDLE_INVALID` when nothing on `at` is that object.
    pub fn inward(
        &self,
        at: Incarnation,
        session: &dyn BackendSession,
        ours: CK_OBJECT_HANDLE,
    ) -> Result<CK_OBJECT_HANDLE> {
        if ours == CK_INVALID_HANDLE {
            return Ok(ours);
        }
        let entry = self.entry(ours).ok_or(Error::OBJECT_HANDLE_INVALID)?;
        if let Some((_, real)) = entry.real.read().iter().find(|(i, _)| *i == at) {
            return Ok(*real);
        }
        let identity = entry
            .identity
            .as_ref()
            .ok_or(Error::OBJECT_HANDLE_INVALID)?;
        session.find_init(identity.clone())?;
        let found = session.ops().find_next(2);
        let _ = session.ops().find_final();
        let real = match found?[..] {
            [one] => one,
            [] => return Err(Error::OBJECT_HANDLE_INVALID),
            _ => {
                tracing::warn!("replica {}: two objects answer to one identity", at.replica);
                return Err(Error::OBJECT_HANDLE_INVALID);
            }
        };
        self.place(&entry, ours, at, real);
        Ok(real)
    }

    /// The object is gone (destroyed through the application's handle).
    pub fn destroyed(&self, ours: CK_OBJECT_HANDLE) {
        let Some(entry) = self.entries[stripe(ours)].write().remove(&ours) else {
            return;
        };
        if let Some(key) = entry.identity.as_ref().map(key_of) {
            let mut by_identity = self.by_identity.write();
            if by_identity.get(&key) == Some(&ours) {
                by_identity.remove(&key);
            }
        }
        let mut seen = self.seen.write();
        for key in entry.real.read().iter() {
            seen.remove(key);
        }
    }

    /// A replica came back as a new incarnation: what was known of its old one goes.
    pub fn forget_replica(&self, replica: usize) {
        self.seen.write().retain(|(at, _), _| at.replica != replica);
        for stripe in &self.entries {
            for entry in stripe.read().values() {
                entry.real.write().retain(|(at, _)| at.replica != replica);
            }
        }
    }
}

/// The identity of a token object (`None` for a session object), its public attributes read
/// in two calls (lengths, then values); attributes the object lacks or hides are left out.
fn identity(session: &dyn BackendSession, real: CK_OBJECT_HANDLE) -> Result<Option<Attributes>> {
    let mut token = [0u8; 1];
    let mut ask = [AttributeRequest::new(CKA_TOKEN, Some(&mut token[..]), 1)];
    session.get_attributes(real, &mut ask)?;
    if token[0] == CK_FALSE {
        return Ok(None);
    }
    let mut lengths: Vec<AttributeRequest> = IDENTITY
        .iter()
        .map(|t| AttributeRequest::new(*t, None, 0))
        .collect();
    if let Err(e) = session.get_attributes(real, &mut lengths) {
        if !matches!(e.0, CKR_ATTRIBUTE_TYPE_INVALID | CKR_ATTRIBUTE_SENSITIVE) {
            return Err(e);
        }
    }
    let wanted: Vec<(CK_ATTRIBUTE_TYPE, usize)> = lengths
        .iter()
        .filter(|r| r.answer != CK_UNAVAILABLE_INFORMATION)
        .map(|r| (r.type_, r.answer as usize))
        .collect();
    let mut values: Vec<Vec<u8>> = wanted.iter().map(|(_, len)| vec![0; *len]).collect();
    let mut requests: Vec<AttributeRequest> = wanted
        .iter()
        .zip(values.iter_mut())
        .map(|((t, len), v)| AttributeRequest::new(*t, Some(&mut v[..]), *len as CK_ULONG))
        .collect();
    session.get_attributes(real, &mut requests)?;
    let mut identity = Attributes::new();
    identity.set_bool(CKA_TOKEN, true);
    let answered: Vec<(CK_ATTRIBUTE_TYPE, usize)> = requests
        .iter()
        .map(|r| (r.type_, r.answer as usize))
        .collect();
    for ((t, len), value) in answered.into_iter().zip(values) {
        identity.set(t, value[..len.min(value.len())].to_vec());
    }
    Ok(Some(identity))
}

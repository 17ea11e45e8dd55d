//! The handles a token has given out, and the objects behind them. Token objects mirror the
//! backend's store (re-read when another process changed it); session objects live here only.

use crate::token::object::Object;
use crate::token::store::StoredObject;
use cryptoki_sys::{CK_OBJECT_HANDLE, CK_SESSION_HANDLE};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Object handles are unique across every token of the process.
// Starting high keeps them apart from the small handles real HSMs give out on forwarded slots.
static NEXT_HANDLE: AtomicU64 = AtomicU64::new(0x1000_0000);

fn new_handle() -> CK_OBJECT_HANDLE {
    NEXT_HANDLE.fetch_add(1, Ordering::Relaxed) as CK_OBJECT_HANDLE
}

/// Where an object lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Home {
    /// In the store, with its row id and version.
    Store { id: i64, version: i64 },
    /// In memory, owned by this session.
    Session(CK_SESSION_HANDLE),
}

#[derive(Clone)]
pub struct Entry {
    pub object: Arc<Object>,
    pub home: Home,
}

/// Handles → objects for one token.
#[derive(Default)]
pub struct ObjectTable {
    entries: HashMap<CK_OBJECT_HANDLE, Entry>,
    by_store_id: HashMap<i64, CK_OBJECT_HANDLE>,
    /// Whether the token objects have been read from the store at least once.
    pub loaded: bool,
}

impl ObjectTable {
    pub fn get(&self, handle: CK_OBJECT_HANDLE) -> Option<&Entry> {
        self.entries.get(&handle)
    }

    pub fn iter(&self) -> impl Iterator<Item = (CK_OBJECT_HANDLE, &Entry)> {
        self.entries.iter().map(|(h, e)| (*h, e))
    }

    /// Adds an object under a new handle.
    pub fn add(&mut self, object: Arc<Object>, home: Home) -> CK_OBJECT_HANDLE {
        let handle = new_handle();
        if let Home::Store { id, .. } = home {
            self.by_store_id.insert(id, handle);
        }
        self.entries.insert(handle, Entry { object, home });
        handle
    }

    /// Replaces the object behind a handle (after `C_SetAttributeValue`).
    pub fn replace(&mut self, handle: CK_OBJECT_HANDLE, object: Arc<Object>, home: Home) {
        self.entries.insert(handle, Entry { object, home });
    }

    pub fn remove(&mut self, handle: CK_OBJECT_HANDLE) -> Option<Entry> {
        let entry = self.entries.remove(&handle)?;
        if let Home::Store { id, .. } = entry.home {
            self.by_store_id.remove(&id);
        }
        Some(entry)
    }

    /// Drops the session objects of one session.
    /// Private session objects: PKCS#11 makes them unreachable when the user logs out.
    pub fn remove_private_session_objects(&mut self) {
        self.entries
            .retain(|_, e| !(matches!(e.home, Home::Session(_)) && e.object.is_private()));
    }

    pub fn remove_session_objects(&mut self, session: CK_SESSION_HANDLE) {
        self.entries.retain(|_, e| e.home != Home::Session(session));
    }

    /// Makes the token objects equal to what the store holds, keeping each stored object's
    /// handle for as long as the object exists.
    pub fn synchronize(&mut self, stored: Vec<StoredObject>) {
        let mut keep: HashMap<i64, CK_OBJECT_HANDLE> = HashMap::with_capacity(stored.len());
        for s in stored {
            let home = Home::Store {
                id: s.id,
                version: s.version,
            };
            match self.by_store_id.get(&s.id).copied() {
                Some(handle) => {
                    let unchanged = self
                        .entries
                        .get(&handle)
                        .is_some_and(|e| e.home == home && e.object.attrs == s.attrs);
                    if !unchanged {
                        self.entries.insert(
                            handle,
                            Entry {
                                object: Arc::new(Object::new(s.attrs)),
                                home,
                            },
                        );
                    }
                    keep.insert(s.id, handle);
                }
                None => {
                    let handle = new_handle();
                    self.entries.insert(
                        handle,
                        Entry {
                            object: Arc::new(Object::new(s.attrs)),
                            home,
                        },
                    );
                    keep.insert(s.id, handle);
                }
            }
        }
        self.entries
            .retain(|h, e| !matches!(e.home, Home::Store { id, .. } if keep.get(&id) != Some(h)));
        self.by_store_id = keep;
        self.loaded = true;
    }
}

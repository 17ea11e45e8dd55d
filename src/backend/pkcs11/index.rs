//! The records this process knows, by handle, with a label index so that finding one key among
//! thousands does not scan them all.

use super::keystore::Indexed;
use crate::token::attributes::Attributes;
use cryptoki_sys::{CKA_LABEL, CK_OBJECT_HANDLE};
use std::collections::{HashMap, HashSet};

#[derive(Default)]
pub struct Index {
    by_handle: HashMap<CK_OBJECT_HANDLE, Indexed>,
    by_label: HashMap<Vec<u8>, HashSet<CK_OBJECT_HANDLE>>,
}

fn label(entry: &Indexed) -> Vec<u8> {
    entry
        .object
        .attrs
        .get(CKA_LABEL)
        .unwrap_or_default()
        .to_vec()
}

impl Index {
    pub fn get(&self, handle: &CK_OBJECT_HANDLE) -> Option<&Indexed> {
        self.by_handle.get(handle)
    }

    pub fn contains_key(&self, handle: &CK_OBJECT_HANDLE) -> bool {
        self.by_handle.contains_key(handle)
    }

    pub fn insert(&mut self, handle: CK_OBJECT_HANDLE, entry: Indexed) {
        self.remove(&handle);
        self.by_label
            .entry(label(&entry))
            .or_default()
            .insert(handle);
        self.by_handle.insert(handle, entry);
    }

    pub fn remove(&mut self, handle: &CK_OBJECT_HANDLE) -> Option<Indexed> {
        let entry = self.by_handle.remove(handle)?;
        let key = label(&entry);
        if let Some(set) = self.by_label.get_mut(&key) {
            set.remove(handle);
            if set.is_empty() {
                self.by_label.remove(&key);
            }
        }
        Some(entry)
    }

    pub fn retain(&mut self, keep: impl Fn(&CK_OBJECT_HANDLE, &Indexed) -> bool) {
        let gone: Vec<CK_OBJECT_HANDLE> = self
            .by_handle
            .iter()
            .filter(|(h, e)| !keep(h, e))
            .map(|(h, _)| *h)
            .collect();
        for handle in gone {
            self.remove(&handle);
        }
    }

    pub fn extend(&mut self, entries: impl IntoIterator<Item = (CK_OBJECT_HANDLE, Indexed)>) {
        for (handle, entry) in entries {
            self.insert(handle, entry);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&CK_OBJECT_HANDLE, &Indexed)> {
        self.by_handle.iter()
    }

    /// Records matching a template: through the label index when the template names a label.
    pub fn find(&self, template: &Attributes) -> Vec<CK_OBJECT_HANDLE> {
        let matches = |h: &CK_OBJECT_HANDLE| {
            self.by_handle
                .get(h)
                .is_some_and(|e| e.object.attrs.matches(template))
        };
        match template.get(CKA_LABEL) {
            Some(wanted) => self
                .by_label
                .get(wanted)
                .map(|set| set.iter().copied().filter(|h| matches(h)).collect())
                .unwrap_or_default(),
            None => self
                .by_handle
                .keys()
                .copied()
                .filter(|h| matches(h))
                .collect(),
        }
    }
}

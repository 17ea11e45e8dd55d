//! Storage-key rotation, and the migration of release-1 tokens, both run in steps that can be
//! interrupted at any point: a key always keeps a record its storage key opens, and the next
//! user login finishes the work.

use super::keystore::{Indexed, KeyStore, Trust};
use super::legacy;
use super::records::Kind;
use crate::error::Result;
use crate::token::attributes::Attributes;
use crate::token::object::Object;
use cryptoki_sys::*;
use std::collections::{HashMap, HashSet};

impl KeyStore {
    /// Moves every token record to the newest storage key (generating a new random one first
    /// when `new_epoch`), then destroys the storage keys no record needs. Also migrates what
    /// release 1 left. Returns the newest epoch (0: no key was ever stored here).
    pub fn rotate(&self, new_epoch: bool) -> Result<u32> {
        self.rotate_with_progress(new_epoch, &mut |_, _| {})
    }

    /// [`Self::rotate`], telling `progress` (records moved, records to move) as it goes.
    pub fn rotate_with_progress(
        &self,
        new_epoch: bool,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<u32> {
        self.refresh()?;
        self.with_internal(|s| {
            self.migrate(s)?;
            let mut stks = self.storage_keys(s, true)?;
            if stks.is_empty() && !new_epoch {
                return Ok(0);
            }
            if new_epoch {
                let next = stks.last().map_or(1, |k| k.epoch + 1);
                stks.push(self.new_stk(s, next)?);
            }
            let newest = *stks.last().expect("at least one storage key");
            let entries = self.token_records();
            if stks.len() == 1 && entries.iter().all(|(_, e)| e.record.epoch == newest.epoch) {
                // Nothing to move (the common login): records are authenticated when used.
                return Ok(newest.epoch);
            }
            let done: HashSet<([u8; 16], Kind)> = entries
                .iter()
                .filter(|(h, e)| e.record.epoch == newest.epoch && self.authentic_in(s, *h, e))
                .map(|(_, e)| (e.record.key_id, e.record.kind))
                .collect();
            let to_move = entries
                .iter()
                .filter(|(_, e)| e.record.epoch != newest.epoch)
                .count();
            progress(0, to_move);
            for (moved, (handle, entry)) in entries
                .iter()
                .filter(|(_, e)| e.record.epoch != newest.epoch)
                .enumerate()
            {
                let key = (entry.record.key_id, entry.record.kind);
                if !done.contains(&key) {
                    let Some(object) = self.open_record(s, *handle, entry)? else {
                        // Not this module's record: it is left alone, and never used.
                        continue;
                    };
                    self.reseal(s, &newest, &key.0, key.1, &object)?;
                }
                // The key now has a record under the newest storage key: the old one goes.
                self.lib.destroy(s, *handle)?;
                self.removed(*handle);
                progress(moved + 1, to_move);
            }
            for old in stks.iter().filter(|k| k.epoch != newest.epoch) {
                self.lib.destroy(s, old.handle)?;
                tracing::info!("storage key epoch {} destroyed", old.epoch);
            }
            self.storage_keys(s, true)?;
            Ok(newest.epoch)
        })
    }

    /// Seals again, under a random storage key, every record release 1 made, then destroys
    /// release 1's derived keys. A release-1 public record carried no tag: it is taken over
    /// only when the private record of its key (which the HSM authenticates) vouches for it,
    /// or when it is a private object (which a session without the PIN cannot make).
    fn migrate(&self, s: CK_SESSION_HANDLE) -> Result<()> {
        let legacy: Vec<(CK_OBJECT_HANDLE, Indexed)> = self
            .index
            .read()
            .iter()
            .filter(|(_, e)| e.record.legacy && e.object.is_token())
            .map(|(h, e)| (*h, e.clone()))
            .collect();
        if legacy.is_empty() {
            // Release 1's keys outlive its records only when a migration was interrupted:
            // looked for once per process, not at every login.
            if self
                .legacy_keys_checked
                .swap(true, std::sync::atomic::Ordering::AcqRel)
            {
                return Ok(());
            }
            if legacy::all_keys(&self.lib, s)?
                .iter()
                .any(|(label, _)| label != legacy::MIK_LABEL)
            {
                legacy::retire(&self.lib, s)?;
            }
            return Ok(());
        }
        tracing::info!("migrating {} release-1 key records", legacy.len());
        let stk = self.current_stk(s)?;
        // Keys whose private record is authentic: those migrated before an interruption too.
        let mut vouched: HashSet<[u8; 16]> = self
            .token_records()
            .iter()
            .filter(|(h, e)| e.record.kind == Kind::Private && self.authentic_in(s, *h, e))
            .map(|(_, e)| e.record.key_id)
            .collect();
        let mut unopened = 0;
        for (handle, entry) in legacy
            .iter()
            .filter(|(_, e)| e.record.kind == Kind::Private)
        {
            match self.open_legacy(s, entry)? {
                Some(object) => {
                    self.reseal(s, &stk, &entry.record.key_id, Kind::Private, &object)?;
                    self.lib.destroy(s, *handle)?;
                    self.removed(*handle);
                    vouched.insert(entry.record.key_id);
                }
                None => {
                    unopened += 1;
                    entry_refused(entry, *handle);
                }
            }
        }
        let mut publics_per_key: HashMap<[u8; 16], usize> = HashMap::new();
        for (_, entry) in legacy.iter().filter(|(_, e)| e.record.kind == Kind::Public) {
            *publics_per_key.entry(entry.record.key_id).or_default() += 1;
        }
        for (handle, entry) in legacy.iter().filter(|(_, e)| e.record.kind == Kind::Public) {
            let id = entry.record.key_id;
            let private_object = self.lib.attribute(s, *handle, CKA_PRIVATE)? == Some(vec![1]);
            if private_object || (vouched.contains(&id) && publics_per_key[&id] == 1) {
                let object = Object::new(entry.object.attrs.clone());
                self.reseal(s, &stk, &id, Kind::Public, &object)?;
                self.lib.destroy(s, *handle)?;
                self.removed(*handle);
            } else {
                entry_refused(entry, *handle);
            }
        }
        if unopened == 0 {
            legacy::retire(&self.lib, s)?;
        }
        Ok(())
    }

    /// A release-1 private record opened under its derived storage key.
    fn open_legacy(&self, s: CK_SESSION_HANDLE, entry: &Indexed) -> Result<Option<Object>> {
        let record = &entry.record;
        let keys = legacy::storage_keys_of(&self.lib, s, self.hkdf, record.epoch)?;
        let (iv, aad, sealed) = (&record.iv, &record.authenticated, &record.sealed);
        let secret = keys
            .iter()
            .find_map(|k| self.lib.aes_gcm(s, *k, iv, aad, sealed, true).ok());
        Ok(match secret {
            Some(secret) => {
                let mut attrs = entry.object.attrs.clone();
                attrs.merge(Attributes::deserialize(&secret)?);
                Some(Object::new(attrs))
            }
            None => None,
        })
    }
}

fn entry_refused(entry: &Indexed, handle: CK_OBJECT_HANDLE) {
    if entry.trust() != Trust::Refused {
        tracing::warn!(
            "release-1 record {handle} cannot be authenticated (written by someone else, or its \
             key is gone): left in the HSM, never used"
        );
    }
}

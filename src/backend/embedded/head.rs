//! The store's head: one record sealed under the token key that says which rows are live, so
//! that a row copied back from an older file, a deleted row brought back or a live row removed
//! is noticed, and which PIN records are current.
//!
//! Rows are spread over [`BUCKETS`] buckets by id. Each bucket holds the XOR of a keyed hash of
//! `(id, version)` of its rows. The hash key comes from the token key, so a file writer can
//! neither compute an element nor combine old ones into a matching set; a mismatch withholds
//! only the rows of that bucket, and a small token has about one row per bucket.

use super::sealing::{self, Key};
use crate::error::{Error, Result};
use aws_lc_rs::hmac;

pub const BUCKETS: usize = 256;
const ELEMENT_LEN: usize = 16;
const PUBLIC_LEN: usize = super::boxes::PUBLIC_LEN;
const ENCODED_LEN: usize = 8 + 8 * 2 + PUBLIC_LEN * 2 + BUCKETS * ELEMENT_LEN;

/// Which PIN record a head expects for each role.
pub const SO: usize = 0;
pub const USER: usize = 1;

/// The token's authenticated state.
#[derive(Clone)]
pub struct Head {
    /// Bumped by every write; every row and PIN record carries the generation it was written
    /// at as its version, so no two records ever share one.
    pub generation: u64,
    /// The version of the current PIN record of the SO and of the user (0: none).
    pub pin_versions: [u64; 2],
    /// Each role's public key, to which a new token key is sealed for it: authenticated here,
    /// or a file writer could put in its own and be handed the next token key.
    pub role_publics: [[u8; PUBLIC_LEN]; 2],
    buckets: Vec<[u8; ELEMENT_LEN]>,
}

/// The key of the row-set hash.
pub struct RowSetKey(hmac::Key);

impl RowSetKey {
    pub fn new(token_key: &Key) -> Self {
        RowSetKey(sealing::derived_mac_key(
            token_key,
            b"b4ae-pkcs11/row-set/v2",
        ))
    }

    fn element(&self, id: i64, version: i64) -> [u8; ELEMENT_LEN] {
        let mut message = [0u8; 16];
        message[..8].copy_from_slice(&id.to_le_bytes());
        message[8..].copy_from_slice(&version.to_le_bytes());
        let tag = hmac::sign(&self.0, &message);
        let mut out = [0u8; ELEMENT_LEN];
        out.copy_from_slice(&tag.as_ref()[..ELEMENT_LEN]);
        out
    }
}

/// The bucket of a row.
pub fn bucket(id: i64) -> usize {
    id.rem_euclid(BUCKETS as i64) as usize
}

/// Row-set hashes being recomputed from the rows actually in the file.
pub struct RowSet {
    buckets: Vec<[u8; ELEMENT_LEN]>,
}

impl RowSet {
    pub fn new() -> Self {
        RowSet {
            buckets: vec![[0; ELEMENT_LEN]; BUCKETS],
        }
    }

    pub fn add(&mut self, key: &RowSetKey, id: i64, version: i64) {
        xor(&mut self.buckets[bucket(id)], &key.element(id, version));
    }

    /// A row whose version cannot even be read: its bucket cannot match.
    pub fn spoil(&mut self, id: i64) {
        self.buckets[bucket(id)][0] ^= 0xff;
    }

    /// The buckets that differ from what the head says.
    pub fn mismatches(&self, head: &Head) -> Vec<bool> {
        self.buckets
            .iter()
            .zip(&head.buckets)
            .map(|(a, b)| a != b)
            .collect()
    }
}

fn xor(into: &mut [u8; ELEMENT_LEN], element: &[u8; ELEMENT_LEN]) {
    for (a, b) in into.iter_mut().zip(element) {
        *a ^= b;
    }
}

impl Head {
    pub fn new() -> Self {
        Head {
            generation: 0,
            pin_versions: [0; 2],
            role_publics: [[0; PUBLIC_LEN]; 2],
            buckets: vec![[0; ELEMENT_LEN]; BUCKETS],
        }
    }

    /// The same head with an empty row set, to be filled under a new token key.
    pub fn without_rows(&self) -> Head {
        Head {
            buckets: vec![[0; ELEMENT_LEN]; BUCKETS],
            ..self.clone()
        }
    }

    /// The version for the next record written.
    pub fn next_version(&mut self) -> i64 {
        self.generation += 1;
        self.generation as i64
    }

    /// Adds a row to the live set, or removes it (XOR is its own inverse).
    pub fn toggle(&mut self, key: &RowSetKey, id: i64, version: i64) {
        xor(&mut self.buckets[bucket(id)], &key.element(id, version));
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCODED_LEN);
        out.extend_from_slice(&self.generation.to_le_bytes());
        for v in self.pin_versions {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for p in &self.role_publics {
            out.extend_from_slice(p);
        }
        for b in &self.buckets {
            out.extend_from_slice(b);
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Head> {
        if bytes.len() != ENCODED_LEN {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let public_at = |i: usize| bytes[i..i + PUBLIC_LEN].try_into().expect("public key");
        let buckets = bytes[24 + 2 * PUBLIC_LEN..]
            .chunks_exact(ELEMENT_LEN)
            .map(|c| c.try_into().expect("element"))
            .collect();
        Some(Head {
            generation: u64_at(0),
            pin_versions: [u64_at(8), u64_at(16)],
            role_publics: [public_at(24), public_at(24 + PUBLIC_LEN)],
            buckets,
        })
    }

    /// Seals the head; `aad` binds it to the token and its PIN policy.
    pub fn seal(&self, token_key: &Key, aad: &[u8]) -> Result<Vec<u8>> {
        sealing::seal(token_key, &self.encode(), aad)
    }

    /// Opens a sealed head; an altered or foreign head is a device error for the whole token.
    pub fn open(token_key: &Key, sealed: &[u8], aad: &[u8]) -> Result<Head> {
        sealing::open(token_key, sealed, aad)
            .and_then(|plain| Head::decode(&plain))
            .ok_or(Error::DEVICE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_row_set_tells_which_bucket_changed() {
        let key = RowSetKey::new(&sealing::random_key().unwrap());
        let mut head = Head::new();
        for (id, version) in [(1, 1), (2, 2), (3, 3)] {
            head.toggle(&key, id, version);
        }
        head.toggle(&key, 2, 2);
        head.toggle(&key, 2, 4);
        let mut now = RowSet::new();
        for (id, version) in [(1, 1), (2, 4), (3, 3)] {
            now.add(&key, id, version);
        }
        assert!(now.mismatches(&head).iter().all(|m| !m));
        let mut replayed = RowSet::new();
        for (id, version) in [(1, 1), (2, 2), (3, 3)] {
            replayed.add(&key, id, version);
        }
        let bad: Vec<usize> = (0..BUCKETS)
            .filter(|b| replayed.mismatches(&head)[*b])
            .collect();
        assert_eq!(bad, vec![2]);
    }

    #[test]
    fn heads_round_trip_and_bind_their_context() {
        let key = sealing::random_key().unwrap();
        let mut head = Head::new();
        head.next_version();
        head.pin_versions = [1, 0];
        let sealed = head.seal(&key, b"token-a").unwrap();
        let opened = Head::open(&key, &sealed, b"token-a").unwrap();
        assert_eq!(opened.generation, 1);
        assert_eq!(opened.pin_versions, [1, 0]);
        assert!(Head::open(&key, &sealed, b"token-b").is_err());
    }
}

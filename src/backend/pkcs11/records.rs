//! Key records: how a post-quantum key the HSM cannot hold is kept in it, as a `CKO_DATA` token
//! object whose `CKA_VALUE` is
//!
//! ```text
//! "B4AE-KEY-2" | kind (1 = private, 2 = public) | epoch (u32 LE) | key id (16) | IV (12)
//!   | length of public part (u32 LE) | public attributes | sealed part
//! ```
//!
//! The sealed part is AES-256-GCM made by the HSM under the storage key of that epoch, with
//! everything before it as associated data: for a private key the secret attributes encrypted,
//! for a public key the tag alone (empty plaintext). Either way no byte of a record can be
//! altered, moved to another record or written from scratch without the storage key, so a
//! record is accepted only once the HSM has opened it.
//!
//! Release 1 wrote "B4AE-KEY-1" records, whose public ones carried no tag; they are read only
//! to be migrated (see [`super::keystore`]).

use crate::error::{Error, Result};
use crate::token::attributes::Attributes;

const MAGIC: &[u8; 10] = b"B4AE-KEY-2";
const LEGACY_MAGIC: &[u8; 10] = b"B4AE-KEY-1";
/// Length of the GCM tag that is the whole sealed part of a public record.
pub const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 10 + 1 + 4 + 16 + 12 + 4;
/// `CKA_APPLICATION` of every record, which is how records are told from other data objects.
pub const APPLICATION: &[u8] = b"b4ae-pkcs11 key record v1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Private = 1,
    Public = 2,
}

/// A parsed record.
#[derive(Clone)]
pub struct Record {
    /// Written by release 1 (unauthenticated public part): to be migrated, never presented.
    pub legacy: bool,
    pub kind: Kind,
    pub epoch: u32,
    pub key_id: [u8; 16],
    pub iv: [u8; 12],
    pub public: Attributes,
    /// The bytes the seal authenticates (header and public part).
    pub authenticated: Vec<u8>,
    pub sealed: Vec<u8>,
}

/// The authenticated prefix of a record.
pub fn prefix(
    kind: Kind,
    epoch: u32,
    key_id: &[u8; 16],
    iv: &[u8; 12],
    public: &Attributes,
) -> Vec<u8> {
    let public = public.serialize();
    let mut out = Vec::with_capacity(HEADER_LEN + public.len());
    out.extend_from_slice(MAGIC);
    out.push(kind as u8);
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(key_id);
    out.extend_from_slice(iv);
    out.extend_from_slice(&(public.len() as u32).to_le_bytes());
    out.extend_from_slice(&public);
    out
}

impl Record {
    /// Whether `bytes` are this record's encoding.
    pub fn is_encoded_as(&self, bytes: &[u8]) -> bool {
        let n = self.authenticated.len();
        bytes.len() == n + self.sealed.len()
            && bytes[..n] == self.authenticated[..]
            && bytes[n..] == self.sealed[..]
    }

    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < HEADER_LEN {
            return Err(Error::DEVICE);
        }
        let legacy = match &bytes[..10] {
            m if m == MAGIC => false,
            m if m == LEGACY_MAGIC => true,
            _ => return Err(Error::DEVICE),
        };
        let kind = match bytes[10] {
            1 => Kind::Private,
            2 => Kind::Public,
            _ => return Err(Error::DEVICE),
        };
        let epoch = u32::from_le_bytes(bytes[11..15].try_into().expect("4 bytes"));
        let key_id: [u8; 16] = bytes[15..31].try_into().expect("16 bytes");
        let iv: [u8; 12] = bytes[31..43].try_into().expect("12 bytes");
        let public_len = u32::from_le_bytes(bytes[43..47].try_into().expect("4 bytes")) as usize;
        let end = HEADER_LEN
            .checked_add(public_len)
            .filter(|&e| e <= bytes.len())
            .ok_or(Error::DEVICE)?;
        Ok(Record {
            legacy,
            kind,
            epoch,
            key_id,
            iv,
            public: Attributes::deserialize(&bytes[HEADER_LEN..end])?,
            authenticated: bytes[..end].to_vec(),
            sealed: bytes[end..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki_sys::CKA_LABEL;

    #[test]
    fn records_round_trip() {
        let mut public = Attributes::new();
        public.set(CKA_LABEL, b"k".to_vec());
        let mut bytes = prefix(Kind::Private, 7, &[1; 16], &[2; 12], &public);
        bytes.extend_from_slice(b"sealed");
        let r = Record::parse(&bytes).unwrap();
        assert_eq!(
            (r.legacy, r.kind, r.epoch, r.key_id, r.iv),
            (false, Kind::Private, 7, [1; 16], [2; 12])
        );
        assert!(r.public == public);
        assert_eq!(r.sealed, b"sealed");
        assert_eq!(r.authenticated.len(), bytes.len() - 6);
        assert!(Record::parse(&bytes[..20]).is_err());
        bytes[9] = b'1';
        assert!(Record::parse(&bytes).unwrap().legacy);
        bytes[9] = b'3';
        assert!(Record::parse(&bytes).is_err());
    }
}

//! The B4AE HSM Integration Guide's Rust interface (SPEC §7), over a PKCS#11 library: this
//! module's own first (post-quantum keys in any of its tokens), though any library that has the
//! mechanisms will do. `use b4ae_pkcs11::hsm::pkcs11_enhanced::Pkcs11HsmEnhanced` is the guide's
//! `use b4ae::hsm::pkcs11_enhanced::Pkcs11HsmEnhanced`; its examples run as written there
//! (examples/hsm_*.rs). See docs/rust-api.md.

mod error;
mod failover;
pub mod pkcs11_enhanced;

pub use error::{HsmError, HsmResult};
pub use failover::FailoverHsm;
pub use pkcs11_enhanced::{Algorithm, Pkcs11HsmEnhanced, SlotSelector};

use cryptoki_sys::{CKK_AES, CKK_GENERIC_SECRET, CK_KEY_TYPE};
use std::path::PathBuf;

/// Where the Debian package installs the module: the multiarch PKCS#11 directory of this
/// machine's architecture (`/usr/lib/x86_64-linux-gnu/pkcs11/libb4ae_pkcs11.so` on amd64).
pub fn installed_module() -> PathBuf {
    let triplet = match std::env::consts::ARCH {
        "x86" => "i386-linux-gnu".to_owned(),
        "arm" => "arm-linux-gnueabihf".to_owned(),
        "powerpc64" if cfg!(target_endian = "little") => "powerpc64le-linux-gnu".to_owned(),
        arch => format!("{arch}-linux-gnu"),
    };
    PathBuf::from(format!("/usr/lib/{triplet}/pkcs11/libb4ae_pkcs11.so"))
}

/// An HSM that keeps signing keys by label and stores secrets.
pub trait HsmBackend: Send + Sync {
    /// Makes a key pair labelled `key_id` in the HSM; answers its public key.
    fn generate_keypair(&self, key_id: &str) -> HsmResult<Vec<u8>>;
    /// Signs `data` with the private key labelled `key_id`.
    fn sign(&self, key_id: &str, data: &[u8]) -> HsmResult<Vec<u8>>;
    /// Whether `signature` is `key_id`'s over `data`: `Ok(false)` only for a signature that
    /// does not verify; a missing key or a device fault is an error.
    fn verify(&self, key_id: &str, data: &[u8], signature: &[u8]) -> HsmResult<bool>;
    /// Stores secret key material under `key_id`: sensitive, never extractable again.
    fn store_key(&self, key_id: &str, key_type: KeyType, key_data: &[u8]) -> HsmResult<()>;
    /// Whether the HSM answers now (its token is present and its session usable).
    fn is_available(&self) -> bool;
}

/// The kind of secret [`HsmBackend::store_key`] stores, named as PKCS#11 (and the guide) names
/// them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyType(CK_KEY_TYPE);

impl KeyType {
    /// `CKK_GENERIC_SECRET`: any length (key-derivation and MAC keys).
    pub const GENERIC_SECRET: KeyType = KeyType(CKK_GENERIC_SECRET);
    /// `CKK_AES`: 16, 24 or 32 bytes.
    pub const AES: KeyType = KeyType(CKK_AES);

    /// The `CKK_*` value.
    pub fn ck(self) -> CK_KEY_TYPE {
        self.0
    }
}

//! Where an embedded token's objects and PINs persist. The token layer (sessions, objects,
//! mechanisms) is the same whatever the store; a store keeps the token's state and secrets.

use crate::error::Result;
use crate::token::attributes::Attributes;
use crate::token::object::Object;

/// Who is authenticating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    SecurityOfficer,
    User,
}

/// What `C_GetTokenInfo` needs to know from the backend.
#[derive(Clone, Debug, Default)]
pub struct TokenState {
    pub initialized: bool,
    pub label: [u8; 32],
    pub serial: [u8; 16],
    pub user_pin_initialized: bool,
    pub user_failures: u32,
    pub so_failures: u32,
    /// The token's own PIN policy (kept in the token, not in the configuration).
    pub max_failures: u32,
    pub min_pin_len: u32,
}

/// A stored object as the backend returns it.
pub struct StoredObject {
    pub id: i64,
    pub version: i64,
    pub attrs: Attributes,
}

/// Where a token's objects and PINs persist: the embedded store (`backend::embedded`) today.
pub trait Store: Send + Sync {
    /// Token label, serial, PIN counters.
    fn state(&self) -> Result<TokenState>;
    /// `C_InitToken`: (re)creates the token, erasing every object.
    fn init_token(&self, so_pin: &[u8], label: &[u8; 32]) -> Result<()>;
    /// Checks a PIN and, on success, unlocks the token's secrets for this process.
    fn login(&self, role: Role, pin: &[u8]) -> Result<()>;
    /// Forgets the unlocked secrets.
    fn logout(&self);
    /// Forgets the unlocked secrets without waiting for any lock (in a forked child).
    fn forget_secrets(&self);
    /// `C_InitPIN` (the SO is logged in).
    fn init_pin(&self, pin: &[u8]) -> Result<()>;
    /// `C_SetPIN`.
    fn set_pin(&self, role: Role, old: &[u8], new: &[u8]) -> Result<()>;
    /// Every stored object this process may see now; private ones only when `private`, which
    /// fails with `CKR_USER_NOT_LOGGED_IN` if the backend has forgotten the login meanwhile.
    fn load(&self, private: bool) -> Result<Vec<StoredObject>>;
    /// Whether another process changed the objects since this process last read or wrote them.
    fn changed_elsewhere(&self) -> Result<bool>;
    /// Stores new objects, all or none (a key pair is one write); returns (id, version) of each.
    fn insert(&self, objects: &[&Object]) -> Result<Vec<(i64, i64)>>;
    /// Replaces a stored object's attributes; returns the new version.
    fn update(&self, id: i64, object: &Object) -> Result<i64>;
    /// Deletes a stored object.
    fn delete(&self, id: i64) -> Result<()>;
}

//! The embedded backend: one SQLite file per token, private material sealed under a random token
//! key, which is itself wrapped under keys derived from the user PIN and from the SO PIN.

mod sealing;
mod store;

pub use sealing::KdfCost;
pub use store::EmbeddedStore;
mod slot;

pub use slot::EmbeddedSlot;

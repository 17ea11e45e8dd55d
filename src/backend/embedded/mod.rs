//! The embedded backend: one SQLite file per token, every row sealed under a random token key,
//! which is itself wrapped under keys derived from the user PIN and from the SO PIN.

mod boxes;
mod files;
mod head;
mod migrate;
mod policy;
mod sealing;
mod slot;
mod store;

pub use files::{store_file, STORE_DIR, STORE_FILE};
pub use migrate::{migrate_earlier_store, Migrated};
pub use sealing::KdfCost;
pub use slot::EmbeddedSlot;
pub use store::EmbeddedStore;

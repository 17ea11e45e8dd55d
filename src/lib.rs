//! b4ae-pkcs11: a PKCS#11 3.2 module with post-quantum keys.
//!
//! Layers, outermost first (docs/architecture.md draws them): [`abi`] (the C entry points:
//! argument decoding, one `CK_RV` mapping; the inbound FFI border) → [`module`] (process-wide
//! state: slots and sessions by handle) → [`backend`] (the one interface a slot and its sessions
//! implement: `embedded`, and `pkcs11` with the outbound FFI border, the only other `unsafe`) →
//! [`token`] (what backends share: token model, operations, objects, attribute rules) →
//! [`mechanism`] (the registry of mechanism families).

pub mod abi;
pub mod agent;
pub mod audit;
pub mod backend;
pub mod config;
pub mod consts;
pub mod error;
pub mod forksafe;
pub mod hsm;
pub mod logging;
pub mod mechanism;
pub mod metrics;
pub mod module;
pub mod process_exit;
pub mod random;
pub mod token;

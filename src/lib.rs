//! b4ae-pkcs11: a PKCS#11 3.2 module with post-quantum keys.
//!
//! Layers, outermost first: [`abi`] (the C entry points, the only `unsafe` code) →
//! [`module`] (process-wide state) → [`token`] (slots, sessions, login, objects) →
//! [`mechanism`] (the algorithms) → [`backend`] (where tokens keep their state).

pub mod abi;
pub mod backend;
pub mod config;
pub mod consts;
pub mod error;
pub mod forksafe;
pub mod logging;
pub mod mechanism;
pub mod module;
pub mod random;
pub mod token;

//! The fixed-width text and version fields of the `CK_*_INFO` structures.

use cryptoki_sys::*;

/// Copies `text` into a blank-padded fixed field.
pub fn padded<const N: usize>(text: &[u8]) -> [CK_UTF8CHAR; N] {
    let mut field = [b' '; N];
    let n = text.len().min(N);
    field[..n].copy_from_slice(&text[..n]);
    field
}

/// Version of this library, from Cargo.
pub fn library_version() -> CK_VERSION {
    CK_VERSION {
        major: env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap_or(0),
        minor: env!("CARGO_PKG_VERSION_MINOR").parse().unwrap_or(0),
    }
}

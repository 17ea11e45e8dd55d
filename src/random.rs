//! Random bytes from the operating system (seeds, salts, IVs, identifiers).

use crate::error::{Error, Result};

pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::getrandom(&mut out).map_err(|_| Error::DEVICE)?;
    Ok(out)
}

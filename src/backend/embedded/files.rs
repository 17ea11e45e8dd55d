//! Where a token's files live: a directory of the module's own inside the configured `path`,
//! created private, so the configured directory (which may be `$HOME`) is never changed.

use crate::error::Result;
use std::path::{Path, PathBuf};

/// The module's directory inside the configured `path`.
pub const STORE_DIR: &str = "b4ae-store";
pub const STORE_FILE: &str = "token.sqlite";

/// The store file of a token configured at `path`.
pub fn store_file(path: &Path) -> PathBuf {
    path.join(STORE_DIR).join(STORE_FILE)
}

/// Creates the store's directory (mode 0700) and an empty store file (mode 0600) if they are
/// missing. SQLite creates its -wal and -shm files with the mode of the database file, so they
/// are private from their first byte too.
pub fn create(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path)?;
    let dir = path.join(STORE_DIR);
    create_private_dir(&dir)?;
    create_private_file(&dir.join(STORE_FILE))
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(unix)]
fn create_private_file(file: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(file)?;
    Ok(())
}

#[cfg(not(unix))]
fn create_private_file(file: &Path) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(file)?;
    Ok(())
}

/// Warns once about a store left by a release before the store moved into its own directory:
/// its format is not read any more (re-initialize the token).
pub fn warn_about_old_layout(path: &Path) {
    let old = path.join(STORE_FILE);
    if old.exists() && !store_file(path).exists() {
        tracing::warn!(
            "{} is a store of an earlier release, which this one does not read; the token at \
             {} shows uninitialized until `b4ae-pkcs11 migrate` copies it (with both PINs)",
            old.display(),
            path.display()
        );
    }
}

//! The process is exiting: the module's own `atexit` handler ran. Handlers run in reverse order
//! of registration, and an application's libraries (OpenSSL's `OPENSSL_cleanup`, registered when
//! libcrypto starts) registered theirs before loading this module, so this runs first: when their
//! teardown then calls `C_CloseSession`, `C_Logout` or `C_Finalize` (pkcs11-provider does), the
//! module answers without calling into the HSM's library, whose own dependencies (the same
//! libcrypto, for SoftHSM2) may be half torn down already. Background threads (the replica
//! prober) stop calling into HSM libraries too, whose own destructors `exit()` runs next (a
//! probe under way is waited for). The operating system closes what is left: an HSM ends a dead
//! process's sessions itself.

use parking_lot::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

static EXITING: AtomicBool = AtomicBool::new(false);
/// Held (shared) by a background thread's calls into an HSM library; the exit takes it
/// exclusively, so it waits for a call under way, and no call starts after it.
static BACKGROUND: RwLock<()> = RwLock::new(());

/// Whether the process is past `exit()`.
pub fn exiting() -> bool {
    EXITING.load(Ordering::Acquire)
}

/// Runs a background thread's work that calls into an HSM library (the replica prober), unless
/// the process is exiting: `exit()` runs the libraries' own destructors (SoftHSM2's C++ statics)
/// while such a thread would still be calling them. `None` once exiting.
pub fn unless_exiting<T>(work: impl FnOnce() -> T) -> Option<T> {
    let _held = BACKGROUND.read();
    if exiting() {
        return None;
    }
    Some(work())
}

/// The module's `atexit` handler: waits for background calls under way, marks the exit, then
/// writes the metrics one last time.
pub extern "C" fn at_exit() {
    {
        let _exclusive = BACKGROUND.write();
        EXITING.store(true, Ordering::Release);
    }
    crate::metrics::at_exit();
}

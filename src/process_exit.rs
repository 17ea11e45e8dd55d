//! The process is exiting: the module's own `atexit` handler ran. Handlers run in reverse order
//! of registration, and an application's libraries (OpenSSL's `OPENSSL_cleanup`, registered when
//! libcrypto starts) registered theirs before loading this module, so this runs first: when their
//! teardown then calls `C_CloseSession`, `C_Logout` or `C_Finalize` (pkcs11-provider does), the
//! module answers without calling into the HSM's library, whose own dependencies (the same
//! libcrypto, for SoftHSM2) may be half torn down already. The operating system closes what is
//! left: an HSM ends a dead process's sessions itself.

use std::sync::atomic::{AtomicBool, Ordering};

static EXITING: AtomicBool = AtomicBool::new(false);

/// Whether the process is past `exit()`.
pub fn exiting() -> bool {
    EXITING.load(Ordering::Acquire)
}

/// The module's `atexit` handler: marks the exit, then writes the metrics one last time.
pub extern "C" fn at_exit() {
    EXITING.store(true, Ordering::Release);
    crate::metrics::at_exit();
}

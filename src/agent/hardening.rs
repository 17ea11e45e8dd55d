//! What keeps the agent's memory to itself: no core dumps, not dumpable (so no process of
//! the same user can ptrace it or read `/proc/<pid>/mem`), and its pages locked in RAM where
//! the memory-lock limit allows (decrypted keys never reach swap).

use nix::sys::mman::{mlockall, MlockAllFlags};
use nix::sys::prctl;
use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};

/// What the hardening achieved, for the log and `docs/agent.md`'s checklist.
#[derive(Debug)]
pub struct Hardened {
    pub memory_locked: bool,
}

/// Applies every measure; the ones the system refuses are logged, except that a process that
/// cannot be made undumpable does not serve keys.
pub fn harden() -> Result<Hardened, String> {
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(|e| format!("no core dumps: {e}"))?;
    prctl::set_dumpable(false).map_err(|e| format!("PR_SET_DUMPABLE: {e}"))?;
    let unlimited =
        matches!(getrlimit(Resource::RLIMIT_MEMLOCK), Ok((soft, _)) if soft == RLIM_INFINITY);
    let privileged = nix::unistd::geteuid().is_root();
    // With a finite limit, locking future pages would make large allocations (the PIN KDF's
    // 64 MiB) fail; memory is locked only when nothing limits it.
    let memory_locked = (unlimited || privileged)
        && match mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("mlockall: {e}");
                false
            }
        };
    if !memory_locked {
        tracing::warn!(
            "memory not locked: RLIMIT_MEMLOCK is finite (the shipped unit sets \
             LimitMEMLOCK=infinity); decrypted keys could reach swap"
        );
    }
    Ok(Hardened { memory_locked })
}

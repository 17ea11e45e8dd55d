//! Process-wide state that survives `fork()` safely: a forked child must never wait on a lock
//! that a thread of the parent held at the moment of the fork (that thread does not exist in
//! the child), nor drop the parent's objects (their destructors would close sessions, files or
//! libraries the parent still uses). The child sets the parent's value aside and starts afresh.

use arc_swap::ArcSwapOption;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How many times this process's ancestry has forked since the module was loaded: 0 in the
/// process that loaded it.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Counts a fork; called first thing in the child.
pub fn note_fork() {
    FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
}

pub fn generation() -> u64 {
    FORK_GENERATION.load(Ordering::SeqCst)
}

/// Whether this process is a forked child of the one that loaded the module.
pub fn in_forked_child() -> bool {
    generation() > 0
}

/// One `T` per process, made on first use (lock-free to reach).
pub struct PerProcess<T> {
    current: ArcSwapOption<T>,
}

impl<T: Default> PerProcess<T> {
    pub const fn new() -> Self {
        PerProcess {
            current: ArcSwapOption::const_empty(),
        }
    }

    /// This process's value, made now if there is none yet.
    pub fn get(&self) -> Arc<T> {
        loop {
            if let Some(value) = self.current.load_full() {
                return value;
            }
            // Another thread may install its own at the same time; whichever wins is used.
            let fresh = Arc::new(T::default());
            self.current.compare_and_swap(&None::<Arc<T>>, Some(fresh));
        }
    }

    /// The value, if one was made.
    pub fn current(&self) -> Option<Arc<T>> {
        self.current.load_full()
    }

    /// Takes the value out (in a forked child: the parent's, which the caller keeps or forgets).
    pub fn take(&self) -> Option<Arc<T>> {
        self.current.swap(None)
    }

    /// Puts `value` in, returning the previous one.
    pub fn replace(&self, value: Arc<T>) -> Option<Arc<T>> {
        self.current.swap(Some(value))
    }
}

impl<T: Default> Default for PerProcess<T> {
    fn default() -> Self {
        Self::new()
    }
}

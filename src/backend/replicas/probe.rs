//! The background prober: a thread per replicated token that asks each failed replica, every
//! `probe_interval_ms`, whether it answers again, and puts it back into service (fail-back).
//! It holds only what the replicas share, so the token's backend (dropped at `C_Finalize`)
//! stops and joins it before the module can be unloaded.

use super::Shared;
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::time::Duration;

pub struct Prober {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    pub fn start(shared: Arc<Shared>, interval: Duration) -> Self {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("b4ae-replica-probe".into())
            .spawn(move || run(&shared, &flag, interval))
            .inspect_err(|e| tracing::error!("no replica prober: {e}"))
            .ok();
        Prober { stop, thread }
    }
}

fn run(shared: &Shared, stop: &(Mutex<bool>, Condvar), interval: Duration) {
    let (stopped, wake) = stop;
    loop {
        {
            let mut stopped = stopped.lock();
            if !*stopped {
                wake.wait_for(&mut stopped, interval);
            }
            if *stopped {
                return;
            }
        }
        for replica in shared.replicas.iter().filter(|r| !r.is_up()) {
            let probed = crate::process_exit::unless_exiting(|| {
                if replica.reach().is_ok() {
                    shared.recovered(replica.index);
                }
            });
            if probed.is_none() {
                return;
            }
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

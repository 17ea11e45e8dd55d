//! Metrics (SPEC §6) in the Prometheus text exposition format: every PKCS#11 call by function
//! and `CKR_*` answer with a latency histogram, operations begun per mechanism, sessions,
//! decrypted-key cache hits, and each replica's state. Written to `[metrics] path` by a
//! background thread every `interval_ms`, and at `C_Finalize`.
//!
//! Counting takes no shared lock: each thread counts into a shard of its own (a mutex only the
//! writer ever contends for), and the writer sums the shards. A thread's shard is folded into
//! the retired totals when the thread ends.

use crate::error::rv_name;
use arc_swap::ArcSwapOption;
use cryptoki_sys::*;
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram's buckets: from a table lookup to a
/// slow HSM or the production PIN KDF.
const BUCKETS: [f64; 14] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.1, 1.0, 10.0,
];

#[derive(Default, Clone)]
struct Latency {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Latency {
    fn add(&mut self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn merge(&mut self, other: &Latency) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
    }
}

/// One thread's counts.
#[derive(Default, Clone)]
struct Counts {
    calls: HashMap<(&'static str, CK_RV), u64>,
    latency: HashMap<&'static str, Latency>,
    operations: HashMap<(&'static str, CK_MECHANISM_TYPE, CK_RV), u64>,
    cache: [u64; 2],
}

impl Counts {
    fn merge(&mut self, other: &Counts) {
        for (k, v) in &other.calls {
            *self.calls.entry(*k).or_default() += v;
        }
        for (k, v) in &other.latency {
            self.latency.entry(k).or_default().merge(v);
        }
        for (k, v) in &other.operations {
            *self.operations.entry(*k).or_default() += v;
        }
        self.cache[0] += other.cache[0];
        self.cache[1] += other.cache[1];
    }
}

/// What the writer reads besides the counts: gauges the module keeps.
pub trait Gauges: Send + Sync {
    /// Lines of gauge families, already in the exposition format.
    fn render(&self, out: &mut String);
}

/// The metrics of one initialized module.
pub struct Metrics {
    id: u64,
    shards: Mutex<Vec<Weak<Mutex<Counts>>>>,
    retired: Mutex<Counts>,
    gauges: Box<dyn Gauges>,
}

static CURRENT: ArcSwapOption<Metrics> = ArcSwapOption::const_empty();
/// The metrics being written and their file, for [`at_exit`].
static WRITTEN: ArcSwapOption<(Arc<Metrics>, PathBuf)> = ArcSwapOption::const_empty();
static IDS: AtomicU64 = AtomicU64::new(1);

/// This thread's shard, and which `Metrics` it belongs to.
struct Shard {
    owner: Weak<Metrics>,
    id: u64,
    counts: Arc<Mutex<Counts>>,
}

impl Drop for Shard {
    fn drop(&mut self) {
        if let Some(metrics) = self.owner.upgrade() {
            metrics.retired.lock().merge(&self.counts.lock());
        }
    }
}

thread_local! {
    static SHARD: std::cell::RefCell<Option<Shard>> = const { std::cell::RefCell::new(None) };
}

/// Counts into this thread's shard of the current metrics, if metrics are on.
fn count(f: impl FnOnce(&mut Counts)) {
    let guard = CURRENT.load();
    let Some(metrics) = guard.as_ref() else {
        return;
    };
    let _ = SHARD.try_with(|cell| {
        let mut shard = cell.borrow_mut();
        if shard.as_ref().is_none_or(|s| s.id != metrics.id) {
            let counts = Arc::new(Mutex::new(Counts::default()));
            metrics.shards.lock().push(Arc::downgrade(&counts));
            *shard = Some(Shard {
                owner: Arc::downgrade(metrics),
                id: metrics.id,
                counts,
            });
        }
        if let Some(shard) = shard.as_ref() {
            f(&mut shard.counts.lock());
        }
    });
}

/// Whether metrics are on (callers skip timing when not).
pub fn enabled() -> bool {
    CURRENT.load().is_some()
}

/// A PKCS#11 call ended: its function, answer and time.
pub fn call(function: &'static str, rv: CK_RV, took: Duration) {
    count(|c| {
        *c.calls.entry((function, rv)).or_default() += 1;
        c.latency
            .entry(function)
            .or_default()
            .add(took.as_secs_f64());
    });
}

/// An operation was begun (`C_xInit`, a key generation, an encapsulation...) with `mechanism`.
pub fn operation(operation: &'static str, mechanism: CK_MECHANISM_TYPE, rv: CK_RV) {
    count(|c| *c.operations.entry((operation, mechanism, rv)).or_default() += 1);
}

/// A decrypted key was wanted: found in the cache, or opened.
pub fn key_cache(hit: bool) {
    count(|c| c.cache[usize::from(!hit)] += 1);
}

impl Metrics {
    /// Turns metrics on for this process, with the module's `gauges`.
    pub fn start(gauges: Box<dyn Gauges>) -> Arc<Metrics> {
        let metrics = Arc::new(Metrics {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            shards: Mutex::new(Vec::new()),
            retired: Mutex::new(Counts::default()),
            gauges,
        });
        CURRENT.store(Some(metrics.clone()));
        metrics
    }

    /// Turns metrics off (`C_Finalize`; a forked child's parent metrics).
    pub fn stop() {
        CURRENT.store(None);
    }

    fn totals(&self) -> Counts {
        let mut totals = self.retired.lock().clone();
        let mut shards = self.shards.lock();
        shards.retain(|s| s.strong_count() > 0);
        for shard in shards.iter().filter_map(Weak::upgrade) {
            totals.merge(&shard.lock());
        }
        totals
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let c = self.totals();
        let mut out = String::new();
        family(
            &mut out,
            "b4ae_pkcs11_calls_total",
            "counter",
            "PKCS#11 calls by function and answer.",
        );
        let mut calls: Vec<_> = c.calls.iter().collect();
        calls.sort();
        for ((function, rv), n) in calls {
            let _ = writeln!(
                out,
                "b4ae_pkcs11_calls_total{{function=\"{function}\",rv=\"{}\"}} {n}",
                rv_label(*rv)
            );
        }
        family(
            &mut out,
            "b4ae_pkcs11_call_duration_seconds",
            "histogram",
            "Time spent in each PKCS#11 function.",
        );
        let mut latency: Vec<_> = c.latency.iter().collect();
        latency.sort_by_key(|(f, _)| **f);
        for (function, l) in latency {
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(l.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "b4ae_pkcs11_call_duration_seconds_bucket{{function=\"{function}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "b4ae_pkcs11_call_duration_seconds_bucket{{function=\"{function}\",le=\"+Inf\"}} {}\n\
                 b4ae_pkcs11_call_duration_seconds_sum{{function=\"{function}\"}} {}\n\
                 b4ae_pkcs11_call_duration_seconds_count{{function=\"{function}\"}} {}",
                l.count, l.sum, l.count
            );
        }
        family(
            &mut out,
            "b4ae_pkcs11_operations_total",
            "counter",
            "Operations begun, by operation, mechanism and answer.",
        );
        let mut operations: Vec<_> = c.operations.iter().collect();
        operations.sort();
        for ((operation, mechanism, rv), n) in operations {
            let _ = writeln!(
                out,
                "b4ae_pkcs11_operations_total{{operation=\"{operation}\",mechanism=\"{}\",rv=\"{}\"}} {n}",
                mechanism_label(*mechanism),
                rv_label(*rv)
            );
        }
        family(
            &mut out,
            "b4ae_pkcs11_key_cache_total",
            "counter",
            "Decrypted sealed keys wanted: found in the cache, or opened in the HSM.",
        );
        let _ = writeln!(
            out,
            "b4ae_pkcs11_key_cache_total{{result=\"hit\"}} {}\nb4ae_pkcs11_key_cache_total{{result=\"miss\"}} {}",
            c.cache[0], c.cache[1]
        );
        self.gauges.render(&mut out);
        out
    }
}

/// The `# HELP` and `# TYPE` lines of a family.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped.
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn rv_label(rv: CK_RV) -> String {
    match rv_name(rv) {
        "CKR_?" => format!("0x{rv:08x}"),
        name => name.to_owned(),
    }
}

fn mechanism_label(mechanism: CK_MECHANISM_TYPE) -> String {
    use crate::consts::*;
    let name = match mechanism {
        CKM_ML_DSA_KEY_PAIR_GEN => "CKM_ML_DSA_KEY_PAIR_GEN",
        CKM_ML_DSA => "CKM_ML_DSA",
        CKM_HASH_ML_DSA => "CKM_HASH_ML_DSA",
        CKM_HASH_ML_DSA_SHA224 => "CKM_HASH_ML_DSA_SHA224",
        CKM_HASH_ML_DSA_SHA256 => "CKM_HASH_ML_DSA_SHA256",
        CKM_HASH_ML_DSA_SHA384 => "CKM_HASH_ML_DSA_SHA384",
        CKM_HASH_ML_DSA_SHA512 => "CKM_HASH_ML_DSA_SHA512",
        CKM_HASH_ML_DSA_SHA3_224 => "CKM_HASH_ML_DSA_SHA3_224",
        CKM_HASH_ML_DSA_SHA3_256 => "CKM_HASH_ML_DSA_SHA3_256",
        CKM_HASH_ML_DSA_SHA3_384 => "CKM_HASH_ML_DSA_SHA3_384",
        CKM_HASH_ML_DSA_SHA3_512 => "CKM_HASH_ML_DSA_SHA3_512",
        CKM_HASH_ML_DSA_SHAKE128 => "CKM_HASH_ML_DSA_SHAKE128",
        CKM_HASH_ML_DSA_SHAKE256 => "CKM_HASH_ML_DSA_SHAKE256",
        CKM_SLH_DSA_KEY_PAIR_GEN => "CKM_SLH_DSA_KEY_PAIR_GEN",
        CKM_SLH_DSA => "CKM_SLH_DSA",
        CKM_HASH_SLH_DSA => "CKM_HASH_SLH_DSA",
        CKM_HASH_SLH_DSA_SHA224 => "CKM_HASH_SLH_DSA_SHA224",
        CKM_HASH_SLH_DSA_SHA256 => "CKM_HASH_SLH_DSA_SHA256",
        CKM_HASH_SLH_DSA_SHA384 => "CKM_HASH_SLH_DSA_SHA384",
        CKM_HASH_SLH_DSA_SHA512 => "CKM_HASH_SLH_DSA_SHA512",
        CKM_HASH_SLH_DSA_SHA3_224 => "CKM_HASH_SLH_DSA_SHA3_224",
        CKM_HASH_SLH_DSA_SHA3_256 => "CKM_HASH_SLH_DSA_SHA3_256",
        CKM_HASH_SLH_DSA_SHA3_384 => "CKM_HASH_SLH_DSA_SHA3_384",
        CKM_HASH_SLH_DSA_SHA3_512 => "CKM_HASH_SLH_DSA_SHA3_512",
        CKM_HASH_SLH_DSA_SHAKE128 => "CKM_HASH_SLH_DSA_SHAKE128",
        CKM_HASH_SLH_DSA_SHAKE256 => "CKM_HASH_SLH_DSA_SHAKE256",
        CKM_ML_KEM_KEY_PAIR_GEN => "CKM_ML_KEM_KEY_PAIR_GEN",
        CKM_ML_KEM => "CKM_ML_KEM",
        CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN => "CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN",
        CKM_B4AE_DILITHIUM5 => "CKM_B4AE_DILITHIUM5",
        CKM_B4AE_HYBRID_KEY_PAIR_GEN => "CKM_B4AE_HYBRID_KEY_PAIR_GEN",
        CKM_B4AE_HYBRID => "CKM_B4AE_HYBRID",
        CKM_EC_KEY_PAIR_GEN => "CKM_EC_KEY_PAIR_GEN",
        CKM_EC_EDWARDS_KEY_PAIR_GEN => "CKM_EC_EDWARDS_KEY_PAIR_GEN",
        CKM_ECDSA => "CKM_ECDSA",
        CKM_ECDSA_SHA256 => "CKM_ECDSA_SHA256",
        CKM_ECDSA_SHA384 => "CKM_ECDSA_SHA384",
        CKM_EDDSA => "CKM_EDDSA",
        CKM_RSA_PKCS_KEY_PAIR_GEN => "CKM_RSA_PKCS_KEY_PAIR_GEN",
        CKM_RSA_PKCS => "CKM_RSA_PKCS",
        CKM_RSA_PKCS_PSS => "CKM_RSA_PKCS_PSS",
        CKM_SHA256_RSA_PKCS => "CKM_SHA256_RSA_PKCS",
        CKM_SHA256_RSA_PKCS_PSS => "CKM_SHA256_RSA_PKCS_PSS",
        CKM_AES_KEY_GEN => "CKM_AES_KEY_GEN",
        CKM_AES_GCM => "CKM_AES_GCM",
        CKM_AES_CBC_PAD => "CKM_AES_CBC_PAD",
        CKM_AES_KEY_WRAP => "CKM_AES_KEY_WRAP",
        CKM_SHA256 => "CKM_SHA256",
        CKM_SHA384 => "CKM_SHA384",
        CKM_SHA512 => "CKM_SHA512",
        CKM_SHA256_HMAC => "CKM_SHA256_HMAC",
        _ => return format!("0x{mechanism:08x}"),
    };
    name.to_owned()
}

/// Rewrites the metrics file every `interval` and once more when stopped. `{pid}` in the path
/// becomes the process id, so several processes can each keep a file.
pub struct Writer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    pub fn start(metrics: Arc<Metrics>, path: PathBuf, interval: Duration) -> Writer {
        let path = PathBuf::from(
            path.to_string_lossy()
                .replace("{pid}", &std::process::id().to_string()),
        );
        WRITTEN.store(Some(Arc::new((metrics.clone(), path.clone()))));
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("b4ae-metrics".into())
            .spawn(move || loop {
                let stopped = {
                    let mut stopped = flag.0.lock();
                    if !*stopped {
                        flag.1.wait_for(&mut stopped, interval);
                    }
                    *stopped
                };
                if let Err(e) = write_file(&path, &metrics.render()) {
                    tracing::error!("metrics file {}: {e}", path.display());
                }
                if stopped {
                    return;
                }
            })
            .inspect_err(|e| tracing::error!("no metrics writer: {e}"))
            .ok();
        Writer { stop, thread }
    }
}

/// Writes the metrics file one last time when the process exits without `C_Finalize` (most
/// applications), so that a short-lived process leaves its counts too.
pub extern "C" fn at_exit() {
    let _ = std::panic::catch_unwind(|| {
        if let Some(written) = WRITTEN.load_full() {
            let (metrics, path) = &*written;
            let _ = write_file(path, &metrics.render());
        }
    });
}

impl Drop for Writer {
    fn drop(&mut self) {
        WRITTEN.store(None);
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Replaces the file whole (a reader never sees half of it).
fn write_file(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let partial = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, path)
}

//! [`FailoverHsm`]: the guide's high-availability pattern as a backend of its own.

use super::{HsmBackend, HsmError, HsmResult, KeyType};

/// Several HSMs in order of preference: each operation goes to the first that is available, and
/// to the next when it fails for a reason other than the request itself (a bad signature is an
/// answer, a missing key or a device fault is not). Key pairs are made in the first available
/// HSM only: the others must hold copies (a cluster, a restore) for signing to fail over.
pub struct FailoverHsm {
    backends: Vec<Box<dyn HsmBackend>>,
}

impl FailoverHsm {
    pub fn new(backends: Vec<Box<dyn HsmBackend>>) -> Self {
        FailoverHsm { backends }
    }

    /// The first available backend's answer, or the next's when it errs.
    fn first<T>(&self, op: impl Fn(&dyn HsmBackend) -> HsmResult<T>) -> HsmResult<T> {
        let mut last = None;
        for backend in self.backends.iter().filter(|b| b.is_available()) {
            match op(backend.as_ref()) {
                Err(e @ (HsmError::KeyExists(_) | HsmError::InvalidKey(_))) => return Err(e),
                Err(e) => last = Some(e),
                answer => return answer,
            }
        }
        Err(last.map_or(HsmError::Unavailable, |e| HsmError::AllFailed(Box::new(e))))
    }
}

impl HsmBackend for FailoverHsm {
    fn generate_keypair(&self, key_id: &str) -> HsmResult<Vec<u8>> {
        self.first(|b| b.generate_keypair(key_id))
    }

    fn sign(&self, key_id: &str, data: &[u8]) -> HsmResult<Vec<u8>> {
        self.first(|b| b.sign(key_id, data))
    }

    fn verify(&self, key_id: &str, data: &[u8], signature: &[u8]) -> HsmResult<bool> {
        self.first(|b| b.verify(key_id, data, signature))
    }

    fn store_key(&self, key_id: &str, key_type: KeyType, key_data: &[u8]) -> HsmResult<()> {
        self.first(|b| b.store_key(key_id, key_type, key_data))
    }

    fn is_available(&self) -> bool {
        self.backends.iter().any(|b| b.is_available())
    }
}

//! Pre-hash signing, shared by HashML-DSA (FIPS 204 §5.4) and HashSLH-DSA (FIPS 205 §10.2):
//! both sign M' = 1 ‖ len(ctx) ‖ ctx ‖ OID(PH) ‖ PH(M) with their internal algorithm. The
//! `CKM_HASH_<family>_<hash>` mechanisms hash the message here, part by part; the bare
//! `CKM_HASH_<family>` takes PH(M) and names the hash in its parameter.

use crate::error::{Error, Result};
use crate::mechanism::signing::{SignOperation, SignOptions, VerifyOperation};
use crate::mechanism::{Mechanism, MechanismInfo};
use cryptoki_sys::*;
use sha2::Digest as _;
use sha3::digest::{ExtendableOutput, Update as _};
use zeroize::Zeroizing;

/// A pre-hash function FIPS 204 and FIPS 205 name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreHash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
    Sha3_224,
    Sha3_256,
    Sha3_384,
    Sha3_512,
    Shake128,
    Shake256,
}

impl PreHash {
    /// In the order of the `CKM_HASH_ML_DSA_<hash>` and `CKM_HASH_SLH_DSA_<hash>` numbers.
    pub const ALL: [PreHash; 10] = [
        PreHash::Sha224,
        PreHash::Sha256,
        PreHash::Sha384,
        PreHash::Sha512,
        PreHash::Sha3_224,
        PreHash::Sha3_256,
        PreHash::Sha3_384,
        PreHash::Sha3_512,
        PreHash::Shake128,
        PreHash::Shake256,
    ];

    /// The hash of a family's `CKM_HASH_<family>_<hash>` mechanism, `first` being its SHA-224
    /// one: both families number their ten in [`PreHash::ALL`]'s order.
    pub fn of_mechanism(mechanism: CK_MECHANISM_TYPE, first: CK_MECHANISM_TYPE) -> Option<Self> {
        let index = mechanism.checked_sub(first)?;
        Self::ALL.get(usize::try_from(index).ok()?).copied()
    }

    /// The hash named by `CK_HASH_SIGN_ADDITIONAL_CONTEXT.hash`. PKCS#11 has no plain SHAKE
    /// digest mechanism; the SHAKE key-derivation numbers stand for them.
    pub fn of_hash_mechanism(hash: CK_MECHANISM_TYPE) -> Option<Self> {
        Some(match hash {
            CKM_SHA224 => PreHash::Sha224,
            CKM_SHA256 => PreHash::Sha256,
            CKM_SHA384 => PreHash::Sha384,
            CKM_SHA512 => PreHash::Sha512,
            CKM_SHA3_224 => PreHash::Sha3_224,
            CKM_SHA3_256 => PreHash::Sha3_256,
            CKM_SHA3_384 => PreHash::Sha3_384,
            CKM_SHA3_512 => PreHash::Sha3_512,
            CKM_SHAKE_128_KEY_DERIVATION => PreHash::Shake128,
            CKM_SHAKE_256_KEY_DERIVATION => PreHash::Shake256,
            _ => return None,
        })
    }

    /// Length of PH(M): the digest, or the SHAKE output FIPS 204 and 205 fix.
    pub fn output_len(self) -> usize {
        match self {
            PreHash::Sha224 | PreHash::Sha3_224 => 28,
            PreHash::Sha256 | PreHash::Sha3_256 | PreHash::Shake128 => 32,
            PreHash::Sha384 | PreHash::Sha3_384 => 48,
            PreHash::Sha512 | PreHash::Sha3_512 | PreHash::Shake256 => 64,
        }
    }

    /// DER encoding of the hash's OID (2.16.840.1.101.3.4.2.x).
    fn oid(self) -> [u8; 11] {
        let last = match self {
            PreHash::Sha256 => 0x01,
            PreHash::Sha384 => 0x02,
            PreHash::Sha512 => 0x03,
            PreHash::Sha224 => 0x04,
            PreHash::Sha3_224 => 0x07,
            PreHash::Sha3_256 => 0x08,
            PreHash::Sha3_384 => 0x09,
            PreHash::Sha3_512 => 0x0A,
            PreHash::Shake128 => 0x0B,
            PreHash::Shake256 => 0x0C,
        };
        [
            0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, last,
        ]
    }

    /// A running hash of the message.
    pub fn hasher(self) -> Hasher {
        match self {
            PreHash::Sha224 => Hasher::Sha224(sha2::Sha224::new()),
            PreHash::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            PreHash::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            PreHash::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
            PreHash::Sha3_224 => Hasher::Sha3_224(sha3::Sha3_224::new()),
            PreHash::Sha3_256 => Hasher::Sha3_256(sha3::Sha3_256::new()),
            PreHash::Sha3_384 => Hasher::Sha3_384(sha3::Sha3_384::new()),
            PreHash::Sha3_512 => Hasher::Sha3_512(sha3::Sha3_512::new()),
            PreHash::Shake128 => Hasher::Shake128(sha3::Shake128::default()),
            PreHash::Shake256 => Hasher::Shake256(sha3::Shake256::default()),
        }
    }

    /// M' for a digest of this hash and a context (FIPS 204 algorithm 4, FIPS 205 algorithm 23).
    pub fn message_prime(self, digest: &[u8], context: &[u8]) -> Result<Vec<u8>> {
        if digest.len() != self.output_len() {
            return Err(Error::DATA_LEN_RANGE);
        }
        let context_len =
            u8::try_from(context.len()).map_err(|_| Error::MECHANISM_PARAM_INVALID)?;
        let mut m = Vec::with_capacity(2 + context.len() + 11 + digest.len());
        m.extend_from_slice(&[1, context_len]);
        m.extend_from_slice(context);
        m.extend_from_slice(&self.oid());
        m.extend_from_slice(digest);
        Ok(m)
    }
}

/// A message being hashed for a pre-hash signature.
#[derive(Clone)]
pub enum Hasher {
    Sha224(sha2::Sha224),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
    Sha3_224(sha3::Sha3_224),
    Sha3_256(sha3::Sha3_256),
    Sha3_384(sha3::Sha3_384),
    Sha3_512(sha3::Sha3_512),
    Shake128(sha3::Shake128),
    Shake256(sha3::Shake256),
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha224(h) => sha2::Digest::update(h, data),
            Hasher::Sha256(h) => sha2::Digest::update(h, data),
            Hasher::Sha384(h) => sha2::Digest::update(h, data),
            Hasher::Sha512(h) => sha2::Digest::update(h, data),
            Hasher::Sha3_224(h) => sha2::Digest::update(h, data),
            Hasher::Sha3_256(h) => sha2::Digest::update(h, data),
            Hasher::Sha3_384(h) => sha2::Digest::update(h, data),
            Hasher::Sha3_512(h) => sha2::Digest::update(h, data),
            Hasher::Shake128(h) => h.update(data),
            Hasher::Shake256(h) => h.update(data),
        }
    }

    /// PH(M).
    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha224(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha384(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
            Hasher::Sha3_224(h) => h.finalize().to_vec(),
            Hasher::Sha3_256(h) => h.finalize().to_vec(),
            Hasher::Sha3_384(h) => h.finalize().to_vec(),
            Hasher::Sha3_512(h) => h.finalize().to_vec(),
            Hasher::Shake128(h) => h.finalize_boxed(32).to_vec(),
            Hasher::Shake256(h) => h.finalize_boxed(64).to_vec(),
        }
    }
}

/// A family's pre-hash mechanisms: the bare one (its parameter names the hash, the data is
/// PH(M)) and the SHA-224 one of its ten `CKM_HASH_<family>_<hash>`.
#[derive(Clone, Copy)]
pub struct PreHashMechanisms {
    pub bare: CK_MECHANISM_TYPE,
    pub first: CK_MECHANISM_TYPE,
}

impl PreHashMechanisms {
    /// The family's eleven mechanisms for `C_GetMechanismList`: the bare one, then the ten in
    /// [`PreHash::ALL`]'s order; key sizes the range of the family's parameter-set numbers.
    pub const fn infos(self, min_set: CK_ULONG, max_set: CK_ULONG) -> [MechanismInfo; 11] {
        const FLAGS: CK_FLAGS = CKF_SIGN | CKF_VERIFY;
        let mut list = [MechanismInfo::new(self.bare, min_set, max_set, FLAGS); 11];
        let mut i = 0;
        while i < 10 {
            list[i + 1] = MechanismInfo::new(self.first + i as CK_ULONG, min_set, max_set, FLAGS);
            i += 1;
        }
        list
    }

    /// The options, pre-hash and, for a `CKM_HASH_<family>_<hash>` (which takes the message),
    /// the running hash; the bare mechanism takes the digest itself.
    pub fn options_and_hash(
        self,
        mechanism: &Mechanism,
    ) -> Result<(SignOptions, PreHash, Option<Hasher>)> {
        if mechanism.mechanism == self.bare {
            let (options, hash) = SignOptions::from_hash_param(&mechanism.param)?;
            return Ok((options, hash, None));
        }
        let hash = PreHash::of_mechanism(mechanism.mechanism, self.first)
            .ok_or(Error::MECHANISM_INVALID)?;
        let options = SignOptions::from_param(&mechanism.param)?;
        Ok((options, hash, Some(hash.hasher())))
    }
}

/// Signs M' with the family's internal algorithm.
pub type SignInternal = Box<dyn Fn(&[u8]) -> Result<Vec<u8>> + Send>;
/// Verifies (M', signature) with the family's internal algorithm.
pub type VerifyInternal = Box<dyn Fn(&[u8], &[u8]) -> Result<()> + Send>;

/// The part of a pre-hash operation both sides share: the hash (running, or none when the data
/// is the digest itself) and the context that go into M'.
struct PreHashInput {
    hash: PreHash,
    hasher: Option<Hasher>,
    context: Vec<u8>,
    started: bool,
}

impl PreHashInput {
    fn update(&mut self, data: &[u8]) -> Result<()> {
        self.started = true;
        self.hasher
            .as_mut()
            .ok_or(Error::FUNCTION_NOT_SUPPORTED)?
            .update(data);
        Ok(())
    }

    /// M' of a single-part call's data: hashed, or the digest itself.
    fn whole(&mut self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if self.started {
            return Err(Error::OPERATION_ACTIVE);
        }
        let digest = match self.hasher.take() {
            Some(mut hasher) => {
                hasher.update(data);
                hasher.finish()
            }
            None => data.to_vec(),
        };
        self.hash
            .message_prime(&digest, &self.context)
            .map(Zeroizing::new)
    }

    /// M' of the parts hashed so far.
    fn finish(&mut self) -> Result<Zeroizing<Vec<u8>>> {
        let hasher = self.hasher.take().ok_or(Error::FUNCTION_NOT_SUPPORTED)?;
        self.hash
            .message_prime(&hasher.finish(), &self.context)
            .map(Zeroizing::new)
    }
}

/// A pre-hash signature in progress.
pub struct PreHashSigner {
    input: PreHashInput,
    signature_len: usize,
    sign: SignInternal,
}

impl PreHashSigner {
    pub fn boxed(
        signature_len: usize,
        (options, hash, hasher): (SignOptions, PreHash, Option<Hasher>),
        sign: SignInternal,
    ) -> Box<dyn SignOperation> {
        Box::new(PreHashSigner {
            input: PreHashInput {
                hash,
                hasher,
                context: options.context,
                started: false,
            },
            signature_len,
            sign,
        })
    }
}

impl SignOperation for PreHashSigner {
    fn signature_len(&self) -> usize {
        self.signature_len
    }

    fn update(&mut self, data: &[u8]) -> Result<()> {
        self.input.update(data)
    }

    fn sign(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        let m = self.input.whole(data)?;
        (self.sign)(&m)
    }

    fn finish(&mut self) -> Result<Vec<u8>> {
        let m = self.input.finish()?;
        (self.sign)(&m)
    }
}

/// A pre-hash verification in progress.
pub struct PreHashVerifier {
    input: PreHashInput,
    verify: VerifyInternal,
}

impl PreHashVerifier {
    pub fn boxed(
        (options, hash, hasher): (SignOptions, PreHash, Option<Hasher>),
        verify: VerifyInternal,
    ) -> Box<dyn VerifyOperation> {
        Box::new(PreHashVerifier {
            input: PreHashInput {
                hash,
                hasher,
                context: options.context,
                started: false,
            },
            verify,
        })
    }
}

impl VerifyOperation for PreHashVerifier {
    fn update(&mut self, data: &[u8]) -> Result<()> {
        self.input.update(data)
    }

    fn verify(&mut self, data: &[u8], signature: &[u8]) -> Result<()> {
        let m = self.input.whole(data)?;
        (self.verify)(&m, signature)
    }

    fn finish(&mut self, signature: &[u8]) -> Result<()> {
        let m = self.input.finish()?;
        (self.verify)(&m, signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_families_number_their_hashes_alike() {
        for (i, hash) in PreHash::ALL.into_iter().enumerate() {
            let i = i as CK_ULONG;
            assert_eq!(
                PreHash::of_mechanism(CKM_HASH_ML_DSA_SHA224 + i, CKM_HASH_ML_DSA_SHA224),
                Some(hash)
            );
            assert_eq!(
                PreHash::of_mechanism(CKM_HASH_SLH_DSA_SHA224 + i, CKM_HASH_SLH_DSA_SHA224),
                Some(hash)
            );
        }
        assert_eq!(
            PreHash::of_mechanism(CKM_HASH_ML_DSA_SHAKE256, CKM_HASH_ML_DSA_SHA224),
            Some(PreHash::Shake256)
        );
        assert_eq!(
            PreHash::of_mechanism(CKM_HASH_SLH_DSA_SHAKE256, CKM_HASH_SLH_DSA_SHA224),
            Some(PreHash::Shake256)
        );
        assert_eq!(
            PreHash::of_mechanism(CKM_HASH_SLH_DSA_SHAKE256 + 1, CKM_HASH_SLH_DSA_SHA224),
            None
        );
        assert_eq!(
            PreHash::of_mechanism(CKM_HASH_SLH_DSA, CKM_HASH_SLH_DSA_SHA224),
            None
        );
    }
}

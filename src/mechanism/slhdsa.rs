//! SLH-DSA (FIPS 205), the twelve parameter sets, by RustCrypto `slh-dsa`: public key 2n,
//! private key 4n bytes (SK.seed ‖ SK.prf ‖ PK.seed ‖ PK.root), pure signing with a context
//! string, hedged (a fresh opt_rand) unless `CKH_DETERMINISTIC_REQUIRED` asks for the
//! deterministic variant (opt_rand = PK.seed). Signing is slow by design (the "s" sets take
//! hundreds of milliseconds): the key is parsed at each operation, a small cost beside it.

use crate::error::{Error, Result};
use crate::mechanism::hybrid::Ed25519Signer;
use crate::mechanism::signing::{context_verifier, WholeMessageSigner};
use crate::mechanism::signing::{SignOperation, SignOptions, VerifyOperation};
use crate::mechanism::{
    check_key, key_value, Mechanism, MechanismFamily, MechanismInfo, ParamShape,
};
use crate::token::attributes::Attributes;
use crate::token::factory;
use crate::token::object::Object;
use cryptoki_sys::*;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The parameter sets, in `CKP_SLH_DSA_*` order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamSet {
    Sha2_128s,
    Shake128s,
    Sha2_128f,
    Shake128f,
    Sha2_192s,
    Shake192s,
    Sha2_192f,
    Shake192f,
    Sha2_256s,
    Shake256s,
    Sha2_256f,
    Shake256f,
}

/// Runs `$body` with `$p` the `slh-dsa` parameter type of `$set`.
macro_rules! per_set {
    ($set:expr, |$p:ident| $body:expr) => {
        match $set {
            ParamSet::Sha2_128s => {
                type $p = slh_dsa::Sha2_128s;
                $body
            }
            ParamSet::Shake128s => {
                type $p = slh_dsa::Shake128s;
                $body
            }
            ParamSet::Sha2_128f => {
                type $p = slh_dsa::Sha2_128f;
                $body
            }
            ParamSet::Shake128f => {
                type $p = slh_dsa::Shake128f;
                $body
            }
            ParamSet::Sha2_192s => {
                type $p = slh_dsa::Sha2_192s;
                $body
            }
            ParamSet::Shake192s => {
                type $p = slh_dsa::Shake192s;
                $body
            }
            ParamSet::Sha2_192f => {
                type $p = slh_dsa::Sha2_192f;
                $body
            }
            ParamSet::Shake192f => {
                type $p = slh_dsa::Shake192f;
                $body
            }
            ParamSet::Sha2_256s => {
                type $p = slh_dsa::Sha2_256s;
                $body
            }
            ParamSet::Shake256s => {
                type $p = slh_dsa::Shake256s;
                $body
            }
            ParamSet::Sha2_256f => {
                type $p = slh_dsa::Sha2_256f;
                $body
            }
            ParamSet::Shake256f => {
                type $p = slh_dsa::Shake256f;
                $body
            }
        }
    };
}

impl ParamSet {
    pub const ALL: [ParamSet; 12] = [
        ParamSet::Sha2_128s,
        ParamSet::Shake128s,
        ParamSet::Sha2_128f,
        ParamSet::Shake128f,
        ParamSet::Sha2_192s,
        ParamSet::Shake192s,
        ParamSet::Sha2_192f,
        ParamSet::Shake192f,
        ParamSet::Sha2_256s,
        ParamSet::Shake256s,
        ParamSet::Sha2_256f,
        ParamSet::Shake256f,
    ];

    /// The set a `CKP_SLH_DSA_*` value names.
    pub fn from_ck(value: CK_ULONG) -> Result<Self> {
        usize::try_from(value)
            .ok()
            .and_then(|v| v.checked_sub(1))
            .and_then(|i| Self::ALL.get(i).copied())
            .ok_or(Error(CKR_PARAMETER_SET_NOT_SUPPORTED))
    }

    pub fn ck(self) -> CK_ULONG {
        self as CK_ULONG + 1
    }

    /// The security parameter n, in bytes.
    pub fn n(self) -> usize {
        match self as usize / 4 {
            0 => 16,
            1 => 24,
            _ => 32,
        }
    }

    pub fn public_key_len(self) -> usize {
        2 * self.n()
    }

    pub fn private_key_len(self) -> usize {
        4 * self.n()
    }

    /// FIPS 205, table 2.
    pub fn signature_len(self) -> usize {
        match self {
            ParamSet::Sha2_128s | ParamSet::Shake128s => 7856,
            ParamSet::Sha2_128f | ParamSet::Shake128f => 17088,
            ParamSet::Sha2_192s | ParamSet::Shake192s => 16224,
            ParamSet::Sha2_192f | ParamSet::Shake192f => 35664,
            ParamSet::Sha2_256s | ParamSet::Shake256s => 29792,
            ParamSet::Sha2_256f | ParamSet::Shake256f => 49856,
        }
    }

    /// A fresh key pair: (public key, private key).
    pub fn keypair(self) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>)> {
        let n = self.n();
        let mut seeds = Zeroizing::new([0u8; 96]);
        getrandom::getrandom(&mut seeds[..3 * n]).map_err(|_| Error::DEVICE)?;
        per_set!(self, |P| {
            let sk = slh_dsa::SigningKey::<P>::slh_keygen_internal(
                &seeds[..n],
                &seeds[n..2 * n],
                &seeds[2 * n..3 * n],
            );
            let private = Zeroizing::new(sk.to_vec());
            Ok((private[2 * n..].to_vec(), private))
        })
    }

    /// Checks a private key's encoding and answers its public key (its last 2n bytes, which
    /// must be the root its seeds make).
    pub fn public_of_private(self, private_key: &[u8]) -> Result<Vec<u8>> {
        if private_key.len() != self.private_key_len() {
            return Err(Error::ATTRIBUTE_VALUE_INVALID);
        }
        let n = self.n();
        per_set!(self, |P| {
            let again = slh_dsa::SigningKey::<P>::slh_keygen_internal(
                &private_key[..n],
                &private_key[n..2 * n],
                &private_key[2 * n..3 * n],
            );
            let again = Zeroizing::new(again.to_vec());
            if again.as_slice() != private_key {
                return Err(Error::ATTRIBUTE_VALUE_INVALID);
            }
            Ok(private_key[2 * n..].to_vec())
        })
    }

    /// A signature of `message` with `context` (FIPS 205 algorithm 22: M' = 0 ‖ len(ctx) ‖ ctx
    /// ‖ M); hedged unless `deterministic`.
    pub fn sign(
        self,
        private_key: &[u8],
        message: &[u8],
        context: &[u8],
        deterministic: bool,
    ) -> Result<Vec<u8>> {
        let context_len =
            u8::try_from(context.len()).map_err(|_| Error::MECHANISM_PARAM_INVALID)?;
        let m: [&[u8]; 4] = [&[0], &[context_len], context, message];
        self.sign_parts(private_key, &m, deterministic)
    }

    /// A signature of M' by `slh_sign_internal` (HashSLH-DSA); hedged unless `deterministic`.
    pub fn sign_internal(
        self,
        private_key: &[u8],
        m: &[u8],
        deterministic: bool,
    ) -> Result<Vec<u8>> {
        self.sign_parts(private_key, &[m], deterministic)
    }

    /// `slh_sign_internal` of M' given in parts; opt_rand fresh, or PK.seed when deterministic.
    fn sign_parts(self, private_key: &[u8], m: &[&[u8]], deterministic: bool) -> Result<Vec<u8>> {
        let mut rand = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(&mut rand[..]).map_err(|_| Error::DEVICE)?;
        let n = self.n();
        per_set!(self, |P| {
            let sk = slh_dsa::SigningKey::<P>::try_from(private_key).map_err(|_| Error::GENERAL)?;
            let opt_rand = (!deterministic).then(|| &rand[..n]);
            Ok(sk.slh_sign_internal(m, opt_rand).to_vec())
        })
    }

    /// Verifies a signature of `message` with `context`.
    pub fn verify(
        self,
        public_key: &[u8],
        message: &[u8],
        context: &[u8],
        signature: &[u8],
    ) -> Result<()> {
        let context_len = u8::try_from(context.len()).map_err(|_| Error::SIGNATURE_INVALID)?;
        let m: [&[u8]; 4] = [&[0], &[context_len], context, message];
        self.verify_parts(public_key, &m, signature)
    }

    /// Verifies a signature of M' by `slh_verify_internal` (HashSLH-DSA).
    pub fn verify_internal(self, public_key: &[u8], m: &[u8], signature: &[u8]) -> Result<()> {
        self.verify_parts(public_key, &[m], signature)
    }

    fn verify_parts(self, public_key: &[u8], m: &[&[u8]], signature: &[u8]) -> Result<()> {
        if signature.len() != self.signature_len() {
            return Err(Error::SIGNATURE_LEN_RANGE);
        }
        per_set!(self, |P| {
            let vk =
                slh_dsa::VerifyingKey::<P>::try_from(public_key).map_err(|_| Error::GENERAL)?;
            let sig = slh_dsa::Signature::<P>::try_from(signature)
                .map_err(|_| Error::SIGNATURE_INVALID)?;
            vk.slh_verify_internal(m, &sig)
                .map_err(|_| Error::SIGNATURE_INVALID)
        })
    }
}

/// The SLH-DSA family: `CKM_SLH_DSA_KEY_PAIR_GEN` and `CKM_SLH_DSA` (key sizes: the range of
/// parameter-set numbers, as for ML-DSA).
pub struct SlhDsa;

impl MechanismFamily for SlhDsa {
    fn mechanisms(&self) -> &'static [MechanismInfo] {
        const MECHANISMS: &[MechanismInfo] = &[
            MechanismInfo::new(
                CKM_SLH_DSA_KEY_PAIR_GEN,
                CKP_SLH_DSA_SHA2_128S,
                CKP_SLH_DSA_SHAKE_256F,
                CKF_GENERATE_KEY_PAIR,
            ),
            MechanismInfo::new(
                CKM_SLH_DSA,
                CKP_SLH_DSA_SHA2_128S,
                CKP_SLH_DSA_SHAKE_256F,
                CKF_SIGN | CKF_VERIFY,
            ),
        ];
        MECHANISMS
    }

    fn param_shape(&self, mechanism: CK_MECHANISM_TYPE) -> ParamShape {
        match mechanism {
            CKM_SLH_DSA => ParamShape::SignContext,
            _ => ParamShape::Empty,
        }
    }

    fn sign_init(
        &self,
        mechanism: &Mechanism,
        key: &Object,
        _ed25519: Option<Arc<dyn Ed25519Signer>>,
    ) -> Result<Box<dyn SignOperation>> {
        let options = SignOptions::from_param(&mechanism.param)?;
        check_key(key, CKO_PRIVATE_KEY, CKK_SLH_DSA, CKA_SIGN, CKM_SLH_DSA)?;
        let set = ParamSet::from_ck(key.ulong(CKA_PARAMETER_SET)?)?;
        let private_key = key_value(key)?;
        let deterministic = options.hedge == CKH_DETERMINISTIC_REQUIRED;
        let context = options.context;
        Ok(WholeMessageSigner::boxed(set.signature_len(), move |m| {
            set.sign(&private_key, m, &context, deterministic)
        }))
    }

    fn verify_init(&self, mechanism: &Mechanism, key: &Object) -> Result<Box<dyn VerifyOperation>> {
        context_verifier(
            mechanism,
            key,
            CKK_SLH_DSA,
            ParamSet::from_ck,
            ParamSet::verify,
        )
    }

    fn generate_key_pair(
        &self,
        _mechanism: &Mechanism,
        public: Attributes,
        private: Attributes,
    ) -> Result<(Attributes, Attributes)> {
        let (mut public, mut private) = factory::pair_templates(public, private, CKK_SLH_DSA)?;
        let set = ParamSet::from_ck(factory::pair_parameter_set(&public, &private)?)?;
        let (pk, sk) = set.keypair()?;
        public.set_ulong(CKA_PARAMETER_SET, set.ck());
        public.set(CKA_VALUE, pk);
        private.set_ulong(CKA_PARAMETER_SET, set.ck());
        private.set(CKA_VALUE, sk.to_vec());
        Ok(factory::generated_pair(
            CKM_SLH_DSA_KEY_PAIR_GEN,
            CKK_SLH_DSA,
            public,
            private,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_sets_sign_and_verify_and_keys_check() {
        for set in [ParamSet::Sha2_128f, ParamSet::Shake128f] {
            let (pk, sk) = set.keypair().unwrap();
            assert_eq!(
                (pk.len(), sk.len()),
                (set.public_key_len(), set.private_key_len())
            );
            assert_eq!(set.public_of_private(&sk).unwrap(), pk);
            let sig = set.sign(&sk, b"m", b"ctx", false).unwrap();
            assert_eq!(sig.len(), set.signature_len());
            set.verify(&pk, b"m", b"ctx", &sig).unwrap();
            assert!(set.verify(&pk, b"m", b"other", &sig).is_err());
            let d1 = set.sign(&sk, b"m", b"", true).unwrap();
            assert_eq!(d1, set.sign(&sk, b"m", b"", true).unwrap());
            let mut wrong = sk.to_vec();
            wrong[0] ^= 1;
            assert!(set.public_of_private(&wrong).is_err());
        }
        assert_eq!(
            ParamSet::from_ck(CKP_SLH_DSA_SHAKE_256F).unwrap(),
            ParamSet::Shake256f
        );
        assert!(ParamSet::from_ck(0).is_err() && ParamSet::from_ck(13).is_err());
        assert_eq!(ParamSet::Sha2_128s.signature_len(), 7856);
        assert_eq!(ParamSet::Shake256f.signature_len(), 49856);
    }
}

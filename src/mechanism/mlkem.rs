//! ML-KEM (FIPS 203) through RustCrypto `ml-kem`: key generation from the seed d‖z, the
//! expanded decapsulation key as `CKA_VALUE`, encapsulation and decapsulation.

#![allow(deprecated)] // The expanded key form is deprecated in `ml-kem`; PKCS#11 keeps it in CKA_VALUE.

use crate::error::{Error, Result};
use crate::mechanism::{check_key, Mechanism, MechanismFamily, MechanismInfo};
use crate::token::attributes::Attributes;
use crate::token::factory;
use crate::token::object::Object;
use cryptoki_sys::*;
use ml_kem::{Decapsulate, ExpandedKeyEncoding, KeyExport};
use zeroize::Zeroizing;

/// Length of the key-generation seed d‖z.
pub const SEED_LEN: usize = 64;
/// Length of the shared secret.
pub const SHARED_SECRET_LEN: usize = 32;

/// An ML-KEM parameter set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamSet {
    MlKem512,
    MlKem768,
    MlKem1024,
}

/// A parsed decapsulation key, kept with its object so each decapsulation skips the parsing.
pub enum DecapKey {
    MlKem512(Box<ml_kem::ml_kem_512::DecapsulationKey>),
    MlKem768(Box<ml_kem::ml_kem_768::DecapsulationKey>),
    MlKem1024(Box<ml_kem::ml_kem_1024::DecapsulationKey>),
}

/// A parsed encapsulation key.
pub enum EncapKey {
    MlKem512(Box<ml_kem::ml_kem_512::EncapsulationKey>),
    MlKem768(Box<ml_kem::ml_kem_768::EncapsulationKey>),
    MlKem1024(Box<ml_kem::ml_kem_1024::EncapsulationKey>),
}

/// Runs `$body` with `$m` naming the `ml-kem` module of the parameter set (its generic bound
/// is private to the crate, so the code is instantiated per set instead of written generically).
macro_rules! per_set {
    ($set:expr, |$m:ident| $body:expr) => {
        match $set {
            ParamSet::MlKem512 => {
                use ml_kem::ml_kem_512 as $m;
                $body
            }
            ParamSet::MlKem768 => {
                use ml_kem::ml_kem_768 as $m;
                $body
            }
            ParamSet::MlKem1024 => {
                use ml_kem::ml_kem_1024 as $m;
                $body
            }
        }
    };
}

/// Encapsulation with the given randomness m: (ciphertext, shared secret).
macro_rules! encap {
    ($key:expr, $m:expr) => {{
        let (ct, ss) = $key.encapsulate_deterministic(&(*$m).into());
        (
            ct.to_vec(),
            Zeroizing::new(<[u8; SHARED_SECRET_LEN]>::from(ss)),
        )
    }};
}

/// Decapsulation; a wrong length is refused before any work.
macro_rules! decap {
    ($key:expr, $ct:expr) => {{
        let ss = $key
            .decapsulate_slice($ct)
            .map_err(|_| Error::ENCRYPTED_DATA_LEN_RANGE)?;
        Ok(Zeroizing::new(<[u8; SHARED_SECRET_LEN]>::from(ss)))
    }};
}

impl ParamSet {
    pub const ALL: [ParamSet; 3] = [ParamSet::MlKem512, ParamSet::MlKem768, ParamSet::MlKem1024];

    /// From `CKA_PARAMETER_SET`.
    pub fn from_ck(value: CK_ULONG) -> Result<Self> {
        match value {
            CKP_ML_KEM_512 => Ok(ParamSet::MlKem512),
            CKP_ML_KEM_768 => Ok(ParamSet::MlKem768),
            CKP_ML_KEM_1024 => Ok(ParamSet::MlKem1024),
            _ => Err(Error(CKR_PARAMETER_SET_NOT_SUPPORTED)),
        }
    }

    pub fn ck(self) -> CK_ULONG {
        match self {
            ParamSet::MlKem512 => CKP_ML_KEM_512,
            ParamSet::MlKem768 => CKP_ML_KEM_768,
            ParamSet::MlKem1024 => CKP_ML_KEM_1024,
        }
    }

    /// (encapsulation key, decapsulation key, ciphertext) lengths.
    fn lengths(self) -> (usize, usize, usize) {
        match self {
            ParamSet::MlKem512 => (800, 1632, 768),
            ParamSet::MlKem768 => (1184, 2400, 1088),
            ParamSet::MlKem1024 => (1568, 3168, 1568),
        }
    }

    pub fn public_key_len(self) -> usize {
        self.lengths().0
    }

    pub fn private_key_len(self) -> usize {
        self.lengths().1
    }

    pub fn ciphertext_len(self) -> usize {
        self.lengths().2
    }

    pub fn by_public_key_len(len: usize) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.public_key_len() == len)
    }

    pub fn by_private_key_len(len: usize) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.private_key_len() == len)
    }

    /// FIPS 203 ML-KEM.KeyGen_internal(d, z): (encapsulation key, decapsulation key).
    pub fn keygen_from_seed(self, seed: &[u8; SEED_LEN]) -> (Vec<u8>, Zeroizing<Vec<u8>>) {
        per_set!(self, |m| {
            let dk = m::DecapsulationKey::from_seed((*seed).into());
            let expanded = Zeroizing::new(dk.to_expanded_bytes().to_vec());
            (dk.encapsulation_key().to_bytes().to_vec(), expanded)
        })
    }

    /// Parses and validates an expanded decapsulation key (FIPS 203 §7.3 hash check).
    pub fn decap_key(self, private_key: &[u8]) -> Result<DecapKey> {
        let invalid = |_| Error::ATTRIBUTE_VALUE_INVALID;
        Ok(per_set!(self, |m| {
            let array = private_key.try_into().map_err(invalid)?;
            let key = m::DecapsulationKey::from_expanded_bytes(array)
                .map_err(|_| Error::ATTRIBUTE_VALUE_INVALID)?;
            DecapKey::from(Box::new(key))
        }))
    }

    /// Parses and validates an encapsulation key (FIPS 203 §7.2 modulus check).
    pub fn encap_key(self, public_key: &[u8]) -> Result<EncapKey> {
        let invalid = |_| Error::ATTRIBUTE_VALUE_INVALID;
        Ok(per_set!(self, |m| {
            let array = public_key.try_into().map_err(invalid)?;
            let key =
                m::EncapsulationKey::new(array).map_err(|_| Error::ATTRIBUTE_VALUE_INVALID)?;
            EncapKey::from(Box::new(key))
        }))
    }
}

macro_rules! from_boxed {
    ($enum:ident, $($variant:ident: $ty:ty),*) => {
        $(impl From<Box<$ty>> for $enum {
            fn from(key: Box<$ty>) -> Self {
                $enum::$variant(key)
            }
        })*
    };
}

from_boxed!(DecapKey,
    MlKem512: ml_kem::ml_kem_512::DecapsulationKey,
    MlKem768: ml_kem::ml_kem_768::DecapsulationKey,
    MlKem1024: ml_kem::ml_kem_1024::DecapsulationKey);
from_boxed!(EncapKey,
    MlKem512: ml_kem::ml_kem_512::EncapsulationKey,
    MlKem768: ml_kem::ml_kem_768::EncapsulationKey,
    MlKem1024: ml_kem::ml_kem_1024::EncapsulationKey);

impl EncapKey {
    /// ML-KEM.Encaps with fresh randomness: (ciphertext, shared secret).
    pub fn encapsulate(&self) -> Result<(Vec<u8>, Zeroizing<[u8; SHARED_SECRET_LEN]>)> {
        let m = Zeroizing::new(crate::random::random_bytes::<32>()?);
        Ok(self.encapsulate_with(&m))
    }

    /// ML-KEM.Encaps_internal with the given randomness m.
    pub fn encapsulate_with(&self, m: &[u8; 32]) -> (Vec<u8>, Zeroizing<[u8; SHARED_SECRET_LEN]>) {
        match self {
            EncapKey::MlKem512(k) => encap!(k, m),
            EncapKey::MlKem768(k) => encap!(k, m),
            EncapKey::MlKem1024(k) => encap!(k, m),
        }
    }
}

impl DecapKey {
    /// ML-KEM.Decaps; a ciphertext of the wrong length is `CKR_ENCRYPTED_DATA_LEN_RANGE`, a
    /// wrong one of the right length gives FIPS 203's implicit-rejection secret.
    pub fn decapsulate(&self, ciphertext: &[u8]) -> Result<Zeroizing<[u8; SHARED_SECRET_LEN]>> {
        match self {
            DecapKey::MlKem512(k) => decap!(k, ciphertext),
            DecapKey::MlKem768(k) => decap!(k, ciphertext),
            DecapKey::MlKem1024(k) => decap!(k, ciphertext),
        }
    }
}

/// The ML-KEM family: `CKM_ML_KEM_KEY_PAIR_GEN` and `CKM_ML_KEM`.
pub struct MlKem;

impl MechanismFamily for MlKem {
    fn mechanisms(&self) -> &'static [MechanismInfo] {
        const MECHANISMS: &[MechanismInfo] = &[
            MechanismInfo::new(
                CKM_ML_KEM_KEY_PAIR_GEN,
                CKP_ML_KEM_512,
                CKP_ML_KEM_1024,
                CKF_GENERATE_KEY_PAIR,
            ),
            MechanismInfo::new(
                CKM_ML_KEM,
                CKP_ML_KEM_512,
                CKP_ML_KEM_1024,
                CKF_ENCAPSULATE | CKF_DECAPSULATE,
            ),
        ];
        MECHANISMS
    }

    fn ciphertext_len(&self, mechanism: &Mechanism, key: &Object) -> Result<usize> {
        mechanism.expect_no_param()?;
        check_key(key, CKO_PUBLIC_KEY, CKK_ML_KEM, CKA_ENCAPSULATE, CKM_ML_KEM)?;
        Ok(ParamSet::from_ck(key.ulong(CKA_PARAMETER_SET)?)?.ciphertext_len())
    }

    fn encapsulate(
        &self,
        mechanism: &Mechanism,
        key: &Object,
    ) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>)> {
        mechanism.expect_no_param()?;
        check_key(key, CKO_PUBLIC_KEY, CKK_ML_KEM, CKA_ENCAPSULATE, CKM_ML_KEM)?;
        let (ciphertext, secret) = key.encap_key()?.encapsulate()?;
        Ok((ciphertext, Zeroizing::new(secret.to_vec())))
    }

    fn decapsulate(
        &self,
        mechanism: &Mechanism,
        key: &Object,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        mechanism.expect_no_param()?;
        check_key(
            key,
            CKO_PRIVATE_KEY,
            CKK_ML_KEM,
            CKA_DECAPSULATE,
            CKM_ML_KEM,
        )?;
        let secret = key.decap_key()?.decapsulate(ciphertext)?;
        Ok(Zeroizing::new(secret.to_vec()))
    }

    fn generate_key_pair(
        &self,
        _mechanism: &Mechanism,
        public: Attributes,
        private: Attributes,
    ) -> Result<(Attributes, Attributes)> {
        let (mut public, mut private) = factory::pair_templates(public, private, CKK_ML_KEM)?;
        let set = ParamSet::from_ck(factory::pair_parameter_set(&public, &private)?)?;
        let seed = Zeroizing::new(crate::random::random_bytes::<SEED_LEN>()?);
        let (ek, dk) = set.keygen_from_seed(&seed);
        public.set_ulong(CKA_PARAMETER_SET, set.ck());
        public.set(CKA_VALUE, ek);
        private.set_ulong(CKA_PARAMETER_SET, set.ck());
        private.set(CKA_VALUE, dk.to_vec());
        private.set(CKA_SEED, seed.to_vec());
        Ok(factory::generated_pair(
            CKM_ML_KEM_KEY_PAIR_GEN,
            CKK_ML_KEM,
            public,
            private,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_keys_encapsulate_and_decapsulate() {
        for set in ParamSet::ALL {
            let (ek, dk) = set.keygen_from_seed(&[3u8; SEED_LEN]);
            assert_eq!(
                (ek.len(), dk.len()),
                (set.public_key_len(), set.private_key_len())
            );
            let (ct, ss) = set.encap_key(&ek).unwrap().encapsulate().unwrap();
            assert_eq!(ct.len(), set.ciphertext_len());
            let decap = set.decap_key(&dk).unwrap();
            assert_eq!(*decap.decapsulate(&ct).unwrap(), *ss);
            let mut bad = ct.clone();
            bad[5] ^= 1;
            assert_ne!(*decap.decapsulate(&bad).unwrap(), *ss);
            assert_eq!(
                decap.decapsulate(&ct[1..]).map(|_| ()),
                Err(Error::ENCRYPTED_DATA_LEN_RANGE)
            );
            let mut tampered = dk.to_vec();
            tampered[set.private_key_len() - 40] ^= 1;
            assert!(set.decap_key(&tampered).is_err());
        }
    }
}

#[cfg(test)]
mod acvp {
    use super::*;

    /// Encapsulation with ACVP's fixed randomness m reproduces NIST's ciphertext and secret
    /// (the module's C_EncapsulateKey draws m itself, so this is checked here).
    #[test]
    fn encapsulation_matches_nist_vectors() {
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/mlkem_acvp.json")).unwrap();
        let hex = |v: &serde_json::Value| hex::decode(v.as_str().unwrap()).unwrap();
        for case in vectors["encaps"].as_array().unwrap() {
            let set = match case["parameter_set"].as_str().unwrap() {
                "ML-KEM-512" => ParamSet::MlKem512,
                "ML-KEM-768" => ParamSet::MlKem768,
                _ => ParamSet::MlKem1024,
            };
            let m: [u8; 32] = hex(&case["m"]).try_into().unwrap();
            let (ct, ss) = set
                .encap_key(&hex(&case["ek"]))
                .unwrap()
                .encapsulate_with(&m);
            assert_eq!(ct, hex(&case["c"]));
            assert_eq!(ss.to_vec(), hex(&case["k"]));
        }
    }
}

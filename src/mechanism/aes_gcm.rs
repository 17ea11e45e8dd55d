//! AES-GCM on the embedded token (`CKM_AES_GCM`, 96-bit IV, 128-bit tag) and AES key
//! generation. Multi-part calls collect the input and produce everything at the final call:
//! decryption must check the tag before it releases any plaintext.

use crate::error::{Error, Result};
use crate::mechanism::{check_key, Mechanism, MechanismFamily, MechanismInfo, Param, ParamShape};
use crate::token::attributes::Attributes;
use crate::token::factory;
use crate::token::object::Object;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm};
use cryptoki_sys::*;
use zeroize::Zeroizing;

pub const TAG_LEN: usize = 16;
pub const IV_LEN: usize = 12;

type Aes192Gcm = AesGcm<aes_gcm::aes::Aes192, aes_gcm::aead::consts::U12>;

/// The AES family: `CKM_AES_KEY_GEN` and `CKM_AES_GCM`, classical. Key sizes in bytes.
pub struct Aes;

impl MechanismFamily for Aes {
    fn mechanisms(&self) -> &'static [MechanismInfo] {
        const MECHANISMS: &[MechanismInfo] = &[
            MechanismInfo::new(CKM_AES_KEY_GEN, 16, 32, CKF_GENERATE),
            MechanismInfo::new(CKM_AES_GCM, 16, 32, CKF_ENCRYPT | CKF_DECRYPT),
        ];
        MECHANISMS
    }

    fn param_shape(&self, mechanism: CK_MECHANISM_TYPE) -> ParamShape {
        match mechanism {
            CKM_AES_GCM => ParamShape::Gcm,
            _ => ParamShape::Empty,
        }
    }

    fn classical(&self) -> bool {
        true
    }

    fn cipher_init(
        &self,
        mechanism: &Mechanism,
        key: &Object,
        decrypt: bool,
    ) -> Result<GcmOperation> {
        let Param::Gcm(params) = &mechanism.param else {
            return Err(Error::MECHANISM_PARAM_INVALID);
        };
        let usage = if decrypt { CKA_DECRYPT } else { CKA_ENCRYPT };
        check_key(key, CKO_SECRET_KEY, CKK_AES, usage, CKM_AES_GCM)?;
        let value = key.attrs.get(CKA_VALUE).ok_or(Error::USER_NOT_LOGGED_IN)?;
        GcmOperation::new(value, params.clone(), decrypt)
    }

    /// `CKA_VALUE_LEN` 16, 24 or 32.
    fn generate_key(&self, _mechanism: &Mechanism, template: Attributes) -> Result<Attributes> {
        let mut key = factory::key_template(template, CKO_SECRET_KEY, CKK_AES)?;
        if key.contains(CKA_VALUE) {
            return Err(Error::TEMPLATE_INCONSISTENT);
        }
        let len = key
            .ulong(CKA_VALUE_LEN)?
            .ok_or(Error::TEMPLATE_INCOMPLETE)?;
        if !matches!(len, 16 | 24 | 32) {
            return Err(Error::ATTRIBUTE_VALUE_INVALID);
        }
        let mut value = Zeroizing::new(vec![0u8; len as usize]);
        getrandom::getrandom(&mut value).map_err(|_| Error::DEVICE)?;
        key.set(CKA_VALUE, value.to_vec());
        Ok(factory::generated_key(CKM_AES_KEY_GEN, CKK_AES, key))
    }
}

/// The decoded `CK_GCM_PARAMS`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct GcmParams {
    pub iv: Vec<u8>,
    pub aad: Vec<u8>,
    pub tag_bits: u64,
}

impl GcmParams {
    /// This token does what every GCM user needs: a 96-bit IV and a 128-bit tag.
    pub fn check(&self) -> Result<()> {
        if self.iv.len() != IV_LEN || self.tag_bits != (TAG_LEN * 8) as u64 {
            return Err(Error::MECHANISM_PARAM_INVALID);
        }
        Ok(())
    }
}

fn run(key: &[u8], params: &GcmParams, data: &[u8], decrypt: bool) -> Result<Vec<u8>> {
    let nonce = aes_gcm::Nonce::from_slice(&params.iv);
    let payload = Payload {
        msg: data,
        aad: &params.aad,
    };
    macro_rules! with {
        ($cipher:ty) => {{
            let cipher = <$cipher>::new_from_slice(key).map_err(|_| Error::GENERAL)?;
            if decrypt {
                cipher.decrypt(nonce, payload)
            } else {
                cipher.encrypt(nonce, payload)
            }
        }};
    }
    let out = match key.len() {
        16 => with!(Aes128Gcm),
        24 => with!(Aes192Gcm),
        32 => with!(Aes256Gcm),
        _ => return Err(Error::GENERAL),
    };
    out.map_err(|_| Error(CKR_ENCRYPTED_DATA_INVALID))
}

/// A GCM encryption or decryption in progress.
pub struct GcmOperation {
    key: Zeroizing<Vec<u8>>,
    params: GcmParams,
    decrypt: bool,
    input: Zeroizing<Vec<u8>>,
    started: bool,
}

impl GcmOperation {
    pub fn new(key: &[u8], params: GcmParams, decrypt: bool) -> Result<Self> {
        params.check()?;
        Ok(GcmOperation {
            key: Zeroizing::new(key.to_vec()),
            params,
            decrypt,
            input: Zeroizing::new(Vec::new()),
            started: false,
        })
    }

    /// Output length for `input_len` bytes of input in all.
    pub fn output_len(&self, input_len: usize) -> Result<usize> {
        if self.decrypt {
            input_len
                .checked_sub(TAG_LEN)
                .ok_or(Error(CKR_ENCRYPTED_DATA_LEN_RANGE))
        } else {
            Ok(input_len + TAG_LEN)
        }
    }

    /// Length of what the final call will produce.
    pub fn final_len(&self) -> Result<usize> {
        self.output_len(self.input.len())
    }

    /// The whole input at once (`C_Encrypt` / `C_Decrypt`).
    pub fn one_shot(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        if self.started {
            return Err(Error::OPERATION_ACTIVE);
        }
        self.output_len(data.len())?;
        run(&self.key, &self.params, data, self.decrypt)
    }

    /// A part (`C_xUpdate`): kept until the final call, which answers everything.
    pub fn update(&mut self, data: &[u8]) -> Result<()> {
        self.started = true;
        let too_long = if self.decrypt {
            Error::ENCRYPTED_DATA_LEN_RANGE
        } else {
            Error::DATA_LEN_RANGE
        };
        super::collect(&mut self.input, data, too_long)
    }

    pub fn finish(&mut self) -> Result<Vec<u8>> {
        self.final_len()?;
        let input = std::mem::take(&mut self.input);
        run(&self.key, &self.params, &input, self.decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_each_key_size_and_tag_check() {
        for len in [16, 24, 32] {
            let key = vec![7u8; len];
            let params = GcmParams {
                iv: vec![1; 12],
                aad: b"aad".to_vec(),
                tag_bits: 128,
            };
            let mut enc = GcmOperation::new(&key, params.clone(), false).unwrap();
            let sealed = enc.one_shot(b"plain").unwrap();
            assert_eq!(sealed.len(), 5 + 16);
            let mut dec = GcmOperation::new(&key, params.clone(), true).unwrap();
            assert_eq!(dec.one_shot(&sealed).unwrap(), b"plain");
            let mut bad = sealed.clone();
            bad[0] ^= 1;
            let mut dec = GcmOperation::new(&key, params, true).unwrap();
            assert!(dec.one_shot(&bad).is_err());
        }
    }
}

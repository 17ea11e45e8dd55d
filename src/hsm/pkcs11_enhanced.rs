//! [`Pkcs11HsmEnhanced`]: the guide's HSM backend over one slot of a PKCS#11 library.

use super::{HsmBackend, HsmError, HsmResult, KeyType};
use crate::consts::{
    CKK_B4AE_DILITHIUM5, CKK_B4AE_HYBRID, CKM_B4AE_DILITHIUM5, CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN,
    CKM_B4AE_HYBRID, CKM_B4AE_HYBRID_KEY_PAIR_GEN,
};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::dsa::{HedgeType, SignAdditionalContext};
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{
    Attribute, AttributeType, KeyType as CkKeyType, MlDsaParameterSetType, ObjectClass,
    ObjectHandle, ParameterSetType,
};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use cryptoki_sys::CK_KEY_TYPE;
use parking_lot::Mutex;
use std::path::Path;

/// Which slot: its number (`0`, as the guide writes it), or its token's label or serial number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotSelector {
    /// A slot ID; if no slot has that ID, the n-th slot with a token.
    Number(u64),
    /// A token label or serial number (trailing blanks ignored).
    Name(String),
}

macro_rules! slot_numbers {
    ($($t:ty),*) => {$(
        impl From<$t> for SlotSelector {
            fn from(n: $t) -> Self {
                SlotSelector::Number(n as u64)
            }
        }
    )*};
}
slot_numbers!(i32, u32, u64, usize);

impl From<&str> for SlotSelector {
    fn from(name: &str) -> Self {
        SlotSelector::Name(name.to_owned())
    }
}

impl From<String> for SlotSelector {
    fn from(name: String) -> Self {
        SlotSelector::Name(name)
    }
}

/// The signature algorithm of the key pairs [`Pkcs11HsmEnhanced::generate_keypair`] makes.
/// Signing and verifying follow each key's own type, whatever this says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Algorithm {
    /// ML-DSA-87 (FIPS 204), `CKM_ML_DSA`, hedged: the default.
    #[default]
    MlDsa87,
    /// Round-3 Dilithium5, the module's `CKM_B4AE_DILITHIUM5`.
    Dilithium5,
    /// The B4AE hybrid (Ed25519 + ML-DSA-87), the module's `CKM_B4AE_HYBRID`.
    Hybrid,
}

/// The guide's PKCS#11 HSM backend: one slot of a library, one logged-in session (kept, and
/// opened again if the library loses it).
pub struct Pkcs11HsmEnhanced {
    pkcs11: Pkcs11,
    slot: Slot,
    pin: Option<AuthPin>,
    algorithm: Algorithm,
    session: Mutex<Option<Session>>,
}

impl Pkcs11HsmEnhanced {
    /// Loads `library`, initialises it (thread-safe; a library this process initialised already
    /// is taken as it is) and selects `slot` (a number, as in the guide, or a token label or
    /// serial). With a `pin` every operation runs logged in as the user.
    pub fn new(
        library: impl AsRef<Path>,
        slot: impl Into<SlotSelector>,
        pin: Option<impl Into<String>>,
    ) -> HsmResult<Self> {
        let pkcs11 = Pkcs11::new(library.as_ref())?;
        match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(e.into()),
        }
        let slot = Self::find_slot(&pkcs11, &slot.into())?;
        let hsm = Pkcs11HsmEnhanced {
            pkcs11,
            slot,
            pin: pin.map(|p| AuthPin::new(p.into().into())),
            algorithm: Algorithm::default(),
            session: Mutex::new(None),
        };
        hsm.with_session(|_| Ok(()))?;
        Ok(hsm)
    }

    /// The same backend making `algorithm` key pairs.
    pub fn with_algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn slot(&self) -> Slot {
        self.slot
    }

    fn find_slot(pkcs11: &Pkcs11, wanted: &SlotSelector) -> HsmResult<Slot> {
        let with_token = pkcs11.get_slots_with_token()?;
        match wanted {
            SlotSelector::Number(n) => with_token
                .iter()
                .find(|s| s.id() == *n)
                .or_else(|| with_token.get(usize::try_from(*n).ok()?))
                .copied()
                .ok_or_else(|| HsmError::NoSuchSlot(n.to_string())),
            SlotSelector::Name(name) => {
                for slot in with_token {
                    let info = pkcs11.get_token_info(slot)?;
                    if info.label().trim_end() == name || info.serial_number().trim_end() == name {
                        return Ok(slot);
                    }
                }
                Err(HsmError::NoSuchSlot(name.clone()))
            }
        }
    }

    /// Runs `f` in the backend's session, opened (and logged in) on first use and again after
    /// the library closed it (a token removed and back, `C_CloseAllSessions` elsewhere).
    fn with_session<T>(&self, f: impl Fn(&Session) -> HsmResult<T>) -> HsmResult<T> {
        let mut session = self.session.lock();
        if let Some(open) = session.as_ref() {
            match f(open) {
                Err(e) if session_lost(&e) => *session = None,
                result => return result,
            }
        }
        let open = self.pkcs11.open_rw_session(self.slot)?;
        if let Some(pin) = &self.pin {
            match open.login(UserType::User, Some(pin)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let result = f(&open);
        *session = Some(open);
        result
    }

    /// The one object of `class` labelled `key_id`.
    fn find(session: &Session, class: ObjectClass, key_id: &str) -> HsmResult<ObjectHandle> {
        let template = [
            Attribute::Class(class),
            Attribute::Label(key_id.as_bytes().to_vec()),
        ];
        session
            .find_objects(&template)?
            .into_iter()
            .next()
            .ok_or_else(|| HsmError::KeyNotFound(key_id.to_owned()))
    }

    /// `key_id` as a label no object of the token has yet: labels name keys here.
    fn unused_label(session: &Session, key_id: &str) -> HsmResult<Attribute> {
        let label = Attribute::Label(key_id.as_bytes().to_vec());
        if session
            .find_objects(std::slice::from_ref(&label))?
            .is_empty()
        {
            Ok(label)
        } else {
            Err(HsmError::KeyExists(key_id.to_owned()))
        }
    }

    /// The signature mechanism for a key of `key_type`.
    fn signing_mechanism(key_type: CK_KEY_TYPE) -> Mechanism<'static> {
        match key_type {
            CKK_B4AE_DILITHIUM5 => vendor(CKM_B4AE_DILITHIUM5),
            CKK_B4AE_HYBRID => vendor(CKM_B4AE_HYBRID),
            _ => Mechanism::MlDsa(SignAdditionalContext::new(HedgeType::Preferred, None)),
        }
    }

    fn key_type(session: &Session, key: ObjectHandle) -> HsmResult<CK_KEY_TYPE> {
        match session
            .get_attributes(key, &[AttributeType::KeyType])?
            .pop()
        {
            Some(Attribute::KeyType(t)) => Ok(CK_KEY_TYPE::from(t)),
            _ => Err(HsmError::KeyNotFound("(its key type)".into())),
        }
    }
}

/// A vendor mechanism of this module, without a parameter.
fn vendor(mechanism: cryptoki_sys::CK_MECHANISM_TYPE) -> Mechanism<'static> {
    let kind = MechanismType::new_vendor_defined(mechanism).expect("a vendor-defined number");
    Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(kind, None))
}

/// Whether an error means the session is gone (to be opened again), not that the call failed.
fn session_lost(e: &HsmError) -> bool {
    matches!(
        e.rv(),
        Some(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::UserNotLoggedIn
        )
    )
}

impl HsmBackend for Pkcs11HsmEnhanced {
    fn generate_keypair(&self, key_id: &str) -> HsmResult<Vec<u8>> {
        self.with_session(|session| {
            let label = Self::unused_label(session, key_id)?;
            let mut public = vec![
                Attribute::Token(true),
                Attribute::Verify(true),
                label.clone(),
            ];
            let private = [
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                label,
            ];
            let mechanism = match self.algorithm {
                Algorithm::MlDsa87 => {
                    public.push(Attribute::ParameterSet(ParameterSetType::from(
                        MlDsaParameterSetType::ML_DSA_87,
                    )));
                    Mechanism::MlDsaKeyPairGen
                }
                Algorithm::Dilithium5 => vendor(CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN),
                Algorithm::Hybrid => vendor(CKM_B4AE_HYBRID_KEY_PAIR_GEN),
            };
            let (public, _) = session.generate_key_pair(&mechanism, &public, &private)?;
            match session
                .get_attributes(public, &[AttributeType::Value])?
                .pop()
            {
                Some(Attribute::Value(value)) => Ok(value),
                _ => Err(HsmError::KeyNotFound(key_id.to_owned())),
            }
        })
    }

    fn sign(&self, key_id: &str, data: &[u8]) -> HsmResult<Vec<u8>> {
        self.with_session(|session| {
            let key = Self::find(session, ObjectClass::PRIVATE_KEY, key_id)?;
            let mechanism = Self::signing_mechanism(Self::key_type(session, key)?);
            Ok(session.sign(&mechanism, key, data)?)
        })
    }

    fn verify(&self, key_id: &str, data: &[u8], signature: &[u8]) -> HsmResult<bool> {
        self.with_session(|session| {
            let key = Self::find(session, ObjectClass::PUBLIC_KEY, key_id)?;
            let mechanism = Self::signing_mechanism(Self::key_type(session, key)?);
            match session.verify(&mechanism, key, data, signature) {
                Ok(()) => Ok(true),
                Err(CkError::Pkcs11(RvError::SignatureInvalid | RvError::SignatureLenRange, _)) => {
                    Ok(false)
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    fn store_key(&self, key_id: &str, key_type: KeyType, key_data: &[u8]) -> HsmResult<()> {
        if key_type == KeyType::AES && ![16, 24, 32].contains(&key_data.len()) {
            return Err(HsmError::InvalidKey(format!(
                "an AES key has 16, 24 or 32 bytes, not {}",
                key_data.len()
            )));
        }
        self.with_session(|session| {
            let label = Self::unused_label(session, key_id)?;
            let mut template = vec![
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(CkKeyType::try_from(key_type.ck())?),
                label,
                Attribute::Value(key_data.to_vec()),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
            ];
            if key_type == KeyType::AES {
                template.extend([Attribute::Encrypt(true), Attribute::Decrypt(true)]);
            }
            session.create_object(&template)?;
            Ok(())
        })
    }

    fn is_available(&self) -> bool {
        self.pkcs11.get_token_info(self.slot).is_ok()
            && self.with_session(|s| Ok(s.get_session_info()?)).is_ok()
    }
}

#[cfg(feature = "b4ae")]
mod b4ae_backend {
    //! B4AE users plug this backend in as `Box<dyn b4ae::hsm::HsmBackend>`.

    use super::Pkcs11HsmEnhanced;
    use b4ae::error::{B4aeError, B4aeResult};

    fn protocol(e: super::HsmError) -> B4aeError {
        B4aeError::ProtocolError(e.to_string())
    }

    impl b4ae::hsm::HsmBackend for Pkcs11HsmEnhanced {
        fn generate_keypair(&self, key_id: &str) -> B4aeResult<Vec<u8>> {
            super::HsmBackend::generate_keypair(self, key_id).map_err(protocol)
        }

        fn sign(&self, key_id: &str, data: &[u8]) -> B4aeResult<Vec<u8>> {
            super::HsmBackend::sign(self, key_id, data).map_err(protocol)
        }

        fn verify(&self, key_id: &str, data: &[u8], signature: &[u8]) -> B4aeResult<bool> {
            super::HsmBackend::verify(self, key_id, data, signature).map_err(protocol)
        }

        fn is_available(&self) -> bool {
            super::HsmBackend::is_available(self)
        }
    }
}

//! The storage-key hierarchy inside the HSM: MIK (root) → DMK → STK per storage epoch. Every key
//! is an AES-256 (or HKDF) token key made in the HSM, `CKA_SENSITIVE=TRUE`,
//! `CKA_EXTRACTABLE=FALSE`; derivation happens in the HSM (`CKM_HKDF_DERIVE` where offered, else
//! `CKM_AES_ECB_ENCRYPT_DATA`), so no storage key ever exists outside it.

use crate::backend::pkcs11::library::HsmLibrary;
use crate::error::{Error, Result};
use crate::mechanism::Mechanism;
use crate::token::attributes::Attributes;
use cryptoki_sys::*;

pub const MIK_LABEL: &str = "B4AE-v1-MIK";
pub const DMK_LABEL: &str = "B4AE-v1-DMK";
pub const STK_LABEL_PREFIX: &str = "B4AE-v1-STK-";
/// `CKA_ID` shared by every storage key, to find them all at once.
pub const STK_ID: &[u8] = b"B4AE-v1-STK";
const MIK_TO_DMK: &[u8] = b"B4AE-v1-MIK-to-DMK";
const DMK_TO_STK: &[u8] = b"B4AE-v1-DMK-to-STK";

/// A storage key of one epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stk {
    pub epoch: u32,
    pub handle: CK_OBJECT_HANDLE,
}

/// The derivation input: the label (and epoch), zero-padded to 32 bytes, since
/// AES-ECB-encrypt-data needs whole blocks and yields a key as long as its input.
fn info(label: &[u8], epoch: Option<u32>) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..label.len()].copy_from_slice(label);
    if let Some(epoch) = epoch {
        out[label.len()..label.len() + 4].copy_from_slice(&epoch.to_be_bytes());
    }
    out
}

/// The template of a hierarchy key.
fn protected_key_template(
    label: &str,
    key_type: CK_KEY_TYPE,
    derive: bool,
    crypt: bool,
) -> Attributes {
    let mut t = Attributes::new();
    t.set_ulong(CKA_CLASS, CKO_SECRET_KEY);
    t.set_ulong(CKA_KEY_TYPE, key_type);
    t.set_ulong(CKA_VALUE_LEN, 32);
    t.set(CKA_LABEL, label.as_bytes().to_vec());
    t.set_bool(CKA_TOKEN, true);
    t.set_bool(CKA_PRIVATE, true);
    t.set_bool(CKA_SENSITIVE, true);
    t.set_bool(CKA_EXTRACTABLE, false);
    t.set_bool(CKA_MODIFIABLE, false);
    t.set_bool(CKA_DERIVE, derive);
    t.set_bool(CKA_ENCRYPT, crypt);
    t.set_bool(CKA_DECRYPT, crypt);
    t.set_bool(CKA_WRAP, false);
    t.set_bool(CKA_UNWRAP, false);
    t
}

fn find_one(
    lib: &HsmLibrary,
    session: CK_SESSION_HANDLE,
    label: &str,
) -> Result<Option<CK_OBJECT_HANDLE>> {
    let mut t = Attributes::new();
    t.set_ulong(CKA_CLASS, CKO_SECRET_KEY);
    t.set(CKA_LABEL, label.as_bytes().to_vec());
    Ok(lib.find(session, &t)?.first().copied())
}

/// The storage keys present, oldest epoch first.
pub fn storage_keys(lib: &HsmLibrary, session: CK_SESSION_HANDLE) -> Result<Vec<Stk>> {
    let mut t = Attributes::new();
    t.set_ulong(CKA_CLASS, CKO_SECRET_KEY);
    t.set(CKA_ID, STK_ID.to_vec());
    let mut keys = Vec::new();
    for handle in lib.find(session, &t)? {
        let label = lib
            .attribute(session, handle, CKA_LABEL)?
            .unwrap_or_default();
        let epoch = std::str::from_utf8(&label)
            .ok()
            .and_then(|l| l.strip_prefix(STK_LABEL_PREFIX))
            .and_then(|e| e.parse().ok());
        if let Some(epoch) = epoch {
            keys.push(Stk { epoch, handle });
        }
    }
    keys.sort_by_key(|k| k.epoch);
    Ok(keys)
}

/// The DMK, made (with the MIK) on first use.
fn device_key(
    lib: &HsmLibrary,
    session: CK_SESSION_HANDLE,
    hkdf: bool,
) -> Result<CK_OBJECT_HANDLE> {
    if let Some(dmk) = find_one(lib, session, DMK_LABEL)? {
        return Ok(dmk);
    }
    let root_type = if hkdf { CKK_GENERIC_SECRET } else { CKK_AES };
    let mik = match find_one(lib, session, MIK_LABEL)? {
        Some(mik) => mik,
        None => {
            let generator = if hkdf {
                CKM_GENERIC_SECRET_KEY_GEN
            } else {
                CKM_AES_KEY_GEN
            };
            // The root cannot be deleted by an application that lists the token's keys (a
            // Java KeyStore, `keytool -delete`): every record depends on it. The keys below
            // it are derived (SoftHSM2 refuses CKA_DESTROYABLE when deriving), and a deleted
            // one is derived again.
            let mut template = protected_key_template(MIK_LABEL, root_type, true, false);
            template.set_bool(CKA_DESTROYABLE, false);
            tracing::info!("creating the master key {MIK_LABEL} in the HSM");
            lib.generate_key(session, &Mechanism::plain(generator), &template)?
        }
    };
    let template = protected_key_template(DMK_LABEL, root_type, true, false);
    lib.derive(session, mik, hkdf, &info(MIK_TO_DMK, None), &template)
}

/// Derives the storage key of `epoch` (a token object) from the DMK.
pub fn derive_stk(
    lib: &HsmLibrary,
    session: CK_SESSION_HANDLE,
    hkdf: bool,
    epoch: u32,
) -> Result<Stk> {
    let dmk = device_key(lib, session, hkdf)?;
    derive_from(lib, session, hkdf, dmk, epoch)
}

/// Derives a storage key that was deleted while records still need it (derivation is
/// deterministic: the same MIK and epoch give the same DMK and key). Never makes a new MIK.
pub fn restore_stk(
    lib: &HsmLibrary,
    session: CK_SESSION_HANDLE,
    hkdf: bool,
    epoch: u32,
) -> Result<Option<Stk>> {
    if find_one(lib, session, MIK_LABEL)?.is_none() {
        return Ok(None);
    }
    tracing::warn!("storage key epoch {epoch} was deleted from the HSM; deriving it again");
    let dmk = device_key(lib, session, hkdf)?;
    derive_from(lib, session, hkdf, dmk, epoch).map(Some)
}

fn derive_from(
    lib: &HsmLibrary,
    session: CK_SESSION_HANDLE,
    hkdf: bool,
    dmk: CK_OBJECT_HANDLE,
    epoch: u32,
) -> Result<Stk> {
    let mut template =
        protected_key_template(&format!("{STK_LABEL_PREFIX}{epoch}"), CKK_AES, false, true);
    template.set(CKA_ID, STK_ID.to_vec());
    let handle = lib.derive(
        session,
        dmk,
        hkdf,
        &info(DMK_TO_STK, Some(epoch)),
        &template,
    )?;
    tracing::info!("storage key epoch {epoch} derived in the HSM");
    Ok(Stk { epoch, handle })
}

/// The newest storage key, made on first use.
pub fn current_stk(lib: &HsmLibrary, session: CK_SESSION_HANDLE, hkdf: bool) -> Result<Stk> {
    match storage_keys(lib, session)?.last() {
        Some(stk) => Ok(*stk),
        None => derive_stk(lib, session, hkdf, 1).map_err(|e| {
            tracing::error!("cannot make the storage key in the HSM (is the user logged in, and does the HSM offer CKM_AES_ECB_ENCRYPT_DATA or CKM_HKDF_DERIVE?): {e}");
            if e == Error::USER_NOT_LOGGED_IN { e } else { Error::DEVICE }
        }),
    }
}

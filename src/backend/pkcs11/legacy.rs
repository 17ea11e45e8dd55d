//! The storage keys of release 1 (MIK → DMK → STK-n, each derived from the one above with a
//! fixed input), kept only to migrate tokens made by that release: their records are opened
//! once, sealed again under a random storage key ([`super::hierarchy`]), and the derived keys
//! destroyed. Release 1 made the MIK non-destroyable; it stays, and can derive nothing that
//! still seals a record (docs/security.md).

use crate::backend::pkcs11::library::HsmLibrary;
use crate::error::Result;
use crate::token::attributes::Attributes;
use cryptoki_sys::*;

pub const MIK_LABEL: &str = "B4AE-v1-MIK";
pub const DMK_LABEL: &str = "B4AE-v1-DMK";
pub const STK_LABEL_PREFIX: &str = "B4AE-v1-STK-";
const STK_ID: &[u8] = b"B4AE-v1-STK";
const MIK_TO_DMK: &[u8] = b"B4AE-v1-MIK-to-DMK";
const DMK_TO_STK: &[u8] = b"B4AE-v1-DMK-to-STK";

/// Whether `label` names a release-1 storage key.
pub fn is_legacy_key_label(label: &[u8]) -> bool {
    label == MIK_LABEL.as_bytes()
        || label == DMK_LABEL.as_bytes()
        || label.starts_with(STK_LABEL_PREFIX.as_bytes())
}

fn info(label: &[u8], epoch: Option<u32>) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..label.len()].copy_from_slice(label);
    if let Some(epoch) = epoch {
        out[label.len()..label.len() + 4].copy_from_slice(&epoch.to_be_bytes());
    }
    out
}

fn find_label(
    lib: &HsmLibrary,
    session: CK_SESSION_HANDLE,
    label: &str,
) -> Result<Vec<CK_OBJECT_HANDLE>> {
    let mut t = Attributes::new();
    t.set_ulong(CKA_CLASS, CKO_SECRET_KEY);
    t.set(CKA_LABEL, label.as_bytes().to_vec());
    lib.find(session, &t)
}

/// The release-1 storage keys of `epoch` present in the HSM; derived again from the MIK when
/// they were deleted (the derivation is deterministic), which is how release 1 repaired them.
pub fn storage_keys_of(
    lib: &HsmLibrary,
    session: CK_SESSION_HANDLE,
    hkdf: bool,
    epoch: u32,
) -> Result<Vec<CK_OBJECT_HANDLE>> {
    let label = format!("{STK_LABEL_PREFIX}{epoch}");
    let found = find_label(lib, session, &label)?;
    if !found.is_empty() {
        return Ok(found);
    }
    let Some(mik) = find_label(lib, session, MIK_LABEL)?.first().copied() else {
        return Ok(Vec::new());
    };
    let template = |label: &str, derive: bool| {
        let mut t = Attributes::new();
        t.set_ulong(CKA_CLASS, CKO_SECRET_KEY);
        t.set_ulong(
            CKA_KEY_TYPE,
            if hkdf { CKK_GENERIC_SECRET } else { CKK_AES },
        );
        t.set_ulong(CKA_VALUE_LEN, 32);
        t.set(CKA_LABEL, label.as_bytes().to_vec());
        // Session objects: they live only as long as the migration needs them.
        t.set_bool(CKA_TOKEN, false);
        t.set_bool(CKA_PRIVATE, true);
        t.set_bool(CKA_SENSITIVE, true);
        t.set_bool(CKA_EXTRACTABLE, false);
        t.set_bool(CKA_DERIVE, derive);
        t.set_bool(CKA_ENCRYPT, !derive);
        t.set_bool(CKA_DECRYPT, !derive);
        t
    };
    let dmk = match find_label(lib, session, DMK_LABEL)?.first().copied() {
        Some(dmk) => dmk,
        None => lib.derive(
            session,
            mik,
            hkdf,
            &info(MIK_TO_DMK, None),
            &template(DMK_LABEL, true),
        )?,
    };
    let mut stk_template = template(&label, false);
    if !hkdf {
        stk_template.set_ulong(CKA_KEY_TYPE, CKK_AES);
    }
    stk_template.set(CKA_ID, STK_ID.to_vec());
    tracing::warn!("release-1 storage key epoch {epoch} was deleted; derived again to migrate");
    let stk = lib.derive(
        session,
        dmk,
        hkdf,
        &info(DMK_TO_STK, Some(epoch)),
        &stk_template,
    )?;
    Ok(vec![stk])
}

/// Every release-1 storage key in the HSM (MIK, DMK, STK-n), with its label.
pub fn all_keys(
    lib: &HsmLibrary,
    session: CK_SESSION_HANDLE,
) -> Result<Vec<(String, CK_OBJECT_HANDLE)>> {
    let mut keys = Vec::new();
    let mut t = Attributes::new();
    t.set_ulong(CKA_CLASS, CKO_SECRET_KEY);
    t.set(CKA_ID, STK_ID.to_vec());
    for handle in lib.find(session, &t)? {
        keys.push((format!("{STK_LABEL_PREFIX}*"), handle));
    }
    for label in [DMK_LABEL, MIK_LABEL] {
        for handle in find_label(lib, session, label)? {
            keys.push((label.to_owned(), handle));
        }
    }
    Ok(keys)
}

/// Destroys the release-1 keys once no record needs them. The MIK refuses (release 1 made it
/// non-destroyable and non-modifiable): it is left, and logged.
pub fn retire(lib: &HsmLibrary, session: CK_SESSION_HANDLE) -> Result<()> {
    for (label, handle) in all_keys(lib, session)? {
        match lib.destroy(session, handle) {
            Ok(()) => tracing::info!("release-1 storage key {label} destroyed"),
            Err(e) => tracing::warn!(
                "release-1 storage key {label} stays in the HSM ({e}); it seals no record any more"
            ),
        }
    }
    Ok(())
}

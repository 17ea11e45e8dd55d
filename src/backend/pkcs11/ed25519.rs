//! The Ed25519 half of a hybrid key, when the HSM has `CKM_EDDSA`: a real Ed25519 key inside the
//! HSM (sensitive, never extractable) that signs there. The hybrid record names it by label in
//! an attribute only this module reads.

use crate::backend::pkcs11::library::HsmLibrary;
use crate::error::{Error, Result};
use crate::mechanism::hybrid::{Ed25519Signer, ED25519_PUBLIC_LEN, ED25519_SIGNATURE_LEN};
use crate::mechanism::Mechanism;
use crate::random::random_bytes;
use crate::token::attributes::Attributes;
use cryptoki_sys::*;
use std::sync::Arc;

/// A hybrid private key's record attribute naming its Ed25519 key in the HSM. Not in any
/// attribute table, so applications never see it.
pub const HSM_KEY_LABEL: CK_ATTRIBUTE_TYPE = 0xB4AE_1001;

/// DER of the edwards25519 curve's OID (1.3.101.112), as `CKA_EC_PARAMS`.
const ED25519_PARAMS: &[u8] = &[0x06, 0x03, 0x2B, 0x65, 0x70];

/// Whether this HSM can hold and use Ed25519 keys.
pub fn available(mechanisms: &[CK_MECHANISM_TYPE]) -> bool {
    mechanisms.contains(&CKM_EDDSA) && mechanisms.contains(&CKM_EC_EDWARDS_KEY_PAIR_GEN)
}

fn private_template(label: &[u8], token: bool) -> Attributes {
    let mut t = Attributes::new();
    t.set_ulong(CKA_CLASS, CKO_PRIVATE_KEY);
    t.set_ulong(CKA_KEY_TYPE, CKK_EC_EDWARDS);
    t.set_bool(CKA_TOKEN, token);
    t.set_bool(CKA_PRIVATE, true);
    t.set_bool(CKA_SENSITIVE, true);
    t.set_bool(CKA_EXTRACTABLE, false);
    t.set_bool(CKA_SIGN, true);
    t.set(CKA_LABEL, label.to_vec());
    t
}

fn fresh_label() -> Result<Vec<u8>> {
    let id: [u8; 16] = random_bytes()?;
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("B4AE-v1-ED-{hex}").into_bytes())
}

/// Generates an Ed25519 key in the HSM: (its label, its public key).
pub fn generate(
    lib: &HsmLibrary,
    session: CK_SESSION_HANDLE,
    token: bool,
) -> Result<(Vec<u8>, [u8; ED25519_PUBLIC_LEN])> {
    let label = fresh_label()?;
    let mut public = Attributes::new();
    public.set_ulong(CKA_CLASS, CKO_PUBLIC_KEY);
    public.set_ulong(CKA_KEY_TYPE, CKK_EC_EDWARDS);
    public.set_bool(CKA_TOKEN, false);
    public.set_bool(CKA_VERIFY, true);
    public.set(CKA_EC_PARAMS, ED25519_PARAMS.to_vec());
    let private = private_template(&label, token);
    let (public_key, private_key) = lib.generate_key_pair(
        session,
        &Mechanism::plain(CKM_EC_EDWARDS_KEY_PAIR_GEN),
        &public,
        &private,
    )?;
    // The public half lives in the hybrid public key; the HSM's copy is not kept.
    let point = lib.attribute(session, public_key, CKA_EC_POINT);
    let _ = lib.destroy(session, public_key);
    let point = match point.and_then(|p| p.ok_or(Error::GENERAL).and_then(|p| public_key_of(&p))) {
        Ok(point) => point,
        Err(e) => {
            let _ = lib.destroy(session, private_key);
            return Err(e);
        }
    };
    Ok((label, point))
}

/// Imports an Ed25519 seed into the HSM, where it stays; returns its label.
pub fn import(
    lib: &HsmLibrary,
    session: CK_SESSION_HANDLE,
    token: bool,
    seed: &[u8],
) -> Result<Vec<u8>> {
    let label = fresh_label()?;
    let mut private = private_template(&label, token);
    private.set(CKA_EC_PARAMS, ED25519_PARAMS.to_vec());
    private.set(CKA_VALUE, seed.to_vec());
    lib.create(session, &private)?;
    Ok(label)
}

/// `CKA_EC_POINT` holds the key raw or as a DER OCTET STRING, depending on the HSM.
fn public_key_of(point: &[u8]) -> Result<[u8; ED25519_PUBLIC_LEN]> {
    let raw = match point {
        [0x04, 0x20, rest @ ..] if rest.len() == ED25519_PUBLIC_LEN => rest,
        raw => raw,
    };
    raw.try_into().map_err(|_| Error::GENERAL)
}

/// The HSM's handle of the key with this label, in `session`.
pub fn find(
    lib: &HsmLibrary,
    session: CK_SESSION_HANDLE,
    label: &[u8],
) -> Result<CK_OBJECT_HANDLE> {
    let mut template = Attributes::new();
    template.set_ulong(CKA_CLASS, CKO_PRIVATE_KEY);
    template.set(CKA_LABEL, label.to_vec());
    match lib.find(session, &template)?[..] {
        [handle] => Ok(handle),
        _ => {
            tracing::error!("the HSM lost the Ed25519 half of a hybrid key");
            Err(Error::DEVICE)
        }
    }
}

/// Destroys the HSM's key with this label (the hybrid key it belonged to is gone).
pub fn destroy(lib: &HsmLibrary, session: CK_SESSION_HANDLE, label: &[u8]) -> Result<()> {
    let handle = find(lib, session, label)?;
    lib.destroy(session, handle)
}

/// Signs with the HSM's Ed25519 key through one of the application's real sessions.
pub struct HsmEd25519 {
    pub lib: Arc<HsmLibrary>,
    pub session: CK_SESSION_HANDLE,
    pub key: CK_OBJECT_HANDLE,
}

impl Ed25519Signer for HsmEd25519 {
    fn sign(&self, message: &[u8]) -> Result<[u8; ED25519_SIGNATURE_LEN]> {
        let signature = self.lib.sign(
            self.session,
            CKM_EDDSA,
            self.key,
            message,
            ED25519_SIGNATURE_LEN,
        )?;
        signature.try_into().map_err(|_| Error::GENERAL)
    }
}

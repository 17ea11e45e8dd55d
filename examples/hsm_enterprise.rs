//! The B4AE HSM Integration Guide's "Enterprise Deployment": the key hierarchy's secrets stored
//! in the token with `store_key` (sensitive, never extractable), the PIN from `HSM_PIN`
//! (docs/rust-api.md).
//!
//! Environment: `B4AE_PKCS11_MODULE`, `HSM_PIN`, and the module's own `B4AE_PKCS11_CONF`.

use b4ae_pkcs11::hsm::pkcs11_enhanced::Pkcs11HsmEnhanced;
use b4ae_pkcs11::hsm::{HsmBackend, KeyType};

/// `$B4AE_PKCS11_MODULE`, else where the Debian package installs the module.
fn module() -> std::path::PathBuf {
    std::env::var_os("B4AE_PKCS11_MODULE")
        .map_or_else(b4ae_pkcs11::hsm::installed_module, Into::into)
}

/// Fresh key material, as a deployment would bring it from its key ceremony.
fn random_key(len: usize) -> Vec<u8> {
    let mut key = vec![0u8; len];
    getrandom::getrandom(&mut key).expect("randomness");
    key
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (master_key, device_key, storage_key) = (random_key(32), random_key(32), random_key(32));

    // Production HSM configuration
    let hsm = Pkcs11HsmEnhanced::new(module(), 0, Some(std::env::var("HSM_PIN")?))?;

    // Key hierarchy setup
    hsm.store_key("MIK", KeyType::GENERIC_SECRET, &master_key)?;
    hsm.store_key("DMK", KeyType::GENERIC_SECRET, &device_key)?;
    hsm.store_key("STK", KeyType::AES, &storage_key)?;
    println!("stored MIK, DMK (generic secrets) and STK (AES-256) in the token");

    // Labels name keys: a second MIK is refused, and so is an AES key of the wrong size.
    match hsm.store_key("MIK", KeyType::GENERIC_SECRET, &master_key) {
        Err(e) => println!("storing MIK again: {e}"),
        Ok(()) => return Err("a second MIK was stored".into()),
    }
    match hsm.store_key("STK2", KeyType::AES, &storage_key[..17]) {
        Err(e) => println!("storing a 17-byte AES key: {e}"),
        Ok(()) => return Err("a 17-byte AES key was stored".into()),
    }
    // The hierarchy's signing key beside them.
    let public_key = hsm.generate_keypair("MIK-signing")?;
    let signature = hsm.sign("MIK-signing", b"device certificate")?;
    assert!(hsm.verify("MIK-signing", b"device certificate", &signature)?);
    println!(
        "MIK-signing: ML-DSA-87, public key {} bytes, signature {} bytes, verified",
        public_key.len(),
        signature.len()
    );
    Ok(())
}

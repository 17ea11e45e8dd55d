//! The B4AE HSM Integration Guide's "Basic HSM Integration", as written there, with this
//! crate's path for the type and this module as the PKCS#11 library: an ML-DSA-87 key pair in
//! the token, a signature and its check (docs/rust-api.md).
//!
//! Environment: `B4AE_PKCS11_MODULE` (the module; default: where the Debian package installs
//! it), and the module's own `B4AE_PKCS11_CONF`. Slot 0's token must be initialized, with the
//! guide's user PIN 1234.

use b4ae_pkcs11::hsm::pkcs11_enhanced::Pkcs11HsmEnhanced;
use b4ae_pkcs11::hsm::HsmBackend;

/// `$B4AE_PKCS11_MODULE`, else where the Debian package installs the module.
fn module() -> std::path::PathBuf {
    std::env::var_os("B4AE_PKCS11_MODULE")
        .map_or_else(b4ae_pkcs11::hsm::installed_module, Into::into)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Initialize HSM backend
    let hsm = Pkcs11HsmEnhanced::new(
        module(),     // PKCS#11 library path
        0,            // Slot ID
        Some("1234"), // User PIN
    )?;

    // Generate keypair in HSM
    let public_key = hsm.generate_keypair("b4ae-master-key")?;
    println!(
        "Generated keypair with public key: {} bytes ({:02x?}...)",
        public_key.len(),
        &public_key[..8]
    );

    // Sign data using HSM
    let data = b"message to sign";
    let signature = hsm.sign("b4ae-master-key", data)?;
    println!("Signature: {} bytes", signature.len());

    // Verify signature
    let is_valid = hsm.verify("b4ae-master-key", data, &signature)?;
    println!("Signature valid: {}", is_valid);
    assert!(is_valid);
    let tampered = hsm.verify("b4ae-master-key", b"another message", &signature)?;
    println!("Signature valid for another message: {}", tampered);
    assert!(!tampered);

    Ok(())
}

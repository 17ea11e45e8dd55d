//! B4AE users' two ways in (docs/rust-api.md), against this module:
//! 1. the B4AE library's own PKCS#11 client, `b4ae::hsm::pkcs11_enhanced::Pkcs11HsmEnhanced`
//!    (crate `b4ae` 2.1.3, cryptoki 0.11), unmodified, given this module as its library:
//!    Ed25519 key generation (its template names no curve: the module supplies Ed25519's),
//!    signing, verification, `store_key`;
//! 2. this crate's `Pkcs11HsmEnhanced` as a `Box<dyn b4ae::hsm::HsmBackend>` (feature `b4ae`).
//!
//! Environment: `B4AE_PKCS11_MODULE`, `HSM_PIN`, `HSM_SLOT` (default 0), and the module's own
//! `B4AE_PKCS11_CONF`. Run with `cargo run --features b4ae --example b4ae_client`.

use b4ae::hsm::HsmBackend as B4aeHsmBackend;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let module = std::env::var_os("B4AE_PKCS11_MODULE")
        .map_or_else(b4ae_pkcs11::hsm::installed_module, Into::into);
    let pin = std::env::var("HSM_PIN")?;
    let slot: u64 = std::env::var("HSM_SLOT")
        .unwrap_or_else(|_| "0".into())
        .parse()?;

    {
        // 1. The B4AE library's own client (it finalizes the library when dropped).
        use b4ae::hsm::pkcs11_enhanced::Pkcs11HsmEnhanced;
        let hsm = Pkcs11HsmEnhanced::new(&module, cryptoki_011_slot(slot)?, Some(pin.clone()))
            .map_err(|e| format!("b4ae Pkcs11HsmEnhanced::new: {e}"))?;
        let public_key = hsm.generate_keypair("b4ae-own")?;
        println!(
            "b4ae's own client: Ed25519 key pair, CKA_EC_POINT {} bytes",
            public_key.len()
        );
        let signature = hsm.sign("b4ae-own", b"through b4ae's own client")?;
        let valid = hsm.verify("b4ae-own", b"through b4ae's own client", &signature)?;
        let other = hsm.verify("b4ae-own", b"another message", &signature)?;
        println!(
            "b4ae's own client: signature {} bytes, valid {valid}, valid for another message {other}",
            signature.len()
        );
        assert!(valid && !other);
        hsm.store_key(
            "b4ae-own-aes",
            cryptoki_011::object::KeyType::AES,
            &[7u8; 32],
        )?;
        println!("b4ae's own client: store_key of an AES-256 key: ok");
    }

    // 2. This crate's backend behind B4AE's trait.
    let ours = b4ae_pkcs11::hsm::Pkcs11HsmEnhanced::new(&module, slot, Some(pin))?;
    let backend: Box<dyn B4aeHsmBackend> = Box::new(ours);
    let public_key = backend.generate_keypair("b4ae-trait-key")?;
    let signature = backend.sign("b4ae-trait-key", b"through b4ae's trait")?;
    assert!(backend.verify("b4ae-trait-key", b"through b4ae's trait", &signature)?);
    assert!(backend.is_available());
    println!(
        "b4ae::hsm::HsmBackend over this crate: ML-DSA-87 public key {} bytes, signature {} bytes, verified",
        public_key.len(),
        signature.len()
    );
    Ok(())
}

/// A slot as cryptoki 0.11 (the B4AE library's) spells it.
fn cryptoki_011_slot(id: u64) -> Result<cryptoki_011::slot::Slot, Box<dyn std::error::Error>> {
    Ok(cryptoki_011::slot::Slot::try_from(id)?)
}

//! The B4AE HSM Integration Guide's "High-Availability Setup": two HSMs, the guide's choice of
//! the first available one, and the same with `FailoverHsm`, which also moves to the backup
//! when the primary fails mid-way (docs/rust-api.md).
//!
//! Environment: `B4AE_PKCS11_MODULE` (primary), `B4AE_BACKUP_MODULE` (backup; default the
//! same module), `HSM_PRIMARY_SLOT` / `HSM_BACKUP_SLOT` (slot number or token label; default 0
//! and 1), `HSM_PIN`, and the module's own `B4AE_PKCS11_CONF`.

use b4ae_pkcs11::hsm::pkcs11_enhanced::Pkcs11HsmEnhanced;
use b4ae_pkcs11::hsm::{FailoverHsm, HsmBackend, SlotSelector};

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let installed = b4ae_pkcs11::hsm::installed_module();
    let primary_library = var("B4AE_PKCS11_MODULE", &installed.to_string_lossy());
    let backup_library = var("B4AE_BACKUP_MODULE", &primary_library);
    let pin = std::env::var("HSM_PIN")?;
    let slot = |name, default| -> SlotSelector {
        let value = var(name, default);
        match value.parse::<u64>() {
            Ok(number) => number.into(),
            Err(_) => value.into(),
        }
    };

    // Multiple HSM configuration for redundancy
    let hsm_primary =
        Pkcs11HsmEnhanced::new(&primary_library, slot("HSM_PRIMARY_SLOT", "0"), Some(&*pin))?;
    let hsm_backup =
        Pkcs11HsmEnhanced::new(&backup_library, slot("HSM_BACKUP_SLOT", "1"), Some(&*pin))?;
    let (primary_slot, backup_slot) = (hsm_primary.slot(), hsm_backup.slot());

    // Implement failover logic (the guide's own)
    let hsm_backend = if hsm_primary.is_available() {
        println!("the guide's choice: the primary (slot {primary_slot})");
        Box::new(hsm_primary) as Box<dyn HsmBackend>
    } else {
        println!("the guide's choice: the backup (slot {backup_slot})");
        Box::new(hsm_backup) as Box<dyn HsmBackend>
    };
    let public_key = hsm_backend.generate_keypair("ha-key")?;
    let signature = hsm_backend.sign("ha-key", b"replicated message")?;
    assert!(hsm_backend.verify("ha-key", b"replicated message", &signature)?);
    println!(
        "ha-key: public key {} bytes, signature verified",
        public_key.len()
    );

    // The same with FailoverHsm: a key the primary lacks is signed by the backup.
    let backup_only = Pkcs11HsmEnhanced::new(&backup_library, backup_slot.id(), Some(&*pin))?;
    backup_only.generate_keypair("backup-only-key")?;
    let failover = FailoverHsm::new(vec![
        hsm_backend,
        Box::new(backup_only) as Box<dyn HsmBackend>,
    ]);
    let signature = failover.sign("backup-only-key", b"failed over")?;
    assert!(failover.verify("backup-only-key", b"failed over", &signature)?);
    println!("FailoverHsm: the primary has no backup-only-key; the backup signed and verified");
    match failover.sign("no-such-key", b"x") {
        Err(e) => println!("FailoverHsm, a key neither has: {e}"),
        Ok(_) => return Err("signed with a key no HSM has".into()),
    }
    Ok(())
}

//! The main job, end to end through the module's C ABI (loaded with `cryptoki`, as any
//! application would): make sure the token is initialized, generate an ML-DSA-87 key pair on
//! it, sign, verify through the module, and verify again with an independent FIPS 204
//! implementation (RustCrypto `ml-dsa`).
//!
//! Environment: `B4AE_PKCS11_MODULE` (path of libb4ae_pkcs11.so), `B4AE_SO_PIN`, `B4AE_USER_PIN`,
//! and the module's own `B4AE_PKCS11_CONF` (else its default embedded token).

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::dsa::{HedgeType, SignAdditionalContext};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, MlDsaParameterSetType};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use std::error::Error;
use std::time::Instant;

fn main() -> Result<(), Box<dyn Error>> {
    let module = std::env::var("B4AE_PKCS11_MODULE").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/release/libb4ae_pkcs11.so"
        )
        .into()
    });
    let so_pin = AuthPin::new(
        std::env::var("B4AE_SO_PIN")
            .unwrap_or_else(|_| "12345678".into())
            .into(),
    );
    let user_pin = AuthPin::new(
        std::env::var("B4AE_USER_PIN")
            .unwrap_or_else(|_| "11223344".into())
            .into(),
    );

    let p11 = Pkcs11::new(&module)?;
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    let info = p11.get_library_info()?;
    println!("module   {} ({})", module, info.library_description());
    let slot = *p11.get_slots_with_token()?.first().ok_or("no slot")?;
    let token = p11.get_token_info(slot)?;
    if !token.token_initialized() {
        println!("token    not initialized: C_InitToken, C_InitPIN");
        p11.init_token(slot, &so_pin, "B4AE-Token")?;
        let session = p11.open_rw_session(slot)?;
        session.login(UserType::So, Some(&so_pin))?;
        session.init_pin(&user_pin)?;
    }
    let token = p11.get_token_info(slot)?;
    println!(
        "token    '{}' serial {} in slot {}",
        token.label(),
        token.serial_number(),
        slot.id()
    );

    let session = p11.open_rw_session(slot)?;
    session.login(UserType::User, Some(&user_pin))?;

    let started = Instant::now();
    let label = format!("demo-ml-dsa-87-{}", std::process::id());
    let (public, private) = session.generate_key_pair(
        &Mechanism::MlDsaKeyPairGen,
        &[
            Attribute::Token(true),
            Attribute::ParameterSet(MlDsaParameterSetType::ML_DSA_87.into()),
            Attribute::Verify(true),
            Attribute::Label(label.clone().into()),
        ],
        &[
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Sign(true),
            Attribute::Label(label.clone().into()),
        ],
    )?;
    println!(
        "keygen   ML-DSA-87 token key pair '{label}' in {:?}",
        started.elapsed()
    );

    let message = b"B4AE: post-quantum signature through PKCS#11";
    let context = b"b4ae-demo";
    let mechanism = Mechanism::MlDsa(SignAdditionalContext::new(
        HedgeType::Preferred,
        Some(context),
    ));
    let signature = session.sign(&mechanism, private, message)?;
    println!(
        "sign     {} bytes (hedged, context \"b4ae-demo\")",
        signature.len()
    );
    session.verify(&mechanism, public, message, &signature)?;
    println!("verify   through the module: OK");

    let mut tampered = signature.clone();
    tampered[100] ^= 1;
    let refused = session
        .verify(&mechanism, public, message, &tampered)
        .is_err();
    println!("verify   altered signature refused: {refused}");

    let value = session.get_attributes(public, &[AttributeType::Value])?;
    let Some(Attribute::Value(public_key)) = value.first() else {
        return Err("public key has no CKA_VALUE".into());
    };
    let encoded = ml_dsa::EncodedVerifyingKey::<ml_dsa::MlDsa87>::try_from(public_key.as_slice())?;
    let key = ml_dsa::VerifyingKey::<ml_dsa::MlDsa87>::decode(&encoded);
    let sig = ml_dsa::Signature::<ml_dsa::MlDsa87>::try_from(signature.as_slice())?;
    let independent = key.verify_with_context(message, context, &sig);
    println!(
        "verify   with RustCrypto ml-dsa (independent FIPS 204): {}",
        if independent { "OK" } else { "FAILED" }
    );

    let custody = session.get_attributes(private, &[AttributeType::VendorDefined(0xB4AE0003)])?;
    if let Some(Attribute::VendorDefined((_, bytes))) = custody.first() {
        let value = u64::from_ne_bytes(bytes.as_slice().try_into()?);
        let meaning = match value {
            1 => "held natively by the real HSM",
            2 => "sealed by the HSM's storage key",
            3 => "embedded encrypted store",
            _ => "unknown",
        };
        println!("custody  CKA_B4AE_CUSTODY = {value} ({meaning})");
    }

    if !refused || !independent {
        return Err("verification results are wrong".into());
    }
    println!("done: ML-DSA-87 key generated, signed and verified through libb4ae_pkcs11.so");
    Ok(())
}

//! An ordinary `cryptoki` 0.12 application: it knows the module only by its path and the
//! PKCS#11 3.2 / B4AE vendor numbers. Usage: b4ae-suite-cryptoki <module.so> <slot> <pin>.
//! Prints `ok - ...` / `not ok - ...` lines.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::dsa::{HashSignAdditionalContext, HedgeType, SignAdditionalContext};
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{
    Attribute, AttributeType, KeyType, MlDsaParameterSetType, MlKemParameterSetType, ObjectClass,
    ObjectHandle,
};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

const MESSAGE: &[u8] = b"signed by a cryptoki application";

struct Report {
    failed: usize,
}

impl Report {
    fn check(&mut self, name: &str, result: Result<(), String>) {
        match result {
            Ok(()) => println!("ok - {name}"),
            Err(e) => {
                self.failed += 1;
                println!("not ok - {name}");
                println!("#   {e}");
            }
        }
    }
}

fn err(e: impl std::fmt::Debug) -> String {
    format!("{e:?}")
}

fn vendor(mechanism: u64) -> Mechanism<'static> {
    let kind = MechanismType::new_vendor_defined(mechanism).expect("vendor number");
    Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(kind, None))
}

fn value(session: &Session, key: ObjectHandle) -> Result<Vec<u8>, String> {
    match session
        .get_attributes(key, &[AttributeType::Value])
        .map_err(err)?[..]
    {
        [Attribute::Value(ref v)] => Ok(v.clone()),
        ref other => Err(format!("CKA_VALUE: {other:?}")),
    }
}

/// Sign, verify, and refuse a tampered signature; `len` is the expected signature length.
fn sign_verify(
    session: &Session,
    mechanism: &Mechanism,
    public: ObjectHandle,
    private: ObjectHandle,
    len: usize,
) -> Result<(), String> {
    let signature = session.sign(mechanism, private, MESSAGE).map_err(err)?;
    if signature.len() != len {
        return Err(format!(
            "signature of {} bytes, expected {len}",
            signature.len()
        ));
    }
    session
        .verify(mechanism, public, MESSAGE, &signature)
        .map_err(err)?;
    let mut tampered = signature;
    tampered[len / 2] ^= 1;
    match session.verify(mechanism, public, MESSAGE, &tampered) {
        Err(e) if format!("{e:?}").contains("SignatureInvalid") => Ok(()),
        other => Err(format!("tampered signature: {other:?}")),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, module, slot, pin] = &args[..] else {
        eprintln!("usage: b4ae-suite-cryptoki <module.so> <slot> <pin>");
        std::process::exit(2);
    };
    let mut report = Report { failed: 0 };
    let pkcs11 = Pkcs11::new(module).expect("loading the module");
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize with CKF_OS_LOCKING_OK");
    let info = pkcs11.get_library_info().expect("C_GetInfo");
    println!("# {} {:?}", info.manufacturer_id(), info.library_version());
    let slot_index: usize = slot.parse().expect("slot number");
    let slots = pkcs11.get_slots_with_token().expect("C_GetSlotList");
    let slot = slots[slot_index];
    let token = pkcs11.get_token_info(slot).expect("C_GetTokenInfo");
    println!("# slot {slot_index}: token {:?}", token.label());

    let mechanisms = pkcs11.get_mechanism_list(slot).expect("C_GetMechanismList");
    report.check(
        "the mechanism list has ML-DSA, HashML-DSA and ML-KEM",
        [
            MechanismType::ML_DSA,
            MechanismType::ML_DSA_KEY_PAIR_GEN,
            MechanismType::HASH_ML_DSA,
            MechanismType::HASH_ML_DSA_SHA512,
            MechanismType::ML_KEM,
            MechanismType::ML_KEM_KEY_PAIR_GEN,
        ]
        .iter()
        .find(|m| !mechanisms.contains(m))
        .map_or(Ok(()), |m| Err(format!("{m} missing"))),
    );
    // cryptoki's get_mechanism_list drops numbers it has no name for (vendor ones included);
    // C_GetMechanismInfo answers for any number.
    for (name, number) in [("Dilithium5", 0xB4AE_0002), ("hybrid", 0xB4AE_0004)] {
        let kind = MechanismType::new_vendor_defined(number).expect("vendor number");
        report.check(
            &format!("C_GetMechanismInfo({name} {number:#x}) says sign and verify"),
            pkcs11
                .get_mechanism_info(slot, kind)
                .map_err(err)
                .and_then(|i| {
                    if i.sign() && i.verify() {
                        Ok(())
                    } else {
                        Err(format!("{i:?}"))
                    }
                }),
        );
    }
    let kem_info = pkcs11.get_mechanism_info(slot, MechanismType::ML_KEM);
    report.check(
        "C_GetMechanismInfo(CKM_ML_KEM) says encapsulate and decapsulate",
        kem_info.map_err(err).and_then(|i| {
            if i.encapsulate() && i.decapsulate() {
                Ok(())
            } else {
                Err(format!("{i:?}"))
            }
        }),
    );

    let session = pkcs11.open_rw_session(slot).expect("C_OpenSession");
    session
        .login(UserType::User, Some(&AuthPin::new(pin.clone().into())))
        .expect("C_Login");

    // ML-DSA-87: key pair on the token, pure and pre-hashed signatures.
    let mldsa = session.generate_key_pair(
        &Mechanism::MlDsaKeyPairGen,
        &[
            Attribute::Token(true),
            Attribute::Label(b"cryptoki-mldsa".to_vec()),
            Attribute::ParameterSet(MlDsaParameterSetType::ML_DSA_87.into()),
        ],
        &[
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Label(b"cryptoki-mldsa".to_vec()),
        ],
    );
    report.check(
        "ML-DSA-87 token key pair",
        mldsa.as_ref().map(drop).map_err(err),
    );
    if let Ok((public, private)) = mldsa {
        let context = SignAdditionalContext::new(HedgeType::Preferred, Some(b"ctx"));
        report.check(
            "ML-DSA-87 sign / verify with a context",
            sign_verify(&session, &Mechanism::MlDsa(context), public, private, 4627),
        );
        let hashed = SignAdditionalContext::new(HedgeType::DeterministicRequired, None);
        report.check(
            "HashML-DSA-SHA512 (deterministic) sign / verify",
            sign_verify(
                &session,
                &Mechanism::HashMlDsaSha512(hashed),
                public,
                private,
                4627,
            ),
        );
        let digest = [0x5Au8; 32];
        let prehashed = Mechanism::HashMlDsa(HashSignAdditionalContext::new(
            HedgeType::Preferred,
            None,
            MechanismType::SHA256,
        ));
        report.check(
            "CKM_HASH_ML_DSA over a SHA-256 digest",
            session
                .sign(&prehashed, private, &digest)
                .and_then(|sig| session.verify(&prehashed, public, &digest, &sig))
                .map_err(err),
        );
        let found = session.find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::ML_DSA),
            Attribute::Label(b"cryptoki-mldsa".to_vec()),
        ]);
        report.check(
            "C_FindObjects finds the ML-DSA private key by label",
            match found {
                Ok(f) if f == vec![private] => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
        report.check(
            "the private key's CKA_VALUE is sensitive",
            match session.get_attributes(private, &[AttributeType::Value]) {
                Ok(a) if a.is_empty() => Ok(()),
                Err(e) if format!("{e:?}").contains("AttributeSensitive") => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
        report.check(
            "C_DestroyObject of both halves",
            session
                .destroy_object(private)
                .and_then(|_| session.destroy_object(public))
                .map_err(err),
        );
    }

    // ML-KEM-768: encapsulate and decapsulate to the same AES-256 key.
    let kem = session.generate_key_pair(
        &Mechanism::MlKemKeyPairGen,
        &[Attribute::ParameterSet(
            MlKemParameterSetType::ML_KEM_768.into(),
        )],
        &[Attribute::Private(true)],
    );
    report.check("ML-KEM-768 key pair", kem.as_ref().map(drop).map_err(err));
    if let Ok((public, private)) = kem {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
        ];
        let exchange = session
            .encapsulate_key(&Mechanism::MlKem, public, &template)
            .and_then(|(ciphertext, sent)| {
                let received =
                    session.decapsulate_key(&Mechanism::MlKem, private, &template, &ciphertext)?;
                Ok((ciphertext, sent, received))
            });
        report.check(
            "ML-KEM-768 encapsulate / decapsulate give the same AES-256 key",
            exchange
                .map_err(err)
                .and_then(|(ciphertext, sent, received)| {
                    let (a, b) = (value(&session, sent)?, value(&session, received)?);
                    match (ciphertext.len(), a.len()) {
                        (1088, 32) if a == b => Ok(()),
                        _ => Err(format!(
                            "ciphertext {} bytes, keys {a:02x?} / {b:02x?}",
                            ciphertext.len()
                        )),
                    }
                }),
        );
    }

    // Vendor mechanisms: round-3 Dilithium5 and the B4AE hybrid.
    for (name, keygen, mechanism, len) in [
        ("Dilithium5", 0xB4AE_0001, 0xB4AE_0002, 4595),
        ("B4AE hybrid", 0xB4AE_0003, 0xB4AE_0004, 4695),
    ] {
        let pair = session.generate_key_pair(&vendor(keygen), &[], &[Attribute::Private(true)]);
        report.check(
            &format!("{name} key pair and sign / verify"),
            pair.map_err(err).and_then(|(public, private)| {
                sign_verify(&session, &vendor(mechanism), public, private, len)
            }),
        );
    }

    session.logout().expect("C_Logout");
    drop(session);
    pkcs11.finalize().expect("C_Finalize");
    std::process::exit(i32::from(report.failed > 0));
}

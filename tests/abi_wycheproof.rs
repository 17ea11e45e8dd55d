//! The Wycheproof ML-DSA and ML-KEM vectors (tests/vectors/wycheproof/, copied unchanged from
//! C2SP Wycheproof) through the module's C ABI, on both backends: every key imported as the
//! vector gives it, every signature made or checked, every ciphertext decapsulated. A valid
//! case must give exactly the vector's output (deterministic signatures byte for byte, shared
//! secrets byte for byte); an invalid one must be refused with the right `CKR_*`. Cases that
//! PKCS#11 cannot express are counted apart, with the reason: signing from a precomputed μ
//! (flag `Internal`: no message), and matching a randomized output (the vector's randomness
//! cannot be handed to `C_Sign` or `C_EncapsulateKey`: those signatures and encapsulations are
//! checked for validity instead of equality).

#[macro_use]
mod common;
mod forward_common;

use common::*;
use cryptoki::mechanism::dsa::{HedgeType, SignAdditionalContext};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{
    Attribute, KeyType, MlDsaParameterSetType, MlKemParameterSetType, ObjectClass, ObjectHandle,
};
use cryptoki::session::Session;
use cryptoki_sys::*;
use forward_common::both::{Backend, Both};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::OnceLock;

const MLDSA: usize = 0;
const MLKEM: usize = 1;

fn both() -> &'static Both {
    static BOTH: OnceLock<Both> = OnceLock::new();
    Both::get(&BOTH, "wycheproof", 2)
}

fn vectors(file: &str) -> Value {
    let path = format!(
        "{}/tests/vectors/wycheproof/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).expect("JSON")
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap_or_default()).expect("hex")
}

fn rv<T>(result: cryptoki::error::Result<T>) -> Result<T, CK_RV> {
    result.map_err(|e| Err::<(), _>(e).to_rv())
}

/// What a file's cases came to.
#[derive(Default)]
struct Tally {
    valid: usize,
    invalid: usize,
    /// Why, and how many.
    not_applicable: BTreeMap<&'static str, usize>,
    failures: Vec<String>,
}

impl Tally {
    fn check(&mut self, case: &Value, outcome: Result<(), String>) {
        let valid = case["result"] != "invalid";
        match outcome {
            Ok(()) if valid => self.valid += 1,
            Ok(()) => self.invalid += 1,
            Err(why) => self.failures.push(format!(
                "tcId {} ({}, {}): {why}",
                case["tcId"], case["result"], case["comment"]
            )),
        }
    }

    fn skip(&mut self, why: &'static str) {
        *self.not_applicable.entry(why).or_default() += 1;
    }

    fn report(&self, file: &str, backend: Backend) {
        println!(
            "wycheproof {file} ({backend:?}): {} valid exact, {} invalid refused, not applicable {:?}, {} failed",
            self.valid,
            self.invalid,
            self.not_applicable,
            self.failures.len()
        );
    }
}

/// `expected` when the case is invalid, else success.
fn expect(case: &Value, got: Result<(), CK_RV>, refusals: &[CK_RV]) -> Result<(), String> {
    match (case["result"] != "invalid", got) {
        (true, Ok(())) => Ok(()),
        (true, Err(rv)) => Err(format!("refused with {}", rv_name(rv))),
        (false, Ok(())) => Err("accepted".into()),
        (false, Err(rv)) if refusals.contains(&rv) => Ok(()),
        (false, Err(rv)) => Err(format!("refused with {}", rv_name(rv))),
    }
}

fn mldsa_set(level: &str) -> MlDsaParameterSetType {
    match level {
        "44" => MlDsaParameterSetType::ML_DSA_44,
        "65" => MlDsaParameterSetType::ML_DSA_65,
        _ => MlDsaParameterSetType::ML_DSA_87,
    }
}

fn mldsa_public(s: &Session, level: &str, value: Vec<u8>) -> Result<ObjectHandle, CK_RV> {
    rv(s.create_object(&[
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::ML_DSA),
        Attribute::ParameterSet(mldsa_set(level).into()),
        Attribute::Token(false),
        Attribute::Verify(true),
        Attribute::Value(value),
    ]))
}

fn mldsa_private(s: &Session, level: &str, key: Attribute) -> Result<ObjectHandle, CK_RV> {
    rv(s.create_object(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::ML_DSA),
        Attribute::ParameterSet(mldsa_set(level).into()),
        Attribute::Token(false),
        Attribute::Sign(true),
        key,
    ]))
}

fn ml_dsa(hedge: HedgeType, context: &[u8]) -> Mechanism<'_> {
    Mechanism::MlDsa(SignAdditionalContext::new(hedge, Some(context)))
}

/// Refusals of a key that is not one (wrong length, coefficients out of range).
const BAD_KEY: [CK_RV; 2] = [CKR_ATTRIBUTE_VALUE_INVALID, CKR_TEMPLATE_INCONSISTENT];

/// One `mldsa_*_sign_{seed,noseed}_test.json`.
fn mldsa_sign_file(s: &Session, level: &str, seeded: bool) -> Tally {
    let mut tally = Tally::default();
    let form = if seeded { "seed" } else { "noseed" };
    let doc = vectors(&format!("mldsa_{level}_sign_{form}_test.json"));
    for group in doc["testGroups"].as_array().unwrap() {
        let private_attr = if seeded {
            Attribute::Seed(bytes(&group["privateSeed"]))
        } else {
            Attribute::Value(bytes(&group["privateKey"]))
        };
        let private = mldsa_private(s, level, private_attr);
        let public = mldsa_public(s, level, bytes(&group["publicKey"]));
        for case in group["tests"].as_array().unwrap() {
            let (private, public) = match (&private, &public) {
                (Ok(k), Ok(p)) => (*k, *p),
                (Err(rv), _) | (_, Err(rv)) => {
                    let outcome = expect(case, Err(*rv), &BAD_KEY);
                    tally.check(case, outcome);
                    continue;
                }
            };
            if case.get("msg").is_none() {
                tally.skip("signing from μ (no message)");
                continue;
            }
            let (msg, ctx, want) = (
                bytes(&case["msg"]),
                bytes(&case["ctx"]),
                bytes(&case["sig"]),
            );
            let outcome = if case.get("rnd").is_some() {
                // Randomized: the module's own hedged signature must verify, and so must the
                // vector's.
                tally.skip("randomized signature: checked valid, not equal");
                rv(s.sign(&ml_dsa(HedgeType::Required, &ctx), private, &msg)).and_then(|sig| {
                    rv(s.verify(&ml_dsa(HedgeType::Preferred, &ctx), public, &msg, &sig))
                })
            } else {
                rv(s.sign(
                    &ml_dsa(HedgeType::DeterministicRequired, &ctx),
                    private,
                    &msg,
                ))
                .and_then(|sig| {
                    if sig == want {
                        Ok(())
                    } else {
                        Err(CKR_GENERAL_ERROR)
                    }
                })
            };
            let outcome = outcome.and_then(|()| {
                if case["result"] == "invalid" {
                    return Ok(());
                }
                rv(s.verify(&ml_dsa(HedgeType::Preferred, &ctx), public, &msg, &want))
            });
            let refusals = [CKR_MECHANISM_PARAM_INVALID, CKR_ATTRIBUTE_VALUE_INVALID];
            let outcome = match expect(case, outcome, &refusals) {
                Err(e) if e.contains("CKR_GENERAL_ERROR") => {
                    Err("the signature differs from the vector's".into())
                }
                other => other,
            };
            tally.check(case, outcome);
        }
        for key in [private, public].into_iter().flatten() {
            let _ = s.destroy_object(key);
        }
    }
    tally
}

/// One `mldsa_*_verify_test.json`.
fn mldsa_verify_file(s: &Session, level: &str) -> Tally {
    let mut tally = Tally::default();
    let doc = vectors(&format!("mldsa_{level}_verify_test.json"));
    for group in doc["testGroups"].as_array().unwrap() {
        let public = mldsa_public(s, level, bytes(&group["publicKey"]));
        for case in group["tests"].as_array().unwrap() {
            let outcome = public.and_then(|public| {
                let (msg, ctx) = (bytes(&case["msg"]), bytes(&case["ctx"]));
                let sig = bytes(&case["sig"]);
                rv(s.verify(&ml_dsa(HedgeType::Preferred, &ctx), public, &msg, &sig))
            });
            let refusals = [
                CKR_SIGNATURE_INVALID,
                CKR_SIGNATURE_LEN_RANGE,
                CKR_MECHANISM_PARAM_INVALID,
                CKR_ATTRIBUTE_VALUE_INVALID,
            ];
            tally.check(case, expect(case, outcome, &refusals));
        }
        if let Ok(public) = public {
            let _ = s.destroy_object(public);
        }
    }
    tally
}

#[test]
fn wycheproof_ml_dsa_through_the_c_abi() {
    both().on_both(MLDSA, |s, backend| {
        let mut failures = Vec::new();
        for level in ["44", "65", "87"] {
            for (name, tally) in [
                (
                    format!("mldsa_{level}_sign_seed"),
                    mldsa_sign_file(s, level, true),
                ),
                (
                    format!("mldsa_{level}_sign_noseed"),
                    mldsa_sign_file(s, level, false),
                ),
                (format!("mldsa_{level}_verify"), mldsa_verify_file(s, level)),
            ] {
                tally.report(&name, backend);
                failures.extend(tally.failures.iter().map(|f| format!("{name}: {f}")));
            }
        }
        assert!(failures.is_empty(), "{backend:?}:\n{}", failures.join("\n"));
    });
}

// ---------------------------------------------------------------------------------------------
// ML-KEM

fn mlkem_set(name: &str) -> MlKemParameterSetType {
    match name {
        "512" => MlKemParameterSetType::ML_KEM_512,
        "768" => MlKemParameterSetType::ML_KEM_768,
        _ => MlKemParameterSetType::ML_KEM_1024,
    }
}

fn mlkem_public(s: &Session, set: &str, ek: Vec<u8>) -> Result<ObjectHandle, CK_RV> {
    rv(s.create_object(&[
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::ML_KEM),
        Attribute::ParameterSet(mlkem_set(set).into()),
        Attribute::Token(false),
        Attribute::Encapsulate(true),
        Attribute::Value(ek),
    ]))
}

/// A private key from its seed or its expanded value, readable (to compare with the vector).
fn mlkem_private(s: &Session, set: &str, key: Attribute) -> Result<ObjectHandle, CK_RV> {
    rv(s.create_object(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::ML_KEM),
        Attribute::ParameterSet(mlkem_set(set).into()),
        Attribute::Token(false),
        Attribute::Decapsulate(true),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
        key,
    ]))
}

fn shared_secret_template() -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(false),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
    ]
}

/// Decapsulates `c` and compares the secret with `want`.
fn decapsulates_to(s: &Session, private: ObjectHandle, c: &[u8], want: &[u8]) -> Result<(), CK_RV> {
    let key = rv(s.decapsulate_key(&Mechanism::MlKem, private, &shared_secret_template(), c))?;
    let got = attr_bytes(s, key, CKA_VALUE);
    let _ = s.destroy_object(key);
    if got == want {
        Ok(())
    } else {
        Err(CKR_GENERAL_ERROR)
    }
}

/// Encapsulates to `public`, decapsulates with `private`: the two secrets agree.
fn round_trip(s: &Session, public: ObjectHandle, private: ObjectHandle) -> Result<(), CK_RV> {
    let template = shared_secret_template();
    let (c, sent) = rv(s.encapsulate_key(&Mechanism::MlKem, public, &template))?;
    let want = attr_bytes(s, sent, CKA_VALUE);
    let _ = s.destroy_object(sent);
    decapsulates_to(s, private, &c, &want)
}

const KEM_REFUSALS: [CK_RV; 5] = [
    CKR_ATTRIBUTE_VALUE_INVALID,
    CKR_TEMPLATE_INCONSISTENT,
    CKR_ENCRYPTED_DATA_LEN_RANGE,
    CKR_ENCRYPTED_DATA_INVALID,
    CKR_KEY_SIZE_RANGE,
];

fn mlkem_files(s: &Session, set: &str) -> Vec<(String, Tally)> {
    let mut out = Vec::new();

    // Key generation from the seed: the expanded key is the vector's.
    let mut tally = Tally::default();
    for group in vectors(&format!("mlkem_{set}_keygen_seed_test.json"))["testGroups"]
        .as_array()
        .unwrap()
    {
        for case in group["tests"].as_array().unwrap() {
            let outcome =
                mlkem_private(s, set, Attribute::Seed(bytes(&case["seed"]))).and_then(|private| {
                    let same = attr_bytes(s, private, CKA_VALUE) == bytes(&case["dk"]);
                    let public = mlkem_public(s, set, bytes(&case["ek"]))?;
                    let consistent = round_trip(s, public, private);
                    let _ = (s.destroy_object(private), s.destroy_object(public));
                    consistent.and(if same { Ok(()) } else { Err(CKR_GENERAL_ERROR) })
                });
            tally.check(case, expect(case, outcome, &KEM_REFUSALS));
        }
    }
    out.push((format!("mlkem_{set}_keygen_seed"), tally));

    // Seed, public key, ciphertext and secret together.
    let mut tally = Tally::default();
    for group in vectors(&format!("mlkem_{set}_test.json"))["testGroups"]
        .as_array()
        .unwrap()
    {
        for case in group["tests"].as_array().unwrap() {
            let outcome =
                mlkem_private(s, set, Attribute::Seed(bytes(&case["seed"]))).and_then(|private| {
                    let ek = bytes(&case["ek"]);
                    let value = attr_bytes(s, private, CKA_VALUE);
                    let holds_ek = value.windows(ek.len().max(1)).any(|w| w == ek);
                    let result =
                        decapsulates_to(s, private, &bytes(&case["c"]), &bytes(&case["K"]));
                    let _ = s.destroy_object(private);
                    result.and(if holds_ek {
                        Ok(())
                    } else {
                        Err(CKR_GENERAL_ERROR)
                    })
                });
            tally.check(case, expect(case, outcome, &KEM_REFUSALS));
        }
    }
    out.push((format!("mlkem_{set}"), tally));

    // Encapsulation keys: valid ones encapsulate, the others are refused.
    let mut tally = Tally::default();
    for group in vectors(&format!("mlkem_{set}_encaps_test.json"))["testGroups"]
        .as_array()
        .unwrap()
    {
        for case in group["tests"].as_array().unwrap() {
            let outcome = mlkem_public(s, set, bytes(&case["ek"])).and_then(|public| {
                let made =
                    rv(s.encapsulate_key(&Mechanism::MlKem, public, &shared_secret_template()));
                let _ = s.destroy_object(public);
                let (c, key) = made?;
                let _ = s.destroy_object(key);
                if c.len() == bytes(&case["c"]).len() || case["result"] == "invalid" {
                    Ok(())
                } else {
                    Err(CKR_GENERAL_ERROR)
                }
            });
            if case["result"] != "invalid" {
                tally.skip("randomized encapsulation: checked made, not equal");
            }
            tally.check(case, expect(case, outcome, &KEM_REFUSALS));
        }
    }
    out.push((format!("mlkem_{set}_encaps"), tally));

    // Expanded decapsulation keys, checked at import.
    let mut tally = Tally::default();
    for group in vectors(&format!("mlkem_{set}_semi_expanded_decaps_test.json"))["testGroups"]
        .as_array()
        .unwrap()
    {
        for case in group["tests"].as_array().unwrap() {
            let outcome =
                mlkem_private(s, set, Attribute::Value(bytes(&case["dk"]))).and_then(|private| {
                    let result =
                        decapsulates_to(s, private, &bytes(&case["c"]), &bytes(&case["K"]));
                    let _ = s.destroy_object(private);
                    result
                });
            tally.check(case, expect(case, outcome, &KEM_REFUSALS));
        }
    }
    out.push((format!("mlkem_{set}_semi_expanded_decaps"), tally));
    out
}

#[test]
fn wycheproof_ml_kem_through_the_c_abi() {
    both().on_both(MLKEM, |s, backend| {
        let mut failures = Vec::new();
        for set in ["512", "768", "1024"] {
            for (name, tally) in mlkem_files(s, set) {
                tally.report(&name, backend);
                failures.extend(tally.failures.iter().map(|f| format!("{name}: {f}")));
            }
        }
        assert!(failures.is_empty(), "{backend:?}:\n{}", failures.join("\n"));
    });
}

//! ML-DSA-87 in the two implementations the module keeps, side by side, called directly:
//! PQClean through `pqcrypto-mldsa` (hedged signing and verification, the hot path) and
//! RustCrypto `ml-dsa` (seeded key generation, deterministic signing, HashML-DSA), then the
//! module's own entry points (`mechanism::mldsa`), which combine them.
//!
//! `cargo bench --bench mldsa_crates` prints µs/op and ops/s, each the median of several rounds
//! over the same 64 messages of 32 bytes (signing time depends on the rejection loop, so both
//! crates sign the same inputs). Nothing is asserted: the figures justify the choice written in
//! docs/architecture.md ("ML-DSA implementations"). The machine's other load shows as spread
//! between rounds (min..max is printed too).

#![allow(deprecated)] // `ml-dsa` deprecates the expanded key form; PKCS#11 keeps it in CKA_VALUE.

use b4ae_pkcs11::mechanism::mldsa::{ParamSet, SigningKey};
use ml_dsa::{EncodedSignature, EncodedVerifyingKey, ExpandedSigningKey, ExpandedSigningKeyBytes};
use ml_dsa::{MlDsa87, Signature, VerifyingKey};
use pqcrypto_mldsa::mldsa87 as pq;
use pqcrypto_traits::sign::{DetachedSignature as _, PublicKey as _, SecretKey as _};
use std::hint::black_box;
use std::time::Instant;

const ROUNDS: usize = 7;
const MESSAGES: usize = 64;

/// Runs `op` `iterations` times per round; answers (median, min, max) µs per operation.
fn measure(iterations: usize, mut op: impl FnMut(usize)) -> (f64, f64, f64) {
    for i in 0..iterations.min(16) {
        op(i); // warm-up
    }
    let mut rounds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for i in 0..iterations {
                op(i);
            }
            start.elapsed().as_secs_f64() * 1e6 / iterations as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    (rounds[ROUNDS / 2], rounds[0], rounds[ROUNDS - 1])
}

fn row(what: &str, iterations: usize, op: impl FnMut(usize)) {
    let (median, min, max) = measure(iterations, op);
    println!(
        "{what:<58} {median:>9.1} µs/op {:>9.0} ops/s   ({min:.1}..{max:.1})",
        1e6 / median
    );
}

fn main() {
    let messages: Vec<[u8; 32]> = (0..MESSAGES)
        .map(|i| {
            let mut m = *b"b4ae-pkcs11 benchmark message 32";
            m[0] = i as u8;
            m
        })
        .collect();
    let context = b"ctx";
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).expect("getrandom");

    // One key pair, generated from the seed (FIPS 204 KeyGen_internal), used by every row.
    let set = ParamSet::MlDsa87;
    let (pk_bytes, sk_bytes) = set.keygen_from_seed(&seed).expect("keygen");

    println!("ML-DSA-87, release, one thread; median of {ROUNDS} rounds (min..max)");
    println!("-- keygen");
    row(
        "pqcrypto-mldsa keypair() (random, no seed input)",
        400,
        |_| {
            black_box(pq::keypair());
        },
    );
    row("ml-dsa ExpandedSigningKey::from_seed", 100, |i| {
        let mut s = seed;
        s[0] = i as u8;
        black_box(ExpandedSigningKey::<MlDsa87>::from_seed(&s.into()));
    });
    row(
        "module keygen_from_seed (ml-dsa + pk and sk encoding)",
        100,
        |i| {
            let mut s = seed;
            s[0] = i as u8;
            black_box(set.keygen_from_seed(&s).expect("keygen"));
        },
    );

    println!("-- sign (32-byte message, 3-byte context)");
    let pq_sk = pq::SecretKey::from_bytes(&sk_bytes).expect("pq sk");
    row("pqcrypto-mldsa detached_sign_ctx (hedged)", 1000, |i| {
        black_box(pq::detached_sign_ctx(
            &messages[i % MESSAGES],
            context,
            &pq_sk,
        ));
    });
    let sk_array: &ExpandedSigningKeyBytes<MlDsa87> =
        sk_bytes.as_slice().try_into().expect("sk length");
    let ml_sk = ExpandedSigningKey::<MlDsa87>::from_expanded(sk_array);
    row("ml-dsa sign_deterministic (key decoded once)", 200, |i| {
        black_box(
            ml_sk
                .sign_deterministic(&messages[i % MESSAGES], context)
                .expect("sign"),
        );
    });
    row(
        "ml-dsa sign_internal, fresh rnd (hedged, key decoded once)",
        200,
        |i| {
            let mut rnd = [0u8; 32];
            getrandom::getrandom(&mut rnd).expect("getrandom");
            let m = &messages[i % MESSAGES];
            let prefix = [0u8, context.len() as u8];
            black_box(ml_sk.sign_internal(&[&prefix, context, m], &rnd.into()));
        },
    );
    let module_key = SigningKey::new(set, &sk_bytes).expect("signing key");
    row("module sign_hedged (pqcrypto-mldsa)", 1000, |i| {
        black_box(module_key.sign_hedged(&messages[i % MESSAGES], context));
    });
    row(
        "module sign_deterministic (ml-dsa, key decoded per call)",
        200,
        |i| {
            black_box(
                set.sign_deterministic(&sk_bytes, &messages[i % MESSAGES], context)
                    .expect("sign"),
            );
        },
    );

    println!("-- verify (public key parsed per call, as the module does)");
    let signatures: Vec<Vec<u8>> = messages
        .iter()
        .map(|m| module_key.sign_hedged(m, context))
        .collect();
    row("pqcrypto-mldsa verify_detached_signature_ctx", 1000, |i| {
        let pk = pq::PublicKey::from_bytes(&pk_bytes).expect("pq pk");
        let sig = pq::DetachedSignature::from_bytes(&signatures[i % MESSAGES]).expect("pq sig");
        pq::verify_detached_signature_ctx(&sig, &messages[i % MESSAGES], context, &pk)
            .expect("verify");
    });
    row("ml-dsa verify_with_context", 400, |i| {
        let encoded: &EncodedVerifyingKey<MlDsa87> =
            pk_bytes.as_slice().try_into().expect("pk length");
        let key = VerifyingKey::<MlDsa87>::decode(encoded);
        let encoded: &EncodedSignature<MlDsa87> = signatures[i % MESSAGES]
            .as_slice()
            .try_into()
            .expect("sig length");
        let sig = Signature::<MlDsa87>::decode(encoded).expect("sig");
        assert!(key.verify_with_context(&messages[i % MESSAGES], context, &sig));
    });
    row("module verify (pqcrypto-mldsa)", 1000, |i| {
        set.verify(
            &pk_bytes,
            &messages[i % MESSAGES],
            context,
            &signatures[i % MESSAGES],
        )
        .expect("verify");
    });
}

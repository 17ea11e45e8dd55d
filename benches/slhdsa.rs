//! SLH-DSA (FIPS 205): the maintained Rust implementations side by side (RustCrypto `slh-dsa`,
//! which the module uses, and `fips205`), for SLH-DSA-SHA2-128f, -SHAKE-256s, -SHAKE-128s and
//! -SHA2-128s: signatures and verifications per second (one thread, median of 5 runs).
//! (The module's C ABI beside them is not measured here yet.)
//!
//! `cargo build --release --lib --bins && cargo bench --bench slhdsa`.

use std::time::Instant;

const MESSAGE: &[u8; 32] = b"b4ae-pkcs11 benchmark message 32";

/// Operations per second of `op`, median of 5 runs of at least `min` each.
fn rate(mut op: impl FnMut(), min: std::time::Duration) -> f64 {
    let mut rates: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            let mut n = 0u32;
            while start.elapsed() < min {
                op();
                n += 1;
            }
            f64::from(n) / start.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(|a, b| a.total_cmp(b));
    rates[2]
}

macro_rules! crates_for {
    ($name:literal, $rc:ty, $f:ident, $min:expr) => {{
        use fips205::traits::{Signer as _, Verifier as _};
        let mut seeds = [0u8; 96];
        getrandom::getrandom(&mut seeds).unwrap();
        let n = <$rc as slh_dsa::SigningKeyLen>::SkLen::to_usize() / 4;
        let rc_sk = slh_dsa::SigningKey::<$rc>::slh_keygen_internal(&seeds[..n], &seeds[n..2 * n], &seeds[2 * n..3 * n]);
        let rc_vk = slh_dsa::VerifyingKey::<$rc>::try_from(&rc_sk.to_bytes()[2 * n..]).unwrap();
        let rc_sig = rc_sk.try_sign_with_context(MESSAGE, b"", Some(&seeds[..n])).unwrap();
        let (f_pk, f_sk) = fips205::$f::try_keygen().unwrap();
        let f_sig = f_sk.try_sign(MESSAGE, b"", true).unwrap();
        let rc_sign = rate(|| { std::hint::black_box(rc_sk.try_sign_with_context(MESSAGE, b"", Some(&seeds[..n])).unwrap()); }, $min);
        let f_sign = rate(|| { std::hint::black_box(f_sk.try_sign(MESSAGE, b"", true).unwrap()); }, $min);
        let rc_verify = rate(|| { rc_vk.try_verify_with_context(MESSAGE, b"", &rc_sig).unwrap(); }, $min);
        let f_verify = rate(|| { assert!(f_pk.verify(MESSAGE, &f_sig, b"")); }, $min);
        println!("{:<20} sign: slh-dsa {rc_sign:>9.2}/s  fips205 {f_sign:>9.2}/s   verify: slh-dsa {rc_verify:>9.1}/s  fips205 {f_verify:>9.1}/s", $name);
    }};
}

fn main() {
    use hybrid_array::typenum::Unsigned as _;
    println!("SLH-DSA, 32-byte message, one thread (median of 5 runs)");
    crates_for!(
        "SLH-DSA-SHA2-128f",
        slh_dsa::Sha2_128f,
        slh_dsa_sha2_128f,
        std::time::Duration::from_millis(500)
    );
    crates_for!(
        "SLH-DSA-SHAKE-256s",
        slh_dsa::Shake256s,
        slh_dsa_shake_256s,
        std::time::Duration::from_millis(1500)
    );
    crates_for!(
        "SLH-DSA-SHAKE-128s",
        slh_dsa::Shake128s,
        slh_dsa_shake_128s,
        std::time::Duration::from_millis(1500)
    );
    crates_for!(
        "SLH-DSA-SHA2-128s",
        slh_dsa::Sha2_128s,
        slh_dsa_sha2_128s,
        std::time::Duration::from_millis(1500)
    );
}

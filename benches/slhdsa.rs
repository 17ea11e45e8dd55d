//! SLH-DSA (FIPS 205), one thread, signatures and verifications per second (median of 5
//! runs): through the module's C ABI (embedded token), beside RustCrypto `slh-dsa` called
//! directly (the crate the module uses) and `fips205`, for SLH-DSA-SHA2-128f, -SHAKE-256s,
//! -SHAKE-128s and -SHA2-128s.
//!
//! `cargo build --release --lib --bins && cargo bench --bench slhdsa`.

#[macro_use]
mod common;

use common::*;
use cryptoki_sys::*;
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

/// Signatures and verifications per second through the module, with a fresh key of `set`.
fn through_module(
    m: &Module,
    s: CK_SESSION_HANDLE,
    set: CK_ULONG,
    sig_len: usize,
    min: std::time::Duration,
) -> (f64, f64) {
    let no: CK_BBOOL = CK_FALSE;
    let mut public = [attr(CKA_PARAMETER_SET, &set), attr(CKA_TOKEN, &no)];
    let mut private = [attr(CKA_TOKEN, &no)];
    let (pk, sk) = key_pair(m, s, CKM_SLH_DSA_KEY_PAIR_GEN, &mut public, &mut private);
    let mut sig = vec![0u8; sig_len];
    let signing = rate(|| sign(m, s, CKM_SLH_DSA, sk, MESSAGE, &mut sig), min);
    let verifying = rate(|| verify(m, s, CKM_SLH_DSA, pk, MESSAGE, &sig), min);
    (signing, verifying)
}

macro_rules! crates_for {
    ($name:literal, $rc:ty, $f:ident, $ckp:expr, $sig_len:expr, $module:expr, $min:expr) => {{
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
        let (m, s) = $module;
        let (m_sign, m_verify) = through_module(m, s, $ckp, $sig_len, $min);
        println!("{:<20} sign: module {m_sign:>8.2}/s  slh-dsa {rc_sign:>8.2}/s ({:.3})  fips205 {f_sign:>8.2}/s", $name, m_sign / rc_sign);
        println!("{:<20} verify: module {m_verify:>8.1}/s  slh-dsa {rc_verify:>8.1}/s ({:.3})  fips205 {f_verify:>8.1}/s", "", m_verify / rc_verify);
    }};
}

fn main() {
    use hybrid_array::typenum::Unsigned as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let m = embedded_bench_module(dir.path());
    let s = init_bench_token(&m, "user-pin");
    println!(
        "SLH-DSA, 32-byte message, one thread (median of 5 runs; module / slh-dsa in brackets)"
    );
    crates_for!(
        "SLH-DSA-SHA2-128f",
        slh_dsa::Sha2_128f,
        slh_dsa_sha2_128f,
        CKP_SLH_DSA_SHA2_128F,
        17088,
        (&m, s),
        std::time::Duration::from_millis(500)
    );
    crates_for!(
        "SLH-DSA-SHAKE-256s",
        slh_dsa::Shake256s,
        slh_dsa_shake_256s,
        CKP_SLH_DSA_SHAKE_256S,
        29792,
        (&m, s),
        std::time::Duration::from_millis(1500)
    );
    crates_for!(
        "SLH-DSA-SHAKE-128s",
        slh_dsa::Shake128s,
        slh_dsa_shake_128s,
        CKP_SLH_DSA_SHAKE_128S,
        7856,
        (&m, s),
        std::time::Duration::from_millis(1500)
    );
    crates_for!(
        "SLH-DSA-SHA2-128s",
        slh_dsa::Sha2_128s,
        slh_dsa_sha2_128s,
        CKP_SLH_DSA_SHA2_128S,
        7856,
        (&m, s),
        std::time::Duration::from_millis(1500)
    );
}

//! The post-quantum mechanisms through the module's C ABI beside the libraries it uses, called
//! directly, in one run: ML-DSA-87 (`pqcrypto-mldsa`), round-3 Dilithium5
//! (`pqcrypto-dilithium`), the B4AE hybrid (AWS-LC Ed25519 + `pqcrypto-mldsa` ML-DSA-87) and
//! ML-KEM-1024 (`ml-kem`).
//!
//! `cargo bench --bench pq` builds the release module and prints ops/s for each path and
//! their ratio, then the time of token key generation. Each figure is the median of several
//! rounds; the machine's other load shows up as spread between rounds, so look at both.

use cryptoki_sys::*;
use pqcrypto_traits::sign::{DetachedSignature as _, PublicKey as _, SecretKey as _};
use std::ptr;
use std::time::Instant;

#[macro_use]
mod common;

use common::*;

const MESSAGE: &[u8; 32] = b"b4ae-pkcs11 benchmark message 32";

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = embedded_bench_module(dir.path());
    let s = init_bench_token(&m, "user-pin");

    let yes: CK_BBOOL = CK_TRUE;
    let set: CK_ULONG = CKP_ML_DSA_87;
    let generate = |token: bool| {
        let on_token: CK_BBOOL = if token { CK_TRUE } else { CK_FALSE };
        let mut public = [
            attr(CKA_PARAMETER_SET, &set),
            attr(CKA_TOKEN, &on_token),
            attr(CKA_VERIFY, &yes),
        ];
        let mut private = [attr(CKA_TOKEN, &on_token), attr(CKA_SIGN, &yes)];
        key_pair(&m, s, CKM_ML_DSA_KEY_PAIR_GEN, &mut public, &mut private)
    };

    let keygen_time = |token: bool| {
        let n = 200;
        let start = Instant::now();
        for _ in 0..n {
            generate(token);
        }
        start.elapsed() / n
    };
    let token_keygen = keygen_time(true);
    let session_keygen = keygen_time(false);
    let (pk, sk) = generate(true);

    let mut sig = vec![0u8; 4627];
    let (raw_pk, raw_sk) = pqcrypto_mldsa::mldsa87::keypair();
    let (module_sign, raw_sign) = side_by_side(
        || sign(&m, s, CKM_ML_DSA, sk, MESSAGE, &mut sig),
        || {
            std::hint::black_box(pqcrypto_mldsa::mldsa87::detached_sign_ctx(
                MESSAGE, b"", &raw_sk,
            ));
        },
    );
    sign(&m, s, CKM_ML_DSA, sk, MESSAGE, &mut sig);
    let raw_sig = pqcrypto_mldsa::mldsa87::detached_sign_ctx(MESSAGE, b"", &raw_sk);
    let (module_verify, raw_verify) = side_by_side(
        || verify(&m, s, CKM_ML_DSA, pk, MESSAGE, &sig),
        || {
            // The module verifies (without a context) with AWS-LC: the same call here.
            let key = aws_lc_rs::signature::UnparsedPublicKey::new(
                &aws_lc_rs::signature::ML_DSA_87,
                raw_pk.as_bytes(),
            );
            key.verify(MESSAGE, raw_sig.as_bytes()).expect("verify");
        },
    );
    print_table(
        &format!("ML-DSA-87, 32-byte message, median of {ROUNDS} rounds (ops/s)"),
        "pqcrypto / aws-lc",
        &[
            ("sign", module_sign, raw_sign),
            ("verify", module_verify, raw_verify),
        ],
    );
    println!("key pair generation, mean of 200: token object {token_keygen:?}, session object {session_keygen:?}");

    two_thread_scaling(&m, sk, &raw_sk);

    // Round-3 Dilithium5 (vendor mechanisms) beside pqcrypto-dilithium called directly. Round-3
    // signing is deterministic, so both sides must sign with the same key and message (the
    // number of rejection rounds depends on both): the raw key pair is imported.
    let (raw_dpk, raw_dsk) = pqcrypto_dilithium::dilithium5::keypair();
    let yes: CK_BBOOL = CK_TRUE;
    let key_type: CK_KEY_TYPE = 0xB4AE_0001;
    let import = |class: CK_OBJECT_CLASS, usage: CK_ATTRIBUTE_TYPE, value: &[u8]| {
        let mut t = [
            attr(CKA_CLASS, &class),
            attr(CKA_KEY_TYPE, &key_type),
            attr(usage, &yes),
            bytes(CKA_VALUE, value),
        ];
        let mut handle = 0;
        rv(
            "C_CreateObject",
            call!(m, C_CreateObject(s, t.as_mut_ptr(), 4, &mut handle)),
        );
        handle
    };
    let dsk = import(CKO_PRIVATE_KEY, CKA_SIGN, raw_dsk.as_bytes());
    let dpk = import(CKO_PUBLIC_KEY, CKA_VERIFY, raw_dpk.as_bytes());
    const CKM_B4AE_DILITHIUM5: CK_MECHANISM_TYPE = 0xB4AE_0002;
    let mut dsig = vec![0u8; 4595];
    let (dil_sign, dil_raw_sign) = side_by_side(
        || sign(&m, s, CKM_B4AE_DILITHIUM5, dsk, MESSAGE, &mut dsig),
        || {
            std::hint::black_box(pqcrypto_dilithium::dilithium5::detached_sign(
                MESSAGE, &raw_dsk,
            ));
        },
    );
    sign(&m, s, CKM_B4AE_DILITHIUM5, dsk, MESSAGE, &mut dsig);
    let raw_dsig = pqcrypto_dilithium::dilithium5::detached_sign(MESSAGE, &raw_dsk);
    let (dil_verify, dil_raw_verify) = side_by_side(
        || verify(&m, s, CKM_B4AE_DILITHIUM5, dpk, MESSAGE, &dsig),
        || {
            let pk = pqcrypto_dilithium::dilithium5::PublicKey::from_bytes(raw_dpk.as_bytes())
                .expect("pk");
            let sig =
                pqcrypto_dilithium::dilithium5::DetachedSignature::from_bytes(raw_dsig.as_bytes())
                    .expect("sig");
            pqcrypto_dilithium::dilithium5::verify_detached_signature(&sig, MESSAGE, &pk)
                .expect("verify");
        },
    );
    print_table(
        "round-3 Dilithium5, 32-byte message (ops/s)",
        "pqcrypto-dilithium",
        &[
            ("sign", dil_sign, dil_raw_sign),
            ("verify", dil_verify, dil_raw_verify),
        ],
    );

    hybrid(&m, s);
    ml_kem(&m, s);
    rv("C_Finalize", call!(m, C_Finalize(ptr::null_mut())));
}

/// The hybrid with the same key on both sides: a pair made by the module, exported, and loaded
/// into AWS-LC and PQClean directly.
fn hybrid(m: &Module, s: CK_SESSION_HANDLE) {
    const CKM_B4AE_HYBRID_KEY_PAIR_GEN: CK_MECHANISM_TYPE = 0xB4AE_0003;
    const CKM_B4AE_HYBRID: CK_MECHANISM_TYPE = 0xB4AE_0004;
    let (yes, no): (CK_BBOOL, CK_BBOOL) = (CK_TRUE, CK_FALSE);
    let mut keygen = mechanism::<()>(CKM_B4AE_HYBRID_KEY_PAIR_GEN, None);
    let mut public = [attr(CKA_VERIFY, &yes)];
    let mut private = [
        attr(CKA_SIGN, &yes),
        attr(CKA_SENSITIVE, &no),
        attr(CKA_EXTRACTABLE, &yes),
    ];
    let (mut pk, mut sk) = (0, 0);
    rv(
        "C_GenerateKeyPair(hybrid)",
        call!(
            m,
            C_GenerateKeyPair(
                s,
                &mut keygen,
                public.as_mut_ptr(),
                1,
                private.as_mut_ptr(),
                3,
                &mut pk,
                &mut sk
            )
        ),
    );
    let private_value = value(m, s, sk, 4928);
    let public_value = value(m, s, pk, 2624);
    let ed = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&private_value[..32])
        .expect("Ed25519 seed");
    let ml = pqcrypto_mldsa::mldsa87::SecretKey::from_bytes(&private_value[32..]).expect("sk");
    let ml_pk = pqcrypto_mldsa::mldsa87::PublicKey::from_bytes(&public_value[32..]).expect("pk");
    let raw_sign = |message: &[u8]| {
        let mut out = Vec::with_capacity(4695);
        out.extend_from_slice(&64u32.to_be_bytes());
        out.extend_from_slice(ed.sign(message).as_ref());
        out.extend_from_slice(
            pqcrypto_mldsa::mldsa87::detached_sign_ctx(message, b"", &ml).as_bytes(),
        );
        out
    };
    let mut sig = vec![0u8; 4695];
    let (module_sign, direct_sign) = side_by_side(
        || sign(m, s, CKM_B4AE_HYBRID, sk, MESSAGE, &mut sig),
        || {
            std::hint::black_box(raw_sign(MESSAGE));
        },
    );
    sign(m, s, CKM_B4AE_HYBRID, sk, MESSAGE, &mut sig);
    let raw_sig = raw_sign(MESSAGE);
    let (module_verify, direct_verify) = side_by_side(
        || verify(m, s, CKM_B4AE_HYBRID, pk, MESSAGE, &sig),
        || {
            let ed_pk = aws_lc_rs::signature::UnparsedPublicKey::new(
                &aws_lc_rs::signature::ED25519,
                &public_value[..32],
            );
            ed_pk.verify(MESSAGE, &raw_sig[4..68]).expect("Ed25519");
            let ml_sig = pqcrypto_mldsa::mldsa87::DetachedSignature::from_bytes(&raw_sig[68..])
                .expect("sig");
            pqcrypto_mldsa::mldsa87::verify_detached_signature_ctx(&ml_sig, MESSAGE, b"", &ml_pk)
                .expect("ML-DSA-87");
        },
    );
    print_table(
        "B4AE hybrid (Ed25519 + ML-DSA-87), 32-byte message (ops/s)",
        "Ed25519+ML-DSA-87",
        &[
            ("sign", module_sign, direct_sign),
            ("verify", module_verify, direct_verify),
        ],
    );
}

/// A readable attribute's value.
fn value(m: &Module, s: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut a = bytes(CKA_VALUE, &out);
    a.pValue = out.as_mut_ptr() as *mut _;
    rv(
        "C_GetAttributeValue",
        call!(m, C_GetAttributeValue(s, key, &mut a, 1)),
    );
    out.truncate(a.ulValueLen as usize);
    out
}

type EncapsulateKey = unsafe extern "C" fn(
    CK_SESSION_HANDLE,
    *mut CK_MECHANISM,
    CK_OBJECT_HANDLE,
    *mut CK_ATTRIBUTE,
    CK_ULONG,
    *mut CK_BYTE,
    *mut CK_ULONG,
    *mut CK_OBJECT_HANDLE,
) -> CK_RV;
type DecapsulateKey = unsafe extern "C" fn(
    CK_SESSION_HANDLE,
    *mut CK_MECHANISM,
    CK_OBJECT_HANDLE,
    *mut CK_ATTRIBUTE,
    CK_ULONG,
    *mut CK_BYTE,
    CK_ULONG,
    *mut CK_OBJECT_HANDLE,
) -> CK_RV;

/// ML-KEM-1024 with the same key on both sides. Each module call makes a session key object
/// (that is what the PKCS#11 call does); it is destroyed again after the round, outside the
/// timing, so the table does not grow without bound.
fn ml_kem(m: &Module, s: CK_SESSION_HANDLE) {
    use ml_kem::{Decapsulate as _, KeyExport as _};
    let encapsulate: EncapsulateKey = m.symbol(b"C_EncapsulateKey");
    let decapsulate: DecapsulateKey = m.symbol(b"C_DecapsulateKey");
    let seed = [7u8; 64];
    let raw = ml_kem::ml_kem_1024::DecapsulationKey::from_seed(seed.into());
    let raw_ek = raw.encapsulation_key().clone();
    let (yes, no): (CK_BBOOL, CK_BBOOL) = (CK_TRUE, CK_FALSE);
    let (public_class, private_class, key_type, set) =
        (CKO_PUBLIC_KEY, CKO_PRIVATE_KEY, CKK_ML_KEM, CKP_ML_KEM_1024);
    let ek = raw_ek.to_bytes().to_vec();
    let create = |t: &mut [CK_ATTRIBUTE]| {
        let mut handle = 0;
        rv(
            "C_CreateObject",
            call!(
                m,
                C_CreateObject(s, t.as_mut_ptr(), t.len() as CK_ULONG, &mut handle)
            ),
        );
        handle
    };
    let pk = create(&mut [
        attr(CKA_CLASS, &public_class),
        attr(CKA_KEY_TYPE, &key_type),
        attr(CKA_PARAMETER_SET, &set),
        attr(CKA_ENCAPSULATE, &yes),
        bytes(CKA_VALUE, &ek),
    ]);
    let sk = create(&mut [
        attr(CKA_CLASS, &private_class),
        attr(CKA_KEY_TYPE, &key_type),
        attr(CKA_PARAMETER_SET, &set),
        attr(CKA_DECAPSULATE, &yes),
        bytes(CKA_SEED, &seed),
    ]);
    let (secret_class, aes, len): (CK_OBJECT_CLASS, CK_KEY_TYPE, CK_ULONG) =
        (CKO_SECRET_KEY, CKK_AES, 32);
    let mut template = [
        attr(CKA_CLASS, &secret_class),
        attr(CKA_KEY_TYPE, &aes),
        attr(CKA_VALUE_LEN, &len),
        attr(CKA_TOKEN, &no),
    ];
    let made = std::cell::RefCell::new(Vec::new());
    let mut ct = vec![0u8; 1568];
    let mut kem = mechanism::<()>(CKM_ML_KEM, None);
    let mut destroy_made = || {
        for h in made.borrow_mut().drain(..) {
            rv("C_DestroyObject", call!(m, C_DestroyObject(s, h)));
        }
    };
    let mut encaps = |m_ct: &mut Vec<u8>| {
        let (mut ct_len, mut key) = (m_ct.len() as CK_ULONG, 0);
        // SAFETY: the module's C_EncapsulateKey with live buffers.
        let r = unsafe {
            encapsulate(
                s,
                &mut kem,
                pk,
                template.as_mut_ptr(),
                4,
                m_ct.as_mut_ptr(),
                &mut ct_len,
                &mut key,
            )
        };
        rv("C_EncapsulateKey", r);
        made.borrow_mut().push(key);
    };
    let (module_encaps, raw_encaps) = rounds_with_cleanup(
        || encaps(&mut ct),
        || {
            // What `ml-kem`'s own `encapsulate` does: fresh m from the OS, then Encaps.
            let mut m = [0u8; 32];
            getrandom::getrandom(&mut m).expect("randomness");
            std::hint::black_box(raw_ek.encapsulate_deterministic(&m.into()));
        },
        &mut destroy_made,
    );
    let mut kem = mechanism::<()>(CKM_ML_KEM, None);
    let raw_ct = ct.clone();
    let (module_decaps, raw_decaps) = rounds_with_cleanup(
        || {
            let mut key = 0;
            // SAFETY: the module's C_DecapsulateKey with live buffers.
            let r = unsafe {
                decapsulate(
                    s,
                    &mut kem,
                    sk,
                    template.as_mut_ptr(),
                    4,
                    raw_ct.as_ptr() as *mut _,
                    raw_ct.len() as CK_ULONG,
                    &mut key,
                )
            };
            rv("C_DecapsulateKey", r);
            made.borrow_mut().push(key);
        },
        || {
            let ct: &ml_kem::ml_kem_1024::Ciphertext = raw_ct.as_slice().try_into().expect("ct");
            std::hint::black_box(raw.decapsulate(ct));
        },
        &mut destroy_made,
    );
    print_table(
        "ML-KEM-1024, shared secret as an AES-256 session key (ops/s)",
        "ml-kem",
        &[
            ("encaps", module_encaps, raw_encaps),
            ("decaps", module_decaps, raw_decaps),
        ],
    );
}

/// Ops/s of `threads` threads each running `op(thread)` for one round.
fn threaded_round(threads: usize, op: &(impl Fn(usize) + Sync)) -> f64 {
    let stop = std::sync::atomic::AtomicBool::new(false);
    let start = Instant::now();
    let total: u64 = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let stop = &stop;
                scope.spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        op(t);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        std::thread::sleep(ROUND_TIME);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        workers.into_iter().map(|w| w.join().expect("worker")).sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

/// ML-DSA-87 signing on one and on two threads, through the module (one session per thread,
/// one key) and with `pqcrypto-mldsa` called directly, rounds interleaved: the module's
/// two-thread/one-thread scaling beside the raw library's.
fn two_thread_scaling(
    m: &Module,
    sk: CK_OBJECT_HANDLE,
    raw_sk: &pqcrypto_mldsa::mldsa87::SecretKey,
) {
    let sessions: Vec<CK_SESSION_HANDLE> = (0..2)
        .map(|_| {
            let mut s = 0;
            let flags = CKF_SERIAL_SESSION;
            rv(
                "C_OpenSession",
                call!(m, C_OpenSession(0, flags, ptr::null_mut(), None, &mut s)),
            );
            s
        })
        .collect();
    let module_op = |t: usize| {
        let mut sig = [0u8; 4627];
        sign(m, sessions[t], CKM_ML_DSA, sk, MESSAGE, &mut sig);
    };
    let raw_op = |_t: usize| {
        std::hint::black_box(pqcrypto_mldsa::mldsa87::detached_sign_ctx(
            MESSAGE, b"", raw_sk,
        ));
    };
    for t in 0..2 {
        module_op(t);
        raw_op(t);
    }
    let mut figures: [Vec<f64>; 4] = Default::default();
    for _ in 0..ROUNDS {
        figures[0].push(threaded_round(1, &module_op));
        figures[1].push(threaded_round(1, &raw_op));
        figures[2].push(threaded_round(2, &module_op));
        figures[3].push(threaded_round(2, &raw_op));
    }
    let [m1, r1, m2, r2] = figures.map(|mut v| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[ROUNDS / 2]
    });
    let (module_scaling, raw_scaling) = (m2 / m1, r2 / r1);
    println!("ML-DSA-87 sign on 2 threads, median of {ROUNDS} interleaved rounds (ops/s)");
    println!(
        "{:<10} {:>14} {:>18}",
        "threads", "module C ABI", "pqcrypto-mldsa"
    );
    println!("{:<10} {m1:>14.0} {r1:>18.0}", "1");
    println!("{:<10} {m2:>14.0} {r2:>18.0}", "2");
    println!(
        "scaling 2/1: module {module_scaling:.3}, raw {raw_scaling:.3}, module/raw {:.3}",
        module_scaling / raw_scaling
    );
    for s in sessions {
        rv("C_CloseSession", call!(m, C_CloseSession(s)));
    }
}

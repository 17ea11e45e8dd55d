//! ML-DSA-87 (and round-3 Dilithium5) through the module's C ABI beside `pqcrypto-mldsa`
//! (`pqcrypto-dilithium`) called directly, in one run.
//!
//! `cargo bench --bench mldsa` builds the release module and prints ops/s for each path and
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
    let conf = dir.path().join("b4ae.toml");
    std::fs::write(
        &conf,
        format!(
            "[[token]]\nlabel = \"bench\"\npath = \"{}\"\npin_kdf = \"test-only-fast\"\n",
            dir.path().join("token").display()
        ),
    )
    .expect("write config");
    std::env::set_var("B4AE_PKCS11_CONF", &conf);

    let m = load(&module_path());
    rv("C_Initialize", call!(m, C_Initialize(ptr::null_mut())));
    let mut label = [b' '; 32];
    label[..5].copy_from_slice(b"bench");
    rv(
        "C_InitToken",
        call!(
            m,
            C_InitToken(0, b"12345678".as_ptr() as *mut _, 8, label.as_mut_ptr())
        ),
    );
    let mut s: CK_SESSION_HANDLE = 0;
    let flags = CKF_SERIAL_SESSION | CKF_RW_SESSION;
    rv(
        "C_OpenSession",
        call!(m, C_OpenSession(0, flags, ptr::null_mut(), None, &mut s)),
    );
    rv(
        "C_Login SO",
        call!(m, C_Login(s, CKU_SO, b"12345678".as_ptr() as *mut _, 8)),
    );
    rv(
        "C_InitPIN",
        call!(m, C_InitPIN(s, b"1234".as_ptr() as *mut _, 4)),
    );
    rv("C_Logout", call!(m, C_Logout(s)));
    rv(
        "C_Login",
        call!(m, C_Login(s, CKU_USER, b"1234".as_ptr() as *mut _, 4)),
    );

    let yes: CK_BBOOL = CK_TRUE;
    let set: CK_ULONG = CKP_ML_DSA_87;
    let generate = |token: bool| {
        let mut keygen = CK_MECHANISM {
            mechanism: CKM_ML_DSA_KEY_PAIR_GEN,
            pParameter: ptr::null_mut(),
            ulParameterLen: 0,
        };
        let on_token: CK_BBOOL = if token { CK_TRUE } else { CK_FALSE };
        let mut public = [
            attr(CKA_PARAMETER_SET, &set),
            attr(CKA_TOKEN, &on_token),
            attr(CKA_VERIFY, &yes),
        ];
        let mut private = [attr(CKA_TOKEN, &on_token), attr(CKA_SIGN, &yes)];
        let (mut pk, mut sk) = (0, 0);
        rv(
            "C_GenerateKeyPair",
            call!(
                m,
                C_GenerateKeyPair(
                    s,
                    &mut keygen,
                    public.as_mut_ptr(),
                    3,
                    private.as_mut_ptr(),
                    2,
                    &mut pk,
                    &mut sk
                )
            ),
        );
        (pk, sk)
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
            let pk = pqcrypto_mldsa::mldsa87::PublicKey::from_bytes(raw_pk.as_bytes()).expect("pk");
            let sig = pqcrypto_mldsa::mldsa87::DetachedSignature::from_bytes(raw_sig.as_bytes())
                .expect("sig");
            pqcrypto_mldsa::mldsa87::verify_detached_signature_ctx(&sig, MESSAGE, b"", &pk)
                .expect("verify");
        },
    );
    print_table(
        &format!("ML-DSA-87, 32-byte message, median of {ROUNDS} rounds (ops/s)"),
        "pqcrypto-mldsa",
        &[
            ("sign", module_sign, raw_sign),
            ("verify", module_verify, raw_verify),
        ],
    );
    println!("key pair generation, mean of 200: token object {token_keygen:?}, session object {session_keygen:?}");

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

    rv("C_Finalize", call!(m, C_Finalize(ptr::null_mut())));
}

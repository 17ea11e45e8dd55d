//! The pkcs11 backend over SoftHSM2, in one run:
//! * forwarded `C_Sign` (ECDSA P-256) and `C_Encrypt` (AES-256-GCM, 1 KiB) through the module
//!   beside SoftHSM2 called directly;
//! * ML-DSA-87 signing with a key sealed in the HSM (custody 2): warm, beside raw
//!   `pqcrypto-mldsa`, and cold (the first use after a login, when the HSM opens the record);
//! * `C_FindObjects` for one post-quantum key among 1,000 and 10,000, beside SoftHSM2 finding
//!   one object by label among as many. These keys are session keys: SoftHSM2's file store
//!   spends time proportional to the number of token objects on every token-object creation
//!   (1,000 token key pairs took 33–47 s, 10,000 did not finish in 40 minutes), while the
//!   module's search is the same index lookup for session and token keys.
//!
//! `cargo build --release && cargo bench --bench forward`. Needs softhsm2 (scripts/deps.sh).
//! `B4AE_BENCH_KEYS=1000,10000` sets the key counts.

#[macro_use]
mod common;

use common::*;
use cryptoki_sys::*;
use std::ptr;
use std::time::Instant;

const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";
const HASH: [u8; 32] = [7; 32];
const P256_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

fn ec_key(m: &Module, s: CK_SESSION_HANDLE) -> CK_OBJECT_HANDLE {
    let yes: CK_BBOOL = CK_TRUE;
    let mut public = [
        bytes(CKA_EC_PARAMS, &P256_OID),
        attr(CKA_TOKEN, &yes),
        attr(CKA_VERIFY, &yes),
    ];
    let mut private = [
        attr(CKA_TOKEN, &yes),
        attr(CKA_SIGN, &yes),
        attr(CKA_PRIVATE, &yes),
    ];
    let (_, k) = key_pair(m, s, CKM_EC_KEY_PAIR_GEN, &mut public, &mut private);
    k
}

fn aes_key(m: &Module, s: CK_SESSION_HANDLE) -> CK_OBJECT_HANDLE {
    let yes: CK_BBOOL = CK_TRUE;
    let len: CK_ULONG = 32;
    let mut t = [
        attr(CKA_TOKEN, &yes),
        attr(CKA_ENCRYPT, &yes),
        attr(CKA_DECRYPT, &yes),
        attr(CKA_VALUE_LEN, &len),
    ];
    let mut key = 0;
    let mut mech = mechanism::<()>(CKM_AES_KEY_GEN, None);
    rv(
        "AES keygen",
        call!(m, C_GenerateKey(s, &mut mech, t.as_mut_ptr(), 4, &mut key)),
    );
    key
}

fn mldsa_key(
    m: &Module,
    s: CK_SESSION_HANDLE,
    set: CK_ULONG,
    label: &str,
    token: bool,
) -> CK_OBJECT_HANDLE {
    let yes: CK_BBOOL = CK_TRUE;
    let on_token: CK_BBOOL = if token { CK_TRUE } else { CK_FALSE };
    let mut public = [
        attr(CKA_PARAMETER_SET, &set),
        attr(CKA_TOKEN, &on_token),
        bytes(CKA_LABEL, label.as_bytes()),
    ];
    let mut private = [
        attr(CKA_TOKEN, &on_token),
        attr(CKA_SIGN, &yes),
        bytes(CKA_LABEL, label.as_bytes()),
    ];
    let (_, k) = key_pair(m, s, CKM_ML_DSA_KEY_PAIR_GEN, &mut public, &mut private);
    k
}

fn encrypt_gcm(
    m: &Module,
    s: CK_SESSION_HANDLE,
    key: CK_OBJECT_HANDLE,
    data: &[u8],
    out: &mut [u8],
) {
    let iv = [1u8; 12];
    let aad = [2u8; 16];
    let mut gcm = CK_GCM_PARAMS {
        pIv: iv.as_ptr() as *mut _,
        ulIvLen: 12,
        ulIvBits: 96,
        pAAD: aad.as_ptr() as *mut _,
        ulAADLen: 16,
        ulTagBits: 128,
    };
    let mut mech = mechanism(CKM_AES_GCM, Some(&mut gcm));
    let mut len = out.len() as CK_ULONG;
    rv("C_EncryptInit", call!(m, C_EncryptInit(s, &mut mech, key)));
    rv(
        "C_Encrypt",
        call!(
            m,
            C_Encrypt(
                s,
                data.as_ptr() as *mut _,
                data.len() as CK_ULONG,
                out.as_mut_ptr(),
                &mut len
            )
        ),
    );
}

/// Finds objects by template; returns how many.
fn find(m: &Module, s: CK_SESSION_HANDLE, template: &mut [CK_ATTRIBUTE]) -> usize {
    rv(
        "C_FindObjectsInit",
        call!(
            m,
            C_FindObjectsInit(s, template.as_mut_ptr(), template.len() as CK_ULONG)
        ),
    );
    let mut found = [0; 16];
    let mut n = 0;
    rv(
        "C_FindObjects",
        call!(m, C_FindObjects(s, found.as_mut_ptr(), 16, &mut n)),
    );
    rv("C_FindObjectsFinal", call!(m, C_FindObjectsFinal(s)));
    n as usize
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    softhsm_token(d, "bench", "1234");
    let b4ae = d.join("b4ae.toml");
    let text = format!("[[token]]\nlabel = \"bench\"\nbackend = \"pkcs11\"\nlibrary = \"{SOFTHSM}\"\ntoken_label = \"bench\"\n");
    std::fs::write(&b4ae, text).expect("b4ae.toml");
    std::env::set_var("B4AE_PKCS11_CONF", &b4ae);
    // The module's PIN failure counter, kept in the benchmark's directory.
    std::env::set_var("B4AE_PKCS11_STATE_DIR", d.join("state"));

    // SoftHSM2 directly, and the module in front of the same SoftHSM2 instance.
    let hsm = load(SOFTHSM);
    rv(
        "SoftHSM C_Initialize",
        call!(hsm, C_Initialize(ptr::null_mut())),
    );
    let m = load(&module_path());
    rv("C_Initialize", call!(m, C_Initialize(ptr::null_mut())));
    let mut slots = [0; 8];
    let mut n: CK_ULONG = 8;
    rv(
        "C_GetSlotList",
        call!(hsm, C_GetSlotList(CK_TRUE, slots.as_mut_ptr(), &mut n)),
    );
    let real_slot = slots[..n as usize]
        .iter()
        .copied()
        .find(|s| {
            let mut info = CK_TOKEN_INFO::default();
            call!(hsm, C_GetTokenInfo(*s, &mut info)) == CKR_OK && info.label.starts_with(b"bench ")
        })
        .expect("the bench token");
    let ms = open_rw(&m, 0);
    login_as(&m, ms, CKU_USER, "1234");
    let hs = open_rw(&hsm, real_slot);
    login_as(&hsm, hs, CKU_USER, "1234");

    let ec = ec_key(&m, ms);
    let aes = aes_key(&m, ms);
    let mut sig = vec![0u8; 4627];
    let (ecdsa_module, ecdsa_direct) = side_by_side(
        || sign(&m, ms, CKM_ECDSA, ec, &HASH, &mut [0u8; 64]),
        || sign(&hsm, hs, CKM_ECDSA, ec, &HASH, &mut [0u8; 64]),
    );
    let plain = [3u8; 1024];
    let (gcm_module, gcm_direct) = side_by_side(
        || encrypt_gcm(&m, ms, aes, &plain, &mut [0u8; 1040]),
        || encrypt_gcm(&hsm, hs, aes, &plain, &mut [0u8; 1040]),
    );

    let mldsa = mldsa_key(&m, ms, CKP_ML_DSA_87, "bench-87", true);
    let (_, raw_sk) = pqcrypto_mldsa::mldsa87::keypair();
    let message = [5u8; 32];
    let (mldsa_warm, mldsa_raw) = side_by_side(
        || sign(&m, ms, CKM_ML_DSA, mldsa, &message, &mut sig),
        || {
            std::hint::black_box(pqcrypto_mldsa::mldsa87::detached_sign_ctx(
                &message, b"", &raw_sk,
            ));
        },
    );
    // Cold: the first signature after a login, when the HSM must open the record. SoftHSM2
    // gives private objects new handles at each login, so the key is found again first, as an
    // application would.
    let class: CK_OBJECT_CLASS = CKO_PRIVATE_KEY;
    let key_type: CK_KEY_TYPE = CKK_ML_DSA;
    let find_key = |label: &str| {
        let mut t = [
            attr(CKA_CLASS, &class),
            attr(CKA_KEY_TYPE, &key_type),
            bytes(CKA_LABEL, label.as_bytes()),
        ];
        rv(
            "C_FindObjectsInit",
            call!(m, C_FindObjectsInit(ms, t.as_mut_ptr(), 3)),
        );
        let (mut key, mut n) = (0, 0);
        rv(
            "C_FindObjects",
            call!(m, C_FindObjects(ms, &mut key, 1, &mut n)),
        );
        rv("C_FindObjectsFinal", call!(m, C_FindObjectsFinal(ms)));
        assert_eq!(n, 1, "{label}");
        key
    };
    let mut cold = Vec::new();
    let mut cold_found = Vec::new();
    let mut login_times = Vec::new();
    for _ in 0..21 {
        rv("C_Logout", call!(m, C_Logout(ms)));
        let t = Instant::now();
        login_as(&m, ms, CKU_USER, "1234");
        login_times.push(t.elapsed());
        let found = Instant::now();
        let key = find_key("bench-87");
        let t = Instant::now();
        sign(&m, ms, CKM_ML_DSA, key, &message, &mut sig);
        cold.push(t.elapsed());
        cold_found.push(found.elapsed());
    }
    for times in [&mut cold, &mut cold_found, &mut login_times] {
        times.sort();
    }
    let (cold, cold_found, login_only) = (cold[10], cold_found[10], login_times[10]);

    println!("pkcs11 backend over SoftHSM2 2.6, median of {ROUNDS} interleaved rounds");
    println!(
        "{:<32} {:>14} {:>14} {:>8}",
        "operation (ops/s)", "module", "direct/raw", "ratio"
    );
    for (name, a, b) in [
        ("ECDSA P-256 sign (forwarded)", ecdsa_module, ecdsa_direct),
        ("AES-256-GCM 1 KiB (forwarded)", gcm_module, gcm_direct),
        ("ML-DSA-87 sign, HSM-sealed, warm", mldsa_warm, mldsa_raw),
    ] {
        println!("{name:<32} {a:>14.0} {b:>14.0} {:>8.3}", a / b);
    }
    println!("ML-DSA-87 cold: first C_SignInit + C_Sign after login {cold:?}; with the C_FindObjects* before it {cold_found:?} (the C_Login before both: {login_only:?})");

    let counts: Vec<usize> = std::env::var("B4AE_BENCH_KEYS")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let mut made = 0;
    let data: CK_OBJECT_CLASS = CKO_DATA;
    for count in counts {
        let started = Instant::now();
        while made < count {
            mldsa_key(&m, ms, CKP_ML_DSA_44, &format!("find-{made:05}"), false);
            made += 1;
        }
        let creation = started.elapsed();
        let label = format!("find-{:05}", count / 2);
        let module_find = median_time(101, || {
            let mut t = [
                attr(CKA_CLASS, &class),
                attr(CKA_KEY_TYPE, &key_type),
                bytes(CKA_LABEL, label.as_bytes()),
            ];
            assert_eq!(find(&m, ms, &mut t), 1);
        });
        let direct_find = median_time(11, || {
            let mut t = [attr(CKA_CLASS, &data), bytes(CKA_LABEL, label.as_bytes())];
            assert!(find(&hsm, hs, &mut t) >= 1);
        });
        println!(
            "C_FindObjects one ML-DSA key among {count} session keys: module {module_find:?}, SoftHSM2 directly (one object by label) {direct_find:?}  [made the keys in {creation:.1?}]"
        );
    }

    call!(m, C_Finalize(ptr::null_mut()));
    call!(hsm, C_Finalize(ptr::null_mut()));
}

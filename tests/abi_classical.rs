//! The embedded token's classical mechanisms (what B4AE needs besides post-quantum keys):
//! AES key generation and AES-GCM, Ed25519 (RFC 8032 PureEdDSA). Checked against AWS-LC,
//! ed25519-dalek and RFC 8032's test vector, through the built module.

#[macro_use]
mod common;

use common::*;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki_sys::*;

const SLOT_AES: usize = 0;
const SLOT_AES_ERRORS: usize = 1;
const SLOT_ED25519: usize = 2;

const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2B, 0x65, 0x70];
const ED25519_NAME: &[u8] = b"\x13\x0cedwards25519";
const ED448_OID: &[u8] = &[0x06, 0x03, 0x2B, 0x65, 0x71];

fn aes_key(session: &Session, len: u64, extra: &[Attribute]) -> ObjectHandle {
    let mut template = vec![
        Attribute::Token(false),
        Attribute::ValueLen(len.into()),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
    ];
    template.extend_from_slice(extra);
    ok(session.generate_key(&Mechanism::AesKeyGen, &template))
}

fn gcm<'a>(iv: &'a mut [u8], aad: &'a [u8]) -> Mechanism<'a> {
    Mechanism::AesGcm(GcmParams::new(iv, aad, 128.into()).expect("GCM parameters"))
}

#[test]
fn aes_gcm_encrypts_like_aws_lc_single_and_multi_part() {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
    let f = fixture();
    let s = f.user_session(f.ready_slot(SLOT_AES));
    let plain: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let aad = b"header";
    for (len, algorithm) in [(16, &AES_128_GCM), (24, &AES_128_GCM), (32, &AES_256_GCM)] {
        let exportable = [Attribute::Sensitive(false), Attribute::Extractable(true)];
        let key = aes_key(&s, len, &exportable);
        assert_eq!(attr_ulong(&s, key, CKA_KEY_TYPE), CKK_AES);
        assert!(attr_bool(&s, key, CKA_LOCAL));
        assert_eq!(attr_ulong(&s, key, CKA_KEY_GEN_MECHANISM), CKM_AES_KEY_GEN);
        let value = attr_bytes(&s, key, CKA_VALUE);
        assert_eq!(value.len() as u64, len);
        let (mut iv, mut iv2) = ([9u8; 12], [9u8; 12]);
        let sealed = ok(s.encrypt(&gcm(&mut iv, aad), key, &plain));
        assert_eq!(sealed.len(), plain.len() + 16);
        if len != 24 {
            // AWS-LC has no AES-192: the 128- and 256-bit keys are checked against it.
            let theirs = LessSafeKey::new(UnboundKey::new(algorithm, &value).unwrap());
            let mut buf = plain.clone();
            let nonce = Nonce::assume_unique_for_key([9u8; 12]);
            theirs
                .seal_in_place_append_tag(nonce, Aad::from(aad), &mut buf)
                .unwrap();
            assert_eq!(buf, sealed, "AES-{} GCM as AWS-LC", len * 8);
        }
        assert_eq!(ok(s.decrypt(&gcm(&mut iv2, aad), key, &sealed)), plain);
        // Multi-part: parts give no output, the final call everything.
        let mut iv3 = [9u8; 12];
        ok(s.encrypt_init(&gcm(&mut iv3, aad), key));
        let mut out = Vec::new();
        for part in plain.chunks(300) {
            out.extend(ok(s.encrypt_update(part)));
        }
        out.extend(ok(s.encrypt_final()));
        assert_eq!(out, sealed);
        let mut iv4 = [9u8; 12];
        ok(s.decrypt_init(&gcm(&mut iv4, aad), key));
        let mut back = Vec::new();
        for part in sealed.chunks(7) {
            back.extend(ok(s.decrypt_update(part)));
        }
        back.extend(ok(s.decrypt_final()));
        assert_eq!(back, plain);
    }
}

#[test]
fn aes_gcm_refuses_bad_input_and_keeps_the_length_convention() {
    let f = fixture();
    let s = f.user_session(f.ready_slot(SLOT_AES_ERRORS));
    let key = aes_key(&s, 32, &[]);
    assert_sensitive(&s, key, CKA_VALUE);
    let mut iv = [1u8; 12];
    let mut params = CK_GCM_PARAMS {
        pIv: iv.as_mut_ptr(),
        ulIvLen: 12,
        ulIvBits: 96,
        pAAD: std::ptr::null_mut(),
        ulAADLen: 0,
        ulTagBits: 128,
    };
    let gcm_mech = |params: &mut CK_GCM_PARAMS| CK_MECHANISM {
        mechanism: CKM_AES_GCM,
        pParameter: (params as *mut CK_GCM_PARAMS).cast(),
        ulParameterLen: std::mem::size_of::<CK_GCM_PARAMS>() as CK_ULONG,
    };
    let mut m = gcm_mech(&mut params);
    let h = s.handle();
    let mut data = *b"sixteen bytes!!!";
    let mut out = [0u8; 64];
    let mut len: CK_ULONG = 0;
    assert_ck!(CKR_OK; C_EncryptInit(h, &mut m, key.handle()));
    // NULL buffer: the length, and the operation goes on; a short buffer: the same.
    assert_ck!(CKR_OK; C_Encrypt(h, data.as_mut_ptr(), 16, null(), &mut len));
    assert_eq!(len, 32);
    len = 31;
    assert_ck!(CKR_BUFFER_TOO_SMALL; C_Encrypt(h, data.as_mut_ptr(), 16, out.as_mut_ptr(), &mut len));
    assert_eq!(len, 32);
    len = out.len() as CK_ULONG;
    assert_ck!(CKR_OK; C_Encrypt(h, data.as_mut_ptr(), 16, out.as_mut_ptr(), &mut len));
    assert_eq!(len, 32);
    assert_ck!(CKR_OPERATION_NOT_INITIALIZED; C_Encrypt(h, data.as_mut_ptr(), 16, out.as_mut_ptr(), &mut len));
    // A tampered ciphertext, one shorter than the tag.
    let mut sealed = out[..32].to_vec();
    sealed[3] ^= 1;
    let mut plain = [0u8; 32];
    len = plain.len() as CK_ULONG;
    assert_ck!(CKR_OK; C_DecryptInit(h, &mut m, key.handle()));
    assert_ck!(CKR_ENCRYPTED_DATA_INVALID; C_Decrypt(h, sealed.as_mut_ptr(), 32, plain.as_mut_ptr(), &mut len));
    assert_ck!(CKR_OK; C_DecryptInit(h, &mut m, key.handle()));
    assert_ck!(CKR_ENCRYPTED_DATA_LEN_RANGE; C_Decrypt(h, sealed.as_mut_ptr(), 15, plain.as_mut_ptr(), &mut len));
    // Parameters: none, a 16-byte IV, a 96-bit tag, a NULL IV pointer with a length.
    let mut bare = mech(CKM_AES_GCM);
    assert_ck!(CKR_MECHANISM_PARAM_INVALID; C_EncryptInit(h, &mut bare, key.handle()));
    let mut long_iv = [0u8; 16];
    let good = params;
    let refused = [
        CK_GCM_PARAMS {
            pIv: long_iv.as_mut_ptr(),
            ulIvLen: 16,
            ..good
        },
        CK_GCM_PARAMS {
            ulTagBits: 96,
            ..good
        },
        CK_GCM_PARAMS {
            pIv: std::ptr::null_mut(),
            ..good
        },
    ];
    for mut bad in refused {
        let mut bad_mech = gcm_mech(&mut bad);
        assert_ck!(CKR_MECHANISM_PARAM_INVALID; C_EncryptInit(h, &mut bad_mech, key.handle()));
    }
    let mut m = gcm_mech(&mut params);
    // Keys: one that may not encrypt, an ML-DSA key, a bad handle.
    let decrypt_only = ok(s.generate_key(
        &Mechanism::AesKeyGen,
        &[Attribute::ValueLen(16.into()), Attribute::Decrypt(true)],
    ));
    assert_ck!(CKR_KEY_FUNCTION_NOT_PERMITTED; C_EncryptInit(h, &mut m, decrypt_only.handle()));
    let (_, dsa) = mldsa_keypair(&s, Ps::P44, false, &[]);
    assert_ck!(CKR_KEY_TYPE_INCONSISTENT; C_EncryptInit(h, &mut m, dsa.handle()));
    assert_ck!(CKR_KEY_HANDLE_INVALID; C_EncryptInit(h, &mut m, 0x7777_7777));
    // Key generation templates.
    let odd = s.generate_key(&Mechanism::AesKeyGen, &[Attribute::ValueLen(20.into())]);
    assert_rv(odd, CKR_ATTRIBUTE_VALUE_INVALID);
    assert_rv(
        s.generate_key(&Mechanism::AesKeyGen, &[]),
        CKR_TEMPLATE_INCOMPLETE,
    );
    let valued = [
        Attribute::ValueLen(16.into()),
        Attribute::Value(vec![0; 16]),
    ];
    assert_rv(
        s.generate_key(&Mechanism::AesKeyGen, &valued),
        CKR_TEMPLATE_INCONSISTENT,
    );
    let generic = [
        Attribute::ValueLen(16.into()),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
    ];
    assert_rv(
        s.generate_key(&Mechanism::AesKeyGen, &generic),
        CKR_TEMPLATE_INCONSISTENT,
    );
}

#[test]
fn ed25519_signs_as_rfc_8032_and_ed25519_dalek_verifies() {
    let f = fixture();
    let s = f.user_session(f.ready_slot(SLOT_ED25519));
    for params in [ED25519_OID, ED25519_NAME] {
        let (public, private) = ok(s.generate_key_pair(
            &Mechanism::EccEdwardsKeyPairGen,
            &[
                Attribute::EcParams(params.to_vec()),
                Attribute::Verify(true),
            ],
            &[Attribute::Sign(true), Attribute::Private(true)],
        ));
        let point = attr_bytes(&s, public, CKA_EC_POINT);
        assert_eq!(
            &point[..2],
            &[0x04, 0x20],
            "CKA_EC_POINT is a DER OCTET STRING"
        );
        assert_eq!(attr_bytes(&s, private, CKA_EC_PARAMS), params);
        assert_sensitive(&s, private, CKA_VALUE);
        let m = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        let signature = ok(s.sign(&m, private, MESSAGE));
        assert_eq!(signature.len(), 64);
        ok(s.verify(&m, public, MESSAGE, &signature));
        let theirs =
            ed25519_dalek::VerifyingKey::from_bytes(point[2..].try_into().unwrap()).unwrap();
        let sig = ed25519_dalek::Signature::from_slice(&signature).unwrap();
        assert!(theirs.verify_strict(MESSAGE, &sig).is_ok());
        ok(s.sign_init(&m, private));
        for part in MESSAGE.chunks(4) {
            ok(s.sign_update(part));
        }
        assert_eq!(ok(s.sign_final()), signature, "PureEdDSA is deterministic");
        let mut bad = signature.clone();
        bad[5] ^= 1;
        assert_rv(s.verify(&m, public, MESSAGE, &bad), CKR_SIGNATURE_INVALID);
        assert_rv(
            s.verify(&m, public, MESSAGE, &bad[..63]),
            CKR_SIGNATURE_LEN_RANGE,
        );
        let ph = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Ed25519ph(&[])));
        assert_rv(s.sign(&ph, private, MESSAGE), CKR_MECHANISM_PARAM_INVALID);
    }
    // RFC 8032 §7.1, test 1: the empty message.
    let seed =
        hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").unwrap();
    let expected = hex::decode(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    )
    .unwrap();
    let imported = ok(s.create_object(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC_EDWARDS),
        Attribute::Token(false),
        Attribute::Sign(true),
        Attribute::EcParams(ED25519_OID.to_vec()),
        Attribute::Value(seed),
    ]));
    let m = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
    assert_eq!(ok(s.sign(&m, imported, b"")), expected);
    let public = ok(s.create_object(&[
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::EC_EDWARDS),
        Attribute::Token(false),
        Attribute::Verify(true),
        Attribute::EcParams(ED25519_OID.to_vec()),
        Attribute::EcPoint(
            hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
                .unwrap(),
        ),
    ]));
    ok(s.verify(&m, public, b"", &expected));
    // No CKA_EC_PARAMS at all (the B4AE library's own client): Ed25519.
    let (public, private) = ok(s.generate_key_pair(
        &Mechanism::EccEdwardsKeyPairGen,
        &[Attribute::Verify(true)],
        &[Attribute::Sign(true), Attribute::Private(true)],
    ));
    assert_eq!(attr_bytes(&s, public, CKA_EC_PARAMS), ED25519_OID);
    let signature = ok(s.sign(&m, private, MESSAGE));
    ok(s.verify(&m, public, MESSAGE, &signature));
    // Ed448 is not offered.
    let ed448 = s.generate_key_pair(
        &Mechanism::EccEdwardsKeyPairGen,
        &[Attribute::EcParams(ED448_OID.to_vec())],
        &[],
    );
    assert_rv(ed448, CKR_CURVE_NOT_SUPPORTED);
    let list = mechanism_list(f.slot(SLOT_ED25519));
    for m in [
        CKM_AES_KEY_GEN,
        CKM_AES_GCM,
        CKM_EC_EDWARDS_KEY_PAIR_GEN,
        CKM_EDDSA,
    ] {
        assert!(list.contains(&m), "{m:#x} listed");
    }
}

//! The ten FIPS 204/205 pre-hashes as tests drive them: the digest of a message, the hash
//! mechanism `CK_HASH_SIGN_ADDITIONAL_CONTEXT.hash` names, and the hash's OID as an independent
//! implementation (`fips204`) spells it; and a raw `C_Sign` with a bare pre-hash mechanism
//! (`CKM_HASH_ML_DSA`, `CKM_HASH_SLH_DSA`), for which cryptoki has no SHAKE hash name.

use super::*;
use sha2::Digest;
use sha3::digest::{ExtendableOutput, Update};

/// One pre-hash: its place in the `CKM_HASH_<family>_<hash>` numbering, the hash mechanism, the
/// digest of the message and the OID.
pub struct PreHashCase {
    pub index: CK_ULONG,
    pub hash: CK_MECHANISM_TYPE,
    pub digest: Vec<u8>,
    pub oid: [u8; 11],
}

/// The ten pre-hashes of `message`, in the mechanisms' order (SHA-224 first).
pub fn prehashes(message: &[u8]) -> Vec<PreHashCase> {
    use fips204::pre_hash::*;
    let shake = |out: &mut [u8], wide: bool| {
        if wide {
            sha3::Shake256::default()
                .chain(message)
                .finalize_xof_into(out)
        } else {
            sha3::Shake128::default()
                .chain(message)
                .finalize_xof_into(out)
        }
    };
    let (mut shake128, mut shake256) = (vec![0; 32], vec![0; 64]);
    shake(&mut shake128, false);
    shake(&mut shake256, true);
    let cases = [
        (CKM_SHA224, sha2::Sha224::digest(message).to_vec(), SHA2_224),
        (CKM_SHA256, sha2::Sha256::digest(message).to_vec(), SHA2_256),
        (CKM_SHA384, sha2::Sha384::digest(message).to_vec(), SHA2_384),
        (CKM_SHA512, sha2::Sha512::digest(message).to_vec(), SHA2_512),
        (
            CKM_SHA3_224,
            sha3::Sha3_224::digest(message).to_vec(),
            SHA3_224,
        ),
        (
            CKM_SHA3_256,
            sha3::Sha3_256::digest(message).to_vec(),
            SHA3_256,
        ),
        (
            CKM_SHA3_384,
            sha3::Sha3_384::digest(message).to_vec(),
            SHA3_384,
        ),
        (
            CKM_SHA3_512,
            sha3::Sha3_512::digest(message).to_vec(),
            SHA3_512,
        ),
        (CKM_SHAKE_128_KEY_DERIVATION, shake128, SHAKE_128),
        (CKM_SHAKE_256_KEY_DERIVATION, shake256, SHAKE_256),
    ];
    cases
        .into_iter()
        .enumerate()
        .map(|(index, (hash, digest, oid))| PreHashCase {
            index: index as CK_ULONG,
            hash,
            digest,
            oid,
        })
        .collect()
}

/// Signs a digest with a bare pre-hash mechanism (deterministic) through raw calls.
pub fn raw_prehash_sign(
    s: &Session,
    mechanism: CK_MECHANISM_TYPE,
    key: ObjectHandle,
    hash: CK_MECHANISM_TYPE,
    context: &[u8],
    digest: &[u8],
) -> Vec<u8> {
    let mut params = CK_HASH_SIGN_ADDITIONAL_CONTEXT {
        hedgeVariant: CKH_DETERMINISTIC_REQUIRED,
        pContext: context.as_ptr().cast_mut(),
        ulContextLen: context.len() as CK_ULONG,
        hash,
    };
    let mut m = CK_MECHANISM {
        mechanism,
        pParameter: (&mut params as *mut CK_HASH_SIGN_ADDITIONAL_CONTEXT).cast(),
        ulParameterLen: std::mem::size_of::<CK_HASH_SIGN_ADDITIONAL_CONTEXT>() as CK_ULONG,
    };
    assert_ck!(CKR_OK; C_SignInit(s.handle(), &mut m, key.handle()));
    let mut len: CK_ULONG = 0;
    let (data, data_len) = (digest.as_ptr().cast_mut(), digest.len() as CK_ULONG);
    assert_ck!(CKR_OK; C_Sign(s.handle(), data, data_len, null(), &mut len));
    let mut signature = vec![0u8; len as usize];
    assert_ck!(CKR_OK; C_Sign(s.handle(), data, data_len, signature.as_mut_ptr(), &mut len));
    signature.truncate(len as usize);
    signature
}

/// The refusals a bare pre-hash mechanism (`bare`: `CKM_HASH_ML_DSA`, `CKM_HASH_SLH_DSA`) owes,
/// `prehashed(context, hash)` making it with a `CK_HASH_SIGN_ADDITIONAL_CONTEXT`: a context of
/// 256 bytes, a digest of the wrong length, an unknown hash, no parameter at all, multi-part
/// use, a truncated and an altered signature. Answers the (valid) signature of `digest`, a
/// SHA-256 digest, made on the way.
pub fn bare_mechanism_refusals<'a>(
    s: &Session,
    bare: CK_MECHANISM_TYPE,
    prehashed: impl Fn(&'static [u8], cryptoki::mechanism::MechanismType) -> Mechanism<'a>,
    (public, private): (ObjectHandle, ObjectHandle),
    digest: &[u8; 32],
) -> Vec<u8> {
    use cryptoki::mechanism::MechanismType;
    let sha256 = MechanismType::SHA256;
    let too_long: &'static [u8] = Box::leak(vec![1u8; 256].into_boxed_slice());
    assert_rv(
        s.sign(&prehashed(too_long, sha256), private, digest),
        CKR_MECHANISM_PARAM_INVALID,
    );
    assert_rv(
        s.sign(&prehashed(b"", sha256), private, &digest[..31]),
        CKR_DATA_LEN_RANGE,
    );
    assert_rv(
        s.sign(&prehashed(b"", MechanismType::SHA1), private, digest),
        CKR_MECHANISM_PARAM_INVALID,
    );
    let mut without_parameter = mech(bare);
    let rv = ck!(C_SignInit(
        s.handle(),
        &mut without_parameter,
        private.handle()
    ));
    assert_rv(rv, CKR_MECHANISM_PARAM_INVALID);
    // Single-part only.
    ok(s.sign_init(&prehashed(b"", sha256), private));
    assert_rv(s.sign_update(digest), CKR_FUNCTION_NOT_SUPPORTED);
    assert_rv(s.sign_final(), CKR_OPERATION_NOT_INITIALIZED);
    let m = prehashed(b"", sha256);
    let signature = ok(s.sign(&m, private, digest));
    ok(s.verify(&m, public, digest, &signature));
    let truncated = s.verify(&m, public, digest, &signature[..signature.len() - 1]);
    assert_rv(truncated, CKR_SIGNATURE_LEN_RANGE);
    let mut altered = signature.clone();
    altered[40] ^= 4;
    assert_rv(
        s.verify(&m, public, digest, &altered),
        CKR_SIGNATURE_INVALID,
    );
    signature
}

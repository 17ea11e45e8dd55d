#!/usr/bin/env python3
"""Cross-checks b4ae-pkcs11's post-quantum outputs against independent pure-Python implementations
(dilithium-py, kyber-py, cryptography), driving the built module through its C ABI with PyKCS11, on
an embedded token and on a token forwarded to SoftHSM2.

Usage: crosscheck.py path/to/libb4ae_pkcs11.so [slots]   (the admin binary b4ae-pkcs11 is taken
from beside it; it makes its own pair of tokens, so the slots argument that pkcs11-test-suite/python/run.sh
passes every client is ignored)
Prints one `ok - ` / `not ok - ` line per check, then `# crosscheck.py done`; exits 1 on any failure.
"""

import ctypes
import hashlib
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from dilithium_py.dilithium import Dilithium5
from dilithium_py.ml_dsa import (
    HASH_ML_DSA_44_WITH_SHA512,
    HASH_ML_DSA_65_WITH_SHA512,
    HASH_ML_DSA_87_WITH_SHA512,
    ML_DSA_44,
    ML_DSA_65,
    ML_DSA_87,
)
from kyber_py.ml_kem import ML_KEM_512, ML_KEM_768, ML_KEM_1024
from PyKCS11 import (
    CK_FALSE,
    CK_OBJECT_HANDLE,
    CK_TRUE,
    CKA_CLASS,
    CKA_EXTRACTABLE,
    CKA_KEY_TYPE,
    CKA_SENSITIVE,
    CKA_SIGN,
    CKA_TOKEN,
    CKA_VALUE,
    CKA_VERIFY,
    CKF_RW_SESSION,
    CKK_GENERIC_SECRET,
    CKO_PRIVATE_KEY,
    CKO_PUBLIC_KEY,
    CKO_SECRET_KEY,
    Mechanism,
    PyKCS11Error,
    PyKCS11Lib,
)

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
SO_PIN, PIN = "12345678", "11223344"
MESSAGE = b"b4ae-pkcs11 python cross-check"
CONTEXT = b"b4ae cross-check context"

# Numbers as plain integers: vendor ones from include/b4ae_pkcs11.h, PKCS#11 3.2 ones from SPEC §2.
CKK_B4AE_DILITHIUM5, CKK_B4AE_HYBRID = 0xB4AE0001, 0xB4AE0002
CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN, CKM_B4AE_DILITHIUM5 = 0xB4AE0001, 0xB4AE0002
CKM_B4AE_HYBRID_KEY_PAIR_GEN, CKM_B4AE_HYBRID = 0xB4AE0003, 0xB4AE0004
CKA_B4AE_ED25519_PUBLIC, CKA_B4AE_MLDSA_PUBLIC = 0xB4AE0001, 0xB4AE0002
CKK_ML_KEM, CKK_ML_DSA = 0x49, 0x4A
CKA_PARAMETER_SET, CKA_SEED, CKA_ENCAPSULATE, CKA_DECAPSULATE = 0x61D, 0x637, 0x633, 0x634
CKM_ML_KEM_KEY_PAIR_GEN, CKM_ML_KEM = 0x0F, 0x17
CKM_ML_DSA_KEY_PAIR_GEN, CKM_ML_DSA = 0x1C, 0x1D
CKH_DETERMINISTIC_REQUIRED = 2

# PyKCS11 passes attributes it does not know as numbers or booleans as raw bytes, so those
# CK_ULONG and CK_BBOOL values are given in their C layout.
TRUE_BYTE = b"\x01"


def ulong(value):
    return struct.pack("@L", value)


# CKA_PARAMETER_SET value -> (name, dilithium-py instance, HashML-DSA instance)
ML_DSA = {
    1: ("ML-DSA-44", ML_DSA_44, HASH_ML_DSA_44_WITH_SHA512),
    2: ("ML-DSA-65", ML_DSA_65, HASH_ML_DSA_65_WITH_SHA512),
    3: ("ML-DSA-87", ML_DSA_87, HASH_ML_DSA_87_WITH_SHA512),
}
# CKA_PARAMETER_SET value -> (name, kyber-py instance, ciphertext length)
ML_KEM = {
    1: ("ML-KEM-512", ML_KEM_512, 768),
    2: ("ML-KEM-768", ML_KEM_768, 1088),
    3: ("ML-KEM-1024", ML_KEM_1024, 1568),
}
# CKM_HASH_ML_DSA_<hash> -> (hashlib name, output length for SHAKE, last arc of the hash's OID
# 2.16.840.1.101.3.4.2.x); FIPS 204 §5.4 fixes SHAKE128 at 32 and SHAKE256 at 64 bytes.
HASH_ML_DSA = {
    0x23: ("sha224", None, 4),
    0x24: ("sha256", None, 1),
    0x25: ("sha384", None, 2),
    0x26: ("sha512", None, 3),
    0x27: ("sha3_224", None, 7),
    0x28: ("sha3_256", None, 8),
    0x29: ("sha3_384", None, 9),
    0x2A: ("sha3_512", None, 10),
    0x2B: ("shake_128", 32, 11),
    0x2C: ("shake_256", 64, 12),
}
# dilithium-py 1.5.1's own HashML-DSA knows only these pre-hashes; the others get M' built here.
DILITHIUM_PY_PREHASH = {"sha256": "SHA256", "sha512": "SHA512", "shake_128": "SHAKE128"}


class Mismatch(Exception):
    pass


def require(condition, what):
    if not condition:
        raise Mismatch(what)


def flip_bit(data, index):
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1 :]


class CK_MECHANISM(ctypes.Structure):
    _fields_ = [
        ("mechanism", ctypes.c_ulong),
        ("pParameter", ctypes.c_void_p),
        ("ulParameterLen", ctypes.c_ulong),
    ]


class CK_ATTRIBUTE(ctypes.Structure):
    _fields_ = [("type", ctypes.c_ulong), ("pValue", ctypes.c_void_p), ("ulValueLen", ctypes.c_ulong)]


class Token:
    """A logged-in read-write session on one slot, with the calls the checks need. Keys are
    session objects. PyKCS11 has no C_EncapsulateKey/C_DecapsulateKey: those go through ctypes to
    the same, already initialised library."""

    def __init__(self, lib, so, slot):
        self.session = lib.openSession(slot, CKF_RW_SESSION)
        self.session.login(PIN)
        self.so = so

    def keypair(self, mechanism, public, private):
        not_token = [(CKA_TOKEN, CK_FALSE)]
        return self.session.generateKeyPair(not_token + public, not_token + private, Mechanism(mechanism))

    def create(self, object_class, key_type, value, *extra):
        return self.session.createObject(
            [
                (CKA_CLASS, object_class),
                (CKA_KEY_TYPE, key_type),
                (CKA_TOKEN, CK_FALSE),
                (CKA_VALUE, value),
                *extra,
            ]
        )

    def value(self, key, attribute=CKA_VALUE):
        found = self.session.getAttributeValue(key, [attribute], allAsBinary=True)[0]
        require(found is not None, f"attribute 0x{attribute:X} cannot be read")
        return bytes(found)

    def sign(self, key, mechanism, data, parameter=None):
        return bytes(self.session.sign(key, data, Mechanism(mechanism, parameter)))

    def verify(self, key, mechanism, data, signature):
        """True for CKR_OK, False for CKR_SIGNATURE_INVALID; anything else raises."""
        return self.session.verify(key, data, signature, Mechanism(mechanism))

    def encapsulate(self, public, ciphertext_len):
        """C_EncapsulateKey; returns (ciphertext, shared secret)."""
        template, keep = self._secret_template()
        ciphertext = ctypes.create_string_buffer(ciphertext_len)
        length, handle = ctypes.c_ulong(ciphertext_len), ctypes.c_ulong()
        rv = self.so.C_EncapsulateKey(
            self._handle(),
            ctypes.byref(CK_MECHANISM(CKM_ML_KEM, None, 0)),
            ctypes.c_ulong(public.value()),
            template,
            ctypes.c_ulong(len(template)),
            ciphertext,
            ctypes.byref(length),
            ctypes.byref(handle),
        )
        self._ok(rv)
        return ciphertext.raw[: length.value], self._secret(handle)

    def decapsulate(self, private, ciphertext):
        """C_DecapsulateKey; returns the shared secret."""
        template, keep = self._secret_template()
        handle = ctypes.c_ulong()
        rv = self.so.C_DecapsulateKey(
            self._handle(),
            ctypes.byref(CK_MECHANISM(CKM_ML_KEM, None, 0)),
            ctypes.c_ulong(private.value()),
            template,
            ctypes.c_ulong(len(template)),
            ciphertext,
            ctypes.c_ulong(len(ciphertext)),
            ctypes.byref(handle),
        )
        self._ok(rv)
        return self._secret(handle)

    def _handle(self):
        return ctypes.c_ulong(self.session.session.value())

    @staticmethod
    def _ok(rv):
        if rv != 0:
            raise PyKCS11Error(rv)

    @staticmethod
    def _secret_template():
        """A readable generic secret, so the shared secret's CKA_VALUE can be compared. Returns the
        attribute array and the buffers it points into, which must outlive the call."""
        values = [
            (CKA_CLASS, ulong(CKO_SECRET_KEY)),
            (CKA_KEY_TYPE, ulong(CKK_GENERIC_SECRET)),
            (CKA_TOKEN, b"\x00"),
            (CKA_SENSITIVE, b"\x00"),
            (CKA_EXTRACTABLE, TRUE_BYTE),
        ]
        buffers = [ctypes.create_string_buffer(value, len(value)) for _, value in values]
        template = (CK_ATTRIBUTE * len(values))(
            *(
                CK_ATTRIBUTE(kind, ctypes.addressof(buffer), len(value))
                for (kind, value), buffer in zip(values, buffers)
            )
        )
        return template, buffers

    def _secret(self, handle):
        key = CK_OBJECT_HANDLE(self.session)
        key.assign(handle.value)
        return self.value(key)


def sign_additional_context(hedge, context):
    """CK_SIGN_ADDITIONAL_CONTEXT {hedgeVariant, pContext, ulContextLen} as raw parameter bytes.
    PyKCS11 copies these bytes; the pointer in them refers to the returned buffer, which the caller
    keeps alive until the operation is over."""
    buffer = ctypes.create_string_buffer(context, len(context))
    return struct.pack("@LPL", hedge, ctypes.addressof(buffer), len(context)), buffer


# ---- checks: each raises on failure ----


def dilithium5_module_key(t):
    public, private = t.keypair(
        CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN, [(CKA_VERIFY, CK_TRUE)], [(CKA_SIGN, CK_TRUE)]
    )
    pk = t.value(public)
    signature = t.sign(private, CKM_B4AE_DILITHIUM5, MESSAGE)
    require((len(pk), len(signature)) == (2592, 4595), f"pk {len(pk)} and signature {len(signature)} bytes")
    require(Dilithium5.verify(pk, MESSAGE, signature), "dilithium-py rejects the module's signature")
    require(
        not Dilithium5.verify(pk, MESSAGE, flip_bit(signature, 1000)), "dilithium-py accepts a flipped bit"
    )


def dilithium5_imported_key(t):
    pk, sk = Dilithium5.keygen()
    require(len(sk) == 4864, f"dilithium-py's secret key is {len(sk)} bytes")
    private = t.create(CKO_PRIVATE_KEY, CKK_B4AE_DILITHIUM5, sk, (CKA_SIGN, CK_TRUE))
    public = t.create(CKO_PUBLIC_KEY, CKK_B4AE_DILITHIUM5, pk, (CKA_VERIFY, CK_TRUE))
    # Round-3 Dilithium signs deterministically in both implementations.
    require(
        t.sign(private, CKM_B4AE_DILITHIUM5, MESSAGE) == Dilithium5.sign(sk, MESSAGE), "signatures differ"
    )
    other = b"signed by dilithium-py"
    theirs = Dilithium5.sign(sk, other)
    require(t.verify(public, CKM_B4AE_DILITHIUM5, other, theirs), "C_Verify rejects dilithium-py's signature")
    require(
        not t.verify(public, CKM_B4AE_DILITHIUM5, other, flip_bit(theirs, 1000)),
        "C_Verify accepts a flipped bit",
    )


def ml_dsa_both_ways(t, parameter_set):
    _, py, _ = ML_DSA[parameter_set]
    public, private = t.keypair(
        CKM_ML_DSA_KEY_PAIR_GEN,
        [(CKA_PARAMETER_SET, ulong(parameter_set)), (CKA_VERIFY, CK_TRUE)],
        [(CKA_SIGN, CK_TRUE)],
    )
    pk = t.value(public)
    signature = t.sign(private, CKM_ML_DSA, MESSAGE)
    require(py.verify(pk, MESSAGE, signature), "dilithium-py rejects the module's signature")
    require(not py.verify(pk, MESSAGE, flip_bit(signature, 100)), "dilithium-py accepts a flipped bit")

    py_pk, py_sk = py.keygen()
    imported = t.create(
        CKO_PUBLIC_KEY, CKK_ML_DSA, py_pk, (CKA_PARAMETER_SET, ulong(parameter_set)), (CKA_VERIFY, CK_TRUE)
    )
    require(
        t.verify(imported, CKM_ML_DSA, MESSAGE, py.sign(py_sk, MESSAGE)),
        "C_Verify rejects dilithium-py's signature",
    )


def ml_dsa_seed_and_context(t, parameter_set):
    _, py, _ = ML_DSA[parameter_set]
    public, private = t.keypair(
        CKM_ML_DSA_KEY_PAIR_GEN,
        [(CKA_PARAMETER_SET, ulong(parameter_set)), (CKA_VERIFY, CK_TRUE)],
        [(CKA_SIGN, CK_TRUE), (CKA_SENSITIVE, CK_FALSE), (CKA_EXTRACTABLE, CK_TRUE)],
    )
    pk, sk, seed = t.value(public), t.value(private), t.value(private, CKA_SEED)
    require(py.key_derive(seed) == (pk, sk), "the key pair is not the one FIPS 204 derives from its CKA_SEED")
    parameter, keep = sign_additional_context(CKH_DETERMINISTIC_REQUIRED, CONTEXT)
    signature = t.sign(private, CKM_ML_DSA, MESSAGE, parameter)
    require(signature == py.sign(sk, MESSAGE, CONTEXT, deterministic=True), "deterministic signatures differ")
    require(py.verify(pk, MESSAGE, signature, CONTEXT), "dilithium-py rejects it under the context")
    require(not py.verify(pk, MESSAGE, signature), "dilithium-py accepts it without the context")


def hash_ml_dsa(t, mechanism, parameter_set):
    hash_name, shake_len, oid_arc = HASH_ML_DSA[mechanism]
    _, py, py_hash = ML_DSA[parameter_set]
    public, private = t.keypair(
        CKM_ML_DSA_KEY_PAIR_GEN,
        [(CKA_PARAMETER_SET, ulong(parameter_set)), (CKA_VERIFY, CK_TRUE)],
        [(CKA_SIGN, CK_TRUE)],
    )
    pk = t.value(public)
    signature = t.sign(private, mechanism, MESSAGE)
    if hash_name in DILITHIUM_PY_PREHASH:
        valid = py_hash._verify_with_pre_hash(pk, MESSAGE, signature, DILITHIUM_PY_PREHASH[hash_name])
    else:
        digest = hashlib.new(hash_name, MESSAGE)
        ph = digest.digest(shake_len) if shake_len else digest.digest()
        oid = bytes.fromhex("06096086480165030402") + bytes([oid_arc])  # DER of 2.16.840.1.101.3.4.2.x
        valid = py._verify_internal(
            pk, b"\x01\x00" + oid + ph, signature
        )  # M' = 1 || |ctx| = 0 || OID || PH(M)
    require(valid, "the signature does not verify as HashML-DSA")
    require(not py.verify(pk, MESSAGE, signature), "it also verifies as pure ML-DSA")


def ml_kem_module_key(t, parameter_set):
    _, py, ciphertext_len = ML_KEM[parameter_set]
    public, private = t.keypair(
        CKM_ML_KEM_KEY_PAIR_GEN,
        [(CKA_PARAMETER_SET, ulong(parameter_set)), (CKA_ENCAPSULATE, TRUE_BYTE)],
        [(CKA_DECAPSULATE, TRUE_BYTE)],
    )
    secret, ciphertext = py.encaps(t.value(public))
    require(len(ciphertext) == ciphertext_len, f"kyber-py's ciphertext is {len(ciphertext)} bytes")
    require(t.decapsulate(private, ciphertext) == secret, "the module decapsulates another secret")


def ml_kem_module_encapsulates(t, parameter_set):
    _, py, ciphertext_len = ML_KEM[parameter_set]
    ek, dk = py.keygen()
    public = t.create(
        CKO_PUBLIC_KEY,
        CKK_ML_KEM,
        ek,
        (CKA_PARAMETER_SET, ulong(parameter_set)),
        (CKA_ENCAPSULATE, TRUE_BYTE),
    )
    ciphertext, secret = t.encapsulate(public, ciphertext_len)
    require(
        len(ciphertext) == ciphertext_len and len(secret) == 32,
        f"{len(ciphertext)}-byte ciphertext, {len(secret)}-byte secret",
    )
    require(py.decaps(dk, ciphertext) == secret, "kyber-py decapsulates another secret")


def ml_kem_imported_private(t, parameter_set):
    _, py, _ = ML_KEM[parameter_set]
    ek, dk = py.keygen()
    private = t.create(
        CKO_PRIVATE_KEY,
        CKK_ML_KEM,
        dk,
        (CKA_PARAMETER_SET, ulong(parameter_set)),
        (CKA_DECAPSULATE, TRUE_BYTE),
    )
    secret, ciphertext = py.encaps(ek)
    require(t.decapsulate(private, ciphertext) == secret, "the module decapsulates another secret")


def split_hybrid(signature):
    """u32be(64) || Ed25519 signature || ML-DSA-87 signature -> (Ed25519 half, ML-DSA half)."""
    require(len(signature) == 4695, f"signature is {len(signature)} bytes")
    require(signature[:4] == struct.pack(">I", 64), f"length prefix {signature[:4].hex()}")
    return signature[4:68], signature[68:]


def hybrid_module_key(t):
    public, private = t.keypair(CKM_B4AE_HYBRID_KEY_PAIR_GEN, [(CKA_VERIFY, CK_TRUE)], [(CKA_SIGN, CK_TRUE)])
    pk = t.value(public)
    require(len(pk) == 32 + 2592, f"public CKA_VALUE is {len(pk)} bytes")
    require(
        t.value(public, CKA_B4AE_ED25519_PUBLIC) == pk[:32],
        "CKA_B4AE_ED25519_PUBLIC is not CKA_VALUE's first 32 bytes",
    )
    require(
        t.value(public, CKA_B4AE_MLDSA_PUBLIC) == pk[32:],
        "CKA_B4AE_MLDSA_PUBLIC is not CKA_VALUE's ML-DSA part",
    )
    signature = t.sign(private, CKM_B4AE_HYBRID, MESSAGE)
    ed25519, ml_dsa = split_hybrid(signature)
    Ed25519PublicKey.from_public_bytes(pk[:32]).verify(ed25519, MESSAGE)  # raises InvalidSignature
    require(ML_DSA_87.verify(pk[32:], MESSAGE, ml_dsa), "dilithium-py rejects the ML-DSA-87 half")
    require(
        t.verify(public, CKM_B4AE_HYBRID, MESSAGE, signature), "C_Verify rejects the module's own signature"
    )
    require(
        not t.verify(public, CKM_B4AE_HYBRID, MESSAGE, flip_bit(signature, 4 + 10)),
        "C_Verify accepts a corrupt Ed25519 half",
    )
    require(
        not t.verify(public, CKM_B4AE_HYBRID, MESSAGE, flip_bit(signature, 68 + 100)),
        "C_Verify accepts a corrupt ML-DSA half",
    )


def hybrid_imported_key(t):
    ed25519 = Ed25519PrivateKey.generate()
    pk, sk = ML_DSA_87.keygen()
    private = t.create(
        CKO_PRIVATE_KEY, CKK_B4AE_HYBRID, ed25519.private_bytes_raw() + sk, (CKA_SIGN, CK_TRUE)
    )
    ed25519_half, ml_dsa_half = split_hybrid(t.sign(private, CKM_B4AE_HYBRID, MESSAGE))
    require(
        ed25519_half == ed25519.sign(MESSAGE),
        "the Ed25519 half differs from cryptography's (Ed25519 is deterministic)",
    )
    require(ML_DSA_87.verify(pk, MESSAGE, ml_dsa_half), "dilithium-py rejects the ML-DSA-87 half")


def checks():
    """(name, function, arguments after the token) for every check, in order."""
    yield "Dilithium5: module signature verifies in dilithium-py", dilithium5_module_key, ()
    yield "Dilithium5: imported key signs byte for byte as dilithium-py", dilithium5_imported_key, ()
    for ps, (name, _, _) in ML_DSA.items():
        yield f"{name}: module and dilithium-py signatures verify both ways", ml_dsa_both_ways, (ps,)
        yield f"{name}: CKA_SEED and deterministic signing with a context", ml_dsa_seed_and_context, (ps,)
    for i, (mechanism, (hash_name, _, _)) in enumerate(HASH_ML_DSA.items()):
        ps = i % 3 + 1  # spread the ten hashes over the three parameter sets
        yield f"HashML-DSA {hash_name} (0x{mechanism:X}) with {ML_DSA[ps][0]}", hash_ml_dsa, (mechanism, ps)
    for ps, (name, _, _) in ML_KEM.items():
        yield f"{name}: kyber-py encapsulates, C_DecapsulateKey agrees", ml_kem_module_key, (ps,)
        yield f"{name}: C_EncapsulateKey, kyber-py decapsulates", ml_kem_module_encapsulates, (ps,)
        yield f"{name}: imported kyber-py private key decapsulates", ml_kem_imported_private, (ps,)
    yield "B4AE hybrid: layout, each half verifies independently, a corrupt half fails", hybrid_module_key, ()
    yield "B4AE hybrid: imported key signs as cryptography and dilithium-py", hybrid_imported_key, ()


def prepare(work, admin):
    """A SoftHSM2 token and the module configuration (embedded slot 0, SoftHSM2 slot 1), in the
    environment before the module is loaded; the embedded token is initialised with the admin tool."""
    (work / "softhsm").mkdir()
    (work / "softhsm2.conf").write_text(
        f"directories.tokendir = {work}/softhsm\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    os.environ["SOFTHSM2_CONF"] = str(work / "softhsm2.conf")
    quiet = {"check": True, "stdout": subprocess.DEVNULL}
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "hsm", "--so-pin", SO_PIN, "--pin", PIN],
        **quiet,
    )
    (work / "b4ae.toml").write_text(
        f'[[token]]\nlabel = "X"\nbackend = "embedded"\npath = "{work}/tok"\npin_kdf = "test-only-fast"\n\n'
        f'[[token]]\nlabel = "HSM"\nbackend = "pkcs11"\nlibrary = "{SOFTHSM}"\ntoken_label = "hsm"\n'
    )
    os.environ["B4AE_PKCS11_CONF"] = str(work / "b4ae.toml")
    os.environ.setdefault("B4AE_PKCS11_LOG", "warn")
    # The admin tool takes PINs from the environment (or files, or a prompt), never from arguments.
    subprocess.run(
        [str(admin), "init-token", "--slot", "0", "--label", "cross"],
        env={**os.environ, "B4AE_SO_PIN": SO_PIN, "B4AE_USER_PIN": PIN},
        **quiet,
    )


class Tally:
    passed = failed = 0

    def run(self, name, function, *args):
        """Runs one check and prints its line; returns the function's result, None if it failed."""
        try:
            result = function(*args)
        except Exception as error:  # a module error or a mismatch fails this check only
            self.failed += 1
            print(f"not ok - {name}: {type(error).__name__}: {error}", flush=True)
            return None
        self.passed += 1
        print(f"ok - {name}", flush=True)
        return result


def main():
    module = Path(sys.argv[1]).resolve()
    tally = Tally()
    with tempfile.TemporaryDirectory() as work:
        prepare(Path(work), module.parent / "b4ae-pkcs11")
        lib = PyKCS11Lib().load(str(module))
        # PyKCS11 dlopen()ed this path and initialised the module; ctypes gets the same library.
        so = ctypes.CDLL(str(module))
        so.C_EncapsulateKey.restype = so.C_DecapsulateKey.restype = ctypes.c_ulong  # CK_RV
        slots = {lib.getTokenInfo(slot).label.strip(): slot for slot in lib.getSlotList(tokenPresent=True)}
        for backend, token_label in (("embedded", "cross"), ("pkcs11 over SoftHSM2", "hsm")):
            token = tally.run(
                f"{backend}: open a session and log in", lambda: Token(lib, so, slots[token_label])
            )
            if token is None:
                continue
            for name, function, args in checks():
                tally.run(f"{backend}: {name}", function, token, *args)
            token.session.closeSession()
        lib.unload()
    print(f"# crosscheck.py: {tally.passed} passed, {tally.failed} failed")
    print("# crosscheck.py done")
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())

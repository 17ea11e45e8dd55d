#!/usr/bin/env python3
"""What pkcs11-tool cannot do for the pkcs11-tool part, done with PyKCS11 through the module.

OpenSC's pkcs11-tool (even 0.27) cannot generate the vendor key types: `--keypairgen` sends the
mechanism given with -m but always with the template of a key type it knows (for ML-DSA-87:
CKA_PARAMETER_SET), which a Dilithium5 or hybrid key pair refuses. So the keys are made here, and
pkcs11-tool signs and verifies with them by CKA_ID.

  pykeys.py gen    MODULE SLOT KIND ID_HEX LABEL       KIND: dilithium5 | hybrid | ml-dsa-44/65/87
  pykeys.py sign   MODULE SLOT MECH ID_HEX IN OUT      single-part C_Sign (MECH a number, 0x...)
  pykeys.py verify MODULE SLOT MECH ID_HEX IN SIG      single-part C_Verify: prints valid / invalid
  pykeys.py pub    MODULE SLOT ID_HEX OUT              the public key's CKA_VALUE
  pykeys.py check  KIND PUB IN SIG                     verifies outside the module: dilithium-py
                                                       (round-3 Dilithium5, ML-DSA, HashML-DSA)
                                                       and cryptography (Ed25519 half of the
                                                       hybrid); KIND as for gen, or
                                                       hash-ml-dsa-87-sha512
The user PIN is $USER_PIN (default 11223344). Prints one line; exits non-zero on failure.
"""

import os
import struct
import sys

PIN = os.environ.get("USER_PIN", "11223344")

CKM = {
    "dilithium5": 0xB4AE0001,  # CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN
    "hybrid": 0xB4AE0003,  # CKM_B4AE_HYBRID_KEY_PAIR_GEN
    "ml-dsa-44": 0x1C,  # CKM_ML_DSA_KEY_PAIR_GEN
    "ml-dsa-65": 0x1C,
    "ml-dsa-87": 0x1C,
}
PARAMETER_SET = {"ml-dsa-44": 1, "ml-dsa-65": 2, "ml-dsa-87": 3}
CKA_PARAMETER_SET = 0x61D


def ulong(value):
    # PyKCS11 passes attributes it does not know (CKA_PARAMETER_SET) as raw bytes.
    return struct.pack("@L", value)


def open_session(module, slot):
    import PyKCS11

    lib = PyKCS11.PyKCS11Lib()
    lib.load(module)
    session = lib.openSession(int(slot), PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
    session.login(PIN)
    return PyKCS11, lib, session


def find(PyKCS11, session, cls, id_hex):
    found = session.findObjects([(PyKCS11.CKA_CLASS, cls), (PyKCS11.CKA_ID, bytes.fromhex(id_hex))])
    if len(found) != 1:
        raise SystemExit(f"pykeys: {len(found)} objects of class {cls} with CKA_ID {id_hex}")
    return found[0]


def gen(module, slot, kind, id_hex, label):
    PyKCS11, _lib, session = open_session(module, slot)
    common = [
        (PyKCS11.CKA_TOKEN, PyKCS11.CK_TRUE),
        (PyKCS11.CKA_ID, bytes.fromhex(id_hex)),
        (PyKCS11.CKA_LABEL, label),
    ]
    public = common + [(PyKCS11.CKA_VERIFY, PyKCS11.CK_TRUE)]
    private = common + [(PyKCS11.CKA_SIGN, PyKCS11.CK_TRUE), (PyKCS11.CKA_PRIVATE, PyKCS11.CK_TRUE)]
    if kind in PARAMETER_SET:
        public.append((CKA_PARAMETER_SET, ulong(PARAMETER_SET[kind])))
    pub, _priv = session.generateKeyPair(public, private, PyKCS11.Mechanism(CKM[kind]))
    value = bytes(session.getAttributeValue(pub, [PyKCS11.CKA_VALUE])[0])
    session.logout()
    print(f"generated {kind} key pair {id_hex} '{label}' on slot {slot}: public key {len(value)} bytes")


def sign(module, slot, mech, id_hex, infile, outfile):
    PyKCS11, _lib, session = open_session(module, slot)
    key = find(PyKCS11, session, PyKCS11.CKO_PRIVATE_KEY, id_hex)
    with open(infile, "rb") as f:
        data = f.read()
    sig = bytes(session.sign(key, data, PyKCS11.Mechanism(int(mech, 0))))
    with open(outfile, "wb") as f:
        f.write(sig)
    print(f"signed {len(data)} bytes: {len(sig)}-byte signature")


def verify(module, slot, mech, id_hex, infile, sigfile):
    PyKCS11, _lib, session = open_session(module, slot)
    key = find(PyKCS11, session, PyKCS11.CKO_PUBLIC_KEY, id_hex)
    with open(infile, "rb") as f:
        data = f.read()
    with open(sigfile, "rb") as f:
        sig = f.read()
    try:
        ok = session.verify(key, data, sig, PyKCS11.Mechanism(int(mech, 0)))
    except PyKCS11.PyKCS11Error as e:
        print(f"invalid ({e})")
        sys.exit(1)
    print("valid" if ok else "invalid")
    sys.exit(0 if ok else 1)


def pub(module, slot, id_hex, outfile):
    PyKCS11, _lib, session = open_session(module, slot)
    key = find(PyKCS11, session, PyKCS11.CKO_PUBLIC_KEY, id_hex)
    value = bytes(session.getAttributeValue(key, [PyKCS11.CKA_VALUE])[0])
    with open(outfile, "wb") as f:
        f.write(value)
    print(f"public key {len(value)} bytes")


def check(kind, pubfile, infile, sigfile):
    with open(pubfile, "rb") as f:
        pk = f.read()
    with open(infile, "rb") as f:
        msg = f.read()
    with open(sigfile, "rb") as f:
        sig = f.read()
    if kind == "dilithium5":
        from dilithium_py.dilithium import Dilithium5

        ok = Dilithium5.verify(pk, msg, sig)
    elif kind == "hybrid":
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        from dilithium_py.ml_dsa import ML_DSA_87

        ok = len(sig) == 4695 and sig[:4] == b"\x00\x00\x00\x40"
        try:
            Ed25519PublicKey.from_public_bytes(pk[:32]).verify(sig[4:68], msg)
        except InvalidSignature:
            ok = False
        ok = ok and ML_DSA_87.verify(pk[32:], msg, sig[68:], ctx=b"")
    else:
        from dilithium_py import ml_dsa

        scheme = {
            "ml-dsa-44": ml_dsa.ML_DSA_44,
            "ml-dsa-65": ml_dsa.ML_DSA_65,
            "ml-dsa-87": ml_dsa.ML_DSA_87,
            "hash-ml-dsa-87-sha512": ml_dsa.HASH_ML_DSA_87_WITH_SHA512,
        }[kind]
        ok = scheme.verify(pk, msg, sig, ctx=b"")
    print("valid" if ok else "invalid")
    sys.exit(0 if ok else 1)


COMMANDS = {"gen": (gen, 5), "sign": (sign, 6), "verify": (verify, 6), "pub": (pub, 4), "check": (check, 4)}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS or len(sys.argv) - 2 != COMMANDS[sys.argv[1]][1]:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]][0](*sys.argv[2:])

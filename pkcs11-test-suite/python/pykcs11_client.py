#!/usr/bin/env python3
"""PyKCS11 as an application uses it: on each slot, generate, sign and verify with ML-DSA-44/65/87,
round-3 Dilithium5 and the B4AE hybrid; check the signature lengths, CKA_B4AE_CUSTODY, and that a
tampered signature is refused with CKR_SIGNATURE_INVALID.

Usage: pykcs11_client.py MODULE SLOT:NAME[,SLOT:NAME...]
Prints `ok - ...` / `not ok - ...` lines (run.sh counts them).

PyKCS11 knows the types of only a fixed list of attributes: any other one (CKA_PARAMETER_SET
included, although PyKCS11 1.5.20 has the constant) is sent as raw bytes, so a CK_ULONG is given in
its C layout (struct.pack("@L", n)) and a CK_BBOOL as b"\\x01". Mechanisms are plain integers.
"""

import struct
import sys

from common import (
    ALGORITHMS,
    CKA_B4AE_CUSTODY,
    CKA_B4AE_ED25519_PUBLIC,
    CKA_B4AE_MLDSA_PUBLIC,
    CKA_PARAMETER_SET,
    CKK_B4AE_HYBRID,
    CKM_B4AE_DILITHIUM5,
    CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN,
    CKM_B4AE_HYBRID,
    CKM_B4AE_HYBRID_KEY_PAIR_GEN,
    CKM_ML_DSA,
    CKM_ML_DSA_KEY_PAIR_GEN,
    CKM_ML_KEM,
    CKM_ML_KEM_KEY_PAIR_GEN,
    CKR_SIGNATURE_INVALID,
    MESSAGE,
    PIN,
    Tally,
    expected_custody,
    flip_bit,
    parse_slots,
    require,
)
from PyKCS11 import (
    CK_FALSE,
    CK_TRUE,
    CKA_KEY_TYPE,
    CKA_SIGN,
    CKA_TOKEN,
    CKA_VALUE,
    CKA_VERIFY,
    CKF_DECAPSULATE,
    CKF_ENCAPSULATE,
    CKF_GENERATE_KEY_PAIR,
    CKF_RW_SESSION,
    CKF_SERIAL_SESSION,
    CKF_SIGN,
    CKF_VERIFY,
    CKM,
    CKR_OK,
    Mechanism,
    PyKCS11Error,
    PyKCS11Lib,
    ckbytelist,
)


def ulong(value):
    """A CK_ULONG attribute value as PyKCS11 must pass it for attributes it does not know."""
    return struct.pack("@L", value)


def raw(session, key, attribute):
    value = session.getAttributeValue(key, [attribute], allAsBinary=True)[0]
    require(value is not None, f"attribute 0x{attribute:X} cannot be read")
    return bytes(value)


def raw_verify(session, key, mechanism, data, signature):
    """C_VerifyInit + C_Verify through PyKCS11's low-level layer, returning the CK_RV itself
    (Session.verify maps CKR_SIGNATURE_INVALID to False and raises on anything else)."""
    rv = session.lib.C_VerifyInit(session.session, Mechanism(mechanism).to_native(), key)
    if rv != CKR_OK:
        raise PyKCS11Error(rv)
    return session.lib.C_Verify(session.session, ckbytelist(data), ckbytelist(signature))


def sign_and_verify(session, backend, algorithm):
    public_template = [(CKA_TOKEN, CK_FALSE), (CKA_VERIFY, CK_TRUE)]
    if algorithm.parameter_set is not None:
        public_template.append((CKA_PARAMETER_SET, ulong(algorithm.parameter_set)))
    public, private = session.generateKeyPair(
        public_template,
        [(CKA_TOKEN, CK_FALSE), (CKA_SIGN, CK_TRUE)],
        mecha=Mechanism(algorithm.keygen),
    )
    key_type = session.getAttributeValue(private, [CKA_KEY_TYPE])[0]
    require(key_type == algorithm.key_type, f"CKA_KEY_TYPE is 0x{key_type:X}")
    public_value = raw(session, public, CKA_VALUE)
    require(len(public_value) == algorithm.public_len, f"public CKA_VALUE is {len(public_value)} bytes")
    custody = struct.unpack("@L", raw(session, private, CKA_B4AE_CUSTODY))[0]
    require(custody == expected_custody(backend), f"CKA_B4AE_CUSTODY is {custody}")

    signature = bytes(session.sign(private, MESSAGE, Mechanism(algorithm.mechanism)))
    require(
        len(signature) == algorithm.signature_len,
        f"signature is {len(signature)} bytes, not {algorithm.signature_len}",
    )
    require(session.verify(public, MESSAGE, signature, Mechanism(algorithm.mechanism)), "C_Verify refuses it")
    require(
        not session.verify(public, MESSAGE + b"!", signature, Mechanism(algorithm.mechanism)),
        "C_Verify accepts it for another message",
    )
    for index in (len(signature) // 2, len(signature) - 1):
        rv = raw_verify(session, public, algorithm.mechanism, MESSAGE, flip_bit(signature, index))
        require(
            rv == CKR_SIGNATURE_INVALID,
            f"a bit flipped at byte {index}: C_Verify answers 0x{rv:X}, not CKR_SIGNATURE_INVALID",
        )

    if algorithm.key_type == CKK_B4AE_HYBRID:
        require(signature[:4] == b"\x00\x00\x00\x40", f"hybrid prefix {signature[:4].hex()}")
        require(raw(session, public, CKA_B4AE_ED25519_PUBLIC) == public_value[:32], "Ed25519 half")
        require(raw(session, public, CKA_B4AE_MLDSA_PUBLIC) == public_value[32:], "ML-DSA-87 half")
    if algorithm.name == "Dilithium5":
        again = bytes(session.sign(private, MESSAGE, Mechanism(algorithm.mechanism)))
        require(again == signature, "round-3 Dilithium5 signing is not deterministic")
    return f"{len(signature)}-byte signature, custody {custody}"


# mechanism -> the CKF_ flags C_GetMechanismInfo must report
MECHANISM_FLAGS = {
    CKM_ML_DSA_KEY_PAIR_GEN: CKF_GENERATE_KEY_PAIR,
    CKM_ML_DSA: CKF_SIGN | CKF_VERIFY,
    CKM_ML_KEM_KEY_PAIR_GEN: CKF_GENERATE_KEY_PAIR,
    CKM_ML_KEM: CKF_ENCAPSULATE | CKF_DECAPSULATE,
    CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN: CKF_GENERATE_KEY_PAIR,
    CKM_B4AE_DILITHIUM5: CKF_SIGN | CKF_VERIFY,
    CKM_B4AE_HYBRID_KEY_PAIR_GEN: CKF_GENERATE_KEY_PAIR,
    CKM_B4AE_HYBRID: CKF_SIGN | CKF_VERIFY,
}


def mechanisms(lib, slot):
    """getMechanismList() gives names (vendor ones as CKM_VENDOR_DEFINED_0x<value - 0x80000000>);
    PyKCS11 1.5.20 also appends CKM_ML_DSA to every list, so only inclusion is checked here.
    getMechanismInfo() takes such a name, not a number."""
    names = lib.getMechanismList(slot)
    for mechanism, flags in MECHANISM_FLAGS.items():
        name = CKM[mechanism]
        require(name in names, f"{name} (0x{mechanism:X}) is not listed")
        info = lib.getMechanismInfo(slot, name)
        require(info.flags & flags == flags, f"{name}: flags 0x{info.flags:X} lack 0x{flags:X}")
    return f"{len(names)} names"


def main():
    module, slots = sys.argv[1], parse_slots(sys.argv[2])
    tally = Tally()
    lib = PyKCS11Lib().load(module)  # C_Initialize(NULL): this process uses it from one thread
    info = lib.getInfo()
    tally.run(
        "PyKCS11: C_GetInfo reports Cryptoki 3.2",
        lambda: require(info.cryptokiVersion == (3, 2), f"Cryptoki {info.cryptokiVersion}"),
    )
    present = lib.getSlotList(tokenPresent=True)
    for slot, backend in slots:
        prefix = f"PyKCS11 slot {slot} ({backend})"
        if not tally.run(f"{prefix}: token present", lambda: require(slot in present, f"slots {present}")):
            continue
        tally.run(
            f"{prefix}: getMechanismList/getMechanismInfo: ML-DSA, ML-KEM and the vendor mechanisms",
            mechanisms,
            lib,
            slot,
        )
        session = lib.openSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
        if not tally.run(f"{prefix}: C_Login", session.login, PIN):
            continue
        for algorithm in ALGORITHMS:
            tally.run(
                f"{prefix}: {algorithm.name} generate, sign, verify, tampered -> CKR_SIGNATURE_INVALID",
                sign_and_verify,
                session,
                backend,
                algorithm,
            )
        session.logout()
        session.closeSession()
    lib.unload()
    print("# pykcs11 done")
    return tally.exit()


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""python-pkcs11 (import name `pkcs11`) as an application uses it, single-threaded: on each slot,
generate, sign and verify with ML-DSA-44/65/87 (its own KeyType.ML_DSA support), round-3
Dilithium5 and the B4AE hybrid (vendor numbers added to its enums); check the signature lengths,
CKA_B4AE_CUSTODY, that a tampered signature is refused with CKR_SIGNATURE_INVALID; and ML-KEM-768
encapsulation through the PKCS#11 3.2 table python-pkcs11 takes from C_GetInterface.

Usage: python_pkcs11_client.py MODULE SLOT:NAME[,SLOT:NAME...]
Prints `ok - ...` / `not ok - ...` lines (run.sh counts them).

python-pkcs11 calls C_Initialize(NULL) (no CKF_OS_LOCKING_OK): use it from one thread only.
"""

import sys

import pkcs11
from common import (
    ALGORITHMS,
    CKA_B4AE_CUSTODY,
    CKA_B4AE_ED25519_PUBLIC,
    CKA_B4AE_MLDSA_PUBLIC,
    CKK_B4AE_DILITHIUM5,
    CKK_B4AE_HYBRID,
    CKM_B4AE_DILITHIUM5,
    CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN,
    CKM_B4AE_HYBRID,
    CKM_B4AE_HYBRID_KEY_PAIR_GEN,
    MESSAGE,
    PIN,
    Tally,
    expected_custody,
    flip_bit,
    parse_slots,
    require,
)
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, MLKEMParameterSet
from pkcs11.attributes import AttributeMapper, handle_bytes, handle_ulong
from pkcs11.exceptions import SignatureInvalid


def add_enum_member(enum_class, name, value):
    """Adds a vendor-defined value to one of python-pkcs11's IntEnums (KeyType, Mechanism), which
    its API requires: generate_keypair() wants a KeyType, sign() a Mechanism, and key.key_type is
    KeyType(CKA_KEY_TYPE). Python 3.11's enum has no public way to extend an enum; this sets the
    same tables that class creation fills in."""
    if value in enum_class._value2member_map_:
        return enum_class(value)
    member = int.__new__(enum_class, value)
    member._name_, member._value_ = name, value
    member.__objclass__ = enum_class
    enum_class._member_map_[name] = member
    enum_class._value2member_map_[value] = member
    enum_class._member_names_.append(name)
    type.__setattr__(enum_class, name, member)
    return member


VENDOR = {
    CKK_B4AE_DILITHIUM5: (
        add_enum_member(KeyType, "B4AE_DILITHIUM5", CKK_B4AE_DILITHIUM5),
        add_enum_member(Mechanism, "B4AE_DILITHIUM5_KEY_PAIR_GEN", CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN),
        add_enum_member(Mechanism, "B4AE_DILITHIUM5", CKM_B4AE_DILITHIUM5),
    ),
    CKK_B4AE_HYBRID: (
        add_enum_member(KeyType, "B4AE_HYBRID", CKK_B4AE_HYBRID),
        add_enum_member(Mechanism, "B4AE_HYBRID_KEY_PAIR_GEN", CKM_B4AE_HYBRID_KEY_PAIR_GEN),
        add_enum_member(Mechanism, "B4AE_HYBRID", CKM_B4AE_HYBRID),
    ),
}


def attribute_mapper():
    """python-pkcs11 packs and unpacks only attributes it has a handler for: register ours."""
    mapper = AttributeMapper()
    mapper.register_handler(CKA_B4AE_CUSTODY, *handle_ulong)
    mapper.register_handler(CKA_B4AE_ED25519_PUBLIC, *handle_bytes)
    mapper.register_handler(CKA_B4AE_MLDSA_PUBLIC, *handle_bytes)
    return mapper


def sign_and_verify(session, backend, algorithm):
    if algorithm.parameter_set is not None:
        key_type, keygen, mechanism = KeyType.ML_DSA, Mechanism.ML_DSA_KEY_PAIR_GEN, Mechanism.ML_DSA
        public, private = session.generate_keypair(
            KeyType.ML_DSA, public_template={Attribute.PARAMETER_SET: algorithm.parameter_set}
        )
    else:
        key_type, keygen, mechanism = VENDOR[algorithm.key_type]
        public, private = session.generate_keypair(
            key_type, mechanism=keygen, capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY
        )
    require(private.key_type == key_type, f"key_type {private.key_type!r}")
    public_value = public[Attribute.VALUE]
    require(len(public_value) == algorithm.public_len, f"public CKA_VALUE is {len(public_value)} bytes")
    custody = private[CKA_B4AE_CUSTODY]
    require(custody == expected_custody(backend), f"CKA_B4AE_CUSTODY is {custody}")

    signature = private.sign(MESSAGE, mechanism=mechanism)
    require(
        len(signature) == algorithm.signature_len,
        f"signature is {len(signature)} bytes, not {algorithm.signature_len}",
    )
    require(public.verify(MESSAGE, signature, mechanism=mechanism), "verify() refuses it")
    require(not public.verify(MESSAGE + b"!", signature, mechanism=mechanism), "accepted for another message")
    for index in (len(signature) // 2, len(signature) - 1):
        # verify() answers False for both CKR_SIGNATURE_INVALID and CKR_SIGNATURE_LEN_RANGE; _verify()
        # raises the exception of the exact CK_RV (SignatureInvalid is CKR_SIGNATURE_INVALID).
        try:
            public._verify(MESSAGE, flip_bit(signature, index), mechanism=mechanism)
        except SignatureInvalid:
            continue
        except pkcs11.PKCS11Error as error:
            raise AssertionError(f"a bit flipped at byte {index}: {type(error).__name__}") from error
        raise AssertionError(f"a bit flipped at byte {index} is accepted")

    if algorithm.key_type == CKK_B4AE_HYBRID:
        require(signature[:4] == b"\x00\x00\x00\x40", f"hybrid prefix {signature[:4].hex()}")
        require(public[CKA_B4AE_ED25519_PUBLIC] == public_value[:32], "Ed25519 half")
        require(public[CKA_B4AE_MLDSA_PUBLIC] == public_value[32:], "ML-DSA-87 half")
    # multi-part, through python-pkcs11's generator form (C_SignUpdate / C_SignFinal)
    chunks = [MESSAGE[:7], MESSAGE[7:]]
    multi = private.sign(iter(chunks), mechanism=mechanism)
    require(len(multi) == algorithm.signature_len, f"multi-part signature is {len(multi)} bytes")
    require(public.verify(iter(chunks), multi, mechanism=mechanism), "multi-part verify refuses it")
    require(public.verify(MESSAGE, multi, mechanism=mechanism), "single-part verify refuses the multi-part one")
    return f"{len(signature)}-byte signature, custody {custody}"


def ml_kem_768(session):
    public, private = session.generate_keypair(
        KeyType.ML_KEM, public_template={Attribute.PARAMETER_SET: MLKEMParameterSet.ML_KEM_768}
    )
    readable = {Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True}
    ciphertext, ours = public.encapsulate_key(KeyType.GENERIC_SECRET, template=readable)
    require(len(ciphertext) == 1088, f"ciphertext is {len(ciphertext)} bytes")
    theirs = private.decapsulate_key(ciphertext, KeyType.GENERIC_SECRET, template=readable)
    secret = ours[Attribute.VALUE]
    require(len(secret) == 32, f"shared secret is {len(secret)} bytes")
    require(theirs[Attribute.VALUE] == secret, "the two shared secrets differ")
    other = private.decapsulate_key(flip_bit(ciphertext, 100), KeyType.GENERIC_SECRET, template=readable)
    require(other[Attribute.VALUE] != secret, "a tampered ciphertext gives the same secret")
    return "1088-byte ciphertext, equal 32-byte secrets"


def main():
    module, slots = sys.argv[1], parse_slots(sys.argv[2])
    tally = Tally()
    lib = pkcs11.lib(module)  # C_Initialize(NULL); also takes the 3.0 and 3.2 tables (C_GetInterface)
    tally.run(
        "python-pkcs11: Cryptoki 3.2",
        lambda: require(lib.cryptoki_version == (3, 2), f"Cryptoki {lib.cryptoki_version}"),
    )
    present = {slot.slot_id: slot for slot in lib.get_slots(token_present=True)}
    for slot_id, backend in slots:
        prefix = f"python-pkcs11 slot {slot_id} ({backend})"
        if not tally.run(f"{prefix}: token present", lambda: require(slot_id in present, f"slots {list(present)}")):
            continue
        token = present[slot_id].get_token()
        session = tally.run(
            f"{prefix}: open a session and log in",
            lambda: token.open(rw=True, user_pin=PIN, attribute_mapper=attribute_mapper()),
        )
        if session is None:
            continue
        for algorithm in ALGORITHMS:
            tally.run(
                f"{prefix}: {algorithm.name} generate, sign (single and multi-part), verify, "
                "tampered -> CKR_SIGNATURE_INVALID",
                sign_and_verify,
                session,
                backend,
                algorithm,
            )
        tally.run(
            f"{prefix}: ML-KEM-768 encapsulate_key/decapsulate_key (C_EncapsulateKey/C_DecapsulateKey)",
            ml_kem_768,
            session,
        )
        session.close()
    lib.unload()
    print("# python-pkcs11 done")
    return tally.exit()


if __name__ == "__main__":
    sys.exit(main())

"""Shared by the Python consumers of pkcs11-test-suite/python: the module's numbers, the
algorithms under test, and the `ok - ` / `not ok - ` lines that run.sh turns into checks.

Numbers are plain integers: the vendor ones are those of include/b4ae_pkcs11.h, the PKCS#11 3.2
ones are the standard values (SPEC §2).
"""

import sys
import traceback

# PKCS#11 3.2 post-quantum numbers.
CKK_ML_KEM, CKK_ML_DSA = 0x49, 0x4A
CKA_PARAMETER_SET = 0x61D
CKM_ML_KEM_KEY_PAIR_GEN, CKM_ML_KEM = 0x0F, 0x17
CKM_ML_DSA_KEY_PAIR_GEN, CKM_ML_DSA = 0x1C, 0x1D
CKP_ML_DSA_44, CKP_ML_DSA_65, CKP_ML_DSA_87 = 1, 2, 3
CKP_ML_KEM_768 = 2

# Vendor-defined B4AE numbers (include/b4ae_pkcs11.h).
CKK_B4AE_DILITHIUM5, CKK_B4AE_HYBRID = 0xB4AE0001, 0xB4AE0002
CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN, CKM_B4AE_DILITHIUM5 = 0xB4AE0001, 0xB4AE0002
CKM_B4AE_HYBRID_KEY_PAIR_GEN, CKM_B4AE_HYBRID = 0xB4AE0003, 0xB4AE0004
CKA_B4AE_ED25519_PUBLIC, CKA_B4AE_MLDSA_PUBLIC, CKA_B4AE_CUSTODY = 0xB4AE0001, 0xB4AE0002, 0xB4AE0003
CUSTODY_HSM_WRAPPED, CUSTODY_EMBEDDED, CUSTODY_AGENT = 2, 3, 4

CKR_OK = 0x0
CKR_SIGNATURE_INVALID = 0xC0
CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191
CKF_OS_LOCKING_OK = 0x2

PIN = "11223344"
MESSAGE = b"b4ae-pkcs11 python consumer"


class Algorithm:
    """One signature algorithm: how to generate its key pair and what its signatures look like."""

    def __init__(self, name, key_type, keygen, mechanism, parameter_set, signature_len, public_len):
        self.name = name
        self.key_type = key_type
        self.keygen = keygen
        self.mechanism = mechanism
        self.parameter_set = parameter_set  # CKA_PARAMETER_SET, or None for the vendor key types
        self.signature_len = signature_len
        self.public_len = public_len


ALGORITHMS = [
    Algorithm("ML-DSA-44", CKK_ML_DSA, CKM_ML_DSA_KEY_PAIR_GEN, CKM_ML_DSA, CKP_ML_DSA_44, 2420, 1312),
    Algorithm("ML-DSA-65", CKK_ML_DSA, CKM_ML_DSA_KEY_PAIR_GEN, CKM_ML_DSA, CKP_ML_DSA_65, 3309, 1952),
    Algorithm("ML-DSA-87", CKK_ML_DSA, CKM_ML_DSA_KEY_PAIR_GEN, CKM_ML_DSA, CKP_ML_DSA_87, 4627, 2592),
    Algorithm(
        "Dilithium5",
        CKK_B4AE_DILITHIUM5,
        CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN,
        CKM_B4AE_DILITHIUM5,
        None,
        4595,
        2592,
    ),
    Algorithm(
        "B4AE hybrid",
        CKK_B4AE_HYBRID,
        CKM_B4AE_HYBRID_KEY_PAIR_GEN,
        CKM_B4AE_HYBRID,
        None,
        4695,
        2624,
    ),
]


def parse_slots(argument):
    """`0:embedded,1:softhsm` -> [(0, "embedded"), (1, "softhsm")]."""
    slots = []
    for item in argument.split(","):
        number, _, name = item.partition(":")
        slots.append((int(number), name or number))
    return slots


def expected_custody(backend):
    """CKA_B4AE_CUSTODY of a post-quantum private key on a slot of this backend (a slot named
    agent-* is served by the custody agent: custody 4 whatever keeps the key behind it)."""
    if backend.startswith("agent"):
        return CUSTODY_AGENT
    return CUSTODY_EMBEDDED if backend == "embedded" else CUSTODY_HSM_WRAPPED


def flip_bit(data, index):
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1 :]


class CheckFailed(Exception):
    pass


def require(condition, what):
    if not condition:
        raise CheckFailed(what)


class Tally:
    """Prints one `ok - name` or `not ok - name: why` line per check; a check that raises fails
    alone and the rest go on."""

    def __init__(self):
        self.failed = 0

    def run(self, name, function, *args):
        try:
            result = function(*args)
        except Exception as error:  # any module error or mismatch fails this check only
            self.failed += 1
            detail = f"{type(error).__name__}: {error}"
            print(f"not ok - {name}: {detail}", flush=True)
            if not isinstance(error, CheckFailed):  # an unexpected exception: where it came from
                for line in traceback.format_exc().splitlines()[-5:]:
                    print(f"#   {line}", flush=True)
            return None
        suffix = f" ({result})" if isinstance(result, str) and result else ""
        print(f"ok - {name}{suffix}", flush=True)
        return result if result is not None else True

    def exit(self):
        sys.stdout.flush()
        return 1 if self.failed else 0

#!/usr/bin/env python3
"""Multi-threaded ML-DSA-65 signing, with the module initialised for threads.

PyKCS11Lib().load() calls C_Initialize(NULL), which tells a module that the application will not
call it from several threads at once. So this process first calls C_Initialize itself, through
ctypes, with CK_C_INITIALIZE_ARGS{flags = CKF_OS_LOCKING_OK}; PyKCS11's own C_Initialize(NULL) then
answers CKR_CRYPTOKI_ALREADY_INITIALIZED, which PyKCS11 accepts, and it attaches to the module
already initialised (dlopen() of the same path gives the same library).

On each slot one ML-DSA-65 key pair is generated, then THREADS threads, each with its own session
on that key, sign and verify PER_THREAD distinct messages:
  1. through PyKCS11: its SWIG layer keeps the GIL during every PKCS#11 call, so the calls of the
     threads interleave but never overlap inside the module;
  2. through ctypes on the same module and key: ctypes releases the GIL for each call, so the
     threads are inside C_Sign / C_Verify at the same time.
Then 2 x THREADS threads run over both slots at once, each on one of ML-DSA-65, Dilithium5 and the
hybrid (through ctypes). Every signature is verified (C_Verify in the signing thread's session);
any error fails the check.

Usage: threads_client.py MODULE SLOT:NAME[,SLOT:NAME...] [THREADS PER_THREAD]
"""

import ctypes
import struct
import sys
import threading
import time

from common import (
    CKA_PARAMETER_SET,
    CKM_B4AE_DILITHIUM5,
    CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN,
    CKM_B4AE_HYBRID,
    CKM_B4AE_HYBRID_KEY_PAIR_GEN,
    CKF_OS_LOCKING_OK,
    CKM_ML_DSA,
    CKM_ML_DSA_KEY_PAIR_GEN,
    CKP_ML_DSA_65,
    CKR_CRYPTOKI_ALREADY_INITIALIZED,
    CKR_OK,
    PIN,
    Tally,
    parse_slots,
    require,
)
from PyKCS11 import (
    CK_FALSE,
    CK_TRUE,
    CKA_SIGN,
    CKA_TOKEN,
    CKA_VERIFY,
    CKF_RW_SESSION,
    CKF_SERIAL_SESSION,
    Mechanism,
    PyKCS11Lib,
)

SIGNATURE_LEN = 3309  # ML-DSA-65
CK_ULONG = ctypes.c_ulong
CK_RV = ctypes.c_ulong


class CK_C_INITIALIZE_ARGS(ctypes.Structure):
    _fields_ = [
        ("CreateMutex", ctypes.c_void_p),
        ("DestroyMutex", ctypes.c_void_p),
        ("LockMutex", ctypes.c_void_p),
        ("UnlockMutex", ctypes.c_void_p),
        ("flags", CK_ULONG),
        ("pReserved", ctypes.c_void_p),
    ]


class CK_MECHANISM(ctypes.Structure):
    _fields_ = [("mechanism", CK_ULONG), ("pParameter", ctypes.c_void_p), ("ulParameterLen", CK_ULONG)]


def load_ctypes(module):
    so = ctypes.CDLL(module)
    prototypes = {
        "C_Initialize": [ctypes.c_void_p],
        "C_OpenSession": [CK_ULONG, CK_ULONG, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(CK_ULONG)],
        "C_CloseSession": [CK_ULONG],
        "C_SignInit": [CK_ULONG, ctypes.POINTER(CK_MECHANISM), CK_ULONG],
        "C_Sign": [CK_ULONG, ctypes.c_char_p, CK_ULONG, ctypes.c_char_p, ctypes.POINTER(CK_ULONG)],
        "C_VerifyInit": [CK_ULONG, ctypes.POINTER(CK_MECHANISM), CK_ULONG],
        "C_Verify": [CK_ULONG, ctypes.c_char_p, CK_ULONG, ctypes.c_char_p, CK_ULONG],
    }
    for name, argtypes in prototypes.items():
        function = getattr(so, name)
        function.argtypes, function.restype = argtypes, CK_RV
    return so


def run_threads(count, work):
    """Runs work(index) in `count` threads at once; returns (seconds, errors)."""
    errors = []
    start = threading.Barrier(count + 1)

    def body(index):
        start.wait()
        try:
            work(index)
        except Exception as error:
            errors.append(f"thread {index}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began, errors


def message(slot, index, n):
    return f"slot {slot} thread {index} signature {n}".encode()


def pykcs11_loop(lib, slot, private, public, threads, per_thread):
    def work(index):
        session = lib.openSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
        try:
            for n in range(per_thread):
                data = message(slot, index, n)
                signature = bytes(session.sign(private, data, Mechanism(CKM_ML_DSA)))
                require(len(signature) == SIGNATURE_LEN, f"signature {n} is {len(signature)} bytes")
                require(session.verify(public, data, signature, Mechanism(CKM_ML_DSA)), f"signature {n} refused")
        finally:
            session.closeSession()

    seconds, errors = run_threads(threads, work)
    require(not errors, "; ".join(errors[:4]))
    total = threads * per_thread
    return f"{total} signed and verified in {seconds:.2f} s, {total / seconds:.0f} sign+verify/s"


def ctypes_loop(so, slot, private, public, threads, per_thread):
    def work_n(index, count):
        session = CK_ULONG()
        rv = so.C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, None, None, ctypes.byref(session))
        require(rv == CKR_OK, f"C_OpenSession 0x{rv:X}")
        mechanism = CK_MECHANISM(CKM_ML_DSA, None, 0)
        buffer = ctypes.create_string_buffer(SIGNATURE_LEN)
        try:
            for n in range(count):
                data = message(slot, index, n)
                rv = so.C_SignInit(session, ctypes.byref(mechanism), private)
                require(rv == CKR_OK, f"C_SignInit 0x{rv:X}")
                length = CK_ULONG(SIGNATURE_LEN)
                rv = so.C_Sign(session, data, len(data), buffer, ctypes.byref(length))
                require(rv == CKR_OK, f"C_Sign 0x{rv:X}")
                require(length.value == SIGNATURE_LEN, f"signature {n} is {length.value} bytes")
                rv = so.C_VerifyInit(session, ctypes.byref(mechanism), public)
                require(rv == CKR_OK, f"C_VerifyInit 0x{rv:X}")
                rv = so.C_Verify(session, data, len(data), buffer.raw, length.value)
                require(rv == CKR_OK, f"C_Verify of signature {n}: 0x{rv:X}")
        finally:
            so.C_CloseSession(session)

    def work(index):
        work_n(index, per_thread)

    seconds, errors = run_threads(threads, work)
    require(not errors, "; ".join(errors[:4]))
    total = threads * per_thread
    rate = f"{total} signed and verified in {seconds:.2f} s, {total / seconds:.0f} sign+verify/s"
    if threads > 1:
        # the same work in one thread, for comparison (the machine has 2 cores)
        seconds_one, errors = run_threads(1, lambda index: work_n(index, per_thread))
        require(not errors, "; ".join(errors[:4]))
        rate += f"; one thread: {per_thread / seconds_one:.0f}/s"
    return rate


def mixed_loop(so, pairs, threads, per_thread):
    """Threads over every (slot, algorithm) pair at once: both backends, ML-DSA-65, Dilithium5 and
    the hybrid (whose Ed25519 half signs inside SoftHSM2 on the pkcs11 backend)."""

    def work(index):
        name, slot, mechanism_type, signature_len, public, private = pairs[index % len(pairs)]
        session = CK_ULONG()
        rv = so.C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, None, None, ctypes.byref(session))
        require(rv == CKR_OK, f"C_OpenSession 0x{rv:X}")
        mechanism = CK_MECHANISM(mechanism_type, None, 0)
        buffer = ctypes.create_string_buffer(signature_len)
        try:
            for n in range(per_thread):
                data = message(slot, index, n)
                length = CK_ULONG(signature_len)
                rv = so.C_SignInit(session, ctypes.byref(mechanism), private)
                if rv == CKR_OK:
                    rv = so.C_Sign(session, data, len(data), buffer, ctypes.byref(length))
                require(rv == CKR_OK, f"{name} on slot {slot}: C_Sign 0x{rv:X}")
                require(length.value == signature_len, f"{name} on slot {slot}: {length.value} bytes")
                rv = so.C_VerifyInit(session, ctypes.byref(mechanism), public)
                if rv == CKR_OK:
                    rv = so.C_Verify(session, data, len(data), buffer.raw, length.value)
                require(rv == CKR_OK, f"{name} on slot {slot}: C_Verify of signature {n}: 0x{rv:X}")
        finally:
            so.C_CloseSession(session)

    seconds, errors = run_threads(threads, work)
    require(not errors, "; ".join(errors[:4]))
    total = threads * per_thread
    return f"{total} signed and verified in {seconds:.2f} s"


MIXED = [  # name, key pair generation, signature mechanism, CKA_PARAMETER_SET, signature length
    ("ML-DSA-65", CKM_ML_DSA_KEY_PAIR_GEN, CKM_ML_DSA, CKP_ML_DSA_65, SIGNATURE_LEN),
    ("Dilithium5", CKM_B4AE_DILITHIUM5_KEY_PAIR_GEN, CKM_B4AE_DILITHIUM5, None, 4595),
    ("B4AE hybrid", CKM_B4AE_HYBRID_KEY_PAIR_GEN, CKM_B4AE_HYBRID, None, 4695),
]


def key_pair(session, keygen, parameter_set):
    public_template = [(CKA_TOKEN, CK_FALSE), (CKA_VERIFY, CK_TRUE)]
    if parameter_set is not None:
        public_template.append((CKA_PARAMETER_SET, struct.pack("@L", parameter_set)))
    return session.generateKeyPair(
        public_template, [(CKA_TOKEN, CK_FALSE), (CKA_SIGN, CK_TRUE)], mecha=Mechanism(keygen)
    )


def main():
    module, slots = sys.argv[1], parse_slots(sys.argv[2])
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    per_thread = int(sys.argv[4]) if len(sys.argv) > 4 else 50
    tally = Tally()

    so = load_ctypes(module)
    args = CK_C_INITIALIZE_ARGS(None, None, None, None, CKF_OS_LOCKING_OK, None)
    rv = so.C_Initialize(ctypes.byref(args))
    if not tally.run(
        "threads: C_Initialize({flags = CKF_OS_LOCKING_OK}) through ctypes",
        lambda: require(rv == CKR_OK, f"C_Initialize answers 0x{rv:X}"),
    ):
        return tally.exit()
    lib = PyKCS11Lib()
    if not tally.run(
        "threads: PyKCS11 load() attaches to the initialised module "
        "(its C_Initialize(NULL) answers CKR_CRYPTOKI_ALREADY_INITIALIZED)",
        lib.load,
        module,
    ):
        return tally.exit()
    again = so.C_Initialize(ctypes.byref(args))
    tally.run(
        "threads: a further C_Initialize answers CKR_CRYPTOKI_ALREADY_INITIALIZED",
        lambda: require(again == CKR_CRYPTOKI_ALREADY_INITIALIZED, f"0x{again:X}"),
    )

    mixed, sessions = [], []  # the keys of the mixed run stay in these sessions until it is over
    for slot, backend in slots:
        prefix = f"threads slot {slot} ({backend})"
        main_session = lib.openSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
        if not tally.run(f"{prefix}: C_Login", main_session.login, PIN):
            continue
        keys = tally.run(
            f"{prefix}: ML-DSA-65 key pair",
            key_pair,
            main_session,
            CKM_ML_DSA_KEY_PAIR_GEN,
            CKP_ML_DSA_65,
        )
        if keys is None:
            continue
        public, private = keys
        tally.run(
            f"{prefix}: PyKCS11, {threads} threads x {per_thread} ML-DSA-65 signatures, own sessions, "
            "all verified",
            pykcs11_loop,
            lib,
            slot,
            private,
            public,
            threads,
            per_thread,
        )
        tally.run(
            f"{prefix}: ctypes (GIL released), {threads} threads x {per_thread} ML-DSA-65 signatures, "
            "own sessions, all verified",
            ctypes_loop,
            so,
            slot,
            private.value(),
            public.value(),
            threads,
            per_thread,
        )
        for name, keygen, mechanism, parameter_set, signature_len in MIXED:
            pair = tally.run(f"{prefix}: {name} key pair for the mixed run", key_pair, main_session, keygen, parameter_set)
            if pair is not None:
                mixed.append((name, slot, mechanism, signature_len, pair[0].value(), pair[1].value()))
        sessions.append(main_session)

    tally.run(
        f"threads: both slots at once, {len(mixed)} (slot, algorithm) pairs, {2 * threads} threads x "
        f"{per_thread // 2} signatures, all verified",
        mixed_loop,
        so,
        mixed,
        2 * threads,
        per_thread // 2,
    )
    for session in sessions:
        session.logout()
        session.closeSession()
    lib.unload()  # C_Finalize
    print("# threads done")
    return tally.exit()


if __name__ == "__main__":
    sys.exit(main())

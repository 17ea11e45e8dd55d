#!/usr/bin/env python3
"""Makes a post-quantum token key pair through a PKCS#11 module: ML-DSA (CKM_ML_DSA_KEY_PAIR_GEN,
ML-DSA-65 unless told) or ML-KEM (CKM_ML_KEM_KEY_PAIR_GEN); the private key sensitive and not
extractable.

OpenSSL 3.0 and pkcs11-tool 0.23 cannot, and this part must not depend on another part's
client, so it is plain ctypes over the 2.40 function table (C_GenerateKeyPair is the same there).
Usage: mldsa_keygen.py <module.so> <slotId> <userPin> <hexId> <label> [ML-DSA-44|65|87|ML-KEM-512|768|1024]
Prints "generated pub=<h> priv=<h> extractable=<0|1> custody=<n>" (the private key's CKA_EXTRACTABLE
and CKA_B4AE_CUSTODY, read back); exits non-zero with the CK_RV on failure.
"""
import ctypes as C
import sys

CK_ULONG = C.c_ulong
CK_RV = CK_ULONG


class CK_ATTRIBUTE(C.Structure):
    _fields_ = [("type", CK_ULONG), ("pValue", C.c_void_p), ("ulValueLen", CK_ULONG)]


class CK_MECHANISM(C.Structure):
    _fields_ = [("mechanism", CK_ULONG), ("pParameter", C.c_void_p), ("ulParameterLen", CK_ULONG)]


# The 2.40 CK_FUNCTION_LIST, up to C_GenerateKeyPair (the 60th entry).
NAMES = ("Initialize Finalize GetInfo GetFunctionList GetSlotList GetSlotInfo GetTokenInfo "
         "GetMechanismList GetMechanismInfo InitToken InitPIN SetPIN OpenSession CloseSession "
         "CloseAllSessions GetSessionInfo GetOperationState SetOperationState Login Logout "
         "CreateObject CopyObject DestroyObject GetObjectSize GetAttributeValue SetAttributeValue "
         "FindObjectsInit FindObjects FindObjectsFinal EncryptInit Encrypt EncryptUpdate "
         "EncryptFinal DecryptInit Decrypt DecryptUpdate DecryptFinal DigestInit Digest "
         "DigestUpdate DigestKey DigestFinal SignInit Sign SignUpdate SignFinal SignRecoverInit "
         "SignRecover VerifyInit Verify VerifyUpdate VerifyFinal VerifyRecoverInit VerifyRecover "
         "DigestEncryptUpdate DecryptDigestUpdate SignEncryptUpdate DecryptVerifyUpdate "
         "GenerateKey GenerateKeyPair").split()


class CK_FUNCTION_LIST(C.Structure):
    _fields_ = [("major", C.c_ubyte), ("minor", C.c_ubyte)] + [(n, C.c_void_p) for n in NAMES]


CKF_RW_SESSION, CKF_SERIAL_SESSION, CKU_USER = 0x2, 0x4, 1
CKA_TOKEN, CKA_PRIVATE, CKA_LABEL, CKA_ID, CKA_SIGN, CKA_VERIFY = 0x1, 0x2, 0x3, 0x102, 0x108, 0x10A
CKA_PARAMETER_SET, CKM_ML_DSA_KEY_PAIR_GEN, CKM_ML_KEM_KEY_PAIR_GEN = 0x61D, 0x1C, 0x0F
CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_B4AE_CUSTODY = 0x103, 0x162, 0xB4AE0003
CKA_ENCAPSULATE, CKA_DECAPSULATE = 0x633, 0x634
CKR_USER_ALREADY_LOGGED_IN = 0x100
# Name -> (key-pair mechanism, CKP_*, usage attributes of the public and the private key).
KINDS = {
    "ML-DSA-44": (CKM_ML_DSA_KEY_PAIR_GEN, 1, CKA_VERIFY, CKA_SIGN),
    "ML-DSA-65": (CKM_ML_DSA_KEY_PAIR_GEN, 2, CKA_VERIFY, CKA_SIGN),
    "ML-DSA-87": (CKM_ML_DSA_KEY_PAIR_GEN, 3, CKA_VERIFY, CKA_SIGN),
    "ML-KEM-512": (CKM_ML_KEM_KEY_PAIR_GEN, 1, CKA_ENCAPSULATE, CKA_DECAPSULATE),
    "ML-KEM-768": (CKM_ML_KEM_KEY_PAIR_GEN, 2, CKA_ENCAPSULATE, CKA_DECAPSULATE),
    "ML-KEM-1024": (CKM_ML_KEM_KEY_PAIR_GEN, 3, CKA_ENCAPSULATE, CKA_DECAPSULATE),
}


def template(items, keep):
    arr = (CK_ATTRIBUTE * len(items))()
    for i, (t, v) in enumerate(items):
        if isinstance(v, bool):
            buf = C.create_string_buffer(bytes([int(v)]), 1)
        elif isinstance(v, int):
            buf = CK_ULONG(v)
        else:
            buf = C.create_string_buffer(v, len(v))
        keep.append(buf)
        arr[i].type, arr[i].pValue, arr[i].ulValueLen = t, C.cast(C.pointer(buf), C.c_void_p), C.sizeof(buf)
    return arr


def main():
    module, slot, pin, hexid, label = sys.argv[1:6]
    mechanism, parameter_set, public_use, private_use = KINDS[sys.argv[6] if len(sys.argv) > 6 else "ML-DSA-65"]
    lib = C.CDLL(module)
    fl_ptr = C.POINTER(CK_FUNCTION_LIST)()
    if lib.C_GetFunctionList(C.byref(fl_ptr)) != 0:
        sys.exit("C_GetFunctionList failed")
    fl = fl_ptr.contents

    def fn(name, *argtypes):
        return C.CFUNCTYPE(CK_RV, *argtypes)(getattr(fl, name))

    def ok(what, rv, allowed=(0,)):
        if rv not in allowed:
            sys.exit("%s returned CK_RV 0x%x" % (what, rv))

    ok("C_Initialize", fn("Initialize", C.c_void_p)(None))
    session = CK_ULONG()
    ok("C_OpenSession", fn("OpenSession", CK_ULONG, CK_ULONG, C.c_void_p, C.c_void_p, C.c_void_p)(
        int(slot), CKF_SERIAL_SESSION | CKF_RW_SESSION, None, None, C.byref(session)))
    p = pin.encode()
    ok("C_Login", fn("Login", CK_ULONG, CK_ULONG, C.c_char_p, CK_ULONG)(session, CKU_USER, p, len(p)),
       (0, CKR_USER_ALREADY_LOGGED_IN))
    keep = []
    ident, lab = bytes.fromhex(hexid), label.encode()
    pub = [(CKA_TOKEN, True), (public_use, True), (CKA_PARAMETER_SET, parameter_set),
           (CKA_ID, ident), (CKA_LABEL, lab)]
    priv = [(CKA_TOKEN, True), (CKA_PRIVATE, True), (private_use, True), (CKA_SENSITIVE, True),
            (CKA_EXTRACTABLE, False), (CKA_ID, ident), (CKA_LABEL, lab)]
    mech = CK_MECHANISM(mechanism, None, 0)
    hpub, hpriv = CK_ULONG(), CK_ULONG()
    ok("C_GenerateKeyPair", fn("GenerateKeyPair", CK_ULONG, C.c_void_p, C.c_void_p, CK_ULONG, C.c_void_p,
                                 CK_ULONG, C.c_void_p, C.c_void_p)(
        session, C.byref(mech), template(pub, keep), len(pub), template(priv, keep), len(priv),
        C.byref(hpub), C.byref(hpriv)))
    extractable, custody = C.create_string_buffer(1), CK_ULONG()
    read = (CK_ATTRIBUTE * 2)()
    read[0].type, read[0].pValue, read[0].ulValueLen = CKA_EXTRACTABLE, C.cast(extractable, C.c_void_p), 1
    read[1].type, read[1].pValue, read[1].ulValueLen = (
        CKA_B4AE_CUSTODY, C.cast(C.pointer(custody), C.c_void_p), C.sizeof(custody))
    ok("C_GetAttributeValue", fn("GetAttributeValue", CK_ULONG, CK_ULONG, C.c_void_p, CK_ULONG)(
        session, hpriv, read, 2))
    print("generated pub=%d priv=%d extractable=%d custody=%d" % (
        hpub.value, hpriv.value, extractable.raw[0], custody.value))
    fn("Logout", CK_ULONG)(session)
    fn("CloseSession", CK_ULONG)(session)
    ok("C_Finalize", fn("Finalize", C.c_void_p)(None))


if __name__ == "__main__":
    main()

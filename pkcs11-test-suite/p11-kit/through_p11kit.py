#!/usr/bin/env python3
"""An application that finds the module's tokens through a p11-kit module (the proxy, or the
remoting client) and uses ML-DSA there with PyKCS11. Part of the p11-kit part of the suite.

  through_p11kit.py proxy  LIBRARY EMBEDDED_LABEL HSM_SLOT_DESCRIPTION PUBDIR
      For each token: C_GetMechanismInfo for ML-DSA, ML-DSA-65 key pair generation, C_Sign /
      C_Verify (a tampered signature refused), a deterministic signature with a context string
      (CK_SIGN_ADDITIONAL_CONTEXT passed through the proxy), ML-KEM-768 key pair generation.
      Writes the public keys, messages and signatures to PUBDIR for an independent check.
  through_p11kit.py client LIBRARY EMBEDDED_LABEL
      Through p11-kit-client.so (p11-kit remoting): the token is there and the user can log in,
      but CKM_ML_DSA is missing from the mechanism list and a sign with it is refused.
  through_p11kit.py check PUBDIR
      dilithium-py verifies what `proxy` wrote.

Prints "ok - ..." / "not ok - ..." lines (lib.sh's format; the part counts them) and exits 0.
The user PIN is $USER_PIN (default 11223344).
"""

import ctypes
import os
import struct
import sys

PIN = os.environ.get("USER_PIN", "11223344")
CKM_ML_DSA_KEY_PAIR_GEN, CKM_ML_DSA = 0x1C, 0x1D
CKM_ML_KEM_KEY_PAIR_GEN = 0x0F
CKK_ML_DSA, CKK_ML_KEM = 0x4A, 0x49
CKA_PARAMETER_SET = 0x61D
CKH_DETERMINISTIC_REQUIRED = 2
CKR_SIGNATURE_INVALID = 0xC0
MESSAGE = b"signed by an application through p11-kit"
CONTEXT = b"b4ae p11-kit context"


def report(name, good, detail=""):
    print(("ok - " if good else "not ok - ") + name)
    if not good and detail:
        for line in str(detail).splitlines():
            print("#   " + line)


def ulong(value):
    return struct.pack("@L", value)


def load(library):
    import PyKCS11

    lib = PyKCS11.PyKCS11Lib()
    lib.load(library)
    return PyKCS11, lib


def mechanism_list(PyKCS11, lib, slot):
    """C_GetMechanismList as numbers. Not PyKCS11's getMechanismList(): the PyKCS11 1.5.20 wheel
    appends 0x1D (CKM_ML_DSA) to every list it returns (`mechanismList.append(0x1D)` in
    PyKCS11/__init__.py), so it would show ML-DSA where there is none."""
    mechanisms = PyKCS11.LowLevel.ckulonglist()
    rv = lib.lib.C_GetMechanismList(slot, mechanisms)
    if rv != PyKCS11.CKR_OK:
        raise PyKCS11.PyKCS11Error(rv)
    return [int(m) for m in mechanisms]


def mechanism_info(PyKCS11, lib, slot, mechanism):
    """C_GetMechanismInfo by number (PyKCS11's getMechanismInfo() wants a name it knows)."""
    info = PyKCS11.LowLevel.CK_MECHANISM_INFO()
    rv = lib.lib.C_GetMechanismInfo(slot, mechanism, info)
    if rv != PyKCS11.CKR_OK:
        raise PyKCS11.PyKCS11Error(rv)
    return info


def find_slot(PyKCS11, lib, label=None, description=None):
    """The slot whose token label (or slot description) is the one given, and which offers
    ML-DSA: the proxy also shows SoftHSM2's own module, whose token has the same label as the
    one our pkcs11 backend stands in front of."""
    found = []
    for slot in lib.getSlotList(tokenPresent=True):
        token = lib.getTokenInfo(slot).label.strip()
        desc = lib.getSlotInfo(slot).slotDescription.strip()
        if (label is not None and token == label) or (description is not None and desc == description):
            found.append(slot)
    return found


def sign_context_mechanism(PyKCS11):
    # CK_SIGN_ADDITIONAL_CONTEXT { CK_HEDGE_TYPE hedgeVariant; CK_BYTE_PTR pContext;
    # CK_ULONG ulContextLen } in the C layout; PyKCS11 copies these bytes, the pointer stays ours.
    buf = ctypes.create_string_buffer(CONTEXT, len(CONTEXT))
    param = struct.pack("@LPL", CKH_DETERMINISTIC_REQUIRED, ctypes.addressof(buf), len(CONTEXT))
    return PyKCS11.Mechanism(CKM_ML_DSA, param), buf


def proxy(library, embedded_label, hsm_description, pubdir):
    PyKCS11, lib = load(library)
    info = lib.getInfo()
    print(f"# {library}: {info.manufacturerID.strip()} / {info.libraryDescription.strip()}, "
          f"Cryptoki {info.cryptokiVersion[0]}.{info.cryptokiVersion[1]}")
    targets = [("embedded", dict(label=embedded_label)), ("softhsm", dict(description=hsm_description))]
    for name, where in targets:
        slots = find_slot(PyKCS11, lib, **where)
        report(f"proxy: exactly one slot for the {name} token ({where})", len(slots) == 1,
               f"slots: {slots}")
        if len(slots) != 1:
            continue
        slot = slots[0]
        try:
            mi = mechanism_info(PyKCS11, lib, slot, CKM_ML_DSA)
            report(f"proxy, {name} (proxy slot {slot:#x}): C_GetMechanismInfo(CKM_ML_DSA) sign|verify, sizes 1-3",
                   bool(mi.flags & PyKCS11.CKF_SIGN) and bool(mi.flags & PyKCS11.CKF_VERIFY)
                   and (mi.ulMinKeySize, mi.ulMaxKeySize) == (1, 3),
                   f"flags {mi.flags:#x}, sizes {mi.ulMinKeySize}-{mi.ulMaxKeySize}")
        except PyKCS11.PyKCS11Error as e:
            report(f"proxy, {name}: C_GetMechanismInfo(CKM_ML_DSA)", False, e)
        session = lib.openSession(slot, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
        try:
            session.login(PIN)
            label = f"p11kit-{name}"
            pub, priv = session.generateKeyPair(
                [(PyKCS11.CKA_TOKEN, PyKCS11.CK_TRUE), (PyKCS11.CKA_LABEL, label),
                 (CKA_PARAMETER_SET, ulong(2)), (PyKCS11.CKA_VERIFY, PyKCS11.CK_TRUE)],
                [(PyKCS11.CKA_TOKEN, PyKCS11.CK_TRUE), (PyKCS11.CKA_LABEL, label),
                 (PyKCS11.CKA_SIGN, PyKCS11.CK_TRUE)],
                PyKCS11.Mechanism(CKM_ML_DSA_KEY_PAIR_GEN))
            kt = session.getAttributeValue(priv, [PyKCS11.CKA_KEY_TYPE])[0]
            pk = bytes(session.getAttributeValue(pub, [PyKCS11.CKA_VALUE])[0])
            report(f"proxy, {name}: ML-DSA-65 key pair generated (CKK_ML_DSA, public key 1952 bytes)",
                   kt == CKK_ML_DSA and len(pk) == 1952, f"key type {kt}, {len(pk)} bytes")
            sig = bytes(session.sign(priv, MESSAGE, PyKCS11.Mechanism(CKM_ML_DSA)))
            report(f"proxy, {name}: C_Sign CKM_ML_DSA gives 3309 bytes", len(sig) == 3309, len(sig))
            report(f"proxy, {name}: C_Verify accepts it",
                   session.verify(pub, MESSAGE, sig, PyKCS11.Mechanism(CKM_ML_DSA)))
            bad = bytearray(sig)
            bad[100] ^= 1
            try:
                res = session.verify(pub, MESSAGE, bytes(bad), PyKCS11.Mechanism(CKM_ML_DSA))
                report(f"proxy, {name}: C_Verify refuses a flipped signature", not res, f"verify returned {res}")
            except PyKCS11.PyKCS11Error as e:
                report(f"proxy, {name}: C_Verify refuses a flipped signature with CKR_SIGNATURE_INVALID",
                       e.value == CKR_SIGNATURE_INVALID, e)
            mech, keep = sign_context_mechanism(PyKCS11)
            s1 = bytes(session.sign(priv, MESSAGE, mech))
            s2 = bytes(session.sign(priv, MESSAGE, mech))
            report(f"proxy, {name}: deterministic signing with a context string (CK_SIGN_ADDITIONAL_CONTEXT through the proxy)",
                   s1 == s2 and len(s1) == 3309 and s1 != sig)
            report(f"proxy, {name}: C_Verify with the same context accepts it", session.verify(pub, MESSAGE, s1, mech))
            del keep
            for fname, data in ((f"{name}.pub", pk), (f"{name}.sig", sig), (f"{name}.ctxsig", s1)):
                with open(os.path.join(pubdir, fname), "wb") as f:
                    f.write(data)
            kpub, _kpriv = session.generateKeyPair(
                [(PyKCS11.CKA_TOKEN, PyKCS11.CK_FALSE), (CKA_PARAMETER_SET, ulong(2))],
                [(PyKCS11.CKA_TOKEN, PyKCS11.CK_FALSE)],
                PyKCS11.Mechanism(CKM_ML_KEM_KEY_PAIR_GEN))
            ek = bytes(session.getAttributeValue(kpub, [PyKCS11.CKA_VALUE])[0])
            report(f"proxy, {name}: ML-KEM-768 key pair generated (encapsulation key 1184 bytes)",
                   len(ek) == 1184, len(ek))
            session.logout()
        except PyKCS11.PyKCS11Error as e:
            report(f"proxy, {name}: ML-DSA through p11-kit-proxy", False, repr(e))
        finally:
            session.closeSession()


def client(library, embedded_label):
    PyKCS11, lib = load(library)
    slots = find_slot(PyKCS11, lib, label=embedded_label)
    report("p11-kit-client.so: the embedded token is there", len(slots) == 1, f"slots: {slots}")
    if len(slots) != 1:
        return
    slot = slots[0]
    mechs = mechanism_list(PyKCS11, lib, slot)
    report("p11-kit-client.so: SHA-256 is carried (0x250 in the mechanism list)", 0x250 in mechs, mechs)
    report("p11-kit-client.so (known limit): CKM_ML_DSA (0x1D) is NOT in the mechanism list",
           CKM_ML_DSA not in mechs, f"list: {[hex(m) for m in mechs]}")
    session = lib.openSession(slot, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
    try:
        session.login(PIN)
        report("p11-kit-client.so: C_Login with the user PIN", True)
        keys = session.findObjects([(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY)])
        kts = [session.getAttributeValue(k, [PyKCS11.CKA_KEY_TYPE])[0] for k in keys]
        report("p11-kit-client.so: the ML-DSA private key made through the proxy is listed (CKK_ML_DSA)",
               CKK_ML_DSA in kts, f"key types: {kts}")
        if keys and CKK_ML_DSA in kts:
            key = keys[kts.index(CKK_ML_DSA)]
            try:
                session.sign(key, MESSAGE, PyKCS11.Mechanism(CKM_ML_DSA))
                report("p11-kit-client.so (known limit): C_Sign with CKM_ML_DSA is refused", False,
                       "it signed: the remoting now carries ML-DSA; update docs/consumers/p11-kit.md")
            except PyKCS11.PyKCS11Error as e:
                print(f"# C_SignInit(CKM_ML_DSA) through p11-kit-client.so: {e}")
                report("p11-kit-client.so (known limit): C_Sign with CKM_ML_DSA is refused", True)
        session.logout()
    except PyKCS11.PyKCS11Error as e:
        report("p11-kit-client.so: login and object listing", False, repr(e))
    finally:
        session.closeSession()


def check(pubdir):
    from dilithium_py.ml_dsa import ML_DSA_65

    for name in ("embedded", "softhsm"):
        try:
            with open(os.path.join(pubdir, f"{name}.pub"), "rb") as f:
                pk = f.read()
            with open(os.path.join(pubdir, f"{name}.sig"), "rb") as f:
                sig = f.read()
            with open(os.path.join(pubdir, f"{name}.ctxsig"), "rb") as f:
                ctxsig = f.read()
        except OSError as e:
            report(f"dilithium-py verifies the {name} signatures made through the proxy", False, e)
            continue
        report(f"dilithium-py verifies the ML-DSA-65 signature made through the proxy ({name})",
               ML_DSA_65.verify(pk, MESSAGE, sig, ctx=b""))
        report(f"dilithium-py verifies the context signature made through the proxy ({name})",
               ML_DSA_65.verify(pk, MESSAGE, ctxsig, ctx=CONTEXT))


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "proxy" and len(sys.argv) == 6:
        proxy(*sys.argv[2:])
    elif cmd == "client" and len(sys.argv) == 4:
        client(*sys.argv[2:])
    elif cmd == "check" and len(sys.argv) == 3:
        check(sys.argv[2])
    else:
        sys.exit(__doc__)

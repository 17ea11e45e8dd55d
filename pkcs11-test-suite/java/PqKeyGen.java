// Makes an ML-DSA-65 token key pair (CKM_ML_DSA_KEY_PAIR_GEN, PKCS#11 3.2) through the module,
// using the JDK's internal PKCS#11 wrapper: SunPKCS11 itself has no post-quantum algorithms, so
// this is the only way for Java alone to put such a key on the token. The Java part of the suite
// uses it to see what SunPKCS11's KeyStore makes of a key type it does not know.
// Usage: java --add-exports jdk.crypto.cryptoki/sun.security.pkcs11.wrapper=ALL-UNNAMED \
//             PqKeyGen.java <module.so> <slotId> <userPin> <hexId> <label>
import static sun.security.pkcs11.wrapper.PKCS11Constants.*;

import sun.security.pkcs11.wrapper.CK_ATTRIBUTE;
import sun.security.pkcs11.wrapper.CK_C_INITIALIZE_ARGS;
import sun.security.pkcs11.wrapper.CK_MECHANISM;
import sun.security.pkcs11.wrapper.PKCS11;

public class PqKeyGen {
    static final long CKM_ML_DSA_KEY_PAIR_GEN = 0x1CL;
    static final long CKA_PARAMETER_SET = 0x61DL;
    static final long CKP_ML_DSA_65 = 2L;

    public static void main(String[] a) throws Exception {
        String lib = a[0];
        long slot = Long.parseLong(a[1]);
        char[] pin = a[2].toCharArray();
        byte[] id = java.util.HexFormat.of().parseHex(a[3]);
        char[] label = a[4].toCharArray();
        CK_C_INITIALIZE_ARGS init = new CK_C_INITIALIZE_ARGS();
        init.flags = CKF_OS_LOCKING_OK;
        PKCS11 p11 = PKCS11.getInstance(lib, "C_GetFunctionList", init, false);
        long s = p11.C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, null, null);
        p11.C_Login(s, CKU_USER, pin);
        CK_ATTRIBUTE[] pub = {
            new CK_ATTRIBUTE(CKA_TOKEN, true),
            new CK_ATTRIBUTE(CKA_VERIFY, true),
            new CK_ATTRIBUTE(CKA_PARAMETER_SET, CKP_ML_DSA_65),
            new CK_ATTRIBUTE(CKA_ID, id),
            new CK_ATTRIBUTE(CKA_LABEL, label),
        };
        CK_ATTRIBUTE[] priv = {
            new CK_ATTRIBUTE(CKA_TOKEN, true),
            new CK_ATTRIBUTE(CKA_PRIVATE, true),
            new CK_ATTRIBUTE(CKA_SIGN, true),
            new CK_ATTRIBUTE(CKA_ID, id),
            new CK_ATTRIBUTE(CKA_LABEL, label),
        };
        long[] h = p11.C_GenerateKeyPair(s, new CK_MECHANISM(CKM_ML_DSA_KEY_PAIR_GEN), pub, priv);
        CK_ATTRIBUTE[] kt = { new CK_ATTRIBUTE(CKA_KEY_TYPE) };
        p11.C_GetAttributeValue(s, h[1], kt);
        System.out.printf("PQKEY generated pub=%d priv=%d keytype=0x%x%n", h[0], h[1], kt[0].getLong());
        p11.C_Logout(s);
        p11.C_CloseSession(s);
    }
}

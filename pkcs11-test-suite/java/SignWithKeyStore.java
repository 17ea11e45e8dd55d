// Java SunPKCS11 against b4ae-pkcs11: KeyStore "PKCS11", Signature, KeyPairGenerator, through the
// module's pkcs11 backend (forwarded classical keys on SoftHSM2) and its embedded token.
//
// Usage: java SignWithKeyStore.java <hsm.cfg> <embedded.cfg|-> <userPin> <alias:algorithm>...
//   e.g.  ec-key:SHA256withECDSA rsa-key:SHA256withRSA
// Every check prints one line:  CHECK PASS <name>   or   CHECK FAIL <name> <why>
// plus INFO lines; the shell part counts them. Absent aliases given as "!alias" must NOT be
// listed as key entries (the post-quantum key SunPKCS11 cannot represent).
import java.nio.charset.StandardCharsets;
import java.security.KeyFactory;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.KeyStore;
import java.security.MessageDigest;
import java.security.PrivateKey;
import java.security.Provider;
import java.security.PublicKey;
import java.security.SecureRandom;
import java.security.Security;
import java.security.Signature;
import java.security.cert.Certificate;
import java.security.cert.X509Certificate;
import java.security.spec.ECGenParameterSpec;
import java.security.spec.X509EncodedKeySpec;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;

public class SignWithKeyStore {
    static int failed = 0;

    static void pass(String name) {
        System.out.println("CHECK PASS " + name);
    }

    static void fail(String name, String why) {
        failed++;
        System.out.println("CHECK FAIL " + name + " " + why.replace('\n', ' '));
    }

    static void check(String name, boolean ok, String why) {
        if (ok) pass(name); else fail(name, why);
    }

    static String why(Throwable t) {
        StringBuilder sb = new StringBuilder();
        for (Throwable c = t; c != null; c = c.getCause()) {
            if (sb.length() > 0) sb.append(" <- ");
            sb.append(c.getClass().getSimpleName()).append(": ").append(c.getMessage());
        }
        return sb.toString();
    }

    interface Body {
        void run() throws Exception;
    }

    /** Runs one check; an exception is that check's failure, never the end of the program. */
    static void attempt(String name, Body body) {
        try {
            body.run();
        } catch (Throwable t) {
            fail(name, why(t));
        }
    }

    static Provider configure(String cfg) {
        Provider base = Security.getProvider("SunPKCS11");
        if (base == null) throw new IllegalStateException("no SunPKCS11 provider in this JDK");
        Provider p = base.configure(cfg);
        Security.addProvider(p);
        return p;
    }

    static boolean has(Provider p, String type, String alg) {
        return p.getService(type, alg) != null;
    }

    /** The JDK's software provider for a signature algorithm: the independent verifier. */
    static String defaultProviderFor(String alg) {
        return alg.contains("ECDSA") ? "SunEC" : "SunRsaSign";
    }

    public static void main(String[] args) throws Exception {
        String hsmCfg = args[0];
        String embeddedCfg = args[1];
        char[] pin = args[2].toCharArray();
        List<String> wanted = new ArrayList<>();
        List<String> absent = new ArrayList<>();
        for (int i = 3; i < args.length; i++) {
            if (args[i].startsWith("!")) absent.add(args[i].substring(1)); else wanted.add(args[i]);
        }
        byte[] message = "b4ae-pkcs11 says hello to SunPKCS11".getBytes(StandardCharsets.UTF_8);
        byte[] tampered = message.clone();
        tampered[0] ^= 1;

        // --- the provider on the SoftHSM-backed slot ------------------------------------------
        final Provider[] hp = new Provider[1];
        attempt("hsm-provider-configures", () -> {
            hp[0] = configure(hsmCfg);
            pass("hsm-provider-configures");
        });
        Provider p = hp[0];
        if (p == null) {
            System.out.println("SUMMARY failed=" + (failed + 1));
            System.exit(1);
        }
        System.out.println("INFO provider " + p.getName() + " " + p.getInfo());
        attempt("hsm-provider-services", () -> {
            // Token init reads C_GetMechanismList/C_GetMechanismInfo: unknown PQ and vendor
            // mechanisms must simply be ignored, and the classical ones be offered.
            Set<String> services = new TreeSet<>();
            for (Provider.Service s : p.getServices()) services.add(s.getType() + "." + s.getAlgorithm());
            System.out.println("INFO hsm services " + services.size() + ": " + services);
            List<String> need = Arrays.asList("Signature.SHA256withECDSA", "Signature.SHA256withRSA",
                    "Signature.NONEwithECDSA", "KeyPairGenerator.EC", "KeyPairGenerator.RSA",
                    "KeyStore.PKCS11", "Cipher.AES/GCM/NoPadding", "MessageDigest.SHA-256");
            List<String> missing = new ArrayList<>();
            for (String n : need) if (!services.contains(n)) missing.add(n);
            check("hsm-provider-services", missing.isEmpty(), "missing " + missing);
        });

        final KeyStore[] kss = new KeyStore[1];
        attempt("keystore-load", () -> {
            KeyStore ks = KeyStore.getInstance("PKCS11", p);
            ks.load(null, pin);
            kss[0] = ks;
            pass("keystore-load");
        });
        KeyStore ks = kss[0];
        if (ks != null) {
            attempt("keystore-aliases", () -> {
                List<String> aliases = Collections.list(ks.aliases());
                Collections.sort(aliases);
                for (String a : aliases) {
                    String kind = ks.isKeyEntry(a)
                            ? (ks.getCertificate(a) != null ? "PrivateKeyEntry" : "SecretKeyEntry")
                            : "TrustedCertificateEntry";
                    System.out.println("INFO alias " + a + " " + kind);
                }
                List<String> missing = new ArrayList<>();
                for (String w : wanted) {
                    String alias = w.split(":")[0];
                    if (!ks.isKeyEntry(alias) || ks.getCertificate(alias) == null) missing.add(alias);
                }
                check("keystore-aliases", missing.isEmpty(), "no PrivateKeyEntry for " + missing
                        + " among " + aliases);
                for (String a : absent) {
                    check("keystore-omits-" + a, !aliases.contains(a),
                            a + " is listed although SunPKCS11 has no such key type");
                }
            });

            for (String w : wanted) {
                String alias = w.split(":")[0];
                String alg = w.split(":")[1];
                attempt("sign-" + alias, () -> {
                    KeyStore.Entry e = ks.getEntry(alias, null);
                    if (!(e instanceof KeyStore.PrivateKeyEntry)) {
                        fail("sign-" + alias, "entry is " + (e == null ? "null" : e.getClass().getName()));
                        return;
                    }
                    PrivateKey key = ((KeyStore.PrivateKeyEntry) e).getPrivateKey();
                    X509Certificate cert = (X509Certificate) ((KeyStore.PrivateKeyEntry) e).getCertificate();
                    System.out.println("INFO " + alias + " key " + key.getAlgorithm() + " "
                            + key.getClass().getSimpleName() + " cert " + cert.getSubjectX500Principal());

                    Signature signer = Signature.getInstance(alg, p);
                    signer.initSign(key);
                    signer.update(message);
                    byte[] sig = signer.sign();
                    System.out.println("INFO " + alias + " " + alg + " signature " + sig.length + " bytes by "
                            + signer.getProvider().getName());
                    pass("sign-" + alias);

                    // Verify with the certificate's public key in software (SunEC / SunRsaSign).
                    PublicKey certKey = cert.getPublicKey();
                    Signature sw = Signature.getInstance(alg, defaultProviderFor(alg));
                    sw.initVerify(certKey);
                    sw.update(message);
                    check("verify-software-" + alias, sw.verify(sig),
                            "software " + sw.getProvider().getName() + " rejects the token's signature");
                    System.out.println("INFO " + alias + " software verifier " + sw.getProvider().getName());
                    sw.initVerify(certKey);
                    sw.update(tampered);
                    boolean accepted;
                    try {
                        accepted = sw.verify(sig);
                    } catch (java.security.SignatureException se) {
                        accepted = false;
                    }
                    check("tampered-rejected-software-" + alias, !accepted, "tampered message verified");

                    // Verify through the token (the certificate key imported as a session object).
                    Signature tv = Signature.getInstance(alg, p);
                    tv.initVerify(certKey);
                    tv.update(message);
                    check("verify-token-" + alias, tv.verify(sig), "token rejects its own signature");
                    tv.initVerify(certKey);
                    tv.update(tampered);
                    try {
                        accepted = tv.verify(sig);
                    } catch (java.security.SignatureException se) {
                        accepted = false;
                    }
                    check("tampered-rejected-token-" + alias, !accepted, "token verified a tampered message");

                    // And the certificate's own self-signature, checked by the token provider.
                    attempt("cert-verify-token-" + alias, () -> {
                        cert.verify(certKey, p.getName());
                        pass("cert-verify-token-" + alias);
                    });
                });
            }
        }

        // --- a session key pair generated by the token through Java ------------------------------
        attempt("keypairgen-ec-session", () -> {
            KeyPairGenerator g = KeyPairGenerator.getInstance("EC", p);
            g.initialize(new ECGenParameterSpec("secp256r1"), new SecureRandom());
            KeyPair kp = g.generateKeyPair();
            System.out.println("INFO session key " + kp.getPrivate().getClass().getSimpleName() + " / "
                    + kp.getPublic().getClass().getSimpleName());
            Signature s = Signature.getInstance("SHA256withECDSA", p);
            s.initSign(kp.getPrivate());
            s.update(message);
            byte[] sig = s.sign();
            // The public key's encoding comes from CKA_EC_POINT/CKA_EC_PARAMS read through the module.
            PublicKey pub = KeyFactory.getInstance("EC")
                    .generatePublic(new X509EncodedKeySpec(kp.getPublic().getEncoded()));
            Signature v = Signature.getInstance("SHA256withECDSA", defaultProviderFor("SHA256withECDSA"));
            v.initVerify(pub);
            v.update(message);
            check("keypairgen-ec-session", v.verify(sig), "software rejects a session key's signature");
        });

        attempt("keypairgen-rsa-session", () -> {
            KeyPairGenerator g = KeyPairGenerator.getInstance("RSA", p);
            g.initialize(2048);
            KeyPair kp = g.generateKeyPair();
            Signature s = Signature.getInstance("SHA256withRSA", p);
            s.initSign(kp.getPrivate());
            s.update(message);
            byte[] sig = s.sign();
            PublicKey pub = KeyFactory.getInstance("RSA")
                    .generatePublic(new X509EncodedKeySpec(kp.getPublic().getEncoded()));
            Signature v = Signature.getInstance("SHA256withRSA", defaultProviderFor("SHA256withRSA"));
            v.initVerify(pub);
            v.update(message);
            check("keypairgen-rsa-session", v.verify(sig), "software rejects a session key's signature");
        });

        // --- the embedded token: the provider loads over its (mostly PQ) mechanism list -----------
        if (!"-".equals(embeddedCfg)) {
            final Provider[] ep = new Provider[1];
            attempt("embedded-provider-configures", () -> {
                ep[0] = configure(embeddedCfg);
                Set<String> services = new TreeSet<>();
                for (Provider.Service s : ep[0].getServices()) services.add(s.getType() + "." + s.getAlgorithm());
                System.out.println("INFO embedded services " + services.size() + ": " + services);
                pass("embedded-provider-configures");
            });
            if (ep[0] != null) {
                attempt("embedded-digest-sha256", () -> {
                    MessageDigest md = MessageDigest.getInstance("SHA-256", ep[0]);
                    byte[] a = md.digest(message);
                    byte[] b = MessageDigest.getInstance("SHA-256", "SUN").digest(message);
                    check("embedded-digest-sha256", Arrays.equals(a, b), "token SHA-256 differs from SUN's");
                });
                attempt("embedded-keystore-load", () -> {
                    KeyStore eks = KeyStore.getInstance("PKCS11", ep[0]);
                    eks.load(null, pin);
                    System.out.println("INFO embedded aliases " + Collections.list(eks.aliases()));
                    pass("embedded-keystore-load");
                });
            }
        }

        System.out.println("SUMMARY failed=" + failed);
        System.exit(failed == 0 ? 0 : 1);
    }
}

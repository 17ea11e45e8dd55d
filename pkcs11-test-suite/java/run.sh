#!/usr/bin/env bash
# Java's SunPKCS11 provider (JDK 17) on the module: KeyStore "PKCS11" entries for key pairs on the
# SoftHSM-backed slot (made by pkcs11-tool and by keytool), Signature, KeyPairGenerator, and what
# the KeyStore makes of a post-quantum key it cannot represent. docs/consumers/java.md tells users.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../lib.sh
source "$HERE/../lib.sh"
suite_begin java
expect_checks 36

apt_need openjdk-17-jdk-headless:javac openssl:openssl libengine-pkcs11-openssl \
    opensc:pkcs11-tool softhsm2:softhsm2-util
need java javac keytool openssl pkcs11-tool softhsm2-util timeout
ENGINE_SO=""
for f in /usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so /usr/lib/x86_64-linux-gnu/engines-3/libpkcs11.so; do
    [ -e "$f" ] && { ENGINE_SO=$f; break; }
done
[ -n "$ENGINE_SO" ] || cannot_run "the libp11 engine (engines-3/pkcs11.so) is not installed"
echo "# $(java -version 2>&1 | head -1)"

# shellcheck disable=SC2119 # no extra TOML
make_tokens
cd "$WORK" || cannot_run "no work directory"
T=60 # seconds any one command may take (a JVM start is about 0.5 s here)
P11="timeout 20 pkcs11-tool --module $MODULE --slot $HSM_SLOT --login --pin $USER_PIN"

# SunPKCS11 configurations: the SoftHSM-backed slot, and the embedded token.
printf 'name = B4AE\nlibrary = %s\nslot = %s\n' "$MODULE" "$HSM_SLOT" >hsm.cfg
printf 'name = B4AE-embedded\nlibrary = %s\nslot = %s\n' "$MODULE" "$EMBEDDED_SLOT" >embedded.cfg
cat >openssl.cnf <<EOF
openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = $ENGINE_SO
MODULE_PATH = $MODULE
init = 0
EOF
ossl() { OPENSSL_CONF=$WORK/openssl.cnf timeout 20 openssl "$@" </dev/null; }
plain() { OPENSSL_CONF=/dev/null timeout 20 openssl "$@" </dev/null; }
KT=(-keystore NONE -storetype PKCS11 -addprovider SunPKCS11 -providerArg "$WORK/hsm.cfg" -storepass "$USER_PIN")

# --- key pairs made through the module, each with a self-signed certificate of the same CKA_ID -----
# (SunPKCS11's KeyStore shows a private key only as a PrivateKeyEntry with its certificate.)
make_pair() { # id label key-type
    local id=$1 label=$2 type=$3 out
    out=$($P11 --keypairgen --key-type "$type" --id "$id" --label "$label" 2>&1) &&
        out=$(ossl req -new -x509 -engine pkcs11 -keyform engine \
            -key "pkcs11:token=$HSM_LABEL;object=$label;type=private?pin-value=$USER_PIN" \
            -sha256 -days 30 -subj "/CN=b4ae $label" -outform DER -out "$label.der" 2>&1) &&
        out=$($P11 --write-object "$label.der" --type cert --id "$id" --label "$label" 2>&1)
    check "$type key pair by pkcs11-tool, certificate by openssl+libp11, stored with CKA_ID $id" $? "$out"
}
make_pair 01 ec-key EC:prime256v1
make_pair 02 rsa-key rsa:2048

# --- a key pair and certificate made by keytool itself, on the token ------------------------------
out=$(timeout $T keytool -genkeypair -alias java-ec -keyalg EC -groupname secp256r1 -sigalg SHA256withECDSA \
    -dname CN=java-ec -validity 30 "${KT[@]}" 2>&1)
check "keytool -genkeypair makes an EC key pair and certificate on the token" $? "$out"
out=$(timeout $T keytool -list "${KT[@]}" 2>&1)
grep -q '^java-ec, PrivateKeyEntry' <<<"$out" && grep -q '^ec-key, PrivateKeyEntry' <<<"$out" &&
    grep -q '^rsa-key, PrivateKeyEntry' <<<"$out"
check "keytool -list shows ec-key, rsa-key and java-ec as PrivateKeyEntry" $? "$out"

# The keytool key seen from another consumer: OpenSSL signs with it (SunPKCS11 sets CKA_ID to the
# alias and labels only the certificate), plain openssl verifies with keytool's certificate.
jid=$(printf %s java-ec | od -An -tx1 | tr -d ' \n' | sed 's/../%&/g')
out=$(timeout $T keytool -exportcert -rfc -alias java-ec -file java-ec.pem "${KT[@]}" 2>&1) &&
    plain x509 -in java-ec.pem -noout -pubkey >java-ec-pub.pem 2>&1 &&
    echo "message for the keytool key" >msg.txt &&
    out=$(ossl dgst -sha256 -engine pkcs11 -keyform engine -sign \
        "pkcs11:token=$HSM_LABEL;id=$jid;type=private?pin-value=$USER_PIN" -out java-ec.sig msg.txt 2>&1) &&
    out=$(plain dgst -sha256 -verify java-ec-pub.pem -signature java-ec.sig msg.txt 2>&1)
check "OpenSSL (libp11) signs with keytool's key; plain openssl verifies with keytool's certificate" $? "$out"

# --- a post-quantum key SunPKCS11 cannot represent (only the JDK's internal wrapper can make it) --
WRAP=(--add-modules jdk.crypto.cryptoki --add-exports jdk.crypto.cryptoki/sun.security.pkcs11.wrapper=ALL-UNNAMED)
mkdir -p classes
out=$(timeout $T javac "${WRAP[@]}" -d classes "$HERE/PqKeyGen.java" 2>&1) &&
    out=$(timeout $T java "${WRAP[@]}" -cp classes PqKeyGen "$MODULE" "$HSM_SLOT" "$USER_PIN" 03 mldsa-key 2>&1)
rc=$?
[ $rc -eq 0 ] && grep -q 'keytype=0x4a' <<<"$out"
check "an ML-DSA-65 key pair is made on the token through the JDK's PKCS#11 wrapper" $? "rc=$rc: $out"

# --- the KeyStore / Signature program ----------------------------------------------------------------
out=$(timeout $T javac -d classes "$HERE/SignWithKeyStore.java" 2>&1)
check "javac compiles SignWithKeyStore.java" $? "$out"
out=$(timeout $T java -cp classes SignWithKeyStore "$WORK/hsm.cfg" "$WORK/embedded.cfg" "$USER_PIN" \
    ec-key:SHA256withECDSA rsa-key:SHA256withRSA java-ec:SHA256withECDSA '!mldsa-key' 2>&1)
rc=$?
echo "$out" | grep -E '^INFO (alias|provider|ec-key|rsa-key|java-ec|session|embedded (services|aliases))' |
    cut -c1-200 | sed 's/^/# /'
n=0
while IFS= read -r line; do
    case $line in
    "CHECK PASS "*) ok "java: ${line#CHECK PASS }"; n=$((n + 1)) ;;
    "CHECK FAIL "*)
        rest=${line#CHECK FAIL }
        fail "java: ${rest%% *}" "${rest#* }"
        n=$((n + 1))
        ;;
    esac
done <<<"$out"
[ $rc -eq 0 ] && [ $n -ge 20 ] && grep -q '^SUMMARY failed=0$' <<<"$out"
check "SignWithKeyStore ran to its end ($n checks, exit $rc)" $? "$(tail -20 <<<"$out")"

suite_end

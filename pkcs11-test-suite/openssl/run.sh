#!/usr/bin/env bash
# OpenSSL 3 through the libp11 PKCS#11 engine, driving keys the module forwards to SoftHSM2
# (slot 1), named by RFC 7512 pkcs11: URIs. Signatures are checked by plain openssl (no engine).
# docs/consumers/openssl.md is the user-facing version of what this exercises.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../lib.sh
source "$HERE/../lib.sh"
suite_begin openssl
expect_checks 28

apt_need openssl:openssl libengine-pkcs11-openssl opensc:pkcs11-tool \
    opensc-pkcs11:/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so \
    softhsm2:softhsm2-util python3:python3
need openssl pkcs11-tool softhsm2-util python3 timeout

ENGINE_SO=""
for f in $(dpkg -L libengine-pkcs11-openssl 2>/dev/null | grep -E '/engines-3/(lib)?pkcs11\.so$') \
    /usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so /usr/lib/x86_64-linux-gnu/engines-3/libpkcs11.so; do
    [ -e "$f" ] && { ENGINE_SO=$f; break; }
done
[ -n "$ENGINE_SO" ] || cannot_run "the libp11 engine (engines-3/pkcs11.so) is not installed"
SPY=/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so
echo "# $(openssl version); engine $ENGINE_SO ($(dpkg-query -W -f '${Version}' libengine-pkcs11-openssl 2>/dev/null))"

# shellcheck disable=SC2119 # no extra TOML
make_tokens
cd "$WORK" || cannot_run "no work directory"
T=20 # seconds any one command may take
P11="timeout $T pkcs11-tool --module $MODULE --slot $HSM_SLOT --login --pin $USER_PIN"

# The engine, configured in an openssl.cnf of our own; `init = 0` leaves it to -engine.
engine_cnf() { # file module [extra lines]
    cat >"$1" <<EOF
openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = $ENGINE_SO
MODULE_PATH = $2
${3:-}
init = 0
EOF
}
engine_cnf openssl.cnf "$MODULE"
engine_cnf verbose.cnf "$MODULE" "VERBOSE = EMPTY"
engine_cnf spy.cnf "$SPY"

# openssl with the engine (our config), and plain openssl (no config, no engine) to verify.
ossl() { OPENSSL_CONF=$WORK/openssl.cnf timeout $T openssl "$@" </dev/null; }
plain() { env -u PKCS11_MODULE_PATH OPENSSL_CONF=/dev/null timeout $T openssl "$@" </dev/null; }

EC_PRIV="pkcs11:token=$HSM_LABEL;object=ec-key;type=private?pin-value=$USER_PIN"
EC_PUB="pkcs11:token=$HSM_LABEL;object=ec-key;type=public"
RSA_PRIV="pkcs11:token=$HSM_LABEL;object=rsa-key;type=private?pin-value=$USER_PIN"
RSA_PUB="pkcs11:token=$HSM_LABEL;object=rsa-key;type=public"

head -c 10000 /dev/urandom >data.bin
cp data.bin tampered.bin
# One byte changed for certain (writing a fixed byte would leave it unchanged 1 time in 256).
byte=$(od -An -tu1 -j5000 -N1 data.bin | tr -d ' ')
printf "\\$(printf '%03o' $(((byte + 1) % 256)))" | dd of=tampered.bin bs=1 seek=5000 conv=notrunc status=none
cmp -s data.bin tampered.bin && { echo "tampered.bin equals data.bin" >&2; exit 1; }

# Runs a verification with plain openssl; $1 = expected outcome (ok|fail).
verify_plain() { # expect name pubkey sig data [sigopts...]
    local expect=$1 name=$2 pub=$3 sig=$4 data=$5 out rc
    shift 5
    out=$(plain dgst -sha256 -verify "$pub" -signature "$sig" "$@" "$data" 2>&1)
    rc=$?
    if [ "$expect" = ok ]; then
        [ $rc -eq 0 ] && grep -q '^Verified OK' <<<"$out"
        check "$name" $? "rc=$rc: $out"
    else
        [ $rc -ne 0 ] && grep -q 'Verification failure' <<<"$out"
        check "$name" $? "expected a verification failure, got rc=$rc: $out"
    fi
}

# --- the engine loads the module and sees both tokens ---------------------------------------------
out=$(ossl engine -t -c pkcs11 2>&1)
grep -q 'available' <<<"$out"
check "engine pkcs11 loads with MODULE_PATH = the module" $? "$out"


mechs=$(timeout $T pkcs11-tool --module "$MODULE" --slot "$HSM_SLOT" -M 2>&1)
grep -Eq '^ *ECDSA[,:]' <<<"$mechs"
check "slot $HSM_SLOT offers CKM_ECDSA (what libp11 signs EC keys with)" $? "$mechs"
grep -q 'ECDSA-SHA256' <<<"$mechs" ||
    echo "# slot $HSM_SLOT has no CKM_ECDSA_SHA256 (SoftHSM 2.6.1): OpenSSL hashes, the token signs the hash"

# --- EC P-256 --------------------------------------------------------------------------------------
out=$($P11 --keypairgen --key-type EC:prime256v1 --id 01 --label ec-key 2>&1)
check "pkcs11-tool makes an EC P-256 key pair on the SoftHSM-backed slot" $? "$out"

out=$(ossl dgst -sha256 -engine pkcs11 -keyform engine -sign "$EC_PRIV" -out ec.sig data.bin 2>&1) &&
    [ -s ec.sig ]
check "openssl dgst -sha256 -sign with the engine and $EC_PRIV" $? "$out"

out=$(ossl pkey -engine pkcs11 -inform engine -pubin -in "$EC_PUB" -pubout -out ec-pub.pem 2>&1) &&
    grep -q 'BEGIN PUBLIC KEY' ec-pub.pem
check "openssl pkey -pubin exports the EC public key through the engine" $? "$out"

out=$($P11 --read-object --type pubkey --id 01 -o ec-pub.der 2>&1) &&
    plain pkey -pubin -inform DER -in ec-pub.der -out ec-pub-tool.pem 2>&1 &&
    cmp -s ec-pub.pem ec-pub-tool.pem
check "pkcs11-tool --read-object --type pubkey gives the same EC key (DER -> PEM)" $? "$out"

out=$(OPENSSL_CONF=$WORK/verbose.cnf timeout $T openssl pkey -engine pkcs11 -inform engine -pubin \
    -in "$EC_PUB" -pubout </dev/null 2>&1)
grep -Eq "^- \[$EMBEDDED_SLOT\] .*\($EMBEDDED_LABEL\)" <<<"$out" &&
    grep -Eq "^- \[$HSM_SLOT\] .*\($HSM_LABEL\)" <<<"$out"
check "engine's token listing (VERBOSE) shows the embedded and the SoftHSM-backed token" $? "$out"
verify_plain ok "plain openssl verifies the engine's ECDSA signature" ec-pub.pem ec.sig data.bin
verify_plain fail "plain openssl rejects the ECDSA signature over tampered data" ec-pub.pem ec.sig tampered.bin
cp ec.sig ec-bad.sig
printf '\x55' | dd of=ec-bad.sig bs=1 seek=20 conv=notrunc status=none
verify_plain fail "plain openssl rejects a tampered ECDSA signature" ec-pub.pem ec-bad.sig data.bin

# What libp11 asks of the module: CKM_ECDSA over a hash OpenSSL computed (pkcs11-spy in between).
out=$(OPENSSL_CONF=$WORK/spy.cnf PKCS11SPY=$MODULE PKCS11SPY_OUTPUT=$WORK/spy.log \
    timeout $T openssl dgst -sha256 -engine pkcs11 -keyform engine -sign "$EC_PRIV" -out ec-spy.sig \
    data.bin </dev/null 2>&1)
rc=$?
mech=$(grep -A4 ': C_SignInit$' spy.log 2>/dev/null | grep -o 'pMechanism->type = [A-Z0-9_]*' | head -1)
inlen=$(grep -A4 ': C_Sign$' spy.log 2>/dev/null | grep -o 'pData\[ulDataLen\] [0-9a-f]* / [0-9]*' |
    head -1 | awk '{print $NF}')
[ $rc -eq 0 ] && [ "$mech" = "pMechanism->type = CKM_ECDSA" ] && [ "$inlen" = 32 ]
check "libp11 signs with CKM_ECDSA over the 32-byte SHA-256 hash (no CKM_ECDSA_SHA256 needed)" $? \
    "rc=$rc mech='$mech' input=$inlen bytes: $out"
verify_plain ok "the spied signature verifies too" ec-pub.pem ec-spy.sig data.bin

# The other way to name the module: `-engine pkcs11` found in ENGINESDIR, PKCS11_MODULE_PATH set,
# no openssl.cnf at all, the PIN as a path attribute.
out=$(PKCS11_MODULE_PATH=$MODULE OPENSSL_CONF=/dev/null timeout $T openssl dgst -sha256 -engine pkcs11 \
    -keyform engine -sign "pkcs11:token=$HSM_LABEL;object=ec-key;type=private;pin-value=$USER_PIN" \
    -out ec-env.sig data.bin </dev/null 2>&1)
check "-engine pkcs11 with PKCS11_MODULE_PATH (no openssl.cnf), ;pin-value= in the path" $? "$out"
verify_plain ok "plain openssl verifies the signature made via PKCS11_MODULE_PATH" ec-pub.pem ec-env.sig data.bin

# A self-signed certificate made with the token key, checked by plain openssl.
out=$(ossl req -new -x509 -engine pkcs11 -keyform engine -key "$EC_PRIV" -sha256 -days 30 \
    -subj "/CN=b4ae ec-key" -out ec-cert.pem 2>&1) &&
    out=$(plain verify -CAfile ec-cert.pem ec-cert.pem 2>&1) &&
    cmp -s <(plain x509 -in ec-cert.pem -noout -pubkey) ec-pub.pem
check "openssl req -x509 signs a certificate with the token key; plain openssl verify accepts it" $? "$out"

# --- RSA-2048 --------------------------------------------------------------------------------------
out=$($P11 --keypairgen --key-type rsa:2048 --id 02 --label rsa-key 2>&1)
check "pkcs11-tool makes an RSA-2048 key pair on the SoftHSM-backed slot" $? "$out"

out=$(ossl dgst -sha256 -engine pkcs11 -keyform engine -sign "$RSA_PRIV" -out rsa.sig data.bin 2>&1) &&
    [ "$(stat -c %s rsa.sig 2>/dev/null)" = 256 ]
check "openssl signs SHA-256 / PKCS#1 v1.5 with the RSA token key" $? "$out"
out=$(ossl pkey -engine pkcs11 -inform engine -pubin -in "$RSA_PUB" -pubout -out rsa-pub.pem 2>&1)
check "openssl pkey -pubin exports the RSA public key through the engine" $? "$out"
verify_plain ok "plain openssl verifies the RSA PKCS#1 v1.5 signature" rsa-pub.pem rsa.sig data.bin
verify_plain fail "plain openssl rejects the RSA signature over tampered data" rsa-pub.pem rsa.sig tampered.bin

PSS=(-sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32)
out=$(ossl dgst -sha256 -engine pkcs11 -keyform engine -sign "$RSA_PRIV" "${PSS[@]}" -out pss.sig data.bin 2>&1)
check "openssl signs RSA-PSS (SHA-256, salt 32) with the RSA token key" $? "$out"
verify_plain ok "plain openssl verifies the RSA-PSS signature" rsa-pub.pem pss.sig data.bin "${PSS[@]}"
verify_plain fail "plain openssl rejects the RSA-PSS signature over tampered data" rsa-pub.pem pss.sig \
    tampered.bin "${PSS[@]}"

# --- post-quantum keys next to the classical ones --------------------------------------------------
# libp11 (0.4.12 here, and its current source) gives up a whole private-key search when the token
# holds a private key whose CKA_KEY_TYPE it does not know (ML-DSA, ML-KEM, Dilithium5, B4AE hybrid,
# even SoftHSM's own Ed25519). Keeping post-quantum keys on another token of the module works.
out=$(timeout $T python3 "$HERE/mldsa_keygen.py" "$MODULE" "$EMBEDDED_SLOT" "$USER_PIN" 03 mldsa-key 2>&1)
check "an ML-DSA-65 key pair is made on the embedded token (slot $EMBEDDED_SLOT)" $? "$out"
out=$(ossl dgst -sha256 -engine pkcs11 -keyform engine -sign "$EC_PRIV" -out ec2.sig data.bin 2>&1)
check "with an ML-DSA key on the other token, the engine still signs with ec-key" $? "$out"
verify_plain ok "plain openssl verifies the signature made next to the ML-DSA key" ec-pub.pem ec2.sig data.bin

out=$(timeout $T python3 "$HERE/mldsa_keygen.py" "$MODULE" "$HSM_SLOT" "$USER_PIN" 03 mldsa-key 2>&1)
check "an ML-DSA-65 key pair is made on the SoftHSM-backed slot (sealed, custody 2)" $? "$out"
out=$(ossl dgst -sha256 -engine pkcs11 -keyform engine -sign "$EC_PRIV" -out ec3.sig data.bin 2>&1)
rc=$?
if [ $rc -eq 0 ]; then
    fail "known libp11 limitation: a PQ private key on the same token stops private-key lookup" \
        "the engine signed anyway: libp11 now skips unknown key types; update docs/consumers/openssl.md"
else
    grep -q 'Unable to enumerate private keys' <<<"$out"
    check "known libp11 limitation reproduced: a PQ private key on the same token stops private-key lookup (documented)" \
        $? "rc=$rc: $out"
fi

suite_end

#!/usr/bin/env bash
# OpenSSL 3.5+ with pkcs11-provider (what users of PQ tokens need for X.509 and TLS): OpenSSL and
# the provider built or fetched once by build.sh, the module under test as the provider's PKCS#11
# module, on both backends. Token keys made with mldsa_keygen.py (private keys sensitive, not
# extractable); then storeutl, req -x509 (ML-DSA-87 and -65) verified by plain OpenSSL, pkeyutl
# signatures, a TLS 1.3 handshake (server key on the token, X25519MLKEM768), and ML-KEM
# decapsulation by the token. No `pkcs11-module-quirks = no-deinit`: every command must exit
# cleanly, on SoftHSM2 too (docs/consumers/openssl.md).
set -uo pipefail
source "$(dirname "$0")/../lib.sh"
suite_begin "openssl-provider"
expect_checks 28
HERE=$ROOT/pkcs11-test-suite/openssl-provider
apt_need python3:python3 softhsm2:softhsm2-util
make_tokens
if ! CACHE=$(bash "$HERE/build.sh" 2>"$WORK/build.err" | tail -n 1) || [ ! -d "$CACHE" ]; then
    cannot_run "OpenSSL 3.5+ / pkcs11-provider unavailable: $(tail -n 5 "$WORK/build.err")"
fi
OPENSSL=$CACHE/openssl/bin/openssl
export LD_LIBRARY_PATH=$CACHE/openssl/lib
echo "# $("$OPENSSL" version), pkcs11-provider $(cat "$CACHE/pkcs11-provider.version")"
source "$ROOT/pkcs11-test-suite/openssl-provider/provider-cnf.sh"
provider_cnf "$CACHE" "$MODULE" "$WORK/pin" >"$WORK/provider.cnf"
printf '%s' "$USER_PIN" >"$WORK/pin"
cd "$WORK" || cannot_run "no work directory"
echo "b4ae-pkcs11 through pkcs11-provider" >data.txt
T=120
# provider <args...>: openssl with the provider; a death by signal is written to $WORK/crashes
# (a file: most calls run in a command substitution's subshell).
provider() {
    OPENSSL_CONF=${PROVIDER_CONF:-$WORK/provider.cnf} timeout $T "$OPENSSL" "$@"
    local rc=$?
    [ $rc -ge 128 ] && [ $rc -ne 124 ] && echo "openssl $1 (status $rc)" >>"$WORK/crashes"
    return $rc
}
plain() { OPENSSL_CONF=/dev/null timeout $T "$OPENSSL" "$@"; }

for slot in "$EMBEDDED_SLOT" "$HSM_SLOT"; do
    if [ "$slot" = "$EMBEDDED_SLOT" ]; then token=$EMBEDDED_LABEL; min_custody=3; else token=$HSM_LABEL; min_custody=2; fi
    : >"$WORK/crashes"
    echo "# slot $slot (token $token)"
    uri="pkcs11:token=$token"
    for kind in ML-DSA-87:87:tls-87 ML-DSA-65:65:tls-65 ML-KEM-768:76:kem-768; do
        IFS=: read -r name id label <<<"$kind"
        out=$(timeout $T python3 "$ROOT/pkcs11-test-suite/openssl/mldsa_keygen.py" "$MODULE" "$slot" \
            "$USER_PIN" "$id" "$label" "$name" 2>&1)
        custody=$(sed -n 's/.*custody=\([0-9]*\).*/\1/p' <<<"$out")
        grep -q "extractable=0" <<<"$out" && [ "${custody:-0}" -ge "$min_custody" ]
        check "slot $slot: a $name key pair in the token (private key not extractable, custody ${custody:-?})" $? "$out"
    done
    out=$(provider storeutl -keys -text "$uri" 2>&1)
    grep -q "ML-DSA-87 Private Key" <<<"$out" && grep -q "ML-DSA-65 Private Key" <<<"$out" &&
        grep -q "ML-KEM-768 Private Key" <<<"$out"
    check "slot $slot: storeutl -keys lists the ML-DSA-87, ML-DSA-65 and ML-KEM-768 keys" $? "$out"
    for level in 87 65; do
        out=$(provider req -x509 -new -key "$uri;object=tls-$level;type=private" \
            -subj "/CN=b4ae ML-DSA-$level slot $slot" -days 2 -out "cert$level-$slot.pem" 2>&1)
        check "slot $slot: req -x509 makes an ML-DSA-$level certificate with the token key" $? "$out"
        out=$(plain verify -CAfile "cert$level-$slot.pem" "cert$level-$slot.pem" 2>&1 &&
            plain x509 -in "cert$level-$slot.pem" -noout -text | grep -q "Signature Algorithm: ML-DSA-$level")
        check "slot $slot: plain OpenSSL verifies the ML-DSA-$level certificate" $? "$out"
    done
    out=$(provider pkeyutl -sign -inkey "$uri;object=tls-65;type=private" -in data.txt \
        -out "sig-$slot.bin" 2>&1 && provider pkey -pubin -in "$uri;object=tls-65;type=public" \
        -pubout -out "pub65-$slot.pem" 2>&1)
    check "slot $slot: pkeyutl -sign with the token's ML-DSA-65 key (and its public key exported)" $? "$out"
    out=$(plain pkeyutl -verify -pubin -inkey "pub65-$slot.pem" -in data.txt -sigfile "sig-$slot.bin" 2>&1)
    check "slot $slot: plain OpenSSL verifies the signature" $? "$out"
    out=$(plain pkeyutl -verify -pubin -inkey "pub65-$slot.pem" -in provider.cnf -sigfile "sig-$slot.bin" 2>&1)
    [ $? -ne 0 ]
    check "slot $slot: and refuses it for other data" $? "$out"

    port=$((20000 + RANDOM % 30000))
    provider s_server -accept "$port" -cert "cert87-$slot.pem" -key "$uri;object=tls-87;type=private" \
        -tls1_3 -groups X25519MLKEM768 -www -naccept 1 >"server-$slot.log" 2>&1 &
    server=$!
    for _ in $(seq 100); do grep -q "^ACCEPT" "server-$slot.log" 2>/dev/null && break; sleep 0.1; done
    out=$(echo | plain s_client -connect "127.0.0.1:$port" -CAfile "cert87-$slot.pem" \
        -verify_return_error -groups X25519MLKEM768 -brief 2>&1)
    client=$?
    wait "$server"
    server_rc=$?
    [ $server_rc -ge 128 ] && echo "openssl s_server (status $server_rc)" >>"$WORK/crashes"
    [ $client -eq 0 ] && grep -q "Protocol version: TLSv1.3" <<<"$out" &&
        grep -q "Verification: OK" <<<"$out" && grep -q "Negotiated TLS1.3 group: X25519MLKEM768" <<<"$out" &&
        grep -q "Signature type: mldsa87" <<<"$out" && [ $server_rc -eq 0 ]
    check "slot $slot: TLS 1.3 handshake, server key on the token (mldsa87), X25519MLKEM768, client verifies" $? \
        "client $client, server $server_rc: $out $(cat "server-$slot.log")"

    out=$(provider pkey -pubin -in "$uri;object=kem-768;type=public" -pubout -out "kem-$slot.pem" 2>&1 &&
        plain pkeyutl -encap -pubin -inkey "kem-$slot.pem" -out "ct-$slot.bin" -secret "ss-$slot.bin" 2>&1 &&
        provider pkeyutl -decap -inkey "$uri;object=kem-768;type=private" -in "ct-$slot.bin" \
            -secret "ss2-$slot.bin" 2>&1 && cmp "ss-$slot.bin" "ss2-$slot.bin" 2>&1)
    check "slot $slot: ML-KEM-768: plain OpenSSL encapsulates to the token's key, the token decapsulates the same secret" $? "$out"
    [ ! -s "$WORK/crashes" ]
    check "slot $slot: every openssl command exits cleanly (no pkcs11-module-quirks = no-deinit)" $? \
        "$(cat "$WORK/crashes")"
done
suite_end

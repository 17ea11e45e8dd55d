#!/usr/bin/env bash
# pkcs11-tool (Debian's OpenSC) through b4ae-pkcs11 forwarding to SoftHSM2, beside the same
# commands against SoftHSM2 directly. Usage: pkcs11_tool_hsm.sh path/to/libb4ae_pkcs11.so
set -uo pipefail

module=$(realpath "$1")
softhsm=/usr/lib/softhsm/libsofthsm2.so
passed=0
failed=0
check() { # name, status (0 = ok), detail
    if [ "$2" -eq 0 ]; then
        passed=$((passed + 1))
        echo "ok - $1"
    else
        failed=$((failed + 1))
        echo "not ok - $1"
        [ -n "${3:-}" ] && printf '#   %s\n' "$3"
    fi
    return 0
}
for tool in pkcs11-tool softhsm2-util openssl; do
    command -v "$tool" >/dev/null || { echo "not ok - $tool is not installed (scripts/deps.sh installs it)"; echo "pkcs11-tool over SoftHSM2: 0 passed, 1 failed"; exit 1; }
done
[ -e "$softhsm" ] || { echo "not ok - $softhsm missing"; echo "pkcs11-tool over SoftHSM2: 0 passed, 1 failed"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
mkdir tokens
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$work" > softhsm2.conf
export SOFTHSM2_CONF=$work/softhsm2.conf
softhsm2-util --init-token --free --label fwd-test --so-pin 12345678 --pin 1234 >/dev/null
cat > b4ae.toml <<TOML
[[token]]
label = "HSM via B4AE"
backend = "pkcs11"
library = "$softhsm"
token_label = "fwd-test"
TOML
export B4AE_PKCS11_CONF=$work/b4ae.toml B4AE_PKCS11_LOG=${B4AE_PKCS11_LOG:-warn}

via() { timeout 120 pkcs11-tool --module "$module" "$@" 2>&1; }
direct() { timeout 120 pkcs11-tool --module "$softhsm" --token-label fwd-test "$@" 2>&1; }
# Output lines that differ only because of the slot, for comparisons.
strip_slot() { grep -v -E '^Using slot|^Slot [0-9]|slot ID|^Available slots'; }

via -L > L.via; direct -L > L.direct
label=$(grep 'token label' L.direct | head -1); serial=$(grep 'serial num' L.direct | head -1)
check "-L shows the real token's label" "$(grep -qF "$label" L.via; echo $?)"
check "-L shows the real token's serial" "$(grep -qF "$serial" L.via; echo $?)"

via -M > M.via; direct -M > M.direct
missing=$(grep -E '^  ' M.direct | while read -r line; do grep -qxF "  $line" M.via || echo "$line"; done)
check "-M lists every SoftHSM mechanism" "$([ -z "$missing" ]; echo $?)" "missing: $missing"
check "-M adds ML-DSA (0x1C, 0x1D)" "$(grep -q 'mechtype-0x1C' M.via && grep -q 'mechtype-0x1D' M.via; echo $?)"

via --login --pin 1234 --test | strip_slot > test.via
direct --login --pin 1234 --test | strip_slot > test.direct
check "--test gives the same result as SoftHSM2 directly" "$(diff -q test.via test.direct >/dev/null; echo $?)" "$(diff test.via test.direct | head -5 | tr '\n' ' ')"
check "--test reports no errors" "$(grep -q 'No errors' test.via; echo $?)"

P=(--login --pin 1234)
via "${P[@]}" --keypairgen --key-type EC:prime256v1 --id 01 --label ec1 > out; check "EC P-256 key pair generation" "$(grep -q 'Private Key Object; EC' out; echo $?)" "$(tail -1 out)"
via "${P[@]}" --keypairgen --key-type rsa:2048 --id 02 --label rsa1 > out; check "RSA-2048 key pair generation" "$(grep -q 'Private Key Object; RSA' out; echo $?)" "$(tail -1 out)"
via "${P[@]}" --keygen --key-type AES:32 --id 03 --label aes1 > out; check "AES-256 key generation" "$(grep -q 'Secret Key Object; AES' out; echo $?)" "$(tail -1 out)"

echo "forwarded through b4ae-pkcs11" > msg
openssl dgst -sha256 -binary msg > msg.sha256
via "${P[@]}" --sign -m ECDSA --id 01 -i msg.sha256 -o ec.sig --signature-format openssl > out
via --read-object --type pubkey --id 01 -o ec.pub.der > /dev/null
openssl pkey -pubin -inform DER -in ec.pub.der -out ec.pub.pem 2>/dev/null
check "ECDSA P-256 signature verifies with plain openssl" \
    "$(openssl pkeyutl -verify -pubin -inkey ec.pub.pem -in msg.sha256 -sigfile ec.sig >/dev/null 2>&1; echo $?)"
via "${P[@]}" --verify -m ECDSA --id 01 -i msg.sha256 --signature-file ec.sig --signature-format openssl > out
check "ECDSA verify through the module" "$(grep -q 'Signature is valid' out; echo $?)" "$(tail -1 out)"
via "${P[@]}" --sign -m SHA256-RSA-PKCS --id 02 -i msg -o rsa.sig > out
via "${P[@]}" --verify -m SHA256-RSA-PKCS --id 02 -i msg --signature-file rsa.sig > out
check "RSA PKCS#1 sign and verify" "$(grep -q 'Signature is valid' out; echo $?)" "$(tail -1 out)"
direct "${P[@]}" --verify -m SHA256-RSA-PKCS --id 02 -i msg --signature-file rsa.sig > out
check "the RSA signature made through the module verifies in SoftHSM2 directly" "$(grep -q 'Signature is valid' out; echo $?)"
head -c 1000 /dev/urandom > data
iv=000102030405060708090a0b0c0d0e0f
via "${P[@]}" --encrypt -m AES-CBC-PAD --id 03 --iv $iv -i data -o data.enc > out
direct "${P[@]}" --decrypt -m AES-CBC-PAD --id 03 --iv $iv -i data.enc -o data.dec > out
check "AES-CBC-PAD: encrypted through the module, decrypted by SoftHSM2" "$(cmp -s data data.dec; echo $?)"
via "${P[@]}" --decrypt -m AES-CBC-PAD --id 03 --iv $iv -i data.enc -o data.dec2 > out
check "AES-CBC-PAD decrypt through the module" "$(cmp -s data data.dec2; echo $?)"

via "${P[@]}" -O > O.via
check "-O lists the forwarded keys" "$(grep -q 'label:      ec1' O.via && grep -q 'label:      aes1' O.via; echo $?)"
via --login --pin 9999 -O > out
check "a wrong PIN is refused with CKR_PIN_INCORRECT" "$(grep -q 'CKR_PIN_INCORRECT' out; echo $?)" "$(tail -1 out)"
via --test-fork > out
status=$?
check "--test-fork: C_Initialize in a forked child" "$([ $status -eq 0 ] && grep -q 'forked child' out && ! grep -q 'Aborting\|error' out; echo $?)" "$(tail -2 out | tr '\n' ' ')"

echo "pkcs11-tool over SoftHSM2: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

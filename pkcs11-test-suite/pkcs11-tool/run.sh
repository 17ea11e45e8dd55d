#!/usr/bin/env bash
# pkcs11-tool (OpenSC) drives the module on both slots of `make_tokens`:
#   - Debian 12's OpenSC 0.23 for what it can do: -L, -M, -O, token and PIN management,
#     forwarded EC / RSA / AES / Ed25519 keys on the SoftHSM2 slot, its --test;
#   - OpenSC 0.27.1's pkcs11-tool (built once by build-opensc.sh, cached outside the repository)
#     for the post-quantum keys: ML-DSA-44/65/87 generation, -m ML-DSA, HashML-DSA, and the vendor
#     mechanisms by number (-m 0xB4AE0002 Dilithium5, -m 0xB4AE0004 hybrid), single- and
#     multi-part. 0.27 cannot generate the vendor key types, so PyKCS11 (pykeys.py) does;
#   - 0.23 on two fresh embedded tokens of their own configuration: library information and
#     interfaces, tokens from scratch, data objects, random, digests, Ed25519 on the embedded
#     backend, PIN lockout, and no secret in the module's debug log;
#   - SoftHSM2 directly beside the module: the same mechanism list and --test output, an RSA
#     signature and an AES-CBC-PAD ciphertext made through the module accepted by SoftHSM2.
# Results are read from the tools' output, not only their exit codes (0.23 exits 0 on
# "Invalid signature"). Prints "pkcs11-tool: N passed, M failed".
# Environment: P11_TIMEOUT (seconds per tool call, default 60), OPENSC27 (a pkcs11-tool 0.27+
# to use instead of building one).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR/..
# shellcheck source=lib.sh
source "$HERE/../lib.sh"
suite_begin pkcs11-tool
expect_checks 212
started=$SECONDS

apt_need opensc:pkcs11-tool softhsm2:softhsm2-util openssl:openssl
need pkcs11-tool softhsm2-util openssl timeout
# shellcheck disable=SC2119
make_tokens

T=${P11_TIMEOUT:-60}
OUT=$WORK/out
RC=0
cd "$WORK" || cannot_run "cannot enter $WORK"

# run TOOL ARGS...: one tool call with a time limit; RC and $OUT (stdout and stderr) hold the result.
run() {
    local tool=$1
    shift
    timeout -k 5 "$T" "$tool" "$@" >"$OUT" 2>&1 </dev/null
    RC=$?
    return 0
}
t23() { run pkcs11-tool --module "$MODULE" "$@"; }
has() { grep -Eq -- "$1" "$OUT"; }
# How the last call ended, and its output, as failure details.
why() {
    local how="exit $RC"
    [ "$RC" -eq 124 ] && how="timed out after ${T}s"
    [ "$RC" -gt 128 ] && [ "$RC" -ne 124 ] && how="killed by signal $((RC - 128))"
    echo "${1:+$1; }$how; output:"
    head -n 15 "$OUT" | cut -c1-160
}
# expect NAME ERE -- ARGS...: t23 ARGS exits 0 and its output matches ERE.
expect() {
    local name=$1 re=$2
    shift 3
    t23 "$@"
    if [ "$RC" -eq 0 ] && { [ -z "$re" ] || has "$re"; }; then ok "$name"; else mapfile -t d < <(why "wanted exit 0${re:+ and /$re/}"); fail "$name" "${d[@]}"; fi
}
# refused NAME ERE -- ARGS...: t23 ARGS fails cleanly (exit 1, no crash or hang), output matches ERE.
refused() {
    local name=$1 re=$2
    shift 3
    t23 "$@"
    if [ "$RC" -eq 1 ] && has "$re"; then ok "$name"; else mapfile -t d < <(why "wanted a clean failure matching /$re/"); fail "$name" "${d[@]}"; fi
}
# slot_block N: the lines of the -L output in $OUT that describe slot N.
slot_block() { awk -v n="$1" '/^Slot [0-9]+ /{p = ($2 == n)} p' "$OUT"; }
# block_has N ERE: slot N's part of the -L output in $OUT matches ERE (through a file: with
# pipefail, an early grep exit could fail the writer).
block_has() { slot_block "$1" >"$WORK/block"; grep -Eq -- "$2" "$WORK/block"; }
size() { stat -c %s "$1" 2>/dev/null || echo 0; }
# flip FILE OUT [OFFSET]: a copy of FILE with the lowest bit of byte OFFSET (default 100) flipped.
flip() {
    local at=${3:-100} b
    b=$(od -An -j"$at" -N1 -tu1 "$1" | tr -d ' ')
    [ -n "$b" ] || { cp "$1" "$2"; return 1; }
    { head -c "$at" "$1"; printf '%b' "\\$(printf '%03o' $((b ^ 1)))"; tail -c +$((at + 2)) "$1"; } >"$2"
}
S0=(--slot "$EMBEDDED_SLOT")
S1=(--slot "$HSM_SLOT")
L0=("${S0[@]}" --login --pin "$USER_PIN")
L1=("${S1[@]}" --login --pin "$USER_PIN")
printf 'message signed through b4ae-pkcs11 by pkcs11-tool\n' >msg
head -c 3000 /dev/urandom >big # 3000 bytes: pkcs11-tool goes multi-part from 1025 bytes on

# ------------------------------------------------------------------ 0.23: slots and mechanisms
echo "# OpenSC $(dpkg-query -W -f='${Version}' opensc 2>/dev/null || echo '?') pkcs11-tool, module $MODULE"
t23 -L
cp "$OUT" L.before
slot_block "$EMBEDDED_SLOT" >L.0
slot_block "$HSM_SLOT" >L.1
check "-L shows the embedded token (slot $EMBEDDED_SLOT, label $EMBEDDED_LABEL, initialized)" \
    "$([ "$RC" -eq 0 ] && grep -Eq "token label +: $EMBEDDED_LABEL\$" L.0 &&
        grep -q 'token initialized, PIN initialized' L.0 && grep -q 'token manufacturer : B4AE' L.0; echo $?)" \
    "$(why)"
check "-L shows the SoftHSM2 token (slot $HSM_SLOT, its own label, manufacturer and serial)" \
    "$([ "$RC" -eq 0 ] && grep -Eq "token label +: $HSM_LABEL\$" L.1 &&
        grep -q 'SoftHSM project' L.1 && grep -Eq 'serial num +: [0-9a-f]{16}$' L.1; echo $?)" \
    "$(why)"
hsm_serial=$(sed -n 's/^ *serial num *: //p' L.1)

pq_mechs="1C 1D F 17 1F 23 24 25 26 27 28 29 2A 2B 2C B4AE0001 B4AE0002 B4AE0003 B4AE0004"
for slot in "$EMBEDDED_SLOT" "$HSM_SLOT"; do
    t23 --slot "$slot" -M
    cp "$OUT" "M23.$slot"
    absent=""
    for m in $pq_mechs; do
        grep -Eqi "^  mechtype-0x0*$m," "M23.$slot" || absent="$absent 0x$m"
    done
    check "0.23 -M on slot $slot lists every PQ mechanism (ML-DSA, ML-KEM, HashML-DSA, vendor)" \
        "$([ "$RC" -eq 0 ] && [ -z "$absent" ]; echo $?)" "missing:$absent" "$(why)"
    # other flags 0x18: CKF_MESSAGE_SIGN | CKF_MESSAGE_VERIFY, which OpenSC 0.23 does not name.
    check "0.23 -M on slot $slot: ML-DSA (0x1D) signs and verifies (also message by message), ML-KEM (0x17) flags 0x30000000 (encapsulate, decapsulate)" \
        "$(grep -Eq '^  mechtype-0x1D, keySize=\{1,3\}, sign, verify, other flags=0x18$' "M23.$slot" &&
            grep -Eq '^  mechtype-0x17, .*other flags=0x30000000' "M23.$slot"; echo $?)" \
        "$(grep -E 'mechtype-0x(1D|17),' "M23.$slot")"
done
run pkcs11-tool --module "$SOFTHSM" --token-label "$HSM_LABEL" -M
# The module adds CKF_MESSAGE_SIGN / CKF_MESSAGE_VERIFY (0x8 / 0x10, "other flags") to every
# mechanism that signs or verifies: it signs message by message with the HSM's mechanisms too.
sed -E 's/, other flags=0x(8|10|18)$//' "M23.$HSM_SLOT" >"M23.$HSM_SLOT.plain"
missing=$(grep -E '^  ' "$OUT" | while IFS= read -r line; do grep -qxF -- "$line" "M23.$HSM_SLOT.plain" || echo "$line"; done)
check "0.23 -M on slot $HSM_SLOT also lists every mechanism SoftHSM2 lists directly, with the same flags (plus the message-based ones)" \
    "$([ "$RC" -eq 0 ] && [ "$(grep -c '^  ' "$OUT")" -gt 20 ] && [ -z "$missing" ]; echo $?)" "missing: $missing"

# ------------------------------------------------------------------ 0.23: token and PIN management
# The embedded slot: re-initialized by pkcs11-tool itself (it erases the token), then the user PIN
# set by the SO, changed, and changed back.
expect "--init-token on slot $EMBEDDED_SLOT re-initializes the embedded token" \
    'Token successfully initialized' -- "${S0[@]}" --init-token --label "$EMBEDDED_LABEL" --so-pin "$SO_PIN"
t23 -L
slot_block "$EMBEDDED_SLOT" >L.0
check "-L: the re-initialized embedded token has no user PIN yet" \
    "$(grep -q 'token initialized' L.0 && ! grep -q 'PIN initialized' L.0; echo $?)" "$(cat L.0)"
refused "--init-token with a wrong SO PIN is refused with CKR_PIN_INCORRECT" 'CKR_PIN_INCORRECT' -- \
    "${S0[@]}" --init-token --label other --so-pin 00000000
expect "--init-pin (SO) sets the user PIN on slot $EMBEDDED_SLOT" 'User PIN successfully initialized' -- \
    "${S0[@]}" --init-pin --so-pin "$SO_PIN" --pin "$USER_PIN"

# pin_cycle SLOT: user and SO PIN changes and back, as pkcs11-tool does them.
pin_cycle() {
    local s=$1
    expect "--change-pin on slot $s: user PIN $USER_PIN -> 43214321" 'PIN successfully changed' -- \
        --slot "$s" --login --pin "$USER_PIN" --change-pin --new-pin 43214321
    expect "slot $s: login with the new user PIN" '' -- --slot "$s" --login --pin 43214321 -O
    refused "slot $s: the old user PIN is refused with CKR_PIN_INCORRECT" 'CKR_PIN_INCORRECT' -- \
        --slot "$s" --login --pin "$USER_PIN" -O
    expect "--change-pin on slot $s: user PIN back to $USER_PIN" 'PIN successfully changed' -- \
        --slot "$s" --login --pin 43214321 --change-pin --new-pin "$USER_PIN"
    expect "--change-pin --login-type so on slot $s: SO PIN -> 87654321" 'PIN successfully changed' -- \
        --slot "$s" --login --login-type so --so-pin "$SO_PIN" --change-pin --new-pin 87654321
    # (--init-pin logs the SO in on a read-write session; -O would use a read-only one, where
    # an SO login is CKR_SESSION_READ_ONLY_EXISTS.)
    refused "slot $s: the old SO PIN is refused with CKR_PIN_INCORRECT" 'CKR_PIN_INCORRECT' -- \
        --slot "$s" --init-pin --so-pin "$SO_PIN" --pin "$USER_PIN"
    expect "--change-pin --login-type so on slot $s: SO PIN back to $SO_PIN" 'PIN successfully changed' -- \
        --slot "$s" --login --login-type so --so-pin 87654321 --change-pin --new-pin "$SO_PIN"
    expect "--init-pin (SO) on slot $s resets the user PIN" 'User PIN successfully initialized' -- \
        --slot "$s" --init-pin --so-pin "$SO_PIN" --pin "$USER_PIN"
    expect "slot $s: user login after the PIN changes" '' -- --slot "$s" --login --pin "$USER_PIN" -O
}
pin_cycle "$EMBEDDED_SLOT"
t23 -L
slot_block "$EMBEDDED_SLOT" >L.0
check "-L: slot $EMBEDDED_SLOT has its user PIN, and the good logins cleared 'user PIN count low'" \
    "$(grep -q 'PIN initialized' L.0 && ! grep -q 'user PIN count low' L.0; echo $?)" "$(cat L.0)"

# The SoftHSM2 slot: C_InitToken goes to SoftHSM2 (same label, so the configuration still finds
# it), before any key exists there; then the same PIN cycle.
expect "--init-token on slot $HSM_SLOT re-initializes the SoftHSM2 token through the module" \
    'Token successfully initialized' -- "${S1[@]}" --init-token --label "$HSM_LABEL" --so-pin "$SO_PIN"
expect "--init-pin (SO) on slot $HSM_SLOT" 'User PIN successfully initialized' -- \
    "${S1[@]}" --init-pin --so-pin "$SO_PIN" --pin "$USER_PIN"
t23 -L
slot_block "$HSM_SLOT" >L.1
check "-L: slot $HSM_SLOT is still the same SoftHSM2 token (label, serial $hsm_serial), PIN initialized" \
    "$(grep -Eq "token label +: $HSM_LABEL\$" L.1 && grep -Fq "$hsm_serial" L.1 &&
        grep -q 'PIN initialized' L.1; echo $?)" "$(cat L.1)"
pin_cycle "$HSM_SLOT"

# ------------------------------------------------------------------ 0.23: --test on empty tokens
# tool_test NAME ARGS...: pkcs11-tool's own test ends in "No errors" (its exit code alone is not
# trusted: it is 0 when a part is skipped).
tool_test() {
    local name=$1
    shift
    t23 "$@" --test
    cp "$OUT" "test.$name"
    if [ "$RC" -eq 0 ] && has '^No errors$' && ! has 'ERR:|^[0-9]+ errors|Aborting'; then
        ok "--test reports no errors ($name)"
    else
        mapfile -t d < <(why)
        fail "--test reports no errors ($name)" "${d[@]}"
    fi
}
tool_test "slot $EMBEDDED_SLOT, no keys" "${L0[@]}"
tool_test "slot $HSM_SLOT, no keys" "${L1[@]}"
t23 --test-fork
check "--test-fork: C_Initialize in a forked child (both backends configured)" \
    "$([ "$RC" -eq 0 ] && has 'forked child' && ! has 'error:|Aborting'; echo $?)" "$(why)"

# ------------------------------------------------------------------ 0.23: forwarded classical keys
expect "--keypairgen EC:prime256v1 on slot $HSM_SLOT (forwarded)" 'Private Key Object; EC' -- \
    "${L1[@]}" --keypairgen --key-type EC:prime256v1 --id 01 --label ec1
expect "--keypairgen rsa:2048 on slot $HSM_SLOT (forwarded)" 'Private Key Object; RSA' -- \
    "${L1[@]}" --keypairgen --key-type rsa:2048 --id 02 --label rsa1
expect "--keygen AES:32 on slot $HSM_SLOT (forwarded)" 'Secret Key Object; AES length 32' -- \
    "${L1[@]}" --keygen --key-type AES:32 --id 03 --label aes1
expect "--keypairgen EC:edwards25519 on slot $HSM_SLOT (forwarded)" 'Private Key Object; EC_EDWARDS' -- \
    "${L1[@]}" --keypairgen --key-type EC:edwards25519 --id 05 --label ed1

# SoftHSM2 2.6.1 has no ECDSA-SHA256: hash, then -m ECDSA.
openssl dgst -sha256 -binary msg >msg.sha256
t23 "${L1[@]}" --sign -m ECDSA --id 01 -i msg.sha256 -o ec.sig --signature-format openssl
t23 "${S1[@]}" --read-object --type pubkey --id 01 -o ec.der
openssl pkey -pubin -inform DER -in ec.der -out ec.pem 2>/dev/null
check "ECDSA P-256 signature made through the module verifies with openssl" \
    "$(openssl pkeyutl -verify -pubin -inkey ec.pem -in msg.sha256 -sigfile ec.sig >/dev/null 2>&1; echo $?)" "$(why)"
expect "--verify -m ECDSA through the module: Signature is valid" '^Signature is valid' -- \
    "${L1[@]}" --verify -m ECDSA --id 01 -i msg.sha256 --signature-file ec.sig --signature-format openssl
printf 'other' | openssl dgst -sha256 -binary >other.sha256
t23 "${L1[@]}" --verify -m ECDSA --id 01 -i other.sha256 --signature-file ec.sig --signature-format openssl
check "--verify -m ECDSA of another message says Invalid signature (0.23 exits $RC)" \
    "$(has 'Invalid signature' && ! has 'Signature is valid'; echo $?)" "$(why)"

t23 "${L1[@]}" --sign -m SHA256-RSA-PKCS --id 02 -i msg -o rsa.sig
t23 "${S1[@]}" --read-object --type pubkey --id 02 -o rsa.der
check "RSA SHA256-RSA-PKCS signature made through the module verifies with openssl" \
    "$(openssl dgst -sha256 -verify <(openssl pkey -pubin -inform DER -in rsa.der 2>/dev/null) \
        -signature rsa.sig msg >/dev/null 2>&1; echo $?)" "$(why)"
expect "--verify -m SHA256-RSA-PKCS through the module" '^Signature is valid' -- \
    "${L1[@]}" --verify -m SHA256-RSA-PKCS --id 02 -i msg --signature-file rsa.sig
run pkcs11-tool --module "$SOFTHSM" --token-label "$HSM_LABEL" --login --pin "$USER_PIN" \
    --verify -m SHA256-RSA-PKCS --id 02 -i msg --signature-file rsa.sig
check "the RSA signature made through the module verifies in SoftHSM2 directly" \
    "$([ "$RC" -eq 0 ] && has '^Signature is valid'; echo $?)" "$(why)"
printf 'secret for RSA-OAEP\n' >plain
openssl pkeyutl -encrypt -pubin -keyform DER -inkey rsa.der -in plain -out plain.oaep \
    -pkeyopt rsa_padding_mode:oaep 2>/dev/null
rm -f plain.dec
t23 "${L1[@]}" --decrypt -m RSA-PKCS-OAEP --hash-algorithm SHA-1 --id 02 -i plain.oaep -o plain.dec
check "RSA-OAEP (SHA-1): openssl encrypts, the module decrypts" "$(cmp -s plain plain.dec; echo $?)" "$(why)"

head -c 1000 /dev/urandom >data
iv=000102030405060708090a0b0c0d0e0f
rm -f data.enc data.dec
t23 "${L1[@]}" --encrypt -m AES-CBC-PAD --id 03 --iv "$iv" -i data -o data.enc
t23 "${L1[@]}" --decrypt -m AES-CBC-PAD --id 03 --iv "$iv" -i data.enc -o data.dec
check "AES-256-CBC-PAD encrypt and decrypt round trip through the module" \
    "$([ "$(size data.enc)" -eq 1008 ] && cmp -s data data.dec; echo $?)" "$(why)"
rm -f data.direct
run pkcs11-tool --module "$SOFTHSM" --token-label "$HSM_LABEL" --login --pin "$USER_PIN" \
    --decrypt -m AES-CBC-PAD --id 03 --iv "$iv" -i data.enc -o data.direct
check "AES-CBC-PAD: encrypted through the module, decrypted by SoftHSM2 directly" \
    "$(cmp -s data data.direct; echo $?)" "$(why)"
head -c 32 /dev/urandom >aes.key
t23 "${L1[@]}" --write-object aes.key --type secrkey --key-type AES:32 --id 04 --label aes-known
t23 "${L1[@]}" --encrypt -m AES-CBC-PAD --id 04 --iv "$iv" -i data -o known.enc
check "AES-CBC-PAD with an imported key: openssl decrypts what the module encrypted" \
    "$(openssl enc -d -aes-256-cbc -K "$(od -An -v -tx1 aes.key | tr -d ' \n')" -iv "$iv" \
        -in known.enc 2>/dev/null | cmp -s - data; echo $?)" "$(why)"

t23 "${L1[@]}" --sign -m EDDSA --id 05 -i msg -o ed.sig
check "--sign -m EDDSA (forwarded Ed25519) gives 64 bytes" "$([ "$(size ed.sig)" -eq 64 ]; echo $?)" "$(why)"
expect "--verify -m EDDSA through the module" '^Signature is valid' -- \
    "${L1[@]}" --verify -m EDDSA --id 05 -i msg --signature-file ed.sig
flip ed.sig ed.bad 10
t23 "${L1[@]}" --verify -m EDDSA --id 05 -i msg --signature-file ed.bad
check "--verify -m EDDSA of a flipped signature says Invalid signature (0.23 exits $RC)" \
    "$(has 'Invalid signature' && ! has 'Signature is valid'; echo $?)" "$(why)"

# 0.23's --test with an RSA key: it decrypts with RSA-OAEP SHA-256 and a label, which SoftHSM2
# refuses (CKR_ARGUMENTS_BAD) and the tool aborts, through the module and directly alike. So the
# check is that the module's answers are SoftHSM2's, and that the RSA parts ran and passed.
t23 "${L1[@]}" --test
grep -v -E '^Using slot' "$OUT" >test.via
run pkcs11-tool --module "$SOFTHSM" --token-label "$HSM_LABEL" --login --pin "$USER_PIN" --test
grep -v -E '^Using slot' "$OUT" >test.direct
check "--test on slot $HSM_SLOT with RSA keys: the same output as SoftHSM2 directly" \
    "$(diff -q test.via test.direct >/dev/null; echo $?)" "$(diff test.via test.direct | head -8)"
check "--test on slot $HSM_SLOT: RSA-X-509 verify and RSA-PKCS decrypt OK through the module" \
    "$(grep -q 'RSA-X-509: OK' test.via && grep -q 'RSA-PKCS: OK' test.via && ! grep -q 'ERR:' test.via; echo $?)" \
    "$(head -20 test.via)"

# ------------------------------------------------------------------ 0.23: two fresh embedded tokens
# A configuration of its own: two embedded tokens never initialised (pkcs11-tool initialises
# them), max_pin_failures = 10, and the module's debug log in a file, which is then searched for
# secrets. What this covers and the rest of the part does not: the library information and
# interfaces, tokens from scratch, data objects, random, digests, 0.23's refusals around
# ML-DSA key generation, Ed25519 on the embedded backend, PIN lockout, and the log.
FRESH=$WORK/fresh
mkdir -p "$FRESH"
cat >"$FRESH/b4ae-pkcs11.toml" <<TOML
[[token]]
label = "B4AE-Slot-0"
backend = "embedded"
path = "$FRESH/token0"
pin_kdf = "test-only-fast"
max_pin_failures = 10

[[token]]
label = "B4AE-Slot-1"
backend = "embedded"
path = "$FRESH/token1"
pin_kdf = "test-only-fast"
max_pin_failures = 10
TOML
SAVED_CONF=$B4AE_PKCS11_CONF SAVED_LOG=$B4AE_PKCS11_LOG
export B4AE_PKCS11_CONF=$FRESH/b4ae-pkcs11.toml B4AE_PKCS11_LOG=debug:$FRESH/module.log
F0=(--slot 0)
F1=(--slot 1)
FL0=(--slot 0 --login --pin "$USER_PIN")
SO_PIN1=87654321

expect "fresh tokens: -I shows the library information" 'Cryptoki version' -- -I
expect "fresh tokens: -I with --use-locking (CKF_OS_LOCKING_OK)" 'Cryptoki version' -- --use-locking -I
t23 --list-interfaces
check "fresh tokens: --list-interfaces offers PKCS 11 3.2, 3.0 and 2.40" \
    "$([ "$RC" -eq 0 ] && has "Interface 'PKCS 11'" && has 'version: 3\.2' && has 'version: 3\.0' &&
        has 'version: 2\.40'; echo $?)" "$(why)"
t23 -L
check "fresh tokens: -L lists slot 0 and slot 1 with the configured descriptions, both uninitialized" \
    "$([ "$RC" -eq 0 ] && has '^Slot 0 \(0x0\): B4AE-Slot-0' && has '^Slot 1 \(0x1\): B4AE-Slot-1' &&
        [ "$(grep -Ec 'token state: +uninitialized' "$OUT")" -eq 2 ]; echo $?)" "$(why)"
t23 -T
check "fresh tokens: -T (--list-token-slots) lists both token slots" \
    "$([ "$RC" -eq 0 ] && has '^Slot 0 \(0x0\)' && has '^Slot 1 \(0x1\)'; echo $?)" "$(why)"
expect "fresh tokens: -M on an uninitialized token" 'mechtype-0x1D' -- "${F1[@]}" -M

expect "fresh tokens: --init-token on the never-initialized slot 0 (label t1)" \
    'Token successfully initialized' -- "${F0[@]}" --init-token --label t1 --so-pin "$SO_PIN"
t23 -L
check "fresh tokens: -L: slot 0 is initialized with label t1, slot 1 still uninitialized" \
    "$(block_has 0 'token label +: t1$' && block_has 0 'token initialized' &&
        block_has 1 'token state: +uninitialized'; echo $?)" "$(why)"
expect "fresh tokens: --init-token on slot 1 (label t2, another SO PIN)" \
    'Token successfully initialized' -- "${F1[@]}" --init-token --label t2 --so-pin "$SO_PIN1"
t23 "${F0[@]}" --init-pin --so-pin "$SO_PIN" --pin "$USER_PIN"
t23 -L
check "fresh tokens: --init-pin on slot 0, then -L shows PIN initialized and label t1" \
    "$([ "$RC" -eq 0 ] && block_has 0 'PIN initialized' &&
        block_has 0 'token label +: t1$'; echo $?)" "$(why)"

# Data objects, public and private.
head -c 200 /dev/urandom >d1.bin
printf '\0\0\0' >>d1.bin
expect "fresh tokens: --write-object data d1 (application app)" 'Created Data Object' -- \
    "${FL0[@]}" --write-object d1.bin --type data --label d1 --application-label app
t23 "${FL0[@]}" -O
check "fresh tokens: -O lists data object d1 with application app" \
    "$([ "$RC" -eq 0 ] && has "label: +'d1'" && has "application: +'app'"; echo $?)" "$(why)"
rm -f d1.out d1.pub d1.gone d2.out
t23 "${FL0[@]}" --read-object --type data --label d1 -o d1.out
check "fresh tokens: --read-object d1 returns the same 203 bytes" \
    "$([ "$RC" -eq 0 ] && cmp -s d1.bin d1.out; echo $?)" "$(why)"
t23 "${F0[@]}" -O
check "fresh tokens: -O without login lists the public object d1" \
    "$([ "$RC" -eq 0 ] && has "label: +'d1'"; echo $?)" "$(why)"
t23 "${F0[@]}" --read-object --type data --label d1 -o d1.pub
check "fresh tokens: --read-object d1 without login (CKA_PRIVATE false)" \
    "$([ "$RC" -eq 0 ] && cmp -s d1.bin d1.pub; echo $?)" "$(why)"
MARKER="b4ae-plaintext-marker-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
printf '%s' "$MARKER" >d2.bin
expect "fresh tokens: --write-object --private data d2" 'Created Data Object' -- \
    "${FL0[@]}" --write-object d2.bin --type data --label d2 --private
t23 "${F0[@]}" -O
check "fresh tokens: -O without login hides the private object d2" \
    "$([ "$RC" -eq 0 ] && ! has "label: +'d2'"; echo $?)" "$(why)"
t23 "${FL0[@]}" --read-object --type data --label d2 -o d2.out
check "fresh tokens: --read-object d2 after login returns its bytes" \
    "$([ "$RC" -eq 0 ] && cmp -s d2.bin d2.out; echo $?)" "$(why)"
t23 "${F1[@]}" -O
check "fresh tokens: slot 1 does not see slot 0's objects" \
    "$([ "$RC" -eq 0 ] && ! has "label: +'d1'"; echo $?)" "$(why)"
expect "fresh tokens: --delete-object --type data --label d1" '' -- \
    "${FL0[@]}" --delete-object --type data --label d1
t23 "${FL0[@]}" -O
check "fresh tokens: -O no longer lists d1" "$([ "$RC" -eq 0 ] && ! has "label: +'d1'"; echo $?)" "$(why)"
refused "fresh tokens: --read-object of the deleted d1 fails cleanly" '' -- \
    "${FL0[@]}" --read-object --type data --label d1 -o d1.gone
expect "fresh tokens: --delete-object d2" '' -- "${FL0[@]}" --delete-object --type data --label d2

# Random and digests (3 bytes, 0 bytes, and 5000 bytes: multi-part in the tool).
rm -f r1 r2
t23 "${F0[@]}" --generate-random 32 -o r1
check "fresh tokens: --generate-random 32 gives 32 bytes" \
    "$([ "$RC" -eq 0 ] && [ "$(size r1)" -eq 32 ]; echo $?)" "$(why "$(size r1) bytes")"
t23 "${F0[@]}" --generate-random 32 -o r2
check "fresh tokens: two --generate-random 32 outputs differ" \
    "$([ "$RC" -eq 0 ] && [ -s r2 ] && ! cmp -s r1 r2; echo $?)" "$(why)"
printf 'abc' >abc
: >empty
head -c 5000 /dev/urandom >h5000
hexof() { od -An -v -tx1 "$1" | tr -d ' \n'; }
for digest in SHA256:abc SHA256:empty SHA256:h5000 SHA384:h5000 SHA512:h5000; do
    alg=${digest%%:*} input=${digest#*:}
    rm -f "$input.$alg"
    t23 "${F0[@]}" --hash -m "$alg" -i "$input" -o "$input.$alg"
    want=$("${alg,,}sum" "$input" | cut -d' ' -f1)
    got=$([ -f "$input.$alg" ] && hexof "$input.$alg" || echo none)
    check "fresh tokens: --hash -m $alg of $(size "$input") bytes equals ${alg,,}sum" \
        "$([ "$RC" -eq 0 ] && [ "$got" = "$want" ]; echo $?)" "$(why "got $got want $want")"
done

# 0.23 cannot make an ML-DSA key: what it sends instead must be refused cleanly, no key left.
t23 "${FL0[@]}" --keypairgen --key-type ML-DSA-87 --id 8701 --label pq0
check "fresh tokens: 0.23 --keypairgen --key-type ML-DSA-87 ends cleanly (0.23 does not know the type)" \
    "$([ "$RC" -le 123 ]; echo $?)" "$(why)"
# -m without --key-type: 0.23 ignores -m and asks for RSA key pair generation, no RSA attributes.
t23 "${FL0[@]}" --keypairgen -m 0x1c --id 1c01 --label pq1
check "fresh tokens: 0.23 --keypairgen -m 0x1c without --key-type gives a clean answer" \
    "$([ "$RC" -le 123 ]; echo $?)" "$(why)"
# -m 0x1c with an RSA/EC/EdDSA key type: CKM_ML_DSA_KEY_PAIR_GEN with a CKK_RSA/CKK_EC/
# CKK_EC_EDWARDS template and no CKA_PARAMETER_SET. The module must refuse (no key), not crash.
i=2
for kt in rsa:2048 EC:prime256v1 EC:edwards25519; do
    refused "fresh tokens: 0.23 --keypairgen -m 0x1c --key-type $kt is refused by C_GenerateKeyPair" \
        'C_GenerateKeyPair' -- "${FL0[@]}" --keypairgen -m 0x1c --key-type "$kt" --id "1c0$i" --label "pq$i"
    i=$((i + 1))
done
t23 "${FL0[@]}" -O
check "fresh tokens: no key object was left behind by the refused generations" \
    "$([ "$RC" -eq 0 ] && ! has 'label: +pq[0-9]'; echo $?)" "$(why)"

# Ed25519 on the embedded backend (0.23 sends CKA_EC_PARAMS as PrintableString "edwards25519").
expect "fresh tokens: --keypairgen --key-type EC:edwards25519 on the embedded token" 'Key pair generated' -- \
    "${FL0[@]}" --keypairgen --key-type EC:edwards25519 --id ed01 --label ed1
printf 'message signed with Ed25519 through pkcs11-tool\n' >ed.msg
rm -f ed0.sig
t23 "${FL0[@]}" --sign -m EDDSA --id ed01 -i ed.msg -o ed0.sig
check "fresh tokens: --sign -m EDDSA on the embedded token gives a 64-byte signature" \
    "$([ "$RC" -eq 0 ] && [ "$(size ed0.sig)" -eq 64 ]; echo $?)" "$(why)"
expect "fresh tokens: --verify -m EDDSA on the embedded token: Signature is valid" '^Signature is valid' -- \
    "${FL0[@]}" --verify -m EDDSA --id ed01 -i ed.msg --signature-file ed0.sig
flip ed0.sig ed0.bad 0
t23 "${FL0[@]}" --verify -m EDDSA --id ed01 -i ed.msg --signature-file ed0.bad
check "fresh tokens: --verify of a flipped embedded Ed25519 signature says Invalid signature" \
    "$(has 'Invalid signature' && ! has 'Signature is valid' && [ "$RC" -le 1 ]; echo $?)" "$(why)"

# PIN lockout on slot 1 (max_pin_failures = 10).
expect "fresh tokens: --init-pin on slot 1" 'User PIN successfully initialized' -- \
    "${F1[@]}" --init-pin --so-pin "$SO_PIN1" --pin 56785678
expect "fresh tokens: slot 1 user login" '' -- "${F1[@]}" --login --pin 56785678 -O
refused "fresh tokens: a wrong PIN on slot 1 answers CKR_PIN_INCORRECT" 'CKR_PIN_INCORRECT' -- \
    "${F1[@]}" --login --pin 0000 -O
t23 -L
check "fresh tokens: -L: slot 1 shows 'user PIN count low' after a wrong PIN" \
    "$(block_has 1 'user PIN count low'; echo $?)" "$(why)"
bad=0
for _ in 2 3 4 5 6 7 8 9; do
    t23 "${F1[@]}" --login --pin 0000 -O
    [ "$RC" -eq 1 ] && has 'CKR_PIN_INCORRECT' || bad=$((bad + 1))
done
check "fresh tokens: wrong PINs 2 to 9 each answer CKR_PIN_INCORRECT" "$([ "$bad" -eq 0 ]; echo $?)" "$bad did not"
t23 -L
check "fresh tokens: -L: slot 1 shows 'final user PIN try' after 9 of 10" \
    "$(block_has 1 'final user PIN try'; echo $?)" "$(why)"
refused "fresh tokens: the 10th wrong PIN answers CKR_PIN_INCORRECT or CKR_PIN_LOCKED" \
    'CKR_PIN_INCORRECT|CKR_PIN_LOCKED' -- "${F1[@]}" --login --pin 0000 -O
refused "fresh tokens: the right PIN now answers CKR_PIN_LOCKED" 'CKR_PIN_LOCKED' -- \
    "${F1[@]}" --login --pin 56785678 -O
t23 -L
check "fresh tokens: -L: slot 1 shows 'user PIN locked', slot 0 does not" \
    "$(block_has 1 'user PIN locked' && ! block_has 0 'user PIN locked'; echo $?)" "$(why)"
expect "fresh tokens: slot 0 login still works" '' -- "${FL0[@]}" -O
expect "fresh tokens: SO --init-pin resets the locked PIN on slot 1" 'User PIN successfully initialized' -- \
    "${F1[@]}" --init-pin --so-pin "$SO_PIN1" --pin 56785678
expect "fresh tokens: slot 1 login works after the reset" '' -- "${F1[@]}" --login --pin 56785678 -O

# The module's debug log of all of the above.
check "fresh tokens: the module wrote its debug log" "$([ -s "$FRESH/module.log" ]; echo $?)" "$FRESH/module.log"
check "fresh tokens: the module log never contains an SO PIN" \
    "$(! grep -Fq -e "$SO_PIN" -e "$SO_PIN1" "$FRESH/module.log"; echo $?)"
check "fresh tokens: the module log never contains a private data object's value" \
    "$(! grep -Fq -e "$MARKER" "$FRESH/module.log"; echo $?)"
export B4AE_PKCS11_CONF=$SAVED_CONF B4AE_PKCS11_LOG=$SAVED_LOG

# ------------------------------------------------------------------ OpenSC 0.27.1
N27=${OPENSC27:-}
if [ -z "$N27" ]; then
    echo "# building or finding OpenSC 0.27.1's pkcs11-tool (build-opensc.sh)"
    N27=$(bash "$HERE/build-opensc.sh" 2>"$WORK/build-opensc.err" | tail -n 1)
fi
if [ -z "$N27" ] || [ ! -x "$N27" ]; then
    fail "OpenSC 0.27.1 pkcs11-tool is available (build-opensc.sh)" \
        "it could not be built, so no post-quantum key is driven by pkcs11-tool:" \
        "$(tail -n 15 "$WORK/build-opensc.err" 2>/dev/null)"
    echo "# pkcs11-tool part took $((SECONDS - started)) s"
    suite_end
    exit
fi
ok "OpenSC 0.27.1 pkcs11-tool is available ($N27)"
t27() { run "$N27" --module "$MODULE" "$@"; }
expect27() {
    local name=$1 re=$2
    shift 3
    t27 "$@"
    if [ "$RC" -eq 0 ] && { [ -z "$re" ] || has "$re"; }; then ok "$name"; else mapfile -t d < <(why "wanted exit 0${re:+ and /$re/}"); fail "$name" "${d[@]}"; fi
}
refused27() {
    local name=$1 re=$2
    shift 3
    t27 "$@"
    if [ "$RC" -eq 1 ] && has "$re"; then ok "$name"; else mapfile -t d < <(why "wanted a clean failure matching /$re/"); fail "$name" "${d[@]}"; fi
}
# verify27 NAME VALID(yes|no) ARGS...: 0.27's --verify; valid: "Signature is valid" and exit 0;
# not valid: "Invalid signature" and exit 1 (0.27, unlike 0.23, exits non-zero).
verify27() {
    local name=$1 want=$2
    shift 2
    t27 --verify "$@"
    if [ "$want" = yes ]; then
        check "$name" "$([ "$RC" -eq 0 ] && has '^Signature is valid' && ! has 'Invalid'; echo $?)" "$(why)"
    else
        check "$name" "$([ "$RC" -eq 1 ] && has 'Invalid signature' && ! has 'Signature is valid'; echo $?)" "$(why)"
    fi
}

# Python (PyKCS11, dilithium-py) for the vendor key pairs and independent verification.
PY=""
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then apt_need python3-venv; fi
if (cd "$ROOT" && bash scripts/python-env.sh) >"$WORK/python-env.log" 2>&1; then
    PY=$ROOT/.venv/bin/python
    ok "Python venv with PyKCS11 (scripts/python-env.sh)"
else
    fail "Python venv with PyKCS11 (scripts/python-env.sh)" "$(tail -n 5 "$WORK/python-env.log")"
fi
pyk() { # pykeys.py ARGS...: RC and $OUT as for run
    if [ -z "$PY" ]; then
        echo "no Python venv" >"$OUT"
        RC=2
        return 0
    fi
    run "$PY" "$HERE/pykeys.py" "$@"
}

for slot in "$EMBEDDED_SLOT" "$HSM_SLOT"; do
    L=(--slot "$slot" --login --pin "$USER_PIN")
    t27 --slot "$slot" -M
    check "0.27 -M on slot $slot names ML-DSA, HASH-ML-DSA-SHA256 and ML-KEM" \
        "$([ "$RC" -eq 0 ] && has '^  ML-DSA, keySize=\{1,3\}, sign, verify, other flags=0x18$' &&
            has '^  HASH-ML-DSA-SHA256,' && has '^  ML-KEM,'; echo $?)" "$(why)"

    # ML-DSA: generation, sign, verify, refusal of a wrong signature, independent verification.
    for ps in 44:2420 65:3309 87:4627; do
        n=${ps%%:*} len=${ps#*:} id=${ps%%:*}01
        expect27 "0.27 --keypairgen --key-type ML-DSA-$n on slot $slot" \
            "Private Key Object; ML-DSA-$n" -- "${L[@]}" --keypairgen --key-type "ML-DSA-$n" --id "$id" --label "mldsa$n"
        rm -f "sig$n.$slot"
        t27 "${L[@]}" --sign -m ML-DSA --id "$id" -i msg -o "sig$n.$slot"
        check "0.27 --sign -m ML-DSA with ML-DSA-$n on slot $slot: $len-byte signature" \
            "$([ "$RC" -eq 0 ] && [ "$(size "sig$n.$slot")" -eq "$len" ]; echo $?)" "$(why "$(size "sig$n.$slot") bytes")"
        verify27 "0.27 --verify -m ML-DSA-$n on slot $slot: Signature is valid" yes \
            "${L[@]}" -m ML-DSA --id "$id" -i msg --signature-file "sig$n.$slot"
        flip "sig$n.$slot" "bad$n.$slot"
        verify27 "0.27 --verify -m ML-DSA-$n of a flipped signature on slot $slot: Invalid signature, exit 1" no \
            "${L[@]}" -m ML-DSA --id "$id" -i msg --signature-file "bad$n.$slot"
        pyk pub "$MODULE" "$slot" "$id" "pub$n.$slot"
        pyk check "ml-dsa-$n" "pub$n.$slot" msg "sig$n.$slot"
        check "ML-DSA-$n signature from pkcs11-tool (slot $slot) verifies with dilithium-py" \
            "$([ "$RC" -eq 0 ] && has '^valid$'; echo $?)" "$(why)"
    done
    rm -f "bigsig.$slot"
    t27 "${L[@]}" --sign -m ML-DSA --id 8701 -i big -o "bigsig.$slot"
    check "0.27 --sign -m ML-DSA of 3000 bytes (C_SignUpdate/C_SignFinal) on slot $slot" \
        "$([ "$RC" -eq 0 ] && [ "$(size "bigsig.$slot")" -eq 4627 ]; echo $?)" "$(why)"
    verify27 "0.27 --verify -m ML-DSA of 3000 bytes (C_VerifyUpdate/C_VerifyFinal) on slot $slot" yes \
        "${L[@]}" -m ML-DSA --id 8701 -i big --signature-file "bigsig.$slot"
    pyk check ml-dsa-87 "pub87.$slot" big "bigsig.$slot"
    check "the multi-part ML-DSA-87 signature (slot $slot) verifies with dilithium-py" \
        "$([ "$RC" -eq 0 ] && has '^valid$'; echo $?)" "$(why)"
    verify27 "0.27 --verify -m ML-DSA with the message changed on slot $slot: Invalid signature" no \
        "${L[@]}" -m ML-DSA --id 8701 -i big --signature-file "sig87.$slot"

    # ML-KEM: 0.27 generates the key pair (it has no encapsulation command).
    t27 "${L[@]}" --keypairgen --key-type ML-KEM-768 --id 7681 --label mlkem768
    check "0.27 --keypairgen --key-type ML-KEM-768 on slot $slot: decapsulate / encapsulate key pair" \
        "$([ "$RC" -eq 0 ] && has '^Private Key Object; ML-KEM-768' && has '^  Usage: +decapsulate$' &&
            has '^Public Key Object; ML-KEM-768' && has '^  Usage: +encapsulate$'; echo $?)" "$(why)"

    # HashML-DSA by name (0.27.1 has no name for CKM_HASH_ML_DSA itself and passes
    # --hash-algorithm only to RSA-PSS, so the pre-hash mechanism 0x1F is not reachable).
    rm -f "hsig.$slot"
    t27 "${L[@]}" --sign -m HASH-ML-DSA-SHA512 --id 8701 -i msg -o "hsig.$slot"
    check "0.27 --sign -m HASH-ML-DSA-SHA512 on slot $slot: 4627 bytes" \
        "$([ "$RC" -eq 0 ] && [ "$(size "hsig.$slot")" -eq 4627 ]; echo $?)" "$(why)"
    verify27 "0.27 --verify -m HASH-ML-DSA-SHA512 on slot $slot" yes \
        "${L[@]}" -m HASH-ML-DSA-SHA512 --id 8701 -i msg --signature-file "hsig.$slot"
    verify27 "a HASH-ML-DSA-SHA512 signature does not verify as ML-DSA on slot $slot" no \
        "${L[@]}" -m ML-DSA --id 8701 -i msg --signature-file "hsig.$slot"
    pyk check hash-ml-dsa-87-sha512 "pub87.$slot" msg "hsig.$slot"
    check "the HASH-ML-DSA-SHA512 signature (slot $slot) verifies with dilithium-py" \
        "$([ "$RC" -eq 0 ] && has '^valid$'; echo $?)" "$(why)"
    rm -f "ssig.$slot"
    t27 "${L[@]}" --sign -m HASH-ML-DSA-SHAKE256 --id 6501 -i big -o "ssig.$slot"
    verify27 "0.27 HASH-ML-DSA-SHAKE256 sign and verify of 3000 bytes with ML-DSA-65 on slot $slot" yes \
        "${L[@]}" -m HASH-ML-DSA-SHAKE256 --id 6501 -i big --signature-file "ssig.$slot"

    # Vendor key types: 0.27 cannot make them (its template for -m 0xB4AE0001 is the ML-DSA one,
    # which the module refuses); PyKCS11 makes them, pkcs11-tool signs by mechanism number.
    refused27 "0.27 --keypairgen -m 0xB4AE0001 --key-type ML-DSA-87 on slot $slot: refused (CKA_PARAMETER_SET is not a Dilithium5 attribute)" \
        'C_GenerateKeyPair failed: rv = CKR_(ATTRIBUTE_TYPE_INVALID|TEMPLATE_INCONSISTENT)' -- \
        "${L[@]}" --keypairgen -m 0xB4AE0001 --key-type ML-DSA-87 --id d5ff --label d5-by-tool
    pyk gen "$MODULE" "$slot" dilithium5 d501 dilithium5
    check "PyKCS11 generates a Dilithium5 key pair on slot $slot (public key 2592 bytes)" \
        "$([ "$RC" -eq 0 ] && has 'public key 2592 bytes'; echo $?)" "$(why)"
    pyk gen "$MODULE" "$slot" hybrid 4b01 hybrid
    check "PyKCS11 generates a hybrid key pair on slot $slot (public key 2624 bytes)" \
        "$([ "$RC" -eq 0 ] && has 'public key 2624 bytes'; echo $?)" "$(why)"
    pyk pub "$MODULE" "$slot" d501 "d5.pub.$slot"
    pyk pub "$MODULE" "$slot" 4b01 "hy.pub.$slot"
    for v in dilithium5:d501:0xB4AE0002:4595 hybrid:4b01:0xB4AE0004:4695; do
        IFS=: read -r kind id mech len <<<"$v"
        for input in msg big; do
            parts=single-part
            [ "$input" = big ] && parts="multi-part, 3000 bytes"
            sig="$kind.$input.$slot"
            rm -f "$sig"
            t27 "${L[@]}" --sign -m "$mech" --id "$id" -i "$input" -o "$sig"
            check "0.27 --sign -m $mech ($kind, $parts) on slot $slot: $len-byte signature" \
                "$([ "$RC" -eq 0 ] && [ "$(size "$sig")" -eq "$len" ]; echo $?)" "$(why "$(size "$sig") bytes")"
            verify27 "0.27 --verify -m $mech ($kind, $parts) on slot $slot" yes \
                "${L[@]}" -m "$mech" --id "$id" -i "$input" --signature-file "$sig"
            pub=d5.pub.$slot
            [ "$kind" = hybrid ] && pub=hy.pub.$slot
            pyk check "$kind" "$pub" "$input" "$sig"
            check "the $kind signature ($parts, slot $slot) verifies outside the module" \
                "$([ "$RC" -eq 0 ] && has '^valid$'; echo $?)" "$(why)"
        done
        flip "$kind.big.$slot" "$kind.bad.$slot"
        verify27 "0.27 --verify -m $mech of a flipped $kind signature on slot $slot: Invalid signature" no \
            "${L[@]}" -m "$mech" --id "$id" -i big --signature-file "$kind.bad.$slot"
    done
    check "the hybrid signature starts with u32be(64) = 00000040 (slot $slot)" \
        "$([ "$(od -An -N4 -tx1 "hybrid.msg.$slot" | tr -d ' ')" = 00000040 ]; echo $?)"
    # Dilithium5 is deterministic: the tool's multi-part signature equals a single-part C_Sign.
    pyk sign "$MODULE" "$slot" 0xB4AE0002 d501 big "d5.single.$slot"
    check "Dilithium5: pkcs11-tool's multi-part signature of 3000 bytes equals single-part C_Sign (slot $slot)" \
        "$([ "$RC" -eq 0 ] && cmp -s "d5.single.$slot" "dilithium5.big.$slot"; echo $?)" "$(why)"
    pyk verify "$MODULE" "$slot" 0xB4AE0004 4b01 big "hybrid.big.$slot"
    check "hybrid: single-part C_Verify accepts pkcs11-tool's multi-part signature (slot $slot)" \
        "$([ "$RC" -eq 0 ] && has '^valid$'; echo $?)" "$(why)"

    # 0.23 with the post-quantum keys: -O shows them (key type 74 = CKK_ML_DSA unnamed), and its
    # 512-byte signature buffer cannot take an ML-DSA signature: a clean error, no crash.
    t23 "${L[@]}" -O
    check "0.23 -O on slot $slot lists the ML-DSA keys ('unknown key algorithm 74', label mldsa87)" \
        "$([ "$RC" -eq 0 ] && has '^Private Key Object; unknown key algorithm 74' && has 'label: +mldsa87'; echo $?)" "$(why)"
    refused "0.23 --sign -m 0x1D (512-byte buffer) on slot $slot fails cleanly" \
        'CKR_BUFFER_TOO_SMALL|CKR_OPERATION_ACTIVE' -- "${L[@]}" --sign -m 0x1D --id 8701 -i msg -o sig23
    t27 "${L[@]}" -O
    cp "$OUT" "O27.$slot"
    check "0.27 -O on slot $slot names the ML-DSA-44/65/87 keys and lists the vendor keys" \
        "$([ "$RC" -eq 0 ] && has '^Private Key Object; ML-DSA-44' && has '^Public Key Object; ML-DSA-65' &&
            has '^Private Key Object; ML-DSA-87' && has 'label: +dilithium5' && has 'label: +hybrid'; echo $?)" "$(why)"
done
check "0.27 -O on slot $HSM_SLOT still lists the forwarded keys next to the PQ keys" \
    "$(grep -q 'label: *ec1' "O27.$HSM_SLOT" && grep -q 'label: *rsa1' "O27.$HSM_SLOT" &&
        grep -q 'label: *aes1' "O27.$HSM_SLOT"; echo $?)"
tool_test "slot $EMBEDDED_SLOT, with post-quantum keys" "${L0[@]}"

echo "# pkcs11-tool part took $((SECONDS - started)) s"
suite_end

#!/usr/bin/env bash
# pkcs11_tool.sh - drive b4ae-pkcs11 with OpenSC's pkcs11-tool (Debian 12: 0.23).
#
#   tests/shell/pkcs11_tool.sh target/release/libb4ae_pkcs11.so
#
# Makes its own temporary configuration (two fresh embedded tokens,
# pin_kdf = "test-only-fast", max_pin_failures = 10), exports
# B4AE_PKCS11_CONF, and runs pkcs11-tool against the module.  Prints one line
# per check, "ok - NAME" or "not ok - NAME" (lines starting with "#" are
# diagnostics, "# skip - NAME" marks a check that does not apply), then
#
#   pkcs11-tool: N passed, M failed
#
# and exits non-zero if M > 0.  Installs opensc with apt-get when pkcs11-tool
# is missing and the script runs as root.
#
# What 0.23 cannot do, so this script does not try: ML-DSA sign/verify (its
# signature buffer is a fixed 512 bytes), ML-DSA key generation (--keypairgen
# ignores -m unless --key-type is RSA/EC/GOST, and then sends an RSA/EC/GOST
# template without CKA_PARAMETER_SET; "--key-type ML-DSA-87" is unknown to it).
# "Invalid signature" exits 0, so verification results are read from the output.
#
# Environment: B4AE_PKCS11_LOG (default: debug level into a file in the work
# directory, which is then checked for leaked secrets), P11_TIMEOUT (seconds per
# pkcs11-tool call, default 120), KEEP_WORKDIR=1 (keep the temporary directory).

set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 /path/to/libb4ae_pkcs11.so" >&2
    exit 2
fi
if [ ! -f "$1" ]; then
    echo "$0: module not found: $1" >&2
    exit 2
fi
MODULE=$(readlink -f "$1")

# ----------------------------------------------------------------- pkcs11-tool
if ! command -v pkcs11-tool >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "# pkcs11-tool missing: apt-get install -y opensc"
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y opensc >/dev/null 2>&1; then
            DEBIAN_FRONTEND=noninteractive apt-get update >/dev/null 2>&1 || true
            DEBIAN_FRONTEND=noninteractive apt-get install -y opensc >/dev/null
        fi
    else
        echo "$0: pkcs11-tool not found; install OpenSC (apt-get install opensc)" >&2
        exit 2
    fi
fi
P11TOOL=$(command -v pkcs11-tool)
OPENSC_VERSION=$(dpkg-query -W -f='${Version}' opensc 2>/dev/null || echo unknown)
echo "# pkcs11-tool: $P11TOOL (opensc $OPENSC_VERSION)"
echo "# module: $MODULE"

# ------------------------------------------------------------ work directory
WORK=$(mktemp -d "${TMPDIR:-/tmp}/b4ae-p11tool.XXXXXX")
cleanup() {
    if [ "${KEEP_WORKDIR:-0}" = 1 ]; then
        echo "# work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

cat >"$WORK/b4ae-pkcs11.toml" <<EOF
[[token]]
label = "B4AE-Slot-0"
backend = "embedded"
path = "$WORK/token0"
pin_kdf = "test-only-fast"
max_pin_failures = 10

[[token]]
label = "B4AE-Slot-1"
backend = "embedded"
path = "$WORK/token1"
pin_kdf = "test-only-fast"
max_pin_failures = 10
EOF
export B4AE_PKCS11_CONF="$WORK/b4ae-pkcs11.toml"
unset PKCS11_LIBRARY_PATH || true
OWN_LOG=0
if [ -z "${B4AE_PKCS11_LOG:-}" ]; then
    export B4AE_PKCS11_LOG="debug:$WORK/module.log"
    OWN_LOG=1
fi
echo "# B4AE_PKCS11_CONF=$B4AE_PKCS11_CONF"
echo "# B4AE_PKCS11_LOG=$B4AE_PKCS11_LOG"

TIMEOUT=${P11_TIMEOUT:-120}
SO_PIN=12345678
SO_PIN1=87654321
PIN=1234
NEW_PIN=4321
PIN1=5678
# Slot selection.  Slot IDs are 0, 1 in the order of the configuration file.
SLOT0=(--slot 0)
SLOT1=(--slot 1)

# ------------------------------------------------------------------ helpers
PASSED=0
FAILED=0
RC=0
OUTFILE="$WORK/last.out"

# run ARGS...: run pkcs11-tool on the module; sets RC, output in $OUTFILE.
run() {
    set +e
    timeout -k 10 "$TIMEOUT" "$P11TOOL" --module "$MODULE" "$@" >"$OUTFILE" 2>&1 </dev/null
    RC=$?
    set -e
    return 0
}

# How the last run ended, in words.
how() {
    case $RC in
        0) echo "exit 0" ;;
        124) echo "timed out after ${TIMEOUT}s" ;;
        12[5-7]) echo "could not run pkcs11-tool (exit $RC)" ;;
        *) if [ "$RC" -gt 128 ]; then
               echo "killed by signal $((RC - 128)) (crash)"
           else
               echo "exit $RC"
           fi ;;
    esac
}

# A failure reported cleanly: a normal non-zero exit, not a signal or timeout.
clean_error() { [ "$RC" -ge 1 ] && [ "$RC" -le 123 ]; }

# Print the last output as diagnostics.
show() {
    if [ -s "$OUTFILE" ]; then
        head -n "${1:-40}" "$OUTFILE" | sed 's/^/#   /'
    fi
}

pass() {
    PASSED=$((PASSED + 1))
    printf 'ok - %s\n' "$1"
}

# fail NAME [REASON]: also shows the last output.
fail() {
    FAILED=$((FAILED + 1))
    printf 'not ok - %s\n' "$1"
    if [ $# -ge 2 ] && [ -n "$2" ]; then
        printf '#   %s\n' "$2"
    fi
    show
}

skip() { printf '# skip - %s (%s)\n' "$1" "$2"; }

# out_has ERE: the last output matches.
out_has() { grep -Eq -- "$1" "$OUTFILE"; }

# expect_ok NAME [ERE] -- ARGS...: exit 0 and, if given, output matching ERE.
expect_ok() {
    local name=$1 re=$2
    shift 3
    run "$@"
    if [ "$RC" -ne 0 ]; then
        fail "$name" "$(how)"
    elif [ -n "$re" ] && ! out_has "$re"; then
        fail "$name" "output does not match /$re/"
    else
        pass "$name"
    fi
}

# expect_error NAME ERE -- ARGS...: a clean non-zero exit with output matching ERE.
expect_error() {
    local name=$1 re=$2
    shift 3
    run "$@"
    if [ "$RC" -eq 0 ]; then
        fail "$name" "succeeded, expected an error"
    elif ! clean_error; then
        fail "$name" "$(how)"
    elif [ -n "$re" ] && ! out_has "$re"; then
        fail "$name" "$(how), output does not match /$re/"
    else
        pass "$name"
    fi
}

# check NAME CONDITION-STATUS [REASON]: record a check computed by the caller.
check() {
    if [ "$2" -eq 0 ]; then pass "$1"; else fail "$1" "${3:-}"; fi
}

# slot_block N FILE: the lines of "-L" output that describe slot N.
slot_block() {
    awk -v n="$1" '/^Slot [0-9]+ /{p = ($2 == n)} p' "$2"
}

# block_has N FILE ERE: slot N's part of "-L" output matches ERE.  (No
# "| grep -q": with pipefail an early grep exit could fail the writer.)
block_has() {
    slot_block "$1" "$2" >"$WORK/block"
    grep -Eq -- "$3" "$WORK/block"
}

hex() { od -An -v -tx1 "$1" | tr -d ' \n'; }

# --------------------------------------------------- information, no tokens
echo "# --- information"
expect_ok "-I shows the library information" 'Cryptoki version' -- -I
sed -n 's/^/#   /p' "$OUTFILE"
expect_ok "-I with --use-locking (CKF_OS_LOCKING_OK)" 'Cryptoki version' -- --use-locking -I

run --list-interfaces
if [ "$RC" -eq 0 ] && out_has "Interface 'PKCS 11'" && out_has 'version: 3\.2' &&
    out_has 'version: 3\.0' && out_has 'version: 2\.40'; then
    pass "--list-interfaces offers PKCS 11 3.2, 3.0 and 2.40"
else
    fail "--list-interfaces offers PKCS 11 3.2, 3.0 and 2.40" "$(how)"
fi

run -L
cp "$OUTFILE" "$WORK/slots-before"
if [ "$RC" -eq 0 ] && grep -Eq '^Slot 0 \(0x0\): B4AE-Slot-0' "$WORK/slots-before" &&
    grep -Eq '^Slot 1 \(0x1\): B4AE-Slot-1' "$WORK/slots-before"; then
    pass "-L lists slot 0 and slot 1 with the configured descriptions"
else
    fail "-L lists slot 0 and slot 1 with the configured descriptions" "$(how)"
fi
n_uninit=$(grep -Ec 'token state: +uninitialized' "$WORK/slots-before" || true)
check "-L shows both fresh tokens uninitialized" "$([ "$n_uninit" -eq 2 ]; echo $?)" \
    "$n_uninit uninitialized tokens"

run -T
if [ "$RC" -eq 0 ] && out_has '^Slot 0 \(0x0\)' && out_has '^Slot 1 \(0x1\)'; then
    pass "-T (--list-token-slots) lists both token slots"
else
    fail "-T (--list-token-slots) lists both token slots" "$(how)"
fi

run "${SLOT0[@]}" -M
cp "$OUTFILE" "$WORK/mechs"
check "-M on slot 0" "$([ "$RC" -eq 0 ]; echo $?)" "$(how)"
sed -n 's/^/#   /p' "$WORK/mechs"
# 0.23 knows no PQ names: ML-DSA shows as mechtype-0x1D (newer tools: ML-DSA).
mldsa_line=$(grep -Ei '^[[:space:]]+(ML-DSA|mechtype-0x0*1D)(,|$)' "$WORK/mechs" || true)
check "-M lists ML-DSA (0x1D)" "$([ -n "$mldsa_line" ]; echo $?)"
check "-M shows ML-DSA with sign and verify" \
    "$(grep -q 'sign' <<<"$mldsa_line" && grep -q 'verify' <<<"$mldsa_line"; echo $?)" \
    "line: $mldsa_line"
check "-M lists ML-DSA key pair generation (0x1C)" \
    "$(grep -Eqi '^[[:space:]]+(ML-DSA-KEY-PAIR-GEN|mechtype-0x0*1C)(,|$)' "$WORK/mechs"; echo $?)"
check "-M lists SHA256" "$(grep -Eq '^[[:space:]]+SHA256(,|$)' "$WORK/mechs"; echo $?)"
missing=""
for m in B4AE0001 B4AE0002 B4AE0003 B4AE0004; do
    grep -Eqi "^[[:space:]]+mechtype-0x$m(,|$)" "$WORK/mechs" || missing="$missing 0x$m"
done
check "-M lists the Dilithium5 and hybrid vendor mechanisms" "$([ -z "$missing" ]; echo $?)" "missing:$missing"
missing=""
# 0.23 names none of these: ML-KEM 0x0F/0x17, HashML-DSA 0x1F and 0x23..0x2C.
for m in F 17 1F 23 24 25 26 27 28 29 2A 2B 2C; do
    grep -Eqi "^[[:space:]]+mechtype-0x0*$m(,|$)" "$WORK/mechs" || missing="$missing 0x$m"
done
check "-M lists ML-KEM and every HashML-DSA mechanism" "$([ -z "$missing" ]; echo $?)" "missing:$missing"
kem_line=$(grep -Ei '^[[:space:]]+mechtype-0x0*17(,|$)' "$WORK/mechs" || true)
# 0.23 has no names for CKF_ENCAPSULATE | CKF_DECAPSULATE and prints them as other flags.
check "-M shows ML-KEM with encapsulate and decapsulate" \
    "$(grep -Eqi 'encapsulate.*decapsulate|other flags=0x30000000' <<<"$kem_line"; echo $?)" \
    "line: $kem_line"
has_mech() { grep -Eqi "^[[:space:]]+($1)(,|\$)" "$WORK/mechs"; }
if has_mech 'ML-KEM|mechtype-0x0*17'; then
    echo "# note: ML-KEM (0x17) is listed"
else
    echo "# note: ML-KEM (0x17) is not listed"
fi
expect_ok "-M on slot 1 (uninitialized token)" '' -- "${SLOT1[@]}" -M

# ------------------------------------------------------------ token set-up
echo "# --- token and PIN set-up"
expect_ok "--init-token slot 0 (label t1)" 'Token successfully initialized' -- \
    "${SLOT0[@]}" --init-token --label t1 --so-pin "$SO_PIN"
run -L
cp "$OUTFILE" "$WORK/slots"
check "-L: slot 0 token label is t1" \
    "$(block_has 0 "$WORK/slots" 'token label +: t1$'; echo $?)" "$(how)"
check "-L: slot 0 is token initialized" \
    "$(block_has 0 "$WORK/slots" 'token initialized'; echo $?)"
check "-L: slot 1 is still uninitialized" \
    "$(block_has 1 "$WORK/slots" 'token state: +uninitialized'; echo $?)"

expect_ok "--init-token slot 1 (label t2)" 'Token successfully initialized' -- \
    "${SLOT1[@]}" --init-token --label t2 --so-pin "$SO_PIN1"
expect_error "--init-token again with a wrong SO PIN fails" 'CKR_PIN_INCORRECT' -- \
    "${SLOT0[@]}" --init-token --label tx --so-pin 00000000

expect_ok "--init-pin slot 0" 'User PIN successfully initialized' -- \
    "${SLOT0[@]}" --init-pin --so-pin "$SO_PIN" --pin "$PIN"
run -L
cp "$OUTFILE" "$WORK/slots"
check "-L: slot 0 has PIN initialized" \
    "$(block_has 0 "$WORK/slots" '[:,] PIN initialized'; echo $?)"
check "-L: slot 0 label still t1" \
    "$(block_has 0 "$WORK/slots" 'token label +: t1$'; echo $?)"

expect_ok "--login --pin 1234 -O" '' -- "${SLOT0[@]}" --login --pin "$PIN" -O
expect_ok "--change-pin 1234 -> 4321" 'PIN successfully changed' -- \
    "${SLOT0[@]}" --change-pin --pin "$PIN" --new-pin "$NEW_PIN"
expect_ok "login with the new PIN works" '' -- "${SLOT0[@]}" --login --pin "$NEW_PIN" -O
expect_error "login with the old PIN fails with CKR_PIN_INCORRECT" 'CKR_PIN_INCORRECT' -- \
    "${SLOT0[@]}" --login --pin "$PIN" -O
run -L
check "-L: slot 0 shows 'user PIN count low' after a wrong PIN" \
    "$(block_has 0 "$OUTFILE" 'user PIN count low'; echo $?)"
expect_ok "login with the new PIN after a failure" '' -- "${SLOT0[@]}" --login --pin "$NEW_PIN" -O
run -L
check "-L: 'user PIN count low' cleared by a good login" \
    "$(! block_has 0 "$OUTFILE" 'user PIN count low'; echo $?)"

# ------------------------------------------------------------ data objects
echo "# --- data objects"
head -c 200 /dev/urandom >"$WORK/d1.bin"
printf '\0\0\0' >>"$WORK/d1.bin"
L0=("${SLOT0[@]}" --login --pin "$NEW_PIN")

expect_ok "--write-object data d1 (application app)" 'Created Data Object' -- \
    "${L0[@]}" --write-object "$WORK/d1.bin" --type data --label d1 --application-label app
run "${L0[@]}" -O
if [ "$RC" -eq 0 ] && out_has "label: +'d1'" && out_has "application: +'app'"; then
    pass "-O lists data object d1 with application app"
else
    fail "-O lists data object d1 with application app" "$(how)"
fi
run "${L0[@]}" --read-object --type data --label d1 -o "$WORK/d1.out"
if [ "$RC" -eq 0 ] && cmp -s "$WORK/d1.bin" "$WORK/d1.out"; then
    pass "--read-object d1 returns the same 203 bytes"
else
    fail "--read-object d1 returns the same 203 bytes" "$(how)"
fi
run "${SLOT0[@]}" -O
check "-O without login lists the public object d1" \
    "$([ "$RC" -eq 0 ] && out_has "label: +'d1'"; echo $?)" "$(how)"
rm -f "$WORK/d1.pub"
run "${SLOT0[@]}" --read-object --type data --label d1 -o "$WORK/d1.pub"
check "--read-object d1 without login (CKA_PRIVATE false)" \
    "$([ "$RC" -eq 0 ] && cmp -s "$WORK/d1.bin" "$WORK/d1.pub"; echo $?)" "$(how)"

MARKER="b4ae-plaintext-marker-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
printf '%s' "$MARKER" >"$WORK/d2.bin"
expect_ok "--write-object --private data d2" 'Created Data Object' -- \
    "${L0[@]}" --write-object "$WORK/d2.bin" --type data --label d2 --private
run "${SLOT0[@]}" -O
check "-O without login hides the private object d2" \
    "$([ "$RC" -eq 0 ] && ! out_has "label: +'d2'"; echo $?)" "$(how)"
run "${L0[@]}" --read-object --type data --label d2 -o "$WORK/d2.out"
check "--read-object d2 after login returns its bytes" \
    "$([ "$RC" -eq 0 ] && cmp -s "$WORK/d2.bin" "$WORK/d2.out"; echo $?)" "$(how)"
run "${SLOT1[@]}" -O
check "slot 1 does not see slot 0's objects" \
    "$([ "$RC" -eq 0 ] && ! out_has "label: +'d1'"; echo $?)" "$(how)"

expect_ok "--delete-object --type data --label d1" '' -- \
    "${L0[@]}" --delete-object --type data --label d1
run "${L0[@]}" -O
check "-O no longer lists d1" "$([ "$RC" -eq 0 ] && ! out_has "label: +'d1'"; echo $?)" "$(how)"
rm -f "$WORK/d1.gone"
run "${L0[@]}" --read-object --type data --label d1 -o "$WORK/d1.gone"
check "--read-object of the deleted d1 fails cleanly" "$(clean_error; echo $?)" "$(how)"
expect_ok "--delete-object d2" '' -- "${L0[@]}" --delete-object --type data --label d2

# ------------------------------------------------------------ random, digests
echo "# --- random and digests"
rm -f "$WORK/r1" "$WORK/r2"
run "${SLOT0[@]}" --generate-random 32 -o "$WORK/r1"
check "--generate-random 32 gives 32 bytes" \
    "$([ "$RC" -eq 0 ] && [ "$(stat -c %s "$WORK/r1" 2>/dev/null || echo 0)" -eq 32 ]; echo $?)" \
    "$(how), $(stat -c %s "$WORK/r1" 2>/dev/null || echo no) bytes"
run "${SLOT0[@]}" --generate-random 32 -o "$WORK/r2"
check "two --generate-random 32 outputs differ" \
    "$([ "$RC" -eq 0 ] && [ -s "$WORK/r2" ] && ! cmp -s "$WORK/r1" "$WORK/r2"; echo $?)" "$(how)"

printf 'abc' >"$WORK/abc"
: >"$WORK/empty"
head -c 5000 /dev/urandom >"$WORK/h5000"
# Names of the inputs: 3 bytes, 0 bytes, and 5000 bytes (multi-part in the tool).
for input in abc empty h5000; do
    rm -f "$WORK/$input.sha256"
    run "${SLOT0[@]}" --hash -m SHA256 -i "$WORK/$input" -o "$WORK/$input.sha256"
    want=$(sha256sum "$WORK/$input" | cut -d' ' -f1)
    got=$([ -f "$WORK/$input.sha256" ] && hex "$WORK/$input.sha256" || echo none)
    check "--hash -m SHA256 of $(stat -c %s "$WORK/$input") bytes equals sha256sum" \
        "$([ "$RC" -eq 0 ] && [ "$got" = "$want" ]; echo $?)" "$(how), got $got want $want"
done
for alg in SHA384 SHA512; do
    if has_mech "$alg"; then
        sum="${alg,,}sum"
        rm -f "$WORK/h.$alg"
        run "${SLOT0[@]}" --hash -m "$alg" -i "$WORK/h5000" -o "$WORK/h.$alg"
        want=$("$sum" "$WORK/h5000" | cut -d' ' -f1)
        got=$([ -f "$WORK/h.$alg" ] && hex "$WORK/h.$alg" || echo none)
        check "--hash -m $alg equals $sum" "$([ "$RC" -eq 0 ] && [ "$got" = "$want" ]; echo $?)" \
            "$(how), got $got want $want"
    else
        skip "--hash -m $alg" "not in the mechanism list"
    fi
done

# ------------------------------------------------------------ pkcs11-tool's own tests
# --test (-t) prints its findings and "No errors" or "N errors".  (-T is
# --list-token-slots, checked above.)
tool_test() {
    local name=$1
    run "${L0[@]}" --test
    echo "# pkcs11-tool --test output ($name):"
    show 200
    if [ "$RC" -eq 0 ] && out_has '^No errors' && ! out_has 'ERR:|^[0-9]+ errors'; then
        pass "--test reports no errors ($name)"
    else
        fail "--test reports no errors ($name)" "$(how)"
    fi
}
echo "# --- pkcs11-tool self tests"
tool_test "empty token"

run "${SLOT0[@]}" --test-fork
if [ "$RC" -eq 0 ] && ! out_has 'error:|Aborting'; then
    pass "--test-fork: C_Initialize in a forked child"
else
    fail "--test-fork: C_Initialize in a forked child" "$(how)"
fi

# ------------------------------------------------------------ key pair generation
echo "# --- key pair generation"
# 0.23 has no ML-DSA key type.  This is rejected by the tool after login.
run "${L0[@]}" --keypairgen --key-type ML-DSA-87 --id 8701 --label pq0
echo "# --keypairgen --key-type ML-DSA-87: $(how): $(grep -v '^Using' "$OUTFILE" | head -n 2 | tr '\n' ' ')"
check "--keypairgen --key-type ML-DSA-87 ends cleanly (0.23 does not know the type)" \
    "$([ "$RC" -eq 0 ] || clean_error; echo $?)" "$(how)"

# -m without --key-type: 0.23 ignores -m and asks for CKM_RSA_PKCS_KEY_PAIR_GEN
# with no RSA attributes.
run "${L0[@]}" --keypairgen -m 0x1c --id 1c01 --label pq1
echo "# --keypairgen -m 0x1c (no --key-type): $(how): $(grep -v '^Using' "$OUTFILE" | head -n 2 | tr '\n' ' ')"
check "--keypairgen -m 0x1c without --key-type gives a clean answer" \
    "$([ "$RC" -eq 0 ] || clean_error; echo $?)" "$(how)"

# -m 0x1c with an RSA/EC/EdDSA key type: the tool calls C_GenerateKeyPair with
# CKM_ML_DSA_KEY_PAIR_GEN, a CKK_RSA/CKK_EC/CKK_EC_EDWARDS template and no
# CKA_PARAMETER_SET.  The module must refuse (no key), not crash.
i=2
for kt in rsa:2048 EC:prime256v1 EC:edwards25519; do
    run "${L0[@]}" --keypairgen -m 0x1c --key-type "$kt" --id "1c0$i" --label "pq$i"
    echo "# --keypairgen -m 0x1c --key-type $kt: $(how): $(grep -v '^Using' "$OUTFILE" | head -n 2 | tr '\n' ' ')"
    check "--keypairgen -m 0x1c --key-type $kt is refused by C_GenerateKeyPair" \
        "$(clean_error && out_has 'C_GenerateKeyPair'; echo $?)" "$(how)"
    i=$((i + 1))
done
run "${L0[@]}" -O
check "no key object was left behind by the refused generations" \
    "$([ "$RC" -eq 0 ] && ! out_has "label: +pq[0-9]"; echo $?)" "$(how)"

# Ed25519, when offered (0.23 sends CKA_EC_PARAMS as PrintableString "edwards25519").
if has_mech 'EC-EDWARDS-KEY-PAIR-GEN' && has_mech 'EDDSA'; then
    expect_ok "--keypairgen --key-type EC:edwards25519" 'Key pair generated' -- \
        "${L0[@]}" --keypairgen --key-type EC:edwards25519 --id ed01 --label ed1
    printf 'message signed with Ed25519 through pkcs11-tool\n' >"$WORK/ed.msg"
    rm -f "$WORK/ed.sig"
    run "${L0[@]}" --sign -m EDDSA --id ed01 -i "$WORK/ed.msg" -o "$WORK/ed.sig"
    check "--sign -m EDDSA gives a 64-byte signature" \
        "$([ "$RC" -eq 0 ] && [ "$(stat -c %s "$WORK/ed.sig" 2>/dev/null || echo 0)" -eq 64 ]; echo $?)" \
        "$(how)"
    run "${L0[@]}" --verify -m EDDSA --id ed01 -i "$WORK/ed.msg" --signature-file "$WORK/ed.sig"
    check "--verify -m EDDSA: Signature is valid" \
        "$([ "$RC" -eq 0 ] && out_has 'Signature is valid'; echo $?)" "$(how)"
    if [ -s "$WORK/ed.sig" ]; then
        # Flip one bit of the first byte of the signature.
        first=$(od -An -N1 -tu1 "$WORK/ed.sig" | tr -d ' ')
        {
            printf '%b' "$(printf '\\0%03o' $((first ^ 1)))"
            tail -c +2 "$WORK/ed.sig"
        } >"$WORK/ed.bad"
        run "${L0[@]}" --verify -m EDDSA --id ed01 -i "$WORK/ed.msg" --signature-file "$WORK/ed.bad"
        check "--verify of a flipped Ed25519 signature says Invalid signature" \
            "$(out_has 'Invalid signature' && ! out_has 'Signature is valid' && { [ "$RC" -eq 0 ] || clean_error; }; echo $?)" \
            "$(how)"
    else
        fail "--verify of a flipped Ed25519 signature says Invalid signature" "no signature"
    fi
else
    skip "Ed25519 key pair, sign and verify" "EC-EDWARDS-KEY-PAIR-GEN or EDDSA not listed"
fi
tool_test "after key generation"

# ------------------------------------------------------------ PIN lockout (slot 1)
echo "# --- PIN lockout on slot 1 (max_pin_failures = 10)"
expect_ok "--init-pin slot 1" 'User PIN successfully initialized' -- \
    "${SLOT1[@]}" --init-pin --so-pin "$SO_PIN1" --pin "$PIN1"
expect_ok "slot 1 user login" '' -- "${SLOT1[@]}" --login --pin "$PIN1" -O
bad=0
for _ in 1 2 3 4 5 6 7 8 9; do
    run "${SLOT1[@]}" --login --pin 0000 -O
    if ! clean_error || ! out_has 'CKR_PIN_INCORRECT'; then
        bad=$((bad + 1))
        show 5
    fi
done
check "9 wrong PINs each answer CKR_PIN_INCORRECT" "$([ "$bad" -eq 0 ]; echo $?)" "$bad did not"
run -L
check "-L: slot 1 shows 'final user PIN try' after 9 of 10" \
    "$(block_has 1 "$OUTFILE" 'final user PIN try'; echo $?)"
expect_error "10th wrong PIN answers CKR_PIN_INCORRECT or CKR_PIN_LOCKED" \
    'CKR_PIN_INCORRECT|CKR_PIN_LOCKED' -- "${SLOT1[@]}" --login --pin 0000 -O
expect_error "the right PIN now answers CKR_PIN_LOCKED" 'CKR_PIN_LOCKED' -- \
    "${SLOT1[@]}" --login --pin "$PIN1" -O
run -L
check "-L: slot 1 shows 'user PIN locked'" \
    "$(block_has 1 "$OUTFILE" 'user PIN locked'; echo $?)"
check "-L: slot 0 is not locked" \
    "$(! block_has 0 "$OUTFILE" 'user PIN locked'; echo $?)"
expect_ok "slot 0 login still works" '' -- "${L0[@]}" -O
expect_ok "SO --init-pin resets the locked PIN on slot 1" 'User PIN successfully initialized' -- \
    "${SLOT1[@]}" --init-pin --so-pin "$SO_PIN1" --pin "$PIN1"
expect_ok "slot 1 login works after the reset" '' -- "${SLOT1[@]}" --login --pin "$PIN1" -O

# ------------------------------------------------------------ the module's log
echo "# --- module log"
if [ "$OWN_LOG" -eq 1 ] && [ -s "$WORK/module.log" ]; then
    check "module log never contains the SO PIN" \
        "$(! grep -Fq -e "$SO_PIN" -e "$SO_PIN1" "$WORK/module.log"; echo $?)"
    check "module log never contains a data object's value" \
        "$(! grep -Fq -e "$MARKER" "$WORK/module.log"; echo $?)"
    if [ "$FAILED" -gt 0 ]; then
        echo "# last lines of the module log:"
        tail -n 40 "$WORK/module.log" | sed 's/^/#   /'
    fi
elif [ "$OWN_LOG" -eq 1 ]; then
    skip "module log checks" "no log written to $WORK/module.log"
else
    skip "module log checks" "B4AE_PKCS11_LOG was set by the caller"
fi

echo "pkcs11-tool: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]

#!/usr/bin/env bash
# C: three programs built against include/b4ae_pkcs11.h (and checks.h, their shared helpers), each
# dlopen()ing the module.
#   - dilithium5_sign.c takes the 3.2 table from C_GetInterface, initialises with
#     CKF_OS_LOCKING_OK, signs with round-3 Dilithium5 through the vendor mechanisms and runs
#     ML-KEM-768 C_EncapsulateKey / C_DecapsulateKey, on both backends;
#   - abi_smoke.c checks the ABI itself on a fresh embedded token: the 3.2 / 3.0 / 2.40 function
#     tables of C_GetInterface, C_GetInterfaceList and C_GetFunctionList, C_InitToken / C_InitPIN
#     from scratch, ML-DSA-87 key attributes, deterministic and hedged signing, re-initialisation;
#   - message_sign.c drives message-based signing and verification (C_MessageSignInit...) and
#     signature-first verification (C_VerifySignatureInit...) from the 3.2 table, for every
#     signature mechanism of each slot, on both backends.
# Every `ok - ` / `not ok - ` line they print is one check. docs/consumers/c.md explains them.
set -uo pipefail
source "$(dirname "$0")/../lib.sh"
suite_begin "c"
expect_checks 468
apt_need gcc:gcc libc6-dev:/usr/include/dlfcn.h softhsm2:softhsm2-util
need gcc
make_tokens

src=$ROOT/pkcs11-test-suite/c/dilithium5_sign.c
app=$WORK/dilithium5_sign
CFLAGS=(-Wall -Wextra -Werror -std=c11 -I "$ROOT/include")

# b4ae_pkcs11.h alone must be enough: it pulls in the public-domain 3.2 header beside it.
# gcc -M: the files the program includes, one a line
deps=$(gcc "${CFLAGS[@]}" -M "$src" 2>&1 | tr -d "\\\\" | tr -s ' ' '\n')
headers=$(grep -E 'pkcs11[^/]*\.h$' <<<"$deps" | tr '\n' ' ')
grep -qx "$ROOT/include/pkcs11.h" <<<"$deps"
check "b4ae_pkcs11.h brings include/pkcs11.h (PKCS#11 3.2) with it" $? "pkcs11 headers used: $headers"

if ! out=$(gcc "${CFLAGS[@]}" -o "$app" "$src" -ldl 2>&1); then
    fail "gcc ${CFLAGS[*]} dilithium5_sign.c" "$out"
    cannot_run "dilithium5_sign.c does not compile"
fi
ok "gcc ${CFLAGS[*]/#$ROOT\//} dilithium5_sign.c -ldl compiles without a warning"

# abi_smoke.c: its own configuration, one embedded token never initialised (it initialises it).
smoke=$WORK/abi_smoke
if ! out=$(gcc "${CFLAGS[@]}" -o "$smoke" "$ROOT/pkcs11-test-suite/c/abi_smoke.c" -ldl 2>&1); then
    fail "gcc ${CFLAGS[*]/#$ROOT\//} abi_smoke.c -ldl compiles without a warning" "$out"
else
    ok "gcc ${CFLAGS[*]/#$ROOT\//} abi_smoke.c -ldl compiles without a warning"
    printf '[[token]]\nlabel = "C-Smoke"\nbackend = "embedded"\npath = "%s/smoke-token"\npin_kdf = "test-only-fast"\n' \
        "$WORK" >"$WORK/smoke.toml"
    echo "# abi_smoke on a fresh embedded token"
    out=$(B4AE_PKCS11_CONF=$WORK/smoke.toml timeout 120 "$smoke" "$MODULE" 2>&1)
    status=$?
    relay_checks "abi_smoke: " <<<"$out"
    why="exit status $status"
    [ "$status" -eq 124 ] && why="timed out after 120 s (hang?)"
    [ "$status" -gt 128 ] && why="killed by signal $((status - 128)) (crash?)"
    # exit 1 after its summary only says that some check failed, and those are counted above
    clean=1
    if [ "$status" -eq 0 ] || { [ "$status" -eq 1 ] && grep -q '^# abi_smoke: [0-9]* passed' <<<"$out"; }; then
        clean=0
    fi
    check "abi_smoke runs to its end" "$clean" "$why"
fi

# run_on_slots PROGRAM NAME PREFIX LIMIT: PROGRAM on both slots; its checks prefixed PREFIX (with
# the slot number after it), and one check that it ran to its end (no crash, no hang).
run_on_slots() {
    local program=$1 name=$2 prefix=$3 limit=$4 slot started out status why clean
    for slot in "$EMBEDDED_SLOT" "$HSM_SLOT"; do
        echo "# slot $slot"
        started=$SECONDS
        out=$(timeout "$limit" "$program" "$MODULE" "$slot" "$USER_PIN" 2>&1)
        status=$?
        relay_checks "${prefix}slot $slot: " <<<"$out"
        # exit 1 after its last line only says that some check failed, and those are counted above
        why="exit status $status"
        [ "$status" -eq 124 ] && why="timed out after $limit s (hang?)"
        [ "$status" -gt 128 ] && why="killed by signal $((status - 128)) (crash?)"
        clean=1
        if [ "$status" -eq 0 ] || { [ "$status" -eq 1 ] && grep -q "^# $name: slot .* done" <<<"$out"; }; then
            clean=0
        fi
        check "slot $slot: $name runs to its end ($((SECONDS - started)) s)" "$clean" "$why"
    done
}

run_on_slots "$app" dilithium5_sign "" 60

# message_sign.c: message-based signing and signature-first verification, on both backends.
msg=$WORK/message_sign
if ! out=$(gcc "${CFLAGS[@]}" -o "$msg" "$ROOT/pkcs11-test-suite/c/message_sign.c" -ldl 2>&1); then
    fail "gcc ${CFLAGS[*]/#$ROOT\//} message_sign.c -ldl compiles without a warning" "$out"
else
    ok "gcc ${CFLAGS[*]/#$ROOT\//} message_sign.c -ldl compiles without a warning"
    run_on_slots "$msg" message_sign "message_sign " 120
fi
suite_end

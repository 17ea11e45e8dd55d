#!/usr/bin/env bash
# C: pkcs11-test-suite/c/dilithium5_sign.c, built against include/b4ae_pkcs11.h only, dlopen()s the
# module, takes the 3.2 table from C_GetInterface, initialises with CKF_OS_LOCKING_OK, signs with
# round-3 Dilithium5 through the vendor mechanisms and runs ML-KEM-768 C_EncapsulateKey /
# C_DecapsulateKey, on both backends. Every `ok - ` / `not ok - ` line it prints is one check.
# docs/consumers/c.md explains the program.
set -uo pipefail
source "$(dirname "$0")/../lib.sh"
suite_begin "c"
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

for slot in "$EMBEDDED_SLOT" "$HSM_SLOT"; do
    echo "# slot $slot"
    started=$SECONDS
    out=$(timeout 60 "$app" "$MODULE" "$slot" "$USER_PIN" 2>&1)
    status=$?
    while IFS= read -r line; do
        case $line in
        "ok - "*) ok "slot $slot: ${line#ok - }" ;;
        "not ok - "*) fail "slot $slot: ${line#not ok - }" ;;
        *) echo "$line" ;;
        esac
    done <<<"$out"
    # exit 1 after its last line only says that some check failed, and those are counted above
    why="exit status $status"
    [ "$status" -eq 124 ] && why="timed out after 60 s (hang?)"
    [ "$status" -gt 128 ] && why="killed by signal $((status - 128)) (crash?)"
    clean=1
    if [ "$status" -eq 0 ] || { [ "$status" -eq 1 ] && grep -q '^# dilithium5_sign: slot .* done' <<<"$out"; }; then
        clean=0
    fi
    check "slot $slot: dilithium5_sign runs to its end ($((SECONDS - started)) s)" "$clean" "$why"
done
suite_end

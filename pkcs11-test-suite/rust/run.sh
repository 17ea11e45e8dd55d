#!/usr/bin/env bash
# Rust: an application built on cryptoki 0.12 alone (pkcs11-test-suite/rust), end to end on both
# backends, ML-KEM encapsulation included.
set -uo pipefail
source "$(dirname "$0")/../lib.sh"
suite_begin "rust (cryptoki 0.12)"
expect_checks 32
need cargo
make_tokens
app=$ROOT/target/suite/debug/b4ae-suite-cryptoki
if ! out=$(cargo build --quiet --manifest-path "$ROOT/pkcs11-test-suite/rust/Cargo.toml" \
    --target-dir "$ROOT/target/suite" 2>&1); then
    cannot_run "building the cryptoki application failed: $out"
fi
for slot in "$EMBEDDED_SLOT" "$HSM_SLOT"; do
    echo "# slot $slot"
    out=$(timeout 120 "$app" "$MODULE" "$slot" "$USER_PIN" 2>&1)
    status=$?
    while IFS= read -r line; do
        case $line in
        "ok - "*) ok "slot $slot: ${line#ok - }" ;;
        "not ok - "*) fail "slot $slot: ${line#not ok - }" ;;
        *) echo "$line" ;;
        esac
    done <<<"$out"
    check "slot $slot: the application exits cleanly" "$status" "exit status $status"
done
suite_end

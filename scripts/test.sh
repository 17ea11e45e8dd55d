#!/usr/bin/env bash
# Runs every test of b4ae-pkcs11 and ends with one summary line per suite and a total.
# This is the README's test command; .ci/run calls it.
set -uo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh || exit 1

results=()
failed=0
suite() {
    local name=$1
    shift
    echo
    echo "=== $name: $*"
    if "$@"; then
        results+=("ok      $name")
    else
        results+=("FAILED  $name")
        failed=$((failed + 1))
    fi
}

suite "format" cargo fmt --all -- --check
suite "clippy" cargo clippy --all-targets --all-features --quiet -- -D warnings
suite "build" cargo build --lib --bins
suite "cargo test (unit + C ABI through cryptoki)" cargo test --no-fail-fast
# Every consumer test (C programs, Python clients and cross-checks, pkcs11-tool, ...) lives in
# pkcs11-test-suite/; each part there must run the number of checks it declares.
suite "pkcs11-test-suite: every real consumer, both backends" bash pkcs11-test-suite/run.sh

echo
echo "=== summary"
printf '%s\n' "${results[@]}"
total=${#results[@]}
echo "test-suite: $((total - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]

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

module=target/debug/libb4ae_pkcs11.so

suite "format" cargo fmt --all -- --check
suite "clippy" cargo clippy --all-targets --quiet -- -D warnings
suite "build" cargo build --lib --bins
suite "cargo test (unit + C ABI through cryptoki)" cargo test --no-fail-fast
suite "C program against include/b4ae_pkcs11.h" bash -c "
    set -e
    work=\$(mktemp -d)
    trap 'rm -rf \"\$work\"' EXIT
    cc -Wall -Wextra -Werror -I include tests/c/abi_smoke.c -ldl -o \"\$work/abi_smoke\"
    printf '[[token]]\nlabel = \"B4AE-Slot-0\"\npath = \"%s/token\"\npin_kdf = \"test-only-fast\"\n' \"\$work\" > \"\$work/b4ae.toml\"
    B4AE_PKCS11_CONF=\"\$work/b4ae.toml\" \"\$work/abi_smoke\" $module
"
suite "python cross-checks (independent implementations)" bash -c \
    "scripts/python-env.sh && .venv/bin/python tests/python/crosscheck.py $module"
suite "pkcs11-tool (OpenSC)" bash tests/shell/pkcs11_tool.sh "$module"
suite "pkcs11-tool over SoftHSM2 through the module" bash tests/shell/pkcs11_tool_hsm.sh "$module"
suite "pkcs11-test-suite: every real consumer, both backends" bash pkcs11-test-suite/run.sh

echo
echo "=== summary"
printf '%s\n' "${results[@]}"
total=${#results[@]}
echo "test-suite: $((total - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# The consumer suite: real, unmodified programs drive the built module on both backends
# (embedded, and pkcs11 over SoftHSM2). Every consumer test of the project lives here, one
# directory per part. Each part installs what it needs, declares how many checks it runs
# (`expect_checks N` in its run.sh; lib.sh fails the part when another number ran, and has no
# skip) and prints "<consumer>: N passed, M failed"; this prints every part's line again at the end.
# Usage: pkcs11-test-suite/run.sh [part...]   (default: every part)
# The module under test: $B4AE_MODULE (and $B4AE_ADMIN), else target/debug/ of $CARGO_TARGET_DIR
# (default: the repository's target/).
set -uo pipefail
cd "$(dirname "$0")"

all=(pkcs11-tool p11-kit p11tool openssl openssl-provider python java c rust rust-api agent robustness deb)
parts=("${@:-${all[@]}}")
summary=()
failed=0
for part in "${parts[@]}"; do
    log=$(mktemp)
    bash "$part/run.sh" 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    line=$(grep -E '^[^ ].*: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)
    rm -f "$log"
    if [ -z "$line" ]; then
        line="$part: 0 passed, 1 failed (it printed no summary; exit status $status)"
        status=1
    fi
    summary+=("$line")
    [ "$status" -eq 0 ] || failed=$((failed + 1))
done
echo
echo "=== pkcs11-test-suite summary"
printf '%s\n' "${summary[@]}"
echo "pkcs11-test-suite: $((${#parts[@]} - failed)) consumers passed, $failed failed"
[ "$failed" -eq 0 ]

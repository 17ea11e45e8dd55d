#!/usr/bin/env bash
# Python: PyKCS11 and python-pkcs11 (the repo's .venv, pinned in pkcs11-test-suite/python/requirements.txt)
# drive the module on both backends: ML-DSA-44/65/87, round-3 Dilithium5 and the B4AE hybrid
# (generate, sign, verify, signature lengths, a tampered signature -> CKR_SIGNATURE_INVALID),
# ML-KEM-768 through python-pkcs11's 3.2 support, and multi-threaded ML-DSA-65 signing after a
# C_Initialize with CKF_OS_LOCKING_OK; and crosscheck.py, which checks the module's ML-DSA,
# HashML-DSA, Dilithium5, ML-KEM and hybrid outputs against independent pure-Python
# implementations (dilithium-py, kyber-py, cryptography) both ways. Each client runs in its own process (each initialises the
# module its own way), with metrics and an audit trail on: metrics_check.py parses every metrics file
# with the Prometheus project's parser (prometheus_client) and verifies the trail. docs/consumers/python.md
# explains the code.
set -uo pipefail
source "$(dirname "$0")/../lib.sh"
suite_begin "python"
expect_checks 126
HERE=$ROOT/pkcs11-test-suite/python

apt_need softhsm2:softhsm2-util
need python3
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_need python3-venv
if ! out=$(bash "$ROOT/scripts/python-env.sh" 2>&1); then
    cannot_run "scripts/python-env.sh failed: $out"
fi
PY=$ROOT/.venv/bin/python
"$PY" -c 'import PyKCS11, pkcs11' 2>/dev/null ||
    cannot_run "the venv lacks PyKCS11 or python-pkcs11 (pkcs11-test-suite/python/requirements.txt)"
echo "# $("$PY" -c 'import importlib.metadata as m; print("PyKCS11", m.version("PyKCS11"), "/ python-pkcs11", m.version("python-pkcs11"))')"

make_tokens
SLOTS="$EMBEDDED_SLOT:embedded,$HSM_SLOT:softhsm"
# Every client process writes its metrics file and appends to one audit trail; metrics_check.py
# reads them at the end.
mkdir -p "$WORK/metrics"
cat >>"$WORK/b4ae-pkcs11.toml" <<TOML

[metrics]
path = "$WORK/metrics/{pid}.prom"
interval_ms = 1000

[audit]
path = "$WORK/audit.jsonl"
TOML

# client script, then its extra arguments; every `ok - ` / `not ok - ` line it prints is one check,
# and it must also end cleanly (no crash, no hang: $CLIENT_TIMEOUT, default 120 s, at most).
run_client() {
    local script=$1 out status limit=${CLIENT_TIMEOUT:-120}
    shift
    local started=$SECONDS
    out=$(cd "$HERE" && timeout "$limit" "$PY" "$script" "$MODULE" "$SLOTS" "$@" 2>&1)
    status=$?
    relay_checks "" <<<"$out"
    # exit 1 after its last line only says that some check failed, and those are counted above
    local why="exit status $status" clean=1
    if [ "$status" -eq 0 ] || { [ "$status" -eq 1 ] && grep -q '^# .* done$' <<<"$out"; }; then
        clean=0
    fi
    [ "$status" -eq 124 ] && why="timed out after $limit s (hang?)"
    [ "$status" -gt 128 ] && why="killed by signal $((status - 128)) (crash?)"
    check "$script runs to its end ($((SECONDS - started)) s)" "$clean" "$why"
}

run_client pykcs11_client.py
run_client python_pkcs11_client.py
run_client threads_client.py 8 50
# The cross-checks against independent implementations make their own pair of tokens; pure
# Python ML-DSA / ML-KEM is slow, hence the longer limit.
CLIENT_TIMEOUT=600 run_client crosscheck.py
run_client metrics_check.py "$WORK/metrics" "$WORK/audit.jsonl" "$ADMIN"
suite_end

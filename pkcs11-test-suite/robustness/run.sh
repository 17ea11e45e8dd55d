#!/usr/bin/env bash
# Robustness: coverage-guided fuzzing of the module's C ABI for a bounded time (fuzz/fuzz.sh,
# libFuzzer), the replay of the regression corpus fuzz/regressions/, and several processes on one
# token, killed with SIGKILL in the middle (tests/abi_multiprocess.rs), on the embedded store and
# on the pkcs11 backend over SoftHSM2. docs/consumers/robustness.md explains each check.
#
# B4AE_FUZZ_SECONDS (default 60) sets how long the fuzzer runs.
set -uo pipefail
source "$(dirname "$0")/../lib.sh"
suite_begin "robustness"
expect_checks 4
apt_need g++:g++ softhsm2:softhsm2-util
need cargo rustc c++
[ -e "$MODULE" ] || cannot_run "$MODULE is missing (cargo build --lib --bins)"
# The cargo tests load the module this suite was given.
export B4AE_PKCS11_MODULE=$MODULE

seconds=${B4AE_FUZZ_SECONDS:-60}
started=$(date +%s)
out=$(bash "$ROOT/fuzz/fuzz.sh" "$seconds" 2>&1)
status=$?
echo "$out" | sed 's/^/#   /'
check "fuzzing the C ABI for ${seconds} s finds nothing (fuzz/fuzz.sh)" "$status" \
    "$(grep -E '^artifact: |B4AE FUZZ FINDING|panicked at' <<<"$out" | head -5)"
echo "# fuzz build and run: $(($(date +%s) - started)) s"

# The custody agent's request decoder and dispatch (docs/agent.md), for a shorter while.
agent_seconds=${B4AE_FUZZ_AGENT_SECONDS:-30}
started=$(date +%s)
out=$(B4AE_FUZZ_TARGET=agent_protocol bash "$ROOT/fuzz/fuzz.sh" "$agent_seconds" 2>&1)
status=$?
echo "$out" | sed 's/^/#   /'
check "fuzzing the custody agent's protocol for ${agent_seconds} s finds nothing (B4AE_FUZZ_TARGET=agent_protocol fuzz/fuzz.sh)" "$status" \
    "$(grep -E '^artifact: |B4AE FUZZ FINDING|panicked at' <<<"$out" | head -5)"
echo "# agent fuzz build and run: $(($(date +%s) - started)) s"

# cargo test prints "test result: ..." lines; each test binary is one check here.
cargo_check() { # name, test target
    local out status
    out=$(cd "$ROOT" && RUST_BACKTRACE=0 cargo test --quiet --test "$2" 2>&1)
    status=$?
    grep -E '^test result|^replayed|killed in the middle' <<<"$out" | sed 's/^/#   /'
    check "$1" "$status" "$(grep -E -A12 'B4AE FUZZ FINDING|problems:|failed \(' <<<"$out" | head -40)"
}
started=$(date +%s)
cargo_check "every input of fuzz/regressions/ replays without a finding (cargo test --test fuzz_regressions)" fuzz_regressions
cargo_check "four processes on one token, two killed with SIGKILL mid-call: nothing committed lost, embedded and SoftHSM2 (cargo test --test abi_multiprocess)" abi_multiprocess
echo "# cargo tests: $(($(date +%s) - started)) s"
suite_end

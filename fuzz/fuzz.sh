#!/usr/bin/env bash
# Builds the ABI fuzz target and runs it for a bounded time.
#
#   fuzz/fuzz.sh [SECONDS] [libFuzzer options...]      (default: $B4AE_FUZZ_SECONDS, else 60)
#
# The build needs no nightly toolchain and no cargo-fuzz: libfuzzer-sys's libFuzzer, linked
# into fuzz/fuzz_targets/abi.rs, with the sanitizer-coverage instrumentation `cargo fuzz` adds
# (stable -C options) applied by fuzz/rustc-sancov.sh to the module and the harness only; the
# dependencies build plain. `cargo fuzz run abi` (nightly, AddressSanitizer) runs the same
# target, see docs/consumers/robustness.md.
#
# Environment:
#   B4AE_FUZZ_SECONDS     how long to fuzz (default 60)
#   B4AE_FUZZ_TARGET      abi (default: the C ABI) or agent_protocol (the custody agent's
#                         request decoder and dispatch)
#   B4AE_FUZZ_BACKEND     the token the inputs drive: embedded (default), or pkcs11 (a token
#                         over SoftHSM2 through the module's pkcs11 backend)
#   B4AE_FUZZ_TARGET_DIR  cargo target directory (default ~/.cache/b4ae-pkcs11/fuzz-target:
#                         kept between runs and clones, so only the first build is long)
#   B4AE_FUZZ_CORPUS      working corpus (default fuzz/corpus/abi); fuzz/seeds/abi/ and
#                         fuzz/regressions/ seed it
#   B4AE_FUZZ_ARTIFACTS   where findings go (default fuzz/artifacts/abi)
#
# Exit status 0 when the run ended without a finding; otherwise 1, with the artifact's path and
# the finding (a crash, a timeout, running out of memory, or a harness finding: a panic in the
# module, CKR_GENERAL_ERROR, a broken length convention) printed.
set -euo pipefail
cd "$(dirname "$0")"
here=$PWD

seconds=${B4AE_FUZZ_SECONDS:-60}
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
    seconds=$1
    shift
fi
target_dir=${B4AE_FUZZ_TARGET_DIR:-$HOME/.cache/b4ae-pkcs11/fuzz-target}
target=${B4AE_FUZZ_TARGET:-abi}
corpus=${B4AE_FUZZ_CORPUS:-$here/corpus/$target}
artifacts=${B4AE_FUZZ_ARTIFACTS:-$here/artifacts/$target}
triple=$(rustc -vV | sed -n 's/^host: //p')

command -v c++ >/dev/null || { echo "fuzz.sh: a C++ compiler is needed (g++) for libFuzzer" >&2; exit 2; }

start=$(date +%s)
echo "# building the fuzz target (target dir $target_dir)"
# --target: the instrumentation must not reach build scripts and proc-macros.
RUSTC_WRAPPER=$here/rustc-sancov.sh CARGO_TARGET_DIR=$target_dir \
    cargo build --quiet --release --target "$triple" --bin "$target"
built=$(date +%s)
echo "# built in $((built - start)) s"
binary=$target_dir/$triple/release/$target

mkdir -p "$corpus" "$artifacts"
log=$(mktemp "${TMPDIR:-/tmp}/b4ae-fuzz-log.XXXXXX")
trap 'rm -f "$log"' EXIT
before=$(find "$artifacts" -type f | sort)
# The ABI target's regression corpus is its own (tests/fuzz_regressions.rs replays it).
inputs=("$corpus" "$here/seeds/$target")
[ "$target" = abi ] && inputs+=("$here/regressions")
mkdir -p "$here/seeds/$target"
echo "# fuzzing $target for $seconds s (corpus $corpus; seeds ${inputs[*]:1})"
set +e
# -len_control=0: inputs are call sequences; short ones say little.
"$binary" "${inputs[@]}" \
    -artifact_prefix="$artifacts/" \
    -max_total_time="$seconds" \
    -timeout=30 \
    -rss_limit_mb=4096 \
    -max_len=4096 \
    -len_control=0 \
    -print_final_stats=1 \
    "$@" >"$log" 2>&1
status=$?
set -e
after=$(find "$artifacts" -type f | sort)
new=$(comm -13 <(echo "$before") <(echo "$after") | sed '/^$/d')

grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|stat::new_units_added)|^#[0-9]+ +DONE' "$log" || true
echo "# corpus: $(find "$corpus" -type f | wc -l) inputs; $(( $(date +%s) - built )) s of fuzzing"
if [ "$status" -ne 0 ] || [ -n "$new" ]; then
    echo "FUZZING FOUND SOMETHING (libFuzzer exit status $status)"
    grep -E -A30 'B4AE FUZZ FINDING|panicked at|ERROR: libFuzzer|==ERROR|SUMMARY' "$log" | head -80
    for artifact in $new; do
        echo "artifact: $artifact"
    done
    echo "replay: B4AE_FUZZ_REPLAY=<artifact> B4AE_FUZZ_TRACE=1 cargo test --test fuzz_regressions -- --nocapture"
    echo "keep it: copy the artifact into fuzz/regressions/ (cargo test replays it from then on)"
    exit 1
fi
echo "no finding"

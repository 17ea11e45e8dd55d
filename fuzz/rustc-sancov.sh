#!/usr/bin/env bash
# RUSTC_WRAPPER for the CI fuzz build (fuzz/fuzz.sh): libFuzzer's coverage instrumentation
# (what `cargo fuzz` adds to every crate) only for the code under test, the module and the
# harness; the dependencies build plain and fast. Stable -C options: no nightly needed.
rustc=$1
shift
case " $* " in
*" --crate-name b4ae_pkcs11 "* | *" --crate-name abi "*)
    exec "$rustc" "$@" \
        -Cpasses=sancov-module \
        -Cllvm-args=-sanitizer-coverage-level=4 \
        -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
        -Cllvm-args=-sanitizer-coverage-pc-table \
        -Cllvm-args=-sanitizer-coverage-trace-compares \
        --cfg fuzzing -Cdebug-assertions -Coverflow-checks
    ;;
*) exec "$rustc" "$@" ;;
esac

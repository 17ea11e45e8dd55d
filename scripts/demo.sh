#!/usr/bin/env bash
# The main job: build the module, then through its C ABI initialize an embedded token (if new),
# generate an ML-DSA-87 key pair on it, sign, and verify (through the module and independently).
#
# Uses $B4AE_PKCS11_CONF if set; otherwise a token of its own under target/demo/.
# PINs: $B4AE_SO_PIN (default 12345678) and $B4AE_USER_PIN (default 11223344).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cargo build --release --lib --example sign_demo

if [ -z "${B4AE_PKCS11_CONF:-}" ]; then
    mkdir -p target/demo
    export B4AE_PKCS11_CONF="$PWD/target/demo/b4ae-pkcs11.toml"
    cat > "$B4AE_PKCS11_CONF" <<TOML
[[token]]
label = "B4AE demo"
backend = "embedded"
path = "$PWD/target/demo/token"
TOML
    echo "demo: configuration $B4AE_PKCS11_CONF (embedded token under target/demo/token)"
fi

export B4AE_PKCS11_MODULE="$PWD/target/release/libb4ae_pkcs11.so"
./target/release/examples/sign_demo

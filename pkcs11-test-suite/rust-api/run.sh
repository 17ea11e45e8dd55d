#!/usr/bin/env bash
# The Rust API of the B4AE HSM guide (b4ae_pkcs11::hsm, docs/rust-api.md): the guide's three
# examples as examples/hsm_*.rs, and B4AE users' two ways in (examples/b4ae_client.rs: the B4AE
# library's own PKCS#11 client unmodified, and this crate's backend behind b4ae's trait), run
# against the module on both backends.
set -uo pipefail
source "$(dirname "$0")/../lib.sh"
suite_begin "rust-api"
expect_checks 22
need cargo
make_tokens
# The guide's basic example logs in with its literal PIN 1234, which the embedded token refuses
# (its PINs have at least 8 characters): it runs on a SoftHSM2 token whose PIN is 1234.
softhsm2-util --init-token --free --label guide --so-pin "$SO_PIN" --pin 1234 >/dev/null ||
    cannot_run "softhsm2-util --init-token failed"
cat >"$WORK/guide.toml" <<TOML
[[token]]
label = "B4AE over SoftHSM2, the guide's PIN"
backend = "pkcs11"
library = "$SOFTHSM"
token_label = "guide"
TOML
# With the b4ae feature, in a target directory of its own: the module under test stays the
# one this suite was given.
if ! out=$(cargo build --quiet --examples --features b4ae --manifest-path "$ROOT/Cargo.toml" \
    --target-dir "$ROOT/target/suite-api" 2>&1); then
    cannot_run "building the examples failed: $out"
fi
examples=$ROOT/target/suite-api/debug/examples
export B4AE_PKCS11_MODULE=$MODULE

run() { # name, expected output line..., -- command...
    local name=$1 out status line
    shift
    local wanted=()
    while [ "$1" != "--" ]; do wanted+=("$1"); shift; done
    shift
    out=$(timeout 300 "$@" 2>&1)
    status=$?
    echo "$out" | sed 's/^/#   /'
    check "$name: exits cleanly" "$status" "exit status $status"
    for line in "${wanted[@]}"; do
        grep -qF -- "$line" <<<"$out"
        check "$name: prints \"$line\"" $? "not in its output"
    done
}

run "hsm_basic (guide, SoftHSM2-backed token, PIN 1234)" \
    "Generated keypair with public key: 2592 bytes" "Signature: 4627 bytes" \
    "Signature valid: true" "Signature valid for another message: false" \
    -- env B4AE_PKCS11_CONF="$WORK/guide.toml" "$examples/hsm_basic"
for slot in "$EMBEDDED_SLOT" "$HSM_SLOT"; do
    # Slot $slot first: the examples' slot 0 is the configuration's first token.
    if [ "$slot" = "$HSM_SLOT" ]; then
        awk 'BEGIN { RS = ""; ORS = "\n\n" } { block[NR] = $0 } END { print block[2]; print block[1] }' \
            "$B4AE_PKCS11_CONF" >"$WORK/swapped.toml"
        conf=$WORK/swapped.toml
    else
        conf=$B4AE_PKCS11_CONF
    fi
    run "hsm_enterprise (guide), slot $slot" \
        "stored MIK, DMK (generic secrets) and STK (AES-256) in the token" \
        "MIK-signing: ML-DSA-87, public key 2592 bytes, signature 4627 bytes, verified" \
        -- env B4AE_PKCS11_CONF="$conf" HSM_PIN="$USER_PIN" "$examples/hsm_enterprise"
    run "b4ae_client, slot $slot" \
        "b4ae's own client: signature 64 bytes, valid true, valid for another message false" \
        "b4ae's own client: store_key of an AES-256 key: ok" \
        "b4ae::hsm::HsmBackend over this crate: ML-DSA-87 public key 2592 bytes, signature 4627 bytes, verified" \
        -- env B4AE_PKCS11_CONF="$conf" HSM_PIN="$USER_PIN" "$examples/b4ae_client"
done
run "hsm_failover (guide), primary embedded, backup over SoftHSM2" \
    "the guide's choice: the primary (slot 0)" \
    "FailoverHsm: the primary has no backup-only-key; the backup signed and verified" \
    -- env HSM_PIN="$USER_PIN" "$examples/hsm_failover"
suite_end

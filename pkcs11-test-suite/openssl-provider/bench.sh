#!/usr/bin/env bash
# TLS 1.3 handshakes per second (openssl s_time, new session each time, X25519MLKEM768) against
# an s_server whose ML-DSA-87 key is on a token of the module (embedded, and over SoftHSM2), and
# against the same server with OpenSSL's own ML-DSA-87 key in a PEM file. A benchmark, not a
# test: run it on a quiet machine. OpenSSL 3.5+ and pkcs11-provider come from build.sh.
# Usage: bench.sh [seconds per server (default 10)]   The module: $B4AE_MODULE, else target/debug.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
seconds=${1:-10}
MODULE=${B4AE_MODULE:-$ROOT/target/debug/libb4ae_pkcs11.so}
ADMIN=$(dirname "$MODULE")/b4ae-pkcs11
CACHE=$(bash "$ROOT/pkcs11-test-suite/openssl-provider/build.sh" | tail -n 1)
OPENSSL=$CACHE/openssl/bin/openssl
export LD_LIBRARY_PATH=$CACHE/openssl/lib
WORK=$(mktemp -d "${TMPDIR:-/tmp}/b4ae-tls-bench.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
cd "$WORK"
PIN=11223344
mkdir softhsm
printf 'directories.tokendir = %s/softhsm\nobjectstore.backend = file\nlog.level = ERROR\n' "$WORK" >softhsm2.conf
export SOFTHSM2_CONF=$WORK/softhsm2.conf B4AE_PKCS11_CONF=$WORK/b4ae.toml B4AE_PKCS11_LOG=error
softhsm2-util --init-token --free --label bench-hsm --so-pin 12345678 --pin $PIN >/dev/null
cat >b4ae.toml <<TOML
[[token]]
label = "bench embedded"
path = "$WORK/embedded"

[[token]]
label = "bench over SoftHSM2"
backend = "pkcs11"
library = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "bench-hsm"
TOML
B4AE_SO_PIN=12345678 B4AE_USER_PIN=$PIN "$ADMIN" init-token --slot 0 --label bench-embedded >/dev/null
printf '%s' $PIN >pin
source "$ROOT/pkcs11-test-suite/openssl-provider/provider-cnf.sh"
provider_cnf "$CACHE" "$MODULE" "$WORK/pin" >"$WORK/provider.cnf"
plain() { OPENSSL_CONF=/dev/null "$OPENSSL" "$@"; }
provider() { OPENSSL_CONF=$WORK/provider.cnf "$OPENSSL" "$@"; }

# One server: key source, key, certificate; prints handshakes per second.
rate() {
    local conf=$1 key=$2 cert=$3 port out
    port=$((20000 + RANDOM % 30000))
    OPENSSL_CONF=$conf "$OPENSSL" s_server -quiet -accept "$port" -cert "$cert" -key "$key" \
        -tls1_3 -groups X25519MLKEM768 -www >/dev/null 2>&1 &
    local server=$!
    for _ in $(seq 50); do (: >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    # s_time's own rate is per second of the client's CPU time; the server's rate is the
    # number of handshakes over the wall-clock time they took.
    local started ended
    started=$(date +%s.%N)
    out=$(plain s_time -connect "127.0.0.1:$port" -new -time "$seconds" -CAfile "$cert" 2>&1)
    ended=$(date +%s.%N)
    kill $server
    wait $server 2>/dev/null || true
    awk -v t0="$started" -v t1="$ended" '/connections in [0-9.]+s;/ { n = $1 }
        END { printf "%.1f", n / (t1 - t0) }' <<<"$out"
}

plain genpkey -algorithm ML-DSA-87 -out pem.key
plain req -x509 -new -key pem.key -subj /CN=pem -days 2 -out pem.crt
pem=$(rate /dev/null pem.key pem.crt)
printf '%-34s %10s %8s\n' server "handshakes/s" "x PEM"
printf '%-34s %10s %8s\n' "ML-DSA-87 key in a PEM file" "$pem" "1.00"
for slot in 0 1; do
    python3 "$ROOT/pkcs11-test-suite/openssl/mldsa_keygen.py" "$MODULE" $slot $PIN 87 tls-87 ML-DSA-87 >/dev/null
    token=$([ $slot = 0 ] && echo bench-embedded || echo bench-hsm)
    key="pkcs11:token=$token;object=tls-87;type=private"
    provider req -x509 -new -key "$key" -subj "/CN=$token" -days 2 -out "$token.crt"
    r=$(rate "$WORK/provider.cnf" "$key" "$token.crt")
    printf '%-34s %10s %8s\n' "ML-DSA-87 key on $token" "$r" "$(awk -v a="$r" -v b="$pem" 'BEGIN { printf "%.2f", a / b }')"
done

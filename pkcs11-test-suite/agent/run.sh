#!/usr/bin/env bash
# The custody agent (docs/agent.md): real consumers on agent slots, as on any other slot.
# The agent runs as its own user (b4ae-test-agent, made here; needs root, as CI has) and serves
# two tokens: an embedded store it owns (slot 0) and a SoftHSM2 token it logs in to with its
# credential file (slot 1, custody 2 behind the agent). The consumers run as root, which the
# agent's allow-list names; tests/abi_agent.rs shows the users kept out.
#   - the C programs: abi_smoke.c on the fresh store token, dilithium5_sign.c on both;
#   - OpenSC 0.27.1's pkcs11-tool: ML-DSA-87 key generation, signing and verification, the
#     private key refused when read;
#   - PyKCS11 and python-pkcs11 clients, and 8 threads signing at once (threads_client.py).
set -uo pipefail
source "$(dirname "$0")/../lib.sh"
suite_begin "agent"
expect_checks 239
apt_need gcc:gcc libc6-dev:/usr/include/dlfcn.h softhsm2:softhsm2-util
need gcc setpriv
[ -e "$MODULE" ] || cannot_run "$MODULE is missing (cargo build --lib --bins)"
[ "$(id -u)" -eq 0 ] || cannot_run "the agent runs as a user of its own: run this part as root (CI does)"
AGENT_USER=b4ae-test-agent
id "$AGENT_USER" >/dev/null 2>&1 ||
    useradd --system --no-create-home --shell /usr/sbin/nologin "$AGENT_USER" ||
    cannot_run "useradd $AGENT_USER failed"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/b4ae-agent-suite.XXXXXX") # suite_exit removes it
chmod 755 "$WORK"
A=$WORK/agent
mkdir -p "$A/softhsm" "$WORK/run"
printf 'directories.tokendir = %s/softhsm\nobjectstore.backend = file\nlog.level = ERROR\n' "$A" >"$A/softhsm2.conf"
SOFTHSM2_CONF=$A/softhsm2.conf softhsm2-util --init-token --free --label agent-hsm \
    --so-pin hsm-so-pin-0 --pin hsm-user-pin-9 >/dev/null || cannot_run "softhsm2-util failed"
printf 'hsm-user-pin-9\n' >"$A/hsm.pin"
chmod 600 "$A/hsm.pin"
cat >"$A/agent.toml" <<TOML
[agent]
socket = "$WORK/run/agent.sock"
socket_mode = "0600"

[[token]]
label = "PQ store"
path = "$A/store"
pin_kdf = "test-only-fast"
allow_users = ["root"]

[[token]]
label = "PQ on HSM"
backend = "pkcs11"
library = "$SOFTHSM"
token_label = "agent-hsm"
credential_file = "$A/hsm.pin"
path = "$A/hsm-pins"
pin_kdf = "test-only-fast"
allow_users = ["root"]
TOML
chown -R "$AGENT_USER:$AGENT_USER" "$A" "$WORK/run"
chmod 700 "$A"
# The socket's mode 0600 belongs to the agent's user: root reaches it; the allow-list decides.
SOFTHSM2_CONF=$A/softhsm2.conf B4AE_PKCS11_LOG=warn \
    setpriv --reuid "$AGENT_USER" --regid "$AGENT_USER" --clear-groups -- \
    "$ADMIN" agent --config "$A/agent.toml" 2>"$WORK/agent.log" &
AGENT_PID=$!
# The part's own exit status is what suite_exit judges, not that of the kill.
trap 'rc=$?; kill "$AGENT_PID" 2>/dev/null; (exit "$rc"); suite_exit' EXIT
for _ in $(seq 100); do [ -S "$WORK/run/agent.sock" ] && break; sleep 0.1; done
[ -S "$WORK/run/agent.sock" ] || cannot_run "the agent did not start: $(cat "$WORK/agent.log")"
ok "the agent runs as $AGENT_USER and serves its socket"

cat >"$WORK/b4ae-pkcs11.toml" <<TOML
[[token]]
label = "Agent store"
backend = "agent"
socket = "$WORK/run/agent.sock"
token_label = "PQ store"

[[token]]
label = "Agent HSM"
backend = "agent"
socket = "$WORK/run/agent.sock"
token_label = "PQ on HSM"
TOML
export B4AE_PKCS11_CONF=$WORK/b4ae-pkcs11.toml
export B4AE_PKCS11_LOG=${B4AE_PKCS11_LOG:-error}
unset SOFTHSM2_CONF

# --- C: abi_smoke initialises the fresh store token (slot 0) and checks the ABI on it.
CFLAGS=(-Wall -Wextra -Werror -std=c11 -I "$ROOT/include")
smoke=$WORK/abi_smoke
app=$WORK/dilithium5_sign
if gcc "${CFLAGS[@]}" -o "$smoke" "$ROOT/pkcs11-test-suite/c/abi_smoke.c" -ldl &&
    gcc "${CFLAGS[@]}" -o "$app" "$ROOT/pkcs11-test-suite/c/dilithium5_sign.c" -ldl; then
    ok "the C programs compile"
else
    cannot_run "the C programs do not compile"
fi
out=$(timeout 120 "$smoke" "$MODULE" 2>&1)
status=$?
relay_checks "abi_smoke on the agent's store token: " <<<"$out"
check "abi_smoke runs to its end" "$([ "$status" -le 1 ] && grep -q '^# abi_smoke: [0-9]* passed' <<<"$out"; echo $?)" \
    "exit status $status"

# The HSM token's own PINs: set through the agent slot by the admin tool (C_InitToken, C_InitPIN).
B4AE_SO_PIN=$SO_PIN B4AE_USER_PIN=$USER_PIN "$ADMIN" init-token --slot 1 --label agent-hsm >/dev/null
check "b4ae-pkcs11 init-token sets the PINs of the agent's HSM token" $?

for slot in 0 1; do
    out=$(timeout 60 "$app" "$MODULE" "$slot" "$USER_PIN" 2>&1)
    status=$?
    relay_checks "slot $slot: " <<<"$out"
    check "slot $slot: dilithium5_sign runs to its end" \
        "$([ "$status" -eq 0 ] || { [ "$status" -eq 1 ] && grep -q '^# dilithium5_sign: slot .* done' <<<"$out"; }; echo $?)" \
        "exit status $status"
done

# --- pkcs11-tool 0.27.1
N27=$(bash "$ROOT/pkcs11-test-suite/pkcs11-tool/build-opensc.sh" 2>"$WORK/build-opensc.err" | tail -n 1)
if [ -z "$N27" ] || [ ! -x "$N27" ]; then
    cannot_run "OpenSC 0.27.1's pkcs11-tool could not be built: $(tail -n 5 "$WORK/build-opensc.err")"
fi
t27() { "$N27" --module "$MODULE" "$@" >"$WORK/out" 2>&1; }
t27 -L
check "pkcs11-tool -L lists both agent tokens" \
    "$(grep -q 'token label *: c-test' "$WORK/out" && grep -q 'token label *: agent-hsm' "$WORK/out"; echo $?)" \
    "$(cat "$WORK/out")"
echo "signed through the custody agent" >"$WORK/msg"
for slot in 0 1; do
    L=(--slot "$slot" --login --pin "$USER_PIN")
    t27 "${L[@]}" --keypairgen --key-type ML-DSA-87 --id 8701 --label agent-tool
    check "slot $slot: pkcs11-tool --keypairgen ML-DSA-87" $? "$(cat "$WORK/out")"
    t27 "${L[@]}" --sign -m ML-DSA --id 8701 -i "$WORK/msg" -o "$WORK/sig$slot"
    check "slot $slot: pkcs11-tool --sign -m ML-DSA (4627 bytes)" \
        "$([ "$(stat -c %s "$WORK/sig$slot" 2>/dev/null)" = 4627 ]; echo $?)" "$(cat "$WORK/out")"
    t27 "${L[@]}" --verify -m ML-DSA --id 8701 -i "$WORK/msg" --signature-file "$WORK/sig$slot"
    check "slot $slot: pkcs11-tool --verify says valid" \
        "$(grep -q '^Signature is valid' "$WORK/out"; echo $?)" "$(cat "$WORK/out")"
    t27 "${L[@]}" --read-object --type privkey --id 8701 -o "$WORK/stolen$slot"
    check "slot $slot: pkcs11-tool --read-object of the private key fails, nothing written" \
        "$([ ! -s "$WORK/stolen$slot" ]; echo $?)" "$(cat "$WORK/out")"
done

# --- Python
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_need python3-venv
(cd "$ROOT" && bash scripts/python-env.sh) >"$WORK/python-env.log" 2>&1 ||
    cannot_run "scripts/python-env.sh failed: $(tail -n 5 "$WORK/python-env.log")"
PY=$ROOT/.venv/bin/python
HERE=$ROOT/pkcs11-test-suite/python
for client in pykcs11_client.py python_pkcs11_client.py "threads_client.py 8 20"; do
    read -r -a argv <<<"$client"
    out=$(cd "$HERE" && timeout 180 "$PY" "${argv[0]}" "$MODULE" "0:agent-store,1:agent-hsm" "${argv[@]:1}" 2>&1)
    status=$?
    relay_checks "" <<<"$out"
    check "${argv[0]} runs to its end on agent slots" \
        "$([ "$status" -eq 0 ] || { [ "$status" -eq 1 ] && grep -q '^# .* done$' <<<"$out"; }; echo $?)" \
        "exit status $status"
done

kill "$AGENT_PID" 2>/dev/null
wait "$AGENT_PID" 2>/dev/null
check "the agent logged no error" "$(! grep -q ' ERROR ' "$WORK/agent.log"; echo $?)" \
    "$(grep ' ERROR ' "$WORK/agent.log" | head -5)"
suite_end

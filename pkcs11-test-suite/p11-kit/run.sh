#!/usr/bin/env bash
# p11-kit (Debian 12: 0.24) with the module: the shipped dist/p11-kit/b4ae-pkcs11.module (a copy
# pointing at the built module, in a private configuration directory), `p11-kit list-modules`,
# an application (PyKCS11) signing with ML-DSA through p11-kit-proxy.so, pkcs11-tool 0.23 through
# the proxy, and p11-kit's remoting (`p11-kit server` + p11-kit-client.so) with what it cannot
# carry. Prints "p11-kit: N passed, M failed".
#
# p11-kit 0.24 reads no user configuration (~/.config/pkcs11) in a program whose real uid is 0
# (P11_KIT_DEBUG=conf: "skipping user config in program running as root"). This part runs as root
# in CI, so the p11-kit programs run in a user namespace (`unshare --user`), where getuid() is the
# overflow uid 65534 and files are still accessed with the caller's rights; without user
# namespaces it falls back to running them as nobody (setpriv). A non-root caller needs neither.
# Environment: P11_TIMEOUT (seconds per tool call, default 60); P11KIT_RUN_AS=nobody (as root:
# use setpriv even where user namespaces work).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR/..
# shellcheck source=lib.sh
source "$HERE/../lib.sh"
suite_begin p11-kit
expect_checks 39
started=$SECONDS

apt_need p11-kit:p11-kit p11-kit-modules opensc:pkcs11-tool softhsm2:softhsm2-util
need p11-kit pkcs11-tool timeout
libdir=$(dpkg -L p11-kit-modules 2>/dev/null | grep -m1 '/p11-kit-proxy\.so$' | xargs -r dirname)
PROXY=${libdir:-/usr/lib/x86_64-linux-gnu}/p11-kit-proxy.so
CLIENT=${libdir:-/usr/lib/x86_64-linux-gnu}/pkcs11/p11-kit-client.so
[ -e "$PROXY" ] || cannot_run "p11-kit-proxy.so not found (package p11-kit-modules)"
# shellcheck disable=SC2119
make_tokens

T=${P11_TIMEOUT:-60}
OUT=$WORK/out
RC=0
cd "$WORK" || cannot_run "cannot enter $WORK"
echo "# p11-kit $(dpkg-query -W -f='${Version}' p11-kit 2>/dev/null), proxy $PROXY"

# ------------------------------------------------------------------ the private configuration
DIST=$ROOT/dist/p11-kit/b4ae-pkcs11.module
check "dist/p11-kit/b4ae-pkcs11.module is shipped and names an installed module path" \
    "$(grep -Eq '^module: /usr/lib/[^ ]*/pkcs11/libb4ae_pkcs11\.so$' "$DIST"; echo $?)" \
    "$(grep -v '^#' "$DIST" 2>/dev/null | grep . || echo "missing: $DIST")"
CONF=$WORK/home/.config
mkdir -p "$CONF/pkcs11/modules"
# The shipped file, pointing at the built module, with the module's configuration given by
# x-init-reserved (so it reaches C_Initialize as pReserved; B4AE_PKCS11_CONF is unset below).
sed -e "s|^module: .*|module: $MODULE|" \
    -e "s|^#x-init-reserved: .*|x-init-reserved: config=$B4AE_PKCS11_CONF|" \
    "$DIST" >"$CONF/pkcs11/modules/b4ae-pkcs11.module"
grep -q "^x-init-reserved: config=$B4AE_PKCS11_CONF\$" "$CONF/pkcs11/modules/b4ae-pkcs11.module" ||
    fail "the shipped module file has the commented x-init-reserved line this part fills in"
chmod -R a+rX "$WORK/home"

# "${AS_USER[@]}" CMD...: CMD with the private configuration, in a way p11-kit reads it.
ENV=(env -u B4AE_PKCS11_CONF HOME="$WORK/home" XDG_CONFIG_HOME="$CONF")
if [ "$(id -u)" -ne 0 ]; then
    how_user="the caller's own uid $(id -u)"
    AS_USER=("${ENV[@]}")
elif [ "${P11KIT_RUN_AS:-}" != nobody ] && unshare --user true 2>/dev/null; then
    how_user="unshare --user (getuid() = 65534 inside)"
    AS_USER=(unshare --user "${ENV[@]}")
elif command -v setpriv >/dev/null && id nobody >/dev/null 2>&1; then
    how_user="setpriv as nobody"
    chown -R nobody:nogroup "$WORK"
    AS_USER=(setpriv --reuid=nobody --regid=nogroup --clear-groups "${ENV[@]}")
else
    cannot_run "running as root, and neither user namespaces nor setpriv work: p11-kit 0.24 would ignore the private configuration"
fi
echo "# p11-kit programs run with $how_user, HOME=$WORK/home"
run() { # CMD...: RC and $OUT
    timeout -k 5 "$T" "$@" >"$OUT" 2>&1 </dev/null
    RC=$?
    return 0
}
has() { grep -Eq -- "$1" "$OUT"; }
why() {
    local how="exit $RC"
    [ "$RC" -eq 124 ] && how="timed out after ${T}s"
    echo "$how; output:"
    head -n 15 "$OUT" | cut -c1-160
}
# module_block NAME FILE: the lines of list-modules output for module NAME.
module_block() { awk -v m="$1:" '/^[^ ]/{p = ($1 == m)} p' "$2"; }

# ------------------------------------------------------------------ p11-kit list-modules
run "${AS_USER[@]}" p11-kit list-modules
cp "$OUT" list-modules
module_block b4ae-pkcs11 list-modules >ours
check "p11-kit list-modules shows b4ae-pkcs11 (from the private configuration) at the built module" \
    "$([ "$RC" -eq 0 ] && grep -qx "b4ae-pkcs11: $MODULE" ours; echo $?)" "$(why)"
check "list-modules: library description and manufacturer B4AE" \
    "$(grep -q 'library-description: b4ae-pkcs11' ours && grep -q 'library-manufacturer: B4AE' ours; echo $?)" \
    "$(head -5 ours)"
check "list-modules: both tokens ($EMBEDDED_LABEL, $HSM_LABEL), initialized with a user PIN" \
    "$(grep -qx "    token: $EMBEDDED_LABEL" ours && grep -qx "    token: $HSM_LABEL" ours &&
        [ "$(grep -c 'user-pin-initialized' ours)" -eq 2 ] && [ "$(grep -c 'token-initialized' ours)" -eq 2 ]; echo $?)" \
    "$(cat ours)"
check "list-modules: the SoftHSM2 token through the module keeps SoftHSM2's manufacturer and model" \
    "$(awk "/token: $HSM_LABEL/{p=1} p" ours | grep -q 'manufacturer: SoftHSM project'; echo $?)"
# The same list as root, without the namespace: the user configuration is ignored (the reason
# for AS_USER). Informational: it depends on p11-kit's version.
if [ "$(id -u)" -eq 0 ]; then
    run env HOME="$WORK/home" XDG_CONFIG_HOME="$CONF" P11_KIT_DEBUG=conf p11-kit list-modules
    if grep -q '^b4ae-pkcs11:' "$OUT"; then
        echo "# note: this p11-kit reads the user configuration as root too"
    else
        echo "# note: as root, p11-kit ignores $CONF/pkcs11: $(grep -m1 -o 'skipping user config[^)]*' "$OUT")"
    fi
fi

# ------------------------------------------------------------------ pkcs11-tool through the proxy
run "${AS_USER[@]}" pkcs11-tool --module "$PROXY" -L
cp "$OUT" proxy-L
check "pkcs11-tool --module p11-kit-proxy.so -L shows both tokens with the module's slot descriptions" \
    "$([ "$RC" -eq 0 ] && grep -Eq 'Slot [0-9]+ \(0x[0-9a-f]+\): B4AE embedded' proxy-L &&
        grep -Eq 'Slot [0-9]+ \(0x[0-9a-f]+\): B4AE over SoftHSM2' proxy-L &&
        grep -Eq "token label +: $EMBEDDED_LABEL\$" proxy-L; echo $?)" "$(why)"
# The proxy numbers slots itself (0x11, 0x12, ... per module): take ours from -L.
proxy_slot() { awk -v d="$1" '/^Slot [0-9]+ /{s = $3; gsub(/[():]/, "", s); sub(/^Slot [0-9]+ \([^)]*\): /, ""); if ($0 == d) print s}' proxy-L; }
pslot_e=$(proxy_slot "B4AE embedded")
pslot_h=$(proxy_slot "B4AE over SoftHSM2")
echo "# proxy slots: embedded $pslot_e, softhsm $pslot_h"
for pair in "embedded:$pslot_e" "softhsm:$pslot_h"; do
    name=${pair%%:*} ps=${pair#*:}
    if [ -z "$ps" ]; then
        fail "pkcs11-tool -M through the proxy ($name)" "no proxy slot found in -L"
        continue
    fi
    run "${AS_USER[@]}" pkcs11-tool --module "$PROXY" --slot "$ps" -M
    absent=""
    for m in 1C 1D F 17 1F 23 2C B4AE0001 B4AE0002 B4AE0003 B4AE0004; do
        grep -Eqi "^  mechtype-0x0*$m," "$OUT" || absent="$absent 0x$m"
    done
    check "pkcs11-tool -M through the proxy ($name, slot $ps): ML-DSA, ML-KEM, HashML-DSA and vendor mechanisms" \
        "$([ "$RC" -eq 0 ] && [ -z "$absent" ]; echo $?)" "missing:$absent" "$(why)"
done

# ------------------------------------------------------------------ an application through the proxy
PY=""
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then apt_need python3-venv; fi
if (cd "$ROOT" && bash scripts/python-env.sh) >"$WORK/python-env.log" 2>&1; then
    PY=$ROOT/.venv/bin/python
else
    fail "Python venv with PyKCS11 (scripts/python-env.sh)" "$(tail -n 5 "$WORK/python-env.log")"
fi
# pyrun ARGS...: through_p11kit.py; its "ok -"/"not ok -" lines are counted here.
pyrun() {
    local wrap=$1 line n=0
    shift
    if [ -z "$PY" ]; then
        fail "through_p11kit.py $1" "no Python venv"
        return
    fi
    if [ "$wrap" = user ]; then run "${AS_USER[@]}" "$PY" "$HERE/through_p11kit.py" "$@"; else run "$PY" "$HERE/through_p11kit.py" "$@"; fi
    while IFS= read -r line; do
        case $line in
            "ok - "*) ok "${line#ok - }"; n=$((n + 1)) ;;
            "not ok - "*) fail "${line#not ok - }"; n=$((n + 1)) ;;
            *) echo "$line" ;;
        esac
    done <"$OUT"
    if [ "$RC" -ne 0 ] || [ "$n" -eq 0 ]; then
        mapfile -t d < <(why)
        fail "through_p11kit.py $1 ran to the end" "${d[@]}"
    fi
}
mkdir -p "$WORK/pub"
if [ "$how_user" = "setpriv as nobody" ]; then
    chown nobody:nogroup "$WORK/pub"
    if [ -n "$PY" ] && ! "${AS_USER[@]}" "$PY" -c 'import PyKCS11' >/dev/null 2>&1; then
        fail "the venv's Python runs as nobody" \
            "$PY ($(readlink -f "$PY")) is not usable by nobody: run this part as a non-root user, or where 'unshare --user' works"
    fi
fi
pyrun user proxy "$PROXY" "$EMBEDDED_LABEL" "B4AE over SoftHSM2" "$WORK/pub"
pyrun root check "$WORK/pub"

# ------------------------------------------------------------------ remoting: p11-kit server / client
# `p11-kit server` exports one token over a unix socket; p11-kit-client.so is the module that
# applications load to reach it. Its RPC knows a fixed list of mechanisms: everything else is
# dropped from C_GetMechanismList and refused (see docs/consumers/p11-kit.md).
[ -e "$CLIENT" ] || fail "p11-kit-client.so is installed" "$CLIENT is missing"
sock=$WORK/p11kit.sock
[ ${#sock} -lt 100 ] || sock=$(mktemp -u /tmp/b4ae-p11kit.XXXXXX) # sun_path holds 108 bytes
timeout -k 5 120 p11-kit server -f -n "$sock" --provider "$MODULE" "pkcs11:token=$EMBEDDED_LABEL" \
    >"$WORK/server.out" 2>&1 </dev/null &
server=$!
for _ in $(seq 100); do
    [ -S "$sock" ] && break
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
done
if [ -S "$sock" ] && [ -e "$CLIENT" ]; then
    ok "p11-kit server exports the embedded token on a unix socket"
    export P11_KIT_SERVER_ADDRESS="unix:path=$sock"
    run pkcs11-tool --module "$CLIENT" -L
    check "pkcs11-tool --module p11-kit-client.so -L shows the embedded token through the socket" \
        "$([ "$RC" -eq 0 ] && has "token label +: $EMBEDDED_LABEL\$" && has 'B4AE embedded'; echo $?)" "$(why)"
    run pkcs11-tool --module "$CLIENT" -M
    cp "$OUT" client-M
    check "p11-kit-client.so -M carries SHA256 but (known limit) no ML-DSA, ML-KEM or vendor mechanism" \
        "$([ "$RC" -eq 0 ] && has '^  SHA256, digest' && ! has 'mechtype-0x(1C|1D|F|17|B4AE)'; echo $?)" "$(why)"
    pyrun root client "$CLIENT" "$EMBEDDED_LABEL"
    unset P11_KIT_SERVER_ADDRESS
else
    mapfile -t d < <(head -n 10 "$WORK/server.out")
    fail "p11-kit server exports the embedded token on a unix socket" "no socket $sock after 10 s" "${d[@]}"
fi
kill "$server" 2>/dev/null
wait "$server" 2>/dev/null
rm -f "$sock"

echo "# p11-kit part took $((SECONDS - started)) s"
suite_end

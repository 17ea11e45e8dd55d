#!/usr/bin/env bash
# GnuTLS's p11tool (Debian 12: gnutls-bin 3.7.9) with the module on both slots of `make_tokens`:
# --list-tokens, --list-token-urls, --list-mechanisms, --list-all with and without --login (PIN
# from GNUTLS_PIN or --set-pin), objects selected by URL, --initialize-pin, a forwarded ECDSA key
# generated and used by p11tool on the SoftHSM2 slot, and the same module reached through a
# p11-kit configuration (no --provider). The post-quantum keys are made beforehand with PyKCS11
# (../pkcs11-tool/pykeys.py): p11tool cannot generate them. Prints "p11tool: N passed, M failed".
# Environment: P11_TIMEOUT (seconds per tool call, default 60).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR/..
# shellcheck source=lib.sh
source "$HERE/../lib.sh"
suite_begin p11tool
expect_checks 36
started=$SECONDS

apt_need gnutls-bin:p11tool softhsm2:softhsm2-util openssl:openssl p11-kit:p11-kit
need p11tool openssl timeout
# shellcheck disable=SC2119
make_tokens

T=${P11_TIMEOUT:-60}
OUT=$WORK/out
RC=0
cd "$WORK" || cannot_run "cannot enter $WORK"
echo "# $(p11tool --version 2>&1 | head -n 1), module $MODULE"
# GNUTLS_PIN / GNUTLS_SO_PIN are p11tool's way to take PINs without a terminal; every call gets
# them (or --set-pin) explicitly, and never waits on a prompt (stdin is /dev/null).
unset GNUTLS_PIN GNUTLS_SO_PIN
run() { # CMD...: RC and $OUT
    timeout -k 5 "$T" "$@" >"$OUT" 2>&1 </dev/null
    RC=$?
    return 0
}
p11() { run p11tool --provider "$MODULE" "$@"; }
has() { grep -Eq -- "$1" "$OUT"; }
why() {
    local how="exit $RC"
    [ "$RC" -eq 124 ] && how="timed out after ${T}s"
    [ "$RC" -gt 128 ] && [ "$RC" -ne 124 ] && how="killed by signal $((RC - 128))"
    echo "${1:+$1; }$how; output:"
    head -n 15 "$OUT" | cut -c1-160
}
chk() { # NAME STATUS [REASON]: check, with the last output as the failure detail
    if [ "$2" -eq 0 ]; then ok "$1"; else mapfile -t d < <(why "${3:-}"); fail "$1" "${d[@]}"; fi
}
# object_block LABEL: the lines of a listing in $OUT for the object labelled LABEL.
object_block() { awk -v l="$1" '/^Object [0-9]+:/{if (p) exit; b = ""} {b = b $0 "\n"} $0 == "\tLabel: " l {p = 1} END {if (p) printf "%s", b}' "$OUT"; }
U0="pkcs11:token=$EMBEDDED_LABEL"
U1="pkcs11:token=$HSM_LABEL"

# ------------------------------------------------------------------ keys made beforehand
PY=""
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then apt_need python3-venv; fi
if (cd "$ROOT" && bash scripts/python-env.sh) >"$WORK/python-env.log" 2>&1; then
    PY=$ROOT/.venv/bin/python
else
    fail "Python venv with PyKCS11 (scripts/python-env.sh)" "$(tail -n 5 "$WORK/python-env.log")"
fi
KEYS="ml-dsa-87:8701:mldsa87 ml-dsa-44:4401:mldsa44 dilithium5:d501:dilithium5 hybrid:4b01:hybrid"
for slot in "$EMBEDDED_SLOT" "$HSM_SLOT"; do
    made=0 errors=()
    for k in $KEYS; do
        IFS=: read -r kind id label <<<"$k"
        if [ -n "$PY" ]; then
            run "$PY" "$HERE/../pkcs11-tool/pykeys.py" gen "$MODULE" "$slot" "$kind" "$id" "$label"
            if [ "$RC" -eq 0 ]; then made=$((made + 1)); else errors+=("$kind: $(tail -n 1 "$OUT")"); fi
        fi
    done
    check "PyKCS11 makes ML-DSA-87, ML-DSA-44, Dilithium5 and hybrid token key pairs on slot $slot" \
        "$([ "$made" -eq 4 ]; echo $?)" "${errors[@]:-no Python}"
done

# ------------------------------------------------------------------ tokens
p11 --list-tokens
cp "$OUT" tokens
chk "--list-tokens shows the embedded token (label, manufacturer B4AE, model embedded)" \
    "$([ "$RC" -eq 0 ] && has "^	Label: $EMBEDDED_LABEL\$" && has '^	Manufacturer: B4AE$' &&
        has '^	Model: embedded$'; echo $?)"
chk "--list-tokens shows the SoftHSM2 token through the module (its label, manufacturer, model)" \
    "$(has "^	Label: $HSM_LABEL\$" && has '^	Manufacturer: SoftHSM project$' && has '^	Model: SoftHSM v2$'; echo $?)"
chk "--list-tokens: both tokens require login and have an RNG" \
    "$([ "$(grep -c '^	Flags: RNG, Requires login$' tokens)" -eq 2 ]; echo $?)"
p11 --list-token-urls
chk "--list-token-urls gives the two token URLs" \
    "$([ "$RC" -eq 0 ] && [ "$(grep -c '^pkcs11:' "$OUT")" -eq 2 ] &&
        has "^pkcs11:model=embedded;manufacturer=B4AE;serial=[0-9A-F]+;token=$EMBEDDED_LABEL\$" &&
        has "^pkcs11:model=SoftHSM%20v2;manufacturer=SoftHSM%20project;serial=[0-9a-f]+;token=$HSM_LABEL\$"; echo $?)"

# ------------------------------------------------------------------ mechanisms
for u in "$U0" "$U1"; do
    p11 --list-mechanisms "$u"
    cp "$OUT" "mechs.${u##*=}"
    absent=""
    for m in 001c 001d 000f 0017 001f 0023 0024 0025 0026 0027 0028 0029 002a 002b 002c \
        b4ae0001 b4ae0002 b4ae0003 b4ae0004; do
        has "^\[0x$m\] " || absent="$absent 0x$m"
    done
    chk "--list-mechanisms $u lists every PQ mechanism (ML-DSA, ML-KEM, HashML-DSA, vendor)" \
        "$([ "$RC" -eq 0 ] && [ -z "$absent" ]; echo $?)" "missing:$absent"
    chk "--list-mechanisms $u: ML-DSA 0x1d signs and verifies with sizes 1-3, Dilithium5 0xb4ae0002 with 2592" \
        "$(has '^\[0x001d\] UNKNOWN keysize range \(1, 3\) sign verify$' &&
            has '^\[0xb4ae0002\] UNKNOWN keysize range \(2592, 2592\) sign verify$' &&
            has '^\[0x001c\] UNKNOWN keysize range \(1, 3\) generate_key_pair$'; echo $?)"
done
chk "--list-mechanisms $U1 also lists SoftHSM2's ECDSA, RSA and AES" \
    "$(grep -q '^\[0x1041\] CKM_ECDSA ' "mechs.$HSM_LABEL" && grep -q '^\[0x0001\] CKM_RSA_PKCS ' "mechs.$HSM_LABEL" &&
        grep -q 'CKM_AES_CBC_PAD' "mechs.$HSM_LABEL"; echo $?)" "$(grep -c . "mechs.$HSM_LABEL") lines"

# ------------------------------------------------------------------ objects
for slot_u in "$EMBEDDED_SLOT:$U0" "$HSM_SLOT:$U1"; do
    slot=${slot_u%%:*} u=${slot_u#*:}
    # Without login: no private key may appear. (p11tool 3.7.9 also leaves out public keys of a
    # type it does not know, so the PQ public keys do not show either: see the docs.)
    p11 --list-all "$u"
    chk "--list-all $u without login: exits cleanly and lists no private key" \
        "$({ [ "$RC" -eq 0 ] || has '^No matching objects found'; } && ! has 'Type: Private key' &&
            ! has 'CKA_PRIVATE'; echo $?)"
    GNUTLS_PIN=$USER_PIN p11 --list-all --login "$u"
    cp "$OUT" "all.$slot"
    absent=""
    for k in $KEYS; do
        IFS=: read -r kind id label <<<"$k"
        block=$(object_block "$label")
        grep -q '^	Type: Private key$' <<<"$block" &&
            grep -Eiq "^	URL: pkcs11:.*;token=[^;]*;id=%${id:0:2}%${id:2:2};object=$label;type=private\$" <<<"$block" &&
            grep -q 'CKA_PRIVATE; CKA_NEVER_EXTRACTABLE; CKA_SENSITIVE;' <<<"$block" &&
            grep -q "^	ID: ${id:0:2}:${id:2:2}\$" <<<"$block" || absent="$absent $label"
    done
    chk "--list-all --login (GNUTLS_PIN) $u lists the four PQ private keys (label, ID, URL, sensitive, never extractable)" \
        "$([ "$RC" -eq 0 ] && [ -z "$absent" ]; echo $?)" "missing or wrong:$absent"
    p11 --list-privkeys --login --set-pin="$USER_PIN" "$u;object=mldsa87;type=private"
    chk "--list-privkeys --login --set-pin with an object URL selects exactly the ML-DSA-87 key ($u)" \
        "$([ "$RC" -eq 0 ] && [ "$(grep -c '^Object [0-9]*:' "$OUT")" -eq 1 ] && has '^	Label: mldsa87$'; echo $?)"
    p11 --list-all --login --set-pin="$USER_PIN" "$u;id=%d5%01"
    chk "an id= URL selects the Dilithium5 key ($u)" \
        "$([ "$RC" -eq 0 ] && has '^	Label: dilithium5$' && ! has 'Label: mldsa87'; echo $?)"
    # What p11tool cannot do with a PQ key: it must fail cleanly, not crash or hang.
    p11 --login --set-pin="$USER_PIN" --export-pubkey "$u;object=mldsa87;type=private"
    chk "--export-pubkey of the ML-DSA-87 key fails cleanly: GnuTLS 3.7.9 knows no ML-DSA ($u)" \
        "$([ "$RC" -eq 1 ] && has 'algorithm or protocol is unknown'; echo $?)"
    p11 --login --set-pin="$USER_PIN" --test-sign "$u;object=mldsa87;type=private"
    chk "--test-sign with the ML-DSA-87 key fails cleanly (unknown algorithm) ($u)" \
        "$([ "$RC" -eq 1 ] && has 'Cannot import private key'; echo $?)"
done
chk "--list-all --login $U1 shows SoftHSM2's objects (a hybrid key's Ed25519 half) but never the module's storage keys" \
    "$(! grep -Eq '^	Label: B4AE-v(2-STK|1-MIK|1-DMK|1-STK)' "all.$HSM_SLOT" &&
        grep -q '^	Label: B4AE-v1-ED-' "all.$HSM_SLOT"; echo $?)"

# ------------------------------------------------------------------ PINs
GNUTLS_PIN=0000 p11 --list-all --login "$U0"
chk "a wrong GNUTLS_PIN is refused ('Wrong PIN')" "$([ "$RC" -eq 1 ] && has 'Wrong PIN'; echo $?)"
GNUTLS_PIN=$USER_PIN p11 --list-all --login "$U0"
chk "after one wrong PIN p11tool warns of few tries left (CKF_USER_PIN_COUNT_LOW) and the right PIN works" \
    "$([ "$RC" -eq 0 ] && has 'Only few tries left' && has 'Label: mldsa87'; echo $?)"
GNUTLS_PIN=$USER_PIN p11 --list-all --login "$U0"
chk "a good login clears CKF_USER_PIN_COUNT_LOW" "$([ "$RC" -eq 0 ] && ! has 'few tries'; echo $?)"
GNUTLS_SO_PIN=$SO_PIN GNUTLS_PIN=56785678 p11 --initialize-pin "$U0"
chk "--initialize-pin (GNUTLS_SO_PIN) sets a new user PIN on the embedded token" \
    "$([ "$RC" -eq 0 ] && has "Setting user's PIN"; echo $?)"
GNUTLS_PIN=56785678 p11 --list-privkeys --login "$U0"
chk "the new user PIN logs in" "$([ "$RC" -eq 0 ] && has 'Label: mldsa87'; echo $?)"
GNUTLS_SO_PIN=$SO_PIN GNUTLS_PIN=$USER_PIN p11 --initialize-pin "$U0"
chk "--initialize-pin back to $USER_PIN" "$([ "$RC" -eq 0 ]; echo $?)"

# ------------------------------------------------------------------ a forwarded key, by p11tool
GNUTLS_PIN=$USER_PIN p11 --login --generate-privkey ECDSA --curve secp256r1 --label p11tool-ec --id 0e01 \
    --outfile ec.pub.pem "$U1"
chk "--generate-privkey ECDSA secp256r1 on $U1 (forwarded to SoftHSM2)" \
    "$([ "$RC" -eq 0 ] && openssl pkey -pubin -in ec.pub.pem -noout 2>/dev/null; echo $?)"
GNUTLS_PIN=$USER_PIN p11 --login --export-pubkey --outfile ec.export.pem "$U1;object=p11tool-ec;type=private"
chk "--export-pubkey returns the same EC public key" \
    "$([ "$RC" -eq 0 ] && cmp -s <(openssl pkey -pubin -in ec.pub.pem -outform DER 2>/dev/null) \
        <(openssl pkey -pubin -in ec.export.pem -outform DER 2>/dev/null); echo $?)"
GNUTLS_PIN=$USER_PIN p11 --login --test-sign "$U1;object=p11tool-ec;type=private"
chk "--test-sign with the forwarded ECDSA key: signs, verifies with the private key's parameters and with the token's public key" \
    "$([ "$RC" -eq 0 ] && [ "$(grep -c '\.\.\. ok$' "$OUT")" -eq 3 ]; echo $?)"

# ------------------------------------------------------------------ through a p11-kit configuration
# No --provider: p11tool takes the modules p11-kit is configured with. The configuration is a
# private copy of dist/p11-kit/b4ae-pkcs11.module; p11-kit 0.24 reads no user configuration in a
# program running as root, hence the user namespace (see ../p11-kit/run.sh).
# GnuTLS initializes p11-kit's modules with its own CK_C_INITIALIZE_ARGS (flags
# CKF_OS_LOCKING_OK | CKF_LIBRARY_CANT_CREATE_OS_THREADS, pReserved NULL), so a .module file's
# x-init-reserved does not reach the module here: its configuration comes from B4AE_PKCS11_CONF
# (or ~/.config/b4ae-pkcs11, /etc/b4ae-pkcs11).
CONF=$WORK/home/.config
mkdir -p "$CONF/pkcs11/modules"
sed -e "s|^module: .*|module: $MODULE|" "$ROOT/dist/p11-kit/b4ae-pkcs11.module" \
    >"$CONF/pkcs11/modules/b4ae-pkcs11.module"
ENV=(env HOME="$WORK/home" XDG_CONFIG_HOME="$CONF")
AS_USER=()
if [ "$(id -u)" -ne 0 ]; then
    AS_USER=("${ENV[@]}")
elif unshare --user true 2>/dev/null; then
    AS_USER=(unshare --user "${ENV[@]}")
fi
if [ ${#AS_USER[@]} -eq 0 ]; then
    fail "p11tool through a p11-kit configuration" \
        "running as root without user namespaces: p11-kit 0.24 would ignore $CONF/pkcs11 (the p11-kit part covers the setpriv route)"
else
    run "${AS_USER[@]}" p11tool --list-tokens
    chk "p11tool --list-tokens without --provider (p11-kit configuration) shows both tokens of the module" \
        "$([ "$RC" -eq 0 ] && has "^	Label: $EMBEDDED_LABEL\$" && has "^	Module: $MODULE\$" &&
            has "URL: pkcs11:model=SoftHSM%20v2;.*token=$HSM_LABEL\$"; echo $?)"
    # SoftHSM2's own p11-kit module (softhsm2.module) shows the same token too: a URL with
    # library-description picks the module's view of it.
    run "${AS_USER[@]}" p11tool --list-mechanisms "pkcs11:library-description=b4ae-pkcs11%20post-quantum%20module;token=$HSM_LABEL"
    chk "p11tool --list-mechanisms with a library-description URL reaches the module's SoftHSM2 slot (ML-DSA listed)" \
        "$([ "$RC" -eq 0 ] && has '^\[0x001d\] ' && has 'CKM_ECDSA'; echo $?)"
    run "${AS_USER[@]}" env GNUTLS_PIN="$USER_PIN" p11tool --list-privkeys --login "$U0"
    chk "p11tool --list-privkeys --login through p11-kit lists the ML-DSA-87 key" \
        "$([ "$RC" -eq 0 ] && has '^	Label: mldsa87$'; echo $?)"
fi

echo "# p11tool part took $((SECONDS - started)) s"
suite_end

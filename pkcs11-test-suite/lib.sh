# Shared by every part of the consumer suite: counting checks, and a fresh pair of tokens.
# Source it from a part's run.sh; call `suite_begin "<consumer>"` first and `suite_end` last.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODULE=${B4AE_MODULE:-$ROOT/target/debug/libb4ae_pkcs11.so}
ADMIN=${B4AE_ADMIN:-$ROOT/target/debug/b4ae-pkcs11}
SOFTHSM=/usr/lib/softhsm/libsofthsm2.so
SO_PIN=12345678
USER_PIN=1234
# Slot numbers of the pair of tokens `make_tokens` configures.
EMBEDDED_SLOT=0
HSM_SLOT=1
EMBEDDED_LABEL=b4ae-embedded
HSM_LABEL=b4ae-softhsm

SUITE_PASSED=0
SUITE_FAILED=0

suite_begin() { SUITE_NAME=$1; echo "=== $SUITE_NAME"; }

ok() { SUITE_PASSED=$((SUITE_PASSED + 1)); echo "ok - $1"; }

fail() { # name, detail...
    SUITE_FAILED=$((SUITE_FAILED + 1))
    echo "not ok - $1"
    shift
    local line
    for line in "$@"; do printf '#   %s\n' "$line"; done
    return 0
}

check() { # name, status (0 = ok), detail
    if [ "$2" -eq 0 ]; then ok "$1"; else fail "$1" "${3:-}"; fi
}

# A consumer that cannot run says why, counts as a failure, and ends its part.
cannot_run() {
    fail "$SUITE_NAME cannot run: $1"
    suite_end
    exit 1
}

suite_end() {
    echo "$SUITE_NAME: $SUITE_PASSED passed, $SUITE_FAILED failed"
    [ "$SUITE_FAILED" -eq 0 ]
}

# Installs the Debian packages given (as `package` or `package:file-it-provides`) whose file
# or package is missing; a part that cannot get them cannot run.
apt_need() {
    local spec pkg file missing=()
    for spec in "$@"; do
        pkg=${spec%%:*}
        file=${spec#*:}
        if [ "$file" != "$spec" ]; then
            # A bare name is a command (a directory of that name, like this suite's own
            # p11tool/, must not count); a name with a slash is a file.
            case $file in
            */*) [ -e "$file" ] || missing+=("$pkg") ;;
            *) command -v "$file" >/dev/null || missing+=("$pkg") ;;
            esac
        else
            dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
        fi
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "# installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        $sudo apt-get install -y -qq "${missing[@]}"; } >/dev/null 2>&1 ||
        cannot_run "apt-get install ${missing[*]} failed"
}

need() { # command... : cannot_run unless each is on PATH
    local c
    for c in "$@"; do command -v "$c" >/dev/null || cannot_run "$c is not installed"; done
}

# Makes $WORK (removed on exit) with two initialized tokens behind the module:
#   slot $EMBEDDED_SLOT: embedded token "$EMBEDDED_LABEL"
#   slot $HSM_SLOT:      pkcs11 backend over the SoftHSM2 token "$HSM_LABEL"
# both with SO PIN $SO_PIN and user PIN $USER_PIN, and exports B4AE_PKCS11_CONF and
# SOFTHSM2_CONF for them. Extra TOML for the configuration may be passed as $1.
make_tokens() {
    [ -e "$MODULE" ] || cannot_run "$MODULE is missing (cargo build --lib --bins)"
    [ -e "$SOFTHSM" ] || cannot_run "$SOFTHSM is missing (scripts/deps.sh installs softhsm2)"
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/b4ae-suite.XXXXXX")
    chmod 755 "$WORK"
    trap 'rm -rf "$WORK"' EXIT
    mkdir -p "$WORK/softhsm"
    printf 'directories.tokendir = %s/softhsm\nobjectstore.backend = file\nlog.level = ERROR\n' \
        "$WORK" >"$WORK/softhsm2.conf"
    export SOFTHSM2_CONF=$WORK/softhsm2.conf
    softhsm2-util --init-token --free --label "$HSM_LABEL" --so-pin "$SO_PIN" --pin "$USER_PIN" \
        >/dev/null || cannot_run "softhsm2-util --init-token failed"
    cat >"$WORK/b4ae-pkcs11.toml" <<TOML
[[token]]
label = "B4AE embedded"
backend = "embedded"
path = "$WORK/embedded"
pin_kdf = "test-only-fast"

[[token]]
label = "B4AE over SoftHSM2"
backend = "pkcs11"
library = "$SOFTHSM"
token_label = "$HSM_LABEL"
${1:-}
TOML
    export B4AE_PKCS11_CONF=$WORK/b4ae-pkcs11.toml
    export B4AE_PKCS11_LOG=${B4AE_PKCS11_LOG:-error}
    "$ADMIN" init-token --slot "$EMBEDDED_SLOT" --label "$EMBEDDED_LABEL" \
        --so-pin "$SO_PIN" --pin "$USER_PIN" >/dev/null ||
        cannot_run "b4ae-pkcs11 init-token failed"
}

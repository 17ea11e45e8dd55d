# Shared by every part of the consumer suite: counting checks, and a fresh pair of tokens.
# Source it from a part's run.sh; call `suite_begin "<consumer>"` and `expect_checks N` first,
# and `suite_end` last.
#
# Counting is this file's business, so no part can forget it:
#   - every check is one `ok` / `fail` / `check` call (a program's own `ok - ` / `not ok - ` lines
#     are handed to `ok` / `fail` one by one);
#   - `expect_checks N` declares how many checks the part runs on a good day;
#   - `suite_end` fails the part when no number was declared, or when the checks that ran
#     (passed + failed) are not exactly N: fewer means a step stopped early or a program printed
#     fewer lines than it should, more means the declaration is out of date;
#   - there is no way to skip: `skip` is a failure (a missing tool is installed with `apt_need`,
#     or the part cannot run, which is a failure too);
#   - a part that exits without `suite_end` (an `exit`, a `set -e` stop) fails at exit, with its
#     summary line still printed, by the EXIT trap `suite_begin` installs.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The module under test and its admin tool: $B4AE_MODULE / $B4AE_ADMIN, else the debug build
# of $CARGO_TARGET_DIR (default target/).
MODULE=${B4AE_MODULE:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/libb4ae_pkcs11.so}
ADMIN=${B4AE_ADMIN:-$(dirname "$MODULE")/b4ae-pkcs11}
SOFTHSM=/usr/lib/softhsm/libsofthsm2.so
SO_PIN=12345678
USER_PIN=11223344
# Slot numbers of the pair of tokens `make_tokens` configures.
EMBEDDED_SLOT=0
HSM_SLOT=1
EMBEDDED_LABEL=b4ae-embedded
HSM_LABEL=b4ae-softhsm

SUITE_PASSED=0
SUITE_FAILED=0
SUITE_EXPECTED=""
SUITE_ENDED=0
WORK=""

suite_begin() {
    SUITE_NAME=$1
    echo "=== $SUITE_NAME"
    trap suite_exit EXIT
}

# expect_checks N: the number of checks this part runs; suite_end holds the part to it.
expect_checks() {
    [[ $1 =~ ^[1-9][0-9]*$ ]] || { echo "expect_checks: '$1' is not a positive number" >&2; exit 2; }
    SUITE_EXPECTED=$1
}

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

# relay_checks PREFIX <<<"$output": a program's own `ok - ` / `not ok - ` lines become this
# part's checks (named PREFIX + the program's name); its other lines are shown as they are.
relay_checks() {
    local line
    while IFS= read -r line; do
        case $line in
        "ok - "*) ok "$1${line#ok - }" ;;
        "not ok - "*) fail "$1${line#not ok - }" ;;
        *) echo "$line" ;;
        esac
    done
}

# There is no silent skip: a check that does not run is a failure, named as such.
skip() { # name, reason
    fail "$1" "skipped${2:+ ($2)}: every check of a part must run; install what it needs or fix it"
}

# A consumer that cannot run says why, counts as a failure, and ends its part.
cannot_run() {
    fail "$SUITE_NAME cannot run: $1"
    suite_end
    exit 1
}

# The count check, then the part's summary line; its status is the part's.
suite_end() {
    [ "$SUITE_ENDED" -eq 0 ] || return "$((SUITE_FAILED > 0))"
    SUITE_ENDED=1
    local ran=$((SUITE_PASSED + SUITE_FAILED))
    if [ -n "${SUITE_EARLY_EXIT:-}" ]; then
        fail "$SUITE_NAME reached suite_end" "it exited with status $SUITE_EARLY_EXIT before its last line"
    fi
    if [ -z "$SUITE_EXPECTED" ]; then
        fail "$SUITE_NAME declares how many checks it runs" \
            "its run.sh does not call 'expect_checks N' ($ran checks ran)"
    elif [ "$ran" -lt "$SUITE_EXPECTED" ]; then
        fail "$SUITE_NAME ran all of its $SUITE_EXPECTED checks" \
            "only $ran of $SUITE_EXPECTED checks ran: $((SUITE_EXPECTED - ran)) missing" \
            "(a step stopped early, or a program printed fewer ok / not ok lines than it should)"
    elif [ "$ran" -gt "$SUITE_EXPECTED" ]; then
        fail "$SUITE_NAME ran exactly its $SUITE_EXPECTED checks" \
            "$ran checks ran but expect_checks says $SUITE_EXPECTED: update the declaration"
    else
        echo "# $SUITE_NAME: $ran of $SUITE_EXPECTED expected checks ran"
    fi
    echo "$SUITE_NAME: $SUITE_PASSED passed, $SUITE_FAILED failed"
    [ "$SUITE_FAILED" -eq 0 ]
}

# EXIT trap: a part that stops before suite_end still prints its summary, and fails; the work
# directory of make_tokens goes.
suite_exit() {
    local status=$?
    if [ "$SUITE_ENDED" -eq 0 ]; then
        SUITE_EARLY_EXIT=$status
        suite_end
        status=1
    elif [ "$SUITE_FAILED" -gt 0 ] && [ "$status" -eq 0 ]; then
        status=1
    fi
    [ -n "$WORK" ] && rm -rf "$WORK"
    exit "$status"
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
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/b4ae-suite.XXXXXX") # suite_exit removes it
    chmod 755 "$WORK"
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
    # The admin tool reads PINs from files, the environment or a prompt (never ps-visible arguments).
    B4AE_SO_PIN=$SO_PIN B4AE_USER_PIN=$USER_PIN \
        "$ADMIN" init-token --slot "$EMBEDDED_SLOT" --label "$EMBEDDED_LABEL" >/dev/null ||
        cannot_run "b4ae-pkcs11 init-token failed"
}

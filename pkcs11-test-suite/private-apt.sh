# A private apt configuration over the machine's own Debian archive, for fetching newer packages
# (source or binary) than the machine's release has without touching the system's apt state:
# its own sources list (one line per suite, made from the URI and Signed-By of the machine's
# /etc/apt/sources.list.d/*.sources, else /etc/apt/sources.list: no host name is written in this
# project), lists and cache, all under a directory of the caller's.
#
#   source private-apt.sh
#   private_apt <dir> <types> <suite>...    # types: "deb-src", "deb" or "deb deb-src"
#   apt-get "${APT_OPTS[@]}" ...            # then every apt command with these options
# shellcheck shell=bash

# The machine's archive (URI and keyring) for Debian's main suites: one "URI KEYRING" line.
private_apt_archive() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -e "$f" ] || continue
        awk 'BEGIN { RS = ""; FS = "\n" }
            {
                uri = ""; key = ""; deb = 0; main = 0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); uri = a[2] }
                    if ($i ~ /^Signed-By:/) { split($i, a, /[ \t]+/); key = a[2] }
                    if ($i ~ /^Types:.*deb/) deb = 1
                    if ($i ~ /^Suites:/ && $i !~ /-security/) main = 1
                }
                if (deb && main && uri != "") { print uri, key; exit }
            }' "$f"
    done | head -n 1
    [ -e /etc/apt/sources.list ] &&
        awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' \
            /etc/apt/sources.list
}

# private_apt dir types suite...: writes the sources list, sets APT_OPTS, runs apt-get update.
private_apt() {
    local dir=$1 types=$2 uri key type suite line
    shift 2
    read -r uri key < <(private_apt_archive | head -n 1) || true
    [ -n "${uri:-}" ] || { echo "private-apt: no Debian archive URI in /etc/apt/sources.list{,.d}" >&2; return 1; }
    mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
    : >"$dir/sources.list"
    for suite in "$@"; do
        for type in $types; do
            line="$type $uri $suite main"
            [ -n "${key:-}" ] && line="$type [signed-by=$key] $uri $suite main"
            echo "$line" >>"$dir/sources.list"
        done
    done
    APT_OPTS=(-o "Dir::Etc::SourceList=$dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache"
        -o "APT::Sandbox::User=$(id -un)" -o Debug::NoLocking=true)
    apt-get "${APT_OPTS[@]}" -q update
}

# build_deps name pkg:file-or-command...: installs (apt-get, with sudo when not root) the packages
# whose file or command is missing; `name` prefixes the message.
build_deps() {
    local name=$1 spec pkg file missing=()
    shift
    for spec in "$@"; do
        pkg=${spec%%:*} file=${spec#*:}
        [ -e "$file" ] || command -v "$file" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "$name: installing ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
}

# build_step name log description command...: runs the command into the log; on failure shows the
# log's end and exits.
build_step() {
    local name=$1 log=$2 what=$3
    shift 3
    if ! "$@" >>"$log" 2>&1; then
        echo "$name: $what failed; last lines of $log:" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
}

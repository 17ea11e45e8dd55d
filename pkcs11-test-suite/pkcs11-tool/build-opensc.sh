#!/usr/bin/env bash
# Builds OpenSC 0.27.1's pkcs11-tool (the first OpenSC with ML-DSA key types and -m ML-DSA) once,
# from the upstream source tarball of Debian's opensc source package, and keeps the binary outside
# the repository:
#
#   ${XDG_CACHE_HOME:-$HOME/.cache}/b4ae-pkcs11/opensc-0.27.1/pkcs11-tool
#
# A no-op when that binary exists and runs. Prints the binary's path on its last line.
# Debian 12 ships OpenSC 0.23, whose pkcs11-tool cannot make or use ML-DSA keys.
# Needs (installed with apt-get when missing): gcc, make, autoconf, automake, libtool,
# pkg-config, libssl-dev, zlib1g-dev. The build takes 1-2 minutes on 2 cores.
#
# The source comes through apt, with the machine's own archive and keyring: a private apt
# configuration under the cache directory (its own sources list, lists and cache, so the system's
# apt state is not touched) has a `deb-src` line for each suite of $OPENSC_SUITES (default: sid),
# made from the URIs and Signed-By of the machine's /etc/apt/sources.list.d/*.sources (or
# /etc/apt/sources.list). `apt-get source --download-only opensc=<version>` then fetches the
# package's files, checked against the signed index (pkcs11-test-suite/private-apt.sh). Only the upstream tarball
# opensc_<version>.orig.tar.gz is needed (and pinned by its sha256 here): the archive has at times
# listed a revision whose .dsc and debian tarball were gone, which apt reports and this ignores.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/../private-apt.sh"

VERSION=0.27.1
SHA256=fce74e68efcaa1c82c356c7c0320ed482fbb76819194d26df565b82e77727447
SUITES=${OPENSC_SUITES:-sid}
home=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}
CACHE=${XDG_CACHE_HOME:-$home/.cache}/b4ae-pkcs11/opensc-$VERSION
BIN=$CACHE/pkcs11-tool

# The cached binary works: it runs (its usage text lists --key-type), and it knows the ML-DSA
# key types (its usage text does not name them; the binary holds the names).
works() {
    local usage
    [ -x "$BIN" ] || return 1
    usage=$(timeout 20 "$BIN" --help 2>&1 || true)
    grep -q -- '--key-type' <<<"$usage" && grep -aq 'ML-DSA-87' "$BIN"
}
if works; then
    echo "$BIN"
    exit 0
fi

# Build dependencies (fresh Debian 12): only what this build uses. libtoolize alone is not
# enough: autoreconf needs libtool's m4 macros (libtool.m4).
build_deps build-opensc gcc:gcc make:make autoconf:autoreconf automake:automake libtool:libtoolize \
    pkg-config:pkg-config libssl-dev:/usr/include/openssl/evp.h zlib1g-dev:/usr/include/zlib.h \
    libc6-dev:/usr/include/stdio.h libtool:/usr/share/aclocal/libtool.m4

mkdir -p "$CACHE"
# One build at a time; a second caller waits and then finds the binary.
exec 9>"$CACHE/.lock"
flock 9
if works; then
    echo "$BIN"
    exit 0
fi
src=$(mktemp -d "${TMPDIR:-/tmp}/opensc-build.XXXXXX")
trap 'rm -rf "$src"' EXIT
log=$CACHE/build.log
: >"$log"
echo "build-opensc: building pkcs11-tool $VERSION in $src (log: $log)" >&2

step() { build_step build-opensc "$log" "$@"; }

# fetch_source: opensc_$VERSION.orig.tar.gz into $CACHE through a private apt configuration.
fetch_source() {
    local apt=$CACHE/apt
    mkdir -p "$apt/download"
    private_apt "$apt" deb-src $SUITES >>"$log" 2>&1 || return 1
    echo "build-opensc: private apt sources ($apt/sources.list):" >>"$log"
    cat "$apt/sources.list" >>"$log"
    # The source package's version for this upstream version (any Debian revision).
    local version
    version=$(apt-cache "${APT_OPTS[@]}" showsrc opensc 2>>"$log" |
        awk -v v="$VERSION" '$1 == "Version:" && index($2, v "-") == 1 { print $2; exit }')
    [ -n "$version" ] || { echo "build-opensc: no opensc $VERSION-* source package in $SUITES" >>"$log"; return 1; }
    echo "build-opensc: apt-get source --download-only opensc=$version" >>"$log"
    # Its exit status is not the verdict: only the orig tarball is needed (see the top).
    (cd "$apt/download" && apt-get "${APT_OPTS[@]}" -q source --download-only "opensc=$version") >>"$log" 2>&1 || true
    [ -s "$apt/download/opensc_${VERSION}.orig.tar.gz" ] || return 1
    mv "$apt/download/opensc_${VERSION}.orig.tar.gz" "$tarball"
    rm -rf "$apt/download" "$apt/cache"
}

tarball=$CACHE/opensc_${VERSION}.orig.tar.gz
if [ ! -s "$tarball" ] || ! echo "$SHA256  $tarball" | sha256sum -c --quiet - >/dev/null 2>&1; then
    step "fetching opensc_${VERSION}.orig.tar.gz with apt-get source (suites: $SUITES)" fetch_source
fi
echo "$SHA256  $tarball" | sha256sum -c --quiet - ||
    { echo "build-opensc: $tarball does not have the expected sha256" >&2; rm -f "$tarball"; exit 1; }

step "unpacking" tar -xzf "$tarball" -C "$src" --strip-components=1
cd "$src"
# The tarball is a git snapshot: ./bootstrap makes configure. It asks git for the version
# when there is a .git; there is none, so it takes the numbers from configure.ac.
step "bootstrap" ./bootstrap
# configure wants exactly one reader driver (ctapi needs no library); no PC/SC, no docs;
# -Werror (the default) trips on an unused function, hence --disable-strict.
step "configure" ./configure --disable-strict --disable-shared --enable-static --disable-pcsc \
    --enable-ctapi --disable-sm --disable-man --disable-doc --disable-notify --disable-readline \
    --disable-tests --disable-cmocka --disable-openpace --enable-openssl --enable-zlib
jobs=$(nproc 2>/dev/null || echo 2)
for dir in src/common src/scconf src/ui src/pkcs15init src/sm src/libopensc; do
    step "make in $dir" make -j"$jobs" -C "$dir"
done
step "make libopensc-pkcs11.la" make -j"$jobs" -C src/pkcs11 libopensc-pkcs11.la
step "make pkcs11-tool" make -j"$jobs" -C src/tools pkcs11-tool

# A libtool wrapper script would point into $src; with --disable-shared the binary is real.
built=src/tools/pkcs11-tool
[ -x src/tools/.libs/pkcs11-tool ] && built=src/tools/.libs/pkcs11-tool
install -m 0755 "$built" "$BIN.new"
mv "$BIN.new" "$BIN"
works || { echo "build-opensc: the built $BIN does not run or does not know ML-DSA" >&2; exit 1; }
echo "build-opensc: built $BIN" >&2
echo "$BIN"

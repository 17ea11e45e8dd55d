#!/usr/bin/env bash
# OpenSSL 3.5+ and pkcs11-provider, once, outside the repository (Debian 12 has OpenSSL 3.0, which
# has no ML-DSA, and no pkcs11-provider that knows it):
#
#   ${XDG_CACHE_HOME:-$HOME/.cache}/b4ae-pkcs11/openssl-provider/openssl/bin/openssl
#   ${XDG_CACHE_HOME:-$HOME/.cache}/b4ae-pkcs11/openssl-provider/pkcs11.so
#
# OpenSSL is built from the newest Debian source package (>= 3.5) the archive serves, fetched
# with apt-get source --download-only (only its upstream tarball is used; apt checks it against
# the signed index); pkcs11-provider is Debian's binary package (newest served), fetched with
# apt-get download and unpacked with dpkg -x. Both through a private apt configuration over the
# machine's own archive (pkcs11-test-suite/private-apt.sh: no host name in this project). A
# no-op when both exist and work. The build takes about 3 minutes on 2 cores. Prints the cache
# directory on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../private-apt.sh"
SUITES=${OPENSSL_PROVIDER_SUITES:-sid trixie}
home=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}
CACHE=${XDG_CACHE_HOME:-$home/.cache}/b4ae-pkcs11/openssl-provider
OPENSSL=$CACHE/openssl/bin/openssl
PROVIDER=$CACHE/pkcs11.so

works() {
    [ -x "$OPENSSL" ] && [ -s "$PROVIDER" ] || return 1
    local version
    version=$(LD_LIBRARY_PATH=$CACHE/openssl/lib "$OPENSSL" version 2>/dev/null | awk '{ print $2 }')
    [ -n "$version" ] && [ "$(printf '%s\n3.5.0\n' "$version" | sort -V | head -n 1)" = 3.5.0 ]
}
if works; then
    echo "$CACHE"
    exit 0
fi

build_deps openssl-provider gcc:gcc make:make perl:perl libc6-dev:/usr/include/stdio.h

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
if works; then
    echo "$CACHE"
    exit 0
fi
log=$CACHE/build.log
: >"$log"
step() { build_step openssl-provider "$log" "$@"; }
step "apt-get update (private sources: $SUITES)" private_apt "$CACHE/apt" "deb deb-src" $SUITES
download=$CACHE/apt/download
rm -rf "$download"
mkdir -p "$download"

# The newest OpenSSL >= 3.5 whose upstream tarball the archive serves (listed is not served).
fetch_openssl() {
    local version upstream
    for version in $(apt-cache "${APT_OPTS[@]}" showsrc openssl | awk '$1 == "Version:" { print $2 }' | sort -Vr); do
        upstream=${version%-*}
        upstream=${upstream#*:}
        [ "$(printf '%s\n3.5.0\n' "$upstream" | sort -V | head -n 1)" = 3.5.0 ] || continue
        echo "openssl-provider: apt-get source --download-only openssl=$version" >>"$log"
        (cd "$download" && apt-get "${APT_OPTS[@]}" -q source --download-only "openssl=$version") >>"$log" 2>&1 || true
        if ls "$download"/openssl_"$upstream".orig.tar.* >/dev/null 2>&1; then
            echo "$upstream"
            return 0
        fi
    done
    return 1
}
upstream=$(fetch_openssl) || { echo "openssl-provider: no OpenSSL >= 3.5 source served (log: $log)" >&2; exit 1; }
src=$(mktemp -d "${TMPDIR:-/tmp}/openssl-build.XXXXXX")
trap 'rm -rf "$src"' EXIT
echo "openssl-provider: building OpenSSL $upstream in $src (log: $log)" >&2
step "unpacking" tar -xf "$(ls "$download"/openssl_"$upstream".orig.tar.* | head -n 1)" -C "$src" --strip-components=1
rm -rf "$CACHE/openssl"
step "configure" sh -c "cd '$src' && ./Configure --prefix='$CACHE/openssl' --libdir=lib \
    --openssldir='$CACHE/openssl/ssl' shared no-tests no-docs"
step "make" make -C "$src" -j"$(nproc 2>/dev/null || echo 2)"
step "make install" make -C "$src" install_sw install_ssldirs

# pkcs11-provider: Debian's binary package, newest served.
fetch_provider() {
    local version
    for version in $(apt-cache "${APT_OPTS[@]}" show pkcs11-provider | awk '$1 == "Version:" { print $2 }' | sort -Vr); do
        (cd "$download" && apt-get "${APT_OPTS[@]}" -q download "pkcs11-provider=$version") >>"$log" 2>&1 || continue
        ls "$download"/pkcs11-provider_*.deb >/dev/null 2>&1 && return 0
    done
    return 1
}
step "fetching pkcs11-provider" fetch_provider
step "unpacking pkcs11-provider" dpkg -x "$(ls "$download"/pkcs11-provider_*.deb | head -n 1)" "$download/root"
install -m 0644 "$(find "$download/root" -name pkcs11.so -path '*ossl-modules*' | head -n 1)" "$PROVIDER"
dpkg-deb -f "$(ls "$download"/pkcs11-provider_*.deb | head -n 1)" Version >"$CACHE/pkcs11-provider.version"
rm -rf "$download" "$CACHE/apt/cache"
works || { echo "openssl-provider: the built OpenSSL does not run" >&2; exit 1; }
echo "openssl-provider: OpenSSL $upstream and pkcs11-provider $(cat "$CACHE/pkcs11-provider.version") in $CACHE" >&2
echo "$CACHE"

#!/usr/bin/env bash
# Builds the Debian package of b4ae-pkcs11 from the [package.metadata.deb] section of Cargo.toml
# (cargo-deb's field names; `{multiarch}` in an asset's destination is this script's: the host's
# multiarch triplet). Needs only cargo, python3 and dpkg-deb, not cargo-deb.
#
# Usage: scripts/build-deb.sh [--debug] [--out DIR]
#   --debug   package the debug build (tests; faster to build) instead of the release build
#   --out     where the .deb goes (default target/debian); its path is the last line printed
#
# Contents: the module in the multiarch PKCS#11 directory (/usr/lib/<triplet>/pkcs11/, where
# p11-kit and OpenSC look), the admin tool in /usr/bin with its manual page and bash
# completion, a p11-kit .module file, the C header, and the documentation.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
out=target/debian
while [ $# -gt 0 ]; do
    case $1 in
    --debug) profile=debug ;;
    --out) out=$2; shift ;;
    *) echo "usage: $0 [--debug] [--out DIR]" >&2; exit 2 ;;
    esac
    shift
done
for tool in cargo python3 dpkg-deb dpkg; do
    command -v "$tool" >/dev/null || { echo "build-deb: $tool is missing" >&2; exit 1; }
done

build=(cargo build --lib --bins --locked)
[ "$profile" = release ] && build+=(--release)
"${build[@]}" >&2
target=${CARGO_TARGET_DIR:-target}/$profile
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
arch=$(dpkg --print-architecture)

stage=$(mktemp -d "${TMPDIR:-/tmp}/b4ae-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT

# The metadata, and each asset as "source<TAB>destination<TAB>mode" (cargo-deb's conventions:
# target/release/ means the build being packaged; a destination ending in / is a directory).
cargo metadata --no-deps --format-version 1 >"$stage/metadata.json"
python3 - "$stage/metadata.json" "$target" "$multiarch" >"$stage/assets" <<'PY'
import json, sys
meta, target, multiarch = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
package = next(p for p in meta["packages"] if p["name"] == "b4ae-pkcs11")
for source, dest, mode in package["metadata"]["deb"]["assets"]:
    source = source.replace("target/release/", target + "/", 1)
    print(source, dest.replace("{multiarch}", multiarch), mode, sep="\t")
PY
field() { # name: a [package.metadata.deb] field, or the package's own
    python3 - "$stage/metadata.json" "$1" <<'PY'
import json, sys
meta = json.load(open(sys.argv[1]))
package = next(p for p in meta["packages"] if p["name"] == "b4ae-pkcs11")
value = package["metadata"]["deb"].get(sys.argv[2], package.get(sys.argv[2]))
print(value if isinstance(value, str) else "")
PY
}

root=$stage/root
while IFS=$'\t' read -r source dest mode; do
    for file in $source; do # globs expand here (docs/*.md)
        [ -e "$file" ] || { echo "build-deb: missing asset $file" >&2; exit 1; }
        case $dest in
        */) target_path=$root/${dest#/}$(basename "$file") ;;
        *) target_path=$root/${dest#/} ;;
        esac
        install -D -m "$mode" "$file" "$target_path"
    done
done <"$stage/assets"
# Debug information stays out of the package (a debug build would be ten times its size).
strip --strip-unneeded "$root/usr/lib/$multiarch/pkcs11/libb4ae_pkcs11.so" "$root/usr/bin/b4ae-pkcs11"

# Generated: the manual page and the completion, from the installed admin tool itself.
mkdir -p "$root/usr/share/man/man1" "$root/usr/share/bash-completion/completions"
"$root/usr/bin/b4ae-pkcs11" man --dir "$stage/man" >/dev/null
for page in "$stage"/man/*.1; do
    gzip -9n <"$page" >"$root/usr/share/man/man1/$(basename "$page").gz"
done
"$root/usr/bin/b4ae-pkcs11" completions bash >"$root/usr/share/bash-completion/completions/b4ae-pkcs11"
chmod 0644 "$root"/usr/share/man/man1/*.gz "$root/usr/share/bash-completion/completions/b4ae-pkcs11"

# Depends: the packages of the shared libraries the two binaries link (libc6, libgcc-s1).
depends=$(
    for binary in "$root/usr/lib/$multiarch/pkcs11/libb4ae_pkcs11.so" "$root/usr/bin/b4ae-pkcs11"; do
        ldd "$binary" | awk '$3 ~ /^\// { print $3 }'
    done | sort -u | while read -r library; do
        dpkg -S "$(readlink -f "$library")" 2>/dev/null || dpkg -S "$library" 2>/dev/null || true
    done | cut -d: -f1 | sort -u | paste -sd, - | sed 's/,/, /g'
)
version=$(field version)
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
mkdir -p "$root/DEBIAN"
{
    echo "Package: b4ae-pkcs11"
    echo "Version: $version"
    echo "Architecture: $arch"
    echo "Maintainer: $(field maintainer)"
    echo "Installed-Size: $size"
    [ -n "$depends" ] && echo "Depends: $depends"
    echo "Suggests: $(field suggests)"
    echo "Section: $(field section)"
    echo "Priority: $(field priority)"
    echo "Description: $(field description)"
    field extended-description | fold -s -w 78 | sed 's/ *$//; s/^$/./; s/^/ /'
} >"$root/DEBIAN/control"

mkdir -p "$out"
deb=$out/b4ae-pkcs11_${version}_${arch}.deb
dpkg-deb --root-owner-group --build "$root" "$deb" >&2
echo "$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")"

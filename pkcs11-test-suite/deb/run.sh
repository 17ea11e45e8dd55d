#!/usr/bin/env bash
# The Debian package (scripts/build-deb.sh, docs/install.md): built from this tree, installed
# with dpkg -i, used from its installed paths (p11-kit list-modules through the .module file it
# registers, pkcs11-tool, the admin tool, an application finding the module at its default
# path), then removed and purged with nothing left behind. Runs last: while it is installed,
# every p11-kit consumer on the machine loads the module.
set -uo pipefail
source "$(dirname "$0")/../lib.sh"
suite_begin "deb"
expect_checks 17
apt_need p11-kit:p11-kit opensc:pkcs11-tool dpkg-dev:dpkg-architecture
need cargo dpkg-deb
make_tokens
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
dpkg -s b4ae-pkcs11 >/dev/null 2>&1 && $sudo dpkg -P b4ae-pkcs11 >/dev/null

deb=$(bash "$ROOT/scripts/build-deb.sh" --debug --out "$WORK/deb" 2>"$WORK/build.log" | tail -n 1)
built=1
[ -s "$deb" ] && built=0
check "scripts/build-deb.sh builds the package" "$built" "$(tail -n 5 "$WORK/build.log")"
[ -s "$deb" ] || cannot_run "no package to install"
echo "# $(dpkg-deb -f "$deb" Package Version Architecture Depends Installed-Size | tr '\n' ' ')"
dpkg-deb -f "$deb" Depends | grep -q libc6
check "its Depends names the libraries it links (libc6...)" $? "$(dpkg-deb -f "$deb" Depends)"

out=$($sudo dpkg -i "$deb" 2>&1)
check "dpkg -i installs it" $? "$out"
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
installed=/usr/lib/$multiarch/pkcs11/libb4ae_pkcs11.so
for file in "$installed" /usr/bin/b4ae-pkcs11 /usr/share/p11-kit/modules/b4ae-pkcs11.module \
    /usr/share/man/man1/b4ae-pkcs11.1.gz /usr/include/b4ae_pkcs11.h; do
    dpkg -L b4ae-pkcs11 | grep -qx "$file" && [ -e "$file" ]
    check "installed: $file" $? "not in dpkg -L b4ae-pkcs11, or missing"
done

# p11-kit finds the module through the .module file alone: no configuration of its own.
out=$(p11-kit list-modules 2>&1)
grep -q '^b4ae-pkcs11: libb4ae_pkcs11.so' <<<"$out" && grep -q "token: $EMBEDDED_LABEL" <<<"$out"
check "p11-kit list-modules shows the module and its token" $? "$(grep -A8 b4ae <<<"$out")"
out=$(pkcs11-tool --module "$installed" -L 2>&1)
grep -q "$EMBEDDED_LABEL" <<<"$out"
check "pkcs11-tool --module $installed -L lists the token" $? "$out"
out=$(pkcs11-tool --module "$installed" --slot "$EMBEDDED_SLOT" -M 2>&1)
grep -qi 'mechtype-0x1D\|ML-DSA' <<<"$out"
check "pkcs11-tool -M on the installed module lists ML-DSA" $? "$out"
out=$(/usr/bin/b4ae-pkcs11 info 2>&1)
grep -q "$EMBEDDED_LABEL" <<<"$out"
check "the installed admin tool (b4ae-pkcs11 info) sees the token" $? "$out"
# An application that names no module path: the examples default to the installed one.
if out=$(cargo build --quiet --example hsm_basic --manifest-path "$ROOT/Cargo.toml" \
    --target-dir "$ROOT/target/suite-api" 2>&1); then
    softhsm2-util --init-token --free --label guide --so-pin "$SO_PIN" --pin 1234 >/dev/null
    printf '[[token]]\nbackend = "pkcs11"\nlibrary = "%s"\ntoken_label = "guide"\n' "$SOFTHSM" \
        >"$WORK/guide.toml"
    out=$(env -u B4AE_PKCS11_MODULE B4AE_PKCS11_CONF="$WORK/guide.toml" \
        "$ROOT/target/suite-api/debug/examples/hsm_basic" 2>&1)
    grep -q "Signature valid: true" <<<"$out"
fi
check "examples/hsm_basic signs through the installed module (its default path)" $? "$out"

out=$($sudo dpkg -r b4ae-pkcs11 2>&1)
check "dpkg -r removes it" $? "$out"
left=$(ls "$installed" /usr/bin/b4ae-pkcs11 /usr/share/p11-kit/modules/b4ae-pkcs11.module 2>/dev/null)
[ -z "$left" ]
check "nothing of it is left" $? "$left"
out=$(p11-kit list-modules 2>&1)
! grep -q '^b4ae-pkcs11' <<<"$out"
check "p11-kit no longer lists it" $? "$out"
$sudo dpkg -P b4ae-pkcs11 >/dev/null 2>&1
! dpkg -s b4ae-pkcs11 >/dev/null 2>&1
check "dpkg -P purges it" $? "dpkg -s still knows b4ae-pkcs11"
suite_end

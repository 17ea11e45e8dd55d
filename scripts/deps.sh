#!/usr/bin/env bash
# Installs what building and testing b4ae-pkcs11 needs on Debian, if it is missing.
# Idempotent and quiet when everything is there. Needs root (or sudo) only to install.
set -euo pipefail

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
have cc || need_pkgs+=(gcc libc6-dev)
have make || need_pkgs+=(make)
have pkcs11-tool || need_pkgs+=(opensc)
[ -e /usr/lib/softhsm/libsofthsm2.so ] || need_pkgs+=(softhsm2)
have python3 || need_pkgs+=(python3)
# scripts/python-env.sh: a venv, and what pip needs to build PyKCS11 (C++, SWIG) where it finds no wheel.
dpkg -s python3-venv python3-dev >/dev/null 2>&1 || need_pkgs+=(python3-venv python3-dev)
have c++ || need_pkgs+=(g++)
have swig || need_pkgs+=(swig)
dpkg -s p11-kit >/dev/null 2>&1 || need_pkgs+=(p11-kit)

if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "deps: installing ${need_pkgs[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if ! have cargo; then
    echo "deps: cargo not found. b4ae-pkcs11 needs Rust 1.89 or newer (rustup: https://rustup.rs)." >&2
    exit 1
fi

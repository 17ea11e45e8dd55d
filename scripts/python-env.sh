#!/usr/bin/env bash
# Creates or refreshes .venv with the pinned packages of pkcs11-test-suite/python/requirements.txt, the
# independent checkers that pkcs11-test-suite/python/crosscheck.py uses. Does nothing when the venv already
# holds exactly those pins (a hash of the requirements file is kept in the venv).
set -euo pipefail
cd "$(dirname "$0")/.."

req=pkcs11-test-suite/python/requirements.txt
stamp=.venv/requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    exit 0
fi
echo "python-env: installing $req into .venv"
python3 -m venv .venv
# PyKCS11 ships wheels for common CPython versions; elsewhere pip builds it (scripts/deps.sh has what that needs).
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$req"
echo "$want" > "$stamp"

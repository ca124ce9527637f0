#!/usr/bin/env bash
# Installs what the tests need on a fresh machine: the wasm32-wasip2 Rust target (for
# the example policy plugins), componentize-qjs (for the JavaScript example plugins, with
# `npm ci` from plugins/js/package-lock.json; needs Node.js >= 18 and npm, e.g.
# `apt-get install nodejs npm`) and a Python venv with moto's server (the ECR stand-in).
# Idempotent; fast when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null 2>&1; then
  rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
fi

if [ ! -x .venv/bin/moto_server ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check 'moto[server]>=5.2,<5.3'
fi

# The JavaScript plugins: install the pinned componentize-qjs and build them once (the
# tests build their own copies too). Skipped, with a warning, where Node.js is missing.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  # Again whenever the lock file changed since the last `npm ci` (stamp in node_modules).
  if ! cmp -s plugins/js/package-lock.json plugins/js/node_modules/.ci-lock.json; then
    (cd plugins/js && npm ci --no-audit --no-fund --loglevel=error)
    cp plugins/js/package-lock.json plugins/js/node_modules/.ci-lock.json
  fi
  plugins/js/build.sh >/dev/null
else
  echo "setup-test-env: node/npm not found: the JavaScript plugin tests will fail;" \
    "install them (e.g. apt-get install nodejs npm)" >&2
fi

#!/usr/bin/env bash
# Installs what the tests need on a fresh machine: the wasm32-wasip2 Rust target (for
# the example policy plugins) and a Python venv with moto's server (the ECR stand-in).
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

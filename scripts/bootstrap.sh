#!/usr/bin/env bash
# Create .venv with Python 3.11 and install enrich with everything the tests need, from pyproject.toml.
# Re-installs only when pyproject.toml changed (stamp file). Used by ./run-demo and ./run-tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.enrich-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  echo "$want" > "$stamp"
fi
# Azurite, Microsoft's local Azure Storage server (tests/test_object_storage.py runs the Azure warehouse on it), from
# the npm registry with the machine's Node.js; without npm those tests are skipped and say why.
az_stamp=tests/azurite/node_modules/.enrich-installed
az_want=$(cat tests/azurite/package.json tests/azurite/package-lock.json | sha256sum | cut -d' ' -f1)
if command -v npm >/dev/null 2>&1 && { [ ! -f "$az_stamp" ] || [ "$(cat "$az_stamp")" != "$az_want" ]; }; then
  if npm ci --prefix tests/azurite --no-audit --no-fund --loglevel=error >/dev/null; then
    echo "$az_want" > "$az_stamp"
  else
    echo "bootstrap: warning: could not install Azurite; the Azure warehouse tests will be skipped" >&2
  fi
fi

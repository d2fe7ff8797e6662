#!/usr/bin/env bash
# Install everything the project needs. The same script serves CI, developers and the Dockerfile.
#
#   scripts/install.sh            development: .venv with the package (editable) + dev tools, npm deps
#   scripts/install.sh --prod     container: the package and its runtime deps into the current Python
#
# Idempotent: a second run with nothing changed only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-dev}"
PYTHON="${PYTHON:-python3}"

if [[ "$mode" == "--prod" ]]; then
  "$PYTHON" -m pip install --no-cache-dir --upgrade pip
  "$PYTHON" -m pip install --no-cache-dir .
  exit 0
fi

stamp_py=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
if [[ ! -f "$stamp_py" ]]; then
  .venv/bin/python -m pip install --quiet --upgrade pip >&2
  .venv/bin/python -m pip install --quiet -e ".[dev]" >&2
  rm -f .venv/.installed-* && touch "$stamp_py"
fi

stamp_npm="node_modules/.installed-$(sha1sum package-lock.json | cut -c1-12)"
if [[ ! -f "$stamp_npm" ]]; then
  npm ci --no-audit --no-fund --loglevel=error >&2  # keep stdout for the commands' own output
  touch "$stamp_npm"
fi

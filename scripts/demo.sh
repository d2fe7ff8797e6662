#!/usr/bin/env bash
# Run the whole pipeline on the bundled synthetic Takeout export (or on your own file):
# start the local Convex backend, import, run the worker until the dashboard is fresh, print it.
#   scripts/demo.sh                       # bundled sample
#   scripts/demo.sh ~/Takeout/.../watch-history.json
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
exec .venv/bin/python -m worker demo "$@"

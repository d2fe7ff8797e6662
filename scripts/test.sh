#!/usr/bin/env bash
# Run every test: Python (unit + integration against the local Convex backend and a real Redis),
# the Convex functions (vitest + convex-test), type checks (tsc, mypy), ruff and the Dockerfile lint.
# Installs what is missing first. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh

# Redis for the L2 cache tests: use the one on 127.0.0.1:6379, or start a throwaway one for this run
# (installed from Debian's packages when missing and we are root, as in CI), stopped on exit.
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  if ! command -v redis-server >/dev/null && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
  fi
  if ! command -v redis-server >/dev/null; then
    echo "redis-server not found: install it (apt-get install redis-server) for the cache tests" >&2
    exit 1
  fi
  redis_dir=$(mktemp -d)
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "$redis_dir" --pidfile "$redis_dir/redis.pid" >/dev/null
  trap 'kill "$(cat "$redis_dir/redis.pid" 2>/dev/null)" 2>/dev/null || true' EXIT
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && break; sleep 0.1; done
fi

echo "== TypeScript type check"
npx tsc --noEmit -p convex
npx tsc --noEmit -p convex-local

echo "== vitest (Convex functions and local backend clients)"
npx vitest run

echo "== Python lint, format and types (ruff, mypy --strict)"
.venv/bin/ruff check worker tests benchmarks
.venv/bin/ruff format --check worker tests benchmarks
.venv/bin/mypy worker benchmarks

echo "== Dockerfile lint"
.venv/bin/hadolint Dockerfile

echo "== pytest"
# pytest exits 5 when it collects no test: with set -e that fails this script.
.venv/bin/python -m pytest "$@"

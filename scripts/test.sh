#!/usr/bin/env bash
# Set up, lint, then run the whole test suite against real parts (OpenSSH
# sshd, DuckDB, Dagster instances). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The catalogue and UI tests drive a real headless browser: Debian's Chromium.
if ! command -v chromium >/dev/null 2>&1; then
  echo "test: installing chromium (browser tests)"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
. scripts/env.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Two workers (HDH_TEST_WORKERS to change), each given whole test files so that a file's module-scoped
# fixtures (a dbt-built warehouse, a Spark session, a PostgreSQL server) are built once; the files in
# the order tests/conftest.py gives (the longest first), not re-sorted by their number of tests.
exec .venv/bin/python -m pytest -n "${HDH_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"

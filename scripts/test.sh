#!/usr/bin/env bash
# Set up, lint, then run the whole test suite against real parts (OpenSSH
# sshd, DuckDB, Dagster instances). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"

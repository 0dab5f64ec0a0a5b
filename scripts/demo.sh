#!/usr/bin/env bash
# Set up, then run the full demo on embedded defaults: keys, synthetic SNDS
# data, a private OpenSSH SFTP server on loopback, deliveries (one of them bad),
# the Dagster sensor and ingestion, and a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
exec .venv/bin/hdh-demo "$@"

#!/usr/bin/env bash
# Create or refresh the project's virtualenv (.venv) and install everything the
# platform needs, OS packages included. Safe to run again: it only reinstalls
# the Python packages when pyproject.toml has changed.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/sbin/sshd ] || command -v sshd >/dev/null 2>&1 || missing+=(openssh-server)
command -v sftp >/dev/null 2>&1 || missing+=(openssh-client)
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
# The production instance's private PostgreSQL (scripts/instance.sh, its tests): Debian keeps
# initdb and postgres under /usr/lib/postgresql/<major>/bin, off PATH.
command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
  || missing+=(postgresql)
# The catalogue's cartography is laid out by Graphviz (dot, unflatten).
command -v dot >/dev/null 2>&1 || missing+=(graphviz)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing OS packages: ${missing[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.hdh-installed
wanted=$(cat pyproject.toml packages/hdh-deliver/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  echo "setup: installing Python packages into .venv (first time: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  # One resolution for both distributions: the platform depends on hdh-deliver, found here, not on an index.
  .venv/bin/python -m pip install -q -e ./packages/hdh-deliver -e '.[dev]'
  echo "$wanted" > "$stamp"
fi
# The dbt manifest the Dagster definitions and the catalogue read (dagster-dbt's
# deploy-time preparation; `dagster dev` re-parses by itself at every load).
DBT_SEND_ANONYMOUS_USAGE_STATS=false .venv/bin/dbt parse --quiet --project-dir dbt_project --profiles-dir dbt_project

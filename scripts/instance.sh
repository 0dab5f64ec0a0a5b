#!/usr/bin/env bash
# The production-style Dagster stack: the PostgreSQL instance profile
# (deploy/dagster-postgres.yaml), dagster-daemon (schedules, sensors, the run
# queue, retries) and dagster-webserver for workspace.yaml, each in its own
# process group and stopped by its PID. See docs/deployment.md.
#
#   scripts/instance.sh start    # set up, then start PostgreSQL (if private), the daemon and the UI
#   scripts/instance.sh stop     # stop them
#   scripts/instance.sh status
#
# PostgreSQL: the server HDH_PG_HOST, HDH_PG_PORT, HDH_PG_USER, HDH_PG_PASSWORD
# and HDH_PG_DB name; without HDH_PG_HOST, a private one on a loopback port,
# kept under $HDH_INSTANCE_DIR/postgres. The code location's own settings
# (HDH_SFTP_HOST…, README) come from the caller's environment.
# HDH_INSTANCE_DIR (default var/instance) holds the state, logs and PID files;
# HDH_WEBSERVER_PORT (default 3000) is the UI's loopback port; HDH_NO_SETUP=1
# skips scripts/setup.sh (the tests set it: they run in an installed .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
state=${HDH_INSTANCE_DIR:-$repo/var/instance}
web_port=${HDH_WEBSERVER_PORT:-3000}
services=(webserver daemon)

alive() { # service -> true while the process in its PID file runs and is that service: after a crash or
  # a reboot, the recorded PID may belong to another process by now, which stop must not signal.
  local pid_file="$state/$1.pid"
  [ -f "$pid_file" ] && tr '\0' ' ' <"/proc/$(cat "$pid_file")/cmdline" 2>/dev/null | grep -q "dagster-$1 "
}

stop_group() { # name: SIGTERM its process group (code servers, run workers too), SIGKILL what is left
  local pid_file="$state/$1.pid" pid
  alive "$1" || { rm -f "$pid_file"; return 0; }
  pid=$(cat "$pid_file")
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 300); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$pid_file"
  echo "instance: $1 (pid $pid) stopped"
}

stop() {
  for name in "${services[@]}"; do stop_group "$name"; done
  if [ -d "$state/postgres" ]; then
    python -m hdh_devtools.postgres_server stop "$state/postgres"
  fi
}

status() {
  for name in "${services[@]}"; do
    if alive "$name"; then echo "$name: running (pid $(cat "$state/$name.pid"))"
    else echo "$name: stopped"; fi
  done
}

start() {
  for name in "${services[@]}"; do
    if alive "$name"; then
      echo "instance: already running ($name pid $(cat "$state/$name.pid")); 'scripts/instance.sh stop' first" >&2
      exit 1
    fi
  done
  # Others may traverse (PostgreSQL runs as its own OS user when we are root), not list;
  # everything inside is owner-only.
  mkdir -p "$state"
  chmod 0711 "$state"
  if [ -z "${HDH_PG_HOST:-}" ]; then
    python -m hdh_devtools.postgres_server start "$state/postgres" --env-file "$state/postgres.env"
    set -a; . "$state/postgres.env"; set +a
  else
    : "${HDH_PG_PORT:?HDH_PG_PORT is not set}" "${HDH_PG_USER:?HDH_PG_USER is not set}"
    : "${HDH_PG_PASSWORD:?HDH_PG_PASSWORD is not set}" "${HDH_PG_DB:?HDH_PG_DB is not set}"
  fi
  export DAGSTER_HOME="$state/dagster_home"
  mkdir -p -m 0700 "$DAGSTER_HOME"
  install -m 0600 deploy/dagster-postgres.yaml "$DAGSTER_HOME/dagster.yaml"
  # Create or upgrade the instance's tables once, before two processes use them.
  dagster instance migrate >"$state/migrate.log" 2>&1 || {
    echo "instance: 'dagster instance migrate' failed; see $state/migrate.log" >&2
    exit 1
  }
  # The concurrency pools' limits, set once here rather than by the first runs (hdh_pipelines/core/pools.py).
  python -m hdh_pipelines.core.pools >>"$state/migrate.log" 2>&1 || {
    echo "instance: setting the concurrency pools failed; see $state/migrate.log" >&2
    exit 1
  }

  # Job control: each service gets its own process group, which stop() ends as a whole.
  set -m
  ( umask 077; exec dagster-daemon run -w workspace.yaml </dev/null >>"$state/daemon.log" 2>&1 ) &
  echo $! >"$state/daemon.pid"
  ( umask 077; exec dagster-webserver -w workspace.yaml -h 127.0.0.1 -p "$web_port" \
      </dev/null >>"$state/webserver.log" 2>&1 ) &
  echo $! >"$state/webserver.pid"
  set +m

  if ! python - "$web_port" "$state" <<'EOF'
import sys, time, urllib.request
from pathlib import Path

port, state = sys.argv[1], Path(sys.argv[2])
deadline = time.monotonic() + 300
while time.monotonic() < deadline:
    for name in ("daemon", "webserver"):
        stat = Path("/proc", (state / f"{name}.pid").read_text().strip(), "stat")
        # Gone, or a zombie this script has not reaped yet: either way it exited.
        if not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            sys.exit(f"instance: {name} exited; see {state / (name + '.log')}")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5):
            sys.exit(0)
    except OSError:
        time.sleep(1)
sys.exit(f"instance: the webserver did not answer on port {port} in 300 s; see {state / 'webserver.log'}")
EOF
  then
    stop
    exit 1
  fi
  echo "instance: daemon (pid $(cat "$state/daemon.pid")) and webserver (pid $(cat "$state/webserver.pid"))" \
       "on PostgreSQL $HDH_PG_HOST:$HDH_PG_PORT/$HDH_PG_DB"
  echo "instance: UI at http://127.0.0.1:$web_port; logs in $state; stop with: scripts/instance.sh stop"
}

case "${1:-}" in
  start)
    [ "${HDH_NO_SETUP:-}" = 1 ] || scripts/setup.sh
    . scripts/env.sh
    start
    ;;
  stop) . scripts/env.sh; stop ;;
  status) status ;;
  *) echo "usage: scripts/instance.sh start|stop|status" >&2; exit 2 ;;
esac

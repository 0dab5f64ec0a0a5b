# Sourced by the other scripts: no telemetry, no network, quiet Spark.
export DAGSTER_DISABLE_TELEMETRY=1
export DO_NOT_TRACK=1
export DBT_SEND_ANONYMOUS_USAGE_STATS=false
export SPARK_LOCAL_IP=127.0.0.1
export PATH="$PWD/.venv/bin:$PATH"

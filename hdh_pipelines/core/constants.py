"""Constants several stages share, each defined once."""

# DuckDB takes one writer per warehouse file and no reader while it writes: every step that opens the
# warehouse belongs to this concurrency pool, limited to one in dagster.yaml and deploy/.
WAREHOUSE_POOL = "duckdb_warehouse"

# Run tag naming who asked for a run (a project lead, the purge sensor…), read into the audit trails.
REQUESTER_TAG = "hdh/requester"

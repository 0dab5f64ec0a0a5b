"""Where the repository's own project files are, for the stages that read them."""

from pathlib import Path

# The dbt-duckdb project: its models are assets (normalisation), its YAML documents columns
# (catalogue, workspaces, open science).
DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"

"""Normalisation: the dbt-duckdb project (dbt_project/) as Dagster assets over the raw tables.

``assets`` maps the dbt models to assets (monthly partitions, single-run
backfills), ``checks`` holds the referential checks, ``resources`` the dbt CLI
and the DuckDB warehouse. See docs/normalisation.md.
"""

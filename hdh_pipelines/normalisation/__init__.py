"""Normalisation: the dbt project (dbt_project/, on DuckDB or Spark) as Dagster assets over the raw tables.

``assets`` maps the dbt models to assets (monthly partitions, single-run
backfills), ``checks`` holds the referential checks, ``resources`` the dbt CLI
and the warehouse, ``warehouse`` the one interface through which every later
stage reads it, whichever engine built it. See docs/normalisation.md.
"""

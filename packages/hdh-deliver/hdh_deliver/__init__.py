"""The ``hdh-delivery/1`` contract between data providers and the hub.

Pure library, shared by the provider command and the hub's ingestion: it
imports nothing of the hub (no Dagster, DuckDB, Spark), so each piece (names, keys, envelope, manifest) can be
used and tested alone. ``docs/delivery-format.md`` explains how it maps onto
the specification.
"""

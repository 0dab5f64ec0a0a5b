"""Helpers and constants every stage shares, defined once (no Dagster assets here)."""

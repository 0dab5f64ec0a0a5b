"""Ingestion: from the providers' SFTP inbox to raw tables, or quarantine.

The pure core finds complete deliveries (``inbox``), receives and verifies
each file (``receive``), loads it into raw Parquet (``raw_store``) and
publishes it atomically in the hub's private storage (``storage``), one
delivery end to end in ``pipeline``. The Dagster shell: ``assets``,
``sensors``, ``resources``, ``partitions``. See docs/architecture.md.
"""

"""The ``hdh-delivery/1`` contract between data providers and the hub.

Pure library, shared by the provider command and the hub's Dagster assets: it
never imports Dagster, so each piece (names, keys, envelope, manifest) can be
used and tested alone. ``docs/delivery-format.md`` explains how it maps onto
the specification.
"""

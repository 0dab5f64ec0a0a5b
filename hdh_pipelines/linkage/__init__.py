"""Linkage of an external cohort to the SNDS persons (pure library, no Dagster).

- ``testdata``: populations and cohorts with planted errors and known truth;
- ``comparison``: harmonised columns, Splink comparisons, blocking rules;
- ``engine``: deterministic (verified) then probabilistic (Splink on Spark) linkage, 1:1;
- ``storage``: Parquet staging, versioned outputs, warehouse views;
- ``quality``: precision, recall, F1 against a truth;
- ``pipeline``: one run end to end.
"""

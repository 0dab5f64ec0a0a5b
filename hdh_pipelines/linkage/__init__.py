"""Linkage of an external cohort to the SNDS persons: a pure core and its Dagster shell.

- ``comparison``: harmonised columns, Splink comparisons, blocking rules;
- ``engine``: deterministic (verified) then probabilistic (Splink on Spark) linkage, 1:1;
- ``storage``: Parquet staging, versioned outputs, warehouse views;
- ``quality``: precision, recall, F1 against a truth;
- ``pipeline``: one run end to end;
- ``assets``, ``resources``: the Dagster shell (Spark settings, linkage storage).

Test populations with planted errors: ``hdh_devtools.linkage_testdata``.
"""

"""Linkage of an external cohort to the SNDS persons: a pure core and its Dagster shell.

- ``comparison``: harmonised columns, comparison levels, blocking rules;
- ``fellegi_sunter``: u from random pairs, m and match share by EM;
- ``engine``: deterministic (verified) then probabilistic linkage on Spark, 1:1;
- ``storage``: Parquet staging, versioned outputs, warehouse views;
- ``quality``: precision, recall, F1 against a truth;
- ``pipeline``: one run end to end;
- ``assets``, ``resources``: the Dagster shell (Spark settings, linkage storage).

Test populations with planted errors: ``hdh_devtools.linkage_testdata``.
"""

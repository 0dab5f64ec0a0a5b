"""The instance's concurrency pools, set explicitly once when an instance starts.

Left to itself, Dagster creates a pool's limit the first time a step asks for
it (``initialize_concurrency_limit_to_default``), in whichever run gets there
first. On PostgreSQL that lazy creation is not safe when runs start together
(dagster-io/dagster#33552: an insert-then-update that PostgreSQL aborts; here
two warehouse runs launched at the same moment both ran their dbt step). A
limit set beforehand is never created lazily, so ``scripts/instance.sh start``
sets every pool below once, in one process, before the daemon and the
webserver start: ``python -m hdh_pipelines.core.pools``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import dagster as dg

from hdh_pipelines.core.constants import WAREHOUSE_POOL

# Pool -> how many steps may hold it at once. DuckDB takes one writer per warehouse file.
POOL_LIMITS: Mapping[str, int] = MappingProxyType({WAREHOUSE_POOL: 1})


def set_pool_limits(instance: dg.DagsterInstance) -> None:
    """Set every pool's limit on ``instance``, as an explicit limit (not Dagster's default one).

    Idempotent: a pool already set to its limit is left as it is.
    """
    storage = instance.event_log_storage
    for pool, limit in POOL_LIMITS.items():
        info = storage.get_concurrency_info(pool)
        if info.slot_count != limit or info.using_default_limit:
            storage.set_concurrency_slots(pool, limit)


if __name__ == "__main__":
    with dg.DagsterInstance.get() as current:
        set_pool_limits(current)
        print(", ".join(f"{pool}: {limit}" for pool, limit in POOL_LIMITS.items()))

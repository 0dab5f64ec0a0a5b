"""The opt-out registry as every copy reads it: one model, one version, one outcome per purged copy.

Every reader of the registry (workspace builds, data-challenge exports, the
linkage staging step and the purges of their copies) reads the one dbt model
``intermediate.int_opt_out_exclusions``: each pseudonym and twin rank whose
data must stay out, with the person (``ben_idt_ano``) it belongs to when the
referential knows it. Sources of opt-outs are merged there, never here.
Pure SQL helpers over a DuckDB connection (no Dagster).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

EXCLUSIONS_TABLE = "intermediate.int_opt_out_exclusions"
OPT_OUT_STAGING_TABLE = "staging.stg_opt_out"


def _relation(table: str, database: str | None) -> str:
    return f"{database}.{table}" if database else table


def exclusions_relation(database: str | None = None) -> str:
    """The exclusion model, qualified by the attached ``database`` when the warehouse is not the default."""
    return _relation(EXCLUSIONS_TABLE, database)


def excluded_persons_sql(database: str | None = None) -> str:
    """``ben_idt_ano`` of every opted-out person the referential knows."""
    return f"select distinct ben_idt_ano from {exclusions_relation(database)} where ben_idt_ano is not null"


def excluded_pseudonyms_sql(database: str | None = None) -> str:
    """Every pseudonym (``psa``, as the linkage harmonises it) of an opted-out person, any twin rank.

    A pseudonym shared by twins names both: a record under it cannot be told
    apart from the opted-out twin's, so it is treated as theirs.
    """
    return (
        f"select distinct upper(trim(ben_nir_psa)) as psa from {exclusions_relation(database)} "
        "where nullif(trim(ben_nir_psa), '') is not null"
    )


def opt_out_version(connection: duckdb.DuckDBPyConnection, database: str | None = None) -> dict[str, str]:
    """The registry a copy was built or purged with: latest delivery, counts, digest of the exclusions."""
    active, latest_loaded, latest_delivery = connection.execute(
        "select count(*) filter (where opt_status = 'ACTIVE'), max(hdh_loaded_at)::varchar, "
        # Ties on the load time (one nightly loads several deliveries) are broken by the delivery name,
        # so the version a copy records never depends on scan order.
        "arg_max(hdh_provider || '/' || hdh_delivery_id, (hdh_loaded_at, hdh_provider, hdh_delivery_id)) "
        f"from {_relation(OPT_OUT_STAGING_TABLE, database)}"
    ).fetchone()
    excluded, digest = connection.execute(
        "select count(*), coalesce(substr(sha256(string_agg(ben_nir_psa || ':' || ben_rng_gem, ',' "
        "order by ben_nir_psa, ben_rng_gem)), 1, 16), 'empty') "
        f"from {exclusions_relation(database)}"
    ).fetchone()
    return {
        "latest_delivery": latest_delivery or "none",
        "latest_loaded_at": latest_loaded or "none",
        "active_opt_outs": str(active),
        "excluded_pseudonyms": str(excluded),
        "digest": digest,
    }


@dataclass(frozen=True)
class PurgeOutcome:
    """What a purge did to one copy; exact counts only go to the owner-only audit trail.

    ``outcome``: ``purged`` (opted-out persons removed), ``clean`` (none was
    in it: nothing rewritten), ``deleted`` (it could not be purged, so it was
    removed whole, see ``reason``), ``absent`` (nothing published) or ``failed``.
    """

    copy: str
    outcome: str
    reason: str
    message: str
    persons_removed: int = 0
    rows_removed: int = 0
    row_counts: dict[str, int] = field(default_factory=dict)
    registry_version: dict[str, str] = field(default_factory=dict)
    # A failure another try may cure (a lock, a full disk), unlike a refusal (a missing key).
    retryable: bool = False


def failed_outcome(copy: str, error: Exception, refusals: tuple[type[Exception], ...]) -> PurgeOutcome:
    """A copy whose purge failed. A refusal (``reason``, ``message`` written for people) keeps its
    sentence; any other error only its type: its text may quote data (DuckDB shows values)."""
    if isinstance(error, refusals):
        return PurgeOutcome(copy, "failed", error.reason, error.message)  # type: ignore[attr-defined]
    return PurgeOutcome(
        copy, "failed", type(error).__name__, "The purge of this copy failed.", retryable=True
    )

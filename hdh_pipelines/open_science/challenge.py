"""Data-challenge export: a de-identified, pseudonymised train/test split of one mart.

De-identification, per mart (``CHALLENGE_MARTS``): hub identifiers are
replaced by HMAC-SHA-256 pseudonyms under the challenge's own key (the
workspaces' SQL HMAC, domains ``person`` and ``stay``), so they match no
project's and no hub's; exact dates become months; residence becomes the
région; hospital numbers, communes, birth months and twin ranks are dropped.
Rows without a person, and persons on the opt-out registry
(``intermediate.int_opt_out_exclusions``), are left out. The split is by person: a person's rows
are all in train or all in test, the side drawn from their pseudonym (uniform,
secret without the key, the same on every re-run with the same key).

The folder is row-level data: owner-only (0700, files 0600) until the
challenge's organisers hand it over. ``purge_challenge_exports`` removes
from every export the persons who opted out since it was made (the opt-out
purge sensor runs it); a copy already handed over is beyond its reach.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd

from hdh_pipelines.core.private_files import make_private_dir
from hdh_pipelines.normalisation.warehouse import Warehouse
from hdh_pipelines.open_science.errors import OpenDataRefused
from hdh_pipelines.open_science.geography import DEPARTEMENT_REGION, UNKNOWN, departement_sql
from hdh_pipelines.open_science.publish import replace_folder
from hdh_pipelines.rights.opt_out import (
    EXCLUSIONS_TABLE,
    OPT_OUT_STAGING_TABLE,
    PurgeOutcome,
    excluded_persons_sql,
    opt_out_version,
)
from hdh_pipelines.workspaces.pseudonyms import MIN_KEY_BYTES, install_project_key, key_fingerprint

_PERSON = (
    "person_id",
    "project_pseudonym('person', ben_idt_ano)",
    "Person, challenge pseudonym (HMAC-SHA-256).",
)
_REGION = (
    "residence_region",
    f"coalesce(g.region, '{UNKNOWN}')",
    "Région of residence (INSEE code), 'unknown' outside the 101 départements.",
)


def _kept(*names: str) -> list[tuple[str, str, str | None]]:
    """Columns published as they are, described by the mart's dbt documentation."""
    return [(name, name, None) for name in names]


# Output column, SQL over the mart (alias m) and geography (alias g), description (None: the mart's).
CHALLENGE_MARTS: dict[str, list[tuple[str, str, str | None]]] = {
    "persons": [
        _PERSON,
        *_kept("sex_code", "birth_year"),
        (
            "death_month",
            "date_trunc('month', death_date)",
            "Month of death if known (first day), else empty.",
        ),
        _REGION,
    ],
    "hospital_stays": [
        _PERSON,
        (
            "stay_id",
            "project_pseudonym('stay', pmsi_year || '/' || eta_num || '/' || rsa_num)",
            "Stay, challenge pseudonym (HMAC-SHA-256).",
        ),
        ("stay_start_month", "date_trunc('month', stay_start_date)", "Month the stay started (first day)."),
        *_kept("pmsi_year", "length_of_stay_days", "sex_code", "age_years"),
        _REGION,
        *_kept(
            "principal_diagnosis",
            "related_diagnosis",
            "associated_diagnosis_count",
            "ghm_code",
            "admission_mode",
            "admission_origin",
            "discharge_mode",
            "procedure_count",
            "session_count",
        ),
    ],
    "drug_dispensations": [
        _PERSON,
        ("dispensing_month", "date_trunc('month', dispensing_date)", "Month of dispensing (first day)."),
        *_kept("atc_code", "cip13", "boxes", "unit_price", "benefit_nature_code"),
    ],
}


def load_challenge_key(encoded: str | None) -> bytes:
    if not encoded:
        raise OpenDataRefused(
            "missing_challenge_key",
            "No challenge key: set HDH_CHALLENGE_KEY "
            "(python -c 'import secrets; print(secrets.token_hex(32))').",
        )
    try:
        key = bytes.fromhex(encoded.strip())
    except ValueError:
        raise OpenDataRefused("invalid_challenge_key", "The challenge key is not hexadecimal.") from None
    if len(key) < MIN_KEY_BYTES:
        raise OpenDataRefused(
            "invalid_challenge_key",
            f"The challenge key has {len(key)} bytes; at least {MIN_KEY_BYTES} are required.",
        )
    return key


def _attach_warehouse(connection: duckdb.DuckDBPyConnection, warehouse: Warehouse) -> None:
    """The warehouse read-only as the connection's default catalogue: the SQL names ``marts.<mart>``."""
    warehouse.attach(connection, "wh")
    connection.execute("use wh")


def _require_opt_out_registry(connection: duckdb.DuckDBPyConnection) -> None:
    try:
        connection.execute(f"select count(*) from {EXCLUSIONS_TABLE}, {OPT_OUT_STAGING_TABLE} limit 0")
    except duckdb.CatalogException:
        raise OpenDataRefused(
            "opt_out_registry_missing",
            f"The warehouse has no {EXCLUSIONS_TABLE} or {OPT_OUT_STAGING_TABLE}: no export is made without "
            "the opt-out registry applied; build the normalisation first.",
        ) from None


@dataclass(frozen=True)
class ChallengeExport:
    folder: Path
    manifest: dict


def export_challenge(
    warehouse: Warehouse,
    mart: str,
    key: bytes,
    root: Path,
    challenge_id: str,
    *,
    test_fraction: float,
    now: datetime,
    mart_descriptions: dict[str, str],
) -> ChallengeExport:
    """Write ``<root>/<challenge_id>/`` with train.parquet, test.parquet, columns.json and manifest.json."""
    if mart not in CHALLENGE_MARTS:
        raise OpenDataRefused(
            "unknown_mart", f"Exportable marts: {', '.join(CHALLENGE_MARTS)}.", field="mart"
        )
    if not 0 < test_fraction < 1:
        raise OpenDataRefused(
            "invalid_test_fraction", "The test fraction is between 0 and 1 (e.g. 0.2).", field="test_fraction"
        )
    if not challenge_id.replace("-", "").replace("_", "").isalnum() or len(challenge_id) > 63:
        raise OpenDataRefused(
            "invalid_challenge_id", "The challenge id is letters, digits, '-' or '_'.", field="challenge_id"
        )
    columns = CHALLENGE_MARTS[mart]
    described = {
        name: description or mart_descriptions.get(source, "") for name, source, description in columns
    }
    manifest: dict = {}

    def write(staging: Path) -> None:
        with duckdb.connect() as connection:
            _attach_warehouse(connection, warehouse)
            install_project_key(connection, key)
            _require_opt_out_registry(connection)
            connection.register(
                "hdh_geography",
                pd.DataFrame(
                    {"departement": list(DEPARTEMENT_REGION), "region": list(DEPARTEMENT_REGION.values())}
                ),
            )
            geography_join = (
                f"left join hdh_geography g on g.departement = {departement_sql('m.residence_departement')}"
                if any(name == "residence_region" for name, _, _ in columns)
                else ""
            )
            select = ", ".join(f"{source} as {name}" for name, source, _ in columns)
            try:
                connection.execute(
                    f"create temp table export as select {select}, "
                    # The pseudonym is uniform hex: its first 32 bits draw the side.
                    f"('0x' || substr(project_pseudonym('person', ben_idt_ano), 1, 8))::ubigint / 2.0 ^ 32 "
                    f"< {float(test_fraction)} as is_test "
                    f"from marts.{mart} m {geography_join} where m.ben_idt_ano is not null "
                    # The marts already leave opted-out persons out; the registry is applied again so that
                    # the version recorded below is the one the export really reflects.
                    f"and m.ben_idt_ano not in ({excluded_persons_sql()})"
                )
            except duckdb.CatalogException:
                raise OpenDataRefused(
                    "missing_input", f"The warehouse has no marts.{mart}: materialise it first.", field="mart"
                ) from None
            for split, condition in (("train", "not is_test"), ("test", "is_test")):
                path = staging / f"{split}.parquet"
                connection.execute(
                    f"copy (select * exclude (is_test) from export where {condition} order by person_id) "
                    f"to '{path}' (format parquet)"
                )
            train, test, train_persons, test_persons = connection.execute(
                "select count(*) filter (where not is_test), count(*) filter (where is_test), "
                "count(distinct person_id) filter (where not is_test), "
                "count(distinct person_id) filter (where is_test) from export"
            ).fetchone()
            # The side a person falls on is a draw: with few persons one side can come out empty, and a
            # challenge without a training or a test set is no challenge.
            for side, persons in (("train", train_persons), ("test", test_persons)):
                if not persons:
                    raise OpenDataRefused(
                        "empty_split",
                        f"The split by person left the {side} set empty ({train_persons + test_persons} "
                        f"persons, test fraction {test_fraction}): export a mart with more persons, "
                        "or another test fraction.",
                        field="test_fraction",
                    )
            version = opt_out_version(connection)
        manifest.update(
            {
                "challenge": challenge_id,
                "mart": mart,
                "created_at": now.isoformat(timespec="seconds"),
                "rows": {"train": train, "test": test},
                "test_fraction": test_fraction,
                "split": "by person, from the person's pseudonym",
                "key_fingerprint": key_fingerprint(key),
                "opt_out_registry_version": version,
            }
        )
        (staging / "columns.json").write_text(json.dumps(described, indent=2, ensure_ascii=False), "utf-8")
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2), "utf-8")

    folder = root / challenge_id
    make_private_dir(root)
    replace_folder(folder, write, private=True)
    return ChallengeExport(folder, manifest)


CHALLENGE_SPLITS = ("train", "test")


def challenge_exports(root: Path) -> list[Path]:
    """The published exports under ``root`` (staging folders start with a dot)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if not p.name.startswith(".") and (p / "manifest.json").is_file())


def purge_challenge_export(warehouse: Warehouse, key: bytes, folder: Path) -> PurgeOutcome:
    """Remove every person the opt-out registry now excludes from one export, swapped in whole.

    An export made under another challenge key cannot be purged (its persons
    cannot be named): it is deleted. One holding none of them is left as it is.
    """
    copy = f"challenge/{folder.name}"
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    rows = manifest["rows"]
    if manifest["key_fingerprint"] != key_fingerprint(key):
        # Out of readers' sight in one rename (a name replace_folder clears if this dies), then deleted.
        aside = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}.tmp")
        os.rename(folder, aside)
        shutil.rmtree(aside)
        return PurgeOutcome(
            copy,
            "deleted",
            "key_changed",
            "The export was made under an earlier challenge key: its persons cannot be named to remove "
            "those who opted out, so it was deleted; export it again.",
            row_counts=rows,
        )
    with duckdb.connect() as connection:
        _attach_warehouse(connection, warehouse)
        install_project_key(connection, key)
        _require_opt_out_registry(connection)
        version = opt_out_version(connection)
        connection.execute(
            "create temp table excluded as "
            f"select project_pseudonym('person', ben_idt_ano) as person_id from ({excluded_persons_sql()})"
        )
        splits = ", ".join(f"'{folder / f'{split}.parquet'}'" for split in CHALLENGE_SPLITS)
        present = connection.execute(
            f"select count(distinct person_id) from read_parquet([{splits}]) "
            "semi join excluded using (person_id)"
        ).fetchone()[0]
        if not present:
            return PurgeOutcome(
                copy,
                "clean",
                "opt_out_purge",
                "No opted-out person is in the export.",
                row_counts=rows,
                registry_version=version,
            )
        kept: dict[str, int] = {}

        def write(staging: Path) -> None:
            for split in CHALLENGE_SPLITS:
                kept[split] = connection.execute(
                    f"copy (select * from read_parquet('{folder / f'{split}.parquet'}') "
                    "anti join excluded using (person_id) order by person_id) "
                    f"to '{staging / f'{split}.parquet'}' (format parquet)"
                ).fetchone()[0]
            shutil.copyfile(folder / "columns.json", staging / "columns.json")
            purged = {
                **manifest,
                "rows": kept,
                "opt_out_registry_version": version,
                "opt_out_purged_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            (staging / "manifest.json").write_text(json.dumps(purged, indent=2), "utf-8")

        replace_folder(folder, write, private=True)
    return PurgeOutcome(
        copy,
        "purged",
        "opt_out_purge",
        "Persons who opted out were removed from the train and test splits.",
        persons_removed=present,
        rows_removed=sum(rows.values()) - sum(kept.values()),
        row_counts=kept,
        registry_version=version,
    )

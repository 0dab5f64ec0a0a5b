"""Data-challenge export: a de-identified, pseudonymised train/test split of one mart.

De-identification, per mart (``CHALLENGE_MARTS``): hub identifiers are
replaced by HMAC-SHA-256 pseudonyms under the challenge's own key (the
workspaces' SQL HMAC, domains ``person`` and ``stay``), so they match no
project's and no hub's; exact dates become months; residence becomes the
région; hospital numbers, communes, birth months and twin ranks are dropped.
Rows without a person are left out. The split is by person: a person's rows
are all in train or all in test, the side drawn from their pseudonym (uniform,
secret without the key, the same on every re-run with the same key).

The folder is row-level data: owner-only (0700, files 0600) until the
challenge's organisers hand it over.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd

from hdh_pipelines.opendata.errors import OpenDataRefused
from hdh_pipelines.opendata.geography import DEPARTEMENT_REGION, UNKNOWN, departement_sql
from hdh_pipelines.opendata.publish import replace_folder
from hdh_pipelines.storage import make_private_dir
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


@dataclass(frozen=True)
class ChallengeExport:
    folder: Path
    manifest: dict


def export_challenge(
    warehouse_path: Path,
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
            connection.execute("attach $path as wh (read_only)", {"path": str(warehouse_path)})
            connection.execute("use wh")
            install_project_key(connection, key)
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
                    f"from marts.{mart} m {geography_join} where m.ben_idt_ano is not null"
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
            train, test = connection.execute(
                "select count(*) filter (where not is_test), count(*) filter (where is_test) from export"
            ).fetchone()
        manifest.update(
            {
                "challenge": challenge_id,
                "mart": mart,
                "created_at": now.isoformat(timespec="seconds"),
                "rows": {"train": train, "test": test},
                "test_fraction": test_fraction,
                "split": "by person, from the person's pseudonym",
                "key_fingerprint": key_fingerprint(key),
            }
        )
        (staging / "columns.json").write_text(json.dumps(described, indent=2, ensure_ascii=False), "utf-8")
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2), "utf-8")

    folder = root / challenge_id
    make_private_dir(root)
    replace_folder(folder, write, private=True)
    return ChallengeExport(folder, manifest)

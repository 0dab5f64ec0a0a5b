"""The attacker of the disclosure tests: a reader who holds every published table of a population and
combines them into one integer program (``scipy.optimize.milp``) to pin down the hidden values.

Written independently of ``open_science.disclosure``; tests/test_disclosure_attacks.py says what it knows.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array

from hdh_pipelines.open_science import TOTAL
from hdh_pipelines.open_science.disclosure import PROTECTION_WIDTH

Coarsen = Callable[[tuple], str]  # finest cell -> the label it is published under in one dimension


def attack(
    finest: dict[str, Sequence[str]], tables: Sequence[tuple[pd.DataFrame, str, dict[str, Coarsen]]]
) -> list[tuple[int, int, float, float]]:
    """(table, row, min, max) of every hidden value, from the published values of ``tables``.

    Each table is (published frame, measure, {breakdown dimension: finest cell -> label}); a finest cell
    whose label a table lacks is empty (tables list every subject); dimensions a table lacks are summed.
    """
    assert all("suppression" not in frame.columns for frame, _, _ in tables), "a label narrows hidden values"
    cells = list(itertools.product(*finest.values()))
    fixed_zero = np.zeros(len(cells), dtype=bool)
    rows_of_tables = []
    for frame, _measure, coarsen in tables:
        labels = {name: [function(cell) for cell in cells] for name, function in coarsen.items()}
        present = {name: set(frame[name]) - {TOTAL} for name in coarsen}
        for k in range(len(cells)):
            if any(labels[name][k] not in present[name] for name in coarsen):
                fixed_zero[k] = True
        members = []
        for record in frame[list(coarsen)].to_dict("records"):
            member = np.ones(len(cells), dtype=bool)
            for name, label in record.items():
                if label != TOTAL:
                    member &= np.array([value == label for value in labels[name]])
            members.append(member)
        rows_of_tables.append(np.array(members, dtype=float))
    for (frame, measure, _), members in zip(tables, rows_of_tables, strict=True):
        zeros = frame[measure].to_numpy(dtype="float64", na_value=np.nan) == 0
        fixed_zero |= members[zeros].any(axis=0)  # a published zero empties its finest cells
    kept = ~fixed_zero
    rows_of_tables = [members[:, kept] for members in rows_of_tables]
    lows, highs, blocks = [], [], []
    for (frame, measure, _), members in zip(tables, rows_of_tables, strict=True):
        values = frame[measure].to_numpy(dtype="float64", na_value=np.nan)
        hidden = np.isnan(values)
        blocks.append(members)
        lows.append(np.where(hidden, 1.0, values))  # zeros are published: hidden means at least 1
        highs.append(np.where(hidden, np.inf, values))
    matrix = csr_array(np.vstack(blocks))
    constraint = LinearConstraint(matrix, np.concatenate(lows), np.concatenate(highs))
    bounds = Bounds(0, np.inf)
    found = []
    for t, ((frame, measure, _), members) in enumerate(zip(tables, rows_of_tables, strict=True)):
        for row in np.flatnonzero(frame[measure].isna().to_numpy()):
            objective = members[row]
            low = milp(objective, integrality=1, bounds=bounds, constraints=[constraint])
            high = milp(-objective, integrality=1, bounds=bounds, constraints=[constraint])
            assert low.status == 0, "the published tables contradict each other"
            found.append((t, int(row), low.fun, np.inf if high.status != 0 else -high.fun))
    return found


def assert_resists(finest: dict, tables: Sequence[tuple[pd.DataFrame, str, dict]]) -> None:
    for t, row, low, high in attack(finest, tables):
        assert high - low >= PROTECTION_WIDTH, f"table {t} row {row}: hidden value in [{low}, {high}]"


def by_name(name: str, position: int) -> Coarsen:
    return lambda cell: cell[position]


def plain_attack(frame: pd.DataFrame, dims: list[str], measure: str) -> None:
    """One table on its own cells."""
    finest = {name: sorted(set(frame[name]) - {TOTAL}) for name in dims}
    assert_resists(finest, [(frame, measure, {name: by_name(name, i) for i, name in enumerate(dims)})])

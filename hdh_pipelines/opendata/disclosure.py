"""Disclosure control of count tables: primary and secondary cell suppression.

The published table is two-dimensional: its columns are the values of the last
breakdown dimension, its rows the combinations of the others. It carries the
cells, a total per row, a total per column and the grand total; every total is
the sum of its cells (so a patient counted in two years counts twice in an
all-years total). A table with a single row publishes no column totals (they
would repeat the cells), and likewise for a single column.

Rules, in order:

1. **Primary suppression**: every published value (cell or total) from 1 to
   ``threshold - 1`` is suppressed.
2. **Zero cells** are published as 0: a true zero is about no one; they are
   never primary. They are not used as complements either (hiding a known
   zero gives one-sided protection at best), except as a last resort below.
3. **Secondary suppression**: each published line (a row with its total, a
   column with its total, the row of column totals with the grand total, the
   column of row totals with the grand total) is an equation a reader can
   solve. Complements are suppressed until every suppressed value lies on a
   cycle of suppressed values in the bipartite graph rows × columns (totals
   included, a line published as no equation merged into one free vertex).
   A value is recoverable from the margins exactly when its edge is a bridge
   of that graph (the null space of the margin equations is the graph's cycle
   space), so no bridge means no suppressed value can be computed; and since
   suppressed values are positive, moving along a cycle keeps every value
   non-negative, so each one's feasible range is an interval, not a point.

Complements are chosen cheapest first: in a line left with a single suppressed
value, the smallest positive value whose other line already has a suppression
(so cycles close), interior cells before totals; for a remaining bridge, the
smallest positive value joining its two sides. The tables are aggregates (at
most a few thousand cells), so this runs in Python on the table, not on data.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hdh_pipelines.opendata.errors import OpenDataRefused

DEFAULT_THRESHOLD = 11
TOTAL = "Total"
PRIMARY = "primary"
SECONDARY = "secondary"

Cell = tuple[int, int]


@dataclass(frozen=True)
class ProtectedTable:
    """The published table (long form) and what was suppressed.

    ``table`` has the dimension columns (``Total`` in a margin's summed
    dimensions), ``cell_type`` (cell, row_total, column_total, grand_total),
    the measure and companion columns (nullable integers, NA when suppressed)
    and ``suppression`` (empty, ``primary`` or ``secondary``).
    """

    table: pd.DataFrame
    threshold: int
    primary: int
    secondary: int

    @property
    def published_values(self) -> int:
        return int((self.table["suppression"] == "").sum())


def protect_counts(
    cells: pd.DataFrame,
    dimensions: Sequence[str],
    measure: str,
    threshold: int = DEFAULT_THRESHOLD,
    companions: Sequence[str] = (),
) -> ProtectedTable:
    """Suppress the cells of ``cells`` (one row per combination of ``dimensions``) and add its totals.

    ``measure`` (a count of persons or stays) decides the suppression; each
    companion measure (e.g. boxes dispensed) is zero exactly where the measure
    is, and is published or suppressed with it.
    """
    if threshold < 2:
        raise OpenDataRefused("invalid_threshold", f"The threshold must be at least 2, not {threshold}.")
    dimensions = list(dimensions)
    _check_grid(cells, dimensions, [measure, *companions])
    column_dimension, row_dimensions = dimensions[-1], dimensions[:-1]
    row_keys = _row_keys(cells, row_dimensions)
    column_keys = list(dict.fromkeys(cells[column_dimension]))
    measures = {
        name: _matrix(cells, row_dimensions, column_dimension, row_keys, column_keys, name)
        for name in [measure, *companions]
    }
    extended = measures[measure]
    suppressed_primary = {cell for cell in _present_cells(*extended.shape) if 0 < extended[cell] < threshold}
    suppressed = _secondary_suppression(extended, suppressed_primary)
    table = _long_table(
        measures, row_dimensions, column_dimension, row_keys, column_keys, suppressed_primary, suppressed
    )
    return ProtectedTable(
        table, threshold, len(suppressed_primary), len(suppressed) - len(suppressed_primary)
    )


def _check_grid(cells: pd.DataFrame, dimensions: list[str], measures: list[str]) -> None:
    if not dimensions:
        raise OpenDataRefused("invalid_breakdown", "A table needs at least one breakdown dimension.")
    missing = [name for name in [*dimensions, *measures] if name not in cells.columns]
    if missing:
        raise OpenDataRefused("invalid_table", f"The table has no column {', '.join(missing)}.")
    if cells.empty:
        raise OpenDataRefused("empty_table", "The table has no cell: nothing to publish.")
    if cells.duplicated(dimensions).any():
        raise OpenDataRefused("invalid_table", "The table holds the same combination of dimensions twice.")
    if any((cells[name].astype(str) == TOTAL).any() for name in dimensions):
        raise OpenDataRefused("invalid_table", f"'{TOTAL}' is reserved for margins and cannot be a value.")
    expected = int(np.prod([cells[name].nunique() for name in dimensions]))
    if len(cells) != expected:
        raise OpenDataRefused(
            "incomplete_grid",
            f"The table has {len(cells)} cells where its dimensions make {expected}: zero cells must be "
            "explicit, otherwise a reader could not tell a zero from a missing cell.",
        )
    if (cells[measures] < 0).any().any() or cells[measures].isna().any().any():
        raise OpenDataRefused("invalid_table", "Counts must be non-negative numbers.")


def _row_keys(cells: pd.DataFrame, row_dimensions: list[str]) -> list[tuple]:
    if not row_dimensions:
        return [()]
    return list(dict.fromkeys(cells[row_dimensions].itertuples(index=False, name=None)))


def _matrix(
    cells: pd.DataFrame,
    row_dimensions: list[str],
    column_dimension: str,
    row_keys: list[tuple],
    column_keys: list,
    measure: str,
) -> np.ndarray:
    """The (rows + 1) x (columns + 1) table: cells, row totals in the last column, column totals below."""
    row_index = {key: i for i, key in enumerate(row_keys)}
    column_index = {key: j for j, key in enumerate(column_keys)}
    rows = (
        [row_index[tuple(key)] for key in cells[row_dimensions].itertuples(index=False, name=None)]
        if row_dimensions
        else [0] * len(cells)
    )
    columns = [column_index[key] for key in cells[column_dimension]]
    extended = np.zeros((len(row_keys) + 1, len(column_keys) + 1), dtype=np.int64)
    extended[rows, columns] = cells[measure].to_numpy(dtype=np.int64)
    extended[:-1, -1] = extended[:-1, :-1].sum(axis=1)
    extended[-1, :] = extended[:-1, :].sum(axis=0)
    return extended


def _present_cells(shape_rows: int, shape_columns: int) -> list[Cell]:
    """Values published. With a single row its total is the grand total and column totals would repeat
    the cells, so only that row is published (likewise for a single column)."""
    rows, columns = shape_rows - 1, shape_columns - 1
    if rows == 1 and columns == 1:
        return [(0, 0)]
    if rows == 1:
        return [(0, j) for j in range(shape_columns)]
    if columns == 1:
        return [(i, 0) for i in range(shape_rows)]
    return [(i, j) for i in range(shape_rows) for j in range(shape_columns)]


class _LineGraph:
    """Published values as edges between their row and column lines (lines that are no equation merged)."""

    FREE = ("free",)

    def __init__(self, present: list[Cell]):
        by_row: dict[int, list[Cell]] = defaultdict(list)
        by_column: dict[int, list[Cell]] = defaultdict(list)
        for cell in present:
            by_row[cell[0]].append(cell)
            by_column[cell[1]].append(cell)
        self.lines = [cells for cells in [*by_row.values(), *by_column.values()] if len(cells) > 1]
        self.equation_rows = {i for i, cells in by_row.items() if len(cells) > 1}
        self.equation_columns = {j for j, cells in by_column.items() if len(cells) > 1}
        self.present = present

    def ends(self, cell: Cell) -> tuple[tuple, tuple]:
        row = ("row", cell[0]) if cell[0] in self.equation_rows else self.FREE
        column = ("column", cell[1]) if cell[1] in self.equation_columns else self.FREE
        return row, column

    def other_line_suppressed(self, cell: Cell, line: list[Cell], suppressed: set[Cell]) -> bool:
        in_row = all(other[0] == cell[0] for other in line)
        return any(
            other != cell and (other[1] == cell[1] if in_row else other[0] == cell[0]) for other in suppressed
        )

    def bridges(self, edges: list[Cell]) -> list[Cell]:
        """Edges on no cycle (Tarjan, iterative, parallel edges told apart by index)."""
        adjacency: dict[tuple, list[tuple[tuple, int]]] = defaultdict(list)
        for index, cell in enumerate(edges):
            first, second = self.ends(cell)
            if first == second:
                continue  # a value in no equation: nothing can recompute it
            adjacency[first].append((second, index))
            adjacency[second].append((first, index))
        order: dict[tuple, int] = {}
        low: dict[tuple, int] = {}
        found: list[Cell] = []
        for root in adjacency:
            if root in order:
                continue
            order[root] = low[root] = len(order)
            stack = [(root, -1, iter(adjacency[root]))]
            while stack:
                vertex, via, neighbours = stack[-1]
                advanced = False
                for neighbour, index in neighbours:
                    if index == via:
                        continue
                    if neighbour in order:
                        low[vertex] = min(low[vertex], order[neighbour])
                    else:
                        order[neighbour] = low[neighbour] = len(order)
                        stack.append((neighbour, index, iter(adjacency[neighbour])))
                        advanced = True
                        break
                if advanced:
                    continue
                stack.pop()
                if stack:
                    parent = stack[-1][0]
                    low[parent] = min(low[parent], low[vertex])
                    if low[vertex] > order[parent]:
                        found.append(edges[via])
        return sorted(found)

    def side(self, edges: list[Cell], start: tuple, without: Cell) -> set[tuple]:
        """Vertices reachable from ``start`` through ``edges`` other than ``without``."""
        adjacency: dict[tuple, list[tuple]] = defaultdict(list)
        for cell in edges:
            if cell != without:
                first, second = self.ends(cell)
                adjacency[first].append(second)
                adjacency[second].append(first)
        reached, frontier = {start}, [start]
        while frontier:
            for neighbour in adjacency[frontier.pop()]:
                if neighbour not in reached:
                    reached.add(neighbour)
                    frontier.append(neighbour)
        return reached


def _secondary_suppression(extended: np.ndarray, primary: set[Cell]) -> set[Cell]:
    """Primary plus complements, until no suppressed value is a bridge of the line graph."""
    graph = _LineGraph(_present_cells(*extended.shape))
    last_row, last_column = extended.shape[0] - 1, extended.shape[1] - 1
    suppressed = set(primary)

    def cost(cell: Cell) -> tuple:
        is_total = cell[0] == last_row or cell[1] == last_column
        return (extended[cell] == 0, is_total, int(extended[cell]), cell)

    while True:
        lone = next((line for line in graph.lines if sum(c in suppressed for c in line) == 1), None)
        if lone is not None:
            candidates = [cell for cell in lone if cell not in suppressed]
            suppressed.add(
                min(
                    candidates,
                    key=lambda c: (
                        extended[c] == 0,
                        not graph.other_line_suppressed(c, lone, suppressed),
                        *cost(c),
                    ),
                )
            )
            continue
        edges = sorted(suppressed)
        bridges = graph.bridges(edges)
        if not bridges:
            return suppressed
        bridge = bridges[0]
        first, second = graph.ends(bridge)
        one_side = graph.side(edges, first, without=bridge)
        other_side = graph.side(edges, second, without=bridge)
        joining = [
            cell
            for cell in graph.present
            if cell not in suppressed and _joins(graph.ends(cell), one_side, other_side)
        ]
        if not joining:
            raise OpenDataRefused(
                "unprotectable_table",
                "No cell can be suppressed to protect the table's small counts: publish a coarser breakdown.",
            )
        suppressed.add(min(joining, key=cost))


def _joins(ends: tuple[tuple, tuple], one_side: set[tuple], other_side: set[tuple]) -> bool:
    first, second = ends
    return (first in one_side and second in other_side) or (first in other_side and second in one_side)


def _long_table(
    measures: dict[str, np.ndarray],
    row_dimensions: list[str],
    column_dimension: str,
    row_keys: list[tuple],
    column_keys: list,
    primary: set[Cell],
    suppressed: set[Cell],
) -> pd.DataFrame:
    shape = next(iter(measures.values())).shape
    last_row, last_column = shape[0] - 1, shape[1] - 1
    records = []
    for cell in _present_cells(*shape):
        i, j = cell
        at_total_row, at_total_column = i == last_row, j == last_column
        row_values = (TOTAL,) * len(row_dimensions) if at_total_row else row_keys[i]
        column_value = TOTAL if at_total_column else column_keys[j]
        if (at_total_row or not row_dimensions) and at_total_column:
            cell_type = "grand_total"
        elif at_total_column:
            cell_type = "row_total"
        elif at_total_row:
            cell_type = "column_total"
        else:
            cell_type = "cell"
        record = dict(zip(row_dimensions, row_values, strict=True))
        record[column_dimension] = column_value
        record["cell_type"] = cell_type
        for name, matrix in measures.items():
            record[name] = None if cell in suppressed else int(matrix[cell])
        record["suppression"] = PRIMARY if cell in primary else SECONDARY if cell in suppressed else ""
        records.append(record)
    table = pd.DataFrame.from_records(records)
    for name in measures:
        table[name] = table[name].astype("Int64")
    for name in [*row_dimensions, column_dimension]:
        table[name] = table[name].astype(str)
    return table

"""Disclosure control of count tables: sensitive cells, complements, and an audit of what a reader can infer.

The published table is two-dimensional: its columns are the values of the last
breakdown dimension, its rows the combinations of the others. It carries the
cells, a total per row, a total per column and the grand total; every total is
the sum of its cells (so a patient counted in two years counts twice in an
all-years total). A table with a single row publishes no column totals (they
would repeat the cells), and likewise for a single column.

Rules, in order (docs/open_science.md explains them for readers):

1. **Sensitive values** (cells and totals alike): a value with fewer than
   ``DISCLOSURE_THRESHOLD`` distinct persons behind it, whatever the measure counts
   (persons, stays, dispensings, boxes), or, for event and magnitude
   measures, a value dominated by few persons: the ``DOMINANCE_CONTRIBUTORS``
   largest contributions exceed ``DOMINANCE_SHARE`` of it.
2. **Zeros** are published: a true zero is about no one. They are never hidden,
   so a reader knows every hidden value is at least 1, and the audit says so.
3. **Complements**: each published line is an equation. Complements are added
   until every hidden value lies on a cycle of hidden values (no hidden value
   is a bridge of the rows × columns graph, so none is a point), then:
4. **Audit**: the reader's whole knowledge (every published value of this table
   and of the tables already published for the same population, hidden values
   ≥ 1, every finest cell a non-negative integer) is an integer program; for
   every hidden value of every one of these tables, its minimum and maximum are
   solved (``scipy.optimize.milp``). Each feasible interval must be at least
   ``PROTECTION_WIDTH`` wide; while one is narrower, the cheapest published
   value of the new table that shares its line (or, across tables, its
   persons) is hidden too. When nothing is left to hide, the table is refused.

Nothing tells a reader why a value is hidden (no primary/secondary label).
The tables are aggregates (at most a few thousand values), so this runs in
Python and HiGHS on the table, never on data rows.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from hdh_pipelines.core.disclosure import DISCLOSURE_THRESHOLD
from hdh_pipelines.open_science.errors import OpenDataRefused

if TYPE_CHECKING:
    # SciPy costs seconds to import and only the audit solves: imported there, not when the code
    # location loads.
    from scipy.sparse import csr_array

# Every hidden value's feasible interval is at least this wide: as wide as the range of small counts
# (1 to DISCLOSURE_THRESHOLD - 1), so a reader cannot even tell whether a hidden value is small.
PROTECTION_WIDTH = DISCLOSURE_THRESHOLD - 1
# (n, k) dominance rule for event and magnitude measures: the n largest contributions of distinct
# persons above k of the value make it sensitive (one child with most of a cell's stays).
DOMINANCE_CONTRIBUTORS = 2
DOMINANCE_SHARE = 0.85

TOTAL = "Total"
# Columns of a table to protect, beside the dimensions and measures; never published.
PERSONS = "persons"  # distinct persons behind the value
DOMINATED = "dominated"  # the dominance rule holds for one of the value's event or magnitude measures

Cell = tuple[int, int]


@dataclass(frozen=True)
class Layout:
    """How a table's labels aggregate the finest cells shared by tables of the same population.

    ``scope`` gives, for each finest dimension, the finest values the table
    covers; ``coarsening`` maps each breakdown dimension to its finest dimension
    and each finest value to the label it is published under (a finest value
    without a label, or with a label missing from the table, holds no one).
    A dimension absent from the breakdown is summed over its scope.
    """

    scope: dict[str, tuple[str, ...]]
    coarsening: dict[str, tuple[str, dict[str, str]]]


@dataclass(frozen=True)
class PublishedTable:
    """A table as a reader holds it: dimension labels (``Total`` in margins), a measure, NA where hidden."""

    table: pd.DataFrame
    dimensions: tuple[str, ...]
    measure: str
    layout: Layout


def identity_layout(table: pd.DataFrame, dimensions: Sequence[str]) -> Layout:
    """A table's own cells as the finest cells (no other table shares them)."""
    scope = {name: tuple(sorted(set(table[name].astype(str)) - {TOTAL})) for name in dimensions}
    return Layout(scope, {name: (name, {value: value for value in scope[name]}) for name in dimensions})


@dataclass(frozen=True)
class ProtectedTable:
    """The published table (long form) and figures about its protection.

    ``table`` has the dimension columns (``Total`` in a margin's summed
    dimensions), ``cell_type`` (cell, row_total, column_total, grand_total) and
    the measures (nullable integers, NA when hidden). ``sensitive`` (values
    hidden for their own sake) and ``narrowest_interval`` stay with the
    platform: publishing which hidden values are sensitive would narrow them.
    """

    table: pd.DataFrame
    dimensions: tuple[str, ...]
    threshold: int
    sensitive: int
    suppressed: int
    narrowest_interval: float

    @property
    def published_values(self) -> int:
        return len(self.table) - self.suppressed


def protect_counts(
    cells: pd.DataFrame,
    dimensions: Sequence[str],
    measure: str,
    companions: Sequence[str] = (),
    *,
    threshold: int = DISCLOSURE_THRESHOLD,
    layout: Layout | None = None,
    published: Sequence[PublishedTable] = (),
) -> ProtectedTable:
    """Protect ``cells`` (one row per combination of ``dimensions``) and add its totals.

    With a ``persons`` column, ``cells`` also holds the margins' rows (``Total``
    in the summed dimensions) with their own distinct persons and ``dominated``
    flag, as computed in SQL; without it, ``measure`` is taken to count distinct
    persons, disjoint across cells. Companion measures (e.g. boxes dispensed)
    are hidden with the measure. ``published`` are the tables already released
    for the same population, described with ``layout`` on shared finest cells;
    the audit protects their hidden values too.
    """
    if threshold < DISCLOSURE_THRESHOLD:
        raise OpenDataRefused(
            "invalid_threshold",
            f"The threshold can be raised, never set below {DISCLOSURE_THRESHOLD}.",
            field="threshold",
        )
    dimensions = list(dimensions)
    names = [measure, *companions]
    _check_columns(cells, dimensions, names)
    is_margin = (cells[dimensions].astype(str) == TOTAL).any(axis=1)
    interior = cells[~is_margin]
    _check_grid(interior, dimensions, names)
    column_dimension, row_dimensions = dimensions[-1], dimensions[:-1]
    row_keys = _row_keys(interior, row_dimensions)
    column_keys = list(dict.fromkeys(interior[column_dimension]))
    measures = {
        name: _matrix(interior, row_dimensions, column_dimension, row_keys, column_keys, name)
        for name in names
    }
    extended = measures[measure]
    persons, dominated = _sensitivity_inputs(cells, is_margin, dimensions, row_keys, column_keys, extended)
    present = _present_cells(*extended.shape)
    sensitive = {
        cell for cell in present if extended[cell] > 0 and (persons[cell] < threshold or dominated[cell])
    }

    def long(hidden: set[Cell]) -> pd.DataFrame:
        return _long_table(measures, row_dimensions, column_dimension, row_keys, column_keys, hidden)

    layout = layout or identity_layout(long(set()), dimensions)
    mine = PublishedTable(long(set()), tuple(dimensions), measure, layout)
    # A value already published elsewhere (a shared margin) is known: hiding it would protect nothing.
    graph = _LineGraph(present, fixed={present[row] for row in _already_published(mine, published)})
    suppressed = _secondary_suppression(extended, sensitive, graph)
    suppressed, narrowest = _audited(extended, graph, suppressed, long, dimensions, names, layout, published)
    return ProtectedTable(
        long(suppressed), tuple(dimensions), threshold, len(sensitive), len(suppressed), narrowest
    )


def _check_columns(cells: pd.DataFrame, dimensions: list[str], measures: list[str]) -> None:
    if not dimensions:
        raise OpenDataRefused("invalid_breakdown", "A table needs at least one breakdown dimension.")
    missing = [name for name in [*dimensions, *measures] if name not in cells.columns]
    if missing:
        raise OpenDataRefused("invalid_table", f"The table has no column {', '.join(missing)}.")


def _check_grid(cells: pd.DataFrame, dimensions: list[str], measures: list[str]) -> None:
    if cells.empty:
        raise OpenDataRefused("empty_table", "The table has no cell: nothing to publish.")
    if cells.duplicated(dimensions).any():
        raise OpenDataRefused("invalid_table", "The table holds the same combination of dimensions twice.")
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


def _positions(
    frame: pd.DataFrame, dimensions: list[str], row_keys: list[tuple], column_keys: list
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Matrix positions of ``frame``'s rows (margins included); rows matching no position are dropped."""
    row_index = {key: i for i, key in enumerate(row_keys)}
    if len(dimensions) > 1:  # a single dimension's grand total is its one row's total
        row_index[(TOTAL,) * (len(dimensions) - 1)] = len(row_keys)
    column_index = {key: j for j, key in enumerate(column_keys)}
    column_index[TOTAL] = len(column_keys)
    row_labels = (
        frame[dimensions[:-1]].itertuples(index=False, name=None)
        if len(dimensions) > 1
        else [()] * len(frame)
    )
    rows = [row_index.get(tuple(key), -1) for key in row_labels]
    columns = [column_index.get(key, -1) for key in frame[dimensions[-1]]]
    rows_array, columns_array = np.array(rows, dtype=np.int64), np.array(columns, dtype=np.int64)
    keep = (rows_array >= 0) & (columns_array >= 0)
    return rows_array[keep], columns_array[keep], keep


def _matrix(
    cells: pd.DataFrame,
    row_dimensions: list[str],
    column_dimension: str,
    row_keys: list[tuple],
    column_keys: list,
    measure: str,
) -> np.ndarray:
    """The (rows + 1) x (columns + 1) table: cells, row totals in the last column, column totals below."""
    rows, columns, keep = _positions(cells, [*row_dimensions, column_dimension], row_keys, column_keys)
    extended = np.zeros((len(row_keys) + 1, len(column_keys) + 1), dtype=np.int64)
    extended[rows, columns] = cells[measure].to_numpy(dtype=np.int64)[keep]
    extended[:-1, -1] = extended[:-1, :-1].sum(axis=1)
    extended[-1, :] = extended[:-1, :].sum(axis=0)
    return extended


def _sensitivity_inputs(
    cells: pd.DataFrame,
    is_margin: pd.Series,
    dimensions: list[str],
    row_keys: list[tuple],
    column_keys: list,
    extended: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct persons and dominance of every value, margins included."""
    if PERSONS not in cells.columns:
        # The measure counts distinct persons, each in one cell: a total's persons are its sum.
        return extended, np.zeros(extended.shape, dtype=bool)
    persons = np.zeros(extended.shape, dtype=np.int64)
    dominated = np.zeros(extended.shape, dtype=bool)
    rows, columns, keep = _positions(cells, dimensions, row_keys, column_keys)
    persons[rows, columns] = cells[PERSONS].to_numpy(dtype=np.int64)[keep]
    if DOMINATED in cells.columns:
        dominated[rows, columns] = cells[DOMINATED].to_numpy(dtype=bool)[keep]
    margin_positions = set(
        zip(rows[is_margin.to_numpy()[keep]], columns[is_margin.to_numpy()[keep]], strict=True)
    )
    needed = {cell for cell in _present_cells(*extended.shape) if _is_margin(cell, extended.shape)}
    if len(dimensions) > 1 and not needed <= margin_positions:
        raise OpenDataRefused(
            "invalid_table", "The table's margins lack their distinct-person counts: compute them in SQL."
        )
    return persons, dominated


def _is_margin(cell: Cell, shape: tuple[int, int]) -> bool:
    return cell[0] == shape[0] - 1 or cell[1] == shape[1] - 1


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

    def __init__(self, present: list[Cell], fixed: set[Cell] = frozenset()):
        self.fixed = fixed  # values never chosen as complements
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

    def lines_of(self, cell: Cell) -> list[list[Cell]]:
        return [line for line in self.lines if cell in line]

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


def _cost(extended: np.ndarray, cell: Cell) -> tuple:
    """Complements are chosen among interior cells before totals, smallest value first."""
    return (_is_margin(cell, extended.shape), int(extended[cell]), cell)


def _unprotectable() -> OpenDataRefused:
    return OpenDataRefused(
        "unprotectable_table",
        "No published value can be hidden to protect the table's sensitive values: request a coarser "
        "breakdown.",
    )


def _secondary_suppression(extended: np.ndarray, hidden: set[Cell], graph: _LineGraph) -> set[Cell]:
    """``hidden`` plus complements (never a zero), until no hidden value is a bridge of the line graph."""
    suppressed = set(hidden)
    while True:
        lone = next((line for line in graph.lines if sum(c in suppressed for c in line) == 1), None)
        if lone is not None:
            candidates = [cell for cell in lone if _open(extended, graph, suppressed, cell)]
            if not candidates:
                raise _unprotectable()
            suppressed.add(
                min(
                    candidates,
                    key=lambda c: (not graph.other_line_suppressed(c, lone, suppressed), *_cost(extended, c)),
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
            if _open(extended, graph, suppressed, cell) and _joins(graph.ends(cell), one_side, other_side)
        ]
        if not joining:
            raise _unprotectable()
        suppressed.add(min(joining, key=lambda c: _cost(extended, c)))


def _open(extended: np.ndarray, graph: _LineGraph, suppressed: set[Cell], cell: Cell) -> bool:
    """Whether a value may become a complement: published, not zero, not known from another table."""
    return cell not in suppressed and extended[cell] > 0 and cell not in graph.fixed


def _joins(ends: tuple[tuple, tuple], one_side: set[tuple], other_side: set[tuple]) -> bool:
    first, second = ends
    return (first in one_side and second in other_side) or (first in other_side and second in one_side)


def _audited(
    extended: np.ndarray,
    graph: _LineGraph,
    suppressed: set[Cell],
    long,
    dimensions: list[str],
    measures: list[str],
    layout: Layout,
    published: Sequence[PublishedTable],
) -> tuple[set[Cell], float]:
    """Hide more of the new table until every hidden value of every linked table is protected.

    Hiding a published value (≥ 1, never a zero) only relaxes the reader's
    constraints, so intervals only widen as values are hidden: a value checked
    once stays protected, and only new or failing values are checked again.
    """
    checked: set[tuple] = set()
    narrowest = math.inf
    while True:
        failing = None
        for name in measures:
            tables = [PublishedTable(long(suppressed), tuple(dimensions), name, layout)]
            tables += [table for table in published if table.measure == name]
            region: FeasibleRegion | None = None
            for index, table in enumerate(tables):
                for row in np.flatnonzero(table.table[name].isna().to_numpy()):
                    key = (name, index, graph.present[row] if index == 0 else int(row))
                    if key in checked:
                        continue
                    region = region or FeasibleRegion(tables)
                    low, high = region.interval(index, int(row))
                    if high - low >= PROTECTION_WIDTH:
                        checked.add(key)
                        narrowest = min(narrowest, high - low)
                        continue
                    failing = (region, index, int(row))
                    break
                if failing:
                    break
            if failing:
                break
        if failing is None:
            return suppressed, narrowest
        region, index, row = failing
        candidate = _widening_complement(extended, graph, suppressed, region, index, row)
        if candidate is None:
            if index == 0 and not published:
                raise _unprotectable()
            raise OpenDataRefused(
                "conflicts_with_published",
                "Together with the tables already published for this population, this table would narrow "
                "a hidden value: request a breakdown already published, or a coarser one.",
            )
        suppressed = _secondary_suppression(extended, suppressed | {candidate}, graph)


def _widening_complement(
    extended: np.ndarray,
    graph: _LineGraph,
    suppressed: set[Cell],
    region: FeasibleRegion,
    index: int,
    row: int,
) -> Cell | None:
    """The cheapest published value of the new table to hide for a too narrow hidden value: one of its
    lines when it is in the new table, else (or when those are exhausted) one sharing its finest cells."""

    def open_cell(cell: Cell) -> bool:
        return _open(extended, graph, suppressed, cell)

    if index == 0:
        cell = graph.present[row]
        same_line = [c for line in graph.lines_of(cell) for c in line if open_cell(c)]
        if same_line:
            return min(same_line, key=lambda c: _cost(extended, c))
    sharing = [graph.present[r] for r in region.sharing(index, row)]
    sharing = [c for c in sharing if open_cell(c)]
    return min(sharing, key=lambda c: _cost(extended, c)) if sharing else None


class FeasibleRegion:
    """What a reader knows, as an integer program over the finest cells of a population.

    Variables: the finest cells (product of the tables' scopes). Each published
    value is an equation (the sum of its finest cells); each hidden value is at
    least 1 (zeros are always published); finest cells are non-negative
    integers. Finest cells that a published zero, or a table's missing label,
    leaves empty are fixed to 0 and dropped.
    """

    def __init__(self, tables: Sequence[PublishedTable]):
        from scipy.optimize import Bounds, LinearConstraint
        from scipy.sparse import csr_array, vstack

        variables = _finest_cells(tables)
        self.tables = tables
        incidences: list[tuple[np.ndarray, np.ndarray]] = []
        empty = np.zeros(len(variables), dtype=bool)
        for table in tables:
            rows, columns, unlabelled = _incidence(variables, table)
            values = table.table[table.measure].to_numpy(dtype="float64", na_value=np.nan)
            empty |= unlabelled
            zero_rows = np.isin(rows, np.flatnonzero(values == 0))
            empty[columns[zero_rows]] = True
            incidences.append((rows, columns))
        kept = np.flatnonzero(~empty)
        renumber = np.full(len(variables), -1, dtype=np.int64)
        renumber[kept] = np.arange(len(kept))
        self.size = len(kept)
        self.matrices: list[csr_array] = []
        equalities, lower_bounds = [], []
        for table, (rows, columns) in zip(tables, incidences, strict=True):
            keep = renumber[columns] >= 0
            matrix = csr_array(
                (np.ones(int(keep.sum())), (rows[keep], renumber[columns[keep]])),
                shape=(len(table.table), self.size),
            )
            self.matrices.append(matrix)
            values = table.table[table.measure].to_numpy(dtype="float64", na_value=np.nan)
            known = np.flatnonzero(values > 0)
            hidden = np.flatnonzero(np.isnan(values))
            if known.size:
                equalities.append((matrix[known], values[known]))
            if hidden.size:
                lower_bounds.append(matrix[hidden])
        # One constraint block: equations (low = high = value), then hidden values (at least 1).
        blocks = [matrix for matrix, _ in equalities] + lower_bounds
        lows = [value for _, value in equalities] + [np.ones(matrix.shape[0]) for matrix in lower_bounds]
        highs = [value for _, value in equalities] + [np.full(m.shape[0], np.inf) for m in lower_bounds]
        self.constraints = (
            [LinearConstraint(vstack(blocks).tocsr(), np.concatenate(lows), np.concatenate(highs))]
            if blocks
            else []
        )
        self.integrality = np.ones(self.size)
        self.bounds = Bounds(0, np.inf)
        # A finest cell in no published equation can be as large as wanted.
        self.bounded = np.zeros(self.size, dtype=bool)
        for matrix, _ in equalities:
            self.bounded[matrix.indices] = True

    def interval(self, table: int, row: int) -> tuple[float, float]:
        """Smallest and largest integer value of one hidden value consistent with everything published."""
        objective = self.matrices[table][[row]].toarray().ravel()
        low = self._solve(objective)
        if not self.bounded[objective > 0].all():
            return low, math.inf
        return low, -self._solve(-objective)

    def _solve(self, objective: np.ndarray) -> int:
        from scipy.optimize import milp

        result = milp(
            objective, integrality=self.integrality, bounds=self.bounds, constraints=self.constraints
        )
        if result.status == 2:  # infeasible: the logged tables contradict each other or this one
            raise OpenDataRefused(
                "inconsistent_history",
                "The tables already published for this population contradict the current data: review "
                "the request log before publishing more.",
            )
        if result.status != 0:
            raise RuntimeError(f"the disclosure audit's solver stopped with status {result.status}")
        return round(result.fun)

    def sharing(self, table: int, row: int) -> list[int]:
        """Rows of the first table that share a finest cell with ``row`` of ``table``, published or not."""
        cells = self.matrices[table][[row]].indices
        if cells.size == 0:
            return []
        return sorted(set(self.matrices[0][:, cells].tocoo().row.tolist()))


def _finest_cells(tables: Sequence[PublishedTable]) -> pd.DataFrame:
    dimensions = list(tables[0].layout.scope)
    if any(list(table.layout.scope) != dimensions for table in tables):
        raise ValueError("linked tables must share their finest dimensions")
    grids = [pd.MultiIndex.from_product([t.layout.scope[d] for d in dimensions]) for t in tables]
    finest = grids[0]
    for grid in grids[1:]:
        finest = finest.union(grid)
    return finest.to_frame(index=False, name=dimensions)


def _already_published(table: PublishedTable, published: Sequence[PublishedTable]) -> list[int]:
    """Rows of ``table`` that sum exactly the same persons as a value published in ``published``
    (the same finest cells, leaving out those some table shows to be empty)."""
    if not published:
        return []
    variables = _finest_cells([table, *published])
    incidences = [_incidence(variables, other) for other in [table, *published]]
    empty = np.any([unlabelled for _, _, unlabelled in incidences], axis=0)

    def cells_by_row(rows: np.ndarray, columns: np.ndarray) -> dict[int, frozenset]:
        keep = ~empty[columns]
        return _cells_by_row(rows[keep], columns[keep])

    known: set[frozenset] = set()
    for other, (rows, columns, _) in zip(published, incidences[1:], strict=True):
        shown = set(np.flatnonzero(other.table[other.measure].notna().to_numpy()).tolist())
        known |= {cells for row, cells in cells_by_row(rows, columns).items() if row in shown}
    rows, columns, _ = incidences[0]
    return sorted(row for row, cells in cells_by_row(rows, columns).items() if cells in known)


def _cells_by_row(rows: np.ndarray, columns: np.ndarray) -> dict[int, frozenset]:
    grouped: dict[int, set] = defaultdict(set)
    for row, column in zip(rows.tolist(), columns.tolist(), strict=True):
        grouped[row].add(column)
    return {row: frozenset(cells) for row, cells in grouped.items()}


def _incidence(variables: pd.DataFrame, table: PublishedTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, finest cell) pairs of a table's values, and the finest cells in its scope it leaves empty.

    Labels become integer codes (0 for ``Total``, -1 for none) and each value's position a mixed-radix
    number, so matching finest cells to values is array indexing."""
    layout, dimensions = table.layout, list(table.dimensions)
    in_scope = np.ones(len(variables), dtype=bool)
    for name, values in layout.scope.items():
        in_scope &= variables[name].isin(values).to_numpy()
    published = table.table[dimensions].astype(str)
    codes_of = {
        name: {label: code for code, label in enumerate([TOTAL, *sorted(set(published[name]) - {TOTAL})])}
        for name in dimensions
    }
    radices = [len(codes_of[name]) for name in dimensions]
    strides = np.cumprod([1, *radices[:-1]])
    row_at = np.full(int(np.prod(radices)), -1, dtype=np.int64)
    row_at[
        sum(
            published[name].map(codes_of[name]).to_numpy() * stride
            for name, stride in zip(dimensions, strides, strict=True)
        )
    ] = np.arange(len(published))
    finest_codes = {
        name: variables[layout.coarsening[name][0]]
        .map(layout.coarsening[name][1])
        .map(codes_of[name])
        .fillna(-1)
        .to_numpy(dtype=np.int64)
        for name in dimensions
    }
    unlabelled = in_scope & np.any([finest_codes[name] < 0 for name in dimensions], axis=0)
    labelled = in_scope & ~unlabelled
    patterns = {(), (dimensions[-1],), tuple(dimensions[:-1]), tuple(dimensions)}
    rows, columns = [], []
    for pattern in patterns:
        position = sum(
            (0 if name in pattern else finest_codes[name]) * stride
            for name, stride in zip(dimensions, strides, strict=True)
        )
        matched = np.where(labelled, row_at[np.where(labelled, position, 0)], -1)
        found = matched >= 0
        rows.append(matched[found])
        columns.append(np.flatnonzero(found))
    return np.concatenate(rows), np.concatenate(columns), unlabelled


def _long_table(
    measures: dict[str, np.ndarray],
    row_dimensions: list[str],
    column_dimension: str,
    row_keys: list[tuple],
    column_keys: list,
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
        records.append(record)
    table = pd.DataFrame.from_records(records)
    for name in measures:
        table[name] = table[name].astype("Int64")
    for name in [*row_dimensions, column_dimension]:
        table[name] = table[name].astype(str)
    return table

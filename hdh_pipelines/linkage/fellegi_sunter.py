"""Fellegi–Sunter model: u from random pairs, m and the match share by EM over blocked comparison vectors.

Everything here works on *counts per comparison vector* (a few hundred
numbers at most, whatever the data size): Spark counts, this module fits.

Why u is fixed and blocking is accounted for explicitly: blocking only
produces pairs that agree exactly on the fields of some rule, so among
blocked pairs non-matches agree far more often than random pairs do.
Because "is blocked" is a function of the comparison vector γ, the
distribution of γ among blocked non-matches is u(γ) / U_B, where U_B sums
u over every vector blocking can produce; it is computed exactly by
enumeration. The match side is not renormalised: blocking rules are chosen
so that nearly every true match is blocked (m(B) ≈ 1). EM then estimates
the per-field m probabilities and the share of matches among blocked pairs,
under the usual conditional-independence assumption.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hdh_pipelines.linkage.comparison import BLOCKING_RULES, COMPARISONS, pattern_levels

_FLOOR = 1e-6


def _all_levels() -> np.ndarray:
    """Every possible comparison vector, row i being pattern id i."""
    count = int(np.prod([c.level_count for c in COMPARISONS]))
    return np.array([pattern_levels(i) for i in range(count)], dtype=np.int64)


_LEVELS = _all_levels()


def blocked_mask(levels: np.ndarray = _LEVELS) -> np.ndarray:
    """Which vectors the blocking rules can produce."""
    index = {c.name: k for k, c in enumerate(COMPARISONS)}
    mask = np.zeros(len(levels), dtype=bool)
    for rule in BLOCKING_RULES:
        rule_mask = np.ones(len(levels), dtype=bool)
        for name, allowed in rule.levels.items():
            rule_mask &= np.isin(levels[:, index[name]], allowed)
        mask |= rule_mask
    return mask


def _counts_vector(pattern_counts: Mapping[int, int]) -> np.ndarray:
    counts = np.zeros(len(_LEVELS), dtype=np.float64)
    for pattern, count in pattern_counts.items():
        counts[pattern] += count
    return counts


def level_frequencies(pattern_counts: Mapping[int, int]) -> list[np.ndarray]:
    """Per-field share of each level among the counted pairs (floored so that no level is impossible)."""
    counts = _counts_vector(pattern_counts)
    total = counts.sum()
    if total == 0:
        raise ValueError("No pairs to estimate level frequencies from.")
    frequencies = []
    for k, comparison in enumerate(COMPARISONS):
        per_level = np.bincount(_LEVELS[:, k], weights=counts, minlength=comparison.level_count) / total
        per_level = np.maximum(per_level, _FLOOR)
        frequencies.append(per_level / per_level.sum())
    return frequencies


def _product(per_field: Sequence[np.ndarray]) -> np.ndarray:
    """Probability of every vector under conditional independence."""
    result = np.ones(len(_LEVELS))
    for k, probabilities in enumerate(per_field):
        result *= probabilities[_LEVELS[:, k]]
    return result


@dataclass(frozen=True)
class FellegiSunterModel:
    m: tuple[np.ndarray, ...]
    u: tuple[np.ndarray, ...]
    blocked_match_share: float
    blocked_u_mass: float
    iterations: int
    converged: bool

    def match_weights(self) -> np.ndarray:
        """log2 Bayes factor m(γ)/u(γ) of every vector (indexed by pattern id)."""
        return match_weights(self.m, self.u)

    @property
    def prior_bits(self) -> float:
        """log2 prior odds of a blocked pair: P(match | γ) = 1 / (1 + 2^-(prior_bits + weight(γ)))."""
        share = self.blocked_match_share
        return float(np.log2(share / (1 - share)) + np.log2(self.blocked_u_mass))

    def match_probabilities(self) -> np.ndarray:
        """P(match | γ) for a blocked pair with vector γ (indexed by pattern id; 0 outside blocking)."""
        m = _product(self.m)
        u_blocked = _product(self.u) / self.blocked_u_mass
        share = self.blocked_match_share
        denominator = share * m + (1 - share) * u_blocked
        probabilities = np.divide(share * m, denominator, out=np.zeros_like(m), where=denominator > 0)
        return np.where(blocked_mask(), probabilities, 0.0)

    def parameters(self) -> dict[str, dict[str, dict[str, float]]]:
        """m and u per field and level, rounded, for metadata and the docs."""
        return {
            c.name: {
                label: {"m": round(float(self.m[k][i]), 6), "u": round(float(self.u[k][i]), 6)}
                for i, label in enumerate(c.labels)
            }
            for k, c in enumerate(COMPARISONS)
        }


def estimate(
    blocked_counts: Mapping[int, int],
    u: Sequence[np.ndarray],
    known_match_counts: Mapping[int, int] | None = None,
    *,
    max_iterations: int = 500,
    tolerance: float = 1e-7,
) -> FellegiSunterModel:
    """Fit m and the blocked match share by EM, with u fixed (see the module's docstring).

    ``known_match_counts`` are vectors of pairs known to match (the verified deterministic links):
    semi-supervised EM counts them as matches with certainty in every M-step. Without them, EM alone
    on blocked pairs can settle on a wrong split (a "match" class that is merely "same birth date
    and sex", the first blocking rule); with them m stays anchored on what matches look like.
    """
    counts = _counts_vector(blocked_counts)
    known = _counts_vector(known_match_counts or {})
    mask = blocked_mask()
    if counts[~mask].any():
        raise ValueError("A counted vector cannot come out of the blocking rules: rules and data disagree.")
    total = counts.sum()
    if total == 0:
        raise ValueError("No blocked pairs: nothing to fit.")
    u_blocked_mass = float(_product(u)[mask].sum())
    u_blocked = np.where(mask, _product(u) / u_blocked_mass, 0.0)
    m = initial_m(known_match_counts or {})
    share = 0.1
    iterations, converged = 0, False
    while iterations < max_iterations and not converged:
        iterations += 1
        m_vector = _product(m)
        denominator = share * m_vector + (1 - share) * u_blocked
        posterior = np.divide(
            share * m_vector, denominator, out=np.zeros_like(m_vector), where=denominator > 0
        )
        expected_matches = counts * posterior
        new_share = float(expected_matches.sum() / total)
        all_matches = expected_matches + known
        new_m = []
        for k, comparison in enumerate(COMPARISONS):
            per_level = np.bincount(_LEVELS[:, k], weights=all_matches, minlength=comparison.level_count)
            per_level = np.maximum(per_level / max(all_matches.sum(), _FLOOR), _FLOOR)
            new_m.append(per_level / per_level.sum())
        change = max(
            abs(new_share - share), *(float(np.abs(a - b).max()) for a, b in zip(new_m, m, strict=True))
        )
        converged = change < tolerance
        m, share = new_m, min(max(new_share, _FLOOR), 1 - _FLOOR)
    return FellegiSunterModel(
        m=tuple(m),
        u=tuple(np.asarray(p) for p in u),
        blocked_match_share=share,
        blocked_u_mass=u_blocked_mass,
        iterations=iterations,
        converged=converged,
    )


def initial_m(known_match_counts: Mapping[int, int]) -> list[np.ndarray]:
    """m from pairs known to match, or, with none, the assumption that matches mostly agree."""
    if sum(known_match_counts.values()):
        return level_frequencies(known_match_counts)
    starts = []
    for comparison in COMPARISONS:
        start = np.full(comparison.level_count, 0.05)
        start[-1] = 0.9
        starts.append(start / start.sum())
    return starts


def match_weights(m: Sequence[np.ndarray], u: Sequence[np.ndarray]) -> np.ndarray:
    """log2 Bayes factor m(γ)/u(γ) of every vector (indexed by pattern id)."""
    return np.log2(_product(m)) - np.log2(_product(u))

"""Where the spread of a score comes from: training seed, shot draw and test examples.

One run of a method on a target at k shots gives a score that would move with another
training seed, another draw of the k examples and another test set drawn like this one. Per
(method, target, shots) column the report splits the variance of one run's score into

* **seed**: what changes with the training seed, with the shot draw held fixed (model
  initialisation, data order, the source model);
* **draw**: what changes with the k examples drawn, with the seed held fixed (only when the
  spec sets ``shot_draws``; otherwise the seed draws the shots and its part holds both);
* **test examples**: how much the score would move on another test set of the same size,
  shared by every run (the examples' part of :mod:`xleval.analysis.stats`).

The cells of a column form a nested layout — D draws within each of S seeds — and the
per-example values add the test examples crossed with every cell:

    z[s, d] = μ + α_s + γ_sd,    Var(one run) = σ²_seed + σ²_draw + σ²_examples

estimated without bias from mean squares (the seed's part MS_seeds − MS_draws over D,
truncated at zero). Each interval is the generalised (fiducial) interval of its component
(Weerahandi 1993): the component written in its mean squares' chi-square pivots, integrated
on a fixed grid of their quantiles — exact for a component that is one mean square (the
draw's; the seed's without draws), close to nominal otherwise; the coverage is measured by
``benchmarks/variance_calibration.py``. Nothing is random: the same cells give the same
numbers bit for bit.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from xleval.analysis.stats import _mean_squares

#: Quantile points per chi-square pivot (the grid of two pivots has this many squared).
PIVOT_POINTS = 128


@functools.lru_cache(maxsize=256)
def _pivot(df: float) -> np.ndarray:
    """W / df at the midpoint quantiles of chi-square(df): equal-mass points."""
    from scipy import special

    u = (np.arange(PIVOT_POINTS) + 0.5) / PIVOT_POINTS
    if not math.isfinite(df):
        return np.ones(PIVOT_POINTS)
    return special.chdtri(df, u) / df


def difference_interval(
    first: float, first_df: float, second: float, second_df: float, confidence: float
) -> list[float]:
    """Generalised interval of max(first − second, 0), each a mean square on its degrees of
    freedom (pivot: ms · df / W, W ~ chi-square(df)); ``second`` = 0 gives the exact
    chi-square interval of ``first``."""
    from scipy import special

    low_q, high_q = (1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0
    if not second > 0.0:  # one mean square: the chi-square interval, in closed form
        if not math.isfinite(first_df):
            return [first, first]
        return [
            first * first_df / float(special.chdtri(first_df, low_q)),
            first * first_df / float(special.chdtri(first_df, high_q)),
        ]
    values = (first / _pivot(first_df)[:, None] - second / _pivot(second_df)[None, :]).ravel()
    low, high = np.quantile(np.maximum(values, 0.0), [low_q, high_q])
    return [float(low), float(high)]


def _component(variance: float, ci: list[float] | None) -> dict[str, Any]:
    return {
        "variance": variance,
        "sd": math.sqrt(variance),
        "ci": None if ci is None else [math.sqrt(ci[0]), math.sqrt(ci[1])],
    }


def nested_mean_squares(z: np.ndarray) -> tuple[float, float, float, float]:
    """(MS_seeds, df, MS_draws, df) of S seeds × D draws (MS_draws: within seeds; NaN with
    one draw)."""
    seeds, draws = z.shape
    seed_means = z.mean(axis=1)
    ms_seeds = draws * float(np.var(seed_means, ddof=1)) if seeds > 1 else math.nan
    if draws < 2:
        return ms_seeds, seeds - 1.0, math.nan, 0.0
    within = z - seed_means[:, None]
    ms_draws = float(np.sum(within * within)) / (seeds * (draws - 1))
    return ms_seeds, seeds - 1.0, ms_draws, seeds * (draws - 1.0)


def components(
    z: np.ndarray,
    table: np.ndarray | None,
    confidence: float,
    *,
    separated: bool,
) -> dict[str, Any]:
    """The variance components of one run's score from a column's cells.

    ``z`` [seeds, draws]: each cell's score; ``table`` [seeds × draws, examples]: their
    per-example values (rows in ``z.ravel()`` order), None without stored predictions.
    ``separated``: the draws are the spec's ``shot_draws`` (else one draw per seed, made by
    the seed: the seed's part holds the draw's).
    """
    seeds, draws = z.shape
    ms_seeds, seeds_df, ms_draws, draws_df = nested_mean_squares(z)
    out: dict[str, Any] = {"seed": None, "draw": None, "examples": None}
    if seeds >= 2:
        if draws >= 2:
            seed_var = max(0.0, (ms_seeds - ms_draws) / draws)
            ci = difference_interval(
                ms_seeds / draws, seeds_df, ms_draws / draws, draws_df, confidence
            )
        else:
            seed_var = ms_seeds
            ci = difference_interval(ms_seeds, seeds_df, 0.0, 0.0, confidence)
        out["seed"] = _component(seed_var, ci)
    if draws >= 2:
        out["draw"] = _component(
            ms_draws, difference_interval(ms_draws, draws_df, 0.0, 0.0, confidence)
        )
    if table is not None and table.shape[1] >= 2 and table.shape[0] >= 2:
        rows = table.shape[0]
        ms_examples, ms_residual, n = _mean_squares(table)  # the two-way layout's, as tests use
        scale = 1.0 / (rows * n)
        out["examples"] = _component(
            max(0.0, (ms_examples - ms_residual) * scale),
            difference_interval(
                ms_examples * scale,
                n - 1.0,
                ms_residual * scale,
                (rows - 1.0) * (n - 1.0),
                confidence,
            ),
        )
    parts = [c["variance"] for c in out.values() if c is not None]
    total = math.fsum(parts) if parts else None
    shares = {
        name: (c["variance"] / total if total else 0.0) if c is not None else None
        for name, c in out.items()
    }
    return {
        "components": out,
        "total_sd": None if total is None else math.sqrt(total),
        "shares": shares,
        "seeds": seeds,
        "draws": draws if separated else None,
    }


def balanced(
    cells: Sequence[dict[str, Any]],
) -> tuple[list[int], list[int | None], list[list[dict[str, Any]]]] | None:
    """A column's successful cells as seeds × draws (seeds with every draw only), or None
    when no seed has all of them."""
    draws = sorted({c.get("draw") for c in cells}, key=lambda d: -1 if d is None else d)
    by_seed: dict[int, dict[int | None, dict[str, Any]]] = {}
    for c in cells:
        by_seed.setdefault(c["seed"], {})[c.get("draw")] = c
    seeds = sorted(s for s, row in by_seed.items() if all(d in row for d in draws))
    if not seeds:
        return None
    return seeds, draws, [[by_seed[s][d] for d in draws] for s in seeds]

"""Statistics for reports: estimates that generalise over training seeds and test examples,
paired tests between methods, multiple-testing correction and ranks.

A score measured on k target shots moves with two things: which training seed (the shots it
drew, the initialisation) and which test examples. A claim such as "transfer beats
target-only" is useful only if another set of seeds, on another test set drawn the same way,
would repeat it. :func:`seeds_and_examples` estimates the variance of a mean over seeds with
both sources in it, as a two-way crossed random-effects design (seeds × test examples):

    y[s, i] = μ + α_s + β_i + ε_si

(y: a per-example value, e.g. correct − correct for a difference of accuracies). The mean
over S seeds and n examples has variance σ²_α/S + σ²_β/n + σ²_ε/(S n), estimated without
bias from the two-way ANOVA mean squares: a seeds' part on S − 1 degrees of freedom and an
examples' part on n − 1. Tests and intervals integrate over the seeds' part the way Behrens
and Fisher did for two unequally known variances (:func:`fiducial_p_values`): exact in both
limits (only seeds: the paired t over seeds; only examples: the t over examples) and never
above alpha in between, at any alpha, where Satterthwaite's approximate degrees of freedom
are far too liberal with three seeds. ``benchmarks/stats_calibration.py`` measures the
false-positive rate, power and coverage by simulation (see docs/statistics.md).

Metrics that are not a mean over examples (macro-F1, ECE) enter through jackknife
pseudo-values (:meth:`MetricForm.pseudo_values`), which are the per-example values for a
mean and behave like them otherwise. Everything here is deterministic (no resampling): the
same cells give the same report numbers bit for bit. NumPy, and SciPy's special functions
for the t and chi-square distributions.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard, cast

import numpy as np

from xleval.api.metric_form import MetricForm, jackknife, mean_of


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t distribution with ``df`` (> 0, not necessarily whole) degrees of
    freedom."""
    from scipy import special

    return float(special.stdtr(df, t))


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: float) -> float:
    """Inverse of :func:`t_cdf`; cached, as a report asks for the same few (p, df) often."""
    from scipy import special

    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    return float(special.stdtrit(df, p))


def _finite(values: Any) -> bool:
    return bool(np.all(np.isfinite(np.asarray(values, dtype=np.float64))))


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean, sample std and the Student-t interval of the mean over ``values`` (e.g. seeds).

    The interval generalises to new seeds on the same test examples. With a single value it
    is undefined (``ci`` None, std 0). A non-finite value makes mean, std and interval NaN.
    """
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarise")
    if not _finite(values):
        nan = float("nan")
        return {"mean": nan, "std": nan, "ci": None if n == 1 else [nan, nan], "n": n}
    mean = math.fsum(values) / n
    if n == 1:
        return {"mean": mean, "std": 0.0, "ci": None, "n": 1}
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "ci": [mean - half, mean + half], "n": n}


def t_p_value(t: float, df: float) -> float:
    """Two-sided p-value of a t statistic (NaN in, NaN out)."""
    if math.isnan(df) or df <= 0 or math.isnan(t):
        return float("nan")
    if math.isinf(t):
        return 0.0
    return min(1.0, 2.0 * (1.0 - t_cdf(abs(t), df)))


def paired_t_test(differences: Sequence[float]) -> float | None:
    """Two-sided p-value of Student's paired t-test that the mean difference is zero.

    Over seeds: each seed trains both methods on the same shots, so their per-seed
    differences are paired; the p-value generalises to new seeds on these test examples.
    None with fewer than two values or when t is undefined (every difference the same
    non-zero value: no spread to test against); 1.0 when every difference is zero; NaN when
    a difference is not finite.
    """
    n = len(differences)
    if n < 2:
        return None
    if not _finite(differences):
        return float("nan")
    mean = math.fsum(differences) / n
    std = math.sqrt(math.fsum((d - mean) ** 2 for d in differences) / (n - 1))
    if std == 0.0:
        return 1.0 if mean == 0.0 else None
    return t_p_value(mean / (std / math.sqrt(n)), n - 1)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the order given.

    Step-down: the i-th smallest p (0-based) is multiplied by m − i, and adjusted values are
    made monotone, so ``adjusted <= alpha`` rejects exactly the hypotheses Holm's procedure
    rejects at family-wise error rate ``alpha`` — under any dependence between the tests,
    which matters here: comparisons share methods, seeds and test examples. A NaN p-value is
    no test: it stays NaN and does not count in m.
    """
    finite = [i for i, p in enumerate(p_values) if not math.isnan(p)]
    m = len(finite)
    order = sorted(finite, key=lambda i: p_values[i])
    adjusted = [float("nan")] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def average_ranks(values: Sequence[float], higher_is_better: bool = True) -> list[float]:
    """Rank 1 for the best value; tied values share the mean of their ranks (Friedman-style).
    A NaN value gets a NaN rank and takes no rank from the others."""
    ranked = [i for i, v in enumerate(values) if not math.isnan(v)]
    keyed = sorted(ranked, key=lambda i: -values[i] if higher_is_better else values[i])
    ranks = [float("nan")] * len(values)
    start = 0
    while start < len(keyed):
        stop = start
        while stop + 1 < len(keyed) and values[keyed[stop + 1]] == values[keyed[start]]:
            stop += 1
        for position in range(start, stop + 1):
            ranks[keyed[position]] = (start + stop) / 2.0 + 1.0
        start = stop + 1
    return ranks


# -- the variance of a mean over seeds and test examples ---------------------------------

#: Degrees of freedom of an estimate with no uncertainty (the normal distribution).
MAX_DF = math.inf
#: Integration points over the seeds' variance and over the examples' mean square (see
#: :func:`fiducial_p_values`): accurate to about 1e-7 in absolute terms (more points where
#: seeds or test examples are so few that their chi-square spreads far on a log scale).
SEEDS_POINTS = 96
EXAMPLES_POINTS = 48
#: Each grid covers its chi-square distribution but for this mass in each tail.
GRID_TAIL = 1e-14
#: The smallest significance level a p-value is resolved to (1 - confidence may not be
#: smaller: the specs' schema caps confidence at 0.9999).
MIN_ALPHA = 1e-9
#: Below this many test examples the examples' part rests on too few degrees of freedom for
#: p-values far below 0.01 to be trusted (benchmarks/README.md, normal theory).
FEW_EXAMPLES = 10


@dataclass(frozen=True)
class SeedsAndExamples:
    """A mean over seeds of a quantity measured on test examples, and its uncertainty over
    new seeds *and* new test examples drawn like these.

    In the two-way layout y[s, i] = μ + α_s + β_i + ε_si its variance is
    (E_seeds + E_examples − E_residual) / (S n) in expected mean squares. ``seeds_part`` =
    var(per-seed values) / S estimates E_seeds / (S n) from ``seeds_df`` = S − 1 degrees of
    freedom (training randomness plus the test noise that differs between seeds).
    ``examples_part`` = ``examples_ms`` − ``residual`` estimates what every seed shares, how
    the test examples themselves move the quantity: ``examples_ms`` = MS_examples / (S n)
    on ``examples_df`` = n − 1 degrees of freedom (Satterthwaite's over several test sets),
    ``residual`` = MS_residual / (S n) on (S − 1)(n − 1), taken as known; test sets whose
    examples' part comes out negative contribute nothing. ``conditional`` is the variance
    over new test examples for these trained models only (the seeds held fixed).
    ``reason`` says why nothing can be claimed (one seed, a non-finite value, fewer than
    two test examples, ties that leave no variance to test against); then ``interval`` and
    ``p_value`` are None.

    Tests and intervals treat the two estimated parts as Behrens and Fisher treated two
    variances (:func:`fiducial_p_values`): exact in both limits (only the seeds' part: the
    paired t over seeds; only the examples' part: the t over examples) and never above
    alpha in between, at any level, where Satterthwaite's approximate degrees of freedom
    reject up to 16 times too often at alpha = 0.001 with three seeds.
    """

    mean: float
    n_seeds: int
    n_examples: int
    seeds_part: float
    seeds_df: float
    examples_ms: float
    examples_df: float
    residual: float
    conditional: float
    conditional_df: float
    reason: str | None = None

    @property
    def examples_part(self) -> float:
        return max(0.0, self.examples_ms - self.residual)

    @property
    def variance(self) -> float:
        return self.seeds_part + self.examples_part

    @property
    def testable(self) -> bool:
        return self.reason is None

    def p_value(self) -> float | None:
        """Two-sided p-value that the quantity's true value (over seeds and examples) is 0.

        With no variation at all (the same per-example value on every seed and example)
        there is nothing to test against: 1.0 if the value is 0, else None."""
        return p_values([self])[0]

    def interval(self, confidence: float) -> list[float] | None:
        """The interval of the test above: the values it would not reject at 1 − confidence."""
        return intervals([self], confidence)[0]

    def conditional_interval(self, confidence: float) -> list[float] | None:
        """Student-t interval over new test examples, for these trained models only."""
        if math.isnan(self.conditional) or not math.isfinite(self.mean):
            return None
        if self.conditional == 0.0:
            return [self.mean, self.mean]
        quantile = t_quantile(0.5 + confidence / 2.0, self.conditional_df)
        half = quantile * math.sqrt(self.conditional)
        return [self.mean - half, self.mean + half]

    def conditional_p_value(self) -> float | None:
        """Two-sided p-value over new test examples, for these trained models only."""
        if math.isnan(self.conditional) or not math.isfinite(self.mean):
            return None
        if self.conditional == 0.0:
            return 1.0 if self.mean == 0.0 else None
        return t_p_value(self.mean / math.sqrt(self.conditional), self.conditional_df)


def _integrate(
    estimates: Sequence[SeedsAndExamples | None],
    function: Callable[..., np.ndarray],
    first: Callable[[list[SeedsAndExamples]], Any],
) -> dict[int, float]:
    """index -> ``function(first(batch), seeds_parts, seeds_df, examples_ms, examples_dfs,
    residuals)``'s value (:func:`fiducial_p_values` or :func:`fiducial_half_widths`) for
    every testable estimate with some variance. Estimates are integrated in batches of what
    fixes their grids (the seeds' degrees of freedom; whether the examples' are few), so a
    batch gives each estimate exactly the number it gets alone."""
    groups: dict[tuple[float, bool], list[int]] = {}
    for i, e in enumerate(estimates):
        if e is not None and e.testable and e.variance != 0.0:
            groups.setdefault((e.seeds_df, not e.examples_df >= 8), []).append(i)
    out: dict[int, float] = {}
    for (seeds_df, _), index in groups.items():
        batch = [cast(SeedsAndExamples, estimates[i]) for i in index]
        values = function(
            first(batch),
            [e.seeds_part for e in batch],
            seeds_df,
            [e.examples_ms for e in batch],
            [e.examples_df for e in batch],
            [e.residual for e in batch],
        )
        out.update(zip(index, values.tolist(), strict=True))
    return out


def _no_variance(estimate: SeedsAndExamples | None) -> TypeGuard[SeedsAndExamples]:
    return estimate is not None and estimate.testable and estimate.variance == 0.0


def p_values(estimates: Sequence[SeedsAndExamples | None]) -> list[float | None]:
    """:meth:`SeedsAndExamples.p_value` of many estimates (None stays None), integrated
    together: one vectorised pass per batch instead of one per estimate, same numbers."""
    out: list[float | None] = [
        (1.0 if e.mean == 0.0 else None) if _no_variance(e) else None for e in estimates
    ]
    found = _integrate(estimates, fiducial_p_values, lambda batch: [e.mean for e in batch])
    for i, p in found.items():
        out[i] = p
    return out


def intervals(
    estimates: Sequence[SeedsAndExamples | None], confidence: float
) -> list[list[float] | None]:
    """:meth:`SeedsAndExamples.interval` of many estimates (None stays None), their root
    searches vectorised together: same numbers, a fraction of the time for a report's
    thousands of intervals (benchmarks/report_scaling.py)."""
    # no variance: a zero half-width (mean ± 0.0: -0.0 gives [-0.0, 0.0], as it always did)
    out: list[list[float] | None] = [
        [e.mean - 0.0, e.mean + 0.0] if _no_variance(e) else None for e in estimates
    ]
    found = _integrate(estimates, fiducial_half_widths, lambda _: 1.0 - confidence)
    for i, half in found.items():
        mean = cast(SeedsAndExamples, estimates[i]).mean
        out[i] = [mean - half, mean + half]
    return out


@functools.lru_cache(maxsize=8)
def _gauss_legendre(points: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [0, 1]."""
    nodes, weights = np.polynomial.legendre.leggauss(points)
    return (nodes + 1.0) / 2.0, weights / 2.0


def _chi_square_grid(
    df: np.ndarray, points: int, upper: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per degrees of freedom (array [m]): points W [m, points] of the chi-square(df)
    distribution divided by df, and integration weights [m, points] (density · dW) that sum
    to its mass on the grid. Without ``upper``: the trapezoid rule on a log scale over the
    whole distribution (but GRID_TAIL in each tail), exponentially accurate for the smooth
    integrands here. With ``upper`` (W / df, per row): Gauss-Legendre on a log scale up to
    that cut, so that an integrand with a kink there is still integrated accurately.
    Infinite df: the one point W / df = 1, weight 1 (0 where it lies above the cut)."""
    from scipy import special

    df = np.asarray(df, dtype=np.float64)
    finite = np.isfinite(df)
    k = np.where(finite, df, 1.0)
    low = np.log(special.chdtri(k, 1.0 - GRID_TAIL))
    high = np.log(special.chdtri(k, GRID_TAIL))
    if upper is None:
        steps = np.linspace(0.0, 1.0, points)
        trapezoid = np.full(points, 1.0 / (points - 1))
        trapezoid[[0, -1]] /= 2.0
    else:
        with np.errstate(divide="ignore"):
            high = np.maximum(np.minimum(high, np.log(np.asarray(upper) * k)), low)
        steps, trapezoid = _gauss_legendre(points)
    logs = low[:, None] + (high - low)[:, None] * steps[None, :]
    w = np.exp(logs)
    log_density = (
        (k[:, None] / 2.0 - 1.0) * logs
        - w / 2.0
        - (k[:, None] / 2.0) * math.log(2.0)
        - special.gammaln(k[:, None] / 2.0)
    )
    weights = np.exp(log_density) * w * (high - low)[:, None] * trapezoid[None, :]
    scaled = w / k[:, None]
    scaled[~finite] = 1.0
    weights[~finite] = 0.0
    inside = ~finite if upper is None else ~finite & (np.asarray(upper) >= 1.0)
    weights[inside, 0] = 1.0
    return scaled, weights


@functools.lru_cache(maxsize=64)
def _seeds_grid(seeds_df: float) -> tuple[np.ndarray, np.ndarray]:
    points = SEEDS_POINTS if seeds_df >= 2 else 3 * SEEDS_POINTS
    scaled, weights = _chi_square_grid(np.array([seeds_df]), points)
    return scaled[0], weights[0]


class _Fiducial:
    """The fiducial integrals of :func:`fiducial_p_values` for a batch of estimates: the
    standard deviation and weight of every (seeds, examples) grid point, computed once so
    that a root search only re-evaluates the normal tails."""

    def __init__(
        self, a: np.ndarray, seeds_df: float, c: np.ndarray, nu: np.ndarray, r: np.ndarray
    ) -> None:
        from scipy import special

        seeds_w, seeds_weights = _seeds_grid(float(seeds_df))
        # the examples' variance c ν / W₂ − r is 0 from W₂ / ν = c / r on (a kink a grid
        # would blur): integrate below it on the grid and add the mass above as one point
        with np.errstate(divide="ignore", invalid="ignore"):
            kink = np.where(r > 0, c / np.where(r > 0, r, 1.0), 1e300)
        # few examples: a chi-square with few df spreads far on a log scale; more points
        points = EXAMPLES_POINTS if np.all(nu >= 8) else 4 * EXAMPLES_POINTS
        below_w, below_weights = _chi_square_grid(nu, points, upper=kink)
        finite = np.isfinite(nu)
        k = np.where(finite, nu, 1.0)
        above = np.where(finite, special.chdtrc(k, np.minimum(kink, 1e300) * k), kink < 1.0)
        examples_var = np.maximum(c[:, None] / below_w - r[:, None], 0.0)
        examples_var = np.concatenate([examples_var, np.zeros((len(a), 1))], axis=1)
        examples_weights = np.concatenate([below_weights, above[:, None]], axis=1)
        self.scale = np.sqrt(a[:, None, None] / seeds_w[None, :, None] + examples_var[:, None, :])
        self.weights = seeds_weights[None, :, None] * examples_weights[:, None, :]

    def tails(self, d: np.ndarray, slope: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """P(|D| ≥ |d|) per estimate (the grids' left-out mass counted as rejecting
        nothing) and, if asked, its derivative in d."""
        from scipy import special

        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(self.scale > 0, np.abs(d)[:, None, None] / self.scale, np.inf)
        tails = np.minimum(1.0, np.sum(2.0 * special.ndtr(-z) * self.weights, axis=(1, 2)))
        tails = np.minimum(1.0, tails + 2.0 * GRID_TAIL)
        if not slope:
            return tails, None
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            density = np.where(
                self.scale > 0,
                np.exp(-0.5 * z * z) / (math.sqrt(2.0 * math.pi) * self.scale),
                0.0,
            )
        return tails, -2.0 * np.sum(density * self.weights, axis=(1, 2))


#: Estimates integrated together (bounds the grids' memory: about 40 kB an estimate).
FIDUCIAL_CHUNK = 256


def fiducial_p_values(
    differences: Sequence[float],
    seeds_parts: Sequence[float],
    seeds_df: float,
    examples_ms: Sequence[float],
    examples_dfs: Sequence[float],
    residuals: Sequence[float],
) -> np.ndarray:
    """Two-sided p-values that each true mean is 0, integrating both estimated parts of the
    variance over their fiducial distributions (Behrens and Fisher):

        P(|Z| ≥ |d| / sqrt(a k / W₁ + max(c ν / W₂ − r, 0))),  W₁ ~ χ²ₖ, W₂ ~ χ²_ν

    ``a``: the seeds' part, on k = ``seeds_df`` degrees of freedom; ``c``: the examples' mean
    square part (``examples_ms``) on ν = ``examples_dfs``; ``r``: the residual part, taken
    as known. Two limits are exact: c = 0 gives the paired t over seeds, a = r = 0 the t
    over examples. Fixed grids (:data:`SEEDS_POINTS` × :data:`EXAMPLES_POINTS`), accurate to
    about 1e-7; the mass beyond them counts as p = 1.
    """
    d = np.abs(np.asarray(differences, dtype=np.float64))
    columns = [
        np.broadcast_to(np.asarray(v, dtype=np.float64), d.shape)
        for v in (seeds_parts, examples_ms, examples_dfs, residuals)
    ]
    out = np.empty(d.shape)
    for start in range(0, len(d), FIDUCIAL_CHUNK):
        part = slice(start, start + FIDUCIAL_CHUNK)
        a, c, nu, r = (v[part] for v in columns)
        out[part] = _Fiducial(a, seeds_df, c, nu, r).tails(d[part])[0]
    return out


def fiducial_half_widths(
    alpha: float,
    seeds_parts: Sequence[float],
    seeds_df: float,
    examples_ms: Sequence[float],
    examples_dfs: Sequence[float],
    residuals: Sequence[float],
) -> np.ndarray:
    """Half-widths h with :func:`fiducial_p_values` (h) = alpha: the interval mean ± h holds
    every value the test would not reject. Newton's method from Satterthwaite's
    approximation, kept inside a bracket that every step narrows (bisection where a step
    would leave it), vectorised."""
    if not MIN_ALPHA <= alpha < 1.0:
        raise ValueError(f"alpha must be in [{MIN_ALPHA}, 1), got {alpha}")
    a_all = np.asarray(seeds_parts, dtype=np.float64)
    c_all = np.asarray(examples_ms, dtype=np.float64)
    nu_all = np.asarray(examples_dfs, dtype=np.float64)
    r_all = np.asarray(residuals, dtype=np.float64)
    out = np.zeros(a_all.shape)
    for start in range(0, len(a_all), FIDUCIAL_CHUNK):
        part = slice(start, start + FIDUCIAL_CHUNK)
        a, c, nu, r = a_all[part], c_all[part], nu_all[part], r_all[part]
        fiducial = _Fiducial(a, seeds_df, c, nu, r)
        b = np.maximum(c - r, 0.0)
        variance = a + b
        with np.errstate(divide="ignore", invalid="ignore"):
            df = np.where(
                variance > 0,
                variance**2 / (a * a / seeds_df + np.where(np.isfinite(nu), b * b / nu, 0.0)),
                1.0,
            )
        guess = np.array([t_quantile(1.0 - alpha / 2.0, max(v, 1.0)) for v in df]) * np.sqrt(
            variance
        )
        low = np.zeros_like(a)
        high = np.maximum(2.0 * guess, 1e-300)
        for _ in range(200):  # widen until the bracket holds the solution
            short = fiducial.tails(high)[0] > alpha
            if not short.any():
                break
            low = np.where(short, high, low)
            high = np.where(short, high * 2.0, high)
        h = np.clip(guess, low, high)
        done = variance == 0.0
        for _ in range(100):
            tails, slope = fiducial.tails(h, slope=True)
            assert slope is not None
            done = done | (np.abs(tails - alpha) <= 1e-12 * alpha)
            if done.all():
                break
            above = tails > alpha
            low = np.where(above, h, low)
            high = np.where(above, high, h)
            with np.errstate(divide="ignore", invalid="ignore"):
                step = h - (tails - alpha) / slope
            inside = np.isfinite(step) & (step >= low) & (step <= high)
            moved = np.where(inside, step, (low + high) / 2.0)
            done = done | (high - low <= 1e-12 * high)
            h = np.where(done, h, moved)
        out[part] = np.where(variance == 0.0, 0.0, h)
    return out


def _mean_squares(table: np.ndarray) -> tuple[float, float, int]:
    """(MS_examples, MS_residual, n) of the seeds × examples two-way layout."""
    seeds, n = table.shape
    example_means = table.mean(axis=0)
    ms_examples = seeds * float(np.var(example_means, ddof=1))
    if seeds < 2:
        return ms_examples, float("nan"), n
    residual = table - table.mean(axis=1, keepdims=True) - example_means[None, :] + table.mean()
    ms_residual = float(np.sum(residual * residual)) / ((seeds - 1) * (n - 1))
    return ms_examples, ms_residual, n


def _satterthwaite(terms: Sequence[tuple[float, float]]) -> float:
    """Degrees of freedom of Σ v_j, each v_j a multiple of a mean square with df_j
    (Satterthwaite 1946)."""
    total = math.fsum(v for v, _ in terms)
    spread = math.fsum(v * v / df for v, df in terms if v != 0.0)
    return MAX_DF if spread == 0.0 else min(MAX_DF, total * total / spread)


def safe_sum(values: Iterable[float]) -> float:
    """math.fsum, or NaN where it cannot add (inf − inf, overflow)."""
    values = list(values)
    try:
        return math.fsum(values)
    except (ValueError, OverflowError):
        return float("nan")


def seeds_and_examples(per_seed: Sequence[float], tables: Sequence[np.ndarray]) -> SeedsAndExamples:
    """The mean over seeds of ``per_seed`` and its variance over new seeds and test examples.

    ``per_seed[s]`` is the quantity on seed s (a score, a difference of two methods' scores,
    a transfer gap, a mean over target languages). ``tables`` hold its per-example values
    (or jackknife pseudo-values), one ``[seeds, examples]`` array per independent test set
    (language), each already multiplied by its language's weight in the quantity: for a
    difference, the difference of the two methods' values; for a mean over T targets, each
    target's values / T. Rows are seeds in the order of ``per_seed``.
    """
    values = np.asarray(per_seed, dtype=np.float64)
    seeds = len(values)
    if seeds == 0:
        raise ValueError("no seeds")
    tables = [np.asarray(t, dtype=np.float64) for t in tables]
    for table in tables:
        if table.ndim != 2 or table.shape[0] != seeds:
            raise ValueError(f"a table of shape {table.shape} does not have {seeds} seed rows")
    mean = safe_sum(values) / seeds if _finite(values) else float("nan")
    n_examples = min((t.shape[1] for t in tables), default=0)
    nan = float("nan")

    def undefined(reason: str, conditional: float = nan, cdf: float = nan) -> SeedsAndExamples:
        return SeedsAndExamples(
            mean, seeds, n_examples, nan, nan, nan, nan, nan, conditional, cdf, reason
        )

    if not tables:
        return undefined("no per-example values (no stored predictions)")
    if n_examples < 2:
        return undefined(f"{n_examples} test example(s): no test-set variance to estimate")
    if not _finite(values) or not all(_finite(t) for t in tables):
        return undefined("a value is not finite (NaN or infinite)")

    conditional_terms = []
    included: list[tuple[float, float, int]] = []  # (examples part, residual part, n)
    varied = False
    for table in tables:
        ms_examples, ms_residual, n = _mean_squares(table)
        scale = 1.0 / (seeds * n)
        conditional_terms.append((ms_examples * scale, n - 1))
        varied = varied or bool(np.ptp(table) > 0)
        if seeds >= 2 and ms_examples > ms_residual:
            included.append((ms_examples * scale, ms_residual * scale, n))
    conditional = math.fsum(v for v, _ in conditional_terms)
    conditional_df = _satterthwaite(conditional_terms)
    if seeds < 2:
        return undefined(
            "one seed: the variance between training runs cannot be estimated",
            conditional,
            conditional_df,
        )
    seeds_part = float(np.var(values, ddof=1)) / seeds
    examples_ms = math.fsum(e for e, _, _ in included)
    residual = math.fsum(r for _, r, _ in included)
    if not math.isfinite(seeds_part + examples_ms):
        return undefined("the values are too large for their variance to be computed")
    if seeds_part + examples_ms - residual == 0.0 and varied:
        return undefined(
            "the seeds' values tie exactly and the examples add no variance, although the "
            "per-example values vary: nothing to test against (more seeds would break the tie)",
            conditional,
            conditional_df,
        )
    return SeedsAndExamples(
        mean=mean,
        n_seeds=seeds,
        n_examples=n_examples,
        seeds_part=seeds_part,
        seeds_df=float(seeds - 1),
        examples_ms=examples_ms,
        examples_df=_satterthwaite([(e, n - 1) for e, _, n in included]) if included else MAX_DF,
        residual=residual,
        conditional=conditional,
        conditional_df=conditional_df,
    )


# -- an exact permutation test for accuracy -------------------------------------------


def _log_factorials(n: int) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))])


def _convolve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) * len(b) <= 1 << 20:
        return np.convolve(a, b)
    size = len(a) + len(b) - 1
    fft_size = 1 << (size - 1).bit_length()
    out = np.fft.irfft(np.fft.rfft(a, fft_size) * np.fft.rfft(b, fft_size), fft_size)[:size]
    return np.clip(out, 0.0, None)


def sign_flip_p_value(differences: np.ndarray) -> float:
    """Exact two-sided p-value of the paired sign-flip (permutation) test on integer
    per-example differences.

    For accuracy, ``differences[i]`` is Σ over seeds of correct_A − correct_B on example i.
    Under the null that the two methods are exchangeable on every example, each
    difference's sign is a fair coin, so T* = Σ ε_i d_i. Grouping examples by |d_i| = j,
    T* = Σ_j j (2 X_j − c_j) with X_j ~ Binomial(c_j, 1/2): its distribution is a
    convolution of a few binomials (at most one per seed count), computed exactly instead
    of sampling 2^n sign patterns. Returns P(|T*| ≥ |T|), which is never below the
    probability 2^(1−m) of the observed signs and their mirror image (m non-zero d_i).

    The test is conditional on the trained models: it generalises to new test examples for
    these seeds' models, not to new seeds. NaN when a difference is not finite.
    """
    d = np.asarray(differences)
    if d.size and not np.issubdtype(d.dtype, np.integer):
        if not _finite(d):
            return float("nan")
        if not np.all(d == np.round(d)):
            raise ValueError("the sign-flip test needs integer differences")
        d = np.round(d).astype(np.int64)
    d = d.astype(np.int64)
    observed = int(d.sum())
    magnitudes = np.abs(d[d != 0])
    m = len(magnitudes)
    if observed == 0 or m == 0:
        return 1.0
    counts = np.bincount(magnitudes)
    log_fact = _log_factorials(int(counts.max()))
    pmf = np.ones(1)
    for j, c in enumerate(counts):
        if j == 0 or c == 0:
            continue
        x = np.arange(c + 1)
        binomial = np.exp(log_fact[c] - log_fact[x] - log_fact[c - x] - c * math.log(2.0))
        component = np.zeros(j * c + 1)
        component[::j] = binomial
        pmf = _convolve(pmf, component)
    total = len(pmf) - 1  # Σ_j j c_j; U = Σ_j j X_j and T* = 2U − total
    high = (total + abs(observed)) // 2
    low = (total - abs(observed)) // 2
    p = float(pmf[high:].sum() + pmf[: low + 1].sum())
    return min(1.0, max(p, 2.0 ** max(1 - m, -1074)))


# -- metrics as functions of per-example sums: pseudo-values ----------------------------

#: ``finish(sums [rows, d], n)``: the metric of each row of summed features over n examples
#: (``n`` a number, or an array with one count per row).
#: A metric without a vectorised form is called once per left-out unit; beyond this many
#: test examples, examples are grouped into this many units (a grouped jackknife).
MAX_CALLED_UNITS = 2000


def unit_groups(n: int, units: int) -> np.ndarray | None:
    """Unit of each of n examples for a grouped jackknife: None (every example a unit of its
    own) when n <= units, else example i belongs to unit i mod ``units``."""
    return None if n <= units else np.arange(n) % units


def take(values: Any, index: np.ndarray) -> Any:
    """``values[index]`` for a NumPy array or a torch tensor; a tensor gets a tensor index
    (indexing a 2-D tensor with a NumPy array is some 300 times slower)."""
    if hasattr(values, "new_tensor"):
        return values[values.new_tensor(index).long()]
    return values[index]


def pseudo_values_by_calls(
    metric: Any, y_true: Any, probs: Any, theta: float, groups: np.ndarray | None = None
) -> np.ndarray:
    """Jackknife pseudo-values of a metric without a vectorised form: ``metric.compute``
    called once per left-out unit (an example, or a group of ``groups``)."""
    n = len(y_true)
    units = np.arange(n) if groups is None else groups
    count = int(units.max()) + 1
    left_out = np.empty(count)
    for unit in range(count):
        keep = np.flatnonzero(units != unit)
        left_out[unit] = float(metric.compute(take(y_true, keep), take(probs, keep)))
    return jackknife(theta, left_out)


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def metric_form(
    name: str,
    metric: Any,
    y_true: Any,
    probs: Any,
    expected: float | None = None,
    resample: bool = True,
) -> MetricForm | None:
    """The vectorised form of ``metric`` on these predictions, or None if it has none.

    A metric object may offer ``form(y_true, probs) -> MetricForm`` (numpy arrays) or
    ``per_example(y_true, probs) -> [n]`` (its value being their mean).
    Either is trusted only if it reproduces ``metric.compute`` on the full data (or
    ``expected``, the value the run already computed) and, with ``resample``, on one
    resample of the examples (drawn with replacement, so repeated examples are checked too).
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    n = len(y)
    if n == 0:
        return None
    candidate = None
    try:
        if callable(getattr(metric, "form", None)):
            candidate = metric.form(y, p)
        elif callable(getattr(metric, "per_example", None)):
            candidate = mean_of(np.asarray(metric.per_example(y_true, probs), dtype=np.float64))
    except Exception:  # a form that does not fit the data is no form: fall back to compute
        return None
    if candidate is None or candidate.features.shape[0] != n:
        return None
    full = float(metric.compute(y_true, probs)) if expected is None else float(expected)
    if not _close(candidate.value(), full):
        return None
    if not resample:
        return candidate
    idx = np.random.Generator(np.random.SFC64(0)).integers(0, n, size=n)
    sums = candidate.features[idx].sum(axis=0)
    resampled = float(candidate.finish(sums[None, :], n)[0])
    if not _close(resampled, float(metric.compute(take(y_true, idx), take(probs, idx)))):
        return None
    return candidate

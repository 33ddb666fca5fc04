"""How many seeds (and shot draws) a comparison needs: power of the report's own test.

A comparison's difference over S seeds and n test examples has variance
``a + b``: the seeds' part a = σ²₁ / S (σ²₁: the variance of one seed's difference, its D
shot draws averaged) and the examples' part b (how the test examples move the difference;
it does not shrink with seeds — the test set is fixed). With shot draws, σ²₁ splits into
the seed's part and the draws' part: σ²₁ = σ²_seed + σ²_draw / D, so more draws per seed
shrink only the second.

The report's test (:func:`xleval.analysis.stats.fiducial_p_values`) rejects when
|difference| exceeds a critical value that depends on the estimated parts: the seeds' part
is estimated on S − 1 degrees of freedom (a chi-square spread), the examples' part on
n − 1, taken here as known (n is in the hundreds in practice; below 30 test examples the
plan is optimistic). Its power at a true difference δ is therefore

    Σ_j w_j [Φ((−c_j − δ) / σ) + Φ((δ − c_j) / σ)],   σ² = a + b,

over the chi-square grid of the seeds' estimate (weights w_j), with c_j the test's critical
value at that estimate: c = sqrt(â + b) · q(â / (â + b)), q tabulated once per degrees of
freedom and alpha from the test itself. ``tests/test_power.py`` checks by simulation that
the planned number of seeds reaches the stated power.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from xleval.analysis.stats import _chi_square_grid, fiducial_half_widths

#: Points of the table of q(ρ) per degrees of freedom (ρ: the seeds' share of the variance).
SHARE_POINTS = 129
#: The most seeds a plan looks at.
MAX_SEEDS = 1000


@functools.lru_cache(maxsize=512)
def _critical_table(seeds_df: float, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(ρ grid, q(ρ)): the test's critical value for a unit total variance of which ρ is
    the seeds' estimated part."""
    share = (1.0 - np.cos(np.linspace(0.0, math.pi, SHARE_POINTS))) / 2.0  # dense at the ends
    half = fiducial_half_widths(
        alpha,
        share.tolist(),
        seeds_df,
        (1.0 - share).tolist(),
        [math.inf] * SHARE_POINTS,
        [0.0] * SHARE_POINTS,
    )
    return share, half


@functools.lru_cache(maxsize=512)
def _seeds_estimate_grid(seeds_df: float) -> tuple[np.ndarray, np.ndarray]:
    scaled, weights = _chi_square_grid(np.array([seeds_df]), 96)
    return scaled[0], weights[0] / weights[0].sum()


def power(delta: float, seeds_part: float, examples_part: float, seeds: int, alpha: float) -> float:
    """Probability that the report's test rejects at ``alpha`` when the true difference is
    ``delta``, with ``seeds`` seeds whose part of the variance is ``seeds_part`` (already
    divided by the seeds) and a known ``examples_part``."""
    if seeds < 2:
        return 0.0
    from scipy import special

    k = float(seeds - 1)
    share, q = _critical_table(k, alpha)
    w, weights = _seeds_estimate_grid(k)
    estimated = seeds_part * w  # the seeds' part as estimated, at each grid point
    total = estimated + examples_part
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(total > 0, estimated / total, 1.0)
    critical = np.sqrt(total) * np.interp(rho, share, q)
    sigma = math.sqrt(seeds_part + examples_part)
    if sigma == 0.0:
        return 1.0 if delta != 0.0 else 0.0
    reject = special.ndtr((-critical - delta) / sigma) + special.ndtr((delta - critical) / sigma)
    return float(np.sum(weights * reject))


@dataclass(frozen=True)
class Components:
    """The variance of one comparison's difference, from a pilot run.

    ``per_seed``: σ²₁, the variance of one seed's difference (its draws averaged) at the
    pilot's ``draws``; ``draw``: σ²_draw, the variance between one seed's draws (None
    without shot draws); ``examples``: the examples' part b.
    """

    per_seed: float
    examples: float
    seeds: int
    draws: int = 1
    draw: float | None = None

    @property
    def seed(self) -> float:
        """σ²_seed: the per-seed variance that more draws would not remove."""
        if self.draw is None:
            return self.per_seed
        return max(0.0, self.per_seed - self.draw / self.draws)

    def seeds_part(self, seeds: int, draws: int | None = None) -> float:
        """The seeds' part of the variance with ``seeds`` seeds of ``draws`` draws each."""
        if draws is None or self.draw is None:
            return self.per_seed / seeds
        return (self.seed + self.draw / draws) / seeds

    def power(self, delta: float, seeds: int, alpha: float, draws: int | None = None) -> float:
        return power(delta, self.seeds_part(seeds, draws), self.examples, seeds, alpha)

    def limit(self, delta: float, alpha: float) -> float:
        """The power with infinitely many seeds: the test examples' part alone (a z-test)."""
        from scipy import special

        if self.examples == 0.0:
            return 1.0 if delta != 0.0 else alpha
        z = float(special.ndtri(1.0 - alpha / 2.0))
        s = math.sqrt(self.examples)
        return float(special.ndtr(-z - delta / s) + special.ndtr(delta / s - z))

    def seeds_needed(
        self, delta: float, target: float, alpha: float, draws: int | None = None
    ) -> tuple[int | None, float]:
        """(the fewest seeds whose power reaches ``target``, that power), or (None, the
        power at MAX_SEEDS) when no number of seeds up to MAX_SEEDS does."""
        if self.power(delta, MAX_SEEDS, alpha, draws) < target:
            return None, self.power(delta, MAX_SEEDS, alpha, draws)
        low, high = 1, 2
        while self.power(delta, high, alpha, draws) < target:
            low, high = high, min(MAX_SEEDS, high * 2)
        while high - low > 1:  # power(low) < target <= power(high)
            middle = (low + high) // 2
            if self.power(delta, middle, alpha, draws) >= target:
                high = middle
            else:
                low = middle
        return high, self.power(delta, high, alpha, draws)

    def detectable(
        self, target: float, alpha: float, seeds: int, draws: int | None = None
    ) -> float:
        """The smallest true difference the test finds with probability ``target`` at
        ``seeds`` seeds (and ``draws`` draws): the minimum detectable difference."""
        scale = math.sqrt(self.seeds_part(seeds, draws) + self.examples)
        if scale == 0.0:
            return 0.0
        low, high = 0.0, scale
        while self.power(high, seeds, alpha, draws) < target:
            low, high = high, high * 2.0
            if high > 1e6 * scale:
                return math.inf
        for _ in range(60):
            middle = (low + high) / 2.0
            if self.power(middle, seeds, alpha, draws) >= target:
                high = middle
            else:
                low = middle
        return high


def examples_needed(components: Components, delta: float, target: float, alpha: float) -> float:
    """How many times the test examples a difference of ``delta`` needs at unlimited seeds:
    the examples' part shrinks as 1 / n."""
    from scipy import special

    z = float(special.ndtri(1.0 - alpha / 2.0)) + float(special.ndtri(target))
    allowed = (delta / z) ** 2
    return components.examples / allowed if allowed > 0 else math.inf


# -- a plan from a pilot run's report ------------------------------------------------------

#: Draws per seed a plan shows seeds for, besides the pilot's own (the spec's shot_draws).
DRAW_OPTIONS = (1, 10)


def _cell_values(report: dict, metric: str) -> dict[tuple[str, str, object], dict]:
    """(method, target, shots) -> {(seed, draw): the main metric} of the report's ok cells;
    a method whose cells all ran at k = 0 for a target (it ignores k) also under every k."""
    out: dict[tuple[str, str, object], dict] = {}
    for c in report.get("cells", ()):
        value = c["metrics"].get(metric) if c["status"] == "ok" else None
        if value is None:
            continue
        out.setdefault((c["method"], c["target"], c["shots"]), {})[(c["seed"], c.get("draw"))] = (
            value
        )
    independent = {a["method"] for a in report.get("aggregates", ()) if a.get("shots_independent")}
    for (method, target, shots), values in list(out.items()):
        if method in independent and shots == 0:
            for k in report["spec"]["shots"]:
                out.setdefault((method, target, k), values)
    return out


def draw_variance(
    a: dict[tuple[int, int | None], float],
    b: dict[tuple[int, int | None], float],
    seeds: list[int],
) -> tuple[float, int] | None:
    """(σ²_draw, draws) of the difference A − B: the variance between one seed's draws,
    pooled over seeds (the within-seed mean square); None without shot draws."""
    draws = sorted({d for _, d in (*a, *b) if d is not None})
    if len(draws) < 2:
        return None

    def value(cells: dict, seed: int, draw: int) -> float | None:
        return cells.get((seed, draw), cells.get((seed, None)))

    rows = []
    for s in seeds:
        row = [value(a, s, d) for d in draws]
        other = [value(b, s, d) for d in draws]
        if any(v is None for v in (*row, *other)):
            return None
        rows.append([x - y for x, y in zip(row, other, strict=True)])  # type: ignore[operator]
    table = np.asarray(rows, dtype=np.float64)
    within = table - table.mean(axis=1, keepdims=True)
    return float(np.sum(within * within)) / (len(seeds) * (len(draws) - 1)), len(draws)


def plan_report(
    report: dict,
    delta: float,
    target: float = 0.8,
    alpha: float | None = None,
    family: str = "planned",
) -> dict:
    """Per comparison of ``family`` in a pilot run's report: its power now to detect a true
    difference of ``delta``, the smallest difference it detects with probability
    ``target`` (the minimum detectable difference), and the seeds that reach ``target`` —
    where the pilot separated shot draws, also at 1 and 10 draws per seed."""
    if not delta > 0:
        raise ValueError(f"delta must be positive, got {delta}")
    if not 0 < target < 1:
        raise ValueError(f"power must be between 0 and 1, got {target}")
    statistics = report.get("statistics", {})
    alpha = statistics.get("alpha", 0.05) if alpha is None else alpha
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    metric = statistics.get("metric", report["spec"]["main_metric"])
    values = _cell_values(report, metric)
    rows, skipped = [], []
    for e in report.get("comparisons", ()):
        if e["family"] != family:
            continue
        where = {k: e[k] for k in ("a", "b", "target", "shots")}
        if e["status"] != "ok" or not e.get("variance"):
            skipped.append({**where, "reason": f"{e['status']}: {e.get('reason')}"})
            continue
        if e["variance"]["seeds"] + e["variance"]["examples"] == 0.0:
            skipped.append({**where, "reason": "no variance in the pilot: nothing to plan from"})
            continue
        seeds = list(e["seeds"])
        split = draw_variance(
            values.get((e["a"], e["target"], e["shots"]), {}),
            values.get((e["b"], e["target"], e["shots"]), {}),
            seeds,
        )
        components = Components(
            per_seed=e["variance"]["seeds"] * len(seeds),
            examples=e["variance"]["examples"],
            seeds=len(seeds),
            draws=1 if split is None else split[1],
            draw=None if split is None else split[0],
        )
        now_draws = None if split is None else split[1]
        needed, reached = components.seeds_needed(delta, target, alpha, now_draws)
        row = {
            **where,
            "difference": e["difference"],
            "p_value": e.get("p_holm", e.get("p_value")),
            "seeds": len(seeds),
            "draws": now_draws,
            "n_examples": e.get("n_examples"),
            "sd_seed": math.sqrt(components.seed),
            "sd_draw": None if components.draw is None else math.sqrt(components.draw),
            "se_examples": math.sqrt(components.examples),
            "power_now": components.power(delta, len(seeds), alpha, now_draws),
            "detectable_now": components.detectable(target, alpha, len(seeds), now_draws),
            "seeds_needed": needed,
            "power_planned": reached,
            "limit": components.limit(delta, alpha),
        }
        if needed is None:  # the test set is the limit, or more seeds than MAX_SEEDS
            row["unreachable"] = row["limit"] < target
            if row["unreachable"]:
                row["examples_factor"] = examples_needed(components, delta, target, alpha)
        if split is not None:  # the seeds needed at other numbers of draws per seed
            row["by_draws"] = []
            for d in sorted({*DRAW_OPTIONS, split[1]}):
                s, p = components.seeds_needed(delta, target, alpha, d)
                row["by_draws"].append({"draws": d, "seeds": s, "power": p})
        rows.append(row)
    return {
        "metric": metric,
        "delta": delta,
        "power": target,
        "alpha": alpha,
        "family": family,
        "comparisons": rows,
        "skipped": skipped,
    }

"""xleval.analysis.stats against closed forms, numerical integration and simulated data: the t
distribution, the seeds × examples estimate and its Behrens–Fisher test, the sign-flip test,
Holm's correction, ranks, and the vectorised forms (and pseudo-values) of the metrics.

Simulations are seeded, so every run checks the same numbers; the acceptance bands are
those a correct method meets (nominal rate ± about 4 standard errors), not values tuned to
this implementation. benchmarks/stats_calibration.py runs the full calibration.
"""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy import stats as scipy_stats

from xleval.analysis.stats import (
    average_ranks,
    fiducial_half_widths,
    fiducial_p_values,
    holm,
    intervals,
    mean_ci,
    metric_form,
    p_values,
    paired_t_test,
    pseudo_values_by_calls,
    seeds_and_examples,
    sign_flip_p_value,
    t_cdf,
    t_quantile,
    unit_groups,
)
from xleval.plugin.manager import get_plugin_manager

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import stats_calibration as calibration  # the benchmark's own simulator

RUNS = 1000


def t3_cdf(t: float) -> float:
    """Student's t CDF with 3 degrees of freedom in closed form (an independent reference)."""
    x = t / math.sqrt(3.0)
    return 0.5 + (x / (1.0 + x * x) + math.atan(x)) / math.pi


# -- the t distribution and the interval over seeds -------------------------------------


def test_t_distribution_matches_closed_form_and_tables():
    for t in (-4.0, -1.0, 0.0, 0.5, 2.0, 3.873):
        assert t_cdf(t, 3) == pytest.approx(t3_cdf(t), abs=1e-10)
    # two-sided 95% critical values from printed tables
    assert t_quantile(0.975, 1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile(0.975, 4) == pytest.approx(2.776, abs=1e-3)
    assert t_quantile(0.975, 30) == pytest.approx(2.042, abs=1e-3)
    assert t_quantile(0.975, math.inf) == pytest.approx(1.95996, abs=1e-5)


def test_t_interval_over_seeds_covers_the_true_mean_at_the_stated_rate():
    rng = np.random.default_rng(11)
    covered = 0
    for _ in range(RUNS):
        seeds = rng.normal(0.7, 0.05, size=5)  # five seeds' scores
        ci = mean_ci(list(seeds), 0.95)["ci"]
        covered += ci[0] <= 0.7 <= ci[1]
    assert abs(covered / RUNS - 0.95) <= 0.03


def test_paired_t_test_against_closed_form():
    diffs = [1.0, 2.0, 3.0, 4.0]  # mean 2.5, sd sqrt(5/3), t = 3.873 on 3 df
    t = 2.5 / (math.sqrt(5.0 / 3.0) / 2.0)
    assert paired_t_test(diffs) == pytest.approx(2 * (1 - t3_cdf(t)), abs=1e-9)
    assert paired_t_test([0.3]) is None
    assert paired_t_test([0.0, 0.0]) == 1.0


def test_non_finite_values_propagate_instead_of_becoming_evidence():
    """A NaN is no evidence either way: NaN out (never p = 1.0, never p = 0)."""
    assert math.isnan(paired_t_test([0.1, float("nan"), 0.2]))
    assert math.isnan(sign_flip_p_value(np.array([1.0, float("nan"), -1.0])))
    summary = mean_ci([0.5, float("inf")])
    assert math.isnan(summary["mean"]) and all(math.isnan(v) for v in summary["ci"])
    assert [math.isnan(p) for p in holm([0.01, float("nan"), 0.04])] == [False, True, False]
    assert holm([0.01, float("nan"), 0.04])[0] == pytest.approx(0.02)  # m = 2, not 3
    assert average_ranks([0.8, float("nan"), 0.9])[::2] == [2.0, 1.0]
    assert math.isnan(average_ranks([0.8, float("nan"), 0.9])[1])


def test_identical_non_zero_differences_are_no_p_zero():
    """Every seed one example apart (deterministic seeds): the t over seeds is undefined (no
    spread), not p = 0; the seeds × examples test sees one example's worth of evidence."""
    assert paired_t_test([0.01, 0.01, 0.01]) is None
    table = np.zeros((3, 100))
    table[:, 0] = 1.0  # A right and B wrong on example 0, on every seed; equal elsewhere
    estimate = seeds_and_examples(table.mean(axis=1), [table])
    assert estimate.seeds_part == 0.0 and estimate.examples_part > 0
    # one example in 100 differs: t = 1 on 99 df
    assert estimate.p_value() == pytest.approx(2 * scipy_stats.t.sf(1.0, 99), rel=1e-7)
    nothing = seeds_and_examples([0.0, 0.0, 0.0], [np.zeros((3, 50))])
    assert nothing.variance == 0.0 and nothing.p_value() == 1.0
    assert nothing.interval(0.95) == [0.0, 0.0]
    constant = seeds_and_examples([1.0, 1.0], [np.ones((2, 50))])  # right everywhere
    assert constant.testable and constant.p_value() is None  # nothing to test against


def test_tied_seeds_with_varying_examples_are_not_tested():
    """Two seeds whose differences tie exactly (+0.05 each) on different examples, and no
    examples' part: the estimated variance is zero although the data vary, so there is
    nothing to test against — not p = 0, not an interval of width zero."""
    table = np.zeros((2, 200))
    table[0, :10] = 1.0
    table[1, 100:110] = 1.0
    estimate = seeds_and_examples(table.mean(axis=1), [table])
    assert not estimate.testable and "tie exactly" in estimate.reason
    assert estimate.p_value() is None and estimate.interval(0.95) is None
    assert estimate.conditional_p_value() < 0.05  # for these models alone, it is a difference


# -- the seeds × examples estimate ---------------------------------------------------------


def anova_by_hand(table: np.ndarray) -> tuple[float, float, float]:
    """MS_seeds, MS_examples, MS_residual of a seeds × examples table, by explicit sums."""
    seeds, n = table.shape
    grand = sum(sum(row) for row in table) / (seeds * n)
    seed_means = [sum(row) / n for row in table]
    example_means = [sum(table[s][i] for s in range(seeds)) / seeds for i in range(n)]
    ms_seeds = n * sum((m - grand) ** 2 for m in seed_means) / (seeds - 1)
    ms_examples = seeds * sum((m - grand) ** 2 for m in example_means) / (n - 1)
    residual = sum(
        (table[s][i] - seed_means[s] - example_means[i] + grand) ** 2
        for s in range(seeds)
        for i in range(n)
    )
    return ms_seeds, ms_examples, residual / ((seeds - 1) * (n - 1))


def test_seeds_and_examples_is_the_two_way_anova_estimate():
    rng = np.random.default_rng(3)
    table = rng.normal(0, 1, size=(4, 30)) + rng.normal(0, 1, size=30)[None, :]
    estimate = seeds_and_examples(table.mean(axis=1), [table])
    ms_seeds, ms_examples, ms_residual = anova_by_hand(table)
    assert ms_examples > ms_residual  # the planted example effect
    scale = 4 * 30
    assert estimate.seeds_part == pytest.approx(ms_seeds / scale, rel=1e-12)
    assert estimate.examples_part == pytest.approx((ms_examples - ms_residual) / scale, rel=1e-12)
    assert estimate.conditional == pytest.approx(ms_examples / scale, rel=1e-12)
    assert (estimate.seeds_df, estimate.examples_df) == (3.0, 29.0)
    assert estimate.mean == pytest.approx(table.mean(), rel=1e-12)


def test_without_an_example_part_it_is_the_paired_t_over_seeds():
    """No example effect in the data (MS_examples <= MS_residual): p and interval are the
    paired t over seeds' exactly."""
    table = np.array([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    table = table + np.array([[0.3], [0.1], [0.2]])
    per_seed = table.mean(axis=1)
    estimate = seeds_and_examples(per_seed, [table])
    assert estimate.examples_part == 0.0
    assert estimate.p_value() == pytest.approx(paired_t_test(list(per_seed)), rel=1e-9)
    assert estimate.interval(0.95) == pytest.approx(mean_ci(list(per_seed), 0.95)["ci"], rel=1e-9)


def test_without_seed_spread_it_is_the_t_test_over_examples():
    """Every seed the same (deterministic training): the one-sample t-test of the examples."""
    rng = np.random.default_rng(4)
    values = rng.normal(0.1, 1.0, size=40)
    table = np.tile(values, (3, 1))
    estimate = seeds_and_examples(table.mean(axis=1), [table])
    assert estimate.seeds_part == 0.0
    expected = scipy_stats.ttest_1samp(values, 0.0)
    assert estimate.p_value() == pytest.approx(expected.pvalue, rel=1e-9)


def test_several_test_sets_add_up():
    """A mean over two target languages: each test set adds its own example part."""
    rng = np.random.default_rng(5)
    first = rng.normal(0, 1, size=(3, 50)) + rng.normal(0, 2, size=50)
    second = rng.normal(0, 1, size=(3, 80)) + rng.normal(0, 2, size=80)
    per_seed = (first.mean(axis=1) + second.mean(axis=1)) / 2
    both = seeds_and_examples(per_seed, [first / 2, second / 2])
    one = seeds_and_examples(first.mean(axis=1), [first])
    two = seeds_and_examples(second.mean(axis=1), [second])
    assert both.examples_part == pytest.approx((one.examples_part + two.examples_part) / 4)
    assert both.n_examples == 50


@pytest.mark.parametrize(
    ("per_seed", "table", "reason"),
    [  # the last one overflows on purpose
        ([0.5], np.ones((1, 10)), "one seed"),
        ([0.5, float("nan")], np.ones((2, 10)), "not finite"),
        ([0.5, 0.6], np.ones((2, 1)), "1 test example"),
        ([0.5, float("inf")], np.ones((2, 1)), "1 test example"),
        ([1e200, -1e200], np.ones((2, 10)), "too large"),
    ],
)
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_what_cannot_be_tested_says_why(per_seed, table, reason):
    estimate = seeds_and_examples(per_seed, [table])
    assert not estimate.testable and reason in estimate.reason
    assert estimate.p_value() is None and estimate.interval(0.95) is None
    assert seeds_and_examples([0.5, 0.6], []).reason.startswith("no per-example values")


# -- the Behrens–Fisher test -----------------------------------------------------------------


def fiducial_by_quadrature(d: float, a: float, k: int, c: float, nu: float, r: float) -> float:
    """The same p-value by adaptive quadrature (scipy.integrate.dblquad), as a reference."""

    def integrand(log_w2: float, log_w1: float) -> float:
        w1, w2 = math.exp(log_w1), math.exp(log_w2)
        variance = a * k / w1 + max(c * nu / w2 - r, 0.0)
        density = scipy_stats.chi2.pdf(w1, k) * w1 * scipy_stats.chi2.pdf(w2, nu) * w2
        return density * 2 * scipy_stats.norm.sf(abs(d) / math.sqrt(variance))

    return integrate.dblquad(integrand, -40, 8, -20, 9, epsabs=1e-11, epsrel=1e-8)[0]


@pytest.mark.parametrize("k", [1, 2, 4, 9, 99])
def test_fiducial_p_values_are_exact_in_both_limits(k):
    """No examples' part: the paired t over seeds; no seeds' part: the t over examples; a
    known examples' part (infinite df): the one-dimensional integral over the seeds."""
    assert fiducial_p_values([2.5], [1.0], k, [0.0], [50.0], [0.0])[0] == pytest.approx(
        2 * scipy_stats.t.sf(2.5, k), rel=1e-8
    )
    assert fiducial_p_values([2.5], [0.0], k, [1.0], [50.0], [0.0])[0] == pytest.approx(
        2 * scipy_stats.t.sf(2.5, 50), rel=1e-8
    )

    def one_dimensional(log_w: float) -> float:
        w = math.exp(log_w)
        tail = 2 * scipy_stats.norm.sf(3.0 / math.sqrt(0.7 * k / w + 0.5))
        return scipy_stats.chi2.pdf(w, k) * w * tail

    known = integrate.quad(one_dimensional, -80, 12, limit=500, epsrel=1e-10)[0]
    p = fiducial_p_values([3.0], [0.7], k, [0.8], [math.inf], [0.3])[0]
    assert p == pytest.approx(known, rel=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("d", "a", "k", "c", "nu", "r"),
    [(3.0, 1.0, 2, 0.5, 9.0, 0.2), (2.0, 0.3, 4, 1.0, 29.0, 0.5), (6.0, 1.0, 2, 1.0, 4.0, 0.5)],
)
def test_fiducial_p_values_match_two_dimensional_quadrature(d, a, k, c, nu, r):
    p = fiducial_p_values([d], [a], k, [c], [nu], [r])[0]
    assert p == pytest.approx(fiducial_by_quadrature(d, a, k, c, nu, r), abs=3e-6)


def test_half_widths_invert_the_p_values():
    a = np.array([1.0, 0.5, 0.0, 1e-6, 3.0])
    c = np.array([0.0, 0.5, 1.0, 1.0, 0.1])
    nu = np.array([30.0, 300.0, 300.0, 50.0, 10.0])
    r = np.array([0.0, 0.1, 0.0, 0.5, 0.05])
    for alpha in (0.05, 0.01, 0.001):
        half = fiducial_half_widths(alpha, a, 2, c, nu, r)
        assert fiducial_p_values(half, a, 2, c, nu, r) == pytest.approx(alpha, rel=1e-9)
    assert fiducial_half_widths(0.05, [1.0], 2, [0.0], [9.0], [0.0])[0] == pytest.approx(
        scipy_stats.t.ppf(0.975, 2), rel=1e-9
    )
    with pytest.raises(ValueError, match="alpha must be in"):
        fiducial_half_widths(1e-15, [1.0], 2, [1.0], [50.0], [0.0])  # would never resolve


def test_the_test_holds_its_level_in_the_tails_where_satterthwaite_does_not():
    """With 3 seeds and a small example part, Satterthwaite's approximate df reject true nulls
    many times too often at small alpha (the levels Holm's correction works at); the
    Behrens–Fisher test does not. Normal theory, b known, 20,000 draws."""
    rng = np.random.default_rng(6)
    k, rho, draws, alpha = 2, 0.1, 20_000, 0.002
    d = rng.normal(size=draws)
    a = (1 - rho) * rng.chisquare(k, draws) / k
    b = np.full(draws, rho)
    inf = np.full(draws, math.inf)
    fiducial = np.mean(fiducial_p_values(d, a, k, b, inf, np.zeros(draws)) <= alpha)
    satterthwaite_df = (a + b) ** 2 / (a * a / k)
    welch = np.mean(2 * scipy_stats.t.sf(np.abs(d) / np.sqrt(a + b), satterthwaite_df) <= alpha)
    assert fiducial <= alpha * 1.3  # exact would be alpha; conservative is allowed
    assert welch > alpha * 3  # why the approximation is not used


def test_the_level_holds_with_ten_seeds_on_ten_test_examples():
    """The full two-way layout (normal theory) where the examples' part dominates and is
    itself estimated from 9 degrees of freedom: treating it as known, or giving it fixed
    degrees of freedom, over-rejects at small alpha; integrating it too does not."""
    rng = np.random.default_rng(10)
    draws, seeds, n, alpha = 15_000, 10, 10, 0.002  # fixed df 9 for it: 1.43 alpha here
    y = rng.normal(size=(draws, 1, n)) + rng.normal(size=(draws, seeds, n))
    tables = list(y)
    rejections = sum(
        (p := seeds_and_examples(t.mean(axis=1), [t]).p_value()) is not None and p <= alpha
        for t in tables
    )
    assert rejections / draws <= alpha * 1.2


# -- calibration by simulation, through the report's analysis ---------------------------------


@pytest.mark.parametrize("regime", ["seed-dominated", "interaction"])
def test_false_positive_rate_at_three_seeds_through_the_report(regime):
    """Two methods identical in distribution, 400 replications (target languages) of a
    simulated report: the raw p <= 0.05 rate stays near alpha where seeds dominate (the
    old rule rejected 24 %) and where methods differ per example (the t over seeds
    over-rejects there)."""
    rng = np.random.default_rng(7)
    report = calibration.simulate_report(calibration.REGIMES[regime], 3, 400, 0.0, rng)
    tested = [c for c in report["comparisons"] if c["family"] == "pairwise"]
    assert len(tested) == 400 and all(c["status"] == "ok" for c in tested)
    rate = np.mean([c["p_value"] <= 0.05 for c in tested])
    assert rate <= 0.08
    covered = np.mean([c["ci"][0] <= 0.0 <= c["ci"][1] for c in tested])
    assert covered >= 0.92


def test_a_planted_difference_is_found_through_the_report():
    rng = np.random.default_rng(8)
    regime = calibration.REGIMES["test-noise"]
    report = calibration.simulate_report(regime, 5, 100, 0.6, rng)
    tested = [c for c in report["comparisons"] if c["family"] == "pairwise"]
    assert np.mean([c["p_value"] <= 0.05 for c in tested]) >= 0.8


def test_one_seed_gives_no_test_through_the_report():
    rng = np.random.default_rng(9)
    report = calibration.simulate_report(calibration.REGIMES["mixed"], 1, 20, 0.0, rng)
    tested = [c for c in report["comparisons"] if c["family"] == "pairwise"]
    assert {c["status"] for c in tested} == {"not-testable"}
    assert all("one seed" in c["reason"] and c["p_value"] is None for c in tested)
    assert all(c["p_examples"] is not None for c in tested)  # these models, new examples
    assert all(a["ci"] is None and a["ci_examples"] is not None for a in report["aggregates"])
    assert report["statistics"]["families"] == {"planned": 0, "pairwise": 0}


# -- the exact sign-flip test -----------------------------------------------------------


def test_sign_flip_p_value_equals_full_enumeration():
    rng = np.random.default_rng(5)
    for _ in range(6):
        d = rng.integers(-3, 4, size=11)
        observed = abs(int(d.sum()))
        extreme = sum(
            abs(int(np.dot(signs, d))) >= observed
            for signs in itertools.product((-1, 1), repeat=len(d))
        )
        assert sign_flip_p_value(d) == pytest.approx(extreme / 2 ** len(d), abs=1e-12)
    assert sign_flip_p_value(np.zeros(5, dtype=int)) == 1.0
    assert sign_flip_p_value(np.array([1, 1, 1])) == pytest.approx(0.25)  # 2 of 8 patterns


def test_sign_flip_false_positive_rate_is_near_alpha_under_the_null():
    """Two exchangeable models (same skill, independent mistakes) on shared examples."""
    rng = np.random.default_rng(31)
    rejections = 0
    for _ in range(RUNS):
        difficulty = rng.random(200)
        a = (difficulty < 0.7) ^ (rng.random(200) < 0.15)
        b = (difficulty < 0.7) ^ (rng.random(200) < 0.15)
        rejections += sign_flip_p_value(a.astype(int) - b.astype(int)) <= 0.05
    # exact, so never above alpha in expectation; discreteness makes it a little below
    assert 0.025 <= rejections / RUNS <= 0.065


def test_sign_flip_is_exact_with_many_examples():
    """At n = 10,000 the convolution runs by FFT; a fair coin per example must still give
    p ≈ 1 for a tiny imbalance and a tiny p for a large one."""
    d = np.array([1] * 5000 + [-1] * 4990)
    assert sign_flip_p_value(d) == pytest.approx(0.92, abs=0.02)  # z = 10 / sqrt(9990)
    assert sign_flip_p_value(np.array([1] * 5400 + [-1] * 4600)) < 1e-12


# -- multiple testing and ranks ---------------------------------------------------------


def test_holm_against_a_hand_worked_example():
    # sorted: 0.005 × 4 = 0.02; 0.01 × 3 = 0.03; 0.03 × 2 = 0.06; 0.04 × 1 = 0.04 -> 0.06
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [p <= 0.05 for p in adjusted] == [True, False, False, True]
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1 and monotone
    assert holm([]) == []


def test_average_ranks_share_ties():
    assert average_ranks([0.8, 0.9, 0.8, 0.7]) == [2.5, 1.0, 2.5, 4.0]
    assert average_ranks([0.8, 0.9, 0.8, 0.7], higher_is_better=False) == [2.5, 4.0, 2.5, 1.0]


# -- vectorised metrics and their pseudo-values -----------------------------------------


@pytest.fixture(scope="module")
def registry():
    return get_plugin_manager(strict=False).registry


def predictions(seed: int, n: int = 120, classes: int = 5):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=gen)
    logits = torch.randn(n, classes, generator=gen) * 2
    logits[torch.arange(n), y] += 1.5
    return y, torch.softmax(logits, dim=1)


@pytest.mark.parametrize("name", ["accuracy", "macro_f1", "nll", "ece", "brier"])
def test_pseudo_values_are_the_jackknife_of_compute(registry, name):
    """Each bundled metric's vectorised leave-one-out (and leave-group-out) values equal
    calling its compute on the data with that example (group) left out."""
    metric = registry.build("metrics", name, {})
    y, probs = predictions(1)
    form = metric_form(name, metric, y, probs)
    assert form is not None
    theta = metric.compute(y, probs)
    assert form.value() == pytest.approx(theta, abs=1e-12)
    by_calls = pseudo_values_by_calls(metric, y, probs, theta)
    assert form.pseudo_values() == pytest.approx(by_calls, abs=1e-9)
    groups = unit_groups(len(y), 16)
    assert groups is not None and groups.max() == 15
    assert form.pseudo_values(groups) == pytest.approx(
        pseudo_values_by_calls(metric, y, probs, theta, groups), abs=1e-9
    )
    assert form.binary == (name == "accuracy")
    if name in ("accuracy", "nll", "brier"):  # a mean: its pseudo-values are its values
        assert form.pseudo_values().mean() == pytest.approx(theta, abs=1e-12)


class Impostor:
    """A metric registered under a bundled name that computes something else."""

    higher_is_better = True

    def compute(self, y_true, probs):
        return float(probs[:, 0].mean())


class PerExample:
    """A third-party mean-decomposable metric: the probability of the true class."""

    higher_is_better = True

    def per_example(self, y_true, probs):
        return probs[torch.arange(len(y_true)), y_true].double().numpy()

    def compute(self, y_true, probs):
        return float(probs[torch.arange(len(y_true)), y_true].double().mean())


def test_vectorised_forms_are_trusted_only_when_they_reproduce_compute():
    y, probs = predictions(2)
    assert metric_form("accuracy", Impostor(), y, probs) is None
    assert metric_form("my_metric", Impostor(), y, probs) is None
    form = metric_form("p_true", PerExample(), y, probs)
    assert form is not None and not form.binary
    assert form.value() == pytest.approx(PerExample().compute(y, probs))


class RightOnlyOnTheWhole:
    """A per-example form whose mean is the metric on the full test set but not on any
    other sample: every example gets the whole set's value."""

    higher_is_better = True

    def per_example(self, y_true, probs):
        return np.full(len(y_true), self.compute(y_true, probs))

    def compute(self, y_true, probs):
        return float(probs[torch.arange(len(y_true)), y_true].double().mean())


def test_a_form_right_only_on_the_whole_set_is_caught_by_the_resample_check():
    y, probs = predictions(2)
    metric = RightOnlyOnTheWhole()
    assert metric_form("p_true", metric, y, probs) is None
    # without the resample check it would pass: the check is what catches it
    assert metric_form("p_true", metric, y, probs, resample=False) is not None


def test_intervals_and_p_values_in_one_batch_equal_each_computed_alone():
    """The report computes its thousands of intervals and p-values together; each must be
    bit for bit what the estimate gives alone (grids differ with the seeds' degrees of
    freedom and with few test examples; no variance, one seed and None have their own
    answers)."""
    rng = np.random.default_rng(7)
    estimates = [None]
    for seeds in (1, 2, 3, 5):
        for examples in (2, 5, 9, 40):
            for shift in (0.0, 0.3):
                per_seed = list(rng.normal(shift, 0.2, seeds))
                table = rng.normal(shift, 1.0, (seeds, examples))
                estimates.append(seeds_and_examples(per_seed, [table]))
    estimates.append(seeds_and_examples([0.5, 0.5, 0.5], [np.full((3, 4), 0.5)]))  # no variance
    estimates.append(seeds_and_examples([0.0, 0.0], [np.zeros((2, 4))]))  # none, at 0
    assert len({(e.seeds_df, e.examples_df >= 8) for e in estimates if e is not None}) >= 4
    for confidence in (0.95, 0.99):
        together = intervals(estimates, confidence)
        alone = [None if e is None else e.interval(confidence) for e in estimates]
        assert together == alone
        assert sum(ci is not None for ci in together) >= 25
    together_p = p_values(estimates)
    assert together_p == [None if e is None else e.p_value() for e in estimates]
    assert together_p[-1] == 1.0 and together_p[-2] is None  # no variance: 1 at 0, else none
    # and "alone" is the direct integral, not the batch code again
    e = estimates[10]
    direct = fiducial_p_values(
        [e.mean], [e.seeds_part], e.seeds_df, [e.examples_ms], [e.examples_df], [e.residual]
    )
    assert together_p[10] == float(direct[0])
    half = fiducial_half_widths(
        1.0 - 0.95, [e.seeds_part], e.seeds_df, [e.examples_ms], [e.examples_df], [e.residual]
    )
    assert intervals(estimates, 0.95)[10] == [e.mean - float(half[0]), e.mean + float(half[0])]

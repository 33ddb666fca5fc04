"""xleval.stats against known cases and simulated data: coverage of the intervals, the
paired tests' false-positive rate and power, Holm's correction, ranks, and the vectorised
forms of the bundled metrics.

Simulations are seeded, so every run checks the same numbers; the acceptance bands are
those a correct method meets (nominal rate ± about 4 standard errors of a 1000-run
estimate), not values tuned to this implementation.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from xleval.plugins import get_plugin_manager
from xleval.stats import (
    average_ranks,
    bootstrap_indices,
    bootstrap_mean_ci,
    bootstrap_p_value,
    holm,
    mean_ci,
    paired_t_test,
    percentile_interval,
    resampled_metric,
    resampled_sums,
    seed_resamples,
    sign_flip_p_value,
    t_cdf,
    t_quantile,
    two_way_means,
)

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
    assert paired_t_test([0.1, 0.1]) == 0.0


# -- the bootstrap over test examples ---------------------------------------------------


def test_resamples_are_deterministic_and_differ_between_seeds():
    first = [idx.copy() for _, idx in bootstrap_indices(50, 300, [0, 7])]
    again = [idx.copy() for _, idx in bootstrap_indices(50, 300, [0, 7])]
    other = [idx.copy() for _, idx in bootstrap_indices(50, 300, [1, 7])]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    counts = np.concatenate(first)
    assert counts.shape == (300, 50) and counts.min() >= 0 and counts.max() < 50


@pytest.mark.parametrize(("n", "resamples"), [(40, 200), (1000, 600)])
def test_gathered_and_matrix_product_sums_agree_exactly(n, resamples):
    """Few columns are gathered, many go through counts @ features (by einsum when small,
    BLAS when large): the same resamples must give the same sums, exactly for 0/1
    features, and the same as a plain loop."""
    rng = np.random.default_rng(3)
    features = (rng.random((n, 8)) < 0.5).astype(float)
    narrow = resampled_sums(features[:, :2], resamples, 5)
    wide = resampled_sums(features, resamples, 5)
    assert np.array_equal(narrow, wide[:, :2])
    loop = np.concatenate(
        [features[idx].sum(axis=1) for _, idx in bootstrap_indices(n, resamples, 5)]
    )
    assert np.array_equal(wide, loop)


def test_bootstrap_interval_covers_the_true_mean_at_the_stated_rate():
    rng = np.random.default_rng(12)
    covered = 0
    for run in range(RUNS):
        correct = (rng.random(300) < 0.7).astype(float)  # one model's hits on 300 examples
        ci = bootstrap_mean_ci(correct, 0.95, resamples=600, seed=run)["ci"]
        covered += ci[0] <= 0.7 <= ci[1]
    assert abs(covered / RUNS - 0.95) <= 0.03


def simulate_seeds(
    rng, difficulty: np.ndarray, seeds: int, seed_sd: float, edge: float = 0.0
) -> np.ndarray:
    """Per example (rows) and seed (columns): 1 if that seed's model is right.

    ``difficulty`` (uniform in [0, 1]) is shared by every model: hard examples are hard for
    all. Each seed's model has its own skill (training randomness: the shots it drew) and
    its own 10 % of flipped answers. The expected accuracy over seeds and examples is
    0.1 + 0.8 (0.7 + edge).
    """
    n = len(difficulty)
    skill = 0.7 + edge + rng.normal(0.0, seed_sd, size=seeds)
    right = difficulty[:, None] < skill[None, :]
    return (right ^ (rng.random((n, seeds)) < 0.1)).astype(float)


def test_two_way_bootstrap_covers_the_mean_over_seeds_and_examples():
    """Ten seeds whose models differ: resampling the examples (the same for every seed) and
    the seeds covers the expected score at the stated rate; resampling the examples alone
    treats these ten models as the only ones and covers less often."""
    rng = np.random.default_rng(13)
    truth = 0.1 + 0.8 * 0.7
    two_way = examples_only = 0
    for run in range(RUNS):
        correct = simulate_seeds(rng, rng.random(300), 10, seed_sd=0.08)
        per_seed = resampled_sums(correct, 400, run).T / 300  # ten columns: counts @ features
        ci = percentile_interval(two_way_means(per_seed, seed_resamples(10, 400, run)), 0.95)
        two_way += ci[0] <= truth <= ci[1]
        ci = percentile_interval(per_seed.mean(axis=0), 0.95)
        examples_only += ci[0] <= truth <= ci[1]
    assert abs(two_way / RUNS - 0.95) <= 0.03
    assert examples_only / RUNS < 0.9


def test_bootstrap_width_matches_the_normal_approximation_on_a_large_sample():
    rng = np.random.default_rng(4)
    values = rng.normal(0.0, 1.0, size=5000)
    ci = bootstrap_mean_ci(values, 0.95, resamples=4000, seed=1)["ci"]
    expected = 2 * 1.959964 * values.std(ddof=1) / math.sqrt(len(values))
    assert (ci[1] - ci[0]) == pytest.approx(expected, rel=0.08)


def test_bootstrap_p_value_is_never_zero_and_one_at_no_difference():
    samples = np.linspace(0.2, 0.4, 999)
    assert bootstrap_p_value(samples, 0.3) == pytest.approx(1 / 1000)
    assert bootstrap_p_value(samples, 0.0) == 1.0


def paired_bootstrap_p(a: np.ndarray, b: np.ndarray, seed: int) -> float:
    """The report's paired test: a and b are [examples, seeds] for two methods with the same
    seeds; examples and seeds are resampled together for both."""
    n, seeds = a.shape
    per_seed = resampled_sums(a - b, 500, seed).T / n
    deltas = two_way_means(per_seed, seed_resamples(seeds, 500, seed))
    return bootstrap_p_value(deltas, float((a - b).mean()))


def test_paired_bootstrap_false_positive_rate_is_near_alpha_under_the_null():
    rng = np.random.default_rng(21)
    rejections = 0
    for run in range(RUNS):
        shared = rng.normal(0.0, 1.0, size=(300, 1))  # per-example difficulty both see
        a = shared + rng.normal(0.0, 0.5, size=(300, 1))
        b = shared + rng.normal(0.0, 0.5, size=(300, 1))  # same distribution: no difference
        rejections += paired_bootstrap_p(a, b, run) <= 0.05
    assert abs(rejections / RUNS - 0.05) <= 0.025


def test_paired_bootstrap_keeps_its_level_when_seeds_matter():
    """Methods equal in expectation, but each seed's model is better or worse by chance:
    the two-way test stays near alpha where resampling examples alone would not."""
    rng = np.random.default_rng(23)
    rejections = 0
    for run in range(RUNS):
        difficulty = rng.random(300)
        a = simulate_seeds(rng, difficulty, 5, seed_sd=0.04)
        b = simulate_seeds(rng, difficulty, 5, seed_sd=0.04)
        rejections += paired_bootstrap_p(a, b, run) <= 0.05
    assert rejections / RUNS <= 0.08


def test_paired_bootstrap_finds_a_planted_difference():
    rng = np.random.default_rng(22)
    found = 0
    for run in range(200):
        shared = rng.normal(0.0, 1.0, size=(300, 3))
        a = shared + rng.normal(0.15, 0.5, size=(300, 3))  # a scores 0.15 higher per example
        b = shared + rng.normal(0.0, 0.5, size=(300, 3))
        found += paired_bootstrap_p(a, b, run) <= 0.05
    assert found / 200 >= 0.9


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


def test_sign_flip_finds_a_planted_accuracy_difference():
    rng = np.random.default_rng(32)
    found = 0
    for _ in range(200):
        difficulty = rng.random(300)
        a = simulate_seeds(rng, difficulty, 3, 0.0, edge=0.1)
        b = simulate_seeds(rng, difficulty, 3, 0.0)
        found += sign_flip_p_value((a - b).sum(axis=1).astype(int)) <= 0.05
    assert found / 200 >= 0.9


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
    # Bonferroni would reject only 0.005 (0.01 × 4 = 0.04 <= 0.05 as well): Holm keeps both
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1 and monotone
    assert holm([]) == []


def test_average_ranks_share_ties():
    assert average_ranks([0.8, 0.9, 0.8, 0.7]) == [2.5, 1.0, 2.5, 4.0]
    assert average_ranks([0.8, 0.9, 0.8, 0.7], higher_is_better=False) == [2.5, 4.0, 2.5, 1.0]


# -- vectorised metrics -----------------------------------------------------------------


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
def test_vectorised_metric_matches_compute_on_resamples(registry, name):
    metric = registry.build("metrics", name, {})
    y, probs = predictions(1)
    form = resampled_metric(name, metric, y, probs)
    assert form is not None
    assert form.value() == pytest.approx(metric.compute(y, probs), abs=1e-12)
    sums = resampled_sums(form.features, 20, 9)
    values = form.finish(sums, len(y))
    expected = [metric.compute(y[idx], probs[idx]) for _, rows in bootstrap_indices(len(y), 20, 9)
                for idx in rows]  # fmt: skip
    assert values == pytest.approx(expected, abs=1e-12)
    assert form.binary == (name == "accuracy")


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
    assert resampled_metric("accuracy", Impostor(), y, probs) is None
    assert resampled_metric("my_metric", Impostor(), y, probs) is None
    form = resampled_metric("p_true", PerExample(), y, probs)
    assert form is not None and not form.binary
    assert form.value() == pytest.approx(PerExample().compute(y, probs))

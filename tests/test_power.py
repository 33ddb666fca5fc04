"""Power planning: the seeds a plan asks for reach the power it states, by simulation of the
report's own test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from xleval.analysis.power import Components, examples_needed, plan_report, power
from xleval.analysis.stats import p_values, seeds_and_examples


@pytest.mark.parametrize("seeds", [3, 5, 10])
def test_with_no_examples_part_the_power_is_the_paired_t_tests(seeds):
    a, delta = 0.0004 / seeds, 0.02
    critical = st.t.ppf(0.975, seeds - 1)
    shift = delta / math.sqrt(a)
    exact = st.nct.sf(critical, seeds - 1, shift) + st.nct.cdf(-critical, seeds - 1, shift)
    assert power(delta, a, 0.0, seeds, 0.05) == pytest.approx(exact, abs=1e-6)
    assert power(0.0, a, 0.0, seeds, 0.05) == pytest.approx(0.05, abs=1e-6)


def experiments(rng, seeds, n, sd_seed, sd_example, sd_noise, delta, reps):
    """The report's estimates of ``reps`` simulated comparisons: per seed and example the
    difference of two methods, y = delta + seed + example + noise (fresh each time)."""
    out = []
    for _ in range(reps):
        y = (
            delta
            + rng.normal(0, sd_seed, (seeds, 1))
            + rng.normal(0, sd_example, (1, n))
            + rng.normal(0, sd_noise, (seeds, n))
        )
        out.append(seeds_and_examples(y.mean(axis=1), [y]))
    return out


@pytest.mark.parametrize(
    "sd_seed, sd_example, sd_noise",
    [(0.03, 0.0, 0.4), (0.02, 0.15, 0.4), (0.01, 0.12, 0.5)],
    ids=["seeds-dominate", "mixed", "examples-matter"],
)
def test_the_planned_seeds_reach_the_stated_power(sd_seed, sd_example, sd_noise):
    rng = np.random.default_rng(11)
    n, delta, target = 300, 0.03, 0.8
    # the plan from the true parts (a pilot's estimates scatter around them:
    # benchmarks/variance_calibration.py); what `xleval plan` reads from a report
    components = Components(
        per_seed=sd_seed**2 + sd_noise**2 / n, examples=sd_example**2 / n, seeds=5
    )
    needed, predicted = components.seeds_needed(delta, target, 0.05)
    assert needed is not None and predicted >= target
    assert needed == 2 or components.power(delta, needed - 1, 0.05) < target
    estimates = experiments(rng, needed, n, sd_seed, sd_example, sd_noise, delta, 2000)
    achieved = float(np.mean(np.array(p_values(estimates), dtype=float) < 0.05))
    assert abs(achieved - predicted) <= 0.05, (needed, predicted, achieved)
    assert achieved >= target - 0.05


def test_a_test_set_too_small_for_delta_is_unreachable_and_says_how_much_more():
    components = Components(per_seed=0.0004, examples=0.0004, seeds=5)
    needed, best = components.seeds_needed(0.02, 0.8, 0.05)
    assert needed is None and best < 0.8
    factor = examples_needed(components, 0.02, 0.8, 0.05)
    assert factor > 1
    larger = Components(per_seed=0.0004, examples=0.0004 / (factor * 1.05), seeds=5)
    assert larger.seeds_needed(0.02, 0.8, 0.05)[0] is not None


def test_the_detectable_difference_has_the_target_power():
    components = Components(per_seed=0.0006, examples=0.00005, seeds=5)
    smallest = components.detectable(0.8, 0.05, 5)
    assert components.power(smallest, 5, 0.05) == pytest.approx(0.8, abs=1e-6)
    assert components.detectable(0.8, 0.05, 20) < smallest  # more seeds, smaller


def test_more_draws_shrink_only_the_draws_part():
    components = Components(per_seed=0.0005, examples=0.0, seeds=4, draws=2, draw=0.0006)
    assert components.seed == pytest.approx(0.0002)
    assert components.seeds_part(4, 2) == pytest.approx(0.0005 / 4)
    assert components.seeds_part(4, 8) < components.seeds_part(4, 2)
    assert components.seeds_part(4, 10**9) == pytest.approx(0.0002 / 4)


def test_a_pilot_estimates_what_the_plan_needs():
    """The parts a plan reads from a report's comparison (``variance.seeds`` × S and
    ``variance.examples``) estimate the true ones without bias."""
    rng = np.random.default_rng(5)
    n, sd_seed, sd_example, sd_noise = 300, 0.02, 0.15, 0.4
    pilots = experiments(rng, 5, n, sd_seed, sd_example, sd_noise, 0.0, 400)
    per_seed = np.mean([p.seeds_part * 5 for p in pilots])
    examples = np.mean([p.examples_part for p in pilots])
    assert per_seed == pytest.approx(sd_seed**2 + sd_noise**2 / n, rel=0.1)
    assert examples == pytest.approx(sd_example**2 / n, rel=0.1)


def test_a_plan_skips_comparisons_without_a_test():
    report = {
        "spec": {"main_metric": "accuracy", "shots": [4]},
        "statistics": {"alpha": 0.05, "metric": "accuracy"},
        "cells": [],
        "aggregates": [],
        "comparisons": [
            {"family": "planned", "a": "x", "b": "y", "target": "de", "shots": 4,
             "status": "not-testable", "reason": "one seed", "variance": None},
            {"family": "planned", "a": "z", "b": "y", "target": "de", "shots": 4,
             "status": "ok", "reason": None, "seeds": [1, 2, 3], "difference": 0.05,
             "p_holm": 0.01, "n_examples": 400,
             "variance": {"seeds": 0.0001, "examples": 0.0001}},
        ],
    }  # fmt: skip
    plan = plan_report(report, 0.05)
    assert [s["a"] for s in plan["skipped"]] == ["x"]
    (row,) = plan["comparisons"]
    assert row["seeds"] == 3 and row["draws"] is None and row["seeds_needed"] is not None
    assert row["power_planned"] >= 0.8
    with pytest.raises(ValueError, match="delta"):
        plan_report(report, 0.0)


def test_more_seeds_than_the_cap_is_not_called_unreachable():
    from xleval.analysis.power import MAX_SEEDS

    components = Components(per_seed=0.03**2, examples=1e-6, seeds=5)
    needed, _ = components.seeds_needed(0.003, 0.8, 0.05)
    assert needed is None and components.limit(0.003, 0.05) >= 0.8
    report = {
        "spec": {"main_metric": "accuracy", "shots": [4]},
        "statistics": {"alpha": 0.05, "metric": "accuracy"},
        "cells": [],
        "aggregates": [],
        "comparisons": [
            {"family": "planned", "a": a, "b": "y", "target": "de", "shots": 4,
             "status": "ok", "reason": None, "seeds": [1, 2, 3, 4, 5], "difference": 0.0,
             "p_holm": 1.0, "n_examples": 400, "variance": variance}
            for a, variance in (
                ("capped", {"seeds": 0.03**2 / 5, "examples": 1e-6}),
                ("tied", {"seeds": 0.0, "examples": 0.0}),
            )
        ],
    }  # fmt: skip
    plan = plan_report(report, 0.003)
    (row,) = plan["comparisons"]
    assert row["a"] == "capped" and row["unreachable"] is False and "examples_factor" not in row
    assert [s["a"] for s in plan["skipped"]] == ["tied"]
    from xleval.cli.plan import plan_text

    assert f"more than {MAX_SEEDS}" in plan_text(plan)


def test_planned_seeds_with_shot_draws_reach_the_stated_power():
    """Seeds of D draws each: a seed is the mean of its draws (as the report tests it)."""
    rng = np.random.default_rng(13)
    n, delta, target = 300, 0.03, 0.8
    sd_seed, sd_draw, sd_example, sd_noise = 0.015, 0.05, 0.12, 0.4
    draw_part = sd_draw**2 + sd_noise**2 / n  # the within-seed variance of a draw's score
    components = Components(
        per_seed=sd_seed**2 + draw_part / 3, examples=sd_example**2 / n, seeds=5,
        draws=3, draw=draw_part,
    )  # fmt: skip
    for draws in (1, 4):
        seeds, predicted = components.seeds_needed(delta, target, 0.05, draws)
        assert seeds is not None
        estimates = []
        for _ in range(1500):
            y = (
                delta
                + rng.normal(0, sd_seed, (seeds, 1, 1))
                + rng.normal(0, sd_draw, (seeds, draws, 1))
                + rng.normal(0, sd_example, (1, 1, n))
                + rng.normal(0, sd_noise, (seeds, draws, n))
            ).mean(axis=1)
            estimates.append(seeds_and_examples(y.mean(axis=1), [y]))
        achieved = float(np.mean(np.array(p_values(estimates), dtype=float) < 0.05))
        assert abs(achieved - predicted) <= 0.05, (draws, seeds, predicted, achieved)

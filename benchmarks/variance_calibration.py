"""Do the variance components' intervals cover, and do `xleval plan`'s seeds reach the power
it states? Measured by simulation (normal theory) through xleval's own functions.

Components (``xleval.analysis.variance.components``): per seed s, draw d and test example i,
y = μ + α_s + γ_sd + β_i + ε_sdi; a cell's score is its mean over the n examples. The true
components of one run's score on a test set of this size: seed σ²_α, draw σ²_γ + σ²_ε / n
(a run's noise on individual examples changes with the draw and cannot be told from it),
test examples σ²_β / n. Printed: the coverage of each 95 % interval per regime, seeds and
draws (with its Monte-Carlo standard error), and the relative bias of each estimate.

Plans (``xleval.analysis.power``): a pilot of S₀ seeds estimates a comparison's parts, the
plan picks the fewest seeds with power ≥ 0.8 for δ, and fresh experiments at that many seeds
are tested with the report's test (``seeds_and_examples`` + ``p_values``). Printed: planned
seeds, predicted and achieved power (mean over pilots), and how often a plan's achieved
power is within 5 points of its prediction. Pilot "true": the plan from the true parts, the
accuracy of the power computation itself (the bar: within 5 points); pilots of 5 and 30
seeds show how a pilot's estimation error scatters plans.

    python benchmarks/variance_calibration.py              # 1000 replications per row
    python benchmarks/variance_calibration.py --reps 200   # a quick look
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xleval.analysis.power import Components
from xleval.analysis.stats import p_values, seeds_and_examples
from xleval.analysis.variance import components

N_TEST = 200
#: (name, sd of α, sd of γ, sd of β, sd of ε) on the per-example scale
REGIMES = [
    ("seed-dominated", 0.06, 0.01, 0.3, 0.3),
    ("draw-dominated", 0.01, 0.06, 0.3, 0.3),
    ("balanced", 0.03, 0.03, 0.4, 0.4),
    ("examples-only", 0.0, 0.0, 0.5, 0.3),
]


def simulate_components(rng, seeds, draws, regime, reps, confidence=0.95):
    _, sa, sg, sb, se = regime
    truth = {"seed": sa**2, "draw": sg**2 + se**2 / N_TEST, "examples": sb**2 / N_TEST}
    separated = draws > 1
    if not separated:  # one draw per seed: the seed's part holds the draw's
        truth["seed"] += truth.pop("draw")
    hits = {k: 0 for k in truth}
    estimates = {k: [] for k in truth}
    for _ in range(reps):
        y = (
            0.5
            + rng.normal(0, sa, (seeds, 1, 1))
            + rng.normal(0, sg, (seeds, draws, 1))
            + rng.normal(0, sb, (1, 1, N_TEST))
            + rng.normal(0, se, (seeds, draws, N_TEST))
        )
        z = y.mean(axis=2)
        out = components(z, y.reshape(seeds * draws, N_TEST), confidence, separated=separated)
        for k, true in truth.items():
            c = out["components"][k]
            low, high = (v * v for v in c["ci"])
            hits[k] += low <= true <= high
            estimates[k].append(c["variance"])
    return {
        k: (hits[k] / reps, np.mean(estimates[k]) / truth[k] - 1 if truth[k] else 0.0)
        for k in truth
    }


def experiments(rng, seeds, n, sd_seed, sd_example, sd_noise, delta, reps):
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


def plan_rows(rng, reps, pilots):
    delta, n = 0.03, 300
    settings = [("seeds-dominate", 0.03, 0.0, 0.4), ("mixed", 0.02, 0.15, 0.4)]
    rows = []
    for name, sd_seed, sd_example, sd_noise in settings:
        for pilot_seeds in (None, 5, 30):
            planned, predicted, achieved = [], [], []
            for _ in range(1 if pilot_seeds is None else pilots):
                if pilot_seeds is None:  # the true parts: the plan's own accuracy
                    c = Components(sd_seed**2 + sd_noise**2 / n, sd_example**2 / n, 2)
                else:
                    (pilot,) = experiments(rng, pilot_seeds, n, sd_seed, sd_example, sd_noise, 0, 1)
                    c = Components(pilot.seeds_part * pilot_seeds, pilot.examples_part, pilot_seeds)
                seeds, power = c.seeds_needed(delta, 0.8, 0.05)
                if seeds is None:
                    continue
                found = experiments(rng, seeds, n, sd_seed, sd_example, sd_noise, delta, reps)
                rate = float(np.mean(np.array(p_values(found), dtype=float) < 0.05))
                planned.append(seeds)
                predicted.append(power)
                achieved.append(rate)
            rows.append(
                (
                    name,
                    "true" if pilot_seeds is None else pilot_seeds,
                    f"{np.median(planned):.0f} ({min(planned)}-{max(planned)})",
                    f"{np.mean(predicted):.3f}",
                    f"{np.mean(achieved):.3f}",
                    f"{np.mean(np.abs(np.array(achieved) - np.array(predicted)) <= 0.05):.2f}",
                )
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--pilots", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(2026)
    started = time.perf_counter()
    se = (0.95 * 0.05 / args.reps) ** 0.5
    print(f"coverage of the 95 % intervals ({args.reps} replications; MC se {se:.3f})")
    print(f"{'regime':16} {'seeds':>5} {'draws':>5}  {'seed':>14} {'draw':>14} {'examples':>14}")
    for regime in REGIMES:
        for seeds, draws in ((3, 1), (3, 3), (5, 1), (5, 3), (10, 2), (10, 5)):
            result = simulate_components(rng, seeds, draws, regime, args.reps)
            cells = []
            for k in ("seed", "draw", "examples"):
                if k in result:
                    coverage, bias = result[k]
                    cells.append(f"{coverage:.3f} ({bias:+.0%})")
                else:
                    cells.append("in seed")
            print(f"{regime[0]:16} {seeds:>5} {draws:>5}  " + " ".join(f"{c:>14}" for c in cells))
    print("\nplans: seeds for power 0.8 at delta 0.03, alpha 0.05, 300 test examples")
    print(
        f"{'setting':16} {'pilot':>5}  {'planned (range)':>16} {'predicted':>9} "
        f"{'achieved':>9} {'within 5 pts':>12}"
    )
    for row in plan_rows(rng, args.reps, args.pilots):
        print(f"{row[0]:16} {row[1]:>5}  {row[2]:>16} {row[3]:>9} {row[4]:>9} {row[5]:>12}")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

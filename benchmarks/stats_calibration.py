"""Do xleval's significance tests hold their error rate, and do its intervals cover? Measured
by simulation, through the report's own analysis (``xleval.analysis.analyse.analyse``).

Model (per example i, method m, seed s): correct ~ Bernoulli(sigmoid(a + δ_m + u_ms + b_i +
e_mi)), with u the training seed's effect (independent between the targets of a batch, so
that each target is a replication of its own; half shared in the 4-target reports, as a
source model is), b how hard an example is (shared by every method) and e how a method
fares on a particular example (method × example interaction). Two methods identical in
distribution (δ = 0) make every comparison a true null. Regimes:

* ``test-noise``: seeds do not matter (u = 0): per-seed spread is test noise only.
* ``mixed``: the seeds' spread about equals the test noise.
* ``seed-dominated``: per-seed accuracy sd ≈ 0.12, far above the test noise.
* ``interaction``: methods differ on particular examples (e), as the quickstart's methods
  do on ddtp-sections; here a test that ignores the test examples over-rejects.

Each replication is one target language of a simulated report: its own test set and seed
effects, the two methods compared on it (raw p-value, before Holm), their scores and the
difference with intervals; the transfer gap (against a simulated source language) and the
mean over 4 targets are checked on reports of 4 targets. Printed per regime and seed count:
false-positive rate at alpha = 0.05 (with its Monte-Carlo standard error), power at two
effect sizes for xleval's test next to the paired t over seeds (``p_seeds``) and the exact
sign-flip test given the trained models (``p_examples``), and the coverage of every interval
at 95 %. The bars (issue 15): every false-positive rate ≤ 0.05 + 2 SE, every coverage ≥ 0.93,
power ≥ the paired t over seeds where that test is valid, one seed → no test.

    python benchmarks/stats_calibration.py                  # 2000 replications per cell
    python benchmarks/stats_calibration.py --reps 300       # a quick look
    python benchmarks/stats_calibration.py --normal-theory  # the test vs Satterthwaite (~1 h)
    python benchmarks/stats_calibration.py --small-test-sets  # few test examples (1 min)
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CLASSES = 4
N_TEST = 300
N_SOURCE = 400
INTERCEPT = 0.8  # accuracy about 0.66 on an average example
SOURCE_INTERCEPT = 1.6
DIFFICULTY = 1.5  # sd of b, on the logit scale


@dataclass(frozen=True)
class Regime:
    name: str
    seed_sd: float  # sd of u (logit scale)
    interaction_sd: float  # sd of e (logit scale)
    effects: tuple[float, float]  # two logit shifts δ for the power columns


REGIMES = {
    "test-noise": Regime("test-noise", 0.0, 0.0, (0.15, 0.3)),
    "mixed": Regime("mixed", 0.15, 0.0, (0.15, 0.3)),
    "seed-dominated": Regime("seed-dominated", 0.7, 0.0, (0.4, 0.8)),
    "interaction": Regime("interaction", 0.15, 1.0, (0.15, 0.3)),
}


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def expected_accuracy(intercept: float, sd: float) -> float:
    """E[sigmoid(intercept + Z sd)], Z standard normal (Gauss–Hermite, 80 nodes)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    return float(np.sum(weights * sigmoid(intercept + sd * nodes)) / math.sqrt(2 * math.pi))


def true_values(regime: Regime, delta: float) -> dict[str, float]:
    """Population values: over seeds and examples, for method a (shifted by delta) and b."""
    sd = math.sqrt(regime.seed_sd**2 + DIFFICULTY**2 + regime.interaction_sd**2)
    source_sd = math.sqrt(regime.seed_sd**2 + DIFFICULTY**2 + regime.interaction_sd**2)
    a = expected_accuracy(INTERCEPT + delta, sd)
    b = expected_accuracy(INTERCEPT, sd)
    return {
        "a": a,
        "b": b,
        "difference": a - b,
        "gap_a": expected_accuracy(SOURCE_INTERCEPT + delta, source_sd) - a,
    }


@functools.lru_cache(maxsize=1)
def plugin_manager():
    from xleval.plugin.manager import get_plugin_manager

    return get_plugin_manager(strict=False)


def make_spec(targets: list[str], seeds: list[int]):
    from xleval.experiment.spec import resolve_spec

    pm = plugin_manager()
    spec = resolve_spec(
        {
            "dataset": {"name": "jsonl", "options": {"path": "simulated.jsonl"}},
            "source": "sr",
            "targets": targets,
            "shots": [8],
            "seeds": seeds,
            "metrics": ["accuracy"],
            "methods": [
                {"protocol": "joint", "label": "a"},
                {"protocol": "joint", "label": "b"},
            ],
        },
        pm.registry,
    )
    return pm, spec


def simulate_report(
    regime: Regime,
    n_seeds: int,
    targets: int,
    delta: float,
    rng: np.random.Generator,
    shared: float = 0.0,
) -> dict[str, Any]:
    """One simulated report of ``targets`` target languages, analysed by xleval.

    ``shared`` is the part of a seed's variance its targets share (a source model is shared
    by every target of its seed): 0 makes the targets independent replications."""
    import torch

    from xleval.analysis.analyse import analyse
    from xleval.api.predictions import encode_predictions

    names = [f"tg-r{i:05d}" for i in range(targets)]
    seeds = list(range(1, n_seeds + 1))
    pm, spec = make_spec(names, seeds)
    shift = {"a": delta, "b": 0.0}
    seed_effect = {m: rng.normal(0.0, regime.seed_sd, n_seeds) for m in shift}
    source_b = rng.normal(0.0, DIFFICULTY, N_SOURCE)
    source_e = {m: rng.normal(0.0, regime.interaction_sd, N_SOURCE) for m in shift}
    cells, stored = [], {}

    def predictions(correct: np.ndarray, lang: str, y: np.ndarray) -> dict[str, Any]:
        wrong = (y + 1 + rng.integers(0, CLASSES - 1, len(y))) % CLASSES
        predicted = np.where(correct, y, wrong)
        probs = np.full((len(y), CLASSES), 0.1, dtype=np.float32)
        probs[np.arange(len(y)), predicted] = 0.7
        ids = [f"{lang}:{i}" for i in range(len(y))]
        return encode_predictions(ids, torch.tensor(y), torch.from_numpy(probs))

    y_source = rng.integers(0, CLASSES, N_SOURCE)
    for t in names:
        b = rng.normal(0.0, DIFFICULTY, N_TEST)
        e = {m: rng.normal(0.0, regime.interaction_sd, N_TEST) for m in shift}
        y = rng.integers(0, CLASSES, N_TEST)
        for m, d in shift.items():
            for s, u in zip(seeds, seed_effect[m], strict=True):
                own = rng.normal(0.0, regime.seed_sd)
                u_t = math.sqrt(shared) * u + math.sqrt(1.0 - shared) * own
                right = rng.random(N_TEST) < sigmoid(INTERCEPT + d + u_t + b + e[m])
                source = rng.random(N_SOURCE) < sigmoid(
                    SOURCE_INTERCEPT + d + u_t + source_b + source_e[m]
                )
                key = f"{m}/{t}/{s}"
                cells.append(
                    {
                        "key": key,
                        "method": m,
                        "protocol": "joint",
                        "sources": ["sr"],
                        "target": t,
                        "shots": 8,
                        "seed": s,
                        "status": "ok",
                        "metrics": {"accuracy": float(right.mean())},
                        "source_metrics": {"sr": {"accuracy": float(source.mean())}},
                        "train_seconds": 0.0,
                        "eval_seconds": 0.0,
                        "n_test": N_TEST,
                        "error": None,
                        "info": {"n_shots": 8 * CLASSES, "shortfall": {}},
                    }
                )
                stored[(key, t)] = predictions(right, t, y)
                stored[(key, "sr")] = predictions(source, "sr", y_source)
    metric = pm.registry.build("metrics", "accuracy", {})
    return analyse(cells, spec, {"accuracy": metric}, lambda k, lang: stored.get((k, lang)))


def covers(interval: list[float] | None, value: float) -> bool | None:
    return None if interval is None else interval[0] <= value <= interval[1]


class Tally:
    """Counts of successes over trials, with the Monte-Carlo standard error."""

    def __init__(self) -> None:
        self.hits = 0
        self.trials = 0

    def add(self, hit: bool | None) -> None:
        if hit is not None:
            self.hits += bool(hit)
            self.trials += 1

    def rate(self) -> float:
        return self.hits / self.trials if self.trials else float("nan")

    def se(self) -> float:
        p = self.rate()
        return math.sqrt(p * (1 - p) / self.trials) if self.trials else float("nan")

    def text(self) -> str:
        if not self.trials:
            return "no test"
        return f"{self.rate():.3f} ± {self.se():.3f}"


def comparisons_of(out: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in out["comparisons"] if c["family"] == "pairwise"]


def run_cell(regime: Regime, n_seeds: int, reps: int, seed: int) -> dict[str, Any]:
    """Every measure of one (regime, seeds) cell of the table."""
    rng = np.random.default_rng(seed)
    alpha = 0.05
    out: dict[str, Any] = {}
    batch = 250
    for label, delta in (("null", 0.0), ("power1", regime.effects[0]),
                         ("power2", regime.effects[1])):  # fmt: skip
        truth = true_values(regime, delta)
        tallies = {k: Tally() for k in ("test", "seeds", "examples", "ci_diff", "ci_score")}
        statuses: dict[str, int] = {}
        done = 0
        while done < reps:
            size = min(batch, reps - done)
            report = simulate_report(regime, n_seeds, size, delta, rng)
            for c in comparisons_of(report):
                statuses[c["status"]] = statuses.get(c["status"], 0) + 1
                if c["status"] == "ok":
                    tallies["test"].add(c["p_value"] <= alpha)
                    tallies["ci_diff"].add(covers(c["ci"], truth["difference"]))
                if c["p_seeds"] is not None:
                    tallies["seeds"].add(c["p_seeds"] <= alpha)
                if c["p_examples"] is not None:
                    tallies["examples"].add(c["p_examples"] <= alpha)
            for agg in report["aggregates"]:
                tallies["ci_score"].add(covers(agg["ci"], truth[agg["method"]]))
            done += size
        out[label] = tallies | {"statuses": statuses}
    # reports of 4 targets, each with its own source test set: the mean over targets, and
    # the transfer gap of the first target (one per report, so replications are independent)
    mean_targets, gap = Tally(), Tally()
    truth = true_values(regime, 0.0)
    for _ in range(max(1, reps // 2)):
        report = simulate_report(regime, n_seeds, 4, 0.0, rng, shared=0.5)
        by_shots = report["summary"]
        mean_targets.add(covers(by_shots["b"]["by_shots"]["8"]["score_ci"], truth["b"]))
        gap_ci = by_shots["a"]["by_shots"]["8"]["transfer_gap_per_target_ci"].get("tg-r00000")
        gap.add(covers(gap_ci, truth["gap_a"]))
    out["ci_mean_targets"] = mean_targets
    out["ci_gap"] = gap
    return out


def normal_theory(draws: int = 400_000, seed: int = 0) -> None:
    """The test itself in normal theory, against Satterthwaite's approximate degrees of
    freedom: true nulls with a seeds' part on k = S − 1 df and a known examples' part (a
    share rho of the variance), rejection rate / alpha at small alpha too (Holm works
    there)."""
    from scipy import stats as scipy_stats

    from xleval.analysis.stats import fiducial_p_values

    rng = np.random.default_rng(seed)
    shares = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
    print("| seeds | alpha | test | " + " | ".join(f"rho={r}" for r in shares) + " |")
    print("|---|---|---|" + "---|" * len(shares))
    for n_seeds in (3, 5, 10):
        k = n_seeds - 1
        for alpha in (0.05, 0.01, 0.001):
            rows: dict[str, list[str]] = {"xleval": [], "Satterthwaite": []}
            for rho in shares:
                d = rng.normal(size=draws)
                a = (1 - rho) * rng.chisquare(k, draws) / k
                b = np.full(draws, rho)
                known = np.full(draws, math.inf)  # the examples' part known: its df infinite
                ours = fiducial_p_values(d, a, k, b, known, np.zeros(draws))
                with np.errstate(divide="ignore"):
                    df = np.where(a > 0, (a + b) ** 2 / (a * a / k), np.inf)
                welch = 2 * scipy_stats.t.sf(np.abs(d) / np.sqrt(a + b), df)
                rows["xleval"].append(f"{np.mean(ours <= alpha) / alpha:.2f}")
                rows["Satterthwaite"].append(f"{np.mean(welch <= alpha) / alpha:.2f}")
            for name, cells in rows.items():
                print(f"| {n_seeds} | {alpha} | {name} | " + " | ".join(cells) + " |")
    small_test_sets()


def small_test_sets(draws: int = 20_000, seed: int = 1) -> None:
    """The whole estimate (xleval.analysis.stats.seeds_and_examples) on the two-way layout y = β_i +
    ε_si (normal, the examples' part dominant) with few test examples, where that part's
    own estimate is uncertain: rejection rate of true nulls / alpha."""
    from xleval.analysis.stats import seeds_and_examples

    rng = np.random.default_rng(seed)
    levels = (0.05, 0.01, 0.001)
    print("\n| seeds | test examples | " + " | ".join(f"alpha={a}" for a in levels) + " |")
    print("|---|---|" + "---|" * len(levels))
    for n_seeds, n in ((3, 5), (3, 10), (10, 5), (10, 10), (10, 20), (30, 10)):
        y = rng.normal(size=(draws, 1, n)) + rng.normal(size=(draws, n_seeds, n))
        p = np.array([seeds_and_examples(t.mean(axis=1), [t]).p_value() for t in y])
        cells = [f"{np.mean(p <= a) / a:.2f}" for a in levels]
        print(f"| {n_seeds} | {n} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=2000, help="replications per cell")
    parser.add_argument("--seeds", default="1,3,5,10", help="seed counts")
    parser.add_argument("--regimes", default=",".join(REGIMES), help="regimes to run")
    parser.add_argument(
        "--normal-theory",
        action="store_true",
        help="only the test against Satterthwaite's approximation in normal theory",
    )
    parser.add_argument(
        "--small-test-sets",
        action="store_true",
        help="only the whole estimate on the two-way layout with few test examples (1 min)",
    )
    args = parser.parse_args()
    if args.normal_theory:
        normal_theory()
        return
    if args.small_test_sets:
        small_test_sets()
        return
    seed_counts = [int(s) for s in args.seeds.split(",")]
    started = time.perf_counter()
    rows = []
    for name in args.regimes.split(","):
        regime = REGIMES[name]
        for n_seeds in seed_counts:
            result = run_cell(
                regime, n_seeds, args.reps, seed=zlib.crc32(f"{name}/{n_seeds}".encode())
            )
            rows.append((name, n_seeds, result))
            print_row(name, n_seeds, result, flush=True)
    print(f"\n{args.reps} replications per cell; {time.perf_counter() - started:.0f} s")


HEADER_DONE = False


def print_row(name: str, n_seeds: int, result: dict[str, Any], flush: bool = False) -> None:
    global HEADER_DONE
    if not HEADER_DONE:
        print(
            "| regime | seeds | false-positive rate | power δ1: xleval / t seeds / exact "
            "| power δ2: xleval / t seeds / exact | coverage: score / difference / gap / "
            "mean over 4 targets | t seeds FPR | exact FPR |"
        )
        print("|---|---|---|---|---|---|---|---|")
        HEADER_DONE = True
    null, p1, p2 = result["null"], result["power1"], result["power2"]

    def power(r: dict[str, Tally]) -> str:
        return " / ".join(f"{r[k].rate():.3f}" if r[k].trials else "–"
                          for k in ("test", "seeds", "examples"))  # fmt: skip

    coverage = " / ".join(
        t.text() if t.trials else "–"
        for t in (null["ci_score"], null["ci_diff"], result["ci_gap"], result["ci_mean_targets"])
    )
    fpr = (
        null["test"].text()
        if null["test"].trials
        else (f"no test ({', '.join(f'{k}: {v}' for k, v in null['statuses'].items())})")
    )
    print(
        f"| {name} | {n_seeds} | {fpr} | {power(p1)} | {power(p2)} | {coverage} | "
        f"{null['seeds'].text()} | {null['examples'].text()} |",
        flush=flush,
    )


if __name__ == "__main__":
    main()

"""Builds the JSON report of a run (specs/report.schema.json), validates it and writes it.

The report carries what is needed to trust and reproduce the numbers: the resolved spec,
versions of everything that ran, the dataset fingerprint and counts, every cell with its
status and timings; aggregates with intervals over seeds and over test examples; paired
comparisons between methods with Holm-corrected p-values; and per method the score over
targets, the transfer gap, ranks, win/tie/loss counts, learning curves and break-even shots.

The statistics work from the cells' stored predictions (the run's results, or
predictions.jsonl when rescoring), so they need no retraining and come out the same each
time: every random draw is seeded from statistics.seed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import platform
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

from xleval import __version__
from xleval.cache import atomic_write_text
from xleval.data import MultilingualDataset
from xleval.errors import XlevalError
from xleval.plugins import XlevalPluginManager
from xleval.registry import schema_errors
from xleval.resources import load_schema
from xleval.runner import Cell, RunOutcome, decode_predictions
from xleval.spec import ExperimentSpec
from xleval.stats import (
    ResampledMetric,
    average_ranks,
    bootstrap_p_value,
    holm,
    mean_ci,
    paired_t_test,
    percentile_interval,
    resampled_metric,
    resampled_sums,
    seed_resamples,
    sign_flip_p_value,
    two_way_means,
)

SCHEMA_VERSION = 1


class ReportError(XlevalError):
    """A report that does not match specs/report.schema.json."""


def git_commit(cwd: Path | None = None) -> str | None:
    """The current git commit of ``cwd``, if it is inside a work tree (None otherwise)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def environment(pm: XlevalPluginManager) -> dict[str, Any]:
    import torch

    from xleval.rowkernel import row_kernel_available

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "row_kernel": row_kernel_available(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "plugins": [
            {
                "name": r.name,
                "distribution": r.distribution,
                "version": r.version,
                "status": r.status,
            }
            for r in sorted(pm.records.values(), key=lambda r: r.name)
        ],
    }


def cell_entry(cell: Cell, key: str, result: dict[str, Any] | None) -> dict[str, Any]:
    """A cell as the report shows it (predictions live in predictions.jsonl, not here)."""
    entry: dict[str, Any] = {"key": key, **cell.to_json()}
    if result is None or result["status"] != "ok":
        # no result: not run, the run was interrupted or stopped by --fail-fast
        error = (
            "not run (the run was interrupted or stopped early)"
            if result is None
            else result["error"]
        )
        return entry | {
            "status": "failed",
            "metrics": {},
            "source_metrics": {},
            "train_seconds": None,
            "eval_seconds": None,
            "n_test": None,
            "error": error,
        }
    return entry | {
        "status": "ok",
        "metrics": result["metrics"],
        "source_metrics": result["source_metrics"],
        "train_seconds": result["train_seconds"],
        "eval_seconds": result["eval_seconds"],
        "n_test": result["n_test"],
        "error": None,
        "info": result.get("info", {}),
    }


# -- what the grid holds: columns and seeds ----------------------------------------------

Column = tuple[str, str, Any]  # (method, target, shots)


def shots_sort_key(shots: Any) -> tuple[int, int]:
    """Numeric shot counts in order, ``"all"`` after every number."""
    return (1, 0) if shots == "all" else (0, int(shots))


def grid_columns(
    cells: Sequence[dict[str, Any]], spec: ExperimentSpec
) -> dict[Column, list[dict[str, Any]]]:
    """(method, target, shots) -> its cells, failed ones included (they say the column exists).

    Zero-shot does not depend on k: its cells (run at k = 0) belong to every shots column.
    """
    columns: dict[Column, list[dict[str, Any]]] = defaultdict(list)
    for c in cells:
        for shots in spec.shots if c["protocol"] == "zero-shot" else (c["shots"],):
            columns[(c["method"], c["target"], shots)].append(c)
    return columns


def ok_by_seed(column: Sequence[dict[str, Any]], metric: str) -> dict[int, dict[str, Any]]:
    """The column's successful cells that have ``metric``, by seed."""
    return {
        c["seed"]: c for c in column if c["status"] == "ok" and c["metrics"].get(metric) is not None
    }


def aggregate(
    cells: list[dict[str, Any]], spec: ExperimentSpec, confidence: float
) -> list[dict[str, Any]]:
    """Mean, std and t-interval over seeds per (method, target, shots, metric).

    Zero-shot does not depend on k: its one value per seed is reported in every shots
    column, marked ``shots_independent``, so tables and comparisons line up.
    """
    values: dict[tuple[str, str, Any, str], list[float]] = defaultdict(list)
    independent = set()
    for c in cells:
        if c["status"] != "ok":
            continue
        columns = spec.shots if c["protocol"] == "zero-shot" else (c["shots"],)
        for shots in columns:
            for metric, value in c["metrics"].items():
                if value is not None:
                    values[(c["method"], c["target"], shots, metric)].append(value)
            if c["protocol"] == "zero-shot":
                independent.add((c["method"], c["target"], shots))
    order = {m.label: i for i, m in enumerate(spec.methods)}
    shots_order = {s: i for i, s in enumerate(spec.shots)}
    out = []
    for (method, target, shots, metric), vals in sorted(
        values.items(),
        key=lambda kv: (order[kv[0][0]], kv[0][1], shots_order.get(kv[0][2], 0), kv[0][3]),
    ):
        entry = {"method": method, "target": target, "shots": shots, "metric": metric}
        entry |= mean_ci(vals, confidence)
        if (method, target, shots) in independent:
            entry["shots_independent"] = True
        out.append(entry)
    return out


# -- the bootstrap over each target language's test examples ------------------------------

#: (cell key, language) -> the stored predictions (runner.encode_predictions), or None.
PredictionSource = Callable[[str, str], Mapping[str, Any] | None]


@dataclass
class TargetResamples:
    """Every successful cell's metrics on the same bootstrap resamples of one target
    language's test split.

    All cells of a target are evaluated on the same examples in the same order, so one set
    of resamples serves them all: a method's seeds and any two methods are paired on each
    resample, which is what makes the comparisons paired.
    """

    target: str
    n: int
    replicates: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    per_example: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    slow: set[str] = field(default_factory=set)  # metrics called once per resample


def stream_seed(base: int, *names: str) -> list[int]:
    """Entropy for one named random stream: the spec's statistics seed and stable name hashes
    (Python's ``hash`` of a str changes between processes; SHA-256 does not)."""
    return [base, *(int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "big") for s in names)]


@dataclass
class TargetForms:
    """One target language's cells, ready to resample: each (cell key, metric) as a
    vectorised form, or as the metric and predictions to call once per resample."""

    target: str
    n: int
    forms: dict[tuple[str, str], ResampledMetric] = field(default_factory=dict)
    slow: dict[tuple[str, str], tuple[Any, Any, Any]] = field(default_factory=dict)


def prepare_target(
    target: str,
    cells: Sequence[dict[str, Any]],
    metrics: Mapping[str, Any],
    predictions: PredictionSource,
    notes: list[str],
) -> TargetForms | None:
    """Decode the stored predictions of every successful cell of ``target`` and write each
    metric in vectorised form where one exists (:func:`xleval.stats.resampled_metric`).

    All cells must be evaluated on the same examples (aligned by id if their order
    differs); a cell without predictions or on other examples is left out and noted.
    """
    from xleval.runner import decode_predictions

    reference: list[str] | None = None
    reference_y: np.ndarray | None = None
    out: TargetForms | None = None
    for c in cells:
        if c["status"] != "ok" or c["target"] != target:
            continue
        where = f"{c['method']} {target} k={c['shots']} seed={c['seed']}"
        stored = predictions(c["key"], target)
        if stored is None:
            notes.append(f"{where}: no stored predictions; left out of the bootstrap and tests")
            continue
        y, probs = decode_predictions(stored)
        ids = list(stored["ids"])
        if reference is None:
            reference, reference_y = ids, y.numpy()
            out = TargetForms(target, len(ids))
        elif ids != reference:
            position = {example: i for i, example in enumerate(ids)}
            if len(ids) != len(reference) or set(position) != set(reference):
                notes.append(f"{where}: other test examples than the other cells'; left out")
                continue
            order = [position[example] for example in reference]
            y, probs = y[order], probs[order]
        if not np.array_equal(y.numpy(), reference_y):
            notes.append(f"{where}: other test labels than the other cells'; left out")
            continue
        for name, metric in metrics.items():
            value = c["metrics"].get(name)
            if value is None:
                continue
            form = resampled_metric(name, metric, y, probs, expected=value)
            if form is None:
                out.slow[(c["key"], name)] = (metric, y, probs)
            else:
                out.forms[(c["key"], name)] = form
    if out is None or out.n == 0:
        return None
    for name in sorted({name for _, name in out.slow}):
        notes.append(
            f"metric '{name}' on {target}: no vectorised form; bootstrapped by calling it "
            "once per resample"
        )
    return out


def resample_target(
    data: TargetForms, metrics: Sequence[str], *, resamples: int, seed: int, stream: str
) -> TargetResamples:
    """Every (cell, metric) of ``data`` with a metric in ``metrics`` on the same bootstrap
    resamples of the target's test examples: vectorised forms summed together (one gather
    or matrix product per chunk), other metrics called once per resample (slow but exact).
    """
    out = TargetResamples(data.target, data.n)
    blocks: list[tuple[tuple[str, str], ResampledMetric, slice]] = []
    width = 0
    for key, form in data.forms.items():
        if key[1] in metrics:
            blocks.append((key, form, slice(width, width + form.features.shape[1])))
            width += form.features.shape[1]
            if form.binary:
                out.per_example[key] = form.per_example
    slow = {key: call for key, call in data.slow.items() if key[1] in metrics}
    slow_values = {key: np.empty(resamples) for key in slow}

    def call_each(rows: slice, idx: np.ndarray) -> None:
        for key, (metric, y, probs) in slow.items():
            for r, sample in enumerate(idx):
                slow_values[key][rows.start + r] = metric.compute(y[sample], probs[sample])

    features = (
        np.hstack([form.features for _, form, _ in blocks]) if blocks else np.zeros((data.n, 0))
    )
    sums = resampled_sums(
        features,
        resamples,
        stream_seed(seed, stream, data.target),
        visit=call_each if slow else None,
    )
    for key, form, columns in blocks:
        out.replicates[key] = form.finish(sums[:, columns], data.n)
    out.replicates.update(slow_values)
    out.slow = {name for _, name in slow}
    return out


@dataclass
class Resamples:
    """The report's two-way bootstrap: test examples resampled per target language (shared
    by all of its cells) and, on top, the seeds resampled per replicate (shared by every
    method, column and target with the same seeds, so comparisons stay paired on seeds).
    """

    targets: Mapping[str, TargetResamples | None]
    resamples: int
    seed: int
    draws: dict[tuple[int, ...], np.ndarray] = field(default_factory=dict)

    def n_examples(self, target: str) -> int | None:
        boot = self.targets.get(target)
        return boot.n if boot is not None else None

    def per_seed(
        self, target: str, by_seed: Mapping[int, dict[str, Any]], seeds: Sequence[int], metric: str
    ) -> np.ndarray | None:
        """``[seeds, resamples]``: each seed's cell on the example resamples (None if any
        cell has no resamples: no predictions stored)."""
        boot = self.targets.get(target)
        if boot is None or not seeds:
            return None
        rows = [boot.replicates.get((by_seed[s]["key"], metric)) for s in seeds]
        return None if any(r is None for r in rows) else np.stack(rows)

    def over_seeds(self, per_seed: np.ndarray, seeds: Sequence[int]) -> np.ndarray:
        """The mean over seeds on every replicate, the seeds resampled too."""
        key = tuple(seeds)
        if key not in self.draws:
            self.draws[key] = seed_resamples(
                len(key), self.resamples, stream_seed(self.seed, "seeds", *map(str, key))
            )
        return two_way_means(per_seed, self.draws[key])

    def column(
        self, target: str, by_seed: Mapping[int, dict[str, Any]], metric: str
    ) -> np.ndarray | None:
        """Replicates of a column's seed-mean score."""
        seeds = sorted(by_seed)
        per_seed = self.per_seed(target, by_seed, seeds, metric)
        return None if per_seed is None else self.over_seeds(per_seed, seeds)


# -- comparisons --------------------------------------------------------------------------


def significance_level(confidence: float) -> float:
    """alpha = 1 − confidence, rounded so 0.95 gives 0.05 rather than 0.050000000000000044."""
    return round(1.0 - confidence, 12)


def resolve_baseline(spec: ExperimentSpec) -> str:
    """statistics.baseline, else the method labelled or of protocol target-only, else the
    first method: the reference practitioners ask about ("does transfer beat training on
    the target data alone?")."""
    chosen = spec.statistics.get("baseline")
    if chosen:
        return chosen
    labels = [m.label for m in spec.methods]
    if "target-only" in labels:
        return "target-only"
    return next((m.label for m in spec.methods if m.protocol == "target-only"), labels[0])


def planned_pairs(spec: ExperimentSpec, baseline: str) -> list[tuple[str, str]]:
    """Every method against the baseline, then statistics.compare's extra pairs, once each."""
    pairs = [(m.label, baseline) for m in spec.methods if m.label != baseline]
    for a, b in spec.statistics.get("compare", []):
        if a != b and (a, b) not in pairs and (b, a) not in pairs:
            pairs.append((a, b))
    return pairs


@dataclass
class Comparer:
    """Paired comparison of two methods in one (target, shots) column, on the main metric.

    Paired on seeds (a seed gives both methods the same shots and source model) and on test
    examples. The difference is A − B in metric units: the mean of the per-seed differences.

    Its p-value comes from the two-way paired bootstrap (test examples and seeds resampled
    together, the same draws for both methods): a difference must stand out from test-set
    noise and from training randomness both. For metrics that are a mean of 0/1 values per
    example (accuracy) the exact sign-flip test is run too; it is conditional on the trained
    models, and the larger of the two p-values counts (an intersection-union test, valid
    because both must reject), so the exact test guards the bootstrap's optimism on small
    test sets. Without stored predictions: the paired t-test over seeds. That t-test is
    always reported as ``p_seeds``: does the difference hold across training runs?
    """

    spec: ExperimentSpec
    columns: dict[Column, list[dict[str, Any]]]
    resamples: Resamples
    metric: str
    higher_is_better: bool
    confidence: float
    cache: dict[tuple[str, str, str, Any], dict[str, Any]] = field(default_factory=dict)

    def compare(self, a: str, b: str, target: str, shots: Any) -> dict[str, Any]:
        key = (a, b, target, shots)
        if key not in self.cache:
            self.cache[key] = self._compare(a, b, target, shots)
        return dict(self.cache[key])

    def _compare(self, a: str, b: str, target: str, shots: Any) -> dict[str, Any]:
        metric = self.metric
        cells_a = self.columns.get((a, target, shots), [])
        cells_b = self.columns.get((b, target, shots), [])
        by_a, by_b = ok_by_seed(cells_a, metric), ok_by_seed(cells_b, metric)
        seeds = sorted(set(by_a) & set(by_b))
        entry: dict[str, Any] = {
            "metric": metric,
            "target": target,
            "shots": shots,
            "a": a,
            "b": b,
            "higher_is_better": self.higher_is_better,
            "status": "ok",
            "reason": None,
            "seeds": seeds,
            "seeds_dropped": sorted(set(self.spec.seeds) - set(seeds)),
            "n_examples": None,
            "difference": None,
            "ci": None,
            "test": None,
            "p_value": None,
            "p_bootstrap": None,
            "p_permutation": None,
            "p_seeds": None,
        }
        if not seeds:
            return entry | {
                "status": "skipped",
                "reason": (
                    f"no seed with results for both: {a} has {len(by_a)} of {len(cells_a)} "
                    f"cells, {b} has {len(by_b)} of {len(cells_b)}"
                ),
            }
        diffs = [by_a[s]["metrics"][metric] - by_b[s]["metrics"][metric] for s in seeds]
        entry["difference"] = math.fsum(diffs) / len(diffs)
        entry["p_seeds"] = paired_t_test(diffs)
        per_a = self.resamples.per_seed(target, by_a, seeds, metric)
        per_b = self.resamples.per_seed(target, by_b, seeds, metric)
        if per_a is not None and per_b is not None:
            replicates = self.resamples.over_seeds(per_a - per_b, seeds)
            entry["n_examples"] = self.resamples.n_examples(target)
            entry["ci"] = percentile_interval(replicates, self.confidence)
            entry["p_bootstrap"] = bootstrap_p_value(replicates, entry["difference"])
            entry["test"], entry["p_value"] = "two-way bootstrap", entry["p_bootstrap"]
            boot = self.resamples.targets[target]
            ex_a = [boot.per_example.get((by_a[s]["key"], metric)) for s in seeds]
            ex_b = [boot.per_example.get((by_b[s]["key"], metric)) for s in seeds]
            if all(e is not None for e in (*ex_a, *ex_b)):
                per_example = np.sum(ex_a, axis=0) - np.sum(ex_b, axis=0)
                entry["p_permutation"] = sign_flip_p_value(np.round(per_example).astype(int))
                entry["test"] = "two-way bootstrap + exact sign-flip"
                entry["p_value"] = max(entry["p_bootstrap"], entry["p_permutation"])
        elif len(seeds) >= 2:
            entry["ci"] = mean_ci(diffs, self.confidence)["ci"]
            entry["test"], entry["p_value"] = "paired t over seeds", entry["p_seeds"]
        else:
            return entry | {
                "status": "skipped",
                "reason": "no stored predictions to resample and a single seed",
            }
        return entry


def comparison_plan(
    cells: Sequence[dict[str, Any]], spec: ExperimentSpec
) -> dict[str, list[tuple[str, str, str, Any]]]:
    """family -> the (a, b, target, shots) comparisons it holds.

    ``planned``: what the spec asks (every method against the baseline, plus
    statistics.compare). ``pairwise``: every pair of methods, behind the ranks, win/tie/loss
    counts and the table's marks. Each in every (target, shots) column where the grid ran
    both methods (zero-shot, run once, is in every column).
    """
    columns = grid_columns(cells, spec)
    labels = [m.label for m in spec.methods]
    families = {
        "planned": planned_pairs(spec, resolve_baseline(spec)),
        "pairwise": [(a, b) for i, a in enumerate(labels) for b in labels[i + 1 :]],
    }
    return {
        family: [
            (a, b, target, shots)
            for target in spec.targets
            for shots in spec.shots
            for a, b in pairs
            if (a, target, shots) in columns and (b, target, shots) in columns
        ]
        for family, pairs in families.items()
    }


def test_resample_count(bootstrap: int, tests: int, alpha: float) -> int:
    """Resamples for the paired tests: the spec's number, raised to 10 m / alpha (capped).

    A bootstrap p-value is at least 1/(B + 1), and Holm compares the smallest of m p-values
    with alpha / m: with too few resamples nothing could ever be significant.
    """
    return max(bootstrap, min(MAX_TEST_RESAMPLES, math.ceil(10 * tests / alpha)))


#: The most resamples the paired tests use, whatever the number of comparisons.
MAX_TEST_RESAMPLES = 200_000


def compare_methods(
    cells: Sequence[dict[str, Any]],
    spec: ExperimentSpec,
    resamples: Resamples,
    higher_is_better: bool,
) -> list[dict[str, Any]]:
    """The report's comparisons on the main metric (see :func:`comparison_plan`), each family
    Holm–Bonferroni corrected over all its tested comparisons in the report.

    A planned pair is also in the pairwise family: one raw p-value, two corrections.
    Comparisons whose cells failed or were not run are kept with status ``skipped`` and the
    reason, outside the correction.
    """
    confidence = spec.statistics["confidence"]
    alpha = significance_level(confidence)
    columns = grid_columns(cells, spec)
    comparer = Comparer(spec, columns, resamples, spec.main_metric, higher_is_better, confidence)
    out: list[dict[str, Any]] = []
    for family, planned in comparison_plan(cells, spec).items():
        entries = [{"family": family} | comparer.compare(*key) for key in planned]
        tested = [e for e in entries if e["status"] == "ok"]
        for e, adjusted in zip(tested, holm([e["p_value"] for e in tested]), strict=True):
            e["p_holm"] = adjusted
            e["significant"] = adjusted <= alpha
            e["better"] = (
                (e["a"] if (e["difference"] > 0) == higher_is_better else e["b"])
                if e["significant"]
                else None
            )
        for e in entries:
            e.setdefault("p_holm", None)
            e.setdefault("significant", None)
            e.setdefault("better", None)
        out.extend(entries)
    return out


def find_comparison(
    comparisons: Sequence[dict[str, Any]],
    a: str,
    b: str,
    target: str,
    shots: Any,
    families: Sequence[str] = ("planned", "pairwise"),
) -> dict[str, Any] | None:
    """The tested comparison of a and b (either order) in a column, from the first family
    in ``families`` that has it."""
    for family in families:
        for e in comparisons:
            if (
                e["family"] == family
                and e["status"] == "ok"
                and e["target"] == target
                and e["shots"] == shots
                and {e["a"], e["b"]} == {a, b}
            ):
                return e
    return None


# -- summary: scores over targets, transfer gap, ranks, win/tie/loss, learning curves ------


def _t_interval(values: Sequence[float], confidence: float) -> list[float] | None:
    return mean_ci(values, confidence)["ci"] if values else None


def summarize(
    cells: list[dict[str, Any]],
    spec: ExperimentSpec,
    comparisons: Sequence[dict[str, Any]] = (),
    resamples: Resamples | None = None,
    higher_is_better: bool = True,
) -> dict[str, Any]:
    """Per method, on the main metric: per shots, the score averaged over targets
    (XTREME-style: each target weighs the same) and the transfer gap (source score minus
    target score, lower is better), each with a t-interval over seeds; the score also with
    the two-way bootstrap interval (test examples and seeds); ranks per column and their
    mean; win/tie/loss against every other method (from ``comparisons``); learning curves
    and break-even shots against target-only.

    The interval over seeds of a mean over targets uses the seeds that have every target.
    Without ``comparisons`` (a report built without predictions to test) win/tie/loss and
    break-even are None.
    """
    metric = spec.main_metric
    confidence = spec.statistics["confidence"]
    resamples = resamples or Resamples({}, spec.statistics["bootstrap"], 0)
    columns = grid_columns(cells, spec)
    labels = [m.label for m in spec.methods]
    ok = {col: ok_by_seed(cs, metric) for col, cs in columns.items()}
    means = {
        col: math.fsum(c["metrics"][metric] for c in by.values()) / len(by)
        for col, by in ok.items()
        if by
    }

    def gap(c: dict[str, Any]) -> float | None:
        scores = [m[metric] for m in c["source_metrics"].values() if m.get(metric) is not None]
        return math.fsum(scores) / len(scores) - c["metrics"][metric] if scores else None

    # ranks per (target, shots) column among the methods that have a result there
    ranks: dict[Column, float] = {}
    complete: list[tuple[str, Any]] = []
    for target in spec.targets:
        for shots in spec.shots:
            present = [m for m in labels if (m, target, shots) in means]
            values = [means[(m, target, shots)] for m in present]
            for m, r in zip(present, average_ranks(values, higher_is_better), strict=True):
                ranks[(m, target, shots)] = r
            if len(present) == len(labels):
                complete.append((target, shots))

    reference = target_only_reference(spec)
    summary: dict[str, Any] = {}
    for method in spec.methods:
        label = method.label
        rows = {}
        for shots in spec.shots:
            targets = [t for t in spec.targets if (label, t, shots) in means]
            if not targets:
                continue
            per_target = {t: means[(label, t, shots)] for t in targets}
            gaps = {
                t: [g for c in ok[(label, t, shots)].values() if (g := gap(c)) is not None]
                for t in targets
            }
            gaps = {t: g for t, g in gaps.items() if g}
            common = sorted(set.intersection(*(set(ok[(label, t, shots)]) for t in targets)))
            score_by_seed = [
                math.fsum(ok[(label, t, shots)][s]["metrics"][metric] for t in targets)
                / len(targets)
                for s in common
            ]
            gap_by_seed = []
            if gaps and len(gaps) == len(targets):
                for s in common:
                    seed_gaps = [gap(ok[(label, t, shots)][s]) for t in targets]
                    if all(g is not None for g in seed_gaps):
                        gap_by_seed.append(math.fsum(seed_gaps) / len(seed_gaps))
            rows[str(shots)] = {
                "score": math.fsum(per_target.values()) / len(per_target),
                "score_ci": _t_interval(score_by_seed, confidence),
                "score_ci_bootstrap": score_bootstrap(
                    ok, resamples, label, targets, common, shots, metric, confidence
                ),
                "per_target": per_target,
                "transfer_gap": math.fsum(math.fsum(g) / len(g) for g in gaps.values()) / len(gaps)
                if gaps
                else None,
                "transfer_gap_ci": _t_interval(gap_by_seed, confidence),
                "transfer_gap_per_target": {t: math.fsum(g) / len(g) for t, g in gaps.items()},
                "transfer_gap_per_target_ci": {
                    t: _t_interval(g, confidence) for t, g in gaps.items()
                },
                "ranks": {t: ranks[(label, t, shots)] for t in targets},
                "complete": len(targets) == len(spec.targets),
            }
        ranked = [ranks[(label, t, s)] for t, s in complete]
        summary[label] = {
            "metric": metric,
            "by_shots": rows,
            "mean_rank": math.fsum(ranked) / len(ranked) if ranked else None,
            "columns_ranked": len(ranked),
            "wins_ties_losses": wins_ties_losses(comparisons, label, labels)
            if comparisons
            else None,
            "curves": learning_curves(ok, resamples, label, spec, metric, confidence),
            "break_even": break_even(comparisons, label, reference, spec)
            if comparisons and reference is not None and label != reference
            else None,
        }
    return summary


def score_bootstrap(
    ok: Mapping[Column, dict[int, dict[str, Any]]],
    resamples: Resamples,
    label: str,
    targets: Sequence[str],
    seeds: Sequence[int],
    shots: Any,
    metric: str,
    confidence: float,
) -> list[float] | None:
    """Percentile interval of the mean over targets of the seed-averaged score: each target's
    examples resampled on their own (different test sets), the seeds resampled once for all
    targets (a seed's source model is shared by every target)."""
    per_target = []
    for t in targets:
        per_seed = resamples.per_seed(t, ok[(label, t, shots)], seeds, metric)
        if per_seed is None:
            return None
        per_target.append(per_seed)
    averaged = np.mean(np.stack(per_target), axis=0)
    return percentile_interval(resamples.over_seeds(averaged, seeds), confidence)


def wins_ties_losses(
    comparisons: Sequence[dict[str, Any]], label: str, labels: Sequence[str]
) -> dict[str, Any]:
    """Over every column where both were compared (pairwise family): how often ``label`` is
    significantly better than, indistinguishable from, or significantly worse than each
    other method, after Holm's correction."""
    vs = {other: {"wins": 0, "ties": 0, "losses": 0} for other in labels if other != label}
    for e in comparisons:
        if e["family"] != "pairwise" or e["status"] != "ok" or label not in (e["a"], e["b"]):
            continue
        other = e["b"] if e["a"] == label else e["a"]
        outcome = "ties" if not e["significant"] else "wins" if e["better"] == label else "losses"
        vs[other][outcome] += 1
    total = {k: sum(v[k] for v in vs.values()) for k in ("wins", "ties", "losses")}
    return {"total": total, "vs": vs}


def target_only_reference(spec: ExperimentSpec) -> str | None:
    """The method break-even shots are measured against: the baseline if it is a
    target-only method, else the first target-only method; None if there is none."""
    baseline = resolve_baseline(spec)
    if spec.method(baseline).protocol == "target-only":
        return baseline
    return next((m.label for m in spec.methods if m.protocol == "target-only"), None)


def learning_curves(
    ok: Mapping[Column, dict[int, dict[str, Any]]],
    resamples: Resamples,
    label: str,
    spec: ExperimentSpec,
    metric: str,
    confidence: float,
) -> dict[str, list[dict[str, Any]]]:
    """target -> the main metric at each shot count (ascending), with both intervals."""
    curves: dict[str, list[dict[str, Any]]] = {}
    for target in spec.targets:
        points = []
        for shots in sorted(spec.shots, key=shots_sort_key):
            by_seed = ok.get((label, target, shots))
            if not by_seed:
                continue
            values = [c["metrics"][metric] for c in by_seed.values()]
            point = {"shots": shots} | mean_ci(values, confidence)
            replicates = resamples.column(target, by_seed, metric)
            point["ci_bootstrap"] = (
                None if replicates is None else percentile_interval(replicates, confidence)
            )
            points.append(point)
        if points:
            curves[target] = points
    return curves


def calibration(
    cells: Sequence[dict[str, Any]],
    spec: ExperimentSpec,
    predictions: PredictionSource,
    bins: int = 10,
) -> list[dict[str, Any]]:
    """Reliability data per method: confidence (max probability) vs accuracy in equal-width
    bins, pooled over the target test splits of every target, shots value and seed.

    Fusion changes how confident a prediction is as much as whether it is right; this is
    what the html report's reliability diagram draws, and ``ece`` is its weighted gap.
    """
    import torch

    out = []
    for method in spec.methods:
        confidences, correct = [], []
        for c in cells:
            if c["method"] != method.label or c["status"] != "ok":
                continue
            stored = predictions(c["key"], c["target"])
            if stored is None:
                continue
            y_true, probs = decode_predictions(stored)
            if len(y_true) == 0:
                continue
            top, predicted = probs.max(dim=1)
            confidences.append(top.double())
            correct.append((predicted == y_true).double())
        if not confidences:
            continue
        conf = torch.cat(confidences)
        hit = torch.cat(correct)
        index = torch.clamp((conf * bins).long(), max=bins - 1)
        rows = []
        ece = 0.0
        for b in range(bins):
            mask = index == b
            count = int(mask.sum())
            row: dict[str, Any] = {"low": b / bins, "high": (b + 1) / bins, "count": count}
            if count:
                row["confidence"] = float(conf[mask].mean())
                row["accuracy"] = float(hit[mask].mean())
                ece += count / len(conf) * abs(row["accuracy"] - row["confidence"])
            rows.append(row)
        out.append(
            {
                "method": method.label,
                "protocol": method.protocol,
                "n": len(conf),
                "ece": ece,
                "bins": rows,
            }
        )
    return out


def break_even(
    comparisons: Sequence[dict[str, Any]], label: str, reference: str, spec: ExperimentSpec
) -> dict[str, Any]:
    """target -> the smallest k from which ``label`` is no longer significantly better than
    the target-only ``reference`` (at that k and every larger k tested).

    ``shots`` is None when it is still better at the largest k tested (the break-even lies
    beyond the grid) or when nothing was compared. Uses the planned comparison when the
    spec plans this pair, else the pairwise one.
    """
    out: dict[str, Any] = {}
    for target in spec.targets:
        better: list[tuple[Any, bool]] = []
        for shots in sorted(spec.shots, key=shots_sort_key):
            e = find_comparison(comparisons, label, reference, target, shots)
            if e is not None:
                better.append((shots, bool(e["significant"]) and e["better"] == label))
        if not better:
            out[target] = {"shots": None, "status": "not compared", "against": reference}
            continue
        if better[-1][1]:
            status = (
                "better at every k tested"
                if all(b for _, b in better)
                else ("better at the largest k tested")
            )
            out[target] = {"shots": None, "status": status, "against": reference}
            continue
        last_better = max((i for i, (_, b) in enumerate(better) if b), default=-1)
        out[target] = {
            "shots": better[last_better + 1][0],
            "status": "never significantly better" if last_better < 0 else "break-even",
            "against": reference,
        }
    return out


# -- all statistics of a report -----------------------------------------------------------


def analyse(
    cells: list[dict[str, Any]],
    spec: ExperimentSpec,
    metrics: Mapping[str, Any],
    predictions: PredictionSource,
) -> dict[str, Any]:
    """The report's ``aggregates``, ``comparisons``, ``summary`` and ``statistics``.

    ``metrics`` are the built metric components (name -> object with ``compute`` and
    ``higher_is_better``); ``predictions`` finds a cell's stored predictions. Resampling is
    seeded from statistics.seed and the language, so the same cells give the same report
    numbers bit for bit (the report build and ``xleval rescore`` agree).
    """
    statistics = spec.statistics
    confidence = statistics["confidence"]
    seed = statistics.get("seed", 0)
    notes: list[str] = []
    # decode and vectorise everything before the first matrix product: torch calls made
    # while BLAS worker threads spin down run many times slower on few cores
    prepared = {t: prepare_target(t, cells, metrics, predictions, notes) for t in spec.targets}
    by_target = {
        t: None
        if data is None
        else resample_target(
            data, list(metrics), resamples=statistics["bootstrap"], seed=seed, stream="target"
        )
        for t, data in prepared.items()
    }
    resamples = Resamples(by_target, statistics["bootstrap"], seed)
    aggregates = aggregate(cells, spec, confidence)
    columns = grid_columns(cells, spec)
    for entry in aggregates:
        by_seed = ok_by_seed(
            columns[(entry["method"], entry["target"], entry["shots"])], entry["metric"]
        )
        replicates = resamples.column(entry["target"], by_seed, entry["metric"])
        entry["ci_bootstrap"] = (
            None if replicates is None else percentile_interval(replicates, confidence)
        )
        entry["n_examples"] = None if replicates is None else resamples.n_examples(entry["target"])
    higher = bool(metrics[spec.main_metric].higher_is_better)
    alpha = significance_level(confidence)
    plan = comparison_plan(cells, spec)
    tests = test_resample_count(
        statistics["bootstrap"], max((len(p) for p in plan.values()), default=0), alpha
    )
    test_resamples = resamples
    slow = any(spec.main_metric in r.slow for r in by_target.values() if r is not None)
    if slow:  # calling a metric 10^5 times per cell is no option: keep the spec's number
        tests = statistics["bootstrap"]
    if tests > statistics["bootstrap"]:
        test_resamples = Resamples(
            {
                t: None
                if data is None
                else resample_target(
                    data, [spec.main_metric], resamples=tests, seed=seed, stream="tests"
                )
                for t, data in prepared.items()
            },
            tests,
            seed,
        )
    comparisons = compare_methods(cells, spec, test_resamples, higher)
    families = {
        family: sum(e["family"] == family and e["status"] == "ok" for e in comparisons)
        for family in plan
    }
    skipped = [e for e in comparisons if e["status"] == "skipped"]
    if skipped:
        notes.append(f"{len(skipped)} comparison(s) skipped for missing cells; see their reason")
    for family, size in families.items():
        if size and tests + 1 < size / alpha:
            notes.append(
                f"{family}: {size} tests need over {math.ceil(size / alpha)} resamples for the "
                f"smallest bootstrap p-value to pass Holm's first threshold; {tests} were drawn"
            )
    return {
        "calibration": calibration(cells, spec, predictions),
        "aggregates": aggregates,
        "comparisons": comparisons,
        "summary": summarize(cells, spec, comparisons, resamples, higher),
        "statistics": {
            "metric": spec.main_metric,
            "higher_is_better": higher,
            "confidence": confidence,
            "alpha": alpha,
            "bootstrap": statistics["bootstrap"],
            "test_resamples": tests,
            "seed": seed,
            "baseline": resolve_baseline(spec),
            "target_only": target_only_reference(spec),
            "families": families,
            "n_examples": {t: r.n for t, r in by_target.items() if r is not None},
            "notes": notes,
        },
    }


def metric_components(pm: XlevalPluginManager, spec: ExperimentSpec) -> dict[str, Any]:
    """The spec's metrics, built (name -> component with ``compute`` and ``higher_is_better``)."""
    return {m.name: pm.registry.build("metrics", m.name, m.options) for m in spec.metrics}


def build_report(
    spec: ExperimentSpec,
    pm: XlevalPluginManager,
    dataset: MultilingualDataset,
    outcome: RunOutcome,
) -> dict[str, Any]:
    cells = [cell_entry(cell, key, outcome.results.get(key)) for cell, key in outcome.keys.items()]
    metrics = metric_components(pm, spec)

    def predictions(key: str, lang: str) -> Mapping[str, Any] | None:
        return (outcome.results.get(key) or {}).get("predictions", {}).get(lang)

    stats = analyse(cells, spec, metrics, predictions)
    report = {
        "schema_version": SCHEMA_VERSION,
        "xleval_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "spec": spec.to_json(),
        "environment": environment(pm),
        "dataset": {
            "name": dataset.name,
            "options": spec.dataset.options,
            "fingerprint": dataset.fingerprint,
            "labels": list(dataset.labels),
            "counts": dataset.counts(),
            "warnings": list(dataset.warnings),
        },
        "metrics": {
            m.name: {
                "higher_is_better": bool(metrics[m.name].higher_is_better),
                "options": m.options,
            }
            for m in spec.metrics
        },
        "cells": cells,
        "aggregates": stats["aggregates"],
        "comparisons": stats["comparisons"],
        "summary": stats["summary"],
        "statistics": stats["statistics"],
        "calibration": stats["calibration"],
        "run": {
            "cells_total": len(outcome.keys),
            "cells_computed": outcome.computed,
            "cells_cached": outcome.cached,
            "cells_failed": sum(c["status"] != "ok" for c in cells),
            "wall_seconds": round(outcome.wall_seconds, 3),
            "interrupted": outcome.interrupted,
            "corrupt_cache_entries": outcome.corrupt,
        },
    }
    validate_report(report)
    return report


def validate_report(report: Any, source: str = "report") -> None:
    """Raise ReportError listing every way ``report`` breaks the report schema."""
    errors = schema_errors(load_schema("report"), report, root="(report)")
    if errors:
        raise ReportError(
            f"{source}: not a valid xleval report:\n" + "\n".join(f"  - {e}" for e in errors)
        )


def write_report(report: dict[str, Any], path: Path) -> None:
    jsonschema.validate(report, load_schema("report"))
    atomic_write_text(path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")


def read_report(path: str | Path) -> dict[str, Any]:
    """Load and validate a report file (a run directory means its report.json)."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: not a JSON report ({exc})") from None
    validate_report(report, str(path))
    return report

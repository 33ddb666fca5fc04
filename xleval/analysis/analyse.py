"""The statistics of a report, from its cells and their stored predictions: aggregates with
intervals, paired comparisons between methods, and per method the score over targets, the
transfer gap, ranks, win/tie/loss counts, learning curves and break-even shots.

Every interval and test generalises over new training seeds *and* new test examples drawn
like these (:func:`xleval.analysis.stats.seeds_and_examples`; docs/statistics.md says what each
number means). Each language's test examples enter through per-example values (jackknife
pseudo-values for metrics that are not a mean over examples), computed once per cell from
its stored predictions; a seed's cells are paired across methods (same shots, same source
model) and a language's cells across seeds and methods (same test examples). Nothing is
resampled: the same cells give the same numbers bit for bit.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from xleval.analysis.stats import (
    FEW_EXAMPLES,
    MAX_CALLED_UNITS,
    SeedsAndExamples,
    average_ranks,
    holm,
    intervals,
    mean_ci,
    metric_form,
    p_values,
    paired_t_test,
    pseudo_values_by_calls,
    safe_sum,
    seeds_and_examples,
    sign_flip_p_value,
    unit_groups,
)
from xleval.experiment.spec import ExperimentSpec

Column = tuple[str, str, Any]  # (method, target, shots)

#: (cell key, language) -> the stored predictions (runner.encode_predictions), or None.
PredictionSource = Callable[[str, str], Mapping[str, Any] | None]

#: What every interval and test of a report generalises to, in the report's own words.
GENERALISES = "new training seeds and new test examples drawn like these"
TEST_NAME = "seeds and test examples (Behrens–Fisher)"


def interval_caption(confidence: float) -> str:
    """How tables and plots name the report's intervals."""
    return f"{confidence:.0%} interval over seeds and test examples"


# -- what the grid holds: columns and seeds ----------------------------------------------


def shots_sort_key(shots: Any) -> tuple[int, int]:
    """Numeric shot counts in order, ``"all"`` after every number."""
    return (1, 0) if shots == "all" else (0, int(shots))


def grid_columns(
    cells: Sequence[dict[str, Any]], spec: ExperimentSpec
) -> dict[Column, list[dict[str, Any]]]:
    """(method, target, shots) -> its cells, failed ones included (they say the column exists).

    A method whose protocol ignores k (zero-shot) runs at k = 0: its cells belong to every
    shots column.
    """
    ignores_shots = {m.label for m in spec.methods if m.ignores_shots}
    columns: dict[Column, list[dict[str, Any]]] = defaultdict(list)
    for c in cells:
        for shots in spec.shots if c["method"] in ignores_shots else (c["shots"],):
            columns[(c["method"], c["target"], shots)].append(c)
    return columns


def ok_by_seed(column: Sequence[dict[str, Any]], metric: str) -> dict[int, dict[str, Any]]:
    """The column's successful cells that have ``metric``, by seed."""
    return {
        c["seed"]: c for c in column if c["status"] == "ok" and c["metrics"].get(metric) is not None
    }


def learns_from_source(spec: ExperimentSpec, label: str) -> bool:
    """Whether a method's model learns from the source languages (the transfer gap means
    something only then: a target-only model never saw the source)."""
    return spec.method(label).learns_from_source


# -- per-example values of every cell, per language ---------------------------------------


@dataclass
class LanguageValues:
    """Every successful cell's per-example values on one language's test split, aligned to
    one order of its examples: what :func:`xleval.analysis.stats.seeds_and_examples` needs.

    ``values[(cell key, metric)]`` holds one value per unit: per example, or for a metric
    without a vectorised form on a large test set, per group of examples (``grouped``).
    ``binary`` marks 0/1 values (accuracy), for which the exact sign-flip test applies.
    ``digests`` fingerprint each cell's predictions, to tell identical models apart.
    """

    lang: str
    n_examples: int
    values: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    binary: set[tuple[str, str]] = field(default_factory=set)
    #: a seed's mean over D draws of 0/1 values (see collapse_draws): D × value is integer
    draw_means: dict[tuple[str, str], int] = field(default_factory=dict)
    grouped: set[str] = field(default_factory=set)
    digests: dict[str, str] = field(default_factory=dict)


Evaluated = list[tuple[dict[str, Any], Mapping[str, Any]]]


def evaluated_on(cells: Sequence[dict[str, Any]]) -> dict[str, Evaluated]:
    """language -> (cell, its metrics there) for every successful cell evaluated on it: as
    its target language, or as one of its sources (for the transfer gap)."""
    out: dict[str, Evaluated] = defaultdict(list)
    for c in cells:
        if c["status"] != "ok":
            continue
        out[c["target"]].append((c, c["metrics"]))
        for lang, values in c.get("source_metrics", {}).items():
            out[lang].append((c, values))
    return out


#: Cells per metric and language whose vectorised form is also checked on a resample.
RESAMPLE_CHECKS = 4


def prepare_language(
    lang: str,
    evaluated: Evaluated,
    metrics: Mapping[str, Any],
    predictions: PredictionSource,
    notes: list[str],
) -> LanguageValues | None:
    """Decode the stored predictions of every cell evaluated on ``lang`` and compute each
    metric's per-example values (the plain values for a mean such as accuracy, jackknife
    pseudo-values otherwise: :meth:`xleval.analysis.stats.MetricForm.pseudo_values`).

    All cells must be evaluated on the same examples (aligned by id if their order
    differs); a cell without predictions or on other examples is left out and noted.
    """
    from xleval.api.predictions import decode_predictions
    from xleval.train.tensors import metric_inputs

    reference: list[str] | None = None
    reference_y: np.ndarray | None = None
    decoded: list[tuple[str, Mapping[str, Any], Any, Any]] = []
    missing = 0
    for c, values in evaluated:
        where = f"{c['method']} {c['target']} k={c['shots']} seed={c['seed']} on {lang}"
        stored = predictions(c["key"], lang)
        if stored is None:
            missing += 1
            continue
        y, probs = metric_inputs(*decode_predictions(stored))
        ids = list(stored["ids"])
        if reference is None:
            reference, reference_y = ids, y.numpy()
        elif ids != reference:
            position = {example: i for i, example in enumerate(ids)}
            if len(ids) != len(reference) or set(position) != set(reference):
                notes.append(f"{where}: other test examples than the other cells'; left out")
                continue
            order = [position[example] for example in reference]
            y, probs = y[order], probs[order]
        assert reference_y is not None
        if not np.array_equal(y.numpy(), reference_y):
            notes.append(f"{where}: other test labels than the other cells'; left out")
            continue
        decoded.append((c["key"], values, y, probs))
    if missing:
        notes.append(
            f"{missing} cell(s) evaluated on {lang} have no stored predictions: left out of "
            "intervals and tests"
        )
    if reference is None:
        return None
    out = LanguageValues(lang, len(reference))
    if out.n_examples < 2:  # nothing to estimate a test-set variance from: values only
        for key, values, _, _ in decoded:
            for name in metrics:
                if values.get(name) is not None:
                    out.values[(key, name)] = np.full(out.n_examples, float(values[name]))
        notes.append(f"{lang}: {out.n_examples} test example(s); nothing can be tested on it")
        return out
    if out.n_examples < FEW_EXAMPLES:
        notes.append(
            f"{lang}: {out.n_examples} test examples; with fewer than {FEW_EXAMPLES} the "
            "examples' part of a variance rests on so few degrees of freedom that p-values "
            "far below 0.01 (as Holm's correction uses) are not guaranteed to hold their level"
        )
    forms: dict[tuple[str, str], Any] = {}
    slow: set[str] = set()
    verified: dict[str, int] = defaultdict(int)  # metric -> cells whose resample matched
    for key, values, y, probs in decoded:
        out.digests[key] = hashlib.sha256(probs.numpy().tobytes()).hexdigest()
        for name, metric in metrics.items():
            value = values.get(name)
            if value is None or not math.isfinite(value):
                continue
            # every cell's form must reproduce its value; the costlier check on a resample
            # (the metric called again) is made on the first RESAMPLE_CHECKS cells
            resample = verified[name] < RESAMPLE_CHECKS
            form = metric_form(name, metric, y, probs, expected=value, resample=resample)
            forms[(key, name)] = form
            if form is None:
                slow.add(name)
            elif resample:
                verified[name] += 1
    for name in sorted(slow):
        notes.append(
            f"metric '{name}' on {lang}: no vectorised form; its per-example values come "
            "from calling it once per left-out example"
            + (
                f" (or group of examples, {MAX_CALLED_UNITS} groups)"
                if out.n_examples > MAX_CALLED_UNITS
                else ""
            )
        )
    failed: dict[str, str] = {}
    for key, values, y, probs in decoded:
        for name, metric in metrics.items():
            value = values.get(name)
            if value is None or name in failed:
                continue
            groups = unit_groups(out.n_examples, MAX_CALLED_UNITS) if name in slow else None
            if groups is not None:
                out.grouped.add(name)
            if not math.isfinite(value):
                out.values[(key, name)] = np.full(out.n_examples, float(value))
                continue
            form = forms[(key, name)]
            if form is None:
                try:
                    pseudo = pseudo_values_by_calls(metric, y, probs, value, groups)
                except Exception as exc:  # a plugin's metric: its failure costs its intervals
                    failed[name] = f"{type(exc).__name__}: {exc}"
                    continue
                out.values[(key, name)] = pseudo
            else:
                out.values[(key, name)] = form.pseudo_values(groups)
                if groups is None and form.binary:
                    out.binary.add((key, name))
    for name, error in failed.items():
        notes.append(
            f"metric '{name}' on {lang} failed with an example left out ({error}): no "
            "intervals or tests on it"
        )
        for cell_metric in [k for k in out.values if k[1] == name]:
            del out.values[cell_metric]
    return out


@dataclass(frozen=True)
class Term:
    """One part of a quantity measured per seed: ``weight`` × the metric of ``cells[seed]``
    on ``lang`` (its target language, or a source language when ``on_source``)."""

    weight: float
    lang: str
    cells: Mapping[int, dict[str, Any]]
    on_source: bool = False

    def value(self, seed: int, metric: str) -> float | None:
        cell = self.cells[seed]
        values = (
            (cell.get("source_metrics") or {}).get(self.lang, {})
            if self.on_source
            else cell["metrics"]
        )
        return values.get(metric)


@dataclass
class Estimator:
    """Estimates any quantity that is a weighted sum of cells' metrics (a score, a
    difference, a transfer gap, a mean over targets) over the seeds all its cells share."""

    languages: Mapping[str, LanguageValues | None]

    def estimate(
        self, terms: Sequence[Term], metric: str
    ) -> tuple[list[int], SeedsAndExamples | None]:
        seeds = sorted(set.intersection(*(set(t.cells) for t in terms))) if terms else []
        per_seed = []
        for s in seeds:
            parts = [t.value(s, metric) for t in terms]
            if any(p is None for p in parts):
                return seeds, None
            per_seed.append(
                safe_sum(t.weight * cast(float, p) for t, p in zip(terms, parts, strict=True))
            )
        if not seeds:
            return seeds, None
        tables: dict[str, np.ndarray] = {}
        complete = True
        for t in terms:
            lv = self.languages.get(t.lang)
            rows = [
                None if lv is None else lv.values.get((t.cells[s]["key"], metric)) for s in seeds
            ]
            if any(r is None for r in rows):
                complete = False
                break
            table = t.weight * np.stack(cast(list[np.ndarray], rows))
            tables[t.lang] = tables[t.lang] + table if t.lang in tables else table
        return seeds, seeds_and_examples(per_seed, list(tables.values()) if complete else [])

    def identical(self, lang: str, a: Mapping[int, dict], b: Mapping[int, dict], seeds) -> bool:
        """Whether two methods made exactly the same predictions on every seed."""
        lv = self.languages.get(lang)
        if lv is None or lv.n_examples == 0 or not seeds:
            return False
        pairs = [(lv.digests.get(a[s]["key"]), lv.digests.get(b[s]["key"])) for s in seeds]
        return all(x is not None and x == y for x, y in pairs)

    def binary_sums(
        self, lang: str, a: Mapping[int, dict], b: Mapping[int, dict], seeds, metric: str
    ) -> np.ndarray | None:
        """Per example, Σ over seeds of A's 0/1 value − B's; None unless all are 0/1. A
        seed's mean over D shot draws counts as the sum over its draws (its values × D; the
        other method's × D too when it has no draws), so the sums stay integers."""
        lv = self.languages.get(lang)
        if lv is None:
            return None
        keys = [(c[s]["key"], metric) for c in (a, b) for s in seeds]
        scales = [1 if k in lv.binary else lv.draw_means.get(k) for k in keys]
        if any(scale is None for scale in scales):
            return None
        common = math.lcm(*cast(list[int], scales))
        total = sum(
            lv.values[(a[s]["key"], metric)] - lv.values[(b[s]["key"], metric)] for s in seeds
        )
        return np.round(common * total).astype(np.int64)


def interval_fields(estimate: SeedsAndExamples | None, confidence: float) -> dict[str, Any]:
    """The intervals of an estimate as the report stores them (with why they are missing);
    ``ci``, over seeds and examples, is left None for the caller to fill in from
    :func:`~xleval.analysis.stats.intervals`, which computes many at once."""
    if estimate is None:
        return {"ci": None, "ci_examples": None, "ci_reason": "missing cells or values"}
    return {
        "ci": None,
        "ci_examples": estimate.conditional_interval(confidence),
        "ci_reason": estimate.reason,
    }


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


# -- shot draws: a seed's draws are one replicate ----------------------------------------


def _mean_of(values: Sequence[float | None]) -> float | None:
    if any(v is None for v in values):
        return None
    return safe_sum(cast(list[float], values)) / len(values)


def _mean_metrics(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    names = set.intersection(*(set(p) for p in parts)) if parts else set()
    return {name: _mean_of([p[name] for p in parts]) for name in sorted(names)}


def collapse_draws(
    cells: Sequence[dict[str, Any]], languages: Mapping[str, LanguageValues | None]
) -> list[dict[str, Any]]:
    """Each (method, target, shots, seed) whose cells are shot draws (a spec's
    ``shot_draws``) as one cell: its metrics and per-example values the mean over the
    draws. A seed and its draws are then one replicate, independent of the other seeds'
    (each seed draws its own samples), so every interval and test — built on seeds —
    generalises to new seeds, new draws and new test examples. A seed with a failed or
    missing draw fails as a whole (the mean over fewer draws would be another quantity).
    Cells without draws are kept as they are."""
    out: list[dict[str, Any]] = []
    groups: dict[tuple[str, str, Any, int], list[dict[str, Any]]] = {}
    # per language, each cell key's metrics with per-example values (indexed once)
    metrics_of: dict[str, dict[str, list[str]]] = {}
    for lang, lv in languages.items():
        if lv is not None:
            index: dict[str, list[str]] = {}
            for key, metric in lv.values:
                index.setdefault(key, []).append(metric)
            metrics_of[lang] = index
    for c in cells:
        if c.get("draw") is None:
            out.append(c)
        else:
            groups.setdefault((c["method"], c["target"], c["shots"], c["seed"]), []).append(c)
    for group in groups.values():
        group.sort(key=lambda c: c["draw"])
        first = group[0]
        key = "draws:" + hashlib.sha256("\0".join(c["key"] for c in group).encode()).hexdigest()
        merged = {k: v for k, v in first.items() if k not in ("draw", "provenance")}
        merged |= {"key": key, "draws": [c["draw"] for c in group]}
        bad = [c for c in group if c["status"] != "ok"]
        if bad:
            out.append(
                merged
                | {
                    "status": bad[0]["status"],
                    "metrics": {},
                    "source_metrics": {},
                    "error": f"draw {bad[0]['draw']}: {bad[0]['error']}",
                }
            )
            continue
        infos = [c.get("info") or {} for c in group]
        shortfall: dict[str, int] = {}
        for info in infos:
            for label, missing in (info.get("shortfall") or {}).items():
                shortfall[label] = max(shortfall.get(label, 0), int(missing))
        merged["info"] = {
            "n_shots": _mean_of([info.get("n_shots") for info in infos]),
            "shortfall": shortfall,
        }
        merged["metrics"] = _mean_metrics([c["metrics"] for c in group])
        merged["source_metrics"] = {
            lang: _mean_metrics([(c.get("source_metrics") or {}).get(lang, {}) for c in group])
            for lang in first.get("source_metrics") or {}
        }
        for lang, lv in languages.items():
            if lv is None:
                continue
            for metric in metrics_of[lang].get(first["key"], ()):
                rows = [lv.values.get((c["key"], metric)) for c in group]
                if all(r is not None for r in rows):
                    lv.values[(key, metric)] = np.mean(np.stack(cast(list, rows)), axis=0)
                    if all((c["key"], metric) in lv.binary for c in group):
                        lv.draw_means[(key, metric)] = len(group)
            digests = [lv.digests.get(c["key"]) for c in group]
            if all(d is not None for d in digests):
                lv.digests[key] = hashlib.sha256("".join(cast(list, digests)).encode()).hexdigest()
        out.append(merged)
    return out


# -- variance components: training seed, shot draw, test examples ------------------------


def variance_components(
    cells: Sequence[dict[str, Any]],
    spec: ExperimentSpec,
    languages: Mapping[str, LanguageValues | None],
    metric: str,
    confidence: float,
) -> list[dict[str, Any]]:
    """Per (method, target, shots) column, the main metric's spread split into training
    seed, shot draw and test examples (:mod:`xleval.analysis.variance`), from the cells
    themselves (draws not collapsed)."""
    from xleval.analysis.variance import balanced, components

    columns = grid_columns(cells, spec)
    order = {m.label: i for i, m in enumerate(spec.methods)}
    shots_order = {s: i for i, s in enumerate(spec.shots)}
    out = []
    for method, target, shots in sorted(
        columns, key=lambda col: (order[col[0]], col[1], shots_order.get(col[2], 0))
    ):
        ok = [
            c
            for c in columns[(method, target, shots)]
            if c["status"] == "ok" and c["metrics"].get(metric) is not None
        ]
        layout = balanced(ok)
        if layout is None:
            continue
        seeds, draws, grid = layout
        z = np.array([[c["metrics"][metric] for c in row] for row in grid], dtype=np.float64)
        finite = np.all(np.isfinite(z), axis=1)
        notes = []
        if not finite.all():  # a diverged run's NaN is never evidence: its seed is left out
            left_out = [s for s, ok_row in zip(seeds, finite.tolist(), strict=True) if not ok_row]
            notes.append(f"seed(s) {', '.join(map(str, left_out))} left out: a value is not finite")
            grid = [row for row, ok_row in zip(grid, finite.tolist(), strict=True) if ok_row]
            z = z[finite]
        if not len(grid):
            continue
        lv = languages.get(target)
        rows = [None if lv is None else lv.values.get((c["key"], metric)) for r in grid for c in r]
        table = None if any(r is None for r in rows) else np.stack(cast(list, rows))
        if table is not None and not np.all(np.isfinite(table)):
            table = None
            notes.append("a per-example value is not finite: no test-examples part")
        separated = len(draws) >= 2
        if separated:
            pass
        elif spec.method(method).ignores_shots or (
            spec.draws_at(shots) == (None,) and (spec.shot_draws or shots in (0, "all"))
        ):
            notes.insert(0, "no shots drawn at this k: nothing varies with a draw")
        else:
            notes.insert(
                0,
                "one draw per seed (the spec sets fewer than two shot_draws): the seed's part "
                "includes the shot draw's",
            )
        out.append(
            {
                "method": method,
                "target": target,
                "shots": shots,
                "metric": metric,
                **components(z, table, confidence, separated=separated),
                "note": "; ".join(notes) or None,
            }
        )
    return out


# -- aggregates: each (method, target, shots, metric) over seeds ----------------------------


def shots_used(by_seed: Mapping[int, dict[str, Any]], n_labels: int | None) -> dict[str, Any]:
    """What a column's cells really trained on: the mean target examples per class over
    seeds, and the classes that had fewer than k training rows (shortfall: label ->
    examples missing)."""
    shortfall: dict[str, int] = {}
    drawn = []
    for cell in by_seed.values():
        info = cell.get("info") or {}
        for label, missing in (info.get("shortfall") or {}).items():
            shortfall[label] = max(shortfall.get(label, 0), int(missing))
        if info.get("n_shots") is not None:
            drawn.append(info["n_shots"])
    out: dict[str, Any] = {
        "mean_shots_per_class": math.fsum(drawn) / len(drawn) / n_labels
        if drawn and n_labels
        else None
    }
    if shortfall:
        out["shortfall"] = dict(sorted(shortfall.items()))
    return out


def aggregate(
    cells: Sequence[dict[str, Any]],
    spec: ExperimentSpec,
    estimator: Estimator,
    confidence: float,
    n_labels: int | None = None,
) -> list[dict[str, Any]]:
    """Per (method, target, shots, metric): mean and std over seeds, the interval over seeds
    and test examples (``ci``), over seeds only on these test examples (``ci_seeds``), and
    over test examples only for these trained models (``ci_examples``).

    Zero-shot does not depend on k: its one value per seed is reported in every shots
    column, marked ``shots_independent``, so tables and comparisons line up. Other columns
    say how many target examples per class they really trained on.
    """
    columns = grid_columns(cells, spec)
    order = {m.label: i for i, m in enumerate(spec.methods)}
    shots_order = {s: i for i, s in enumerate(spec.shots)}
    out = []
    estimates: list[SeedsAndExamples | None] = []  # of each entry, their intervals at the end
    for method, target, shots in sorted(
        columns, key=lambda col: (order[col[0]], col[1], shots_order.get(col[2], 0))
    ):
        column = columns[(method, target, shots)]
        for metric in sorted(m.name for m in spec.metrics):
            by_seed = ok_by_seed(column, metric)
            if not by_seed:
                continue
            values = [by_seed[s]["metrics"][metric] for s in sorted(by_seed)]
            over_seeds = mean_ci(values, confidence)
            _, estimate = estimator.estimate([Term(1.0, target, by_seed)], metric)
            entry = {
                "method": method,
                "target": target,
                "shots": shots,
                "metric": metric,
                "mean": _finite_or_none(over_seeds["mean"]),
                "std": _finite_or_none(over_seeds["std"]),
                "n": over_seeds["n"],
                **interval_fields(estimate, confidence),
                "ci_seeds": over_seeds["ci"]
                if _finite_or_none(over_seeds["mean"]) is not None
                else None,
                "n_examples": None if estimate is None else estimate.n_examples,
            }
            draws = next(iter(by_seed.values())).get("draws")
            if draws:
                entry["draws"] = len(draws)
            if spec.method(method).ignores_shots:
                entry["shots_independent"] = True
            else:
                entry |= shots_used(by_seed, n_labels)
            out.append(entry)
            estimates.append(estimate)
    for entry, ci in zip(out, intervals(estimates, confidence), strict=True):
        entry["ci"] = ci
    return out


# -- comparisons --------------------------------------------------------------------------


def significance_level(confidence: float) -> float:
    """alpha = 1 − confidence, rounded so 0.95 gives 0.05 rather than 0.050000000000000044."""
    return round(1.0 - confidence, 12)


def resolve_baseline(spec: ExperimentSpec) -> str:
    """statistics.baseline, else the first method whose protocol is a baseline (trains on
    the target data alone: target-only), else the first method: the reference
    practitioners ask about ("does transfer beat training on the target data alone?")."""
    chosen = spec.statistics.get("baseline")
    if chosen:
        return chosen
    return next((m.label for m in spec.methods if m.baseline), spec.methods[0].label)


def planned_pairs(spec: ExperimentSpec, baseline: str) -> list[tuple[str, str]]:
    """Every method against the baseline, then statistics.compare's extra pairs, once each."""
    pairs = [(m.label, baseline) for m in spec.methods if m.label != baseline]
    for a, b in spec.statistics.get("compare", []):
        if a != b and (a, b) not in pairs and (b, a) not in pairs:
            pairs.append((a, b))
    return pairs


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


@dataclass
class Comparer:
    """Paired comparison of two methods in one (target, shots) column, on the main metric.

    Paired on seeds (a seed gives both methods the same shots and source model) and on test
    examples. The difference is A − B in metric units, the mean of the per-seed
    differences; its p-value and interval generalise to new seeds and new test examples
    (:func:`xleval.analysis.stats.seeds_and_examples`). Also reported, for what they are:
    ``p_seeds``, the paired t over seeds (new seeds, these test examples), and
    ``p_examples``, over test examples for these trained models (the exact sign-flip test
    for 0/1 metrics such as accuracy). A pair whose predictions are identical on every seed
    compares a model with itself (transfer at k = 0 evaluates the source model unchanged):
    it is no test, and stays out of the families.
    """

    spec: ExperimentSpec
    columns: dict[Column, list[dict[str, Any]]]
    estimator: Estimator
    metric: str
    higher_is_better: bool
    confidence: float
    cache: dict[tuple[str, str, str, Any], dict[str, Any]] = field(default_factory=dict)
    #: tested comparisons whose p-value and interval are not computed yet
    pending: dict[tuple[str, str, str, Any], SeedsAndExamples] = field(default_factory=dict)

    def compare(self, a: str, b: str, target: str, shots: Any) -> dict[str, Any]:
        self.prepare([(a, b, target, shots)])
        return dict(self.cache[a, b, target, shots])

    def prepare(self, keys: Iterable[tuple[str, str, str, Any]]) -> None:
        """Compare these (a, b, target, shots) at once: the tests' integrals of all of them
        in one vectorised pass (:func:`~xleval.analysis.stats.p_values`)."""
        for key in keys:
            if key not in self.cache:
                self.cache[key] = self._compare(*key)
        if self.pending:
            keys, estimates = list(self.pending), list(self.pending.values())
            found = zip(p_values(estimates), intervals(estimates, self.confidence), strict=True)
            for key, (p_value, ci) in zip(keys, found, strict=True):
                self.cache[key] |= {"ci": ci, "p_value": p_value}
            self.pending.clear()

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
            "ci_examples": None,
            "se": None,
            "variance": None,
            "test": None,
            "generalises": None,
            "p_value": None,
            "p_seeds": None,
            "p_examples": None,
        }
        not_run = sum(c["status"] == "not-run" for c in (*cells_a, *cells_b))
        if not_run:  # a partial column would test other seeds than the spec asks for
            return entry | {
                "status": "skipped",
                "reason": f"incomplete: {not_run} of its cells not run (rerun to finish)",
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
        entry["difference"] = _finite_or_none(safe_sum(diffs) / len(diffs))
        entry["p_seeds"] = _finite_or_none(paired_t_test(diffs))
        if self.estimator.identical(target, by_a, by_b, seeds):
            return entry | {
                "status": "identical",
                "reason": "identical predictions on every seed: the same model (e.g. transfer "
                "at k = 0 evaluates the source model unchanged); not a test",
            }
        _, estimate = self.estimator.estimate(
            [Term(1.0, target, by_a), Term(-1.0, target, by_b)], metric
        )
        if estimate is None:
            return entry | {"status": "not-testable", "reason": "a cell lacks the metric"}
        entry["n_examples"] = estimate.n_examples
        entry["ci_examples"] = estimate.conditional_interval(self.confidence)
        sums = self.estimator.binary_sums(target, by_a, by_b, seeds, metric)
        if sums is not None:
            entry["p_examples"] = _finite_or_none(sign_flip_p_value(sums))
        else:
            entry["p_examples"] = _finite_or_none(estimate.conditional_p_value())
        if not estimate.testable:
            return entry | {"status": "not-testable", "reason": estimate.reason}
        if estimate.variance == 0.0 and estimate.mean != 0.0:  # its p-value is None
            return entry | {
                "status": "not-testable",
                "reason": "no variation between seeds or test examples to test against",
            }
        self.pending[(a, b, target, shots)] = estimate  # "ci" and "p_value": see prepare
        return entry | {
            "ci": None,
            "se": math.sqrt(estimate.variance),
            "variance": {"seeds": estimate.seeds_part, "examples": estimate.examples_part},
            "test": TEST_NAME,
            "generalises": GENERALISES,
            "p_value": None,
        }


def compare_methods(
    cells: Sequence[dict[str, Any]],
    spec: ExperimentSpec,
    estimator: Estimator,
    higher_is_better: bool,
) -> list[dict[str, Any]]:
    """The report's comparisons on the main metric (see :func:`comparison_plan`), each family
    Holm–Bonferroni corrected over all its tested comparisons in the report.

    A planned pair is also in the pairwise family: one raw p-value, two corrections. Only
    status ``ok`` comparisons are tests; ``skipped`` (cells failed or not run),
    ``not-testable`` (one seed, a non-finite value, ...) and ``identical`` (the same model
    twice) keep their reason and stay out of the correction.
    """
    confidence = spec.statistics["confidence"]
    alpha = significance_level(confidence)
    columns = grid_columns(cells, spec)
    comparer = Comparer(spec, columns, estimator, spec.main_metric, higher_is_better, confidence)
    out: list[dict[str, Any]] = []
    plan = comparison_plan(cells, spec)
    comparer.prepare(key for keys in plan.values() for key in keys)
    for family, planned in plan.items():
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
    statuses: Sequence[str] = ("ok",),
) -> dict[str, Any] | None:
    """The comparison of a and b (either order) in a column with one of ``statuses``, from
    the first family in ``families`` that has it."""
    for family in families:
        for e in comparisons:
            if (
                e["family"] == family
                and e["status"] in statuses
                and e["target"] == target
                and e["shots"] == shots
                and {e["a"], e["b"]} == {a, b}
            ):
                return e
    return None


# -- summary: scores over targets, transfer gap, ranks, win/tie/loss, learning curves ------


def gap_terms(
    spec: ExperimentSpec, by_seed: Mapping[int, dict[str, Any]], target: str, higher: bool
) -> list[Term]:
    """The transfer gap of a column's cells as terms: how much worse the target test split
    scores than the source's (mean over the sources), in metric units — source − target for
    a metric where higher is better, target − source where lower is: lower is better."""
    sign = 1.0 if higher else -1.0
    # the cells' own sources: in a spec with pairs, each method row has its own
    first = next(iter(by_seed.values()), {})
    sources = tuple(first.get("sources") or spec.sources)
    return [Term(sign / len(sources), s, by_seed, on_source=True) for s in sources] + [
        Term(-sign, target, by_seed)
    ]


def _per_seed_mean(terms: Sequence[Term], metric: str) -> float | None:
    seeds = sorted(set.intersection(*(set(t.cells) for t in terms)))
    values = []
    for s in seeds:
        parts = [t.value(s, metric) for t in terms]
        if any(p is None for p in parts):
            continue
        values.append(
            safe_sum(t.weight * cast(float, p) for t, p in zip(terms, parts, strict=True))
        )
    return _finite_or_none(safe_sum(values) / len(values)) if values else None


def wins_ties_losses(
    comparisons: Sequence[dict[str, Any]], label: str, labels: Sequence[str]
) -> dict[str, Any]:
    """Over every column where both were tested (pairwise family): how often ``label`` is
    significantly better than, not shown to differ from, or significantly worse than each
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
    baseline protocol's method (target-only), else the first such method; None if there is
    none."""
    baseline = resolve_baseline(spec)
    if spec.method(baseline).baseline:
        return baseline
    return next((m.label for m in spec.methods if m.baseline), None)


def learning_curves(
    aggregates: Sequence[dict[str, Any]], label: str, spec: ExperimentSpec
) -> dict[str, list[dict[str, Any]]]:
    """target -> the main metric at each shot count (ascending): the aggregates' own numbers
    and interval, so curves and tables never disagree."""
    index = {
        (a["target"], a["shots"]): a
        for a in aggregates
        if a["method"] == label and a["metric"] == spec.main_metric
    }
    keep = ("mean", "std", "n", "ci", "mean_shots_per_class", "shortfall", "shots_independent")
    curves: dict[str, list[dict[str, Any]]] = {}
    for target in spec.targets:
        points = [
            {"shots": shots}
            | {k: index[(target, shots)][k] for k in keep if k in index[(target, shots)]}
            for shots in sorted(spec.shots, key=shots_sort_key)
            if (target, shots) in index
        ]
        if points:
            curves[target] = points
    return curves


#: Comparisons whose outcome is known: tested, or the same model twice (not better).
STATUSES_KNOWN = ("ok", "identical")


def break_even(
    comparisons: Sequence[dict[str, Any]],
    columns: Mapping[Column, Any],
    label: str,
    reference: str,
    spec: ExperimentSpec,
) -> dict[str, Any]:
    """target -> the smallest k from which ``label`` is no longer significantly better than
    the target-only ``reference`` (at that k and every larger k tested).

    Only shot counts where the grid ran both methods count, and only if every one of them
    was compared (or the two made identical predictions there: not better): a k whose
    comparison was skipped or not testable leaves the break-even undetermined (it could
    lie there) rather than moving it. ``shots`` is None when it is
    still better at the largest k tested (the break-even lies beyond the grid).
    Uses the planned comparison when the spec plans this pair, else the pairwise one.
    """
    out: dict[str, Any] = {}
    for target in spec.targets:
        tested = [
            k
            for k in sorted(spec.shots, key=shots_sort_key)
            if (label, target, k) in columns and (reference, target, k) in columns
        ]
        entry: dict[str, Any] = {"shots": None, "against": reference, "not_compared": []}
        if not tested:
            out[target] = entry | {"status": "not compared"}
            continue
        better: list[bool] = []
        for k in tested:
            e = find_comparison(comparisons, label, reference, target, k, statuses=STATUSES_KNOWN)
            if e is None:
                entry["not_compared"].append(k)
            else:  # an identical pair is the same model: not better, and no test needed
                better.append(bool(e["significant"]) and e["better"] == label)
        if entry["not_compared"]:
            out[target] = entry | {"status": "undetermined"}
            continue
        if better[-1]:
            status = "better at every k tested" if all(better) else "better at the largest k"
            out[target] = entry | {"status": status}
            continue
        last_better = max((i for i, b in enumerate(better) if b), default=-1)
        out[target] = entry | {
            "shots": tested[last_better + 1],
            "status": "never significantly better" if last_better < 0 else "break-even",
        }
    return out


def summarize(
    cells: Sequence[dict[str, Any]],
    spec: ExperimentSpec,
    comparisons: Sequence[dict[str, Any]] = (),
    estimator: Estimator | None = None,
    higher_is_better: bool = True,
    aggregates: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Per method, on the main metric: per shots, the score averaged over targets
    (XTREME-style: each target weighs the same) and the transfer gap, each with its interval
    over seeds and test examples; ranks per column and their mean; win/tie/loss against
    every other method (from ``comparisons``); learning curves and break-even shots against
    target-only.

    The transfer gap is how much worse the target test split scores than the source's,
    only for methods that learn from the source (None for target-only, with a note). The
    interval of a mean over targets uses the seeds that have every target.
    """
    metric = spec.main_metric
    confidence = spec.statistics["confidence"]
    estimator = estimator or Estimator({})
    columns = grid_columns(cells, spec)
    labels = [m.label for m in spec.methods]
    ok = {col: ok_by_seed(cs, metric) for col, cs in columns.items()}
    means = {
        col: safe_sum(c["metrics"][metric] for c in by.values()) / len(by)
        for col, by in ok.items()
        if by
    }

    # (container, key, estimate): intervals filled in at the end, all computed at once
    deferred: list[tuple[dict[Any, Any], Any, SeedsAndExamples | None]] = []

    def interval(container: dict[Any, Any], key: Any, terms: list[Term]) -> None:
        container[key] = None
        deferred.append((container, key, estimator.estimate(terms, metric)[1]))

    # ranks per (target, shots) column among the methods that have a result there
    ranks: dict[Column, float] = {}
    complete: list[tuple[str, Any]] = []
    for target in spec.targets:
        # the methods that run on this target (all of them, but in a spec with pairs, where
        # a row run from one source has no column of that source's own language)
        expected = [
            m.label
            for m in spec.methods
            if any(t == target for t, _, _ in m.runs(spec.targets, spec.sources))
        ]
        for shots in spec.shots:
            present = [m for m in labels if (m, target, shots) in means]
            values = [means[(m, target, shots)] for m in present]
            for m, r in zip(present, average_ranks(values, higher_is_better), strict=True):
                ranks[(m, target, shots)] = r
            if len(present) == len(expected):
                complete.append((target, shots))

    reference = target_only_reference(spec)
    summary: dict[str, Any] = {}
    for method in spec.methods:
        label = method.label
        with_gap = learns_from_source(spec, label)
        rows = {}
        for shots in spec.shots:
            targets = [t for t in spec.targets if (label, t, shots) in means]
            if not targets:
                continue
            per_target = {t: _finite_or_none(means[(label, t, shots)]) for t in targets}
            score_terms = [Term(1.0 / len(targets), t, ok[(label, t, shots)]) for t in targets]
            row: dict[str, Any] = {
                "score": _finite_or_none(
                    safe_sum(means[(label, t, shots)] for t in targets) / len(targets)
                ),
                "score_ci": None,
                "per_target": per_target,
                "transfer_gap": None,
                "transfer_gap_ci": None,
                "transfer_gap_per_target": {},
                "transfer_gap_per_target_ci": {},
                "ranks": {t: _finite_or_none(ranks[(label, t, shots)]) for t in targets},
                "complete": len(targets) == len(method.runs(spec.targets, spec.sources)),
            }
            interval(row, "score_ci", score_terms)
            if with_gap:
                gaps = {
                    t: gap_terms(spec, ok[(label, t, shots)], t, higher_is_better) for t in targets
                }
                per_gap = {t: _per_seed_mean(terms, metric) for t, terms in gaps.items()}
                per_gap = {t: g for t, g in per_gap.items() if g is not None}
                gap_values = [cast(float, g) for g in per_gap.values()]
                row["transfer_gap_per_target"] = per_gap
                for t in per_gap:
                    interval(row["transfer_gap_per_target_ci"], t, gaps[t])
                if per_gap and len(per_gap) == len(targets):
                    row["transfer_gap"] = math.fsum(gap_values) / len(per_gap)
                    interval(
                        row,
                        "transfer_gap_ci",
                        [
                            Term(term.weight / len(targets), term.lang, term.cells, term.on_source)
                            for t in targets
                            for term in gaps[t]
                        ],
                    )
            rows[str(shots)] = row
        ranked = [ranks[(label, t, s)] for t, s in complete if (label, t, s) in ranks]
        ranked = [r for r in ranked if not math.isnan(r)]
        summary[label] = {
            "metric": metric,
            "by_shots": rows,
            "transfer_gap_note": None
            if with_gap
            else (f"n/a: {method.protocol} does not learn from the source language"),
            "mean_rank": math.fsum(ranked) / len(ranked) if ranked else None,
            "columns_ranked": len(ranked),
            "wins_ties_losses": wins_ties_losses(comparisons, label, labels)
            if comparisons
            else None,
            "curves": learning_curves(aggregates, label, spec),
            "break_even": break_even(comparisons, columns, label, reference, spec)
            if comparisons and reference is not None and label != reference
            else None,
        }
    found = intervals([estimate for _, _, estimate in deferred], confidence)
    for (container, key, _), ci in zip(deferred, found, strict=True):
        container[key] = ci
    return summary


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
    from xleval.api.predictions import decode_predictions

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
            confidences.append(probs.max(axis=1).astype(np.float64))
            correct.append((probs.argmax(axis=1) == y_true).astype(np.float64))
        if not confidences:
            continue
        conf = np.concatenate(confidences)
        hit = np.concatenate(correct)
        index = np.minimum((conf * bins).astype(np.int64), bins - 1)
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


# -- all statistics of a report -----------------------------------------------------------


def analyse(
    cells: list[dict[str, Any]],
    spec: ExperimentSpec,
    metrics: Mapping[str, Any],
    predictions: PredictionSource,
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The report's ``aggregates``, ``comparisons``, ``summary``, ``statistics`` and
    ``calibration``.

    ``metrics`` are the built metric components (name -> object with ``compute`` and
    ``higher_is_better``); ``predictions`` finds a cell's stored predictions on a language;
    ``labels`` are the dataset's classes (for the mean shots per class actually trained on).
    """
    confidence = spec.statistics["confidence"]
    notes: list[str] = []
    evaluated = evaluated_on(cells)
    languages = {
        lang: prepare_language(lang, evaluated.get(lang, []), metrics, predictions, notes)
        for lang in dict.fromkeys((*spec.targets, *spec.sources))
    }
    variance = variance_components(cells, spec, languages, spec.main_metric, confidence)
    calibrated = calibration(cells, spec, predictions)
    cells = collapse_draws(cells, languages)
    estimator = Estimator(languages)
    higher = bool(metrics[spec.main_metric].higher_is_better)
    alpha = significance_level(confidence)
    aggregates = aggregate(cells, spec, estimator, confidence, len(labels) if labels else None)
    comparisons = compare_methods(cells, spec, estimator, higher)
    plan = comparison_plan(cells, spec)
    families = {
        family: sum(e["family"] == family and e["status"] == "ok" for e in comparisons)
        for family in plan
    }
    if len(spec.seeds) < 2:
        notes.append(
            "one seed: no significance tests and no intervals over seeds (a single training "
            "run says nothing about the next); run 3 or more seeds"
        )
    for status, what in (
        ("skipped", "skipped for missing cells"),
        ("not-testable", "not testable"),
        ("identical", "between identical models (the same predictions), not tests"),
    ):
        count = sum(e["status"] == status and e["family"] == "pairwise" for e in comparisons)
        if count:
            notes.append(f"{count} pairwise comparison(s) {what}; see their reason")
    short: dict[tuple[str, Any], list[dict[str, Any]]] = defaultdict(list)
    for a in aggregates:
        if a["metric"] == spec.main_metric and a.get("shortfall"):
            short[(a["target"], a["shots"])].append(a)
    for (target, shots), entries in short.items():
        first = entries[0]
        missing = ", ".join(f"{label} {n} short" for label, n in first["shortfall"].items())
        per_class = first.get("mean_shots_per_class")
        notes.append(
            f"{target} k={shots}: fewer than k training rows ({missing}); "
            + ", ".join(a["method"] for a in entries)
            + (f" trained on {per_class:.1f} per class" if per_class is not None else "")
        )
    return {
        "calibration": calibrated,
        "aggregates": aggregates,
        "variance": variance,
        "comparisons": comparisons,
        "summary": summarize(cells, spec, comparisons, estimator, higher, aggregates),
        "statistics": {
            "metric": spec.main_metric,
            "higher_is_better": higher,
            "confidence": confidence,
            "alpha": alpha,
            "test": TEST_NAME,
            "generalises": GENERALISES,
            "interval": interval_caption(confidence),
            "baseline": resolve_baseline(spec),
            "target_only": target_only_reference(spec),
            "families": families,
            "n_examples": {t: lv.n_examples for t, lv in languages.items() if lv is not None},
            "notes": notes,
        },
    }

"""The report's statistics on hand-built cells: transfer gap and scores against hand-computed
numbers, paired comparisons (planted differences, identical models, zero-shot in every shots
column, Holm over each family), what cannot be tested (one seed, NaN, no predictions),
direction with a lower-is-better metric, break-even shots over the shot counts actually
compared, shortfall, failed cells, ranks and determinism."""

from __future__ import annotations

import json
import math

import jsonschema
import numpy as np
import pytest
import torch

from xleval.analysis.analyse import analyse, summarize
from xleval.analysis.stats import holm
from xleval.api.predictions import encode_predictions
from xleval.experiment.resources import load_schema
from xleval.experiment.spec import resolve_spec
from xleval.plugin.manager import get_plugin_manager

T975_DF1 = 12.706204736  # Student t, 97.5 % quantile, 1 degree of freedom (printed tables)
CLASSES = 4


@pytest.fixture(scope="module")
def pm():
    return get_plugin_manager(strict=False)


def make_spec(pm, methods, *, shots=(8,), seeds=(1, 2), targets=("de", "fr"), **statistics):
    return resolve_spec(
        {
            "dataset": {"name": "jsonl", "options": {"path": "unused.jsonl"}},
            "source": "en",
            "targets": list(targets),
            "shots": list(shots),
            "seeds": list(seeds),
            "metrics": ["accuracy"],
            "statistics": statistics,
            "methods": [{"protocol": p} if isinstance(p, str) else p for p in methods],
        },
        pm.registry,
    )


def cell(method, target, shots, seed, acc, source_acc=None, *, protocol=None, failed=False):
    """A cell as the report lists it (xleval.report.cell_entry)."""
    entry = {
        "key": f"{method}/{target}/{shots}/{seed}",
        "method": method,
        "protocol": protocol or method,
        "sources": ["en"],
        "target": target,
        "shots": shots,
        "seed": seed,
        "train_seconds": 0.1,
        "eval_seconds": 0.1,
        "error": None,
    }
    if failed:
        return entry | {
            "status": "failed",
            "metrics": {},
            "source_metrics": {},
            "n_test": None,
            "error": "boom",
        }
    source = {} if source_acc is None else {"en": {"accuracy": source_acc}}
    return entry | {
        "status": "ok",
        "metrics": {"accuracy": acc},
        "source_metrics": source,
        "n_test": 100,
    }


def validate_section(report_section, name):
    """Check one section against its part of specs/report.schema.json."""
    schema = load_schema("report")
    jsonschema.validate(report_section, {"$defs": schema["$defs"], **schema["properties"][name]})


def accuracy(pm):
    return pm.registry.build("metrics", "accuracy", {})


# -- transfer gap and the score over targets, by hand ----------------------------------


def test_transfer_gap_and_score_against_a_hand_computed_report(pm):
    """Point values by hand; without stored predictions nothing can say how the test
    examples move them, so there is no interval (and the reason is given)."""
    spec = make_spec(pm, ["target-only", "transfer"])
    cells = [
        cell("transfer", "de", 8, 1, 0.70, 0.90),  # gap 0.20
        cell("transfer", "de", 8, 2, 0.60, 0.88),  # gap 0.28
        cell("transfer", "fr", 8, 1, 0.80, 0.90),  # gap 0.10
        cell("transfer", "fr", 8, 2, 0.75, 0.88),  # gap 0.13
        cell("target-only", "de", 8, 1, 0.50, 0.30),
        cell("target-only", "de", 8, 2, 0.40, 0.30),
        cell("target-only", "fr", 8, 1, 0.55, 0.35),
        cell("target-only", "fr", 8, 2, 0.45, 0.35),
    ]
    summary = summarize(cells, spec)
    row = summary["transfer"]["by_shots"]["8"]
    assert row["transfer_gap_per_target"] == pytest.approx({"de": 0.24, "fr": 0.115})
    assert row["transfer_gap"] == pytest.approx((0.24 + 0.115) / 2)
    assert row["transfer_gap_ci"] is None and row["score_ci"] is None
    # XTREME-style score: each target weighs the same
    assert row["per_target"] == pytest.approx({"de": 0.65, "fr": 0.775})
    assert row["score"] == pytest.approx(0.7125)
    assert row["ranks"] == {"de": 1.0, "fr": 1.0}
    assert row["complete"] is True
    # target-only never saw the source: its "gap" would mean nothing
    only = summary["target-only"]
    assert only["by_shots"]["8"]["transfer_gap"] is None
    assert only["by_shots"]["8"]["transfer_gap_per_target"] == {}
    assert only["transfer_gap_note"].startswith("n/a: target-only does not learn")


def test_without_predictions_nothing_is_tested_but_the_t_over_seeds_is_reported(pm):
    spec = make_spec(pm, ["target-only", "transfer"], seeds=(1, 2, 3), targets=("de",))
    cells = [cell("transfer", "de", 8, s, 0.70 + 0.01 * s, 0.9) for s in (1, 2, 3)]
    cells += [cell("target-only", "de", 8, s, 0.40 + 0.02 * s, 0.3) for s in (1, 2, 3)]
    out = analyse(cells, spec, {"accuracy": accuracy(pm)}, lambda key, lang: None)
    (entry,) = [c for c in out["comparisons"] if c["family"] == "planned"]
    assert entry["status"] == "not-testable" and "no stored predictions" in entry["reason"]
    # per-seed differences 0.29, 0.28, 0.27: the t over seeds, for what it is
    assert entry["difference"] == pytest.approx(0.28)
    assert entry["p_seeds"] < 1e-3 and entry["p_value"] is None and entry["significant"] is None
    for a in out["aggregates"]:
        assert a["ci"] is None and a["ci_seeds"] is not None
        assert "no stored predictions" in a["ci_reason"]
    assert any("no stored predictions" in n for n in out["statistics"]["notes"])
    for name in ("aggregates", "comparisons", "summary", "statistics"):
        validate_section(out[name], name)


# -- paired comparisons on stored predictions -------------------------------------------


class Grid:
    """Cells and their stored predictions, built from each cell's right/wrong pattern."""

    def __init__(self, n: int = 150, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.n = n
        self.y = {t: self.rng.integers(0, CLASSES, size=n) for t in ("de", "fr")}
        self.difficulty = {t: self.rng.random(n) for t in ("de", "fr")}
        self.cells: list[dict] = []
        self.stored: dict[tuple[str, str], dict] = {}

    def add(self, method, target, shots, seed, skill, *, protocol=None, same_as=None):
        """A cell right on the examples easier than ``skill`` (shared difficulty: methods
        agree on easy examples), plus 5 % of its own flips; or a copy of another cell."""
        if same_as is not None:
            right = self.right[same_as]
        else:
            right = (self.difficulty[target] < skill) ^ (self.rng.random(self.n) < 0.05)
        y = self.y[target]
        pred = np.where(right, y, (y + 1) % CLASSES)
        probs = np.full((self.n, CLASSES), 0.1)
        probs[np.arange(self.n), pred] = 0.7
        c = cell(method, target, shots, seed, float(right.mean()), 0.9, protocol=protocol)
        self.cells.append(c)
        self.stored[(c["key"], target)] = encode_predictions(
            [f"{target}-{i}" for i in range(self.n)],
            torch.tensor(y),
            torch.tensor(probs, dtype=torch.float32),
        )
        self.right = getattr(self, "right", {}) | {c["key"]: right}
        return c["key"]

    def predictions(self, key, lang):
        return self.stored.get((key, lang))


def comparison(out, a, b, target, shots, family="planned"):
    (entry,) = [
        c
        for c in out["comparisons"]
        if c["family"] == family
        and (c["a"], c["b"], c["target"], c["shots"]) == (a, b, target, shots)
    ]
    return entry


@pytest.fixture(scope="module")
def planted(pm):
    """transfer far better than target-only at k=8 and equal (same predictions) at k=32;
    zero-shot (run once, at k=0) equal to target-only at k=8; joint better everywhere."""
    spec = make_spec(
        pm,
        ["target-only", "zero-shot", "transfer", "joint"],
        shots=(0, 8, 32),
        seeds=(1, 2, 3),
    )
    grid = Grid()
    for target in ("de", "fr"):
        for seed in (1, 2, 3):
            t8 = grid.add("target-only", target, 8, seed, 0.45)
            t32 = grid.add("target-only", target, 32, seed, 0.75)
            z = grid.add("zero-shot", target, 0, seed, 0, same_as=t8)
            grid.add("transfer", target, 0, seed, 0, same_as=z)  # k=0: the source model
            grid.add("transfer", target, 8, seed, 0.85)
            grid.add("transfer", target, 32, seed, 0, same_as=t32)
            grid.add("joint", target, 8, seed, 0.95)
            grid.add("joint", target, 32, seed, 0.95)
    out = analyse(grid.cells, spec, {"accuracy": accuracy(pm)}, grid.predictions)
    return spec, grid, out


def test_paired_test_finds_a_planted_difference(planted):
    _, _, out = planted
    entry = comparison(out, "transfer", "target-only", "de", 8)
    assert entry["difference"] == pytest.approx(0.4, abs=0.08)
    assert entry["ci"][0] > 0 and entry["ci_examples"][0] > 0
    assert entry["test"] == "seeds and test examples (Behrens–Fisher)"
    assert entry["generalises"] == "new training seeds and new test examples drawn like these"
    assert entry["p_examples"] < 1e-10  # the exact sign-flip, given these models
    assert entry["variance"]["seeds"] >= 0 and entry["variance"]["examples"] >= 0
    assert entry["se"] == pytest.approx(math.sqrt(sum(entry["variance"].values())))
    assert entry["significant"] and entry["better"] == "transfer"
    assert entry["seeds"] == [1, 2, 3] and entry["n_examples"] == 150


def test_identical_models_are_no_test_and_stay_out_of_the_family(planted):
    """transfer at k=32 made target-only's predictions, and transfer at k=0 the zero-shot
    model's: comparing a model with itself is no test, so neither enters Holm's family."""
    _, _, out = planted
    for a, b, shots, family in (
        ("transfer", "target-only", 32, "planned"),
        ("zero-shot", "transfer", 0, "pairwise"),
        ("target-only", "transfer", 32, "pairwise"),
    ):
        entry = comparison(out, a, b, "fr", shots, family=family)
        assert entry["status"] == "identical" and "not a test" in entry["reason"]
        assert entry["difference"] == 0.0
        assert entry["p_value"] is None and entry["p_holm"] is None
        assert entry["significant"] is None
    pairwise = [c for c in out["comparisons"] if c["family"] == "pairwise"]
    assert out["statistics"]["families"]["pairwise"] == sum(c["status"] == "ok" for c in pairwise)
    assert any("identical models" in n for n in out["statistics"]["notes"])


def test_zero_shot_is_compared_in_every_shots_column(planted):
    _, _, out = planted
    at8 = comparison(out, "zero-shot", "target-only", "de", 8)
    at32 = comparison(out, "zero-shot", "target-only", "de", 32)
    assert at8["status"] == "identical"  # same predictions at k=8
    assert at32["significant"] and at32["better"] == "target-only"
    assert at32["seeds"] == [1, 2, 3]
    # target-only was not run at k=0: nothing to compare there, and nothing reported
    assert not [
        c for c in out["comparisons"] if c["shots"] == 0 and "target-only" in (c["a"], c["b"])
    ]


def test_holm_runs_over_each_family_of_the_whole_report(planted):
    _, _, out = planted
    alpha = out["statistics"]["alpha"]
    for family in ("planned", "pairwise"):
        tested = [c for c in out["comparisons"] if c["family"] == family and c["status"] == "ok"]
        assert out["statistics"]["families"][family] == len(tested) > 0
        assert [c["p_holm"] for c in tested] == holm([c["p_value"] for c in tested])
        assert all(c["significant"] == (c["p_holm"] <= alpha) for c in tested)
    planned = [(c["a"], c["b"]) for c in out["comparisons"] if c["family"] == "planned"]
    assert {b for _, b in planned} == {"target-only"}  # the default baseline


def test_break_even_shots(planted):
    _, _, out = planted
    summary = out["summary"]
    assert summary["transfer"]["break_even"]["de"] == {
        "shots": 32,
        "status": "break-even",
        "against": "target-only",
        "not_compared": [],
    }
    # zero-shot is target-only's model at k=8 (identical: not better) and worse at k=32
    assert summary["zero-shot"]["break_even"]["de"]["shots"] == 8
    assert summary["zero-shot"]["break_even"]["de"]["status"] == "never significantly better"
    assert summary["joint"]["break_even"]["fr"] == {
        "shots": None,
        "status": "better at every k tested",
        "against": "target-only",
        "not_compared": [],
    }
    assert summary["target-only"]["break_even"] is None


def test_ranks_wins_ties_losses_and_curves(planted):
    _, _, out = planted
    summary = out["summary"]
    assert summary["joint"]["by_shots"]["8"]["ranks"] == {"de": 1.0, "fr": 1.0}
    # at k=32 transfer and target-only share one prediction set: a tie at ranks 2 and 3
    assert summary["transfer"]["by_shots"]["32"]["ranks"]["de"] == 2.5
    assert summary["joint"]["mean_rank"] == 1.0  # columns where all four methods ran
    assert summary["joint"]["columns_ranked"] == 4
    wtl = summary["joint"]["wins_ties_losses"]
    vs = wtl["vs"]["target-only"]
    assert vs["losses"] == 0 and vs["wins"] >= 2  # k=8: 0.95 against 0.45
    assert vs["wins"] + vs["ties"] == 4  # both targets at k=8 and k=32
    assert wtl["total"]["losses"] == 0
    pairwise = [c for c in out["comparisons"] if c["family"] == "pairwise" and c["status"] == "ok"]
    wins = sum(c["better"] == "transfer" for c in pairwise)
    losses = sum(c["significant"] and "transfer" in (c["a"], c["b"]) and c["better"] != "transfer"
                 for c in pairwise)  # fmt: skip
    assert summary["transfer"]["wins_ties_losses"]["total"]["wins"] == wins
    assert summary["transfer"]["wins_ties_losses"]["total"]["losses"] == losses
    curve = summary["transfer"]["curves"]["de"]
    assert [p["shots"] for p in curve] == [0, 8, 32]
    aggregates = {
        a["shots"]: a
        for a in out["aggregates"]
        if (a["method"], a["target"], a["metric"]) == ("transfer", "de", "accuracy")
    }
    for point in curve:  # the curves show the aggregates' own numbers and interval
        assert point["ci"] == aggregates[point["shots"]]["ci"]
        assert point["ci"][0] <= point["mean"] <= point["ci"][1]


def test_sections_validate_and_aggregates_carry_every_interval(planted):
    _, _, out = planted
    for name in ("aggregates", "comparisons", "summary", "statistics"):
        validate_section(out[name], name)
    for a in out["aggregates"]:
        assert a["n_examples"] == 150 and a["ci_reason"] is None
        for key in ("ci", "ci_seeds", "ci_examples"):
            assert a[key][0] <= a["mean"] <= a[key][1], key
    zero = [a for a in out["aggregates"] if a["method"] == "zero-shot" and a["target"] == "de"]
    assert {a["shots"] for a in zero} == {0, 8, 32}
    assert len({json.dumps(a["ci"]) for a in zero}) == 1  # one run, every column
    assert out["statistics"]["interval"] == "95% interval over seeds and test examples"


def test_same_cells_give_the_same_numbers(pm, planted):
    spec, grid, out = planted
    again = analyse(grid.cells, spec, {"accuracy": accuracy(pm)}, grid.predictions)
    assert json.dumps(again, sort_keys=True) == json.dumps(out, sort_keys=True)


def test_the_interval_over_targets_counts_each_test_set(planted):
    """The mean over targets varies with each target's test examples too: its interval is
    at least as wide as the seeds alone make it, and holds the score."""
    _, _, out = planted
    row = out["summary"]["transfer"]["by_shots"]["8"]
    assert row["score_ci"][0] <= row["score"] <= row["score_ci"][1]
    seeds_only = [
        np.mean([c["metrics"]["accuracy"] for c in out_cells(planted, "transfer", 8, s)])
        for s in (1, 2, 3)
    ]
    t_half = 4.302652730 * np.std(seeds_only, ddof=1) / math.sqrt(3)
    assert (row["score_ci"][1] - row["score_ci"][0]) / 2 > t_half


def out_cells(planted, method, shots, seed):
    _, grid, _ = planted
    return [c for c in grid.cells if (c["method"], c["shots"], c["seed"]) == (method, shots, seed)]


# -- what cannot be tested, and direction --------------------------------------------------


def test_one_seed_makes_no_claims(pm):
    spec = make_spec(pm, ["target-only", "transfer"], seeds=(4,))
    grid = Grid(seed=3)
    for target in ("de", "fr"):
        grid.add("target-only", target, 8, 4, 0.3)
        grid.add("transfer", target, 8, 4, 0.9)
    out = analyse(grid.cells, spec, {"accuracy": accuracy(pm)}, grid.predictions)
    assert {c["status"] for c in out["comparisons"]} == {"not-testable"}
    assert all(c["significant"] is None and c["p_holm"] is None for c in out["comparisons"])
    assert out["statistics"]["families"] == {"planned": 0, "pairwise": 0}
    assert any(n.startswith("one seed") for n in out["statistics"]["notes"])
    assert all(a["ci"] is None and "one seed" in a["ci_reason"] for a in out["aggregates"])
    assert all(a["ci_examples"] is not None for a in out["aggregates"])


def test_a_non_finite_value_makes_a_comparison_not_testable(pm):
    spec = make_spec(pm, ["target-only", "transfer"], seeds=(1, 2, 3), targets=("de",))
    grid = Grid(seed=4)
    for seed in (1, 2, 3):
        grid.add("target-only", "de", 8, seed, 0.4)
        key = grid.add("transfer", "de", 8, seed, 0.9)
    diverged = next(c for c in grid.cells if c["key"] == key)
    diverged["metrics"]["accuracy"] = float("nan")
    out = analyse(grid.cells, spec, {"accuracy": accuracy(pm)}, grid.predictions)
    entry = comparison(out, "transfer", "target-only", "de", 8)
    assert entry["status"] == "not-testable" and "not finite" in entry["reason"]
    assert entry["p_value"] is None and entry["significant"] is None
    transfer = next(a for a in out["aggregates"] if a["method"] == "transfer")
    assert transfer["mean"] is None and transfer["ci"] is None
    validate_section(out["aggregates"], "aggregates")
    json.dumps(out, allow_nan=False)  # no bare NaN tokens in the report


def test_a_lower_is_better_main_metric_reads_the_right_way(pm):
    """With nll as main metric the better method has the lower value: it wins the test,
    ranks first, and the transfer gap (target worse than source) is target − source."""
    spec = resolve_spec(
        make_spec(pm, ["target-only", "joint"], seeds=(1, 2, 3), targets=("de",)).to_json()
        | {"metrics": ["accuracy", "nll"], "main_metric": "nll"},
        pm.registry,
    )
    grid = Grid(seed=5)
    for seed in (1, 2, 3):
        grid.add("target-only", "de", 8, seed, 0.35)
        grid.add("joint", "de", 8, seed, 0.9)
    metrics = {"accuracy": accuracy(pm), "nll": pm.registry.build("metrics", "nll", {})}
    for c in grid.cells:
        y, probs = decode(grid, c)
        c["metrics"] = {name: m.compute(y, probs) for name, m in metrics.items()}
        c["source_metrics"] = {"en": {"nll": c["metrics"]["nll"] - 0.25}}
    out = analyse(grid.cells, spec, metrics, grid.predictions)
    entry = comparison(out, "joint", "target-only", "de", 8)
    assert entry["difference"] < 0 and entry["higher_is_better"] is False
    assert entry["significant"] and entry["better"] == "joint"
    assert out["summary"]["joint"]["by_shots"]["8"]["ranks"]["de"] == 1.0
    assert out["summary"]["joint"]["by_shots"]["8"]["transfer_gap"] == pytest.approx(0.25)


def test_break_even_never_names_a_shot_count_that_was_not_compared(pm):
    """transfer beats target-only at k=8 and k=128; the k=32 comparison is missing (its
    target-only cells failed): the break-even is undetermined, not '> max k'."""
    spec = make_spec(pm, ["target-only", "transfer"], shots=(8, 32, 128), seeds=(1, 2, 3),
                     targets=("de",))  # fmt: skip
    grid = Grid(seed=6)
    for seed in (1, 2, 3):
        for shots in (8, 32, 128):
            grid.add("transfer", "de", shots, seed, 0.95)
            if shots == 32:
                grid.cells.append(cell("target-only", "de", 32, seed, 0, failed=True))
            else:
                grid.add("target-only", "de", shots, seed, 0.3)
    out = analyse(grid.cells, spec, {"accuracy": accuracy(pm)}, grid.predictions)
    assert out["summary"]["transfer"]["break_even"]["de"] == {
        "shots": None,
        "status": "undetermined",
        "against": "target-only",
        "not_compared": [32],
    }


def test_shortfall_is_carried_to_aggregates_curves_and_notes(pm):
    spec = make_spec(pm, ["target-only", "transfer"], shots=(8, 128), seeds=(1, 2),
                     targets=("de",))  # fmt: skip
    grid = Grid(seed=7)
    for seed in (1, 2):
        for shots in (8, 128):
            for method in ("target-only", "transfer"):
                key = grid.add(method, "de", shots, seed, 0.6)
                short = {"net": 28} if shots == 128 else {}
                next(c for c in grid.cells if c["key"] == key)["info"] = {
                    "n_shots": shots * CLASSES - sum(short.values()),
                    "shortfall": short,
                }
    out = analyse(grid.cells, spec, {"accuracy": accuracy(pm)}, grid.predictions,
                  labels=["a", "b", "c", "d"])  # fmt: skip
    at128 = next(a for a in out["aggregates"] if (a["method"], a["shots"]) == ("transfer", 128))
    assert at128["shortfall"] == {"net": 28}
    assert at128["mean_shots_per_class"] == pytest.approx(121.0)
    at8 = next(a for a in out["aggregates"] if (a["method"], a["shots"]) == ("transfer", 8))
    assert "shortfall" not in at8 and at8["mean_shots_per_class"] == 8.0
    point = out["summary"]["transfer"]["curves"]["de"][-1]
    assert point["mean_shots_per_class"] == pytest.approx(121.0) and point["shortfall"]
    assert any("fewer than k training rows" in n for n in out["statistics"]["notes"])


# -- failed and missing cells -----------------------------------------------------------


def test_failed_cells_are_skipped_and_noted_not_fatal(pm):
    spec = make_spec(pm, ["target-only", "transfer", "fusion"], shots=(8, 32), seeds=(1, 2, 3))
    grid = Grid(n=80, seed=1)
    for target in ("de", "fr"):
        for seed in (1, 2, 3):
            for shots in (8, 32):
                grid.add("target-only", target, shots, seed, 0.5)
                grid.add("transfer", target, shots, seed, 0.8)
                # every fusion cell of (fr, 8) failed; one of (de, 32)
                if (target, shots) == ("fr", 8) or (target, shots, seed) == ("de", 32, 2):
                    grid.cells.append(cell("fusion", target, shots, seed, 0, failed=True))
                else:
                    grid.add("fusion", target, shots, seed, 0.7)
    out = analyse(grid.cells, spec, {"accuracy": accuracy(pm)}, grid.predictions)
    skipped = comparison(out, "fusion", "target-only", "fr", 8)
    assert skipped["status"] == "skipped"
    assert "fusion has 0 of 3 cells" in skipped["reason"]
    assert skipped["p_value"] is None and skipped["p_holm"] is None
    partial = comparison(out, "fusion", "target-only", "de", 32)
    assert partial["status"] == "ok" and partial["seeds"] == [1, 3]
    assert partial["seeds_dropped"] == [2]
    tested = [c for c in out["comparisons"] if c["family"] == "planned" and c["status"] == "ok"]
    assert out["statistics"]["families"]["planned"] == len(tested) == 7
    assert any("skipped" in note for note in out["statistics"]["notes"])
    assert out["summary"]["fusion"]["by_shots"]["8"]["complete"] is False
    for name in ("aggregates", "comparisons", "summary", "statistics"):
        validate_section(out[name], name)


class SlowMetric:
    """A third-party metric with no vectorised form: its per-example values come from
    calling it with each example (or group of examples) left out."""

    higher_is_better = True

    def compute(self, y_true, probs):
        return float((probs.argmax(1) == y_true).double().mean()) ** 2


def test_a_metric_without_vectorised_form_still_gets_intervals(pm):
    spec = resolve_spec(
        make_spec(pm, ["target-only", "transfer"], targets=("de",)).to_json()
        | {"metrics": ["accuracy", "brier"], "main_metric": "accuracy"},
        pm.registry,
    )
    grid = Grid(n=40, seed=2)
    for seed in (1, 2):
        grid.add("target-only", "de", 8, seed, 0.5)
        grid.add("transfer", "de", 8, seed, 0.8)
    for c in grid.cells:
        c["metrics"]["brier"] = SlowMetric().compute(*decode(grid, c))
    out = analyse(
        grid.cells, spec, {"accuracy": accuracy(pm), "brier": SlowMetric()}, grid.predictions
    )
    slow = [a for a in out["aggregates"] if a["metric"] == "brier"]
    assert all(a["ci"][0] <= a["mean"] <= a["ci"][1] for a in slow)
    assert any("no vectorised form" in note for note in out["statistics"]["notes"])


def decode(grid, c):
    from xleval.api.predictions import decode_predictions
    from xleval.train.tensors import metric_inputs

    return metric_inputs(*decode_predictions(grid.stored[(c["key"], c["target"])]))


def test_a_slow_metric_on_a_large_test_set_is_grouped(pm, monkeypatch):
    """Called once per left-out example, a metric without a vectorised form would cost n
    calls per cell: past MAX_CALLED_UNITS examples they are left out in that many groups,
    the same groups for every cell, so cells still pair up."""
    import xleval.analysis.analyse

    monkeypatch.setattr(xleval.analysis.analyse, "MAX_CALLED_UNITS", 25)
    spec = resolve_spec(
        make_spec(pm, ["target-only", "transfer"], seeds=(1, 2, 3), targets=("de",)).to_json()
        | {"metrics": ["accuracy", "brier"], "main_metric": "brier"},
        pm.registry,
    )
    grid = Grid(n=100, seed=8)
    for seed in (1, 2, 3):
        grid.add("target-only", "de", 8, seed, 0.3)
        grid.add("transfer", "de", 8, seed, 0.9)
    for c in grid.cells:
        c["metrics"]["brier"] = SlowMetric().compute(*decode(grid, c))
    metrics = {"accuracy": accuracy(pm), "brier": SlowMetric()}
    out = analyse(grid.cells, spec, metrics, grid.predictions)
    slow = [a for a in out["aggregates"] if a["metric"] == "brier"]
    assert all(a["n_examples"] == 25 for a in slow)
    assert all(a["n_examples"] == 100 for a in out["aggregates"] if a["metric"] == "accuracy")
    entry = comparison(out, "transfer", "target-only", "de", 8)
    assert entry["status"] == "ok" and entry["n_examples"] == 25
    assert entry["ci"][0] <= entry["difference"] <= entry["ci"][1]
    assert any("25 groups" in note for note in out["statistics"]["notes"])


def test_a_target_without_test_examples_is_not_testable_not_identical(pm):
    """Empty test sets make every cell's predictions 'equal' (there are none): that is no
    evidence that two methods are the same model, and no break-even can be read off it."""
    spec = make_spec(pm, ["target-only", "transfer"], seeds=(1, 2, 3), targets=("de",))
    cells, stored = [], {}
    for seed in (1, 2, 3):
        for method in ("target-only", "transfer"):
            c = cell(method, "de", 8, seed, float("nan"))
            cells.append(c)
            stored[(c["key"], "de")] = encode_predictions([], torch.zeros(0, dtype=torch.long),
                                                          torch.zeros(0, CLASSES))  # fmt: skip
    out = analyse(cells, spec, {"accuracy": accuracy(pm)}, lambda k, lang: stored.get((k, lang)))
    entry = comparison(out, "transfer", "target-only", "de", 8)
    assert entry["status"] == "not-testable" and "0 test example(s)" in entry["reason"]
    assert out["summary"]["transfer"]["break_even"]["de"]["status"] == "undetermined"
    assert any("de: 0 test example(s)" in n for n in out["statistics"]["notes"])
    json.dumps(out, allow_nan=False)


def test_infinite_values_make_comparisons_not_testable_without_crashing(pm):
    """A diverged loss is infinite on some seeds (and on its source too): never evidence,
    never a crash."""
    spec = resolve_spec(
        make_spec(pm, ["target-only", "joint"], seeds=(1, 2, 3), targets=("de",)).to_json()
        | {"metrics": ["nll"], "main_metric": "nll"},
        pm.registry,
    )
    grid = Grid(seed=9)
    for seed in (1, 2, 3):
        grid.add("target-only", "de", 8, seed, 0.4)
        grid.add("joint", "de", 8, seed, 0.9)
    nll = pm.registry.build("metrics", "nll", {})
    for i, c in enumerate(grid.cells):
        y, probs = decode(grid, c)
        value = math.inf if i in (0, 3) else nll.compute(y, probs)  # +inf on two seeds
        c["metrics"] = {"nll": value}
        c["source_metrics"] = {"en": {"nll": -math.inf if i == 3 else 0.5}}
    out = analyse(grid.cells, spec, {"nll": nll}, grid.predictions)
    entry = comparison(out, "joint", "target-only", "de", 8)
    assert entry["status"] == "not-testable" and "not finite" in entry["reason"]
    assert out["summary"]["joint"]["by_shots"]["8"]["transfer_gap"] is None
    json.dumps(out, allow_nan=False)


def test_a_wrong_form_is_refused_in_every_cell_not_only_the_first_checked(pm):
    """The resample check runs on the first cells of each metric and language until
    RESAMPLE_CHECKS of them pass: a form wrong everywhere never passes, so every cell's
    values come from calling the metric, as a metric without a form."""
    from test_stats import RightOnlyOnTheWhole

    from xleval.analysis.analyse import RESAMPLE_CHECKS

    spec = resolve_spec(
        make_spec(pm, ["target-only", "transfer"], targets=("de",)).to_json()
        | {"metrics": ["accuracy", "brier"], "main_metric": "accuracy"},
        pm.registry,
    )
    grid = Grid(n=40, seed=3)
    seeds = range(1, RESAMPLE_CHECKS + 3)
    for seed in seeds:
        grid.add("target-only", "de", 8, seed, 0.5)
        grid.add("transfer", "de", 8, seed, 0.8)
    wrong, slow = RightOnlyOnTheWhole(), SlowMetric()
    slow.compute = wrong.compute  # the same metric, offered without a form
    for c in grid.cells:
        c["metrics"]["brier"] = wrong.compute(*decode(grid, c))
    by_form = analyse(
        grid.cells, spec, {"accuracy": accuracy(pm), "brier": wrong}, grid.predictions
    )
    by_calls = analyse(
        grid.cells, spec, {"accuracy": accuracy(pm), "brier": slow}, grid.predictions
    )
    assert any("no vectorised form" in note for note in by_form["statistics"]["notes"])
    assert [a for a in by_form["aggregates"] if a["metric"] == "brier"] == [
        a for a in by_calls["aggregates"] if a["metric"] == "brier"
    ]

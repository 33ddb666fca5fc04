"""The report's statistics on hand-built cells: transfer gap and scores against hand-computed
numbers, paired comparisons (planted differences, zero-shot in every shots column, Holm
over the family), failed cells, break-even shots, ranks and determinism."""

from __future__ import annotations

import json
import math

import jsonschema
import numpy as np
import pytest
import torch

from xleval.plugins import get_plugin_manager
from xleval.report import analyse, summarize
from xleval.resources import load_schema
from xleval.runner import encode_predictions
from xleval.spec import resolve_spec
from xleval.stats import holm

T975_DF1 = 12.706204736  # Student t, 97.5 % quantile, 1 degree of freedom (printed tables)
T975_DF2 = 4.302652730  # the same with 2 degrees of freedom
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
            "statistics": {"bootstrap": 500, **statistics},
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


# -- transfer gap and the score over targets, by hand ----------------------------------


def test_transfer_gap_and_score_against_a_hand_computed_report(pm):
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
    row = summarize(cells, spec)["transfer"]["by_shots"]["8"]
    assert row["transfer_gap_per_target"] == pytest.approx({"de": 0.24, "fr": 0.115})
    assert row["transfer_gap"] == pytest.approx((0.24 + 0.115) / 2)
    # over seeds: seed 1 averages (0.20 + 0.10) / 2 = 0.15, seed 2 (0.28 + 0.13) / 2 = 0.205
    half = T975_DF1 * (0.205 - 0.15) / math.sqrt(2) / math.sqrt(2)  # sd of 2 values = |d|/√2
    assert row["transfer_gap_ci"] == pytest.approx([0.1775 - half, 0.1775 + half], rel=1e-6)
    half_de = T975_DF1 * (0.28 - 0.20) / math.sqrt(2) / math.sqrt(2)
    assert row["transfer_gap_per_target_ci"]["de"] == pytest.approx(
        [0.24 - half_de, 0.24 + half_de], rel=1e-6
    )
    # XTREME-style score: each target weighs the same
    assert row["per_target"] == pytest.approx({"de": 0.65, "fr": 0.775})
    assert row["score"] == pytest.approx(0.7125)
    half_score = T975_DF1 * (0.75 - 0.675) / 2  # per-seed scores 0.75 and 0.675
    assert row["score_ci"] == pytest.approx([0.7125 - half_score, 0.7125 + half_score])
    assert row["ranks"] == {"de": 1.0, "fr": 1.0}
    assert row["complete"] is True


def test_without_predictions_comparisons_fall_back_to_seeds_and_stay_valid(pm):
    spec = make_spec(pm, ["target-only", "transfer"], seeds=(1, 2, 3), targets=("de",))
    cells = [cell("transfer", "de", 8, s, 0.70 + 0.01 * s, 0.9) for s in (1, 2, 3)]
    cells += [cell("target-only", "de", 8, s, 0.40 + 0.02 * s, 0.3) for s in (1, 2, 3)]
    out = analyse(cells, spec, {"accuracy": accuracy(pm)}, lambda key, lang: None)
    planned = [c for c in out["comparisons"] if c["family"] == "planned"]
    assert len(planned) == 1
    (entry,) = planned
    assert entry["test"] == "paired t over seeds"
    # per-seed differences 0.29, 0.28, 0.27: t = 0.28 / (0.01 / √3)
    assert entry["difference"] == pytest.approx(0.28)
    assert entry["p_value"] == entry["p_seeds"] < 1e-3
    assert entry["ci"] == pytest.approx(
        [0.28 - T975_DF2 * 0.01 / math.sqrt(3), 0.28 + T975_DF2 * 0.01 / math.sqrt(3)]
    )
    assert all(a["ci_bootstrap"] is None for a in out["aggregates"])
    assert any("no stored predictions" in n for n in out["statistics"]["notes"])
    for name in ("aggregates", "comparisons", "summary", "statistics"):
        validate_section(out[name], name)


# -- paired comparisons on stored predictions -------------------------------------------


def accuracy(pm):
    return pm.registry.build("metrics", "accuracy", {})


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
            grid.add("zero-shot", target, 0, seed, 0, same_as=t8)
            grid.add("transfer", target, 0, seed, 0.5)
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
    assert entry["ci"][0] > 0
    assert entry["test"] == "two-way bootstrap + exact sign-flip"
    assert entry["p_permutation"] < 1e-10
    assert entry["p_value"] == max(entry["p_bootstrap"], entry["p_permutation"])
    assert entry["significant"] and entry["better"] == "transfer"
    assert entry["seeds"] == [1, 2, 3] and entry["n_examples"] == 150


def test_identical_predictions_are_no_difference(planted):
    _, _, out = planted
    entry = comparison(out, "transfer", "target-only", "fr", 32)
    assert entry["difference"] == 0.0
    assert entry["ci"] == [0.0, 0.0]
    assert entry["p_value"] == entry["p_permutation"] == 1.0
    assert entry["significant"] is False and entry["better"] is None


def test_zero_shot_is_compared_in_every_shots_column(planted):
    _, _, out = planted
    at8 = comparison(out, "zero-shot", "target-only", "de", 8)
    at32 = comparison(out, "zero-shot", "target-only", "de", 32)
    assert at8["difference"] == 0.0 and not at8["significant"]  # same predictions at k=8
    assert at32["significant"] and at32["better"] == "target-only"
    assert at32["seeds"] == [1, 2, 3]
    # target-only was not run at k=0: nothing to compare there, and nothing reported
    assert not [
        c for c in out["comparisons"] if c["shots"] == 0 and "target-only" in (c["a"], c["b"])
    ]
    zero = comparison(out, "zero-shot", "transfer", "de", 0, family="pairwise")
    assert zero["status"] == "ok"


def test_holm_runs_over_each_family_of_the_whole_report(planted):
    _, _, out = planted
    alpha = out["statistics"]["alpha"]
    for family in ("planned", "pairwise"):
        tested = [c for c in out["comparisons"] if c["family"] == family]
        assert out["statistics"]["families"][family] == len(tested)
        assert [c["p_holm"] for c in tested] == holm([c["p_value"] for c in tested])
        assert all(c["significant"] == (c["p_holm"] <= alpha) for c in tested)
    planned = [(c["a"], c["b"]) for c in out["comparisons"] if c["family"] == "planned"]
    assert {b for _, b in planned} == {"target-only"}  # the default baseline
    # enough resamples that Holm's strictest threshold is reachable
    m = max(out["statistics"]["families"].values())
    assert 1 / (out["statistics"]["test_resamples"] + 1) < alpha / m


def test_break_even_shots(planted):
    _, _, out = planted
    summary = out["summary"]
    assert summary["transfer"]["break_even"]["de"] == {
        "shots": 32,
        "status": "break-even",
        "against": "target-only",
    }
    assert summary["zero-shot"]["break_even"]["de"]["shots"] == 8
    assert summary["zero-shot"]["break_even"]["de"]["status"] == "never significantly better"
    assert summary["joint"]["break_even"]["fr"] == {
        "shots": None,
        "status": "better at every k tested",
        "against": "target-only",
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
    assert wtl["vs"]["target-only"] == {"wins": 4, "ties": 0, "losses": 0}
    assert wtl["total"]["losses"] == 0
    pairwise = [c for c in out["comparisons"] if c["family"] == "pairwise"]
    wins = sum(c["better"] == "transfer" for c in pairwise)
    losses = sum(c["significant"] and "transfer" in (c["a"], c["b"]) and c["better"] != "transfer"
                 for c in pairwise)  # fmt: skip
    assert summary["transfer"]["wins_ties_losses"]["total"]["wins"] == wins
    assert summary["transfer"]["wins_ties_losses"]["total"]["losses"] == losses
    curve = summary["transfer"]["curves"]["de"]
    assert [p["shots"] for p in curve] == [0, 8, 32]
    for point in curve:
        assert point["ci_bootstrap"][0] <= point["mean"] <= point["ci_bootstrap"][1]


def test_sections_validate_and_aggregates_carry_both_intervals(planted):
    _, _, out = planted
    for name in ("aggregates", "comparisons", "summary", "statistics"):
        validate_section(out[name], name)
    for a in out["aggregates"]:
        assert a["ci_bootstrap"] is not None and a["n_examples"] == 150
        assert a["ci_bootstrap"][0] <= a["mean"] <= a["ci_bootstrap"][1]
    zero = [a for a in out["aggregates"] if a["method"] == "zero-shot" and a["target"] == "de"]
    assert {a["shots"] for a in zero} == {0, 8, 32}
    assert len({json.dumps(a["ci_bootstrap"]) for a in zero}) == 1  # one run, every column


def test_same_cells_give_the_same_numbers_and_the_seed_option_changes_them(pm, planted):
    spec, grid, out = planted
    metrics = {"accuracy": accuracy(pm)}
    again = analyse(grid.cells, spec, metrics, grid.predictions)
    assert json.dumps(again, sort_keys=True) == json.dumps(out, sort_keys=True)
    raw = spec.to_json() | {"statistics": spec.statistics | {"seed": 7}}
    other = analyse(grid.cells, resolve_spec(raw, pm.registry), metrics, grid.predictions)
    assert other["aggregates"][0]["ci_bootstrap"] != out["aggregates"][0]["ci_bootstrap"]
    key = ("transfer", "target-only", "de", 8)
    assert comparison(other, *key)["p_permutation"] == comparison(out, *key)["p_permutation"]


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
    """A third-party metric with no vectorised form: bootstrapped by calling it."""

    higher_is_better = True

    def compute(self, y_true, probs):
        return float((probs.argmax(1) == y_true).double().mean()) ** 2


def test_a_metric_without_vectorised_form_is_still_resampled(pm):
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
    assert all(a["ci_bootstrap"][0] <= a["mean"] <= a["ci_bootstrap"][1] for a in slow)
    assert any("no vectorised form" in note for note in out["statistics"]["notes"])


def decode(grid, c):
    from xleval.runner import decode_predictions

    return decode_predictions(grid.stored[(c["key"], c["target"])])

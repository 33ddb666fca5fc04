"""Shot draws separate from training seeds, and the variance components of a score."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_runner import write_spec

from xleval.analysis.analyse import collapse_draws
from xleval.analysis.variance import components, difference_interval
from xleval.api.data import Example, MultilingualDataset
from xleval.cli.main import build_cli
from xleval.experiment.grid import expand_grid
from xleval.experiment.sampling import sample_shots
from xleval.experiment.spec import resolve_spec
from xleval.plugin.manager import get_plugin_manager
from xleval.run.runner import key_payload
from xleval.train.cell import seed_view

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def spec_with(**extra) -> dict:
    return {
        "dataset": {"name": "jsonl", "options": {"path": "x.jsonl"}},
        "source": "en",
        "targets": ["de"],
        "shots": [0, 4, "all"],
        "seeds": [1, 2, 3],
        "methods": [{"protocol": p} for p in ("target-only", "zero-shot", "transfer")],
        **extra,
    }


def test_a_spec_without_shot_draws_has_the_cells_and_keys_it_had():
    pm = get_plugin_manager()
    spec = resolve_spec(spec_with(), pm.registry)
    assert spec.shot_draws == () and "shot_draws" not in spec.to_json()
    cells = expand_grid(spec)
    assert all(c.draw is None and "draw" not in c.to_json() for c in cells)
    payload = key_payload(spec, cells[0], "f")
    assert "draw" not in payload["cell"]
    # the seed's own sample: ranked by sha256(seed, id), as before shot draws existed
    examples = tuple(
        Example(f"de-{i}", f"g{i}", "de", "a" if i % 2 else "b", "x", "train") for i in range(9)
    )
    data = MultilingualDataset("d", examples)
    sample = sample_shots(data, "de", 2, seed=5)
    by_hand = []
    for label in ("a", "b"):
        items = [e for e in examples if e.label == label]
        items.sort(key=lambda e: (hashlib.sha256(f"5\0{e.id}".encode()).digest(), e.id))
        by_hand += items[:2]
    assert sample.examples == tuple(by_hand)


def test_shot_draws_cross_the_seeds_at_every_k_that_draws_shots():
    pm = get_plugin_manager()
    spec = resolve_spec(spec_with(shot_draws=[1, 2]), pm.registry)
    cells = expand_grid(spec)
    by = {}
    for c in cells:
        by.setdefault((c.method, c.shots), []).append((c.seed, c.draw))
    assert sorted(by[("target-only", 4)]) == [(s, d) for s in (1, 2, 3) for d in (1, 2)]
    # k = 0 and "all" draw nothing: once per seed
    assert sorted(by[("target-only", "all")]) == [(1, None), (2, None), (3, None)]
    assert sorted(by[("transfer", 0)]) == [(1, None), (2, None), (3, None)]
    assert sorted(by[("zero-shot", 0)]) == [(1, None), (2, None), (3, None)]
    assert len({json.dumps(key_payload(spec, c, "f"), sort_keys=True) for c in cells}) == len(cells)
    assert spec.to_json()["shot_draws"] == [1, 2]
    # the spec as the report keeps it resolves to the same grid
    assert expand_grid(resolve_spec(spec.to_json(), pm.registry)) == cells


def test_bad_shot_draws_are_refused_with_their_path():
    pm = get_plugin_manager()
    for bad in ([], [1, 1], [-1], ["a"]):
        with pytest.raises(Exception, match="shot_draws"):
            resolve_spec(spec_with(shot_draws=bad), pm.registry)


def test_draws_of_a_seed_differ_in_their_examples_not_in_their_training_randomness():
    examples = tuple(
        Example(f"de-{i}", f"g{i}", "de", "ab"[i % 2], "x", "train") for i in range(40)
    )
    data = MultilingualDataset("d", examples)
    first, second = (sample_shots(data, "de", 4, seed=1, draw=d) for d in (1, 2))
    assert first.counts == second.counts == {"a": 4, "b": 4}
    assert set(first.examples) != set(second.examples)
    assert sample_shots(data, "de", 4, seed=1, draw=1) == first  # determined by (seed, draw)
    # nested across k within a draw
    assert set(first.examples) <= set(sample_shots(data, "de", 8, seed=1, draw=1).examples)
    # what init and data order derive from ignores the draw, keeps the seed's parts
    assert seed_view([["shots", "de", 4, 1, 2]]) == seed_view([["shots", "de", 4, 1]])
    assert seed_view([["shots", "de", 4, 1]]) == json.dumps([["shots", "de", 4, 1]])
    assert seed_view([["shots", "de", 4, 2, 1]]) != seed_view([["shots", "de", 4, 1, 1]])


def fake_cell(method, seed, draw, acc, status="ok", shots=4):
    return {
        "key": f"{method}-{seed}-{draw}",
        "method": method,
        "protocol": method,
        "sources": ["en"],
        "target": "de",
        "shots": shots,
        "seed": seed,
        "draw": draw,
        "status": status,
        "metrics": {"accuracy": acc} if status == "ok" else {},
        "source_metrics": {"en": {"accuracy": 0.9}} if status == "ok" else {},
        "error": None if status == "ok" else "boom",
        "info": {"n_shots": 8, "shortfall": {}},
    }


def test_a_seed_is_the_mean_of_its_draws_and_fails_with_any_of_them():
    cells = [fake_cell("m", 1, d, a) for d, a in ((1, 0.5), (2, 0.7))]
    cells += [fake_cell("m", 2, 1, 0.6), fake_cell("m", 2, 2, 0.0, status="failed")]
    merged = {c["seed"]: c for c in collapse_draws(cells, {})}
    assert merged[1]["status"] == "ok" and merged[1]["metrics"]["accuracy"] == pytest.approx(0.6)
    assert merged[1]["draws"] == [1, 2] and "draw" not in merged[1]
    assert merged[2]["status"] == "failed" and "draw 2" in merged[2]["error"]


def nested(rng, seeds, draws, sd_seed, sd_draw):
    return rng.normal(0, sd_seed, (seeds, 1)) + rng.normal(0, sd_draw, (seeds, draws)) + 0.5


def test_the_components_recover_known_variances():
    rng = np.random.default_rng(3)
    z = nested(rng, 400, 6, 0.02, 0.05)
    out = components(z, None, 0.95, separated=True)["components"]
    assert out["seed"]["sd"] == pytest.approx(0.02, rel=0.15)
    assert out["draw"]["sd"] == pytest.approx(0.05, rel=0.05)
    # per-example values: example effects shared by every run, run noise on top
    n, rows = 300, 40
    table = 0.5 + rng.normal(0, 0.3, (1, n)) + rng.normal(0, 0.2, (rows, n))
    ex = components(table.mean(axis=1)[:, None], table, 0.95, separated=False)
    assert ex["components"]["examples"]["variance"] == pytest.approx(0.09 / n, rel=0.25)
    assert ex["components"]["draw"] is None and ex["draws"] is None


def test_the_component_intervals_hold_their_coverage():
    """Generalised intervals: exact for the draws' part, near nominal for the seed's (the
    full table: benchmarks/variance_calibration.py)."""
    rng = np.random.default_rng(7)
    hits = {"seed": 0, "draw": 0}
    reps = 400
    for _ in range(reps):
        z = nested(rng, 5, 3, 0.03, 0.04)
        out = components(z, None, 0.9, separated=True)["components"]
        hits["seed"] += out["seed"]["ci"][0] <= 0.03 <= out["seed"]["ci"][1]
        hits["draw"] += out["draw"]["ci"][0] <= 0.04 <= out["draw"]["ci"][1]
    assert 0.86 <= hits["draw"] / reps <= 0.94
    assert 0.86 <= hits["seed"] / reps <= 0.97


def test_one_mean_square_gets_the_exact_chi_square_interval():
    from scipy import stats

    low, high = difference_interval(2.0, 4.0, 0.0, 0.0, 0.9)
    assert low == pytest.approx(2.0 * 4 / stats.chi2.ppf(0.95, 4))
    assert high == pytest.approx(2.0 * 4 / stats.chi2.ppf(0.05, 4))


@pytest.fixture(scope="module")
def draws_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("draws")
    spec = write_spec(tmp, seeds=(1, 2, 3))
    text = spec.read_text().replace("seeds = [1, 2, 3]", "seeds = [1, 2, 3]\nshot_draws = [1, 2]")
    spec.write_text(text)
    result = CliRunner().invoke(build_cli(), ["run", str(spec), "--out", str(tmp / "run"), "-q"])
    assert result.exit_code == 0, result.output
    return tmp / "run"


def test_a_run_with_shot_draws_reports_seeds_draws_and_components(draws_run):
    report = json.loads((draws_run / "report.json").read_text())
    cells = report["cells"]
    drawn = [c for c in cells if c.get("draw") is not None]
    assert drawn and all(c["shots"] == 4 for c in drawn)
    assert {c["draw"] for c in drawn} == {1, 2}
    agg = next(
        a
        for a in report["aggregates"]
        if (a["method"], a["target"], a["shots"], a["metric"])
        == ("target-only", "de", 4, "accuracy")
    )
    assert agg["n"] == 3 and agg["draws"] == 2
    values = [
        c["metrics"]["accuracy"]
        for c in drawn
        if (c["method"], c["target"]) == ("target-only", "de")
    ]
    assert len(values) == 6 and agg["mean"] == pytest.approx(sum(values) / 6)
    # a comparison pairs a seed's draws with the same draws of the other method
    comp = next(
        e
        for e in report["comparisons"]
        if e["family"] == "planned"
        and (e["a"], e["b"], e["target"], e["shots"]) == ("transfer", "target-only", "de", 4)
    )

    def value(method, seed, draw):
        return next(
            c["metrics"]["accuracy"]
            for c in drawn
            if (c["method"], c["target"], c["seed"], c["draw"]) == (method, "de", seed, draw)
        )

    by_hand = np.mean(
        [value("transfer", s, d) - value("target-only", s, d) for s in (1, 2, 3) for d in (1, 2)]
    )
    assert comp["difference"] == pytest.approx(by_hand)
    entries = {(v["method"], v["target"], v["shots"]): v for v in report["variance"]}
    at4 = entries[("target-only", "de", 4)]
    assert at4["draws"] == 2 and at4["seeds"] == 3 and at4["note"] is None
    assert at4["components"]["draw"] is not None and at4["components"]["examples"] is not None
    assert sum(at4["shares"].values()) == pytest.approx(1.0)
    at0 = entries[("transfer", "de", 0)]
    assert at0["components"]["draw"] is None and "no shots drawn" in at0["note"]
    html = (draws_run / "report.html").read_text()
    assert 'id="variance"' in html and (draws_run / "plots" / "variance.svg").exists()


def test_the_variance_view_shows_each_component(draws_run):
    result = CliRunner().invoke(build_cli(), ["report", str(draws_run), "--view", "variance"])
    assert result.exit_code == 0, result.output
    assert "shot draw" in result.output and "test examples" in result.output
    row = next(line for line in result.output.splitlines() if line.startswith("target-only  de"))
    assert "3 × 2" in row and "%" in row


def test_a_spec_without_draws_says_the_seed_holds_the_draw(tiny_run):
    report = json.loads((tiny_run / "report.json").read_text())
    entry = next(v for v in report["variance"] if v["shots"] == 4 and v["method"] == "target-only")
    assert entry["draws"] is None and entry["components"]["draw"] is None
    assert "includes the shot draw" in entry["note"]
    assert math.isclose(
        entry["total_sd"] ** 2,
        sum(c["variance"] for c in entry["components"].values() if c is not None),
    )


def test_plan_prints_seeds_needed_for_each_planned_comparison(draws_run):
    cli = build_cli()
    result = CliRunner().invoke(cli, ["plan", str(draws_run), "--delta", "0.05"])
    assert result.exit_code == 0, result.output
    assert "seeds needed" in result.output and "transfer − target-only" in result.output
    result = CliRunner().invoke(cli, ["plan", str(draws_run), "--delta", "0.05", "--json"])
    plan = json.loads(result.output)
    assert plan["comparisons"] and all(
        r["seeds_needed"] is None or r["power_planned"] >= 0.8 for r in plan["comparisons"]
    )
    rows = [r for r in plan["comparisons"] if r.get("by_draws")]
    assert rows and all([o["draws"] for o in r["by_draws"]] == [1, 2, 10] for r in rows)
    for r in rows:  # more draws per seed: never more seeds
        needed = [o["seeds"] for o in r["by_draws"] if o["seeds"] is not None]
        assert needed == sorted(needed, reverse=True)
    for args, words in (
        (["--delta", "0"], "--delta"),
        (["--delta", "0.02", "--power", "1.5"], "--power"),
        (["--delta", "0.02", "--alpha", "1e-10"], "--alpha"),
    ):
        bad = CliRunner().invoke(cli, ["plan", str(draws_run), *args])
        assert bad.exit_code == 2 and words in bad.output and "Traceback" not in bad.output


def test_shot_draws_without_a_drawing_k_warn():
    pm = get_plugin_manager()
    spec = resolve_spec(spec_with(shots=[0, "all"], shot_draws=[1, 2]), pm.registry)
    assert any("shot_draws" in w for w in spec.warnings)
    assert all(c.draw is None for c in expand_grid(spec))


def test_a_diverged_seed_is_left_out_of_the_components_with_a_note():
    from xleval.analysis.analyse import variance_components

    pm = get_plugin_manager()
    spec = resolve_spec(spec_with(shots=[4], shot_draws=[1, 2]), pm.registry)
    cells = [
        fake_cell("target-only", s, d, 0.5 + 0.01 * s + 0.02 * d) for s in (1, 2, 3) for d in (1, 2)
    ]
    cells[0]["metrics"]["accuracy"] = float("nan")
    (entry,) = [
        e
        for e in variance_components(cells, spec, {}, "accuracy", 0.95)
        if e["method"] == "target-only"
    ]
    assert entry["seeds"] == 2 and "seed(s) 1 left out" in entry["note"]
    assert entry["components"]["examples"] is None  # no per-example values given
    json.dumps(entry, allow_nan=False)


def test_accuracy_keeps_its_exact_test_over_draws():
    """A seed's mean over its D draws of 0/1 values sums to integers again: the sign-flip
    test still applies (the sums over seeds and draws)."""
    from xleval.analysis.analyse import Estimator, LanguageValues

    lv = LanguageValues("de", 4)
    rows = {"a1": [1, 0, 1, 1], "a2": [1, 1, 0, 1], "b": [0, 0, 1, 1]}
    for key, row in rows.items():
        lv.values[(key, "accuracy")] = np.array(row, dtype=float)
        lv.binary.add((key, "accuracy"))
    cells = [fake_cell("m", 1, d, 0.75, shots=4) | {"key": f"a{d}"} for d in (1, 2)]
    (merged,) = collapse_draws(cells, {"de": lv})
    other = fake_cell("z", 1, None, 0.5) | {"key": "b"}
    sums = Estimator({"de": lv}).binary_sums("de", {1: merged}, {1: other}, [1], "accuracy")
    # (a1 + a2) − 2 b per example: [2, 1, −1, 0]
    assert sums is not None and sums.tolist() == [2, 1, -1, 0]

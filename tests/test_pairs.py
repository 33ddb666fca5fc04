"""Specs with pairs: source as an axis (a transfer matrix), multi-source methods next to
per-source ones, and the matrix view."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from click.testing import CliRunner
from helpers import write_synthetic_dataset

from xleval.cli.main import build_cli
from xleval.errors import SpecError
from xleval.experiment.grid import expand_grid
from xleval.experiment.spec import resolve_spec
from xleval.plugin.manager import get_plugin_manager
from xleval.report.build import read_report

pytestmark = pytest.mark.usefixtures("clean_plugin_env")

METHODS = [
    {"protocol": "target-only"},
    {"protocol": "zero-shot"},
    {"protocol": "transfer"},
    {"protocol": "fusion", "sources": "all"},
    {"protocol": "joint", "sources": "all"},
]


def raw(**over):
    return {
        "dataset": {"name": "jsonl", "options": {"path": "x.jsonl"}},
        "languages": ["en", "de", "fr"],
        "pairs": "all",
        "shots": [0, 4],
        "seeds": [1, 2],
        "methods": METHODS,
        **over,
    }


@pytest.fixture(scope="module")
def registry():
    return get_plugin_manager().registry


def test_every_pair_gives_one_row_per_source_and_multi_source_rows(registry):
    spec = resolve_spec(raw(), registry)
    labels = [m.label for m in spec.methods]
    assert labels == ["target-only", "zero-shot@en", "zero-shot@de", "zero-shot@fr",
                      "transfer@en", "transfer@de", "transfer@fr", "fusion", "joint"]  # fmt: skip
    cells = expand_grid(spec)
    by = Counter((c.method, c.target) for c in cells)
    assert ("zero-shot@en", "en") not in by  # never a source's own language
    assert by[("zero-shot@en", "de")] == 2  # two seeds, k = 0 only
    assert by[("transfer@fr", "en")] == 4  # two seeds x two k
    assert {c.sources for c in cells if c.method == "transfer@de"} == {("de",)}
    fusion = {c.target: c.sources for c in cells if c.method == "fusion"}
    assert fusion == {"en": ("de", "fr"), "de": ("en", "fr"), "fr": ("en", "de")}
    assert {c.sources for c in cells if c.method == "target-only"} == {
        ("de", "fr"), ("en", "fr"), ("en", "de")
    }  # fmt: skip
    # the resolved spec, as reports keep it, resolves to the same grid (rescoring needs it)
    again = resolve_spec(json.loads(json.dumps(spec.to_json())), registry)
    assert expand_grid(again) == cells
    assert [m.label for m in again.methods] == labels


def test_explicit_pairs(registry):
    explicit = {k: v for k, v in raw(pairs=[["en", "de"], ["fr", "de"], ["en", "fr"]]).items()}
    del explicit["languages"]
    spec = resolve_spec(explicit, registry)
    cells = expand_grid(spec)
    assert spec.targets == ("de", "fr") and spec.sources == ("en", "fr")
    assert {(c.method, c.target) for c in cells if c.method.startswith("zero-shot")} == {
        ("zero-shot@en", "de"), ("zero-shot@fr", "de"), ("zero-shot@en", "fr")
    }  # fmt: skip
    assert {c.target: c.sources for c in cells if c.method == "joint"} == {
        "de": ("en", "fr"), "fr": ("en",)
    }  # fmt: skip
    assert expand_grid(resolve_spec(spec.to_json(), registry)) == cells


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"source": "en"}, "(spec)"),  # pairs and source together: the schema says no
        ({"languages": None}, "needs 'languages'"),
        ({"pairs": [["en", "en"]], "languages": None}, "'en' is both source and target"),
        ({"pairs": [["en", "de"]]}, 'it goes with pairs = "all"'),
    ],
)
def test_bad_pairs_are_clear_errors(registry, over, message):
    spec = {k: v for k, v in raw(**over).items() if v is not None}
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_spec(spec, registry)


def test_statistics_name_the_rows_a_spec_with_pairs_runs(registry):
    with pytest.raises(SpecError, match=r"'transfer' is not a method label \(target-only, zero"):
        resolve_spec(raw(statistics={"baseline": "transfer"}), registry)
    spec = resolve_spec(raw(statistics={"compare": [["transfer@en", "fusion"]]}), registry)
    assert spec.statistics["compare"] == [["transfer@en", "fusion"]]


def test_sources_without_pairs_is_an_error(registry):
    spec = {k: v for k, v in raw().items() if k not in ("languages", "pairs")}
    spec.update(source="en", targets=["de"])
    with pytest.raises(SpecError, match=r"methods\[3\].sources': it applies to specs with pairs"):
        resolve_spec(spec, registry)


def test_a_transfer_matrix_end_to_end(tmp_path):
    data = write_synthetic_dataset(tmp_path / "syn.jsonl", groups_per_label=10)
    spec = tmp_path / "m.toml"
    spec.write_text(
        f"""name = "matrix"
dataset = {{ name = "jsonl", options = {{ path = "{data}" }} }}
languages = ["en", "de", "fr"]
pairs = "all"
shots = [0, 4]
seeds = [1, 2]
metrics = ["accuracy"]
executor = "local"
model = {{ name = "bag-of-embeddings", options = {{ dim = 16, buckets = 20000 }} }}
training = {{ epochs = 3, min_steps = 30 }}
[[methods]]
protocol = "target-only"
[[methods]]
protocol = "zero-shot"
[[methods]]
protocol = "transfer"
[[methods]]
protocol = "fusion"
sources = "all"
[[methods]]
protocol = "merge"
sources = "all"
"""
    )
    out = tmp_path / "run"
    result = CliRunner().invoke(build_cli(), ["run", str(spec), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    report = read_report(out / "report.json")
    assert all(c["status"] == "ok" for c in report["cells"])
    trained = Counter(
        (json.dumps(t["train_set"]), c["seed"])
        for c in report["cells"]
        for t in c["info"].get("training", [])
        if t["role"] == "source" and not t["cached"]
    )
    # each source model trained once per seed, shared by zero-shot, transfer and fusion
    # (merge's base, the model of every source of a target together, is one more each)
    assert set(trained.values()) == {1}
    single = [key for key in trained if key[0].count("split") == 1]
    assert len(single) == 3 * 2 and len(trained) == 3 * 2 + 3 * 2
    assert "zero-shot@de" in result.output or "zero-shot@de" in json.dumps(report["cells"])
    view = CliRunner().invoke(build_cli(), ["report", str(out), "--view", "matrix"])
    assert view.exit_code == 0, view.output
    text = view.output
    assert "zero-shot k=0: source \\ target" in text and "transfer k=4" in text
    assert "fusion (all sources)" in text and "merge (all sources)" in text
    matrix = text[text.index("transfer k=4") :].split("\n\n")[0].splitlines()
    de_row = next(line for line in matrix if line.startswith("de "))
    assert de_row.split()[1:4] == ["1.000", "(+0.000)", "·"]  # de -> en, then de -> de: none
    table = CliRunner().invoke(build_cli(), ["report", str(out)])
    assert "transfer@fr" in table.output and "joint" not in table.output
    gaps = CliRunner().invoke(build_cli(), ["report", str(out), "--view", "gaps"]).output
    tokens = next(t for t in map(str.split, gaps.splitlines()) if t[:2] == ["transfer@de", "4"])
    assert tokens[2] != "–" and tokens[5] == "–"  # de -> en: a gap [interval]; de -> de: none
    ranks = CliRunner().invoke(build_cli(), ["report", str(out), "--view", "ranks"]).output
    target_only = next(line for line in ranks.splitlines() if line.startswith("target-only"))
    assert (
        target_only.split()[1] != "–"
    )  # ranked over the columns where every row that runs there ran
    page = (out / "report.html").read_text()
    assert "Transfer matrix" in page and "every ordered pair of en, de, fr" in page
    assert (out / "plots" / "matrix_zero-shot.png").is_file()
    assert (out / "plots" / "matrix_transfer.svg").is_file()


@pytest.mark.slow
def test_the_transfer_matrix_example_runs_end_to_end(tmp_path):
    """specs/examples/transfer-matrix.toml as shipped (every ordered pair of four languages
    of the bundled dataset; ~70 s on 2 cores)."""
    from xleval.experiment.resources import specs_dir

    spec = specs_dir() / "examples" / "transfer-matrix.toml"
    out = tmp_path / "run"
    result = CliRunner().invoke(build_cli(), ["run", str(spec), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    report = read_report(out / "report.json")
    assert len(report["cells"]) == 180 and all(c["status"] == "ok" for c in report["cells"])
    view = CliRunner().invoke(build_cli(), ["report", str(out), "--view", "matrix"]).output
    for group in ("zero-shot", "transfer"):
        assert f"{group} k=32: source \\ target    en" in view
    for method in ("fusion", "merge", "joint"):
        assert f"{method} (all sources)" in view
    assert (out / "plots" / "matrix_transfer.png").is_file()

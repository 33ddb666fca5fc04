"""End to end: a tiny run's report carries comparisons with p-values, its table marks only
what the tests support, ``xleval report --view`` shows each part, and rescoring rebuilds
the same statistics bit for bit."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from xleval.cli import build_cli
from xleval.report import read_report, validate_report

pytestmark = pytest.mark.usefixtures("clean_plugin_env")

LABEL_WORDS = {
    "games": ["puzzle", "arcade", "player", "level", "dungeon", "chess"],
    "net": ["server", "proxy", "socket", "router", "packet", "browser"],
    "sound": ["audio", "mixer", "synth", "codec", "speaker", "midi"],
    "science": ["physics", "chemistry", "molecule", "statistics", "astronomy", "genome"],
}
NOISE = ["tool", "data", "simple", "fast", "library", "program", "with", "support", "for"]


def word(lang: str, english: str) -> str:
    """A target-language word sharing no character n-gram with the English one: the
    English model cannot read German, so zero-shot is near chance and shots matter."""
    if lang == "en":
        return english
    return "q" + hashlib.sha256(f"{lang}:{english}".encode()).hexdigest()[:7]


def write_dataset(path: Path, groups_per_label: int = 60) -> Path:
    rng = random.Random(0)
    rows = []
    for label, words in LABEL_WORDS.items():
        for g in range(groups_per_label):
            concepts = rng.choices(words, k=3)
            noise = rng.choices(NOISE, k=4)
            for lang in ("en", "de", "fr"):
                tokens = [word(lang, w) for w in concepts] + noise
                rng.shuffle(tokens)
                rows.append({
                    "id": f"{lang}-{label}-{g}",
                    "group": f"{label}-{g}",
                    "lang": lang,
                    "label": label,
                    "text": " ".join(tokens),
                })  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_spec(tmp_path: Path) -> Path:
    data = write_dataset(tmp_path / "parallel.jsonl")
    spec = tmp_path / "views.toml"
    spec.write_text(
        f"""name = "views"
dataset = {{ name = "jsonl", options = {{ path = "{data}" }} }}
source = "en"
targets = ["de", "fr"]
shots = [0, 8]
seeds = [1, 2, 3]
metrics = ["accuracy", "nll"]
executor = "local"
model = {{ name = "bag-of-embeddings", options = {{ dim = 16, buckets = 20000 }} }}
training = {{ epochs = 5 }}
statistics = {{ bootstrap = 1000 }}
[[methods]]
protocol = "target-only"
[[methods]]
protocol = "zero-shot"
[[methods]]
protocol = "joint"
"""
    )
    return spec


def invoke(*args: str):
    return CliRunner().invoke(build_cli(), list(args))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("views")
    result = invoke("run", str(write_spec(tmp)), "--out", str(tmp / "run"), "-q")
    assert result.exit_code == 0, result.output
    return tmp / "run"


def test_report_has_comparisons_with_p_values(run_dir):
    report = read_report(run_dir)  # validates against specs/report.schema.json
    planned = [c for c in report["comparisons"] if c["family"] == "planned"]
    # zero-shot and joint against target-only, at k=8 (target-only does not run at k=0)
    assert {(c["a"], c["b"], c["target"], c["shots"]) for c in planned} == {
        (m, "target-only", t, 8) for m in ("zero-shot", "joint") for t in ("de", "fr")
    }
    for c in planned:
        assert c["status"] == "ok" and c["seeds"] == [1, 2, 3]
        assert 0 < c["p_value"] <= c["p_holm"] <= 1
        assert c["ci"][0] <= c["difference"] <= c["ci"][1]
    # zero-shot cannot read the target language: 8 shots per class beat it
    for target in ("de", "fr"):
        entry = next(c for c in planned if c["a"] == "zero-shot" and c["target"] == target)
        assert entry["significant"] and entry["better"] == "target-only"
    assert report["statistics"]["baseline"] == "target-only"
    assert all(a["ci_bootstrap"] is not None for a in report["aggregates"])


def test_table_marks_follow_the_tests(run_dir):
    report = read_report(run_dir)
    table = invoke("report", str(run_dir))
    assert table.exit_code == 0, table.output
    assert "* best in column, significantly better than the runner-up" in table.output
    assert "= tied for best" in table.output
    pairwise = {
        (frozenset((c["a"], c["b"])), c["target"], c["shots"]): c
        for c in report["comparisons"]
        if c["family"] == "pairwise"
    }
    means = {(a["method"], a["target"], a["shots"]): a["mean"] for a in report["aggregates"]
             if a["metric"] == "accuracy"}  # fmt: skip
    rows = {line.split()[0]: line for line in table.output.splitlines()[4:] if line.strip()}
    header = table.output.splitlines()[3]
    for target in ("de", "fr"):
        # k=0: zero-shot alone (target-only and joint need shots): nothing to mark
        assert cell_text(header, rows["zero-shot"], f"{target} k=0")[-1].isdigit()
        column = sorted(
            ((m, v) for (m, t, k), v in means.items() if (t, k) == (target, 8)),
            key=lambda mv: -mv[1],
        )
        (best, _), (runner_up, _) = column[0], column[1]
        test = pairwise[(frozenset((best, runner_up)), target, 8)]
        assert cell_text(header, rows[best], f"{target} k=8").endswith(
            "*" if test["significant"] else "="
        )
        # the method 8 shots beat (zero-shot, near chance) is never marked tied for best
        assert cell_text(header, rows["zero-shot"], f"{target} k=8")[-1].isdigit()


def cell_text(header: str, row: str, column: str) -> str:
    start = header.index(column)
    following = [m.start() for m in re.finditer(r"\S+ k=\S+", header) if m.start() > start]
    return row[start : following[0] if following else None].strip()


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        ("comparisons", ["paired comparisons", "p Holm", "zero-shot", "target-only"]),
        ("gaps", ["transfer gap", "mean over targets"]),
        ("ranks", ["mean rank", "wins-ties-losses of the row method"]),
        ("curves", ["learning curves", "break-even k", "k=8"]),
    ],
)
def test_each_view_renders(run_dir, view, expected):
    result = invoke("report", str(run_dir), "--view", view)
    assert result.exit_code == 0, result.output
    for text in expected:
        assert text in result.output
    markdown = invoke("report", str(run_dir), "--view", view, "--format", "markdown")
    assert markdown.exit_code == 0 and "|---" in markdown.output.replace(":", "-")


def test_views_need_a_reporter_with_views(run_dir):
    result = invoke("report", str(run_dir), "--view", "ranks", "--format", "json")
    assert result.exit_code == 1
    assert "reporter 'json' has no views" in result.output
    bad = invoke("report", str(run_dir), "--view", "pie")
    assert bad.exit_code == 2


def test_comparisons_view_lists_every_family_on_request(run_dir):
    report = read_report(run_dir)
    result = invoke("report", str(run_dir), "--view", "comparisons", "--reporter-option",
                    "family=all")  # fmt: skip
    assert result.exit_code == 0, result.output
    listed = [line for line in result.output.splitlines() if line.startswith(("planned", "pair"))]
    assert len(listed) == len(report["comparisons"])


def test_rescore_rebuilds_the_same_statistics(run_dir, tmp_path):
    out = tmp_path / "rescored.json"
    result = invoke("rescore", str(run_dir), "-o", str(out))
    assert result.exit_code == 0, result.output
    original, rescored = read_report(run_dir), read_report(out)
    for section in ("aggregates", "comparisons", "summary", "statistics"):
        assert json.dumps(rescored[section]) == json.dumps(original[section]), section


def test_a_report_without_tests_still_renders_its_best_means(run_dir, tmp_path):
    """Reports from before comparisons existed have none: the table stars best means and
    says they are untested."""
    report = read_report(run_dir)
    report["comparisons"] = []
    report.pop("statistics")
    validate_report(report)
    path = tmp_path / "old.json"
    path.write_text(json.dumps(report))
    result = invoke("report", str(path))
    assert result.exit_code == 0, result.output
    assert "this report has no significance tests" in result.output
    assert " *" in result.output and " =" not in result.output
    assert "no comparisons in this report" in invoke("report", str(path), "--view",
                                                     "comparisons").output  # fmt: skip


def test_a_significant_best_is_starred_and_only_ties_get_equals(run_dir, tmp_path):
    """The same report with the de k=8 test between the two best made significant (and
    their means apart): the best is starred and the runner-up loses its '='."""
    report = read_report(run_dir)
    for a in report["aggregates"]:
        if (a["method"], a["target"], a["shots"], a["metric"]) == ("joint", "de", 8, "accuracy"):
            a["mean"] += 0.01
    for c in report["comparisons"]:
        pair = (c["family"], c["target"], c["shots"], frozenset((c["a"], c["b"])))
        if pair == ("pairwise", "de", 8, frozenset(("joint", "target-only"))):
            c.update(significant=True, better="joint", p_holm=0.001)
    path = tmp_path / "starred.json"
    path.write_text(json.dumps(report))
    table = invoke("report", str(path)).output
    header, rows = table.splitlines()[3], table.splitlines()[5:]
    rows = {line.split()[0]: line for line in rows if line.strip()}
    assert cell_text(header, rows["joint"], "de k=8").endswith("*")
    assert cell_text(header, rows["target-only"], "de k=8")[-1].isdigit()
    assert cell_text(header, rows["target-only"], "fr k=8").endswith("=")

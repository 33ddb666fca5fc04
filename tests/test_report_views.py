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

from xleval.cli.main import build_cli
from xleval.report.build import read_report, validate_report

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
training = {{ epochs = 5, min_steps = 100 }}
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
    for a in report["aggregates"]:
        assert a["ci"] is not None and a["ci_seeds"] is not None and a["n_examples"] > 1
        assert a["ci"][0] <= a["mean"] <= a["ci"][1]


def test_table_marks_follow_the_tests(run_dir):
    report = read_report(run_dir)
    table = invoke("report", str(run_dir))
    assert table.exit_code == 0, table.output
    assert "* best in column (higher is better), significantly better than the runner-up" in (
        table.output
    )
    assert "= not shown to differ from the best (not 'equivalent')" in table.output
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


def test_a_report_without_tests_marks_nothing(run_dir, tmp_path):
    """Marks are claims: with no tested comparison (one method, one seed) there are none,
    and the legend says why."""
    report = read_report(run_dir)
    report["comparisons"] = []
    validate_report(report)
    path = tmp_path / "untested.json"
    path.write_text(json.dumps(report))
    result = invoke("report", str(path))
    assert result.exit_code == 0, result.output
    assert "no marks: no comparison in this report could be tested" in result.output
    assert " *" not in result.output and " =" not in result.output
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


def test_a_report_from_an_older_schema_is_refused_and_rescore_rebuilds_it(run_dir, tmp_path):
    """Numbers made by other statistics must not be shown as this version's: 'xleval report'
    refuses a schema-1 report and names the way out, which works (no retraining)."""
    old_run = tmp_path / "old-run"
    old_run.mkdir()
    (old_run / "predictions.jsonl").write_bytes((run_dir / "predictions.jsonl").read_bytes())
    report = read_report(run_dir)
    report |= {"schema_version": 1, "xleval_version": "0.1.0"}
    report["spec"]["statistics"] |= {"bootstrap": 2000, "seed": 0}  # a 0.1 spec
    for a in report["aggregates"]:
        a["ci_bootstrap"] = a.pop("ci_examples")
    (old_run / "report.json").write_text(json.dumps(report))
    refused = invoke("report", str(old_run))
    assert refused.exit_code == 1
    assert "made by xleval 0.1.0 (report schema 1)" in refused.output
    assert f"xleval rescore {old_run}" in refused.output
    rebuilt = invoke("rescore", str(old_run))
    assert rebuilt.exit_code == 0, rebuilt.output
    fresh = read_report(old_run / "report.rescored.json")
    assert fresh["schema_version"] == 2 and "bootstrap" not in fresh["spec"]["statistics"]
    assert fresh["aggregates"] == read_report(run_dir)["aggregates"]
    assert any("rescored by xleval" in n for n in fresh["statistics"]["notes"])


def test_a_lower_is_better_main_metric_reads_the_right_way_in_every_view(run_dir, tmp_path):
    """With nll as main metric the best method is the one with the lowest loss in the
    table, ranks and comparisons; 'lower is better' is said where it is true."""
    spec = run_dir.parent / "views.toml"
    nll_spec = tmp_path / "nll.toml"
    metrics = 'metrics = ["accuracy", "nll"]'
    nll_spec.write_text(spec.read_text().replace(metrics, metrics + '\nmain_metric = "nll"'))
    result = invoke("run", str(nll_spec), "--out", str(tmp_path / "run"), "-q")
    assert result.exit_code == 0, result.output
    report = read_report(tmp_path / "run")
    assert report["statistics"]["higher_is_better"] is False
    main = invoke("report", str(tmp_path / "run")).output
    assert "nll on the target test split (lower is better)" in main
    assert "* best in column (lower is better)" in main
    means = {(a["method"], a["target"]): a["mean"] for a in report["aggregates"]
             if a["metric"] == "nll" and a["shots"] == 8}  # fmt: skip
    for target in ("de", "fr"):
        best = min((m for m, t in means if t == target), key=lambda m: means[(m, target)])
        worst = max((m for m, t in means if t == target), key=lambda m: means[(m, target)])
        ranks = {m: report["summary"][m]["by_shots"]["8"]["ranks"][target] for m, t in means
                 if t == target}  # fmt: skip
        assert ranks[best] == min(ranks.values()) and ranks[worst] == 3.0
        test = next(c for c in report["comparisons"] if c["family"] == "pairwise"
                    and c["target"] == target and c["shots"] == 8
                    and {c["a"], c["b"]} == {best, worst})  # fmt: skip
        if test["significant"]:
            assert test["better"] == best
    gaps = invoke("report", str(tmp_path / "run"), "--view", "gaps").output
    assert "target − source; lower is better" in gaps
    ranks_view = invoke("report", str(tmp_path / "run"), "--view", "ranks").output
    assert "nll (lower is better)" in ranks_view


def test_marks_say_worse_only_when_a_test_said_so(run_dir):
    """In a column whose best is starred, a method not shown to differ from the best still
    gets '='; a method whose comparison with the best could not be made gets '?'; no mark
    means significantly worse."""
    from xleval_plugins.reporters import column_marks

    report = read_report(run_dir)
    means = {("joint", "de", 8): 0.9, ("target-only", "de", 8): 0.8, ("zero-shot", "de", 8): 0.5}
    for a in report["aggregates"]:
        key = (a["method"], a["target"], a["shots"])
        if a["metric"] == "accuracy" and key in means:
            a["mean"] = means[key]
    outcome = {
        frozenset(("joint", "target-only")): {"status": "ok", "significant": True},
        frozenset(("joint", "zero-shot")): {"status": "ok", "significant": False},
    }
    for c in report["comparisons"]:
        if (c["family"], c["target"], c["shots"]) == ("pairwise", "de", 8):
            c.update(outcome.get(frozenset((c["a"], c["b"])), {}))
    marks = column_marks(report)
    assert marks[("joint", "de", 8)] == "*"
    assert marks[("zero-shot", "de", 8)] == "="  # lower mean, yet not shown to differ
    assert ("target-only", "de", 8) not in marks  # significantly worse than the best
    for c in report["comparisons"]:
        if (c["family"], c["target"], c["shots"]) == ("pairwise", "de", 8) and frozenset(
            (c["a"], c["b"])
        ) == frozenset(("joint", "zero-shot")):
            c.update(status="not-testable", significant=None, reason="test")
    assert column_marks(report)[("zero-shot", "de", 8)] == "?"

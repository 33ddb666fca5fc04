"""CLI commands for the main job: run, validate, report, compare, rescore, init."""

from __future__ import annotations

import fnmatch
import sys
import time
from pathlib import Path
from typing import Any

import click
from tabulate import tabulate

from xleval.cli.datasets import parse_options
from xleval.cli.state import CliState
from xleval.errors import XlevalError
from xleval.experiment.resources import specs_dir

EXIT_CELLS_FAILED = 3
EXIT_INTERRUPTED = 130


class RunError(XlevalError):
    """A run that cannot start (its languages are not in the dataset, say)."""


def prepare_spec(state: CliState, path: str, executor: str | None, executor_options, jobs):
    """Read the spec, apply command-line overrides, and resolve it against the plugins."""
    from xleval.experiment.spec import read_spec_file, resolve_spec

    raw = read_spec_file(path)
    if jobs is not None:
        executor = executor or "processes"
        executor_options = {"workers": jobs, **executor_options}
    if executor is not None or executor_options:
        current = raw.get("executor", "local")
        name = current if isinstance(current, str) else current.get("name", "local")
        if executor is not None and executor != name:
            raw["executor"] = {"name": executor, "options": dict(executor_options)}
        else:
            base = {} if isinstance(current, str) else dict(current.get("options", {}))
            raw["executor"] = {"name": name, "options": {**base, **executor_options}}
    return resolve_spec(raw, state.pm.registry, source=path)


#: Fewer test examples than this in a source or target language refuse a run: no metric
#: on one example says anything, and no interval can be computed (README, "Your own data").
MIN_TEST_EXAMPLES = 2


def check_languages(spec, dataset) -> None:
    """Every source and target is in the dataset and has test examples to score; a run that
    could not report anything stops here, before any training."""
    missing = [lang for lang in (*spec.sources, *spec.targets) if lang not in dataset.languages]
    if missing:
        raise RunError(
            f"dataset '{dataset.name}' has no language(s) {', '.join(missing)} "
            f"(it has: {', '.join(dataset.languages)})"
        )
    counts = dataset.split_counts()
    short = [
        f"{lang} ({'source' if lang in spec.sources else 'target'}): {counts[lang]['test']}"
        for lang in (*spec.sources, *spec.targets)
        if counts[lang]["test"] < MIN_TEST_EXAMPLES
    ]
    if short:
        raise RunError(
            f"dataset '{dataset.name}': too few test examples to evaluate on (at least "
            f"{MIN_TEST_EXAMPLES} needed): {'; '.join(short)}"
        )


def print_warnings(warnings) -> None:
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


def shortfall_warnings(report) -> list[str]:
    """One line per (target, k) where a class had fewer than k training rows: those cells
    trained on fewer examples than their column says (the table marks them)."""
    seen: dict[tuple[str, object], str] = {}
    metric = report["spec"]["main_metric"]
    for a in report["aggregates"]:
        if a["metric"] != metric or not a.get("shortfall"):
            continue
        key = (a["target"], a["shots"])
        if key in seen:
            continue
        missing = ", ".join(f"'{label}' {n} short" for label, n in a["shortfall"].items())
        per_class = a.get("mean_shots_per_class")
        seen[key] = f"{a['target']} k={a['shots']}: fewer than k training rows ({missing})" + (
            f"; its cells trained on {per_class:.1f} examples per class" if per_class else ""
        )
    return list(seen.values())


class Progress:
    """Cells done/total with an ETA on a terminal; silent otherwise or with --quiet."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def start(self, total: int, cached: int) -> None:
        if cached:
            click.echo(f"{cached} of {total} cells already done (cached)", err=True)
        if self.enabled and total > cached:
            self.bar = click.progressbar(
                length=total - cached,
                label="cells",
                show_eta=True,
                show_pos=True,
                file=sys.stderr,
            )
            self.bar.__enter__()

    def advance(self, cell, result) -> None:
        if self.bar is not None:
            self.bar.update(1)
        if result["status"] != "ok":
            message = f"failed: {cell.describe()}: {result['error']}"
            click.echo(("\n" if self.bar is not None else "") + message, err=True)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def add_run_commands(cli: click.Group) -> None:
    """Attach run, validate, report, compare, rescore and init to ``cli``."""

    @cli.command("run")
    @click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
    @click.option(
        "--out",
        "out_dir",
        type=click.Path(file_okay=False),
        default=None,
        help="Run directory (default: runs/<spec name>). Re-running resumes it.",
    )
    @click.option("--executor", default=None, help="Executor plugin (overrides the spec).")
    @click.option(
        "--executor-option",
        "executor_options",
        multiple=True,
        metavar="KEY=VALUE",
        help="Executor option; repeatable.",
    )
    @click.option(
        "--jobs",
        "-j",
        type=click.IntRange(min=1),
        default=None,
        help="Run cells in N worker processes (the 'processes' executor).",
    )
    @click.option("--fail-fast", is_flag=True, help="Stop at the first failed cell.")
    @click.option("--dry-run", is_flag=True, help="Print the grid and cell count; run nothing.")
    @click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
    @click.option(
        "--force",
        is_flag=True,
        help="Write into a non-empty folder that is not an xleval run directory (xleval's "
        "output names must be free there: it never overwrites files it did not write).",
    )
    @click.option(
        "--recompute",
        is_flag=True,
        help="Ignore cached results: compute every cell again (and cache the new results).",
    )
    @click.option(
        "--recompute-matching",
        "recompute_patterns",
        multiple=True,
        metavar="PATTERN",
        help="Ignore the cached results of the cells whose method label, target language or "
        "METHOD/TARGET matches this glob (e.g. 'transfer*' or '*/de'); repeatable.",
    )
    @click.pass_obj
    def run_command(
        state,
        spec_path,
        out_dir,
        executor,
        executor_options,
        jobs,
        fail_fast,
        dry_run,
        quiet,
        force,
        recompute,
        recompute_patterns,
    ):
        """Run an experiment spec and write RUN_DIR/report.json."""
        from xleval.experiment.dataset_rules import load_dataset, warnings_for
        from xleval.experiment.grid import expand_grid
        from xleval.experiment.spec import check_components
        from xleval.report.build import build_report, write_report
        from xleval.run.rundir import RunDirectory
        from xleval.run.runner import print_failures, run_cells, write_predictions

        started = time.perf_counter()
        spec = prepare_spec(state, spec_path, executor, parse_options(executor_options), jobs)
        print_warnings(spec.warnings)
        check_components(spec, state.pm.registry, source=spec_path)
        if dry_run:
            print_grid(spec, expand_grid(spec))
            return
        run_dir = Path(out_dir) if out_dir else Path("runs") / spec.name
        # The executor first: it may start workers (dask) while the dataset loads.
        runner = state.pm.registry.build("executors", spec.executor.name, spec.executor.options)
        dataset = load_dataset(state.pm.registry, spec.dataset.name, spec.dataset.options)
        check_languages(spec, dataset)
        print_warnings(warnings_for(dataset.warnings, {*spec.sources, *spec.targets}))
        # locked for this run; refused if another run holds it or the folder is not ours
        run_directory = RunDirectory.open(run_dir, force=force)
        try:
            progress = Progress(enabled=not quiet and sys.stderr.isatty())
            try:
                outcome = run_cells(
                    spec,
                    state.pm,
                    dataset,
                    run_dir,
                    executor=runner,
                    disabled=state.disabled,
                    fail_fast=fail_fast,
                    recompute=recompute_filter(recompute, recompute_patterns),
                    on_start=progress.start,
                    on_result=progress.advance,
                )
            finally:
                progress.finish()
            report = build_report(spec, state.pm, dataset, outcome, run_dir)
            write_report(report, run_dir / "report.json")
            write_predictions(run_dir, outcome)
            write_run_files(state, report, run_dir)
            write_with(state, summary_reporter(state), {}, report, None)
            print_warnings(shortfall_warnings(report))
            run = report["run"]
            for reason, count in outcome.recomputed.items():
                click.echo(f"{count} {plural(count, 'cell')} recomputed: {reason}", err=True)
            click.echo(
                f"{run['cells_total']} cells: {run['cells_computed']} computed, "
                f"{run['cells_cached']} cached, {run['cells_failed']} failed"
                + (f", {run['cells_not_run']} not run" if run["cells_not_run"] else "")
                + "; "
                f"cells {run['wall_seconds']:.1f} s, total {time.perf_counter() - started:.1f} s; "
                f"report: {run_dir / 'report.json'}",
                err=True,
            )
            for path in outcome.corrupt:
                click.echo(f"warning: corrupt cache entry recomputed: {path}", err=True)
            if outcome.stopped:
                click.echo(f"error: {outcome.stopped}", err=True)
                sys.exit(EXIT_INTERRUPTED)
            if outcome.interrupted:
                click.echo("interrupted: finished cells are kept; run again to finish", err=True)
                sys.exit(EXIT_INTERRUPTED)
            if run["cells_failed"]:
                print_failures(outcome)
                sys.exit(EXIT_CELLS_FAILED)
        finally:
            run_directory.close()

    @cli.command("validate")
    @click.argument("path", type=click.Path(dir_okay=False))
    @click.option(
        "--no-data",
        is_flag=True,
        help="Check the spec and build its components without loading the dataset (e.g. a "
        "Hub dataset where there is no network); the languages and shots are then unchecked.",
    )
    @click.pass_obj
    def validate_command(state, path, no_data):
        """Check an experiment spec or a report against its schema."""
        from xleval.experiment.dataset_rules import load_dataset, warnings_for
        from xleval.experiment.grid import expand_grid
        from xleval.experiment.spec import check_components, load_spec
        from xleval.report.build import read_report

        if path.endswith(".json") and '"schema_version"' in Path(path).read_text(
            encoding="utf-8", errors="replace"
        ):
            report = read_report(path)
            click.echo(f"ok: {path} is a valid report ({len(report['cells'])} cells)")
            return
        spec = load_spec(path, state.pm.registry)
        check_components(spec, state.pm.registry, source=path)
        if no_data:
            click.echo(
                f"ok: {path} is a valid experiment spec ({len(expand_grid(spec))} cells; every "
                "component built with its options; the data not loaded: --no-data)"
            )
            print_warnings(spec.warnings)
            return
        dataset = load_dataset(state.pm.registry, spec.dataset.name, spec.dataset.options)
        check_languages(spec, dataset)
        print_warnings(warnings_for(dataset.warnings, {*spec.sources, *spec.targets}))
        click.echo(
            f"ok: {path} is a valid experiment spec ({len(expand_grid(spec))} cells; every "
            "component built with its options, the data loaded and checked)"
        )
        print_warnings(spec.warnings)

    @cli.command("report")
    @click.argument("report_path", metavar="REPORT", type=click.Path())
    @click.option(
        "--format",
        "fmt",
        default=None,
        help="A reporter plugin: table, markdown, json, ... (default: the reporter that "
        "prints the summary after a run, table)",
    )
    @click.option(
        "--view",
        type=click.Choice(
            ["main", "comparisons", "gaps", "ranks", "curves", "matrix", "variance", "by-script"]
        ),
        default=None,
        help="Which part to show (table/markdown): the main table (default), paired "
        "comparisons, transfer gaps, ranks with win/tie/loss, learning curves, transfer "
        "matrices, variance components (seed, shot draw, test examples), or transfer gaps "
        "by script.",
    )
    @click.option(
        "--output",
        "-o",
        type=click.Path(dir_okay=False),
        default=None,
        help="Write here instead of standard output.",
    )
    @click.option("--reporter-option", "reporter_options", multiple=True, metavar="KEY=VALUE")
    @click.pass_obj
    def report_command(state, report_path, fmt, view, output, reporter_options):
        """Render a report (a report.json or a run directory) with a reporter plugin."""
        from xleval.report.build import read_report

        fmt = fmt or summary_reporter(state)

        report = read_report(report_path)
        options = parse_options(reporter_options)
        if view is not None:
            schema = state.pm.registry.get("reporters", fmt).schema or {}
            if "view" not in schema.get("properties", {}):
                raise XlevalError(
                    f"reporter '{fmt}' has no views; --view works with --format table or markdown"
                )
            options["view"] = view
        write_with(state, fmt, options, report, output)

    @cli.command("compare")
    @click.argument("first", type=click.Path())
    @click.argument("second", type=click.Path())
    @click.option("--metric", default=None, help="Metric to compare (default: A's main metric).")
    @click.pass_obj
    def compare_command(state, first, second, metric):
        """Put two reports' results for the same cells side by side."""
        from xleval.report.build import read_report

        a, b = read_report(first), read_report(second)
        metric = metric or a["spec"]["main_metric"]

        def means(report):
            return {
                (x["method"], x["target"], x["shots"]): x
                for x in report["aggregates"]
                if x["metric"] == metric
            }

        ma, mb = means(a), means(b)
        common = [k for k in ma if k in mb]
        if not common:
            raise XlevalError(f"the two reports share no (method, target, shots) for '{metric}'")

        def text(value, sign=""):
            return "n/a" if value is None else f"{value:{sign}.4f}"

        rows = [
            [
                *k,
                text(ma[k]["mean"]),
                text(mb[k]["mean"]),
                text(
                    None
                    if ma[k]["mean"] is None or mb[k]["mean"] is None
                    else mb[k]["mean"] - ma[k]["mean"],
                    "+",
                ),
            ]
            for k in common
        ]
        headers = ["method", "target", "shots", "A", "B", "B - A"]
        click.echo(f"{metric}: A = {first}, B = {second}")
        click.echo(tabulate(rows, headers=headers, disable_numparse=True))
        only = len(ma) + len(mb) - 2 * len(common)
        if only:
            click.echo(f"\n{only} (method, target, shots) entries are in only one report")

    @cli.command("rescore")
    @click.argument("run_dir", type=click.Path(file_okay=False))
    @click.option(
        "--metrics",
        "metric_names",
        default=None,
        help="Comma-separated metrics (default: the run's own).",
    )
    @click.option(
        "--output",
        "-o",
        type=click.Path(dir_okay=False),
        default=None,
        help="Where to write the rescored report (default: RUN_DIR/report.rescored.json)",
    )
    @click.pass_obj
    def rescore_command(state, run_dir, metric_names, output):
        """Recompute metrics from RUN_DIR/predictions.jsonl without retraining."""
        from xleval.report.build import write_report
        from xleval.report.rescore import rescore

        names = [m.strip() for m in metric_names.split(",")] if metric_names else None
        report = rescore(Path(run_dir), state.pm, names)
        target = Path(output) if output else Path(run_dir) / "report.rescored.json"
        write_report(report, target)
        write_with(state, summary_reporter(state), {}, report, None)
        click.echo(f"rescored report: {target}", err=True)

    @cli.command("init")
    @click.argument("path", type=click.Path(dir_okay=False), default="experiment.toml")
    @click.option("--force", is_flag=True, help="Overwrite an existing file.")
    def init_command(path, force):
        """Write a commented starter spec (the quickstart) to PATH."""
        target = Path(path)
        if target.exists() and not force:
            raise XlevalError(f"{path} exists; use --force to overwrite it")
        text = (specs_dir() / "examples" / "quickstart.toml").read_text(encoding="utf-8")
        target.write_text(text, encoding="utf-8")
        click.echo(f"wrote {path}; run it with: xleval run {path}")


def plural(count: int, word: str) -> str:
    return word if count == 1 else word + "s"


def recompute_filter(everything: bool, patterns: tuple[str, ...]):
    """The cells whose cached results ``--recompute``/``--recompute-matching`` discard."""
    if everything:
        return lambda cell: True
    if not patterns:
        return None

    def matches(cell) -> bool:
        names = (cell.method, cell.target, f"{cell.method}/{cell.target}")
        return any(fnmatch.fnmatchcase(name, p) for p in patterns for name in names)

    return matches


def write_with(state: CliState, name: str, options: dict, report: dict, path: str | None) -> None:
    """Write ``report`` with reporter ``name``; its own errors name it (PluginCodeError)."""
    from xleval.plugin.registry import plugin_code

    component = state.pm.registry.get("reporters", name)
    reporter = component.build(options)
    with plugin_code(component, "write()"):
        reporter.write(report, path)


def summary_reporter(state: CliState) -> str:
    """The reporter that prints a run's summary (and ``xleval report``'s default format): the
    first by name whose class sets ``summary = True``."""
    for component in state.pm.registry.components("reporters"):
        if getattr(component.factory, "summary", False) is True:
            return component.name
    raise XlevalError(
        "no reporter prints a summary (a reporter class with summary = True); "
        "pass --format NAME (reporters: "
        + (", ".join(state.pm.registry.names("reporters")) or "none")
        + ")"
    )


def write_run_files(state: CliState, report: dict, run_dir: Path) -> None:
    """Every reporter whose class names a ``run_file`` (the html page: report.html) writes
    the report there; a failing one costs a warning, not the run."""
    for component in state.pm.registry.components("reporters"):
        name = getattr(component.factory, "run_file", None)
        if not isinstance(name, str) or not name or Path(name).name != name:
            continue
        try:
            component.build({}).write(report, str(run_dir / name))
        except Exception as exc:
            if state.debug:
                raise
            click.echo(f"warning: {name} not written: {type(exc).__name__}: {exc}", err=True)


def print_grid(spec, cells) -> None:
    """The dry run: cells per method and target, and the total."""
    counts: dict[tuple[str, str], int] = {}
    for cell in cells:
        counts[(cell.method, cell.target)] = counts.get((cell.method, cell.target), 0) + 1
    rows = [
        [m.label, m.protocol, *[counts.get((m.label, t), 0) for t in spec.targets]]
        for m in spec.methods
    ]
    languages = (
        f"{len(spec.pairs)} (source, target) pairs of {', '.join(spec.targets)}"
        if spec.pairs
        else f"{'+'.join(spec.sources)} -> {', '.join(spec.targets)}"
    )
    draws = f"; shot draws {list(spec.shot_draws)} per seed" if spec.shot_draws else ""
    click.echo(
        f"{spec.name}: {languages}; shots {list(spec.shots)}; seeds {list(spec.seeds)}{draws}"
    )
    click.echo(tabulate(rows, headers=["method", "protocol", *spec.targets]))
    click.echo(f"{len(cells)} cells")

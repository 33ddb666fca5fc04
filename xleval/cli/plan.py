"""``xleval plan``: how many seeds (and shot draws) a difference needs, from a pilot run."""

from __future__ import annotations

import json
import math
from typing import Any

import click
from tabulate import tabulate


def _num(value: float | None, digits: int = 3, sign: bool = False) -> str:
    if value is None:
        return "–"
    if math.isinf(value):
        return "∞"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def plan_text(plan: dict[str, Any]) -> str:
    """The plan as a table, with what it assumes."""
    from xleval.analysis.power import MAX_SEEDS

    rows = []
    for r in plan["comparisons"]:
        now = f"{r['seeds']}" + (f" × {r['draws']}" if r["draws"] else "")
        if r["seeds_needed"] is None and r.get("unreachable"):
            needed = f"unreachable (≤ {r['limit']:.0%}); ×{r['examples_factor']:.1f} test examples"
        elif r["seeds_needed"] is None:
            needed = f"more than {MAX_SEEDS} ({r['power_planned']:.0%} at {MAX_SEEDS})"
        else:
            needed = f"{r['seeds_needed']} ({r['power_planned']:.0%})"
        by_draws = r.get("by_draws")
        rows.append(
            [
                f"{r['a']} − {r['b']}",
                r["target"],
                r["shots"],
                f"{_num(r['difference'], sign=True)} (p {_num(r['p_value'], 4)})",
                now,
                f"{r['power_now']:.0%}",
                _num(r["detectable_now"]),
                needed,
                "–"
                if not by_draws
                else " / ".join(
                    f"{'–' if o['seeds'] is None else o['seeds']} at {o['draws']}" for o in by_draws
                ),
            ]
        )
    header = [
        "A − B",
        "target",
        "k",
        "difference (p, Holm)",
        "seeds × draws",
        f"power at δ={plan['delta']:g}",
        f"detectable at {plan['power']:.0%}",
        "seeds needed (power)",
        "seeds needed at draws per seed",
    ]
    lines = [
        f"plan for {plan['metric']}: the seeds the report's test needs to find a true "
        f"difference of {plan['delta']:g} with probability {plan['power']:.0%} at alpha = "
        f"{plan['alpha']:g} ({plan['family']} comparisons; per comparison, the test set as it "
        "is)",
        "",
        tabulate(rows, headers=header, disable_numparse=True) if rows else "(no comparison)",
        "",
        "detectable: the smallest true difference found with that probability by the run as "
        "it is. unreachable: the test examples alone leave too much doubt whatever the seeds "
        "(the power with unlimited seeds in parentheses); the factor is how many times the "
        "test examples it would need. A seed brings its own draw: in cells, one draw per seed is "
        "cheapest; more draws per seed pay where a seed costs more than a draw (its source "
        "model is trained once per seed and shared by its draws). With Holm's correction over "
        "m comparisons the first "
        "rejection needs alpha / m: rerun with --alpha for a conservative plan. Assumes the "
        "pilot's variances (docs/statistics.md, 'How many seeds').",
    ]
    if plan["skipped"]:
        lines.append("")
        lines.append("not planned (no test in the pilot):")
        lines += [
            f"  - {s['a']} − {s['b']} {s['target']} k={s['shots']}: {s['reason']}"
            for s in plan["skipped"]
        ]
    return "\n".join(lines) + "\n"


def add_plan_command(cli: click.Group) -> None:
    @cli.command("plan")
    @click.argument("report_path", metavar="RUN", type=click.Path())
    @click.option(
        "--delta",
        type=float,
        required=True,
        help="The true difference to detect, in metric units (0.02: two points of accuracy).",
    )
    @click.option("--power", "target", type=float, default=0.8, show_default=True)
    @click.option(
        "--alpha", type=float, default=None, help="Significance level (default: the report's)."
    )
    @click.option(
        "--family",
        type=click.Choice(["planned", "pairwise"]),
        default="planned",
        show_default=True,
        help="Which comparisons to plan: each method against the baseline, or every pair.",
    )
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def plan_command(
        report_path: str,
        delta: float,
        target: float,
        alpha: float | None,
        family: str,
        as_json: bool,
    ) -> None:
        """How many seeds (and shot draws) each comparison of a pilot run needs to detect a
        difference of --delta, and the smallest difference the run detects as it is."""
        from xleval.analysis.power import plan_report
        from xleval.analysis.stats import MIN_ALPHA
        from xleval.errors import XlevalError
        from xleval.report.build import read_report

        if not delta > 0 or not math.isfinite(delta):
            raise click.BadParameter(
                f"must be a positive number, not {delta}", param_hint="--delta"
            )
        if not 0 < target < 1:
            raise click.BadParameter(f"must be between 0 and 1, not {target}", param_hint="--power")
        if alpha is not None and not MIN_ALPHA <= alpha < 1:
            raise click.BadParameter(
                f"must be at least {MIN_ALPHA:g} and below 1, not {alpha}", param_hint="--alpha"
            )
        report = read_report(report_path)
        if len(report["spec"]["seeds"]) < 2:
            raise XlevalError(
                f"{report_path}: a run of one seed says nothing about the spread between seeds; "
                "a pilot needs 2 or more (3-5 give a usable estimate)"
            )
        plan = plan_report(report, delta, target, alpha, family)
        if as_json:
            click.echo(json.dumps(_finite(plan), indent=2, allow_nan=False))
        else:
            click.echo(plan_text(plan), nl=False)


def _finite(value: Any) -> Any:
    """JSON has no infinity: a difference no number of seeds detects is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value

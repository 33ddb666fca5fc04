"""Bundled ``html`` reporter: one self-contained page with plots (no network, no JavaScript).

Plots are drawn with matplotlib, embedded as PNG data URIs, and also saved to
``<report folder>/plots/`` as PNG and SVG for papers. Every string that comes from data,
specs or plugins goes through Jinja2's autoescaping; nothing is marked safe except the
base64 images this module encodes itself.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xleval.api import Register, hookimpl, report_methods, spec_sources, spec_targets

#: Okabe & Ito's palette: distinguishable with the common colour-vision deficiencies.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def _shot_position(shots: Any, numeric: list[int]) -> float:
    """x position of a shots value: k as is, ``all`` one doubling past the largest k."""
    if shots == "all":
        return float(max([*numeric, 1]) * 2)
    return float(shots)


def _real_position(aggregate: dict[str, Any], numeric: list[int]) -> float:
    """x position of a learning-curve point: the examples per class its cells really trained
    on where a class had fewer than k rows, else its k."""
    real = aggregate.get("mean_shots_per_class")
    if aggregate.get("shortfall") and real is not None:
        return float(real)
    return _shot_position(aggregate["shots"], numeric)


def _interval_words(report: dict[str, Any]) -> str:
    confidence = report["spec"].get("statistics", {}).get("confidence", 0.95)
    return report.get("statistics", {}).get(
        "interval", f"{confidence:.0%} interval over seeds and test examples"
    )


def _direction(report: dict[str, Any]) -> str:
    metric = report["spec"]["main_metric"]
    return (
        "higher is better" if report["metrics"][metric]["higher_is_better"] else "lower is better"
    )


@dataclass
class Figure:
    """A figure of the page: its words, its PNG (embedded in the page) and the SVG saved
    next to the PNG in the plots folder, for papers."""

    name: str
    caption: str
    alt: str
    width: int
    height: int
    png: bytes
    svg: bytes | None = None

    @classmethod
    def draw(
        cls,
        fig: Any,
        name: str,
        caption: str,
        alt: str,
        plots_dir: Path | None,
        tight: bool = True,
    ) -> Figure:
        """Render a matplotlib figure; with ``plots_dir``, save it there as PNG and SVG.
        ``tight``: crop to what is drawn (each save then lays the figure out once more; a
        figure laid out by :func:`_fixed_grid` needs no cropping)."""
        bbox = "tight" if tight else None
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=110, bbox_inches=bbox)
        width, height = (int(v) for v in fig.get_size_inches() * 110)
        figure = cls(name, caption, alt, width, height, png.getvalue())
        if plots_dir is not None:
            from xleval.api.files import atomic_write_bytes

            svg = io.BytesIO()
            fig.savefig(svg, format="svg", bbox_inches=bbox)
            figure.svg = svg.getvalue()
            # atomic: a run killed while writing leaves the old file or none, never a part
            atomic_write_bytes(plots_dir / f"{name}.png", figure.png)
            atomic_write_bytes(plots_dir / f"{name}.svg", figure.svg)
        return figure

    @property
    def uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")

    def to_json(self) -> dict[str, Any]:
        """What the figure cache keeps: the words and the saved files' hashes."""
        return {
            "name": self.name,
            "caption": self.caption,
            "alt": self.alt,
            "width": self.width,
            "height": self.height,
            "png": _sha256(self.png),
            "svg": None if self.svg is None else _sha256(self.svg),
        }

    @classmethod
    def from_saved(cls, entry: dict[str, Any], plots_dir: Path) -> Figure | None:
        """The figure as saved in ``plots_dir`` by an earlier page, if its files are still
        the ones written then."""
        try:
            png = (plots_dir / f"{entry['name']}.png").read_bytes()
            svg = (plots_dir / f"{entry['name']}.svg").read_bytes()
        except (OSError, KeyError, TypeError):
            return None
        if _sha256(png) != entry.get("png") or _sha256(svg) != entry.get("svg"):
            return None
        words = (entry["name"], entry["caption"], entry["alt"], entry["width"], entry["height"])
        return cls(*words, png, svg)


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


#: The report parts the figures are drawn from: the figure cache's key covers them (with
#: the reporter's options, this module's code and matplotlib's version).
FIGURE_INPUTS = (
    "spec", "metrics", "aggregates", "summary", "calibration", "statistics", "comparisons",
    "variance",
)  # fmt: skip
#: In the plots folder: the key and figures of the page last written there.
FIGURE_CACHE = "figures.json"
FIGURE_GROUPS = ("curves", "gap_figures", "calibration", "matrix_figures", "variance_figures")


def _fixed_grid(fig: Any, rows: int, cols: int, legend_rows: int) -> float:
    """Lay out a grid of small multiples with margins in inches (room for tick labels, axis
    labels and titles; the legend below) instead of measuring every text: ``tight_layout``
    and a tight crop lay out each text of each panel again, which dominated the page's time
    for runs of many targets (benchmarks/report_scaling.py). Returns the legend's bottom as
    a fraction of the figure's height."""
    width, height = fig.get_size_inches()
    left, right, top, gap_w, gap_h = 0.85, 0.2, 0.4, 0.85, 0.95
    bottom = 0.6 + 0.3 * legend_rows + 0.1
    axes_w = (width - left - right - (cols - 1) * gap_w) / cols
    axes_h = (height - top - bottom - (rows - 1) * gap_h) / rows
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=gap_w / axes_w,
        hspace=gap_h / axes_h,
    )
    return 0.1 / height


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "font.size": 11,
            "axes.titlesize": 12,
            "axes.labelsize": 11,
            "legend.fontsize": 9,
            "svg.fonttype": "none",
            "figure.dpi": 110,
        }
    )
    return plt


class HtmlReporter:
    """Writes the self-contained HTML page (and plots/ next to it)."""

    #: xleval writes every run's report with it, to RUN_DIR/report.html
    run_file = "report.html"

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    # -- data -----------------------------------------------------------------------------

    def _methods(self, report: dict[str, Any]) -> list[dict[str, Any]]:
        return report_methods(report)

    def _curves(self, report, plt, plots_dir) -> list[Figure]:
        spec = report["spec"]
        metric = spec["main_metric"]
        numeric = [s for s in spec["shots"] if s != "all"]
        aggs = [a for a in report["aggregates"] if a["metric"] == metric]
        if not any(a["mean"] is not None for a in aggs):
            return []  # every cell failed: nothing to draw (the page lists the failures)
        break_even = {
            (label, target): entry["shots"]
            for label, summary in report.get("summary", {}).items()
            if isinstance(summary, dict)
            for target, entry in (summary.get("break_even") or {}).items()
            if entry.get("status") == "break-even" and entry.get("shots") is not None
        }
        targets = spec_targets(spec)
        cols = min(len(targets), 2)
        rows = math.ceil(len(targets) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.0 * rows), squeeze=False)
        for ax, target in zip(axes.flat, targets, strict=False):
            for i, method in enumerate(self._methods(report)):
                label = method["label"]
                points = sorted(
                    (a for a in aggs if a["method"] == label and a["target"] == target),
                    key=lambda a: _shot_position(a["shots"], numeric),
                )
                if not points:
                    continue
                points = [a for a in points if a["mean"] is not None]
                if not points:
                    continue
                xs = [_real_position(a, numeric) for a in points]
                ys = [a["mean"] for a in points]
                colour = PALETTE[i % len(PALETTE)]
                style = "--" if method["protocol"] == "zero-shot" else "-"
                ax.plot(xs, ys, style, marker=MARKERS[i % len(MARKERS)], color=colour, label=label)
                lows = [a["ci"][0] if a.get("ci") else a["mean"] for a in points]
                highs = [a["ci"][1] if a.get("ci") else a["mean"] for a in points]
                ax.fill_between(xs, lows, highs, color=colour, alpha=0.15, linewidth=0)
                k = break_even.get((label, target))
                if k is not None:
                    ax.axvline(_shot_position(k, numeric), color=colour, linestyle=":", alpha=0.8)
            ax.set_xscale("symlog", linthresh=max(1, min([s for s in numeric if s > 0] or [1])))
            ticks = [_shot_position(s, numeric) for s in spec["shots"]]
            ax.set_xticks(ticks, [str(s) for s in spec["shots"]])
            ax.set_title(f"target: {target}")
            ax.set_xlabel("target-language training examples per class (k, log scale)")
            ax.set_ylabel(metric)
            ax.grid(True, alpha=0.3)
        for ax in list(axes.flat)[len(targets) :]:
            ax.axis("off")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        ncol = max(1, min(len(labels), 5))
        legend_bottom = _fixed_grid(fig, rows, cols, math.ceil(len(labels) / ncol))
        fig.legend(
            handles,
            labels,
            loc="lower center",
            ncol=ncol,
            bbox_to_anchor=(0.5, legend_bottom),
            frameon=False,
        )
        caption = (
            f"{metric} on each target language's test split vs. target examples per class; "
            f"lines: mean over seeds, bands: {_interval_words(report)}; dashed: zero-shot "
            "(independent of k); a point sits at the examples per class really trained on "
            "(left of k where a class had fewer than k training rows); dotted verticals: "
            "break-even k where a method stops beating target-only."
        )
        figure = Figure.draw(
            fig, "learning_curves", caption, f"Learning curves of {metric}", plots_dir, tight=False
        )
        plt.close(fig)
        return [figure]

    def _gap_figures(self, report, plt, plots_dir) -> list[Figure]:
        spec = report["spec"]
        summary = report.get("summary", {})
        shots_options = [str(s) for s in spec["shots"]]
        chosen = str(self.options.get("gap_shots") or "")
        if chosen not in shots_options:
            chosen = next((s for s in shots_options if s != "0"), shots_options[0])
        methods = [
            m["label"]
            for m in self._methods(report)
            if not summary.get(m["label"], {}).get("transfer_gap_note")
        ]
        targets = spec_targets(spec)
        grid = []
        for method in methods:
            per = summary.get(method, {}).get("by_shots", {}).get(chosen, {})
            gaps = per.get("transfer_gap_per_target", {}) if isinstance(per, dict) else {}
            grid.append([gaps.get(t) for t in targets])
        if all(v is None for row in grid for v in row):
            return []
        higher = report["metrics"][spec["main_metric"]]["higher_is_better"]
        values = [v for row in grid for v in row if v is not None]
        bound = max(abs(v) for v in values) or 1.0
        fig, (heat, bars) = plt.subplots(
            1, 2, figsize=(12, 0.6 * len(methods) + 2.6), gridspec_kw={"width_ratios": [1, 1.2]}
        )
        masked = [[float("nan") if v is None else v for v in row] for row in grid]
        image = heat.imshow(masked, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
        heat.set_xticks(range(len(targets)), targets)
        heat.set_yticks(range(len(methods)), methods)
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if v is not None:
                    heat.text(
                        j,
                        i,
                        f"{v:+.3f}",
                        ha="center",
                        va="center",
                        fontsize=9,
                        color="white" if abs(v) > bound * 0.6 else "black",
                    )
        heat.set_title(f"transfer gap at k={chosen}")
        fig.colorbar(image, ax=heat, label="how much worse on the target (lower is better)")
        width = 0.8 / max(len(methods), 1)
        for i, (method, row) in enumerate(zip(methods, grid, strict=True)):
            xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(targets))]
            bars.bar(
                xs,
                [0 if v is None else v for v in row],
                width=width,
                color=PALETTE[i % len(PALETTE)],
                label=method,
            )
        bars.set_xticks(range(len(targets)), targets)
        bars.axhline(0, color="black", linewidth=0.8)
        bars.set_ylabel(f"gap in {spec['main_metric']} (lower is better)")
        bars.set_xlabel("target language")
        bars.set_title(f"per language at k={chosen}")
        bars.legend(frameon=False, fontsize=8)
        bars.grid(True, axis="y", alpha=0.3)
        fig.tight_layout()
        how = "source - target" if higher else "target - source"
        caption = (
            f"Transfer gap: how much worse {spec['main_metric']} is on the target language's "
            f"test split than on the source's ({how}), per method and target at k={chosen}; "
            "lower is better. Methods that do not learn from the source have none."
        )
        figure = Figure.draw(
            fig, "transfer_gap", caption, "Transfer gap heatmap and bars", plots_dir
        )
        plt.close(fig)
        return [figure]

    def _matrix_figures(self, report, plt, plots_dir) -> list[Figure]:
        """A spec with pairs: per method run per source, heatmaps (one per k) of the main
        metric of each source (row) on each target (column), with the difference to the
        baseline (target-only) under each value; the best source per target boxed, * where
        the paired tests find it better than every other source. A k whose matrix equals
        the previous k's (a method that ignores k fills every column) is not drawn again."""
        spec = report["spec"]
        if "pairs" not in spec:
            return []
        from xleval_plugins.reporters import best_source, matrix_inputs

        metric = spec["main_metric"]
        inputs = matrix_inputs(report)
        mean, higher = inputs["mean"], inputs["higher"]
        baseline = report.get("statistics", {}).get("baseline")
        sources, targets = spec_sources(spec), spec_targets(spec)
        groups = [m["label"] for m in spec["methods"] if m.get("sources", "each") == "each"]
        figures = []
        for group in groups:
            panels: list[tuple[Any, list[list[float | None]]]] = []
            for k in spec["shots"]:
                grid = [[mean.get((f"{group}@{s}", t, k)) for t in targets] for s in sources]
                if any(v is not None for row in grid for v in row) and (
                    not panels or grid != panels[-1][1]
                ):
                    panels.append((k, grid))
            if not panels:
                continue
            values = [v for _, grid in panels for row in grid for v in row if v is not None]
            low, high = min(values), max(values)
            fig, axes = plt.subplots(
                1,
                len(panels),
                figsize=(len(panels) * (1.15 * len(targets) + 1.2) + 1.4, 0.7 * len(sources) + 1.9),
                squeeze=False,
            )
            cmap = "viridis" if higher else "viridis_r"
            for ax, (k, grid) in zip(axes[0], panels, strict=True):
                masked = [[float("nan") if v is None else v for v in row] for row in grid]
                image = ax.imshow(masked, cmap=cmap, vmin=low, vmax=high, aspect="auto")
                ax.set_xticks(range(len(targets)), targets)
                ax.set_yticks(range(len(sources)), sources)
                ax.set_xlabel("target language")
                ax.set_ylabel("source language")
                ax.set_title(f"k={k}")
                for j, target in enumerate(targets):
                    base = mean.get((baseline, target, k)) if baseline else None
                    for i, v in enumerate(row[j] for row in grid):
                        if v is None:
                            continue
                        label = f"{v:.3f}" + ("" if base is None else f"\n{v - base:+.3f}")
                        shade = "black" if (v > (low + high) / 2) == higher else "white"
                        ax.text(j, i, label, ha="center", va="center", fontsize=8, color=shade)
                    best = best_source(inputs, group, sources, target, k)
                    if best is not None and best[2] != "tie":
                        top = sources.index(best[0])
                        ax.add_patch(plt.Rectangle((j - 0.5, top - 0.5), 1, 1, fill=False, lw=2))
                        if best[2] == "*":
                            ax.text(j + 0.42, top - 0.3, "*", ha="right", va="top", fontsize=12)
            fig.colorbar(image, ax=list(axes[0]), label=metric)
            fig.suptitle(group)
            caption = (
                f"{group}: {metric} of a model trained on each source language (rows) on each "
                "target language's test split (columns), mean over seeds, at each k"
                + (f"; under each value its difference to {baseline} at that k" if baseline else "")
                + ". Boxed: the best source for the target; * where the paired tests find it "
                "better than every other source (Holm-corrected with the report's other "
                "tests). `xleval report RUN --view matrix` also lists the methods trained on all "
                "sources together against the best single source."
            )
            figures.append(
                Figure.draw(fig, f"matrix_{group}", caption, f"{group} transfer matrix", plots_dir)
            )
            plt.close(fig)
        return figures

    def _variance_figures(self, report, plt, plots_dir) -> list[Figure]:
        """One stacked bar per method and k: the shares of one run's variance that come
        from the training seed, the shot draw and the test examples (mean over targets of
        each component), the total standard deviation above it."""
        entries = report.get("variance") or []
        if not entries:
            return []
        spec = report["spec"]
        methods = [m["label"] for m in self._methods(report)]
        shots = [s for s in spec["shots"]]
        parts = ("seed", "draw", "examples")
        independent = {a["method"] for a in report["aggregates"] if a.get("shots_independent")}
        bars: list[tuple[str, Any, dict[str, float], bool]] = []
        for method in methods:
            for k in shots[:1] if method in independent else shots:
                group = [e for e in entries if e["method"] == method and e["shots"] == k]
                if not group or any(e["components"]["seed"] is None for e in group):
                    continue
                mean = {
                    p: sum((e["components"][p] or {"variance": 0.0})["variance"] for e in group)
                    / len(group)
                    for p in parts
                }
                merged = any("includes the shot draw" in (e.get("note") or "") for e in group)
                bars.append((method, k, mean, merged))
        if not bars:
            return []
        colours = {"seed": PALETTE[0], "draw": PALETTE[1], "examples": PALETTE[2]}
        names = {
            "seed": "training seed",
            "draw": "shot draw",
            "examples": "test examples",
        }
        fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(bars) + 2.5), 4.6))
        xs = list(range(len(bars)))
        bottoms = [0.0] * len(bars)
        for p in parts:
            heights = []
            for _, _, mean, _ in bars:
                total = sum(mean.values())
                heights.append(mean[p] / total if total else 0.0)
            hatches = ["//" if p == "seed" and merged else "" for _, _, _, merged in bars]
            for x, h, b, hatch in zip(xs, heights, bottoms, hatches, strict=True):
                ax.bar(x, h, bottom=b, color=colours[p], hatch=hatch, edgecolor="white")
            bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
        for x, (_, _, mean, _) in zip(xs, bars, strict=True):
            ax.text(x, 1.01, f"{sum(mean.values()) ** 0.5:.3f}", ha="center", fontsize=7)
        labels = [f"{m}\n{'any k' if m in independent else f'k={k}'}" for m, k, _, _ in bars]
        ax.set_xticks(xs, labels, rotation=90, fontsize=8)
        ax.set_ylim(0, 1.08)
        ax.set_ylabel("share of one run's variance")
        from matplotlib.patches import Patch

        handles = [Patch(color=colours[p], label=names[p]) for p in parts]
        if any(merged for *_, merged in bars):
            handles.append(
                Patch(
                    facecolor=colours["seed"],
                    hatch="//",
                    edgecolor="white",
                    label="seed with its draw (no shot_draws)",
                )
            )
        ax.legend(
            handles=handles, frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0)
        )
        fig.tight_layout()
        caption = (
            f"Where the spread of {spec['main_metric']} comes from: per method and k, the "
            "share of the variance of one run's score due to the training seed (the shot "
            "draw held fixed), the shot draw (the seed held fixed) and the test examples "
            "(another test set of this size), mean over targets; the number above a bar is "
            "the standard deviation of one run's score."
            + (
                " Hatched: one draw of the shots per seed (no shot_draws), so the seed's part "
                "includes the draw's."
                if any(merged for *_, merged in bars)
                else ""
            )
            + " Intervals: xleval report RUN --view variance."
        )
        figure = Figure.draw(fig, "variance", caption, "Variance components", plots_dir)
        plt.close(fig)
        return [figure]

    def _calibration(self, report, plt, plots_dir) -> list[Figure]:
        curves = [
            c for c in report.get("calibration") or [] if c["protocol"] in ("fusion", "target-only")
        ]
        if not any(c["protocol"] == "fusion" for c in curves):
            return []
        fig, ax = plt.subplots(figsize=(6.2, 5.2))
        ax.plot([0, 1], [0, 1], color="#777", linestyle="--", label="perfectly calibrated")
        for i, curve in enumerate(curves):
            bins = [b for b in curve["bins"] if b["count"] > 0]
            ax.plot(
                [b["confidence"] for b in bins],
                [b["accuracy"] for b in bins],
                marker=MARKERS[i % len(MARKERS)],
                color=PALETTE[i % len(PALETTE)],
                label=f"{curve['method']} (ECE {curve['ece']:.3f})",
            )
        ax.set_xlabel("predicted confidence (max probability)")
        ax.set_ylabel("observed accuracy")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(True, alpha=0.3)
        ax.legend(frameon=False, fontsize=8, loc="upper left")
        fig.tight_layout()
        caption = (
            "Reliability diagram per fusion strategy, with target-only for reference, on "
            "the target test splits (targets, shots and seeds pooled): fusion changes "
            "how confident predictions are, not only whether they are right."
        )
        figure = Figure.draw(fig, "calibration", caption, "Reliability diagram", plots_dir)
        plt.close(fig)
        return [figure]

    def figures(self, report: dict[str, Any], plots_dir: Path | None) -> dict[str, list[Any]]:
        """The page's figures by group: the ones saved in ``plots_dir`` when nothing they
        are drawn from changed since (matplotlib is then not even imported: drawing and
        saving them takes seconds), else drawn and saved anew."""
        from xleval.api.files import read_keyed, write_keyed

        key = self._figure_key(report)
        cache = None if plots_dir is None else plots_dir / FIGURE_CACHE
        stored = None if cache is None else read_keyed(cache, key)
        if isinstance(stored, dict) and all(isinstance(stored.get(g), list) for g in FIGURE_GROUPS):
            found = {g: [Figure.from_saved(e, plots_dir) for e in stored[g]] for g in FIGURE_GROUPS}
            if all(f is not None for group in found.values() for f in group):
                return found
        plt = _pyplot()
        if plots_dir is not None:
            plots_dir.mkdir(parents=True, exist_ok=True)
        drawn = {
            "curves": self._curves(report, plt, plots_dir),
            "gap_figures": self._gap_figures(report, plt, plots_dir),
            "calibration": self._calibration(report, plt, plots_dir),
            "matrix_figures": self._matrix_figures(report, plt, plots_dir),
            "variance_figures": self._variance_figures(report, plt, plots_dir),
        }
        if cache is not None:
            write_keyed(cache, key, {g: [f.to_json() for f in fs] for g, fs in drawn.items()})
        return drawn

    def _figure_key(self, report: dict[str, Any]) -> str:
        from importlib import metadata

        from xleval.api.files import content_key

        return content_key(
            {
                "inputs": {name: report.get(name) for name in FIGURE_INPUTS},
                "options": self.options,
                "code": _sha256(Path(__file__).read_bytes()),
                "matplotlib": metadata.version("matplotlib"),
            }
        )

    # -- page -----------------------------------------------------------------------------

    def render(self, report: dict[str, Any], plots_dir: Path | None = None) -> str:
        import json

        import jinja2

        figures = self.figures(report, plots_dir)
        spec = report["spec"]
        metric = spec["main_metric"]
        higher = report["metrics"][metric]["higher_is_better"]
        shots = [str(s) for s in spec["shots"]]
        summary_rows = []
        for method in self._methods(report):
            by = report.get("summary", {}).get(method["label"], {}).get("by_shots", {})
            summary_rows.append(
                {
                    "method": method["label"],
                    "protocol": method["protocol"],
                    "scores": [
                        _fmt(by.get(k, {}).get("score"), by.get(k, {}).get("score_ci"))
                        for k in shots
                    ],
                    "gaps": ["n/a"] * len(shots)
                    if report.get("summary", {}).get(method["label"], {}).get("transfer_gap_note")
                    else [
                        _fmt(
                            by.get(k, {}).get("transfer_gap"), by.get(k, {}).get("transfer_gap_ci")
                        )
                        for k in shots
                    ],
                    "rank": _fmt(
                        report.get("summary", {}).get(method["label"], {}).get("mean_rank")
                    ),
                    "wtl": _wtl(
                        report.get("summary", {}).get(method["label"], {}).get("wins_ties_losses")
                    ),
                }
            )
        comparisons, headers = _comparison_rows(report.get("comparisons") or [])
        shortfalls: dict[tuple[str, Any], dict[str, Any]] = {}
        for a in report["aggregates"]:
            if a["metric"] != metric or not a.get("shortfall"):
                continue
            entry = shortfalls.setdefault(
                (a["target"], a["shots"]),
                {
                    "column": f"{a['target']} k={a['shots']}",
                    "methods": [],
                    "missing": ", ".join(
                        f"{label}: {n} short" for label, n in a["shortfall"].items()
                    ),
                    "per_class": _fmt(a.get("mean_shots_per_class"), digits=1),
                },
            )
            entry["methods"].append(a["method"])
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("xleval_plugins", "templates"),
            autoescape=True,  # every string from data, specs and plugins is escaped
            undefined=jinja2.StrictUndefined,
        )
        template = env.get_template("report.html.j2")
        failures = [
            {
                "cell": f"{c['method']} {'+'.join(c['sources'])}->{c['target']} k={c['shots']} "
                f"seed={c['seed']}" + (f" draw={c['draw']}" if c.get("draw") is not None else ""),
                "error": c["error"],
            }
            for c in report["cells"]
            if c["status"] != "ok"
        ]
        return template.render(
            spec=spec,
            dataset=report["dataset"],
            main_metric=metric,
            higher=higher,
            run=report["run"],
            summary_shots=shots,
            summary_rows=summary_rows,
            ranks=any(r["rank"] != "-" for r in summary_rows),
            has_score_ci=any("±" in c or "[" in c for r in summary_rows for c in r["scores"]),
            interval_words=_interval_words(report),
            direction=_direction(report),
            gap_how="source - target" if higher else "target - source",
            one_seed=len(spec["seeds"]) < 2,
            notes=report.get("statistics", {}).get("notes", []),
            shortfalls=list(shortfalls.values()),
            curves=figures["curves"],
            gap_figures=figures["gap_figures"],
            matrix_figures=figures["matrix_figures"],
            variance_figures=figures["variance_figures"],
            comparisons=comparisons,
            comparison_headers=headers,
            alpha=f"{1 - spec.get('statistics', {}).get('confidence', 0.95):.3g}",
            calibration=figures["calibration"],
            failures=failures,
            created=report["created"],
            xleval_version=report["xleval_version"],
            env=report["environment"],
            spec_json=json.dumps(spec, indent=2, ensure_ascii=False),
        )

    def write(self, report: dict[str, Any], path: str | None) -> None:
        from xleval_plugins.reporters import write_text

        plots_dir = Path(path).parent / "plots" if path is not None else None
        write_text(self.render(report, plots_dir), path)


def _fmt(value: Any, interval: Any = None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"{value:.{digits}f}"
    if interval:
        text += f" [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"
    return text


def _wtl(value: Any) -> str:
    """'wins / ties / losses' against every other method, over all columns."""
    total = (value or {}).get("total")
    if not total:
        return "-"
    return f"{total.get('wins', 0)} / {total.get('ties', 0)} / {total.get('losses', 0)}"


def _comparison_rows(comparisons: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows for the planned comparisons (each method against the baseline, and the pairs the
    spec asks for): effect size, its interval and the Holm-corrected p-value; comparisons
    that are no tests say why."""
    headers = ["A", "B", "target", "k", "metric", "A - B", "interval", "p (Holm)", "result"]
    rows = []
    for c in comparisons:
        if c.get("family") != "planned":
            continue
        if c.get("status") == "identical":
            result = "the same model (identical predictions): no test"
        elif c.get("status") != "ok":
            result = f"not tested: {c.get('reason') or 'missing cells'}"
        elif c.get("significant"):
            result = f"{c.get('better')} better"
        else:
            result = "not shown to differ"
        ci = c.get("ci")
        p = c.get("p_holm")
        rows.append(
            {
                "cells": [
                    c["a"],
                    c["b"],
                    c["target"],
                    str(c["shots"]),
                    c["metric"],
                    _fmt(c.get("difference")),
                    f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "-",
                    "-" if p is None else f"{p:.4f}",
                    result,
                ],
                "mark_col": 5,
                "mark": ("sig" if c.get("better") == c["a"] else "worse")
                if c.get("significant")
                else "",
            }
        )
    return rows, headers


@hookimpl
def xleval_register_reporters(register: Register) -> None:
    """Register ``html``."""
    register(
        "html",
        HtmlReporter,
        schema={
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "gap_shots": {
                    "type": ["integer", "string", "null"],
                    "default": None,
                    "description": "Shots column of the transfer-gap plots (default: the "
                    "smallest k > 0).",
                }
            },
        },
        description="Self-contained HTML page with learning curves, gaps and comparisons.",
    )

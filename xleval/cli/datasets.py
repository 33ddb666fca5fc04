"""``xleval datasets``: list dataset plugins and show what a dataset holds.

Dataset options come as repeatable ``-o key=value`` (the value is JSON when it parses,
otherwise a string), so any plugin's options work without per-plugin flags.
"""

from __future__ import annotations

import json
from typing import Any

import click
from tabulate import tabulate

from xleval.api.data import SPLITS, MultilingualDataset
from xleval.cli.state import CliState


def parse_option(text: str) -> tuple[str, Any]:
    """``key=value`` -> (key, value); ``value`` is JSON if it parses (``3``, ``null``, ``[..]``)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise click.BadParameter(f"expected KEY=VALUE, got {text!r}", param_hint="'-o'")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def parse_options(items: tuple[str, ...]) -> dict[str, Any]:
    """Collect ``-o`` items; a key given twice is an error rather than a silent override."""
    options: dict[str, Any] = {}
    for item in items:
        key, value = parse_option(item)
        if key in options:
            raise click.BadParameter(f"option {key!r} given twice", param_hint="'-o'")
        options[key] = value
    return options


def counts_table(dataset: MultilingualDataset) -> str:
    """Examples per language (rows) and split (columns), with totals."""
    counts = dataset.split_counts()
    rows = [[lang, *by_split.values(), sum(by_split.values())] for lang, by_split in counts.items()]
    totals = [sum(c[s] for c in counts.values()) for s in SPLITS]
    rows.append(["all", *totals, sum(totals)])
    return tabulate(rows, headers=["lang", *SPLITS, "total"])


def labels_table(dataset: MultilingualDataset) -> str:
    """Examples per (language, split) (rows) and label (columns)."""
    counts = dataset.counts()
    rows = []
    for lang in dataset.languages:
        for split in SPLITS:
            by_label = counts.get(lang, {}).get(split, {})
            values = [by_label.get(label, 0) for label in dataset.labels]
            rows.append([lang, split, *values, sum(values)])
    return tabulate(
        rows,
        headers=["lang", "split", *dataset.labels, "total"],
    )


def describe_source(metadata: dict[str, Any]) -> str:
    """One line on where the examples and their splits came from, as far as metadata says."""
    parts = []
    if "source" in metadata:
        parts.append(f"source {metadata['source']}")
    origin = metadata.get("split_origin")
    if origin == "group hash":
        ratios = ", ".join(f"{s} {r:g}" for s, r in metadata.get("split_ratios", {}).items())
        parts.append(f"splits by group hash ({ratios})")
    elif origin:
        parts.append(f"splits from the {origin}")
    return "; ".join(parts)


def show_json(dataset: MultilingualDataset) -> dict[str, Any]:
    """The ``--json`` document: the dataset summary plus per language × split totals."""
    return {
        **dataset.summary(),
        "splits": list(SPLITS),
        "split_counts": dataset.split_counts(),
        "metadata": dataset.metadata,
    }


def datasets_group() -> click.Group:
    """The ``datasets`` command group (listing when called plainly, plus ``show``)."""

    @click.group("datasets", invoke_without_command=True)
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.pass_context
    def datasets(ctx: click.Context, as_json: bool) -> None:
        """List datasets (name, provider, description); 'show NAME' counts one's examples."""
        if ctx.invoked_subcommand is not None:
            return
        state: CliState = ctx.obj
        components = state.pm.registry.components("datasets")
        if as_json:
            click.echo(
                json.dumps(
                    [
                        {
                            "name": c.name,
                            "plugin": c.plugin,
                            "distribution": c.distribution,
                            "description": c.description,
                            "options": c.schema,
                        }
                        for c in components
                    ],
                    indent=2,
                )
            )
            return
        rows = [[c.name, c.provider, c.description or "-"] for c in components]
        click.echo(
            tabulate(
                rows, headers=["dataset", "provider", "description"], maxcolwidths=[None, None, 70]
            )
        )

    @datasets.command("show")
    @click.argument("name")
    @click.option(
        "-o",
        "--option",
        "options",
        multiple=True,
        metavar="KEY=VALUE",
        help="A dataset option; repeatable. VALUE is parsed as JSON when it "
        "parses, else taken as a string (e.g. -o path=my.jsonl -o max_per_lang=500).",
    )
    @click.option("--labels", is_flag=True, help="Also count examples per label.")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.pass_obj
    def show(
        state: CliState, name: str, options: tuple[str, ...], labels: bool, as_json: bool
    ) -> None:
        """Load dataset NAME and print its examples per language and split."""
        parsed = parse_options(options)
        from xleval.experiment.dataset_rules import load_dataset

        dataset = load_dataset(state.pm.registry, name, parsed)
        if as_json:
            click.echo(json.dumps(show_json(dataset), indent=2, ensure_ascii=False))
            return
        click.echo(
            f"dataset {dataset.name}: {len(dataset.examples)} examples, "
            f"{len(dataset.languages)} languages, {len(dataset.labels)} labels "
            f"({', '.join(dataset.labels)})"
        )
        click.echo(f"fingerprint {dataset.fingerprint}")
        click.echo(describe_source(dataset.metadata) + "\n")
        click.echo(counts_table(dataset))
        if labels:
            click.echo("\n" + labels_table(dataset))
        for warning in dataset.warnings:
            click.echo(f"warning: {warning}", err=True)

    return datasets

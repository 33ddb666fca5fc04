#!/usr/bin/env python3
"""Which tokenizer and n-grams should the bundled model use by default? Every tokenizer
option of bag-of-embeddings (``words``, ``whitespace``, ``words+punct``; lower-cased or not;
char 3-5-grams, no word n-grams: the defaults of version 0.10) and the 0.11 default's
ingredients (char 2-4-grams, word bigrams, case) run through the same grid on two datasets
of different kinds, all five methods:

* ddtp-sections (package descriptions: prose), en -> de, fr, ja, ru;
* UI messages of eight programs (``scripts/build_ui_messages.py``: usage lines, errors and
  menu strings full of format strings and options), en -> de, fr, ja, ru, zh_CN.

Printed: per dataset and method, the mean accuracy over targets, shots and seeds of each
variant, and how many cells (target × k) each one wins or loses against the first variant
run by more than a point. Run from the repository root (each run goes into
--out/<dataset>-<variant>; ``--variants`` picks some, the first is the baseline)::

    python scripts/build_ui_messages.py --out benchmarks/data/ui-messages.jsonl
    python benchmarks/tokenizer_choice.py --ui benchmarks/data/ui-messages.jsonl --out /tmp/tok
    python benchmarks/tokenizer_choice.py --ui benchmarks/data/ui-messages.jsonl --out /tmp/tok \
        --variants "words+punct lower" "default" "default lower" "default w1"
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

_V010 = {"ngram_range": [3, 5], "word_ngrams": 1}  # the n-grams of versions before 0.11
VARIANTS: dict[str, dict] = {
    f"{tok} {'lower' if low else 'cased'}": {"tokenizer": tok, "lowercase": low, **_V010}
    for tok in ("words", "whitespace", "words+punct")
    for low in (True, False)
}
VARIANTS |= {
    "default": {},  # 0.11: words+punct, cased, char 2-4-grams, word bigrams
    "default lower": {"lowercase": True},
    "default w1": {"word_ngrams": 1},
}
METHODS = """
[[methods]]
protocol = "target-only"
[[methods]]
protocol = "zero-shot"
[[methods]]
protocol = "transfer"
[[methods]]
protocol = "fusion"
[[methods]]
protocol = "joint"
"""


def toml_pairs(options: dict) -> str:
    """``a = 1, b = [3, 5]``: an inline TOML table's body (JSON scalars and lists are TOML)."""
    return ", ".join(f"{key} = {json.dumps(value)}" for key, value in options.items())


def spec_text(dataset: str, targets: list[str], shots: list[int], seeds: int, options) -> str:
    return f"""name = "tok"
dataset = {dataset}
source = "en"
targets = {json.dumps(targets)}
shots = {json.dumps(shots)}
seeds = {json.dumps(list(range(1, seeds + 1)))}
metrics = ["accuracy"]
executor = {{ name = "processes", options = {{ workers = 2 }} }}
model = {{ name = "bag-of-embeddings", options = {{ {toml_pairs({"dim": 64, **options})} }} }}
training = {{ epochs = 10, min_steps = 100 }}
{METHODS}"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--ui", type=Path, required=True, help="scripts/build_ui_messages.py's file"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS)[:6],
        help="which to run (default: the six tokenizer settings); the first is the baseline",
    )  # fmt: skip
    args = parser.parse_args(argv)
    datasets = {
        "ddtp-sections": ('"ddtp-sections"', ["de", "fr", "ja", "ru"], [0, 8, 32, 128]),
        "ui-messages": (
            f'{{ name = "jsonl", options = {{ path = "{args.ui.resolve()}" }} }}',
            ["de", "fr", "ja", "ru", "zh_CN"],
            [0, 8, 32],
        ),
    }
    xleval = str(Path(sys.executable).parent / "xleval")
    results: dict[tuple[str, str], dict] = {}
    for name, (dataset, targets, shots) in datasets.items():
        for variant in args.variants:
            run_dir = args.out / f"{name}-{variant.replace(' ', '-')}"
            spec = args.out / f"{run_dir.name}.toml"
            spec.parent.mkdir(parents=True, exist_ok=True)
            spec.write_text(spec_text(dataset, targets, shots, args.seeds, VARIANTS[variant]))
            started = time.perf_counter()
            subprocess.run([xleval, "run", str(spec), "--out", str(run_dir), "-q", "--force"],
                           check=True, stdout=subprocess.DEVNULL)  # fmt: skip
            report = json.loads((run_dir / "report.json").read_text())
            results[(name, variant)] = {
                (a["method"], a["target"], a["shots"]): a["mean"]
                for a in report["aggregates"]
                if a["metric"] == "accuracy"
            }
            print(f"  {run_dir.name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    for name in datasets:
        base = results[(name, args.variants[0])]
        methods = list(dict.fromkeys(m for m, _, _ in base))
        print(f"\n{name}: mean accuracy over targets, shots and {args.seeds} seeds "
              f"(cells better / worse than {args.variants[0]} by > 1 point)")  # fmt: skip
        print(f"{'variant':24}" + "".join(f"{m:>22}" for m in methods) + f"{'all':>22}")
        for variant in args.variants:
            scores = results[(name, variant)]
            row = f"{variant:24}"
            for method in [*methods, None]:
                keys = [k for k in base if method is None or k[0] == method]
                mean = statistics.fmean(scores[k] for k in keys)
                better = sum(scores[k] - base[k] > 0.01 for k in keys)
                worse = sum(base[k] - scores[k] > 0.01 for k in keys)
                row += f"{mean:>12.4f} (+{better}/-{worse})".rjust(22)
            print(row)


if __name__ == "__main__":
    main()

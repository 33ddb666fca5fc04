#!/usr/bin/env python3
"""xleval's default bag-of-embeddings against fastText on fastText's own terms, per
language and per protocol.

fastText reads the raw texts with its native tokenisation (whitespace, nothing dropped,
case kept), char n-grams 3-5, its default dim 100, softmax, 200,000 buckets (xleval's;
fastText's own default of 2,000,000 makes every run allocate 800 MB: ``--buckets``), at
learning rates 0.1, 0.25 and 0.5 (``--lr``) × 25 and 50 epochs: the reference of each cell
is fastText's best of those settings on that cell's test split (among the settings that
never diverged there, if any) — a choice made on the test split, which favours fastText.
xleval trains the ``bag-of-embeddings`` model with every option at its default (tokenizer
included) and the trainer's defaults. Both learn the same training set of each protocol —
the k target examples per class are xleval's own draw for the seed:

* zero-shot: the source language's train split; tested on each target;
* joint k: the source train split + k target examples per class;
* target-only k: k target examples per class;
* full: the target's whole train split.

fastText runs with 12 threads (``--fasttext-threads``, its own default): fastText 0.9.3
allocates its input table without initialising it (``intgemm::AlignedVector``) and fills
it in ten blocks, one per thread, so with fewer than 10 threads most rows keep whatever
the heap held — zeros in a fresh process, garbage after torch has run in the same process,
which made 382 of 540 runs at ``thread=1`` stop with ``Encountered NaN`` and the rest vary
from run to run (found with valgrind: "uninitialised value created by
DenseMatrix::DenseMatrix"). With 12 threads training is Hogwild (not bit-reproducible),
hence several seeds. A run that still diverges ("Encountered NaN") is reported as such and
left out of its cell's mean (a zero-shot model, trained once and tested on every target,
counts once per target). The bar (issue 24): xleval ≥ fastText − 1 point in every
cell, and the mean over cells ≥ fastText's. fastText is benchmark-only (``pip install
fasttext``). Run from the repository root::

    .venv/bin/python benchmarks/against_fasttext.py                          # ddtp-sections
    .venv/bin/python benchmarks/against_fasttext.py --data benchmarks/data/ui-messages.jsonl \\
        --targets de fr ja ru zh_CN --shots 8 32                              # UI messages
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from xleval.experiment.sampling import sample_shots
from xleval.plugin.manager import get_plugin_manager
from xleval.train.trainer import build_model, predict_scores, train

try:
    import fasttext
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit("fastText is not installed: .venv/bin/pip install fasttext (benchmarks/README.md)")

FASTTEXT_EPOCHS = (25, 50)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=None, help="a JSONL file (default: ddtp-sections)"
    )
    parser.add_argument("--source", default="en")
    parser.add_argument("--targets", nargs="+", default=["de", "fr", "ja", "ru"])
    parser.add_argument("--shots", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--joint-shots", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--lr", type=float, nargs="+", default=[0.1, 0.25, 0.5], help="fastText's, each tried"
    )
    parser.add_argument("--dim", type=int, default=100, help="fastText's")
    parser.add_argument(
        "--fasttext-threads",
        type=int,
        default=12,
        help="fastText's threads (its default, 12; fewer than 10 leave most of its input "
        "table uninitialised, see the module's docstring)",
    )
    parser.add_argument(
        "--xleval-options",
        type=json.loads,
        action="append",
        default=None,
        metavar="JSON",
        help="bag-of-embeddings options of an xleval variant, e.g. '{\"ngram_range\": [3, 5]}'; "
        "repeatable, each variant gets its own column against the same fastText runs; the "
        "default variant ({}) is always measured first and is the one the bar is about",
    )
    parser.add_argument(
        "--buckets",
        type=int,
        default=200_000,
        help="fastText's (xleval's default; fastText's own: 2e6)",
    )
    return parser.parse_args(argv)


def fasttext_line(text: str) -> str:
    """One line per example: fastText splits on whitespace itself; newlines end a line."""
    return " ".join(text.split())


def fasttext_accuracies(
    train: list[tuple[str, str]],
    tests: list[list[tuple[str, str]]],
    setting: tuple[float, int],
    args,
    seed: int,
) -> list[float | None]:
    """One model trained on ``train``, its accuracy on each test set (as xleval's side, one
    model per training set scored on every target); None where it diverged (fastText raises
    on a NaN loss, in training or when it predicts)."""
    lr, epochs = setting
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as f:
        for text, label in train:
            f.write(f"__label__{label} {fasttext_line(text)}\n")
        path = f.name
    try:
        model = fasttext.train_supervised(
            path, dim=args.dim, epoch=epochs, lr=lr, minn=3, maxn=5, wordNgrams=1,
            bucket=args.buckets, thread=args.fasttext_threads, seed=seed, loss="softmax",
            minCount=1, verbose=0,
        )  # fmt: skip
    except RuntimeError as exc:
        if "NaN" in str(exc):
            return [None] * len(tests)
        raise
    finally:
        Path(path).unlink()
    accuracies: list[float | None] = []
    for test in tests:
        try:
            # predict(list) avoids fastText 0.9.3's np.array(copy=False), which numpy 2 rejects
            predicted, _ = model.predict([fasttext_line(t) for t, _ in test])
        except RuntimeError as exc:
            if "NaN" not in str(exc):
                raise
            accuracies.append(None)
            continue
        hits = sum(p[0] == f"__label__{y}" for p, (_, y) in zip(predicted, test, strict=True))
        accuracies.append(hits / len(test))
    return accuracies


def xleval_model(
    registry: Any, options: dict, texts: list[str], labels: list[int], n_classes: int, seed: int
):
    builder = registry.build("models", "bag-of-embeddings", options)  # {}: the defaults
    model = build_model(builder, n_classes, seed=seed, train_texts=texts)
    train(model, texts, labels, {"threads": 1}, seed=seed)
    return model


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    registry = get_plugin_manager().registry
    if args.data is None:
        name = "ddtp-sections"
        dataset = registry.build("datasets", name, {}).load()
    else:
        name = args.data.name
        dataset = registry.build("datasets", "jsonl", {"path": str(args.data)}).load()
    index = dataset.label_index
    settings = [(lr, epochs) for lr in args.lr for epochs in FASTTEXT_EPOCHS]
    variants = [{}] + [v for v in args.xleval_options or [] if v != {}]
    print(
        f"{name}: {args.source} -> {', '.join(args.targets)}; seeds {args.seeds}; fastText "
        f"lr {args.lr} x epochs {list(FASTTEXT_EPOCHS)}, dim {args.dim}, buckets "
        f"{args.buckets} (its best setting per cell); xleval bag-of-embeddings "
        f"{' | '.join(json.dumps(v) if v else 'defaults' for v in variants)}; "
        f"torch {torch.__version__}",
        flush=True,
    )

    def pairs(examples):
        return [(e.text, e.label) for e in examples]

    source_train = list(dataset.select(args.source, "train"))
    tests = {t: pairs(dataset.select(t, "test")) for t in args.targets}
    cells: dict[tuple[str, str, Any], dict[str, list]] = {}

    def run(train_examples, targets, protocol, k, seed):
        texts = [e.text for e in train_examples]
        labels = [index[e.label] for e in train_examples]
        models = [
            xleval_model(registry, options, texts, labels, len(dataset.labels), seed)
            for options in variants
        ]
        # fastText, like xleval, trains once per setting and is scored on every target
        by_setting = {
            setting: fasttext_accuracies(
                pairs(train_examples), [tests[t] for t in targets], setting, args, seed
            )
            for setting in settings
        }
        for i, target in enumerate(targets):
            test = tests[target]
            test_texts = [t for t, _ in test]
            accuracies = []
            for model in models:
                predicted = predict_scores(model, test_texts).argmax(1).tolist()
                hits = sum(p == index[y] for p, (_, y) in zip(predicted, test, strict=True))
                accuracies.append(hits / len(test))
            entry = cells.setdefault((target, protocol, k), {"xleval": [], "ft": []})
            entry["xleval"].append(accuracies)
            entry["ft"].append({setting: values[i] for setting, values in by_setting.items()})

    started = time.perf_counter()
    for seed in args.seeds:
        run(source_train, args.targets, "zero-shot", 0, seed)
        for target in args.targets:
            for k in args.joint_shots:
                shots = sample_shots(dataset, target, k, seed).examples
                run(source_train + list(shots), [target], "joint", k, seed)
            for k in args.shots:
                run(list(sample_shots(dataset, target, k, seed).examples), [target],
                    "target-only", k, seed)  # fmt: skip
            run(list(dataset.select(target, "train")), [target], "full", "all", seed)
        print(f"  seed {seed} done ({time.perf_counter() - started:.0f} s)", flush=True)

    rows, diverged_total, all_diverged = [], 0, []
    diffs: list[list[float]] = [[] for _ in variants]
    for (target, protocol, k), entry in cells.items():
        xl = [statistics.fmean(seeds) for seeds in zip(*entry["xleval"], strict=True)]
        per_setting = {}  # setting -> (mean over its converged seeds, runs diverged)
        for setting in settings:
            values = [r[setting] for r in entry["ft"]]
            ok = [v for v in values if v is not None]
            per_setting[setting] = (statistics.fmean(ok) if ok else None, len(values) - len(ok))
        diverged = sum(n for _, n in per_setting.values())
        diverged_total += diverged
        # the reference: fastText's best setting among those that never diverged here, else
        # among any that converged on some seed
        clean = [s for s, (m, n) in per_setting.items() if m is not None and n == 0]
        usable = clean or [s for s, (m, _) in per_setting.items() if m is not None]
        if not usable:
            all_diverged.append((target, protocol, k))
            rows.append((target, protocol, k, xl, None, None, diverged))
            continue
        best = max(usable, key=lambda s: per_setting[s][0])
        ft = per_setting[best][0]
        for i, value in enumerate(xl):
            diffs[i].append(100 * (value - ft))
        rows.append((target, protocol, k, xl, best, ft, diverged))
    extra = "".join(f" variant {i} | variant {i} − fastText |" for i in range(1, len(variants)))
    print(
        "\n| target | protocol | k | xleval | fastText (its best setting: lr, epochs) "
        f"| fastText runs diverged | xleval − fastText |{extra}"
    )
    print("|---|---|---|---|---|---|---|" + "---|---|" * (len(variants) - 1))
    runs = len(settings) * len(args.seeds)
    for target, protocol, k, xl, best, ft, diverged in rows:
        if best is None:
            others = "".join(f" {v:.4f} | – |" for v in xl[1:])
            print(f"| {target} | {protocol} | {k} | {xl[0]:.4f} | diverged in every run | "
                  f"{diverged} | – |{others}")  # fmt: skip
            continue
        others = "".join(f" {v:.4f} | {100 * (v - ft):+.2f} |" for v in xl[1:])
        print(f"| {target} | {protocol} | {k} | {xl[0]:.4f} | {ft:.4f} ({best[0]:g}, {best[1]}) | "
              f"{diverged} of {runs} | {100 * (xl[0] - ft):+.2f} |{others}")  # fmt: skip
    print(
        f"\n{len(rows)} cells, {len(args.seeds)} seeds, fastText's best of {len(settings)} "
        f"settings per cell; fastText diverged in {diverged_total} of {len(rows) * runs} runs, "
        f"in every run of {len(all_diverged)} cell(s)."
    )
    for i, (options, variant_diffs) in enumerate(zip(variants, diffs, strict=True)):
        below = sum(d < -1.0 for d in variant_diffs)
        mean = statistics.fmean(variant_diffs) if variant_diffs else math.nan
        label = "xleval defaults" if i == 0 else f"variant {i} {json.dumps(options)}"
        print(
            f"{label}: xleval − fastText mean {mean:+.2f} points over the {len(variant_diffs)} "
            f"cells where fastText converged, worst {min(variant_diffs, default=math.nan):+.2f}; "
            f"{below} cell(s) below −1 point. Bar (no cell below −1 point, mean ≥ 0): "
            f"{'met' if variant_diffs and below == 0 and mean >= 0 else 'NOT met'}."
        )
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

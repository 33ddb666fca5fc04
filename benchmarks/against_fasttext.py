#!/usr/bin/env python3
"""Accuracy and time of xleval's bag-of-embeddings against fastText on ddtp-sections.

Both learners get the same train/test split of one language, the same tokens (xleval's
lower-cased word tokenizer; fastText reads them space-separated), and the same dim,
epochs, learning rate (per example, decaying linearly to 0), character n-gram range,
buckets and word n-grams. fastText is benchmark-only: ``pip install fasttext`` (see
benchmarks/README.md). Run from the repository root::

    .venv/bin/python benchmarks/against_fasttext.py            # en, 3 seeds
    .venv/bin/python benchmarks/against_fasttext.py --epochs 25 --lr 1.0 --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from xleval.plugin.manager import get_plugin_manager
from xleval.train.trainer import build_model, predict_scores, train

try:
    import fasttext
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit("fastText is not installed: .venv/bin/pip install fasttext (benchmarks/README.md)")

from xleval_plugins.featurize import FEATURE_CACHE, tokenize


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lang", default="en")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--minn", type=int, default=3)
    parser.add_argument("--maxn", type=int, default=5)
    parser.add_argument("--buckets", type=int, default=200_000)
    parser.add_argument("--word-ngrams", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=32, help="xleval only")
    parser.add_argument("--threads", type=int, default=1, help="both learners")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--no-defaults",
        action="store_true",
        help="skip the extra run with xleval's default training options",
    )
    return parser.parse_args(argv)


def fasttext_run(
    train_path: str, test_lines: list[str], args: argparse.Namespace, seed: int
) -> tuple[list[str], float]:
    started = time.perf_counter()
    model = fasttext.train_supervised(
        train_path,
        dim=args.dim,
        epoch=args.epochs,
        lr=args.lr,
        minn=args.minn,
        maxn=args.maxn,
        bucket=args.buckets,
        wordNgrams=args.word_ngrams,
        thread=args.threads,
        seed=seed,
        loss="softmax",
        minCount=1,
        verbose=0,
    )
    seconds = time.perf_counter() - started
    # predict(list) avoids fastText 0.9.3's np.array(copy=False), which numpy 2 rejects.
    labels, _ = model.predict(test_lines)
    return [label[0][len("__label__") :] for label in labels], seconds


def xleval_run(
    registry: Any,
    train_texts: list[str],
    train_y: list[int],
    test_texts: list[str],
    n_classes: int,
    args: argparse.Namespace,
    seed: int,
    training: dict[str, Any],
) -> tuple[torch.Tensor, float]:
    FEATURE_CACHE.clear()  # count featurization, as fastText's time counts its dictionary
    started = time.perf_counter()
    builder = registry.build(
        "models",
        "bag-of-embeddings",
        {
            "dim": args.dim,
            "buckets": args.buckets,
            "ngram_range": [args.minn, args.maxn],
            "word_ngrams": args.word_ngrams,
            "max_tokens": args.max_tokens,
        },
    )
    model = build_model(builder, n_classes, seed=seed, train_texts=train_texts)
    train(model, train_texts, train_y, training, seed=seed)
    seconds = time.perf_counter() - started
    return predict_scores(model, test_texts).argmax(1), seconds


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    registry = get_plugin_manager().registry
    dataset = registry.build("datasets", "ddtp-sections", {"languages": [args.lang]}).load()
    train_set, test_set = dataset.select(args.lang, "train"), dataset.select(args.lang, "test")
    train_texts, test_texts = [e.text for e in train_set], [e.text for e in test_set]
    train_y = dataset.label_ids(train_set)
    test_y = torch.tensor(dataset.label_ids(test_set))

    def line(text: str) -> str:
        return " ".join(tokenize(text, args.max_tokens))

    same = {
        "optimizer": "sgd",
        "lr": args.lr,
        "lr_schedule": "linear",
        "epochs": args.epochs,
        "min_steps": 0,
        "batch_size": args.batch_size,
        "threads": args.threads,
    }
    print(
        f"ddtp-sections {args.lang}: {len(train_set)} train / {len(test_set)} test texts, "
        f"{len(dataset.labels)} labels; dim {args.dim}, epochs {args.epochs}, lr {args.lr} "
        f"(linear decay), char n-grams {args.minn}-{args.maxn}, buckets {args.buckets}, "
        f"word n-grams {args.word_ngrams}, threads {args.threads}; torch "
        f"{torch.__version__}"
    )
    rows: list[tuple[int, float, float, float, float, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        train_path = str(Path(tmp) / "train.txt")
        with open(train_path, "w", encoding="utf-8") as out:
            for e in train_set:
                out.write(f"__label__{e.label} {line(e.text)}\n")
        test_lines = [line(t) for t in test_texts]
        for seed in args.seeds:
            ft_pred, ft_s = fasttext_run(train_path, test_lines, args, seed)
            ft_acc = sum(p == e.label for p, e in zip(ft_pred, test_set, strict=True))
            ft_acc /= len(test_set)
            pred, xl_s = xleval_run(
                registry, train_texts, train_y, test_texts, len(dataset.labels), args, seed, same
            )
            xl_acc = float((pred == test_y).float().mean())
            default_acc, default_s = float("nan"), float("nan")
            if not args.no_defaults:
                pred, default_s = xleval_run(
                    registry, train_texts, train_y, test_texts, len(dataset.labels), args, seed, {}
                )
                default_acc = float((pred == test_y).float().mean())
            rows.append((seed, ft_acc, xl_acc, ft_s, xl_s, default_acc, default_s))
            print(
                f"seed {seed}: fastText {ft_acc:.4f} ({ft_s:.2f} s)  xleval sgd "
                f"{xl_acc:.4f} ({xl_s:.2f} s)  xleval defaults {default_acc:.4f} "
                f"({default_s:.2f} s)",
                flush=True,
            )

    def mean(i: int) -> float:
        return statistics.fmean(r[i] for r in rows)

    ft, xl = mean(1), mean(2)
    print(f"\nmean over {len(rows)} seeds")
    print(f"  fastText accuracy            {ft:.4f}   train {mean(3):.2f} s")
    print(f"  xleval (same options) acc.   {xl:.4f}   train {mean(4):.2f} s")
    print(f"  difference (xleval - fastText) {100 * (xl - ft):+.2f} points")
    if not args.no_defaults:
        print(
            f"  xleval default training      {mean(5):.4f}   train {mean(6):.2f} s "
            "(rowwise-adagrad, lr 0.2, 5 epochs)"
        )


if __name__ == "__main__":
    main()

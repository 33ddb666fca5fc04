#!/usr/bin/env python3
"""Training time, tokens/s, accuracy and peak memory: xleval's bag-of-embeddings vs fastText.

Both learn the same ddtp-sections train split (default: six languages pooled, ~9.5 k texts,
~680 k tokens, the scale of the issue's measurements; ``--langs en`` for English alone) with
the same tokens, dim, epochs, char n-grams, buckets and linearly decaying learning rate, at
1 thread each and then 2 each. Every run is a fresh child process (peak RSS is its own,
VmHWM); rounds interleave fastText and xleval; figures are medians.

xleval's time is end to end, as fastText's includes its dictionary and table init:
featurization (a cold process: every word hashed), table init, batch planning and the loop,
each also reported alone. Run from the repository root::

    .venv/bin/python benchmarks/train_vs_fasttext.py
    .venv/bin/python benchmarks/train_vs_fasttext.py --langs en --rounds 5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    DEFAULT_LANGS,
    FASTTEXT_TOKENS,
    interleaved,
    load_splits,
    machine,
    median,
    peak_rss_mb,
    ratio,
    require_fasttext,
    rss_mb,
    run_child,
    serve_child,
    table,
    write_fasttext_files,
)

SCRIPT = Path(__file__).resolve()

#: xleval variants: "sgd" takes fastText's own optimiser and learning rate; "default" is
#: xleval's default trainer (row-wise Adagrad, lr 0.2, batch 32) at the same epochs;
#: "-b256": the same with batches of 256 (fewer, better-deduplicated row updates).
VARIANTS: dict[str, dict[str, Any]] = {
    "sgd": {"optimizer": "sgd"},
    "default": {},
    "default-b256": {"batch_size": 256},
    "sgd-b256": {"optimizer": "sgd", "batch_size": 256},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--langs", default=",".join(DEFAULT_LANGS), help="train splits pooled")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.5, help="fastText's and xleval sgd's")
    parser.add_argument("--minn", type=int, default=3)
    parser.add_argument("--maxn", type=int, default=5)
    parser.add_argument("--buckets", type=int, default=200_000)
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=None, help="xleval (default: its own)")
    parser.add_argument("--threads", default="1,2", help="thread counts, each for both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--variants", default="sgd,default,default-b256", help=f"of {', '.join(VARIANTS)}"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- children -----------------------------------------------------------------------------


def fasttext_child(req: dict[str, Any]) -> dict[str, Any]:
    import fasttext  # only fastText and numpy in this process

    before = rss_mb()
    started = time.perf_counter()
    model = fasttext.train_supervised(
        req["train_path"],
        dim=req["dim"],
        epoch=req["epochs"],
        lr=req["lr"],
        minn=req["minn"],
        maxn=req["maxn"],
        bucket=req["buckets"],
        wordNgrams=1,
        thread=req["threads"],
        seed=req["seed"],
        loss="softmax",
        minCount=1,
        verbose=0,
    )
    train_s = time.perf_counter() - started
    lines = Path(req["test_path"]).read_text(encoding="utf-8").splitlines()
    gold = [line.split(" ", 1)[0] for line in lines]
    texts = [line.split(" ", 1)[1] if " " in line else "" for line in lines]
    # predict(list) avoids fastText 0.9.3's np.array(copy=False), which numpy 2 rejects.
    predicted, _ = model.predict(texts)
    accuracy = sum(p[0] == g for p, g in zip(predicted, gold, strict=True)) / len(gold)
    return {
        "train_s": train_s,
        "accuracy": accuracy,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": before,
    }


def xleval_child(req: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(req["threads"])
    from xleval.plugin.manager import get_plugin_manager
    from xleval.train.trainer import build_model, predict_scores, train

    registry = get_plugin_manager().registry
    langs = req["langs"]
    dataset, train_set, test_set = load_splits(registry, langs)
    texts, labels = [e.text for e in train_set], dataset.label_ids(train_set)
    options = {
        "epochs": req["epochs"],
        "min_steps": 0,
        "threads": req["threads"],
        "lr_schedule": "linear",
        **req["variant"],
    }
    if options.get("optimizer") == "sgd":
        options["lr"] = req["lr"]
    if req["batch_size"]:
        options["batch_size"] = req["batch_size"]
    builder = registry.build(
        "models",
        "bag-of-embeddings",
        {
            "dim": req["dim"],
            "buckets": req["buckets"],
            "ngram_range": [req["minn"], req["maxn"]],
            "word_ngrams": 1,
            "max_tokens": req["max_tokens"],
            **FASTTEXT_TOKENS,  # the tokens fastText is given here
        },
    )
    before = rss_mb()
    started = time.perf_counter()
    features = builder.featurizer(texts)  # a fresh process: every word is hashed
    featurized = time.perf_counter()
    model = build_model(builder, len(dataset.labels), seed=req["seed"])
    built = time.perf_counter()
    report = train(model, texts, labels, options, seed=req["seed"], features=features)
    done = time.perf_counter()
    scores = predict_scores(model, [e.text for e in test_set], threads=req["threads"])
    gold = torch.tensor(dataset.label_ids(test_set))
    return {
        "train_s": done - started,
        "featurize_s": featurized - started,
        "init_s": built - featurized,
        "plan_s": report.plan_seconds,
        "loop_s": report.seconds - report.plan_seconds - report.featurize_seconds,
        "steps": report.steps,
        "accuracy": float((scores.argmax(1) == gold).float().mean()),
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": before,
        "options": {k: v for k, v in options.items() if k != "threads"},
    }


# -- parent -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        serve_child(args.child, {"fasttext": fasttext_child, "xleval": xleval_child})
        return
    require_fasttext()
    from xleval_plugins.featurize import tokenize

    from xleval.plugin.manager import get_plugin_manager

    langs = args.langs.split(",")
    registry = get_plugin_manager().registry
    dataset, train_set, test_set = load_splits(registry, langs)
    tokens = sum(len(tokenize(e.text, args.max_tokens, **FASTTEXT_TOKENS)) for e in train_set)
    threads = [int(t) for t in args.threads.split(",")]
    variants = args.variants.split(",")
    print(
        f"ddtp-sections {'+'.join(langs)}: {len(train_set)} train texts ({tokens} tokens), "
        f"{len(test_set)} test texts, {len(dataset.labels)} labels; dim {args.dim}, "
        f"epochs {args.epochs}, char n-grams {args.minn}-{args.maxn}, buckets {args.buckets}; "
        f"fastText lr {args.lr}; {args.rounds} interleaved rounds, medians; {machine()}",
        flush=True,
    )

    with tempfile.TemporaryDirectory() as tmp:
        train_path, test_path = write_fasttext_files(
            Path(tmp), train_set, test_set, args.max_tokens
        )
        common = {
            "dim": args.dim,
            "epochs": args.epochs,
            "lr": args.lr,
            "minn": args.minn,
            "maxn": args.maxn,
            "buckets": args.buckets,
            "seed": args.seed,
        }
        configs = [(t, learner) for t in threads for learner in ("fasttext", *variants)]

        def run(config: tuple[int, str]) -> dict[str, Any]:
            t, learner = config
            if learner == "fasttext":
                request = {
                    "kind": "fasttext",
                    "threads": t,
                    "train_path": str(train_path),
                    "test_path": str(test_path),
                    **common,
                }
            else:
                request = {
                    "kind": "xleval",
                    "threads": t,
                    "langs": langs,
                    "variant": VARIANTS[learner],
                    "batch_size": args.batch_size,
                    "max_tokens": args.max_tokens,
                    **common,
                }
            return run_child(SCRIPT, request)

        results = interleaved(args.rounds, configs, run, lambda c: f"threads={c[0]} {c[1]}")

    for t in threads:
        ft = results[(t, "fasttext")]
        ft_train = median(r["train_s"] for r in ft)
        ft_acc = median(r["accuracy"] for r in ft)
        ft_rss = median(r["peak_rss_mb"] for r in ft)
        rows = [
            ["train end to end (s)", f"{ft_train:.2f}"],
            ["  featurize (s)", "(in its dictionary)"],
            ["  table init (s)", "(included)"],
            ["  batch planning (s)", "-"],
            ["  training loop alone (s)", "-"],
            ["tokens/s, end to end (M)", f"{tokens * args.epochs / ft_train / 1e6:.2f}"],
            ["tokens/s, loop alone (M)", "-"],
            ["test accuracy", f"{ft_acc:.4f}"],
            ["peak RSS (MB)", f"{ft_rss:.0f}"],
            [
                "  RSS growth while training (MB)",
                f"{median(r['peak_rss_mb'] - r['rss_before_mb'] for r in ft):.0f}",
            ],
        ]
        header = ["threads=" + str(t), "fastText"]
        bars = []
        for v in variants:
            xs = results[(t, v)]
            train_s = median(r["train_s"] for r in xs)
            loop_s = median(r["loop_s"] for r in xs)
            acc = median(r["accuracy"] for r in xs)
            rss = median(r["peak_rss_mb"] for r in xs)
            growth = median(r["peak_rss_mb"] - r["rss_before_mb"] for r in xs)
            column = [
                (f"{train_s:.2f}", ratio(train_s, ft_train)),
                (f"{median(r['featurize_s'] for r in xs):.2f}", ""),
                (f"{median(r['init_s'] for r in xs):.2f}", ""),
                (f"{median(r['plan_s'] for r in xs):.2f}", ""),
                (f"{loop_s:.2f}", ratio(loop_s, ft_train)),
                (
                    f"{tokens * args.epochs / train_s / 1e6:.2f}",
                    ratio(tokens / train_s, tokens / ft_train),
                ),
                (f"{tokens * args.epochs / loop_s / 1e6:.2f}", ""),
                (f"{acc:.4f}", f"{100 * (acc - ft_acc):+.2f} pts"),
                (f"{rss:.0f}", ratio(rss, ft_rss)),
                (f"{growth:.0f}", ""),
            ]
            for row, (value, rel) in zip(rows, column, strict=True):
                row += [value, rel]
            opts = xs[0]["options"]
            header += [f"xleval {v}", "ratio"]
            bars.append(
                f"  xleval {v} ({opts.get('optimizer', 'default optimizer')}, "
                f"batch {opts.get('batch_size', 'default')}): end to end "
                f"{ratio(train_s, ft_train)} x fastText's time (bar <= 1.0), loop alone "
                f"{ratio(loop_s, ft_train)} (bar <= 0.6), accuracy "
                f"{100 * (acc - ft_acc):+.2f} points (bar >= -0.5)"
            )
        print()
        print(table(rows, header))
        print("\n".join(bars))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Prediction throughput (documents/s): xleval's bag-of-embeddings vs fastText.

Both models are trained on the same split (as in ``train_vs_fasttext.py``); then each
predicts the test texts, timed over ``--repeats`` calls (median):

* **raw text**: xleval from the raw texts (tokenising, hashing, pooling, linear layer), its
  word table holding the training words only before every call (as fastText's dictionary
  does: test words it never saw are hashed on the fly by both);
* **raw text, words seen**: xleval again, every word already in its table;
* **forward only**: xleval's model on features computed beforehand.

fastText's input is its own: the texts tokenised as it was trained (space-separated). Every
run is a fresh child process; rounds interleave the learners; figures are medians. Run from
the repository root::

    .venv/bin/python benchmarks/predict_vs_fasttext.py
    .venv/bin/python benchmarks/predict_vs_fasttext.py --langs en --repeats 20
"""

from __future__ import annotations

import argparse
import statistics
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
    ratio,
    require_fasttext,
    run_child,
    serve_child,
    table,
    write_fasttext_files,
)

SCRIPT = Path(__file__).resolve()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--langs", default=",".join(DEFAULT_LANGS))
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--buckets", type=int, default=200_000)
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _timed(repeats: int, before: Any, call: Any) -> float:
    """Median seconds of ``call()`` over ``repeats`` calls, ``before()`` untimed each time."""
    seconds = []
    for _ in range(repeats):
        before()
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def fasttext_child(req: dict[str, Any]) -> dict[str, Any]:
    import fasttext

    model = fasttext.train_supervised(
        req["train_path"],
        dim=req["dim"],
        epoch=req["epochs"],
        lr=req["lr"],
        minn=3,
        maxn=5,
        bucket=req["buckets"],
        thread=req["threads"],
        seed=0,
        loss="softmax",
        minCount=1,
        verbose=0,
    )
    lines = Path(req["test_path"]).read_text(encoding="utf-8").splitlines()
    texts = [line.split(" ", 1)[1] if " " in line else "" for line in lines]
    # predict(list) avoids fastText 0.9.3's np.array(copy=False), which numpy 2 rejects.
    seconds = _timed(req["repeats"], lambda: None, lambda: model.predict(texts))
    return {"docs": len(texts), "raw_s": seconds}


def xleval_child(req: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(req["threads"])
    from xleval_plugins.featurize import SubwordTable, tokenize

    from xleval.plugin.manager import get_plugin_manager
    from xleval.train.trainer import build_model, predict_scores, train

    registry = get_plugin_manager().registry
    langs = req["langs"]
    dataset, train_set, test_set = load_splits(registry, langs)
    test_texts = [e.text for e in test_set]
    builder = registry.build(
        "models",
        "bag-of-embeddings",
        {
            "dim": req["dim"],
            "buckets": req["buckets"],
            "max_tokens": req["max_tokens"],
            # the features fastText gets here: its tokens, char 3-5-grams, no word n-grams
            "ngram_range": [3, 5],
            "word_ngrams": 1,
            **FASTTEXT_TOKENS,
        },
    )
    texts = [e.text for e in train_set]
    model = build_model(builder, len(dataset.labels), seed=0)
    train(model, texts, dataset.label_ids(train_set), {"epochs": req["epochs"]}, seed=0)
    featurizer = model.featurizer
    featurizer.cache = None  # no feature cache: every call featurizes its texts
    train_tokens = [
        t for text in texts for t in tokenize(text, req["max_tokens"], **FASTTEXT_TOKENS)
    ]

    def training_words_only() -> None:
        table = SubwordTable(featurizer.buckets, featurizer.minn, featurizer.maxn)
        table.lookup(train_tokens)
        featurizer.table = table

    threads = req["threads"]
    raw = _timed(
        req["repeats"],
        training_words_only,
        lambda: predict_scores(model, test_texts, threads=threads),
    )
    seen = _timed(
        req["repeats"], lambda: None, lambda: predict_scores(model, test_texts, threads=threads)
    )
    features = model.featurize(test_texts)
    forward = _timed(
        req["repeats"],
        lambda: None,
        lambda: predict_scores(model, test_texts, threads=threads, features=features),
    )
    return {"docs": len(test_texts), "raw_s": raw, "seen_s": seen, "forward_s": forward}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        serve_child(args.child, {"fasttext": fasttext_child, "xleval": xleval_child})
        return
    require_fasttext()

    from xleval.plugin.manager import get_plugin_manager

    langs = args.langs.split(",")
    registry = get_plugin_manager().registry
    _, train_set, test_set = load_splits(registry, langs)
    threads = [int(t) for t in args.threads.split(",")]
    print(
        f"ddtp-sections {'+'.join(langs)}: trained on {len(train_set)} texts, predicting "
        f"{len(test_set)} test texts; dim {args.dim}, buckets {args.buckets}, char n-grams "
        f"3-5; median of {args.repeats} calls per run, {args.rounds} interleaved rounds, "
        f"medians; {machine()}",
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
            "buckets": args.buckets,
            "repeats": args.repeats,
        }
        configs = [(t, learner) for t in threads for learner in ("fasttext", "xleval")]

        def run(config: tuple[int, str]) -> dict[str, Any]:
            t, learner = config
            request = {"kind": learner, "threads": t, **common}
            if learner == "fasttext":
                request.update(train_path=str(train_path), test_path=str(test_path))
            else:
                request.update(langs=langs, max_tokens=args.max_tokens)
            return run_child(SCRIPT, request)

        results = interleaved(args.rounds, configs, run, lambda c: f"threads={c[0]} {c[1]}")

    for t in threads:
        ft, xl = results[(t, "fasttext")], results[(t, "xleval")]
        ft_rate = median(r["docs"] / r["raw_s"] for r in ft)
        rows = []
        for label, field in (
            ("raw text (training words known)", "raw_s"),
            ("raw text (every word seen)", "seen_s"),
            ("forward only (features given)", "forward_s"),
        ):
            rate = median(r["docs"] / r[field] for r in xl)
            rows.append(
                [
                    label,
                    f"{ft_rate:,.0f}" if field == "raw_s" else "",
                    f"{rate:,.0f}",
                    ratio(rate, ft_rate),
                ]
            )
        print()
        print(table(rows, [f"threads={t}: documents/s", "fastText", "xleval", "xleval/fastText"]))
        print(f"  bar: raw-text prediction >= 2.0x (issue 20) fastText's documents/s: {rows[0][3]}")


if __name__ == "__main__":
    main()

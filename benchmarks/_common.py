"""Helpers shared by the benchmark scripts: child processes, peak memory, medians, tables.

Every measured run happens in a fresh child process (its own peak RSS, no warm caches from
an earlier run), and the scripts interleave the configurations they compare round by round,
so a noisy machine slows all of them alike; figures are medians over the rounds.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LANGS = ("en", "da", "fr", "it", "de", "sk")


def _status_mb(field: str) -> float:
    """A memory field of /proc/self/status (kB there) in MB; NaN where it is missing."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM) in MB."""
    return _status_mb("VmHWM")


def rss_mb() -> float:
    """This process's current resident memory (VmRSS) in MB."""
    return _status_mb("VmRSS")


def run_child(script: Path, payload: dict[str, Any], timeout: float = 1800) -> dict[str, Any]:
    """Run ``script --child PAYLOAD_FILE`` in a fresh interpreter; return the JSON it writes
    to the file named in ``payload["out"]``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        request = Path(tmp) / "request.json"
        request.write_text(json.dumps({**payload, "out": str(out)}))
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        done = subprocess.run(
            [sys.executable, str(script), "--child", str(request)],
            cwd=ROOT,
            env=env,
            timeout=timeout,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"child failed ({done.returncode}):\n{done.stderr[-4000:]}")
        return json.loads(out.read_text())


def serve_child(request_path: str, children: dict[str, Callable[[dict[str, Any]], Any]]) -> None:
    """The child side of :func:`run_child`: run ``children[request["kind"]]`` on the rest
    of the request and write its JSON result where ``request["out"]`` says."""
    request = json.loads(Path(request_path).read_text())
    kind, out = request.pop("kind"), request.pop("out")
    Path(out).write_text(json.dumps(children[kind](request)))


def require_fasttext() -> None:
    """Exit with how to install fastText when it is missing (a benchmark-only dependency)."""
    try:
        import fasttext  # noqa: F401
    except ImportError:
        sys.exit("fastText is not installed: .venv/bin/pip install fasttext (benchmarks/README.md)")


#: The tokens the speed benchmarks give fastText (xleval's ``words``, lower-cased): its
#: training and test files are written with them (:func:`write_fasttext_files`), and
#: xleval's model takes the same options, so both learn from the same tokens.
FASTTEXT_TOKENS: dict[str, Any] = {"tokenizer": "words", "lowercase": True}


def write_fasttext_files(
    folder: Path, train_set: Sequence[Any], test_set: Sequence[Any], max_tokens: int | None
) -> tuple[Path, Path]:
    """fastText's ``__label__y tokens`` train and test files in ``folder``."""
    from xleval_plugins.featurize import tokenize

    paths = folder / "train.txt", folder / "test.txt"
    for path, examples in zip(paths, (train_set, test_set), strict=True):
        with open(path, "w", encoding="utf-8") as out:
            for e in examples:
                tokens = tokenize(e.text, max_tokens, **FASTTEXT_TOKENS)
                out.write(f"__label__{e.label} {' '.join(tokens)}\n")
    return paths


def load_splits(registry: Any, langs: Sequence[str]) -> tuple[Any, list[Any], list[Any]]:
    """(dataset, train examples, test examples) of ddtp-sections, ``langs`` pooled."""
    dataset = registry.build("datasets", "ddtp-sections", {"languages": list(langs)}).load()
    train_set = [e for lang in langs for e in dataset.select(lang, "train")]
    test_set = [e for lang in langs for e in dataset.select(lang, "test")]
    return dataset, train_set, test_set


def _tree(pid: int) -> list[int]:
    pids = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as children:
                for child in children.read().split():
                    pids += _tree(int(child))
    except OSError:
        pass
    return pids


def _rss_pss_kb(pid: int) -> tuple[int, int]:
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as rollup:
            fields = {}
            for line in rollup:
                name, _, rest = line.partition(":")
                if name in ("Rss", "Pss"):
                    fields[name] = int(rest.split()[0])
        return fields.get("Rss", 0), fields.get("Pss", 0)
    except (OSError, ValueError):
        return 0, 0


class TreeMemorySampler:
    """Samples the summed RSS and PSS of a process and all its descendants.

    RSS counts pages shared between forked workers once per process (an upper bound); PSS
    splits them between the sharers (the memory the run really uses).
    """

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid, self.interval = pid, interval
        self.peak_rss_mb = 0.0
        self.peak_pss_mb = 0.0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = _tree(self.pid)
            rss = pss = 0
            for pid in pids:
                r, p = _rss_pss_kb(pid)
                rss, pss = rss + r, pss + p
            self.peak_rss_mb = max(self.peak_rss_mb, rss / 1024)
            self.peak_pss_mb = max(self.peak_pss_mb, pss / 1024)
            self.peak_processes = max(self.peak_processes, len(pids))
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def median(values: Iterable[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


def interleaved(
    rounds: int, configs: Sequence[Any], run: Callable[[Any], dict[str, Any]], label: Callable
) -> dict[Any, list[dict[str, Any]]]:
    """Run every config once per round, in the same order each round; results per config."""
    results: dict[Any, list[dict[str, Any]]] = {c: [] for c in configs}
    for r in range(rounds):
        for config in configs:
            started = time.perf_counter()
            result = run(config)
            results[config].append(result)
            print(
                f"  round {r + 1}/{rounds} {label(config)}: done in "
                f"{time.perf_counter() - started:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    return results


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def ratio(ours: float, theirs: float) -> str:
    if not theirs or theirs != theirs or ours != ours:
        return "n/a"
    return f"{ours / theirs:.2f}"


def machine() -> str:
    import platform

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return f"{platform.processor() or platform.machine()}, {cores} cores, load avg {load}"

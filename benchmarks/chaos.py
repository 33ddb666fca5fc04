#!/usr/bin/env python3
"""Chaos: kill xleval runs at random, resume them, and compare with an uninterrupted run.

Each round runs a small grid (the synthetic 3-language dataset of the tests, 5 methods, 2
targets, shots 0, 8 and 32, 3 seeds: 60 cells) with ``--jobs 2`` into a fresh directory and,
until it completes, kills it at a random moment: SIGKILL of the whole run (driver and workers, as a
machine crash or ``kill -9`` would), or of one worker process only (as the OOM killer
would), then starts it again on the same directory. At the end of a round its report must
hold every cell, each with metrics identical (bit for bit) to those of an uninterrupted
run of the same spec made at the start, and no run may have printed a traceback. Run from
the repository root::

    .venv/bin/python benchmarks/chaos.py --rounds 12 --kills 120
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

SPEC = """name = "chaos"
dataset = {{ name = "jsonl", options = {{ path = "{data}" }} }}
source = "en"
targets = ["de", "fr"]
shots = [0, 8, 32]
seeds = [1, 2, 3]
metrics = ["accuracy", "nll"]
model = {{ name = "bag-of-embeddings", options = {{ dim = 16, buckets = 20000 }} }}
training = {{ epochs = 40, min_steps = 200 }}
"""


def xleval(*args: str, wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "xleval"), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("XLEVAL_")}
    if wait:
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s child processes (its pool workers), from /proc."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def metrics_by_cell(report: dict) -> dict[tuple, tuple]:
    return {
        (c["method"], c["target"], c["shots"], c["seed"]): (
            c["status"],
            json.dumps(c["metrics"], sort_keys=True),
            json.dumps(c["source_metrics"], sort_keys=True),
        )
        for c in report["cells"]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12, help="at least this many rounds")
    parser.add_argument("--kills", type=int, default=120, help="rounds go on until this many kills")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    from helpers import write_synthetic_dataset
    from test_runner import METHODS  # the five methods, as the tests run them

    work = Path(tempfile.mkdtemp(prefix="xleval-chaos-"))
    data = write_synthetic_dataset(work / "syn.jsonl", groups_per_label=40)
    spec = work / "chaos.toml"
    spec.write_text(SPEC.format(data=data) + METHODS)
    started = time.perf_counter()
    reference = xleval("run", str(spec), "--out", str(work / "reference"), "-q", "--jobs", "2")
    if reference.returncode != 0:
        sys.exit(f"the uninterrupted run failed:\n{reference.stderr}")
    clean_seconds = time.perf_counter() - started
    expected = metrics_by_cell(json.loads((work / "reference" / "report.json").read_text()))

    kills = {"run": 0, "worker": 0}
    per_round = -(-args.kills // args.rounds)
    tracebacks = lost = differing = compared = starts = 0
    rounds = 0
    while rounds < args.rounds or sum(kills.values()) < args.kills:
        round_, rounds = rounds, rounds + 1
        out = work / f"round{round_}"
        killed_here = 0
        while True:
            starts += 1
            process = xleval("run", str(spec), "--out", str(out), "-q", "--jobs", "2", wait=False)
            budget = killed_here < per_round
            # kill once a random number of the missing cells has been stored (a random
            # fraction of a cell later): anywhere from start-up to the report's writing;
            # a worker is killed only while it exists
            worker_mode = rng.random() < 0.4
            done = len(list(out.glob("cells/*.json")))
            wanted = done + rng.randint(0, max(0, len(expected) - done - 1))
            victim = None
            while budget and process.poll() is None:
                if len(list(out.glob("cells/*.json"))) >= wanted:
                    workers = children(process.pid)
                    if not worker_mode or workers:
                        time.sleep(rng.uniform(0.0, 0.4))
                        victim = rng.choice(workers) if worker_mode else process.pid
                        break
                time.sleep(0.01)
            if victim is not None and process.poll() is None:
                killed_here += 1
                if worker_mode:
                    try:
                        os.kill(victim, signal.SIGKILL)  # one worker: the run goes on
                        kills["worker"] += 1
                    except ProcessLookupError:  # it had just finished
                        killed_here -= 1
                    _, stderr = process.communicate()
                else:
                    os.killpg(process.pid, signal.SIGKILL)  # the whole run
                    kills["run"] += 1
                    _, stderr = process.communicate()
                    tracebacks += "Traceback" in stderr
                    continue
            else:
                _, stderr = process.communicate()
            tracebacks += "Traceback" in stderr
            if process.returncode == 0:
                break
        got = metrics_by_cell(json.loads((out / "report.json").read_text()))
        lost += len(set(expected) - set(got))
        for cell, value in expected.items():
            if cell in got:
                compared += 1
                differing += got[cell] != value
        print(
            f"round {round_ + 1}: {starts} starts so far, kills {kills}, "
            f"lost {lost}, differing {differing}, tracebacks {tracebacks}",
            flush=True,
        )

    print(
        f"\n| rounds | starts | kills (whole run / one worker) | cells compared | lost | "
        f"differing | tracebacks |\n|---|---|---|---|---|---|---|\n"
        f"| {rounds} | {starts} | {sum(kills.values())} ({kills['run']} / "
        f"{kills['worker']}) | {compared} | {lost} | {differing} | {tracebacks} |"
    )
    print(f"uninterrupted run: {clean_seconds:.1f} s; working folder {work}")


if __name__ == "__main__":
    main()

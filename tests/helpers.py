"""Small plugin objects for tests: each registers what a test needs, nothing more."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from xleval.api.hookspecs import hookimpl

REPO = Path(__file__).parent.parent

RATE_SCHEMA = {
    "type": "object",
    "properties": {
        "rate": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5},
        "mode": {"enum": ["fast", "exact"], "default": "fast"},
        "ngram_range": {
            "type": "array",
            "items": {"type": "integer", "minimum": 1},
            "minItems": 2,
            "maxItems": 2,
        },
    },
    "additionalProperties": False,
}


def echo_factory(options: dict[str, Any]) -> SimpleNamespace:
    """A component that remembers the options it was built with."""
    return SimpleNamespace(options=options)


class MetricPlugin:
    """Registers one metric under a chosen name."""

    def __init__(self, name: str = "echo", schema: dict | None = RATE_SCHEMA, plugin_name="a"):
        self.metric_name = name
        self.schema = schema
        self.__name__ = plugin_name

    @hookimpl
    def xleval_register_metrics(self, register):
        register(self.metric_name, echo_factory, schema=self.schema, description="echo")


def start(command: list[str], log: Path, env=None, cwd=None) -> subprocess.Popen:
    """A background process (its own session, so ``stop`` kills it and its children)."""
    return subprocess.Popen(
        command,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
        cwd=cwd,
    )


def stop(process: subprocess.Popen) -> None:
    import signal

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def dask_scheduler(folder: Path, env=None) -> tuple[subprocess.Popen, Path]:
    """A ``dask scheduler`` on a free local port, and its scheduler file once written
    (waited for up to 60 s). ``stop`` the process when done."""
    scheduler_file = folder / "scheduler.json"
    command = [
        str(Path(sys.executable).parent / "dask"),
        "scheduler",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--no-dashboard",
        "--scheduler-file",
        str(scheduler_file),
    ]
    process = start(command, folder / "scheduler.log", env=env)
    deadline = time.monotonic() + 60
    while not scheduler_file.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    return process, scheduler_file


def dask_worker(
    scheduler_file: Path,
    name: str,
    log_dir: Path,
    env=None,
    *,
    launcher: list[str] | None = None,
    cwd=None,
) -> subprocess.Popen:
    """A dask worker (one thread, no dashboard) of the scheduler in the file; ``launcher``
    replaces the ``dask worker`` command (e.g. a python started with -S)."""
    command = [
        *(launcher or [str(Path(sys.executable).parent / "dask"), "worker"]),
        "--scheduler-file",
        str(scheduler_file),
        "--nthreads",
        "1",
        "--no-dashboard",
        "--name",
        name,
    ]
    return start(command, log_dir / f"{name}.log", env=env, cwd=cwd)


def xleval_subprocess(args: list[str], *, pythonpath: Path | None = None, **env: str):
    """Run the real ``xleval`` console entry point in a child process."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("XLEVAL_")}
    child_env.update(env)
    if pythonpath is not None:
        child_env["PYTHONPATH"] = str(pythonpath)
    script = Path(sys.executable).parent / "xleval"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "xleval"]
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        env=child_env,
        cwd=REPO,
    )


LABEL_WORDS = {
    "games": ["puzzle", "arcade", "player", "level", "dungeon", "chess"],
    "net": ["server", "proxy", "socket", "router", "packet", "browser"],
    "sound": ["audio", "mixer", "synth", "codec", "speaker", "midi"],
    "science": ["physics", "chemistry", "molecule", "statistics", "astronomy", "genome"],
}
LANG_FORMS = {
    "en": lambda w: w,
    "de": lambda w: w.capitalize() + "en",
    "fr": lambda w: "le" + w + "e",
}
NOISE = ["tool", "data", "simple", "fast", "library", "program", "with", "support", "for"]


def write_synthetic_dataset(
    path: Path, *, groups_per_label: int = 40, langs=("en", "de", "fr"), seed: int = 0
) -> Path:
    """A small parallel JSONL dataset with learnable, partly shared vocabulary per label.

    Translations share their group; splits come from the loader's group hash. Target
    languages write the same concepts with different affixes, so char n-grams carry over
    between languages, as cognates do in real data.
    """
    import json
    import random

    rng = random.Random(seed)
    rows = []
    for label, words in LABEL_WORDS.items():
        for g in range(groups_per_label):
            concepts = rng.choices(words, k=4)
            noise = rng.choices(NOISE, k=3)
            for lang in langs:
                form = LANG_FORMS[lang]
                tokens = [form(w) for w in concepts] + noise
                rng.shuffle(tokens)
                rows.append(
                    {
                        "id": f"{lang}-{label}-{g}",
                        "group": f"{label}-{g}",
                        "lang": lang,
                        "label": label,
                        "text": " ".join(tokens),
                    }
                )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path

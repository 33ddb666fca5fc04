"""Runs an experiment: expand the spec into cells, train shared artifacts once, run the cells
through an executor plugin, store each result as it arrives, and build the report.

Nothing computed is lost: every finished cell is in ``RUN_DIR/cells/`` before the next one
is awaited, so an interrupted run (Ctrl-C or SIGKILL) resumes where it stopped.
"""

from __future__ import annotations

import base64
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from xleval import __version__
from xleval.cache import CellStore, atomic_write_bytes, content_key
from xleval.data import MultilingualDataset
from xleval.errors import XlevalError
from xleval.plugins import XlevalPluginManager, get_plugin_manager
from xleval.spec import ExperimentSpec, MethodSpec

#: Protocols whose models depend on k; the others are skipped where k makes no sense.
SKIP_AT_ZERO = {"target-only", "joint"}


@dataclass(frozen=True)
class Cell:
    """One unit of work: (method, sources, target, shots, seed)."""

    method: str
    protocol: str
    sources: tuple[str, ...]
    target: str
    shots: int | str
    seed: int

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "protocol": self.protocol,
            "sources": list(self.sources),
            "target": self.target,
            "shots": self.shots,
            "seed": self.seed,
        }

    def describe(self) -> str:
        return (
            f"{self.method} {'+'.join(self.sources)}->{self.target} k={self.shots} seed={self.seed}"
        )


def expand_grid(spec: ExperimentSpec) -> list[Cell]:
    """Every cell the spec asks for, minus those that do not apply.

    target-only and joint need k > 0 (at k = 0 joint is the zero-shot model); fusion at
    k = 0 with one source is the zero-shot model too; zero-shot ignores k, so it runs once
    per (target, seed) and is reported in every shots column.
    """
    cells = []
    for method in spec.methods:
        for target in spec.targets:
            for seed in spec.seeds:
                if method.protocol == "zero-shot":
                    cells.append(Cell(method.label, method.protocol, spec.sources, target, 0, seed))
                    continue
                for shots in spec.shots:
                    if shots == 0 and (
                        method.protocol in SKIP_AT_ZERO
                        or (method.protocol == "fusion" and len(spec.sources) == 1)
                    ):
                        continue
                    cells.append(
                        Cell(method.label, method.protocol, spec.sources, target, shots, seed)
                    )
    return cells


def component_versions(pm: XlevalPluginManager, spec: ExperimentSpec) -> dict[str, Any]:
    """Versions of the distributions providing each component a spec uses (for cache keys)."""
    versions = {}
    refs = [("datasets", spec.dataset.name), ("executors", spec.executor.name)]
    refs += [("metrics", m.name) for m in spec.metrics]
    for method in spec.methods:
        refs.append(("models", method.model.name))
        if method.transfer:
            refs.append(("transfer_strategies", method.transfer.name))
        if method.fusion:
            refs.append(("fusion_strategies", method.fusion.name))
    for kind, name in refs:
        component = pm.registry.get(kind, name)
        record = pm.records.get(component.plugin)
        versions[f"{kind}/{name}"] = [component.distribution, record.version if record else None]
    versions.pop(f"executors/{spec.executor.name}")  # where a cell runs never changes it
    return versions


def cell_key(spec: ExperimentSpec, cell: Cell, fingerprint: str, versions: dict[str, Any]) -> str:
    """Hash of everything that determines a cell's result, and nothing else.

    Another method's options, the executor or the list of targets do not enter it, so
    changing them recomputes nothing they do not affect.
    """
    from xleval.rowkernel import row_kernel_available

    method = spec.method(cell.method)
    used = {k: v for k, v in versions.items() if not k.startswith("executors/")}
    return content_key(
        {
            "cell": {**cell.to_json(), "method": None},
            "method": {**method.to_json(), "label": None},
            "metrics": [m.to_json() for m in spec.metrics],
            "dataset": {"name": spec.dataset.name, "fingerprint": fingerprint},
            "xleval": __version__,
            "components": used,
            # the compiled row kernel and the torch step agree only to float rounding
            "row_kernel": row_kernel_available(),
        }
    )


def method_options(method: MethodSpec) -> dict[str, Any]:
    """A MethodSpec in the option layout of :func:`xleval.methods.make_method`."""
    options: dict[str, Any] = {
        "model": method.model.name,
        "model_options": method.model.options,
        "training": method.training,
    }
    if method.transfer is not None:
        options["transfer"] = method.transfer.name
        options["transfer_options"] = method.transfer.options
        if method.finetune is not None:
            options["finetune"] = method.finetune
    if method.fusion is not None:
        options["fusion"] = method.fusion.name
        options["fusion_options"] = method.fusion.options
    return options


# -- running cells (in this process or a worker) ----------------------------------------


@dataclass
class WorkerState:
    """What a process needs to run cells, built once per process and run directory."""

    pm: XlevalPluginManager
    dataset: MultilingualDataset
    methods: dict[str, Any]
    artifacts: Any


_STATES: dict[tuple[str, str], WorkerState] = {}


@dataclass(frozen=True)
class CellTask:
    """A picklable callable running one cell; executors call it in any process.

    Each process builds its plugin manager, dataset and artifact cache once (keyed by run
    directory and spec), and shares trained source models through ``RUN_DIR/artifacts``.
    """

    spec_json: dict[str, Any]
    run_dir: str
    disabled: tuple[str, ...] = ()
    #: Share source models through RUN_DIR/artifacts (one machine); a cluster executor
    #: turns this off and passes them as task arguments instead (see ``for_cluster``).
    share_via_disk: bool = True

    @property
    def token(self) -> tuple[str, str]:
        return (self.run_dir, content_key(self.spec_json))

    def install(
        self, pm: XlevalPluginManager | None = None, dataset: MultilingualDataset | None = None
    ) -> WorkerState:
        """Build this process's state, reusing the caller's plugin manager and dataset.

        The driver installs its own, so in-process plugins and the loaded dataset reach
        cells run locally, and forked workers inherit them; a spawned worker builds its own.
        """
        from xleval.artifacts import DiskArtifactCache
        from xleval.methods import make_method
        from xleval.spec import resolve_spec

        pm = pm or get_plugin_manager(disabled=self.disabled, strict=False)
        spec = resolve_spec(self.spec_json, pm.registry)
        if dataset is None:
            dataset = pm.registry.build("datasets", spec.dataset.name, spec.dataset.options).load()
        methods = {
            m.label: make_method(m.protocol, method_options(m), registry=pm.registry, name=m.label)
            for m in spec.methods
        }
        if self.share_via_disk:
            artifacts = DiskArtifactCache(Path(self.run_dir) / "artifacts")
        else:
            from xleval.artifacts import DEFAULT_MAX_BYTES
            from xleval.methods import ArtifactCache

            # the same memory budget as the disk cache's in-memory part: a model is 51 MB,
            # and a worker that kept 64 of them thrashed (every new table fresh pages)
            artifacts = ArtifactCache(max_items=256, max_bytes=DEFAULT_MAX_BYTES)
        _STATES[self.token] = WorkerState(pm, dataset, methods, artifacts)
        return _STATES[self.token]

    def state(self, dataset: MultilingualDataset | None = None) -> WorkerState:
        return _STATES.get(self.token) or self.install(dataset=dataset)

    def preload(self) -> None:
        """Import what running a cell needs (torch and the trainer: 1.3 s, ~100 MB).

        An executor that forks its workers from this process calls it first, so that the
        workers share one copy instead of each importing its own on its first cell; the
        dask executor calls it while its cluster starts (the statistics need torch later).
        Planning and keying cells never import torch, so a driver pays it only here.
        """
        import xleval.training  # noqa: F401

    # -- what a cluster executor needs to build a task graph ---------------------------

    def for_cluster(self) -> CellTask:
        """The same task for workers that share no filesystem with the driver."""
        return replace(self, share_via_disk=False)

    def portable_dataset(self) -> MultilingualDataset | None:
        """The dataset to ship to workers, or None when each worker can load it by name.

        A dataset read from the user's file is sent (workers may not see the file); a
        bundled one (no ``path`` option) loads on every worker from the installed package.
        """
        spec = self.spec_json["dataset"]
        return self.state().dataset if "path" in spec.get("options", {}) else None

    def loaded_dataset(self) -> MultilingualDataset:
        """This process's dataset, loaded once: workers on the same machine can take the
        driver's copy (a pickle reads in a tenth of the time the bundled file parses in)."""
        return self.state().dataset

    def artifact_jobs(self, cell: Cell) -> list[SourceModelJob]:
        """The source models ``cell`` will ask for: one task each, shared by every cell."""
        method = self.state().methods[cell.method]
        if method.protocol in ("zero-shot", "transfer"):
            train_sets = [[["split", lang] for lang in sorted(cell.sources)]]
        elif method.protocol == "fusion":
            train_sets = [[["split", lang]] for lang in sorted(cell.sources)]
        else:
            return []
        return [SourceModelJob(self, cell.method, cell.sources, ts, cell.seed) for ts in train_sets]

    def failure(self, cell: Cell, exc: BaseException) -> dict[str, Any]:
        """A failed result for ``cell`` when its task could not run at all."""
        message = str(exc) if isinstance(exc, XlevalError) else f"{type(exc).__name__}: {exc}"
        return {"cell": cell.to_json(), "status": "failed", "error": message, "traceback": None}

    def __call__(
        self, cell: Cell, *artifacts: Any, dataset: MultilingualDataset | None = None
    ) -> dict[str, Any]:
        """The cell's result; a failure becomes a result with its error, never an exception.

        ``artifacts`` are trained models a cluster executor computed as separate tasks;
        they go into this process's artifact cache so the cell reuses them.
        """
        from xleval.methods import run_cell

        called = time.perf_counter()
        try:
            state = self.state(dataset)
            for artifact in artifacts:
                state.artifacts.put(artifact.key, artifact)
            result = run_cell(
                state.methods[cell.method],
                state.dataset,
                cell.sources,
                cell.target,
                cell.shots,
                cell.seed,
                registry=state.pm.registry,
                metrics={m["name"]: m["options"] for m in self.spec_json["metrics"]},
                artifacts=state.artifacts,
            )
        except Exception as exc:  # isolate: one plugin's failure must not stop the run
            message = str(exc) if isinstance(exc, XlevalError) else f"{type(exc).__name__}: {exc}"
            return {
                "cell": cell.to_json(),
                "status": "failed",
                "error": message,
                "traceback": traceback.format_exc(),
            }
        return {
            "cell": cell.to_json(),
            "status": "ok",
            "error": None,
            "metrics": result.metrics,
            "source_metrics": result.source_metrics,
            "train_seconds": result.train_seconds,
            "eval_seconds": result.eval_seconds,
            "n_test": result.n_test[cell.target],
            "info": {
                "n_test": result.n_test,
                "n_shots": result.n_shots,
                "shortfall": result.shortfall,
                "training": result.training,
                "transfer": result.transfer,
                "fused_models": result.fused_models,
                "timings": result.timings,  # seconds per phase (benchmarks/grid_scaling.py)
                "task_seconds": time.perf_counter() - called,  # the whole call, in the worker
            },
            "predictions": {
                lang: encode_predictions(p.ids, p.y_true, p.probs)
                for lang, p in result.predictions.items()
            },
        }


@dataclass(frozen=True)
class SourceModelJob:
    """Trains one source model (a whole-split training set, one seed) as a task of its own."""

    task: CellTask
    method: str
    sources: tuple[str, ...]
    train_set: list[list[Any]]
    seed: int

    @property
    def key(self) -> str:
        """Identifies the model: its model and training options, training set and seed."""
        method = next(m for m in self.task.spec_json["methods"] if m["label"] == self.method)
        return content_key(
            {
                "model": method["model"],
                "training": method["training"],
                "train_set": self.train_set,
                "seed": self.seed,
            }
        )

    def __call__(self, dataset: MultilingualDataset | None = None) -> Any:
        from xleval.methods import PhaseTimer, _Cell

        state = self.task.state(dataset)
        # A cell context with no target shots: all it does is train the source model.
        context = _Cell(
            state.methods[self.method],
            state.dataset,
            self.sources,
            self.sources[0],
            0,
            self.seed,
            state.pm.registry,
            state.artifacts,
            PhaseTimer(),
        )
        return context.trained(self.train_set, "source")


def encode_predictions(ids: Iterable[str], y_true: Any, probs: Any) -> dict[str, Any]:
    """Exact, compact predictions: probabilities as base64 float32 (rescoring is bit-exact)."""
    array = probs.detach().to("cpu").contiguous().float().numpy().astype("<f4")
    return {
        "ids": list(ids),
        "true": [int(v) for v in y_true.tolist()],
        "shape": list(array.shape),
        "probs_f32": base64.b64encode(array.tobytes()).decode("ascii"),
    }


def decode_predictions(stored: dict[str, Any]) -> tuple[Any, Any]:
    """(y_true LongTensor, probs FloatTensor) from :func:`encode_predictions`' output."""
    import numpy as np
    import torch

    raw = base64.b64decode(stored["probs_f32"])
    probs = np.frombuffer(raw, dtype="<f4").reshape(stored["shape"]).astype(np.float32)
    return torch.tensor(stored["true"], dtype=torch.int64), torch.from_numpy(probs.copy())


# -- the run ----------------------------------------------------------------------------


@dataclass
class RunOutcome:
    """What a run produced: every cell's result (stored or new) and what happened."""

    results: dict[str, dict[str, Any]]
    keys: dict[Cell, str]
    computed: int = 0
    cached: int = 0
    failed: list[Cell] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    interrupted: bool = False
    wall_seconds: float = 0.0


ProgressCallback = Callable[[Cell, dict[str, Any]], None]


def run_cells(
    spec: ExperimentSpec,
    pm: XlevalPluginManager,
    dataset: MultilingualDataset,
    run_dir: Path,
    *,
    executor: Any,
    disabled: tuple[str, ...] = (),
    fail_fast: bool = False,
    on_result: ProgressCallback | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> RunOutcome:
    """Run every cell not already stored; store each result the moment it arrives."""
    started = time.perf_counter()
    store = CellStore(run_dir)
    versions = component_versions(pm, spec)
    cells = expand_grid(spec)
    keys = {cell: cell_key(spec, cell, dataset.fingerprint, versions) for cell in cells}
    outcome = RunOutcome(results={}, keys=keys)
    todo = []
    for cell in cells:
        stored = store.load(keys[cell])
        if stored is not None:
            outcome.results[keys[cell]] = stored
            outcome.cached += 1
        else:
            todo.append(cell)
    outcome.corrupt = list(store.corrupt)
    if on_start is not None:
        on_start(len(cells), outcome.cached)

    task = CellTask(spec.to_json(), str(run_dir), disabled)
    task.install(pm, dataset)
    results = executor.map(task, order_for_sharing(todo))
    try:
        for result in results:
            cell = Cell(**{**result["cell"], "sources": tuple(result["cell"]["sources"])})
            key = keys[cell]
            outcome.results[key] = result
            if result["status"] == "ok":
                store.save(key, result)  # failures are not cached: a re-run retries them
                outcome.computed += 1
            else:
                outcome.failed.append(cell)
            if on_result is not None:
                on_result(cell, result)
            if fail_fast and result["status"] != "ok":
                break
    except KeyboardInterrupt:
        outcome.interrupted = True
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()
    outcome.wall_seconds = time.perf_counter() - started
    return outcome


def order_for_sharing(cells: list[Cell]) -> list[Cell]:
    """Zero-shot first, seeds varying fastest; then the longest cells first.

    The first cells then train the different seeds' source models in parallel, and every
    later cell finds its source model in the artifact store. After them come the joint
    cells (each trains on a whole source split), then the rest by shots, most first ("all"
    before any number): a cell's time grows with its shots, so a run ends on its shortest
    cells and no worker idles long while another finishes the last one.
    """
    return sorted(
        cells,
        key=lambda c: (
            c.protocol != "zero-shot",
            c.protocol != "joint",
            -(float("inf") if c.shots == "all" else c.shots),
            c.method,
            c.target,
            c.seed,
        ),
    )


def write_predictions(run_dir: Path, outcome: RunOutcome) -> Path:
    """``predictions.jsonl``: one line per (cell, evaluated language) with exact probabilities."""
    import json

    lines = []
    for cell, key in sorted(outcome.keys.items(), key=lambda kv: kv[1]):
        result = outcome.results.get(key)
        if result is None or result["status"] != "ok":
            continue
        for lang, stored in sorted(result["predictions"].items()):
            lines.append(json.dumps({"key": key, **cell.to_json(), "lang": lang, **stored}))
    path = run_dir / "predictions.jsonl"
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))
    return path


def print_failures(outcome: RunOutcome, stream: Any = sys.stderr) -> None:
    for cell in outcome.failed:
        error = outcome.results[outcome.keys[cell]]["error"]
        print(f"failed: {cell.describe()}: {error}", file=stream)

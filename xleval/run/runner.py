"""Runs an experiment: expand the spec into cells, train shared artifacts once, run the cells
through an executor plugin, store each result as it arrives, and build the report.

Nothing computed is lost: every finished cell is in ``RUN_DIR/cells/`` before the next one
is awaited, so an interrupted run (Ctrl-C or SIGKILL) resumes where it stopped.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from xleval.api import predictions as predictions_file
from xleval.api.data import MultilingualDataset
from xleval.api.files import content_key
from xleval.api.workers import worker_label
from xleval.errors import ExecutorStopped, XlevalError
from xleval.experiment.grid import Cell, expand_grid, order_for_sharing
from xleval.experiment.spec import ExperimentSpec
from xleval.plugin.manager import XlevalPluginManager, get_plugin_manager
from xleval.plugin.registry import plugin_code
from xleval.run.store import CellStore


def key_payload(spec: ExperimentSpec, cell: Cell, fingerprint: str) -> dict[str, Any]:
    """What the spec says about a cell's result: its cell, method, metrics and dataset.

    Another method's options, the executor or the list of targets do not enter it, so
    changing them recomputes nothing they do not affect.
    """
    method = spec.method(cell.method)
    return {
        "cell": {**cell.to_json(), "method": None},
        "method": {**method.to_json(), "label": None},
        "metrics": [m.to_json() for m in spec.metrics],
        "dataset": {"name": spec.dataset.name, "fingerprint": fingerprint},
    }


def cell_key(payload: dict[str, Any], environment: dict[str, Any]) -> str:
    """Hash of everything that determines a cell's result, and nothing else: the spec's
    part (:func:`key_payload`) and the code and environment that compute it
    (:func:`xleval.run.provenance.key_environment`: versions, code fingerprints, row kernel)."""
    return content_key({**payload, "environment": environment})


# -- running cells (in this process or a worker) ----------------------------------------


@dataclass
class WorkerState:
    """What a process needs to run cells, built once per process and run directory."""

    pm: XlevalPluginManager
    dataset: MultilingualDataset
    #: method label -> its protocol, built
    protocols: dict[str, Any]
    artifacts: Any
    #: method label -> the key environment of its cells here (recorded in each result)
    environments: dict[str, Any] = field(default_factory=dict)


_STATES: dict[tuple[str, str], WorkerState] = {}
#: runs whose state a process keeps at once (the oldest is dropped; it is rebuilt if needed)
MAX_STATES = 2
#: plugin managers built by ``CellTask.check_worker`` for the ``install`` that follows
_CHECKED: dict[tuple[str, str], XlevalPluginManager] = {}


class WorkerMismatchError(XlevalError):
    """A worker whose code or environment differs from the driver's in what enters the keys."""


@dataclass(frozen=True)
class CellTask:
    """A picklable callable running one cell; executors call it in any process
    (:class:`xleval.api.CellTaskContract` documents what an executor may call).

    It carries the resolved spec: a worker resolves nothing again. Each process builds its
    plugin manager, dataset and artifact cache once (keyed by run directory and spec), and
    shares trained source models through ``RUN_DIR/artifacts``. Cells are not thread-safe
    (they share a per-process cache and set torch's thread count): run them in processes.
    """

    spec: ExperimentSpec
    run_dir: str
    disabled: tuple[str, ...] = ()
    #: Share source models through RUN_DIR/artifacts (one machine); a cluster executor
    #: turns this off and passes them as task arguments instead (see ``for_cluster``).
    share_via_disk: bool = True
    #: The driver's key environment (:func:`xleval.run.provenance.spec_environment`): a worker
    #: whose own differs refuses every cell, so nothing it computes is cached under the
    #: driver's keys.
    environment: dict[str, Any] | None = None

    @property
    def token(self) -> tuple[str, str]:
        return (self.run_dir, content_key(self.spec.to_json()))

    def install(
        self,
        pm: XlevalPluginManager | None = None,
        dataset: MultilingualDataset | None = None,
        environments: dict[str, Any] | None = None,
    ) -> WorkerState:
        """Build this process's state, reusing the caller's plugin manager, dataset and
        method environments (the driver has computed them to key the cells).

        The driver installs its own, so in-process plugins and the loaded dataset reach
        cells run locally, and forked workers inherit them; a spawned worker builds its own.
        """
        from xleval.run.provenance import method_environments
        from xleval.train.artifacts import DEFAULT_MAX_BYTES, ArtifactCache, DiskArtifactCache

        if pm is None:
            pm = _CHECKED.pop(self.token, None)
            if pm is None:
                pm = get_plugin_manager(disabled=self.disabled, strict=False)
                self.check_worker(pm)
        if dataset is None:
            from xleval.experiment.dataset_rules import load_dataset

            dataset = load_dataset(pm.registry, self.spec.dataset.name, self.spec.dataset.options)
        protocols = {
            m.label: pm.registry.build("protocols", m.protocol, m.options)
            for m in self.spec.methods
        }
        if self.share_via_disk:
            artifacts: Any = DiskArtifactCache(Path(self.run_dir) / "artifacts")
        else:
            # the same memory budget as the disk cache's in-memory part: a model is 51 MB,
            # and a worker that kept 64 of them thrashed (every new table fresh pages)
            artifacts = ArtifactCache(max_items=256, max_bytes=DEFAULT_MAX_BYTES)
        if environments is None:
            environments = method_environments(pm, self.spec)
        while len(_STATES) >= MAX_STATES:  # a long-lived worker serving run after run
            _STATES.pop(next(iter(_STATES)))
        _STATES[self.token] = WorkerState(pm, dataset, protocols, artifacts, environments)
        return _STATES[self.token]

    def check_worker(self, pm: XlevalPluginManager | None = None) -> None:
        """Raise WorkerMismatchError if this process would compute the cells differently
        from the driver (versions, code, plugins, row kernel: whatever enters the keys)."""
        from xleval.run.provenance import describe_mismatch, spec_environment

        if self.environment is None:
            return
        if pm is None:  # an executor checking its worker before any cell: keep the manager
            pm = _CHECKED[self.token] = get_plugin_manager(disabled=self.disabled, strict=False)
        differences = describe_mismatch(self.environment, spec_environment(pm, self.spec))
        if differences:
            _CHECKED.pop(self.token, None)
            raise WorkerMismatchError(f"worker {worker_label()}: {'; '.join(differences)}")

    def state(self, dataset: MultilingualDataset | None = None) -> WorkerState:
        return _STATES.get(self.token) or self.install(dataset=dataset)

    def release(self) -> None:
        """Free this run's state in this process (its dataset, trained models, featurized
        splits): an executor calls it on each worker when the run ends, so a long-lived
        worker returns to its baseline memory."""
        import gc

        _STATES.pop(self.token, None)
        _CHECKED.pop(self.token, None)
        gc.collect()
        from xleval.train.trainer import return_memory_to_the_system

        return_memory_to_the_system()

    def preload(self) -> None:
        """Import what running a cell needs (torch and the trainer: 1.3 s, ~100 MB).

        An executor that forks its workers from this process calls it first, so that the
        workers share one copy instead of each importing its own on its first cell; the
        dask executor calls it while its cluster starts (the statistics need torch later).
        Planning and keying cells never import torch, so a driver pays it only here.
        """
        import xleval.train.trainer  # noqa: F401

    # -- what a cluster executor needs to build a task graph ---------------------------

    def for_cluster(self) -> CellTask:
        """The same task for workers that share no filesystem with the driver."""
        return replace(self, share_via_disk=False)

    def portable_dataset(self) -> MultilingualDataset | None:
        """The dataset to ship to workers, or None when each worker can load it by name.

        A dataset read from the user's file is sent (workers may not see the file); a
        bundled one (no ``path`` option) loads on every worker from the installed package.
        """
        return self.state().dataset if "path" in self.spec.dataset.options else None

    def loaded_dataset(self) -> MultilingualDataset:
        """This process's dataset, loaded once: workers on the same machine can take the
        driver's copy (a pickle reads in a tenth of the time the bundled file parses in)."""
        return self.state().dataset

    def artifact_jobs(self, cell: Cell) -> list[SourceModelJob]:
        """The source models ``cell`` will ask for (its protocol's ``source_models``): one
        task each, shared by every cell; none while the task shares them through the run
        directory (workers on this machine: the first cell that needs one trains it)."""
        if self.share_via_disk:
            return []
        method = self.spec.method(cell.method)
        return [
            SourceModelJob(self, cell.method, cell.sources, list(ts), cell.seed)
            for ts in method.source_models_for(cell.target)
        ]

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
        from xleval.train.cell import run_cell

        called = time.perf_counter()
        try:
            state = self.state(dataset)
            for artifact in artifacts:
                state.artifacts.put(artifact.key, artifact)
            result = run_cell(
                self.spec.method(cell.method),
                state.dataset,
                cell.sources,
                cell.target,
                cell.shots,
                cell.seed,
                registry=state.pm.registry,
                metrics={m.name: m.options for m in self.spec.metrics},
                artifacts=state.artifacts,
                protocol=state.protocols[cell.method],
                draw=cell.draw,
            )
        except Exception as exc:  # isolate: one plugin's failure must not stop the run
            return {**self.failure(cell, exc), "traceback": traceback.format_exc()}
        stored = result.stored()
        stored["info"]["task_seconds"] = time.perf_counter() - called  # the whole call
        # what computed it (the driver adds the spec's part of the key, "identity")
        stored["provenance"] = {
            "environment": state.environments[cell.method],
            "executor": self.spec.executor.name,
            "worker": worker_label(),
        }
        return stored


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
        method = self.task.spec.method(self.method)
        return content_key(
            {
                "model": method.model.to_json(),
                "training": method.training,
                "train_set": self.train_set,
                "seed": self.seed,
            }
        )

    def __call__(self, dataset: MultilingualDataset | None = None) -> Any:
        from xleval.train.cell import RunningCell
        from xleval.train.timer import PhaseTimer

        state = self.task.state(dataset)
        # A cell context with no target shots: all it does is train the source model.
        context = RunningCell(
            self.task.spec.method(self.method),
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
    #: why the executor stopped the run early (ExecutorStopped), else None
    stopped: str | None = None
    #: why cells with an earlier result were computed again -> how many
    recomputed: dict[str, int] = field(default_factory=dict)


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
    recompute: Callable[[Cell], bool] | None = None,
    on_result: ProgressCallback | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> RunOutcome:
    """Run every cell not already stored; store each result the moment it arrives.

    ``recompute`` picks cells whose stored results are ignored (``xleval run --recompute``).
    """
    from xleval.run.provenance import method_environments, spec_environment

    started = time.perf_counter()
    store = CellStore(run_dir)
    memo: dict[Any, Any] = {}  # each component's code read once for both environments
    environments = method_environments(pm, spec, memo)
    cells = expand_grid(spec)
    payloads = {cell: key_payload(spec, cell, dataset.fingerprint) for cell in cells}
    keys = {cell: cell_key(payloads[cell], environments[cell.method]) for cell in cells}
    outcome = RunOutcome(results={}, keys=keys)
    todo, missing = [], []
    for cell in cells:
        if recompute is not None and recompute(cell):
            todo.append(cell)
            outcome.recomputed["--recompute"] = outcome.recomputed.get("--recompute", 0) + 1
            continue
        stored = store.load(keys[cell])
        if stored is not None:
            outcome.results[keys[cell]] = stored
            outcome.cached += 1
        else:
            todo.append(cell)
            missing.append(cell)
    outcome.corrupt = list(store.corrupt)
    for reason, count in why_recomputed(store, missing, keys, payloads, environments).items():
        outcome.recomputed[reason] = outcome.recomputed.get(reason, 0) + count
    if on_start is not None:
        on_start(len(cells), outcome.cached)

    task = CellTask(spec, str(run_dir), disabled, environment=spec_environment(pm, spec, memo))
    task.install(pm, dataset, environments)
    executor_component = pm.registry.get("executors", spec.executor.name)
    with plugin_code(executor_component, "map()"):
        results = iter(
            executor.map(task, order_for_sharing(todo, {m.label: m.order for m in spec.methods}))
        )
    done = object()
    try:
        while True:
            with plugin_code(executor_component, "map()"):  # its error stops the run; the
                result: Any = next(results, done)  # cells stored so far are kept for a rerun
            if result is done:
                break
            cell = Cell(**{**result["cell"], "sources": tuple(result["cell"]["sources"])})
            key = keys[cell]
            outcome.results[key] = result
            if result["status"] == "ok":
                provenance = result.setdefault("provenance", {})
                provenance["identity"] = content_key(payloads[cell])
                try:
                    store.save(key, result)  # failures are not cached: a re-run retries them
                except (TypeError, ValueError) as exc:  # a plugin put non-JSON in the result
                    result = outcome.results[key] = task.failure(
                        cell, XlevalError(f"its result is not JSON data: {exc}")
                    )
            if result["status"] == "ok":
                outcome.computed += 1
            else:
                outcome.failed.append(cell)
            if on_result is not None:
                on_result(cell, result)
            if fail_fast and result["status"] != "ok":
                break
    except KeyboardInterrupt:
        outcome.interrupted = True
    except ExecutorStopped as exc:  # e.g. the dask scheduler was lost: keep what finished
        outcome.interrupted = True
        outcome.stopped = str(exc)
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()
    outcome.wall_seconds = time.perf_counter() - started
    return outcome


def why_recomputed(
    store: CellStore,
    cells: list[Cell],
    keys: dict[Cell, str],
    payloads: dict[Cell, dict[str, Any]],
    environments: dict[str, dict[str, Any]],
) -> dict[str, int]:
    """Reason -> how many of ``cells`` (not in the store) have a stored result made by other
    code or another environment, e.g. {"code of plugin 'myplugins' changed": 12}.

    Only stale entries are read, and only when something is to be computed.
    """
    from xleval.run.provenance import describe_changes

    if not cells:
        return {}
    current = set(keys.values())
    earlier: dict[str, dict[str, Any]] = {}
    for key in sorted(store.keys() - current):
        stored = store.load(key, note_corrupt=False)
        provenance = (stored or {}).get("provenance") or {}
        if provenance.get("identity") and isinstance(provenance.get("environment"), dict):
            earlier[provenance["identity"]] = provenance["environment"]
    reasons: dict[str, int] = {}
    for cell in cells:
        before = earlier.get(content_key(payloads[cell]))
        if before is None:
            continue
        words = describe_changes(before, environments[cell.method]) or ["the cache key changed"]
        reason = "; ".join(words)
        reasons[reason] = reasons.get(reason, 0) + 1
    return reasons


def write_predictions(run_dir: Path, outcome: RunOutcome) -> Path:
    """``predictions.jsonl``: one line per (cell, evaluated language) with exact
    probabilities, cells in key order."""
    rows = []
    for cell, key in sorted(outcome.keys.items(), key=lambda kv: kv[1]):
        result = outcome.results.get(key)
        if result is None or result["status"] != "ok":
            continue
        for lang, stored in sorted(result["predictions"].items()):
            rows.append((key, cell.to_json(), lang, stored))
    return predictions_file.write_predictions(run_dir / "predictions.jsonl", rows)


def print_failures(outcome: RunOutcome, stream: Any = sys.stderr) -> None:
    for cell in outcome.failed:
        error = outcome.results[outcome.keys[cell]]["error"]
        print(f"failed: {cell.describe()}: {error}", file=stream)

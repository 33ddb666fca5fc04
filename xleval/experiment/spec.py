"""Experiment specs: read (TOML, JSON, YAML), validate against the schema and every plugin's
option schema, and resolve into frozen records with all defaults filled in.

Every problem is reported at once, each with its JSON path, so a user fixes a spec in one pass.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from xleval.errors import OptionsError, SpecError, XlevalError
from xleval.experiment.resources import load_schema
from xleval.experiment.training_options import TRAINING_SCHEMA
from xleval.plugin.registry import Registry, fill_defaults, plugin_code, schema_errors

#: statistics options that older versions used and this one ignores (nothing is resampled).
RETIRED_STATISTICS = ("bootstrap", "seed")
#: The keys every method may have; a protocol adds its component and trainer-option slots.
METHOD_KEYS = ("label", "protocol", "model", "training", "options", "sources")


@dataclass(frozen=True)
class ComponentRef:
    """A plugin component by name, with its options resolved (validated, defaults filled)."""

    name: str
    options: dict[str, Any]
    #: where the spec names it ('model', 'methods[1].fusion'): for messages, not compared
    at: str = field(default="", compare=False)
    #: its registry kind ('models', 'fusion_strategies', ...)
    kind: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "options": copy.deepcopy(self.options)}


@dataclass(frozen=True)
class MethodSpec:
    """One method: a protocol plus the components and training options it uses, and what the
    protocol says about its cells (resolved once, from the protocol's plugin)."""

    label: str
    protocol: str
    model: ComponentRef
    training: dict[str, Any]
    #: the protocol's component slots -> the component each names (defaults filled in)
    components: dict[str, ComponentRef] = field(default_factory=dict)
    #: the protocol's trainer-option slots the spec sets, merged over ``training``
    trainings: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the protocol's own options
    options: dict[str, Any] = field(default_factory=dict)
    # -- from the protocol (not part of the spec's JSON: its code enters the cell keys) --
    #: the shots columns it runs, in the spec's order
    shots: tuple[int | str, ...] = ()
    #: training sets of the source models its cells share
    source_models: tuple[Any, ...] = ()
    ignores_shots: bool = False
    learns_from_source: bool = True
    baseline: bool = False
    order: int = 2
    # -- specs with pairs --
    #: the spec's method entry this one comes from (``label@source`` rows of sources =
    #: "each"), and that entry's ``sources``; None in a spec without pairs
    group: str | None = None
    sources_mode: str | None = None
    #: per target it runs on: (target, its sources, the shots it runs, its source models);
    #: empty: the spec's sources and targets, and ``shots`` and ``source_models`` above
    source_map: tuple[tuple[str, tuple[str, ...], tuple[int | str, ...], tuple[Any, ...]], ...] = ()

    def training_options(self, slot: str | None = None) -> dict[str, Any]:
        """Trainer options of a slot (``finetune``), else the method's ``training``."""
        return self.trainings.get(slot, self.training) if slot else self.training

    def runs(
        self, targets: Sequence[str], sources: tuple[str, ...]
    ) -> list[tuple[str, tuple[str, ...], tuple[int | str, ...]]]:
        """(target, sources, shots) of each target it runs on: the spec's ``targets`` and
        ``sources`` unless it has a ``source_map`` (a spec with pairs)."""
        if not self.source_map:
            return [(t, sources, self.shots) for t in targets]
        return [(t, s, shots) for t, s, shots, _ in self.source_map]

    def source_models_for(self, target: str) -> tuple[Any, ...]:
        """The training sets of the source models its cells of ``target`` share."""
        for t, _, _, models in self.source_map:
            if t == target:
                return models
        return self.source_models

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "label": self.label,
            "protocol": self.protocol,
            "model": self.model.to_json(),
            "training": copy.deepcopy(self.training),
        }
        out.update({slot: ref.to_json() for slot, ref in self.components.items()})
        out.update({slot: copy.deepcopy(t) for slot, t in self.trainings.items()})
        if self.options:
            out["options"] = copy.deepcopy(self.options)
        if self.sources_mode is not None:
            out["sources"] = self.sources_mode
        return out


@dataclass(frozen=True)
class ExperimentSpec:
    """A validated experiment: everything the runner needs, nothing left to default."""

    name: str
    dataset: ComponentRef
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    shots: tuple[int | str, ...]
    seeds: tuple[int, ...]
    metrics: tuple[ComponentRef, ...]
    main_metric: str
    executor: ComponentRef
    statistics: dict[str, Any]
    methods: tuple[MethodSpec, ...]
    description: str = ""
    #: What a user should know before running (one seed, retired options); not errors.
    warnings: tuple[str, ...] = ()
    #: (source, target) pairs of a spec with pairs (a transfer matrix); () otherwise
    pairs: tuple[tuple[str, str], ...] = ()
    #: with pairs = "all": the languages paired (their order is the tables' order)
    languages: tuple[str, ...] = ()
    #: draws of the k shots per seed (``shot_draws``); () = one draw per seed, by the seed
    shot_draws: tuple[int, ...] = ()

    def draws_at(self, shots: int | str) -> tuple[int | None, ...]:
        """The draws a column of ``shots`` runs per seed: None (the seed draws) unless the
        spec sets ``shot_draws`` and k draws anything (k = 0 and "all" draw nothing)."""
        if not self.shot_draws or shots in (0, "all"):
            return (None,)
        return self.shot_draws

    def method(self, label: str) -> MethodSpec:
        return next(m for m in self.methods if m.label == label)

    def to_json(self) -> dict[str, Any]:
        """The resolved spec, as written into reports (it validates against the schema)."""
        languages: dict[str, Any] = {"source": list(self.sources), "targets": list(self.targets)}
        if self.pairs and self.languages:  # every ordered pair, as written
            languages = {"languages": list(self.languages), "pairs": "all"}
        elif self.pairs:
            languages = {"pairs": [list(p) for p in self.pairs]}
        methods, groups = [], set()
        for m in self.methods:  # a spec with pairs: each entry once, as written
            if m.group is None:
                methods.append(m.to_json())
            elif m.group not in groups:
                groups.add(m.group)
                methods.append({**m.to_json(), "label": m.group})
        return {
            "name": self.name,
            "description": self.description,
            "dataset": self.dataset.to_json(),
            **languages,
            "shots": list(self.shots),
            "seeds": list(self.seeds),
            **({"shot_draws": list(self.shot_draws)} if self.shot_draws else {}),
            "metrics": [m.to_json() for m in self.metrics],
            "main_metric": self.main_metric,
            "executor": self.executor.to_json(),
            "statistics": copy.deepcopy(self.statistics),
            "methods": methods,
        }


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """Parse a spec file by its extension; errors name the file (and line where known)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror})") from None
    suffix = path.suffix.lower()
    if len(text) > MAX_SPEC_CHARS:
        raise SpecError(
            f"{path}: {len(text):,} characters; a spec is at most {MAX_SPEC_CHARS:,} (it names "
            "components and lists languages, shots and seeds: data belongs in a data file)"
        )
    if suffix == ".toml":
        deep = deep_toml_key(text)
        if deep is not None:  # tomllib takes minutes over 50,000-part dotted keys
            raise SpecError(f"{path}:{deep}: a key nested more than {MAX_DEPTH} levels deep")
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            data = _load_yaml(path, text)
        else:
            raise SpecError(f"{path}: unknown spec format '{suffix}' (use .toml, .json or .yaml)")
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: invalid TOML: {exc}") from None
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply to read") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise SpecError(f"{path}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: the spec must be a table/object, not {type(data).__name__}")
    problem = size_problem(data)
    if problem is not None:
        raise SpecError(f"{path}: {problem}")
    return resolve_data_path(data, path.parent)


#: Limits that keep every spec readable in well under a second (tests/test_hardening.py).
MAX_SPEC_CHARS = 200_000
MAX_DEPTH = 32
MAX_INTEGER = 2**63 - 1
#: Above this many cells a spec is refused (a grid this size is a typo, or needs splitting).
MAX_CELLS = 1_000_000
#: Above this many cells, a warning with the count.
WARN_CELLS = 10_000


def deep_toml_key(text: str) -> int | None:
    """The line number of the first TOML key or table header with more than MAX_DEPTH
    dotted parts (quoted parts may hold dots), or None."""
    for number, line in enumerate(text.split("\n"), 1):
        key = line.split("=", 1)[0] if "=" in line else line
        if key.count(".") <= MAX_DEPTH:
            continue
        unquoted = re.sub(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'', "", key)
        if unquoted.count(".") > MAX_DEPTH:
            return number
    return None


def size_problem(data: Any) -> str | None:
    """The first value nested deeper than MAX_DEPTH or an integer beyond 64 bits, by path;
    iterative, so no nesting depth can exhaust the stack."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"at '{where}': nested more than {MAX_DEPTH} levels deep"
        if isinstance(value, bool):
            continue
        if isinstance(value, int) and abs(value) > MAX_INTEGER:
            return f"at '{where}': an integer beyond 64 bits ({str(value)[:20]}...)"
        if isinstance(value, dict):
            for key, item in value.items():
                stack.append((item, f"{where}.{key}" if where else str(key), depth + 1))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                stack.append((item, f"{where}[{i}]", depth + 1))
    return None


def resolve_data_path(spec: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make a relative dataset ``path`` option relative to the spec file's folder.

    Specs travel with their data (``specs/examples/data/``), so the path must not depend on
    where ``xleval`` is started. An absolute path, or one that exists only relative to the
    current directory, is left alone.
    """
    dataset = spec.get("dataset")
    options = dataset.get("options") if isinstance(dataset, dict) else None
    path = options.get("path") if isinstance(options, dict) else None
    if isinstance(path, str) and not Path(path).is_absolute():
        candidate = base / path
        if (candidate.exists() or not Path(path).exists()) and isinstance(options, dict):
            options["path"] = str(candidate.resolve())
    return spec


def _load_yaml(path: Path, text: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise SpecError(
            f"{path}: YAML specs need PyYAML (pip install pyyaml); or use TOML/JSON"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: invalid YAML: {exc}") from None


def component_ref(value: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    if isinstance(value, str):
        return value, {}
    return value["name"], dict(value.get("options", {}))


def load_spec(path: str | Path, registry: Registry) -> ExperimentSpec:
    """Read, validate and resolve a spec file in one step."""
    return resolve_spec(read_spec_file(path), registry, source=str(path))


def resolve_spec(
    raw: Mapping[str, Any], registry: Registry, *, source: str = "spec"
) -> ExperimentSpec:
    """Validate ``raw`` (schema, cross-field rules, plugin options) and resolve it.

    Raises ``SpecError`` listing every problem found, each prefixed by its JSON path.
    """
    problem = size_problem(dict(raw))
    if problem is not None:
        raise SpecError(f"{source}: {problem}")
    schema = load_schema("experiment")
    invalid: list[SpecProblem] = list(schema_errors(schema, dict(raw), root="(spec)"))
    if invalid:  # with the protocols, whose names the registry checks, so all show at once
        raise _spec_error(source, invalid + _protocol_errors(raw.get("methods"), registry))
    spec = fill_defaults(schema, copy.deepcopy(dict(raw)))
    errors: list[SpecProblem] = []
    resolve = _resolver(registry, errors)
    top_model: list[ComponentRef | None] = []  # the top-level model, resolved once

    def method_model(m: dict[str, Any], where: str) -> ComponentRef | None:
        if "model" in m:
            return resolve("models", m["model"], f"{where}.model")
        if not top_model:
            top_model.append(resolve("models", spec["model"], "model"))
        return top_model[0]

    pairs = _resolve_pairs(spec, errors) if "pairs" in spec else ()
    #: with pairs = "all", the languages in the spec's order (the tables' order)
    order = tuple(spec.get("languages") or ()) if spec.get("pairs") == "all" else ()
    if "pairs" in spec:
        sources = order or tuple(dict.fromkeys(s for s, _ in pairs))
        targets = order or tuple(dict.fromkeys(t for _, t in pairs))
    else:
        sources = (spec["source"],) if isinstance(spec["source"], str) else tuple(spec["source"])
        targets = tuple(spec["targets"])
        for i, target in enumerate(targets):
            if target in sources:
                errors.append(f"at 'targets[{i}]': '{target}' is also a source language")
        if "languages" in spec:
            errors.append("at 'languages': it goes with pairs = \"all\" (not source and targets)")

    metrics = [resolve("metrics", m, f"metrics[{i}]") for i, m in enumerate(spec["metrics"])]
    metric_names = [component_ref(m)[0] for m in spec["metrics"]]
    if len(set(metric_names)) != len(metric_names):
        errors.append("at 'metrics': a metric is listed twice")
    if spec["main_metric"] not in metric_names:
        errors.append(
            f"at 'main_metric': '{spec['main_metric']}' is not one of the metrics "
            f"({', '.join(metric_names)})"
        )
    dataset = resolve("datasets", spec["dataset"], "dataset")
    executor = resolve("executors", spec["executor"], "executor")

    top_training = _resolve_training(dict(spec["training"]), "training", errors)
    methods = []
    labels: list[str] = []
    for i, m in enumerate(spec["methods"]):
        where = f"methods[{i}]"
        label = m.get("label", m["protocol"])
        if label in labels:
            errors.append(
                f"at '{where}.label': '{label}' is used by two methods; labels are unique"
            )
        labels.append(label)
        model = method_model(m, where)
        training = (
            _resolve_training(
                {**spec["training"], **m.get("training", {})}, f"{where}.training", errors
            )
            if top_training is not None
            else None  # the top-level training's errors are reported once, at 'training'
        )
        if "sources" in m and "pairs" not in spec:
            errors.append(f"at '{where}.sources': it applies to specs with pairs")
        method = _resolve_method(
            m, label, where, model, training, spec["shots"], sources, registry, errors
        )
        if method is None:
            continue
        if "pairs" not in spec:
            methods.append(method)
            continue
        expanded = _per_pair(
            method, m.get("sources", "each"), pairs, (sources, targets), spec["shots"], registry
        )
        for row in expanded:
            if row.label != label and row.label in labels:
                errors.append(f"at '{where}.label': '{row.label}' is used by two methods")
            labels.append(row.label)
        methods.extend(expanded)

    statistics = spec["statistics"]
    warnings = []
    for m in spec["methods"]:
        explicit = {**spec["training"], **m.get("training", {})}
        if "epochs" in explicit and "min_steps" not in explicit:
            warnings.append(
                f"training.epochs = {explicit['epochs']} is a minimum: min_steps (default "
                f"{TRAINING_SCHEMA['properties']['min_steps']['default']}) adds epochs when a "
                "training set has few batches (each cell records the epochs and steps it "
                "trained in info.training); set min_steps = 0 to train exactly that many "
                "epochs, or set min_steps to say how many steps you want"
            )
            break
    retired = [key for key in RETIRED_STATISTICS if key in statistics]
    for key in retired:
        del statistics[key]
    if retired:
        warnings.append(
            f"statistics.{' and statistics.'.join(retired)}: no longer used (xleval no longer "
            "resamples: its intervals and tests are computed in closed form) and ignored"
        )
    if len(spec["seeds"]) == 1:
        warnings.append(
            "one seed: a single training run says nothing about the next, so the report makes "
            "no significance claims and gives no interval over seeds; use 3 or more seeds"
        )
    if len(spec.get("shot_draws") or ()) == 1:
        warnings.append(
            "shot_draws: one draw per seed draws other examples than the seed's own but "
            "separates nothing; give two or more to split a score's spread into seed and draw"
        )
    if spec.get("shot_draws") and all(k in (0, "all") for k in spec["shots"]):
        warnings.append(
            "shot_draws: no shots column draws examples (only k = 0 and 'all'), so every "
            "seed runs once; the draws apply to k > 0"
        )
    rows = [m.label for m in methods] if pairs else labels  # pairs: the rows the entries run
    if statistics["baseline"] is not None and statistics["baseline"] not in rows:
        errors.append(
            f"at 'statistics.baseline': '{statistics['baseline']}' is not a method label "
            f"({', '.join(rows)})"
        )
    for i, pair in enumerate(statistics["compare"]):
        for j, label in enumerate(pair):
            if label not in rows:
                errors.append(
                    f"at 'statistics.compare[{i}][{j}]': '{label}' is not a method label "
                    f"({', '.join(rows)})"
                )

    draws = len(spec.get("shot_draws") or [1])
    cells = len(spec["seeds"]) * sum(
        sum(1 if k in (0, "all") else draws for k in shots)
        for m in methods
        for _, _, shots in m.runs(targets, sources)
    )
    if cells > MAX_CELLS:
        errors.append(
            f"at 'methods': {cells:,} cells (methods x targets x shots x seeds x draws); at most "
            f"{MAX_CELLS:,}: split the grid into several specs"
        )
    elif cells > WARN_CELLS:
        warnings.append(
            f"{cells:,} cells: a large grid (the quickstart's 280 took 68 s on 2 cores; "
            "`xleval run --dry-run` shows it per method and target)"
        )
    if errors:
        raise _spec_error(source, errors)
    return ExperimentSpec(
        name=spec.get("name") or slug(Path(source).stem),
        description=spec.get("description", ""),
        dataset=dataset,
        sources=sources,
        targets=targets,
        shots=tuple(spec["shots"]),
        seeds=tuple(spec["seeds"]),
        shot_draws=tuple(spec.get("shot_draws") or ()),
        metrics=tuple(metrics),
        main_metric=spec["main_metric"],
        executor=executor,
        statistics=statistics,
        methods=tuple(methods),
        warnings=tuple(warnings),
        pairs=pairs,
        languages=order,
    )


def _resolve_pairs(spec: dict[str, Any], errors: list[SpecProblem]) -> tuple[tuple[str, str], ...]:
    """A spec's (source, target) pairs: every ordered pair of ``languages`` for "all"."""
    if spec["pairs"] == "all":
        languages = spec.get("languages")
        if not languages:
            errors.append("at 'pairs': \"all\" needs 'languages', the languages to pair")
            return ()
        return tuple((s, t) for t in languages for s in languages if s != t)
    if "languages" in spec:
        errors.append("at 'languages': it goes with pairs = \"all\"; the pairs list names them")
    out = []
    for i, (source, target) in enumerate(spec["pairs"]):
        if source == target:
            errors.append(f"at 'pairs[{i}]': '{source}' is both source and target")
        else:
            out.append((source, target))
    return tuple(out)


def _protocol_runs(
    protocol: Any, shots: Sequence[int | str], sources: tuple[str, ...]
) -> tuple[tuple[int | str, ...], tuple[Any, ...]]:
    """What a protocol says of its cells with these sources: the shots it runs (k = 0 only
    if it ignores k) and the training sets of the source models they share."""
    ignores = getattr(protocol, "ignores_shots", False)
    runs = tuple(k for k in ((0,) if ignores else shots) if protocol.runs_at(k, sources))
    return runs, tuple(protocol.source_models(sources))


def _per_pair(
    method: MethodSpec,
    mode: str,
    pairs: tuple[tuple[str, str], ...],
    order: tuple[tuple[str, ...], tuple[str, ...]],
    shots: Sequence[int | str],
    registry: Registry,
) -> list[MethodSpec]:
    """A method of a spec with pairs: one row per source language (sources = "each": label
    ``label@source``, each target it is paired with), or one with every source of each
    target (sources = "all"). A protocol that does not learn from the sources runs once per
    target whatever the mode."""
    protocol = registry.build("protocols", method.protocol, method.options)
    sources, targets = order

    def entry(target: str, sources: tuple[str, ...]) -> tuple[Any, ...]:
        return (target, sources, *_protocol_runs(protocol, shots, sources))

    of_target = {t: tuple(s for s in sources if (s, t) in pairs) for t in targets}
    if mode == "all" or not method.learns_from_source:
        source_map = tuple(entry(t, of_target[t]) for t in targets)
        return [replace(method, group=method.label, sources_mode=mode, source_map=source_map)]
    rows = []
    for source in sources:
        source_map = tuple(entry(t, (source,)) for t in targets if source in of_target[t])
        rows.append(
            replace(
                method,
                label=f"{method.label}@{source}",
                group=method.label,
                sources_mode=mode,
                source_map=source_map,
            )
        )
    return rows


def _protocol_errors(methods: Any, registry: Registry) -> list[SpecProblem]:
    """'unknown protocol' errors of a spec's methods (with "did you mean")."""
    errors: list[SpecProblem] = []
    for i, m in enumerate(methods if isinstance(methods, list) else []):
        name = m.get("protocol") if isinstance(m, dict) else None
        if isinstance(name, str):
            try:
                registry.get("protocols", name)
            except XlevalError as exc:
                errors.append(f"at 'methods[{i}].protocol': {exc}")
    return errors


def _resolver(registry: Registry, errors: list[SpecProblem]) -> Any:
    """``resolve(kind, value, where)``: a spec's component, options checked and defaults
    filled (None, with the problem in ``errors``, if it cannot be used)."""

    def resolve(kind: str, value: Any, where: str) -> ComponentRef | None:
        name, options = component_ref(value)
        try:
            resolved = registry.get(kind, name).resolve_options(options)
            return ComponentRef(name, resolved, where, kind)
        except XlevalError as exc:
            errors.append(nested_error(where, exc, options_at=f"{where}.options"))
            return None

    return resolve


def resolve_method(
    entry: Mapping[str, Any],
    registry: Registry,
    *,
    sources: tuple[str, ...] = ("en",),
    shots: tuple[int | str, ...] = (0,),
) -> MethodSpec:
    """One ``[[methods]]`` entry of a spec (its own ``model`` and ``training``, else the
    spec's defaults), resolved as :func:`resolve_spec` resolves it: for running a cell
    outside an experiment. Raises SpecError listing every problem."""
    schema = load_schema("experiment")
    m = dict(entry)
    method_schema = {"$defs": schema["$defs"], **schema["$defs"]["method"]}
    errors: list[SpecProblem] = list(schema_errors(method_schema, m, root="method"))
    if errors:
        raise _spec_error("method", errors)
    resolve = _resolver(registry, errors)
    defaults = schema["properties"]
    model = resolve("models", m.get("model", defaults["model"]["default"]), "method.model")
    training = _resolve_training(dict(m.get("training", {})), "method.training", errors)
    label = m.get("label", m["protocol"])
    method = _resolve_method(
        m, label, "method", model, training, list(shots), sources, registry, errors
    )
    if errors or method is None:
        raise _spec_error("method", errors)
    return method


def _resolve_method(
    m: dict[str, Any],
    label: str,
    where: str,
    model: ComponentRef | None,
    training: dict[str, Any] | None,
    shots: Sequence[int | str],
    sources: tuple[str, ...],
    registry: Registry,
    errors: list[SpecProblem],
) -> MethodSpec | None:
    """One method entry against its protocol: the protocol's options, the components and
    trainer options its slots name, and what it says about its cells."""
    try:
        component = registry.get("protocols", m["protocol"])
        options = component.resolve_options(m.get("options", {}))
    except XlevalError as exc:
        at = f"{where}.options" if isinstance(exc, OptionsError) else f"{where}.protocol"
        errors.append(nested_error(at, exc, options_at=f"{where}.options"))
        return None
    try:
        protocol = component.build(options)
        slots: dict[str, Any] = dict(getattr(protocol, "components", {}) or {})
        training_slots = list(getattr(protocol, "trainings", {}) or {})
        runs, source_models = _protocol_runs(protocol, shots, sources)
    except XlevalError as exc:
        errors.append(f"at '{where}.protocol': {exc}")
        return None
    except Exception as exc:
        errors.append(
            f"at '{where}.protocol': {component.label} of plugin {component.provider} "
            f"failed: {type(exc).__name__}: {exc}"
        )
        return None
    allowed = set(METHOD_KEYS) | set(slots) | set(training_slots)
    for key in m:
        if key not in allowed:
            own = sorted(set(slots) | set(training_slots))
            users = [
                c.name
                for c in registry.components("protocols")
                if key in (getattr(c.factory, "components", None) or {})
                or key in (getattr(c.factory, "trainings", None) or {})
            ]
            errors.append(
                f"at '{where}.{key}': protocol '{m['protocol']}' takes no '{key}'"
                + (f" (its own keys: {', '.join(own)})" if own else "")
                + (
                    f"; {' and '.join(repr(u) for u in users)} "
                    f"{'takes' if len(users) == 1 else 'take'} one"
                    if users
                    else ""
                )
            )
    components = {}
    for slot, declared in slots.items():
        value = m.get(slot, declared.default)
        component_schema = load_schema("experiment")["$defs"]["component"]
        problems = schema_errors(component_schema, value, root=f"{where}.{slot}")
        if problems:
            errors.extend(problems)
            continue
        ref = _resolver(registry, errors)(declared.kind, value, f"{where}.{slot}")
        if ref is not None:
            components[slot] = ref
    trainings = {}
    for slot in training_slots:
        if slot not in m:
            continue
        if not isinstance(m[slot], dict):
            errors.append(f"at '{where}.{slot}': trainer options are a table, not {m[slot]!r}")
            continue
        resolved = _resolve_training({**(training or {}), **m[slot]}, f"{where}.{slot}", errors)
        if resolved is not None:
            trainings[slot] = resolved
    if model is None or training is None or len(components) != len(slots):
        return None
    return MethodSpec(
        label,
        m["protocol"],
        model,
        training,
        components=components,
        trainings=trainings,
        options=options,
        shots=runs,
        source_models=source_models,
        ignores_shots=bool(getattr(protocol, "ignores_shots", False)),
        learns_from_source=bool(getattr(protocol, "learns_from_source", True)),
        baseline=bool(getattr(protocol, "baseline", False)),
        order=int(getattr(protocol, "order", 2)),
    )


def slug(text: str) -> str:
    """``text`` as a run-directory name the schema accepts (a spec file's stem, say)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-_")[:100]
    return cleaned or "experiment"


def check_components(spec: ExperimentSpec, registry: Registry, source: str = "spec") -> None:
    """Build every component the spec names, once each with its options (factories only:
    no data is loaded, nothing is trained), so a check inside a factory fails now, not
    after hours of training. Raises SpecError listing each failure at its spec path."""
    refs: list[tuple[str, ComponentRef | None]] = [("datasets", spec.dataset)]
    refs += [("metrics", m) for m in spec.metrics]
    for method in spec.methods:
        refs += [("models", method.model)]
        refs += [(ref.kind, ref) for ref in method.components.values()]
    errors: list[SpecProblem] = []
    built: set[str] = set()
    for kind, ref in refs:
        if ref is None:
            continue
        once = json.dumps([kind, ref.name, ref.options], sort_keys=True, default=str)
        if once in built:
            continue
        built.add(once)
        try:
            registry.build(kind, ref.name, ref.options)
        except XlevalError as exc:
            errors.append(nested_error(ref.at or kind, exc, options_at=f"{ref.at}.options"))
    if not errors:
        errors += _check_models(spec, registry)
    if errors:
        raise _spec_error(source, errors)


def _check_models(spec: ExperimentSpec, registry: Registry) -> list[SpecProblem]:
    """A protocol's optional ``check_model(builder)``: what it needs of the method's model
    (e.g. ``merge``: parameter shapes that do not depend on the training texts)."""
    errors: list[SpecProblem] = []
    checked: set[str] = set()
    for method in spec.methods:
        once = json.dumps(
            [method.protocol, method.options, method.model.name, method.model.options],
            sort_keys=True,
            default=str,
        )
        if once in checked:  # the rows of one entry of a spec with pairs: checked once
            continue
        checked.add(once)
        protocol = registry.build("protocols", method.protocol, method.options)
        check = getattr(protocol, "check_model", None)
        if not callable(check):
            continue
        component = registry.get("protocols", method.protocol)
        try:
            with plugin_code(component, "check_model()"):
                check(registry.build("models", method.model.name, method.model.options))
        except XlevalError as exc:
            errors.append(f"at '{method.model.at or 'model'}' (method '{method.label}'): {exc}")
    return errors


def _resolve_training(
    options: dict[str, Any], where: str, errors: list[SpecProblem]
) -> dict[str, Any] | None:
    from xleval.experiment.training_options import resolve_training_options

    try:
        return resolve_training_options(options)
    except OptionsError as exc:
        errors.append(nested_error(where, exc, options_at=where))
        return None


#: One entry of a spec's error list: a message, or (heading, [problems]) for a component
#: whose options break its schema in several ways.
SpecProblem = str | tuple[str, list[str]]


def nested_error(where: str, exc: Exception, options_at: str) -> SpecProblem:
    """A component's error as a spec problem: its option problems, if it lists them, go
    under a heading, each at its real path in the spec (``options_at`` + its own path)."""
    problems = getattr(exc, "problems", None)
    if not problems:
        return f"at '{where}': {exc}"
    heading = str(exc).split(":\n", 1)[0]
    return (
        f"at '{where}': {heading}:",
        [_rebase(problem, options_at) for problem in problems],
    )


def _rebase(problem: str, base: str) -> str:
    """'at 'x.y': ...' (a path inside the options) -> 'at 'BASE.x.y': ...'; the options'
    root, '(options)', becomes BASE."""
    if problem.startswith("at '(options)'"):
        return f"at '{base}'" + problem[len("at '(options)'") :]
    if not problem.startswith("at '"):
        return problem
    rest = problem[len("at '") :]
    return f"at '{base}{'' if rest.startswith('[') else '.'}{rest}"


def _spec_error(source: str, errors: list[SpecProblem]) -> SpecError:
    """Every problem as one bullet (nested ones indented under their component's heading),
    counted as they are shown."""
    lines = []
    count = 0
    for error in errors:
        if isinstance(error, tuple):
            heading, problems = error
            lines.append(f"  {heading}")
            lines.extend(f"    - {p}" for p in problems)
            count += len(problems)
        else:
            lines.append(f"  - {error}")
            count += 1
    words = f"{count} error{'s' if count != 1 else ''}"
    return SpecError(f"{source}: {words}:\n" + "\n".join(lines))

"""What computed a cell: code fingerprints and the environment, for cache keys and checks.

A cached result is valid only for the code and environment that made it. Distribution
versions alone do not say that (an editable install, or xleval itself between releases,
changes without a new version), so each component also carries a fingerprint of its code:
the hash of every module file its factory can import, found by reading the import
statements (``import``, ``from ... import``, ``importlib.import_module("literal")``,
lazy imports inside functions too) without running anything. A component's own
fingerprint covers the modules of its top-level package; the xleval modules it reaches
are added to xleval's core fingerprint with those that run every cell (``xleval.run.runner``
and what it imports). Editing a plugin's model then recomputes the cells of the methods
that use that model, and nothing else; editing xleval's statistics recomputes nothing.

Torch-free and cheap: files are hashed once per process (re-hashed when their size or
mtime changes), so a run's driver pays a few milliseconds.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import platform
import sys
from collections.abc import Iterable
from importlib import metadata
from typing import Any

from xleval import __version__
from xleval.errors import PluginLoadError, UnknownComponentError
from xleval.experiment.spec import ExperimentSpec
from xleval.plugin.registry import KIND_LABELS

#: xleval's modules that run every cell, whatever its components (their imports included).
CORE_ROOTS = ("xleval.run.runner", "xleval.train.cell", "xleval.train.trainer")

#: Third-party distributions whose versions enter every cell's key (they compute it).
KEY_DISTRIBUTIONS = ("torch", "numpy")

# -- code fingerprints --------------------------------------------------------------------


@functools.cache
def module_origin(name: str) -> str | None:
    """The file defining module ``name``, or None if it is no module (or has no file).

    Found on disk from the top-level package's location, importing nothing (finding
    ``a.b`` with importlib would run ``a``'s code, and ``xleval.train.trainer`` imports torch).
    """
    top, *rest = name.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError, AttributeError):
        return None
    if spec is None:
        return None
    if not rest:
        return spec.origin if spec.origin and os.path.isfile(spec.origin) else None
    locations = list(spec.submodule_search_locations or [])
    for depth, part in enumerate(rest, start=1):
        last = depth == len(rest)
        origin, below = None, None
        for directory in locations:
            package = os.path.join(directory, part)
            candidates = [os.path.join(package, "__init__.py")]
            if last:
                candidates += [os.path.join(directory, part + s) for s in _MODULE_SUFFIXES]
            origin = next((c for c in candidates if os.path.isfile(c)), None)
            if origin is not None:
                below = [package] if origin.endswith("__init__.py") else None
                break
            if os.path.isdir(package):  # a namespace package
                below = [package]
                break
        if last:
            return origin
        if below is None:
            return None
        locations = below
    return None


_MODULE_SUFFIXES = (".py", *importlib.machinery.EXTENSION_SUFFIXES)


def _stat_key(path: str) -> tuple[str, int, int]:
    stat = os.stat(path)
    return (path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4096)
def _file_facts(stat_key: tuple[str, int, int]) -> tuple[str, tuple[tuple[str, int, str], ...]]:
    """(sha256 of the file, its imports as (module, level, names) triples) for one version."""
    path = stat_key[0]
    with open(path, "rb") as handle:
        data = handle.read()
    digest = hashlib.sha256(data).hexdigest()
    if not path.endswith(".py"):
        return digest, ()
    try:
        tree = ast.parse(data, filename=path)
    except (SyntaxError, ValueError):
        return digest, ()
    found: list[tuple[str, int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, 0, "") for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names = ",".join(alias.name for alias in node.names if alias.name != "*")
            found.append((node.module or "", node.level, names))
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (
                    isinstance(node.func, ast.Name)
                    and node.func.id in ("import_module", "__import__")
                )
            )
        ):
            found.append((node.args[0].value, 0, ""))
    return digest, tuple(found)


def _file_facts_of(path: str) -> tuple[str, tuple[tuple[str, int, str], ...]]:
    return _file_facts(_stat_key(path))


def _resolve(name: str, path: str, module: str, level: int) -> str:
    """The absolute name of ``module`` as imported (``level`` dots) by ``name`` in ``path``."""
    if not level:
        return module
    is_package = os.path.basename(path).startswith("__init__.")
    parts = (name if is_package else name.rpartition(".")[0]).split(".")
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join([*parts, module] if module else parts)


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def module_closure(roots: Iterable[str], follow: Iterable[str]) -> dict[str, str]:
    """Every module reachable from ``roots`` by imports, within the top-level packages
    ``follow``: module name -> file path.

    A package whose ``__init__`` runs only because a submodule of it is imported is hashed
    but its own imports are not followed: ``from . import scoring`` reaches ``scoring``,
    not every module the package's ``__init__`` registers. Importing a name the package
    itself defines (``from pkg import helper``) follows ``pkg``.
    """
    follow = set(follow)

    def inside(module: str) -> bool:
        return module.partition(".")[0] in follow

    followed: dict[str, str] = {}
    hashed: dict[str, str] = {}
    pending = list(roots)
    for root in roots:
        pending_parents = [p for p in _parents(root) if inside(p)]
        for parent in pending_parents:
            origin = module_origin(parent)
            if origin is not None:
                hashed[parent] = origin
    while pending:
        name = pending.pop()
        if name in followed or not inside(name):
            continue
        path = module_origin(name)
        if path is None:
            continue
        followed[name] = path
        for module, level, names in _file_facts_of(path)[1]:
            base = _resolve(name, path, module, level)
            if not base or not inside(base):
                continue
            for parent in _parents(base):
                origin = module_origin(parent)
                if origin is not None:
                    hashed.setdefault(parent, origin)
            subs = [f"{base}.{n}" for n in names.split(",") if n]
            modules = [m for m in subs if module_origin(m) is not None]
            pending.extend(modules)
            if len(modules) < len(subs) or not subs:  # a name defined in base, or a plain import
                pending.append(base)
            else:
                origin = module_origin(base)
                if origin is not None:
                    hashed.setdefault(base, origin)
    return {**hashed, **followed}


def fingerprint(modules: dict[str, str]) -> str:
    """One hash over the modules' names and file contents."""
    digest = hashlib.sha256()
    for name in sorted(modules):
        digest.update(f"{name}\0{_file_facts_of(modules[name])[0]}\n".encode())
    return digest.hexdigest()[:16]


def _defining_modules(component: Any, plugin_module: str | None) -> list[str]:
    """The module that defines a component's factory (else the plugin module that registered
    it): the root of the code that builds and runs it."""
    factory = component.factory
    found = [
        candidate
        for candidate in (
            getattr(factory, "__module__", None),
            getattr(getattr(factory, "func", None), "__module__", None),  # functools.partial
        )
        if isinstance(candidate, str)
    ]
    if not found and type(factory).__module__ not in ("builtins", "functools"):
        found.append(type(factory).__module__)  # a callable instance
    return list(dict.fromkeys(found)) or ([plugin_module] if plugin_module else [])


@functools.cache
def _core_modules() -> tuple[tuple[str, str], ...]:
    return tuple(sorted(module_closure(CORE_ROOTS, ["xleval"]).items()))


# -- the environment that enters keys ------------------------------------------------------


def _distribution_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def _platform_facts() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        **{name: _distribution_version(name) for name in KEY_DISTRIBUTIONS},
    }


def component_code(pm: Any, kind: str, name: str) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """A component's identity ({plugin, distribution, version, code}) and the xleval
    modules its code reaches (they join the core fingerprint); None if it is unavailable."""
    try:
        component = pm.registry.get(kind, name)
    except (UnknownComponentError, PluginLoadError):
        return None, {}
    record = pm.records.get(component.plugin)
    plugin_module = record.module.partition(":")[0] if record else None
    roots = _defining_modules(component, plugin_module)
    own = {r.partition(".")[0] for r in roots} - {"xleval"}
    modules = module_closure(roots, own | {"xleval"})
    plugin_modules = {n: p for n, p in modules.items() if n.partition(".")[0] != "xleval"}
    core = {n: p for n, p in modules.items() if n.partition(".")[0] == "xleval"}
    return (
        {
            "plugin": component.plugin,
            "distribution": component.distribution,
            "version": record.version if record else None,
            "code": fingerprint(plugin_modules),
        },
        core,
    )


def component_refs(spec: ExperimentSpec, method: str | None = None) -> list[tuple[str, str]]:
    """(kind, name) of the components that compute the cells of the method labelled
    ``method`` (of every method: None): dataset, metrics, protocol, model and the
    components the protocol's slots name."""
    refs = [("datasets", spec.dataset.name)]
    refs += [("metrics", m.name) for m in spec.metrics]
    for m in spec.methods:
        if method is not None and m.label != method:
            continue
        refs += [("protocols", m.protocol), ("models", m.model.name)]
        refs += [(ref.kind, ref.name) for ref in m.components.values()]
    return list(dict.fromkeys(refs))


def key_environment(
    pm: Any, refs: Iterable[tuple[str, str]], memo: dict[Any, Any] | None = None
) -> dict[str, Any]:
    """Everything outside the spec that determines a result computed with these components:
    python, machine, torch and numpy versions, the row kernel, xleval's version and core
    code, and each component's plugin, distribution, version and code fingerprint."""
    from xleval.train.rowkernel import row_kernel_available

    components: dict[str, Any] = {}
    core = dict(_core_modules())
    memo = {} if memo is None else memo  # component -> its code, for several calls
    for kind, name in refs:
        if (kind, name) not in memo:
            memo[kind, name] = component_code(pm, kind, name)
        identity, reached = memo[kind, name]
        components[f"{kind}/{name}"] = identity
        core.update(reached)
    return {
        **_platform_facts(),
        "row_kernel": row_kernel_available(),
        "xleval": {"version": __version__, "code": fingerprint(core)},
        "components": components,
    }


def warm_fingerprints(pm: Any) -> None:
    """Read every installed component's code once (see :mod:`xleval.run.preload`)."""
    from xleval.api.hookspecs import KIND_HOOKS

    refs = [(kind, c.name) for kind in KIND_HOOKS for c in pm.registry.components(kind)]
    key_environment(pm, refs)


def spec_environment(
    pm: Any, spec: ExperimentSpec, memo: dict[Any, Any] | None = None
) -> dict[str, Any]:
    """The key environment of a whole spec (what a worker must match to compute its cells).
    ``memo``: shared with :func:`method_environments` so each component is read once."""
    return key_environment(pm, component_refs(spec), memo)


def method_environments(
    pm: Any, spec: ExperimentSpec, memo: dict[Any, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Method label -> the key environment of that method's cells."""
    memo = {} if memo is None else memo
    out = {}
    for m in spec.methods:
        out[m.label] = key_environment(pm, component_refs(spec, m.label), memo)
        identity = model_identity(pm, m.model.name, m.model.options, memo)
        if identity is not None:
            out[m.label]["model"] = identity
    return out


def model_identity(
    pm: Any, name: str, options: dict[str, Any], memo: dict[Any, Any] | None = None
) -> Any:
    """What the model builder says decides its results beyond the spec (its optional
    ``identity()``, e.g. weight file hashes), or None. A builder that raises here raises
    before any cell runs (e.g. a model directory that is gone)."""
    from xleval.plugin.registry import plugin_code

    key = ("model identity", name, json.dumps(options, sort_keys=True, default=str))
    memo = {} if memo is None else memo
    if key not in memo:
        try:
            component = pm.registry.get("models", name)
        except (UnknownComponentError, PluginLoadError):
            return None
        builder = component.build(options)
        identity = getattr(builder, "identity", None)
        with plugin_code(component, "identity()"):
            memo[key] = identity() if callable(identity) else None
    return memo[key]


# -- differences, in words ----------------------------------------------------------------

_LABELS = {
    "python": "python",
    "machine": "machine",
    "torch": "torch",
    "numpy": "numpy",
    "row_kernel": "row kernel",
}


def _word(value: Any) -> str:
    if value is None:
        return "missing"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def differences(before: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(what, before, now) for each part of two key environments that differs."""
    out: list[tuple[str, Any, Any]] = []
    for field, label in _LABELS.items():
        if before.get(field) != now.get(field):
            out.append((label, before.get(field), now.get(field)))
    old_core, new_core = before.get("xleval") or {}, now.get("xleval") or {}
    if old_core.get("version") != new_core.get("version"):
        out.append(("xleval", old_core.get("version"), new_core.get("version")))
    elif old_core.get("code") != new_core.get("code"):
        out.append(("code of xleval", None, None))
    old, new = before.get("components") or {}, now.get("components") or {}
    plugins_done: set[tuple[str, str]] = set()
    for ref in sorted(set(old) | set(new)):
        a, b = old.get(ref), new.get(ref)
        kind, _, name = ref.partition("/")
        kind_name = f"{KIND_LABELS.get(kind, kind)} '{name}'"
        if a is None or b is None:
            present = a if a is not None else b
            assert present is not None
            who = f"plugin '{present['plugin']}'" + (
                f" ({present['distribution']})" if present.get("distribution") else ""
            )
            out.append(
                (f"{kind_name} of {who}", "present" if a else None, "present" if b else None)
            )
            continue
        plugin = b["plugin"]
        for field in ("distribution", "version", "code"):
            if a.get(field) == b.get(field) or (plugin, field) in plugins_done:
                continue
            plugins_done.add((plugin, field))
            if field == "code":
                out.append((f"code of plugin '{plugin}'", None, None))
            else:
                out.append((f"plugin '{plugin}' {field}", a.get(field), b.get(field)))
    return out


def describe_changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Why a cached result no longer applies, e.g. "code of plugin 'myplugins' changed"."""
    words = []
    for what, old, new in differences(before, now):
        if old is None and new is None:
            words.append(f"{what} changed")
        else:
            words.append(f"{what} {_word(old)} -> {_word(new)}")
    return words


def describe_mismatch(driver: dict[str, Any], worker: dict[str, Any]) -> list[str]:
    """How a worker differs from the driver, e.g. "torch 2.12.0 ≠ 2.13.0 on the driver"."""
    words = []
    for what, mine, theirs in differences(driver, worker):
        if mine is None and theirs is None:
            words.append(f"{what} differs from the driver's")
        elif theirs is None or theirs == "missing":
            words.append(f"{what} missing")
        elif mine is None:
            words.append(f"{what} present only on the worker")
        else:
            words.append(f"{what} {_word(theirs)} ≠ {_word(mine)} on the driver")
    return words

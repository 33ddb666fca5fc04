"""The component registry: named factories by kind, with option schemas checked before building."""

from __future__ import annotations

import contextlib
import copy
import difflib
import inspect
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for

from xleval.api.files import canonical_json
from xleval.api.hookspecs import KIND_HOOKS
from xleval.errors import (
    DuplicateComponentError,
    OptionsError,
    PluginCodeError,
    PluginError,
    PluginLoadError,
    UnknownComponentError,
    XlevalError,
)

#: How each kind is named in messages ("unknown metric 'x'").
KIND_LABELS: dict[str, str] = {
    "models": "model",
    "transfer_strategies": "transfer strategy",
    "fusion_strategies": "fusion strategy",
    "metrics": "metric",
    "datasets": "dataset",
    "executors": "executor",
    "reporters": "reporter",
    "protocols": "protocol",
}
assert set(KIND_LABELS) == set(KIND_HOOKS), "every hook kind needs a label"

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")


@dataclass(frozen=True)
class Component:
    """One registered component: what a plugin passed to ``register``, plus who passed it."""

    kind: str
    name: str
    factory: Callable[..., Any]
    schema: dict[str, Any] | None
    description: str
    plugin: str
    distribution: str | None = None
    #: the module of the hook function that registered it
    hook_module: str | None = None

    @property
    def label(self) -> str:
        return f"{KIND_LABELS[self.kind]} '{self.name}'"

    @property
    def provider(self) -> str:
        """The plugin name, with its distribution when it came from one."""
        return f"'{self.plugin}'" + (f" ({self.distribution})" if self.distribution else "")

    def resolve_options(self, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Check ``options`` against the schema and return them with defaults filled in."""
        options = {} if options is None else options
        if self.schema is None:
            if options:
                raise OptionsError(
                    f"{self.label} takes no options, got: {', '.join(sorted(map(str, options)))}"
                )
            return {}
        errors = schema_errors(self.schema, options)
        if errors:
            raise OptionsError(
                f"invalid options for {self.label}:\n" + "\n".join(f"  - {e}" for e in errors),
                problems=errors,
            )
        return fill_defaults(self.schema, options)

    def build(self, options: dict[str, Any] | None = None) -> Any:
        """Validate options, then call the factory with them.

        An exception from the factory that is not an xleval error becomes a PluginCodeError
        naming this component and its plugin (the original is its ``__cause__``).
        """
        resolved = self.resolve_options(options)
        with plugin_code(self, "building it"):
            if takes_no_arguments(self.factory):  # a plain class or function: no options
                return self.factory()
            return self.factory(resolved)


def takes_no_arguments(factory: Callable[..., Any]) -> bool:
    """Whether ``factory`` is called with nothing (``class Metric:`` with no ``__init__``
    parameters); a factory whose signature cannot be read is given the options."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return not any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in parameters
    )


@contextlib.contextmanager
def plugin_code(component: Component, what: str) -> Iterator[None]:
    """Run plugin code: an exception that is not an xleval error (or ``SystemExit``)
    becomes a PluginCodeError naming the component, its plugin and ``what`` was called."""
    try:
        yield
    except XlevalError:
        raise
    except (Exception, SystemExit) as exc:
        raise PluginCodeError(
            f"{component.label} of plugin {component.provider}: {what} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def format_path(path: Iterable[Any], root: str = "(options)") -> str:
    """Render a jsonschema path like ``ngram_range[0]``; the empty path is ``root``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or root


def schema_errors(schema: dict[str, Any], instance: Any, root: str = "(options)") -> list[str]:
    """Every way ``instance`` violates ``schema``, each as 'at PATH: WHAT', in a stable order."""
    validator = validator_for(schema)(schema)
    found = [explain(e) for e in validator.iter_errors(instance)]
    # JSON has no NaN or infinity, and a schema's range checks are all false for NaN
    found += [(path, f"{value} is not a finite number") for path, value in non_finite(instance)]
    found.sort(key=lambda pair: ([str(p) for p in pair[0]], pair[1]))
    return [f"at '{format_path(path, root)}': {message}" for path, message in found]


def non_finite(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], float]]:
    """(path, value) of every NaN or infinity in JSON-like ``value``."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from non_finite(item, (*path, key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from non_finite(item, (*path, i))


def explain(error: jsonschema.ValidationError) -> tuple[Any, str]:
    """The path and message that best say what is wrong.

    For oneOf/anyOf, "is not valid under any of the given schemas" says little. The branch
    whose type matched the value is the one the user meant, so its error is reported (e.g.
    the unexpected key in an object); when no branch's type matched, every alternative is
    listed.
    """
    if not error.context:
        return error.absolute_path, error.message
    meant = [
        e for e in error.context if e.relative_path or e.validator not in ("type", "const", "enum")
    ]
    if meant:
        best = best_match(meant)
        return best.absolute_path, best.message
    alternatives = " or ".join(dict.fromkeys(e.message for e in error.context))
    return error.absolute_path, f"expected one of: {alternatives}"


def fill_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Copy ``value`` with every missing property that declares a ``default`` filled in."""
    if not isinstance(value, dict):
        return value
    out = dict(value)
    for key, sub in schema.get("properties", {}).items():
        if not isinstance(sub, dict):
            continue
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out:
            out[key] = fill_defaults(sub, out[key])
    return out


@dataclass
class Registry:
    """Components by kind and name; names that are unusable remember why."""

    _components: dict[str, dict[str, Component]] = field(
        default_factory=lambda: {kind: {} for kind in KIND_HOOKS}
    )
    #: (kind, name) -> error raised when the name is used (clash, or its plugin failed).
    _unusable: dict[tuple[str, str], Exception] = field(default_factory=dict)
    #: Failed plugins' errors, quoted when an unknown name might have come from them.
    failed_plugins: dict[str, str] = field(default_factory=dict)

    def add(self, component: Component) -> None:
        """Add a component; a second provider of the same name makes the name unusable."""
        check_registration(component)
        kind, name = component.kind, component.name
        existing = self._components[kind].get(name)
        if existing is not None:
            error = DuplicateComponentError(
                f"{component.label} is registered by two plugins: {existing.provider} and "
                f"{component.provider}; disable one (--disable-plugin NAME)"
            )
            self._unusable[(kind, name)] = error
            raise error
        if (kind, name) in self._unusable:
            raise self._unusable[(kind, name)]
        self._components[kind][name] = component

    def mark_unusable(self, kind: str, name: str, error: Exception) -> None:
        """Keep ``name`` listed but make every use of it raise ``error``."""
        self._unusable[(kind, name)] = error

    def peek(self, kind: str, name: str) -> Component | None:
        """The component stored under ``name``, usable or not."""
        return self._components[kind].get(name)

    def names(self, kind: str) -> list[str]:
        """Usable component names of one kind, sorted."""
        return sorted(n for n in self._components[kind] if (kind, n) not in self._unusable)

    def components(self, kind: str) -> list[Component]:
        return [self._components[kind][n] for n in self.names(kind)]

    def get(self, kind: str, name: str) -> Component:
        """The component, or an error saying why the name cannot be used."""
        if kind not in self._components:
            raise UnknownComponentError(
                f"unknown component kind '{kind}' (kinds: {', '.join(KIND_HOOKS)})"
            )
        if (kind, name) in self._unusable:
            raise self._unusable[(kind, name)]
        if name in self._components[kind]:
            return self._components[kind][name]
        label = KIND_LABELS[kind]
        available = self.names(kind)
        message = f"unknown {label} '{name}'"
        close = difflib.get_close_matches(name, available, n=3)
        if close:
            message += f"; did you mean {' or '.join(repr(c) for c in close)}?"
        message += f" (available: {', '.join(available) if available else 'none'})"
        if self.failed_plugins:
            failed = "; ".join(f"'{p}': {err}" for p, err in sorted(self.failed_plugins.items()))
            raise PluginLoadError(
                f"{message}. Plugins that failed to load might provide it: {failed}"
            )
        raise UnknownComponentError(message)

    def build(self, kind: str, name: str, options: dict[str, Any] | None = None) -> Any:
        """Look up, validate options, and build a component in one step."""
        return self.get(kind, name).build(options)


#: Schemas (as canonical JSON) that passed ``check_schema`` in this process.
_VALID_SCHEMAS: set[str] = set()


def check_schema(schema: dict[str, Any]) -> None:
    """Raise ``jsonschema.SchemaError`` unless ``schema`` is a valid JSON Schema.

    Checking against the 2020-12 meta-schema takes ~5 ms a schema (0.17 s for the bundled
    plugins, in every process that loads them); a schema already found valid in this
    process, or in the process it was forked from, is not checked again.
    """
    try:
        text = canonical_json(schema)
    except (TypeError, ValueError):  # not JSON data: let the check say what is wrong
        text = None
    if text is not None and text in _VALID_SCHEMAS:
        return
    validator_for(schema).check_schema(schema)
    if text is not None:
        _VALID_SCHEMAS.add(text)


def check_registration(component: Component) -> None:
    """Reject what a plugin passed to ``register`` when it could never work."""
    where = f"{KIND_LABELS[component.kind]} registered by plugin '{component.plugin}'"
    if not isinstance(component.name, str) or not NAME_PATTERN.match(component.name):
        raise PluginError(
            f"{where}: name {component.name!r} must be lower-case letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    if not callable(component.factory):
        raise PluginError(f"{where} as '{component.name}': factory is not callable")
    if not isinstance(component.description, str):
        raise PluginError(f"{where} as '{component.name}': description must be a string")
    if component.schema is not None:
        if not isinstance(component.schema, dict):
            raise PluginError(f"{where} as '{component.name}': schema must be a dict")
        try:
            check_schema(component.schema)
        except jsonschema.SchemaError as exc:
            raise PluginError(
                f"{where} as '{component.name}': schema is not a valid JSON Schema: {exc.message}"
            ) from exc

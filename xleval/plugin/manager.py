"""Plugin loading: entry points of the ``xleval`` group, each isolated, then registration.

Bundled plugins are declared in the same entry-point group as third-party ones,
so this module never names them. One broken plugin is recorded and reported,
never fatal (unless strict mode is asked for).
"""

from __future__ import annotations

import difflib
import os
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from xleval.api import hookspecs
from xleval.api.hookspecs import KIND_HOOKS
from xleval.errors import (
    DuplicateComponentError,
    PluginError,
    PluginLoadError,
    PluginUnavailable,
)
from xleval.plugin.registry import KIND_LABELS, Component, Registry

ENTRY_POINT_GROUP = "xleval"
STRICT_ENV = "XLEVAL_STRICT_PLUGINS"
DISABLE_ENV = "XLEVAL_DISABLE_PLUGINS"


@dataclass
class PluginRecord:
    """What is known about one plugin: where it came from, what it registered, and its status."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    status: str = "ok"  # ok | failed | disabled | conflict | unavailable
    error: str | None = None
    traceback: str | None = None
    components: dict[str, list[str]] = field(default_factory=dict)

    def fail(
        self, error: BaseException | str, status: str = "failed", hook: str | None = None
    ) -> None:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        if hook is not None:
            text = f"in hook {hook}: {text}"
        if isinstance(error, BaseException):
            self.traceback = "".join(traceback.format_exception(error))
        self.error = text if self.error is None else f"{self.error}; {text}"
        if self.status != "failed":
            self.status = status

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "error": self.error,
            "components": {k: sorted(v) for k, v in self.components.items() if v},
        }


class XlevalPluginManager(pluggy.PluginManager):
    """A pluggy manager that also holds the registry and a record per plugin."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.records: dict[str, PluginRecord] = {}
        #: problems that did not stop loading (e.g. a disabled name that matches nothing)
        self.warnings: list[str] = []

    def failed_records(self) -> list[PluginRecord]:
        return [r for r in self.records.values() if r.status in ("failed", "conflict")]


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def env_list(name: str) -> set[str]:
    return {part.strip() for part in os.environ.get(name, "").split(",") if part.strip()}


def get_plugin_manager(
    *,
    disabled: Iterable[str] = (),
    strict: bool | None = None,
    use_entry_points: bool = True,
    plugins: Iterable[Any] = (),
) -> XlevalPluginManager:
    """Build a fresh manager: load entry points, check hook names, collect registrations.

    ``disabled`` adds to ``$XLEVAL_DISABLE_PLUGINS`` (plugin or distribution names);
    ``strict`` (default ``$XLEVAL_STRICT_PLUGINS``) turns any plugin failure into an
    error. ``plugins`` are extra plugin objects (modules or instances), mainly for tests.
    """
    pm = XlevalPluginManager()
    disabled = set(disabled) | env_list(DISABLE_ENV)
    strict = env_flag(STRICT_ENV) if strict is None else strict

    if use_entry_points:
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            load_entry_point(pm, ep, disabled)
    for obj in plugins:
        name = getattr(obj, "__name__", None) or type(obj).__name__
        record = PluginRecord(name=name, module=getattr(obj, "__module__", None) or name)
        register_plugin(pm, record, obj, disabled)

    reject_unknown_hooks(pm)
    pm.check_pending()
    collect_components(pm)
    pm.warnings.extend(unknown_disabled_names(pm, disabled))

    if strict and pm.failed_records():
        problems = "; ".join(f"'{r.name}': {r.error}" for r in pm.failed_records())
        raise PluginLoadError(f"plugin problems ({STRICT_ENV} is set): {problems}")
    return pm


def unknown_disabled_names(pm: XlevalPluginManager, disabled: set[str]) -> list[str]:
    """A warning per name in ``disabled`` that is neither a plugin nor a distribution."""
    known = {r.name for r in pm.records.values()}
    known |= {r.distribution for r in pm.records.values() if r.distribution}
    out = []
    for name in sorted(disabled - known):
        close = difflib.get_close_matches(name, sorted(known), n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        out.append(
            f"--disable-plugin/{DISABLE_ENV}: no plugin or distribution is named '{name}'{hint}"
        )
    return out


def load_entry_point(pm: XlevalPluginManager, ep: metadata.EntryPoint, disabled: set[str]) -> None:
    dist = getattr(ep, "dist", None)
    record = PluginRecord(
        name=ep.name,
        module=ep.value,
        distribution=dist.name if dist else None,
        version=dist.version if dist else None,
    )
    if ep.name in pm.records:
        other = pm.records[ep.name]
        record.name = f"{ep.name} [{record.distribution}]"
        record.fail(
            f"entry point name '{ep.name}' is also used by distribution "
            f"'{other.distribution}'; rename one of them"
        )
        pm.records[record.name] = record
        return
    if ep.name in disabled or (record.distribution in disabled):
        record.status = "disabled"
        pm.records[ep.name] = record
        return
    pm.records[ep.name] = record
    try:
        obj = ep.load()
    except (Exception, SystemExit) as exc:  # sys.exit() at import too; Ctrl-C still stops
        record.fail(exc)
        return
    register_plugin(pm, record, obj, disabled)


def register_plugin(
    pm: XlevalPluginManager, record: PluginRecord, obj: Any, disabled: set[str]
) -> None:
    pm.records[record.name] = record
    if record.name in disabled:
        record.status = "disabled"
        return
    try:
        pm.register(obj, name=record.name)
    except Exception as exc:  # pluggy rejects bad hookimpl signatures here
        record.fail(exc)


def reject_unknown_hooks(pm: XlevalPluginManager) -> None:
    """Fail (and unregister) each plugin that implements a hook xleval does not define.

    pluggy's ``check_pending`` stops at the first offender; this names every one
    and suggests the hook that was probably meant.
    """
    known = list(KIND_HOOKS.values())
    for hook_name, caller in list(vars(pm.hook).items()):
        if not isinstance(caller, pluggy.HookCaller) or caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if impl.optionalhook:
                continue
            close = difflib.get_close_matches(hook_name, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            record = pm.records[impl.plugin_name]
            record.fail(PluginError(f"unknown hook '{hook_name}'{hint}"))
    for record in pm.failed_records():
        plugin = pm.get_plugin(record.name)
        if plugin is not None:
            pm.unregister(plugin)


def collect_components(pm: XlevalPluginManager) -> None:
    """Call each plugin's registry hooks one plugin at a time, so one failure stays local."""
    for kind, hook_name in KIND_HOOKS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            record = pm.records[impl.plugin_name]
            added: list[str] = []

            def register(
                name: str,
                factory: Any,
                *,
                schema: dict[str, Any] | None = None,
                description: str = "",
                _kind: str = kind,
                _record: PluginRecord = record,
                _added: list[str] = added,
                _module: str = impl.function.__module__,
            ) -> None:
                component = Component(
                    kind=_kind,
                    name=name,
                    factory=factory,
                    schema=schema,
                    description=description,
                    plugin=_record.name,
                    distribution=_record.distribution,
                    hook_module=_module,
                )
                first = pm.registry.peek(_kind, name)
                try:
                    pm.registry.add(component)
                except DuplicateComponentError as exc:
                    _record.fail(str(exc), status="conflict")
                    if first is not None and first.plugin in pm.records:
                        pm.records[first.plugin].fail(str(exc), status="conflict")
                _added.append(name)

            try:
                impl.function(register=register)
            except PluginUnavailable as exc:
                if record.error != str(exc):  # each of its hooks says the same once
                    record.fail(str(exc), status="unavailable")
            except (Exception, SystemExit) as exc:
                record.fail(exc, hook=hook_name)
            record.components.setdefault(kind, []).extend(added)
    for record in pm.records.values():
        if record.status not in ("failed", "unavailable"):
            continue
        if record.status == "failed":  # an unavailable plugin failed nothing: not quoted
            pm.registry.failed_plugins[record.name] = record.error or "failed"
        for kind, names in record.components.items():  # a half-registered plugin is unusable
            for name in names:
                stored = pm.registry.peek(kind, name)
                if stored is None or stored.plugin != record.name:
                    continue
                pm.registry.mark_unusable(
                    kind,
                    name,
                    PluginLoadError(
                        f"{KIND_LABELS[kind]} '{name}' is unavailable: {record.error}"
                        if record.status == "unavailable"
                        else f"{KIND_LABELS[kind]} '{name}' is unavailable: plugin "
                        f"'{record.name}' failed to register: {record.error}"
                    ),
                )

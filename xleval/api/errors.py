"""Exception types for mistakes a user can fix; the CLI turns them into one-line messages.

Anything that is not an ``XlevalError`` is a bug in xleval or a plugin and keeps
its traceback.
"""

from __future__ import annotations

__all__ = [
    "DataError",
    "DuplicateComponentError",
    "ExecutorStopped",
    "MethodError",
    "OptionsError",
    "PluginCodeError",
    "PluginError",
    "PluginLoadError",
    "PluginOutputError",
    "PluginUnavailable",
    "SpecError",
    "TrainingDivergedError",
    "UnknownComponentError",
    "XlevalError",
]


class XlevalError(Exception):
    """A problem the user can act on: the message says where and what."""

    exit_code = 1


class PluginError(XlevalError):
    """A plugin could not be loaded, registered something invalid, or clashes with another."""


class PluginLoadError(PluginError):
    """A plugin failed to import or register; raised when its components are used."""


class PluginUnavailable(PluginError):
    """Raised by a plugin's registry hook, after registering, when what its components need
    is not installed (e.g. an optional extra): they stay listed, marked unavailable, and
    each use of one says what to install. Nothing else about the run changes."""


class PluginCodeError(PluginError):
    """Plugin code (a factory, a loader, a hook) raised an exception that is not an xleval
    error: the message names the component and its plugin; ``--debug`` shows the traceback."""


class DuplicateComponentError(PluginError):
    """Two plugins registered the same component name for the same kind."""


class UnknownComponentError(XlevalError):
    """A component name that no loaded plugin registered."""


class OptionsError(XlevalError):
    """A component's options do not match its JSON Schema.

    ``problems`` lists each violation ('at PATH: WHAT', PATH relative to the options) when
    there are several, so a spec's error list can indent them under their component.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])


class DataError(XlevalError):
    """A data file or dataset is malformed: the message names file:line, field and value."""


class SpecError(XlevalError):
    """An experiment spec is invalid: the message lists every error with its JSON path."""


class TrainingDivergedError(XlevalError):
    """Training produced a non-finite loss: the message gives the epoch, step and settings."""


class MethodError(XlevalError):
    """A method that cannot run on this cell (e.g. target-only with no target shots)."""


class PluginOutputError(XlevalError):
    """A component returned something its contract rules out: the message names the
    component, what it returned and what was expected."""


class ExecutorStopped(XlevalError):
    """An executor that cannot go on (its dask scheduler was lost, say): the run stops, the
    cells finished so far are kept, the report marks the others not run, and the message
    (say what happened and that a rerun continues) is the run's last line."""

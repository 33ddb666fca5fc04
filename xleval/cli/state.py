"""What the ``xleval`` group's options decided, shared by every command module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import click

from xleval.plugin.manager import XlevalPluginManager

PluginManagerFactory = Callable[..., XlevalPluginManager]


@dataclass
class CliState:
    """What the group's options decided, and the plugin manager built from them on first use."""

    factory: PluginManagerFactory
    debug: bool = False
    disabled: tuple[str, ...] = ()
    strict: bool | None = None
    _pm: XlevalPluginManager | None = field(default=None, repr=False)

    @property
    def pm(self) -> XlevalPluginManager:
        if self._pm is None:
            self._pm = self.factory(disabled=self.disabled, strict=self.strict)
            for warning in getattr(self._pm, "warnings", ()):
                click.echo(f"warning: {warning}", err=True)
        return self._pm

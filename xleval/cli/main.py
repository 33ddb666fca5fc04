"""The ``xleval`` command line: one group, subcommands added per job.

``build_cli(plugin_manager_factory)`` makes a fresh group so tests can inject a
manager; nothing is loaded at import time. ``XlevalError`` is caught here, once,
and turned into a one-line message and an exit code.
"""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Sequence
from typing import Any

import click
from tabulate import tabulate

from xleval import __version__
from xleval.api.hookspecs import KIND_HOOKS
from xleval.cli.datasets import datasets_group
from xleval.cli.plan import add_plan_command
from xleval.cli.run import add_run_commands
from xleval.cli.state import CliState, PluginManagerFactory
from xleval.errors import XlevalError
from xleval.plugin.manager import get_plugin_manager
from xleval.plugin.registry import KIND_LABELS


class XlevalGroup(click.Group):
    """Turns user mistakes into 'error: ...' and a non-zero exit; ``--debug`` keeps tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (XlevalError, OSError) as exc:
            state = ctx.find_object(CliState)
            if state is not None and state.debug:
                raise
            message = str(exc) if isinstance(exc, XlevalError) else filesystem_message(exc)
            click.echo(f"error: {message}", err=True)
            ctx.exit(getattr(exc, "exit_code", 1))


#: What to do about a filesystem error, by errno name.
FILESYSTEM_ADVICE = {
    "ENOSPC": "free some space and run again: finished cells are kept",
    "EDQUOT": "free some space and run again: finished cells are kept",
    "EACCES": "check its permissions, or choose another --out",
    "EPERM": "check its permissions, or choose another --out",
    "EROFS": "the filesystem is read-only: choose another --out",
    "ENOTDIR": "a part of the path is a file, not a folder",
    "EISDIR": "a folder is where a file was expected: move it away",
}


def filesystem_message(exc: OSError) -> str:
    """One line for an OSError: the path, the system's words and what to do."""
    import errno

    name = errno.errorcode.get(exc.errno or 0, "")
    where = exc.filename if exc.filename is not None else "(a file)"
    advice = FILESYSTEM_ADVICE.get(name)
    return f"{where}: {exc.strerror or exc}" + (f" ({advice})" if advice else "")


def build_cli(plugin_manager_factory: PluginManagerFactory = get_plugin_manager) -> click.Group:
    """A new ``xleval`` command group using ``plugin_manager_factory`` for its plugins."""

    @click.group(cls=XlevalGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, "-V", "--version", prog_name="xleval")
    @click.option("--debug", is_flag=True, envvar="XLEVAL_DEBUG", help="Show tracebacks.")
    @click.option(
        "--disable-plugin",
        "disabled",
        multiple=True,
        metavar="NAME",
        help="Do not load this plugin (entry-point or distribution name); repeatable. "
        "Adds to $XLEVAL_DISABLE_PLUGINS.",
    )
    @click.option(
        "--strict-plugins/--no-strict-plugins",
        "strict",
        default=None,
        help="Make any plugin load failure an error (default: $XLEVAL_STRICT_PLUGINS).",
    )
    @click.pass_context
    def cli(ctx: click.Context, debug: bool, disabled: tuple[str, ...], strict: bool | None):
        """Evaluate and compare cross-lingual learning methods."""
        ctx.obj = CliState(
            factory=plugin_manager_factory, debug=debug, disabled=disabled, strict=strict
        )

    @cli.command("plugins")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.pass_obj
    def plugins_command(state: CliState, as_json: bool) -> None:
        """List plugins: where they come from, what they register, and their status."""
        records = sorted(state.pm.records.values(), key=lambda r: r.name)
        if as_json:
            click.echo(json.dumps([r.to_json() for r in records], indent=2))
            return
        rows = []
        for r in records:
            registers = "\n".join(
                f"{KIND_LABELS[kind]}: {', '.join(sorted(r.components[kind]))}"
                for kind in KIND_HOOKS
                if r.components.get(kind)
            )
            status = r.status if r.error is None else f"{r.status}: {r.error}"
            rows.append([r.name, r.distribution or "-", r.version or "-", registers or "-", status])
        click.echo(
            tabulate(
                rows,
                headers=["plugin", "distribution", "version", "registers", "status"],
                maxcolwidths=[None, None, None, 48, 60],
            )
        )
        if state.debug:
            for r in records:
                if r.traceback:
                    click.echo(f"\n--- {r.name} ---\n{r.traceback}", err=True)

    cli.add_command(datasets_group())
    add_run_commands(cli)
    add_plan_command(cli)
    return cli


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        build_cli()(args=list(argv) if argv is not None else sys.argv[1:], prog_name="xleval")
    finally:
        skip_final_collections()


def skip_final_collections() -> None:
    """Exempt every object alive now from the garbage collections of interpreter shutdown.

    They walk every object torch created at import (0.4 s of each command's exit, with
    nothing to free: the process ends). Called when the command is over: reports are
    written and files closed; atexit handlers and reference counting still run.
    """
    gc.freeze()

"""Bundled executors: where an experiment's cells run."""

from __future__ import annotations

from xleval.hookspecs import Register, hookimpl


@hookimpl
def xleval_register_executors(register: Register) -> None:
    """Register the bundled executors (none yet: later issues add them here)."""

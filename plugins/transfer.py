"""Bundled transfer strategies: weight copying between source and target models."""

from __future__ import annotations

from xleval.hookspecs import Register, hookimpl


@hookimpl
def xleval_register_transfer_strategies(register: Register) -> None:
    """Register the bundled transfer strategies (none yet: later issues add them here)."""

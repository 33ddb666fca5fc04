"""Bundled reporters: report writers."""

from __future__ import annotations

from xleval.hookspecs import Register, hookimpl


@hookimpl
def xleval_register_reporters(register: Register) -> None:
    """Register the bundled reporters (none yet: later issues add them here)."""

"""Bundled datasets: ddtp-sections and loaders for the user's own files."""

from __future__ import annotations

from xleval.hookspecs import Register, hookimpl


@hookimpl
def xleval_register_datasets(register: Register) -> None:
    """Register the bundled datasets (none yet: later issues add them here)."""

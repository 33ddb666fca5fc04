"""Bundled metrics: accuracy, macro-F1, log-loss, calibration."""

from __future__ import annotations

from xleval.hookspecs import Register, hookimpl


@hookimpl
def xleval_register_metrics(register: Register) -> None:
    """Register the bundled metrics (none yet: later issues add them here)."""

"""Bundled fusion strategies: exp-sum and friends over per-language models' scores."""

from __future__ import annotations

from xleval.hookspecs import Register, hookimpl


@hookimpl
def xleval_register_fusion_strategies(register: Register) -> None:
    """Register the bundled fusion strategies (none yet: later issues add them here)."""

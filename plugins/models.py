"""Bundled model builders: bag-of-embeddings and the seed's embedding-linear classifier."""

from __future__ import annotations

from xleval.hookspecs import Register, hookimpl


@hookimpl
def xleval_register_models(register: Register) -> None:
    """Register the bundled model builders (none yet: later issues add them here)."""

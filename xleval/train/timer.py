"""Seconds per phase of a cell (featurize, init, train, transfer, eval, artifact I/O)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class PhaseTimer:
    """Exclusive seconds per named phase: ``with timer("train"):`` blocks may nest, and an
    inner block's time counts for the inner phase only."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._children: list[float] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        self._children.append(0.0)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            inner = self._children.pop()
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - inner
            if self._children:
                self._children[-1] += elapsed

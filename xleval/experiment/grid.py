"""The grid of an experiment: its cells, and the order that lets them share models."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from xleval.experiment.sampling import Shots
from xleval.experiment.spec import ExperimentSpec


@dataclass(frozen=True)
class Cell:
    """One unit of work: (method, sources, target, shots, seed[, draw]).

    ``draw`` names the sample of the k shots when the spec sets ``shot_draws``; None: the
    seed draws them (and the cell's JSON, hence its key, has no ``draw``)."""

    method: str
    protocol: str
    sources: tuple[str, ...]
    target: str
    shots: Shots
    seed: int
    draw: int | None = None

    def to_json(self) -> dict[str, Any]:
        out = {
            "method": self.method,
            "protocol": self.protocol,
            "sources": list(self.sources),
            "target": self.target,
            "shots": self.shots,
            "seed": self.seed,
        }
        if self.draw is not None:
            out["draw"] = self.draw
        return out

    def describe(self) -> str:
        draw = "" if self.draw is None else f" draw={self.draw}"
        return (
            f"{self.method} {'+'.join(self.sources)}->{self.target} k={self.shots} "
            f"seed={self.seed}{draw}"
        )


def expand_grid(spec: ExperimentSpec) -> list[Cell]:
    """Every cell the spec asks for: per method, target and seed, the shots its protocol
    runs at (``MethodSpec.shots``: a protocol that ignores k runs once, at k = 0, and is
    reported in every shots column), each shot draw (``ExperimentSpec.draws_at``); in a
    spec with pairs, each method's own targets and sources (``MethodSpec.runs``)."""
    return [
        Cell(method.label, method.protocol, sources, target, cast(Shots, shots), seed, draw)
        for method in spec.methods
        for target, sources, runs in method.runs(spec.targets, spec.sources)
        for seed in spec.seeds
        for shots in runs
        for draw in spec.draws_at(shots)
    ]


def order_for_sharing(cells: list[Cell], order: Mapping[str, int]) -> list[Cell]:
    """Cells of a smaller protocol ``order`` (method label -> its protocol's) first: the
    zero-shot cells, whose source models every other method shares; then joint cells, each
    training on whole source splits; seeds varying fastest. Within an order, the longest
    cells first.

    The first cells then train the different seeds' source models in parallel, and every
    later cell finds its source model in the artifact store. Then the rest by shots, most
    first ("all" before any number): a cell's time grows with its shots, so a run ends on
    its shortest cells and no worker idles long while another finishes the last one.
    """
    return sorted(
        cells,
        key=lambda c: (
            order[c.method],
            -(float("inf") if c.shots == "all" else float(c.shots)),
            c.method,
            c.target,
            c.seed,
            -1 if c.draw is None else c.draw,
        ),
    )

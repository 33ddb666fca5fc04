"""Shot sampling: k target-language training examples per class, nested across k.

Each label's train examples are ranked by sha256(seed, example id) — with a spec's
``shot_draws``, sha256(seed, draw, example id) — and the first k are taken, so for one seed
(and draw) the 8-shot set is a prefix (hence a subset) of the 32-shot set, and the choice
depends neither on file order nor on Python's hash randomisation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

from xleval.api.data import Example, MultilingualDataset
from xleval.errors import DataError

Shots = int | Literal["all"]


@dataclass(frozen=True)
class ShotSample:
    """The sampled examples (grouped by label in class order, ranked within a label).

    ``shortfall`` maps a label to how many fewer than ``k`` train examples it had; it is
    empty when every class got ``k`` (and always for ``k="all"``).
    """

    examples: tuple[Example, ...]
    k: Shots
    lang: str
    seed: int
    shortfall: dict[str, int] = field(default_factory=dict, hash=False)
    draw: int | None = None

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def counts(self) -> dict[str, int]:
        """label -> number of sampled examples."""
        out: dict[str, int] = {}
        for e in self.examples:
            out[e.label] = out.get(e.label, 0) + 1
        return out


def shot_rank(seed: int, example_id: str, draw: int | None = None) -> bytes:
    """The sort key of an example for one seed (and draw): a stable permutation."""
    if draw is None:
        return hashlib.sha256(f"{seed}\0{example_id}".encode()).digest()
    return hashlib.sha256(f"{seed}\0draw {draw}\0{example_id}".encode()).digest()


def sample_shots(
    dataset: MultilingualDataset, lang: str, k: Shots, seed: int, draw: int | None = None
) -> ShotSample:
    """Take ``k`` train examples per class of ``dataset`` in ``lang`` (``"all"``: every one).

    Classes are ``dataset.labels`` (all languages'), so a class the language lacks shows up
    in ``shortfall`` rather than silently shrinking the label set. ``draw`` (a spec's
    ``shot_draws``) picks another sample for the same seed; None: the seed's own.
    """
    if k != "all" and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
        raise ValueError(f"k must be a non-negative integer or 'all', got {k!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if draw is not None and (isinstance(draw, bool) or not isinstance(draw, int)):
        raise ValueError(f"draw must be an integer or None, got {draw!r}")
    if lang not in dataset.languages:
        raise DataError(
            f"dataset '{dataset.name}' has no language {lang!r} "
            f"(languages: {', '.join(dataset.languages)})"
        )
    by_label: dict[str, list[Example]] = {label: [] for label in dataset.labels}
    for e in dataset.select(lang, "train"):
        by_label[e.label].append(e)
    chosen: list[Example] = []
    shortfall: dict[str, int] = {}
    for label, items in by_label.items():
        if k == 0:
            break
        items.sort(key=lambda e: (shot_rank(seed, e.id, draw), e.id))
        if k == "all":
            chosen.extend(items)
            continue
        chosen.extend(items[:k])
        if len(items) < k:
            shortfall[label] = k - len(items)
    return ShotSample(tuple(chosen), k, lang, seed, shortfall, draw)

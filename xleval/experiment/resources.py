"""Files shipped with xleval (JSON Schemas, example specs), found the same way installed or not."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any


def specs_dir() -> Traversable:
    """The ``specs/`` folder (the ``xleval.specs`` package once installed)."""
    return resources.files("xleval.specs")


@cache
def load_schema(name: str) -> dict[str, Any]:
    """A JSON Schema from ``specs/``, e.g. ``load_schema("plugins")``."""
    return json.loads((specs_dir() / f"{name}.schema.json").read_text(encoding="utf-8"))

"""Checks on what plugin code hands back, at the boundary where xleval takes it.

A plugin's mistake must fail its own cell with a message naming the component and what was
wrong, never crash the run later (a tensor reaching the JSON writer) or pass silently into
a report (NaN in report.json, log-probabilities reported as probabilities, a source model
changed in place for every later cell that shares it).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from xleval.errors import PluginOutputError

#: How far a fused row may sum from 1 (float32 rounding of a softmax is ~1e-7).
ROW_SUM_TOLERANCE = 1e-4


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def metric_value(name: str, value: Any) -> float:
    """A metric's result as a finite Python float.

    One-element tensors and numpy scalars are converted (``.item()``); anything else, and
    NaN or infinity, is refused: report.json must stay strict JSON and every statistic
    assumes a number.
    """
    original = value
    if hasattr(value, "item") and callable(value.item):
        numel = getattr(value, "numel", None)
        size = numel() if callable(numel) else getattr(value, "size", 1)
        if size != 1:
            raise PluginOutputError(
                f"metric '{name}' returned {type(original).__name__} with {size} values, "
                f"not one number"
            )
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise PluginOutputError(
            f"metric '{name}' returned {type(original).__name__} {_describe(original)}, "
            f"not a number"
        )
    value = float(value)
    if not math.isfinite(value):
        raise PluginOutputError(
            f"metric '{name}' returned {value}: metrics must be finite (return a defined "
            f"value, or raise an error saying why there is none)"
        )
    return value


def metric_values(values: dict[str, Any]) -> dict[str, float]:
    return {name: metric_value(name, value) for name, value in values.items()}


def scores_shape(label: str, scores: Any, n_examples: int, n_classes: int) -> None:
    """A model's (or fusion's) output must be a tensor [examples, classes] with no NaN."""
    import torch

    if not isinstance(scores, torch.Tensor):
        raise PluginOutputError(
            f"{label} returned {type(scores).__name__}, not a tensor of scores "
            f"[{n_examples}, {n_classes}]"
        )
    if tuple(scores.shape) != (n_examples, n_classes):
        raise PluginOutputError(
            f"{label} returned scores of shape {list(scores.shape)} for {n_examples} "
            f"examples and {n_classes} classes; expected [{n_examples}, {n_classes}]"
        )
    if scores.is_floating_point() and bool(torch.isnan(scores).any()):
        raise PluginOutputError(f"{label} returned NaN scores")


def fused_probabilities(name: str, probs: Any, n_examples: int, n_classes: int) -> None:
    """A fusion strategy returns probabilities: finite, non-negative, rows summing to 1."""
    probabilities(f"fusion strategy '{name}'", probs, n_examples, n_classes)


def probabilities(label: str, probs: Any, n_examples: int, n_classes: int) -> None:
    """Probabilities [n_examples, n_classes]: finite, non-negative, rows summing to 1."""
    import torch

    scores_shape(label, probs, n_examples, n_classes)
    if not n_examples:
        return
    if not probs.is_floating_point():
        raise PluginOutputError(f"{label} returned {probs.dtype} values, not probabilities")
    if not bool(torch.isfinite(probs).all()):
        raise PluginOutputError(f"{label} returned infinite values, not probabilities")
    low = float(probs.min())
    if low < 0:
        raise PluginOutputError(
            f"{label} returned negative values (min {low:.4g}): fusion must return "
            f"probabilities, not log-probabilities or scores"
        )
    sums = probs.double().sum(dim=1)
    worst = float((sums - 1).abs().max())
    if worst > ROW_SUM_TOLERANCE:
        row = int((sums - 1).abs().argmax())
        raise PluginOutputError(
            f"{label} returned rows that do not sum to 1 (row {row} sums to "
            f"{float(sums[row]):.6g}): fusion must return probabilities"
        )


def parameter_fingerprint(model: Any) -> tuple[Any, ...]:
    """A cheap fingerprint of a module's parameters and buffers: names, shapes, storage,
    in-place version counters and sums (a few milliseconds for a 51 MB embedding table).

    It changes when a tensor is replaced, resized or written in place (through torch ops,
    which bump the version, or through ``.data``/numpy, which change the sum).
    """
    import torch

    parts = []
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            # in the tensor's own dtype: 1 ms for a 51 MB table, a float64 sum takes 30
            total = float(tensor.sum()) if tensor.numel() else 0.0
            parts.append(
                (
                    name,
                    tuple(tensor.shape),
                    str(tensor.dtype),
                    tensor.data_ptr(),
                    tensor._version,
                    total if math.isfinite(total) else repr(total),
                )
            )
    return tuple(parts)


def source_unchanged(name: str, before: tuple[Any, ...], after: tuple[Any, ...]) -> None:
    """Fail the cell when a transfer strategy changed the (shared) source model."""
    if before == after:
        return
    old = {p[0]: p for p in before}
    new = {p[0]: p for p in after}
    changed = sorted(n for n in old.keys() | new.keys() if old.get(n) != new.get(n))
    raise PluginOutputError(
        f"transfer strategy '{name}' changed the source model in place ({', '.join(changed[:5])}"
        f"{', ...' if len(changed) > 5 else ''}); trained source models are shared between "
        f"cells, so a strategy must copy from the source and write only to the target"
    )


def json_value(label: str, value: Any, path: str = "") -> Any:
    """``value`` as strict JSON data (dicts with string keys, lists, strings, finite numbers,
    booleans, None); one-element tensors and numpy scalars become numbers, numpy arrays and
    tensors lists. Anything else fails, naming ``label`` and where in the value it was."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PluginOutputError(f"{label} returned {value} at {path or '(top)'}: not JSON")
        return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise PluginOutputError(
                    f"{label} returned a key {key!r} at {path or '(top)'}: keys must be strings"
                )
            out[key] = json_value(label, item, f"{path}.{key}" if path else key)
        return out
    if isinstance(value, (list, tuple)):
        return [json_value(label, item, f"{path}[{i}]") for i, item in enumerate(value)]
    tolist = getattr(value, "tolist", None)
    if callable(tolist):  # tensors, numpy arrays and scalars
        return json_value(label, tolist(), path)
    if isinstance(value, numbers.Real):
        return json_value(label, float(value), path)
    raise PluginOutputError(
        f"{label} returned {type(value).__name__} at {path or '(top)'}: not JSON data"
    )


def first_non_finite(value: Any, path: str = "") -> str | None:
    """The path of the first NaN or infinity in JSON-like ``value`` (None if there is none)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path or "(top)"
    if isinstance(value, dict):
        items = ((f"{path}.{k}" if path else str(k), v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for where, item in items:
        found = first_non_finite(item, where)
        if found is not None:
            return found
    return None

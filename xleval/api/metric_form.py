"""A metric's optional vectorised form: what lets the report's statistics leave examples out.

A metric component may offer ``form(y_true, probs) -> MetricForm`` (numpy arrays ``[n]``
and ``[n, classes]``): the metric as a function of per-example feature sums, so the metric
with any example left out is one vectorised call instead of ``n`` calls of ``compute``.
The report trusts a form only after it reproduces ``compute`` on the data and on one
resample of it; a metric without one is called per left-out unit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: ``finish(sums [units, features], n) -> values [units]``: the metric from feature sums.
Finish = Callable[[np.ndarray, Any], np.ndarray]


def jackknife(theta: float, left_out: np.ndarray) -> np.ndarray:
    """Pseudo-values u θ − (u − 1) θ₋ⱼ from the values with each of u units left out."""
    units = len(left_out)
    return units * theta - (units - 1) * np.asarray(left_out, dtype=np.float64)


@dataclass(frozen=True)
class MetricForm:
    """A metric written as a function of per-example feature sums,
    ``value = finish(Σ_i features[i], n)``, so that its value with any example (or group of
    examples) left out is one vectorised call: the jackknife pseudo-values that put the
    metric into the seeds × examples variance estimate (:func:`seeds_and_examples`).

    ``per_example`` is set when the metric is the plain mean of per-example values
    (accuracy, log-loss, Brier): those values are its pseudo-values; with 0/1 values
    (accuracy) the exact sign-flip test applies too.
    """

    features: np.ndarray
    finish: Finish
    per_example: np.ndarray | None = None

    @property
    def binary(self) -> bool:
        values = self.per_example
        return values is not None and bool(np.all((values == 0.0) | (values == 1.0)))

    def value(self) -> float:
        return float(self.finish(self.features.sum(axis=0)[None, :], len(self.features))[0])

    def pseudo_values(self, groups: np.ndarray | None = None) -> np.ndarray:
        """One value per unit (per example, or per group of ``groups``) whose mean is the
        metric's jackknife estimate and whose spread is its test-set variability."""
        n = len(self.features)
        if groups is None and self.per_example is not None:
            return self.per_example
        total = self.features.sum(axis=0)
        if groups is None:
            left_out = self.finish(total[None, :] - self.features, n - 1)
        else:
            count = int(groups.max()) + 1
            group_sums = np.zeros((count, self.features.shape[1]))
            np.add.at(group_sums, groups, self.features)
            sizes = np.bincount(groups, minlength=count)
            left_out = self.finish(total[None, :] - group_sums, n - sizes)
        return jackknife(self.value(), left_out)


def _mean_finish(sums: np.ndarray, n: int) -> np.ndarray:
    return sums[:, 0] / n


def mean_of(values: np.ndarray) -> MetricForm:
    """A metric that is the mean of ``values`` over examples."""
    values = np.asarray(values, dtype=np.float64)
    return MetricForm(values[:, None], _mean_finish, values)

"""Metrics: known values on hand-made cases, direction, empty inputs."""

from __future__ import annotations

import math

import pytest
import torch
from xleval_plugins.metrics import MetricError

from xleval.errors import OptionsError
from xleval.plugin.manager import get_plugin_manager

Y = torch.tensor([0, 0, 1, 2])
P = torch.tensor([
    [0.8, 0.1, 0.1],   # correct, confidence 0.8
    [0.4, 0.5, 0.1],   # wrong (predicts 1), confidence 0.5
    [0.2, 0.7, 0.1],   # correct, confidence 0.7
    [0.3, 0.3, 0.4],   # correct, confidence 0.4
])  # fmt: skip


@pytest.fixture(scope="module")
def registry():
    return get_plugin_manager().registry


def compute(registry, name, y=Y, p=P, **options):
    return registry.build("metrics", name, options).compute(y, p)


def test_accuracy(registry):
    assert compute(registry, "accuracy") == 0.75


def test_macro_f1(registry):
    # class 0: TP 1, predicted 1, actual 2 -> 2/3; class 1: TP 1, predicted 2, actual 1 -> 2/3;
    # class 2: TP 1, predicted 1, actual 1 -> 1.
    assert compute(registry, "macro_f1") == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    # A class absent from labels and predictions does not count.
    padded = torch.cat([P, torch.zeros(4, 1)], 1)
    assert compute(registry, "macro_f1", p=padded) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_nll(registry):
    expected = -(math.log(0.8) + math.log(0.4) + math.log(0.7) + math.log(0.4)) / 4
    assert compute(registry, "nll") == pytest.approx(expected)
    zero = torch.tensor([[1.0, 0.0]])
    assert compute(registry, "nll", y=torch.tensor([1]), p=zero) == pytest.approx(-math.log(1e-15))


def test_ece(registry):
    # 2 bins: (0, .5] holds 0.5 (wrong) and 0.4 (right): |1/2 - 0.45| = 0.05, weight 1/2;
    # (.5, 1] holds 0.8, 0.7 (both right): |1 - 0.75| = 0.25, weight 1/2.
    assert compute(registry, "ece", bins=2) == pytest.approx(0.5 * 0.05 + 0.5 * 0.25)
    assert compute(registry, "ece", bins=1) == pytest.approx(abs(0.75 - 0.6))


def test_brier(registry):
    rows = [
        (0.2**2 + 0.1**2 + 0.1**2),
        (0.6**2 + 0.5**2 + 0.1**2),
        (0.2**2 + 0.3**2 + 0.1**2),
        (0.3**2 + 0.3**2 + 0.6**2),
    ]
    assert compute(registry, "brier") == pytest.approx(sum(rows) / 4)


def test_perfect_predictions(registry):
    p = torch.eye(3)[Y]
    assert compute(registry, "accuracy", p=p) == 1.0
    assert compute(registry, "macro_f1", p=p) == 1.0
    assert compute(registry, "brier", p=p) == 0.0
    assert compute(registry, "ece", p=p) == 0.0
    assert compute(registry, "nll", p=p) == pytest.approx(0.0)


def test_direction_is_declared(registry):
    expected = {"accuracy": True, "macro_f1": True, "nll": False, "ece": False, "brier": False}
    for name, higher in expected.items():
        assert registry.build("metrics", name).higher_is_better is higher


def test_empty_and_mismatched_inputs(registry):
    assert math.isnan(
        compute(registry, "accuracy", y=torch.zeros(0, dtype=torch.long), p=torch.zeros(0, 3))
    )
    with pytest.raises(MetricError):
        compute(registry, "accuracy", y=torch.tensor([0, 1]), p=P)
    with pytest.raises(MetricError, match="labels must be in"):
        compute(registry, "accuracy", y=torch.tensor([0, 0, 1, 3]))
    with pytest.raises(OptionsError, match="bins"):
        registry.build("metrics", "ece", {"bins": 0})

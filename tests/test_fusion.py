"""Fusion strategies: normalised, stable, and faithful to the source's formulas."""

from __future__ import annotations

import math

import pytest
import torch
from xleval_plugins.fusion import FusionError, seed_formula

from xleval.errors import OptionsError
from xleval.plugin.manager import get_plugin_manager

STRATEGIES = ("exp-sum", "logit-sum", "prob-mean", "max-prob")


@pytest.fixture(scope="module")
def registry():
    return get_plugin_manager().registry


def fuse(registry, name, scores, **options):
    return registry.build("fusion_strategies", name, options).fuse(scores)


@pytest.mark.parametrize("name", STRATEGIES)
@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_probabilities_sum_to_one_even_for_huge_scores(registry, name, scale):
    scores = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0)) * scale
    probs = fuse(registry, name, scores)
    assert probs.shape == (5, 4)
    assert torch.isfinite(probs).all() and (probs >= 0).all()
    assert torch.allclose(probs.sum(1), torch.ones(5), atol=1e-6)


def test_the_seed_formula_does_not_normalise():
    # Two models scoring 0 everywhere: each class gets 2 / 2 = 1, total 2.
    assert float(seed_formula(torch.zeros(2, 1, 2)).sum()) == 2.0


def test_exp_sum_has_the_argmax_of_the_seed_formula(registry):
    scores = (
        torch.randn(3, 500, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    )
    fused = fuse(registry, "exp-sum", scores)
    assert torch.equal(fused.argmax(1), seed_formula(scores).argmax(1))


def test_exp_sum_known_value(registry):
    scores = torch.tensor([[[0.0, math.log(3.0)]], [[0.0, 0.0]]])
    # numerator: [e^0 + e^0, e^ln3 + e^0] = [2, 4]
    assert torch.allclose(fuse(registry, "exp-sum", scores), torch.tensor([[1 / 3, 2 / 3]]))


def test_exp_sum_on_log_probs_is_the_mean_of_probabilities(registry):
    scores = torch.randn(4, 6, 3, generator=torch.Generator().manual_seed(2))
    expected = torch.softmax(scores, -1).mean(0)
    assert torch.allclose(fuse(registry, "exp-sum", scores, on="log_probs"), expected, atol=1e-6)
    assert torch.allclose(fuse(registry, "prob-mean", scores), expected, atol=1e-6)


def test_logit_sum_is_the_softmax_of_summed_outputs(registry):
    scores = torch.tensor([[[1.0, 0.0]], [[1.0, 2.0]]])
    expected = torch.softmax(torch.tensor([[2.0, 2.0]]), -1)
    assert torch.allclose(fuse(registry, "logit-sum", scores), expected)
    weighted = fuse(registry, "logit-sum", scores, weights=[2.0, 0.0])
    assert torch.allclose(weighted, torch.softmax(torch.tensor([[2.0, 0.0]]), -1))


def test_max_prob_known_value(registry):
    scores = torch.log(torch.tensor([[[0.7, 0.2, 0.1]], [[0.1, 0.3, 0.6]]]))
    expected = torch.tensor([[0.7, 0.3, 0.6]]) / 1.6
    assert torch.allclose(fuse(registry, "max-prob", scores), expected, atol=1e-6)


@pytest.mark.parametrize("name", ["exp-sum", "prob-mean", "max-prob"])
def test_a_zero_weight_removes_a_model(registry, name):
    scores = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(3))
    alone = fuse(registry, name, scores[:1])
    assert torch.allclose(fuse(registry, name, scores, weights=[1.0, 0.0]), alone, atol=1e-6)


def test_bad_inputs_are_clear_errors(registry):
    with pytest.raises(FusionError, match="2 weights for 3 models"):
        fuse(registry, "exp-sum", torch.zeros(3, 2, 2), weights=[1, 1])
    with pytest.raises(FusionError, match=r"\[models, n, classes\]"):
        fuse(registry, "prob-mean", torch.zeros(2, 2))
    with pytest.raises(FusionError, match="all be zero"):
        fuse(registry, "max-prob", torch.zeros(2, 2, 2), weights=[0, 0])
    with pytest.raises(OptionsError, match="on"):
        registry.build("fusion_strategies", "exp-sum", {"on": "probs"})

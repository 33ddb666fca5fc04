"""The compiled row kernel (xleval/train/_rowkernels.c) against the pure-torch step it replaces.

The kernel sums each distinct row's gradient from its (document, weight) pairs and applies
SGD / row-wise Adagrad / Adagrad in one pass; the torch path materialises the [rows, dim]
gradient with embedding_bag and applies it with index_add_. Both must give the same tables
and optimiser state (to float rounding), check every index before writing anything, and
the trainer must take the kernel by default where it is installed.
"""

from __future__ import annotations

import os

import pytest
import torch

from xleval.train import trainer as training
from xleval.train.trainer import RowGradient, RowSparseOptimizer, build_model, train

try:
    from xleval.train import _rowkernels as kernels
except ImportError:
    if os.environ.get("CI"):  # CI compiles it: a missing kernel there is a broken build
        raise
    pytest.skip("the C row kernel is not built here", allow_module_level=True)


def random_gradient(
    table_rows: int, dim: int, docs: int, seed: int
) -> tuple[torch.Tensor, RowGradient]:
    generator = torch.Generator().manual_seed(seed)
    table = torch.randn(table_rows, dim, generator=generator)
    n_rows = table_rows // 2
    rows = torch.randperm(table_rows, generator=generator)[:n_rows]
    pairs_per_row = torch.randint(1, 5, (n_rows,), generator=generator)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), pairs_per_row.cumsum(0)[:-1]])
    n_pairs = int(pairs_per_row.sum())
    grad = RowGradient(
        rows=rows,
        row_offsets=offsets.to(torch.int32),
        pair_docs=torch.randint(0, docs, (n_pairs,), generator=generator, dtype=torch.int32),
        pair_weights=torch.rand(n_pairs, generator=generator),
        grad_hidden=torch.randn(docs, dim, generator=generator),
    )
    return table, grad


@pytest.mark.parametrize("optimizer", ["sgd", "rowwise-adagrad", "adagrad"])
@pytest.mark.parametrize("dim", [8, 16, 64, 70])  # below, at, and off the 16-float vectors
def test_kernel_step_equals_the_torch_step(monkeypatch, optimizer, dim):
    results = []
    for kernel in ("1", "0"):
        monkeypatch.setenv("XLEVAL_ROW_KERNEL", kernel)
        table, grad = random_gradient(40, dim, docs=6, seed=dim)
        optimizer_ = RowSparseOptimizer(optimizer, [(table, True)])
        assert (optimizer_.kernel is not None) == (kernel == "1")
        for lr in (0.5, 0.25, 0.1):  # three steps: Adagrad's state carries over
            optimizer_.step([(grad.rows, grad)], lr)
        results.append((table, optimizer_.sums[0]))
    (fast, fast_state), (ref, ref_state) = results
    assert not torch.equal(fast, random_gradient(40, dim, docs=6, seed=dim)[0])  # it moved
    assert torch.allclose(fast, ref, atol=1e-5, rtol=1e-5)
    if ref_state is not None:
        assert torch.allclose(fast_state, ref_state, atol=1e-5, rtol=1e-5)


def test_training_takes_the_kernel_by_default(registry, monkeypatch):
    """With the kernel installed the [rows, dim] gradient is never materialised."""

    def materialised(self):
        raise AssertionError("the torch path ran")

    monkeypatch.setattr(RowGradient, "values", materialised)
    texts = ["kernel driver module", "game puzzle arcade", "audio sound music"] * 4
    builder = registry.build("models", "bag-of-embeddings", {"buckets": 2000, "dim": 16})
    model = build_model(builder, 3, seed=0)
    options = {"epochs": 3, "batch_size": 4, "min_steps": 0}
    report = train(model, texts, [0, 1, 2] * 4, options, seed=1)
    assert report.steps == 9
    monkeypatch.setenv("XLEVAL_ROW_KERNEL", "0")
    with pytest.raises(AssertionError, match="torch path ran"):
        train(build_model(builder, 3, seed=0), texts, [0, 1, 2] * 4, {"epochs": 1}, seed=1)


def _call(table, total, grad, mode=1):
    kernels.apply_rows(
        mode,
        table.shape[1],
        table.numpy(),
        total.numpy(),
        grad.rows.numpy(),
        grad.row_offsets.numpy(),
        grad.pair_docs.numpy(),
        grad.pair_weights.numpy(),
        grad.grad_hidden.numpy(),
        0.1,
        1e-10,
    )


def test_kernel_is_deterministic():
    outputs = []
    for _ in range(2):
        table, grad = random_gradient(50, 64, docs=8, seed=3)
        total = torch.zeros(50)
        _call(table, total, grad)
        outputs.append((table, total))
    assert torch.equal(outputs[0][0], outputs[1][0])
    assert torch.equal(outputs[0][1], outputs[1][1])


@pytest.mark.parametrize(
    "corrupt, error",
    [
        (lambda g: g._replace(rows=g.rows.clone().index_fill_(0, torch.tensor([3]), 40)),
         "out of range"),
        (lambda g: g._replace(rows=g.rows.clone().index_fill_(0, torch.tensor([0]), -1)),
         "out of range"),
        (lambda g: g._replace(pair_docs=g.pair_docs.clone().index_fill_(0, torch.tensor([2]), 6)),
         "names document 6 of 6"),
        (lambda g: g._replace(row_offsets=g.row_offsets.flip(0).contiguous()),
         "out of range|start"),
        (lambda g: g._replace(pair_weights=g.pair_weights[:-1]), "sizes"),
    ],
)  # fmt: skip
def test_bad_indices_are_refused_before_anything_is_written(corrupt, error):
    table, grad = random_gradient(40, 16, docs=6, seed=5)
    before, total = table.clone(), torch.zeros(40)
    with pytest.raises(ValueError, match=error):
        _call(table, total, corrupt(grad))
    assert torch.equal(table, before)
    assert not total.any()


def test_wrong_dtypes_and_layouts_are_refused():
    table, grad = random_gradient(40, 16, docs=6, seed=6)
    total = torch.zeros(40)
    with pytest.raises(TypeError, match="rows: expected a buffer of format 'q'"):
        _call(table, total, grad._replace(rows=grad.rows.to(torch.int32)))
    with pytest.raises(TypeError, match="table"):
        _call(table.double(), total, grad)
    with pytest.raises((BufferError, ValueError)):  # a transposed view is not C-contiguous
        _call(torch.zeros(16, 40).t(), total, grad)
    with pytest.raises(ValueError, match="mode"):
        _call(table, total, grad, mode=7)
    with pytest.raises(ValueError, match="sizes"):
        _call(table, torch.zeros(3), grad)  # row-wise state needs one float per table row


@pytest.fixture(scope="module")
def registry():
    from xleval.plugin.manager import get_plugin_manager

    return get_plugin_manager().registry


def test_row_kernel_switch(monkeypatch):
    monkeypatch.setenv("XLEVAL_ROW_KERNEL", "0")
    assert not training.row_kernel_available()
    monkeypatch.delenv("XLEVAL_ROW_KERNEL")
    assert training.row_kernel_available()


def exact_step(mode: int, table, total, grad: RowGradient, lr: float, eps: float) -> None:
    """The kernel's arithmetic, operation by operation in float32 (numpy rounds each one as
    C without FMA contraction does): what every build of the kernel must reproduce bit for
    bit, whatever its vector width."""
    import numpy as np

    f32 = np.float32
    table, total = table.numpy(), total.numpy()
    rows, offsets = grad.rows.numpy(), grad.row_offsets.numpy()
    docs, weights = grad.pair_docs.numpy(), grad.pair_weights.numpy()
    hidden = grad.grad_hidden.numpy()
    dim = table.shape[1]
    n16 = dim // 16
    for r, row in enumerate(rows.tolist()):
        end = offsets[r + 1] if r + 1 < len(rows) else len(docs)
        g = np.zeros(dim, dtype=f32)
        for p in range(offsets[r], end):
            g = g + weights[p] * hidden[docs[p]]  # elementwise, in pair order
        if mode == 0:
            table[row] = table[row] + g
        elif mode == 1:
            lanes = np.zeros(16, dtype=f32)
            for j in range(n16):
                part = g[16 * j : 16 * j + 16]
                lanes = lanes + part * part
            total_sum = f32(0.0)
            for k in range(16):
                total_sum = f32(total_sum + lanes[k])
            for e in range(16 * n16, dim):
                total_sum = f32(total_sum + g[e] * g[e])
            total[row] = f32(total[row] + f32(total_sum / f32(dim)))
            scale = f32(f32(f32(1.0) / f32(np.sqrt(total[row]) + f32(eps))) * f32(-lr))
            table[row] = table[row] + g * scale
        else:
            s = total[row * dim : (row + 1) * dim]
            s[:] = s + g * g
            table[row] = table[row] + (g / (np.sqrt(s) + f32(eps))) * f32(-lr)


@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("dim", [1, 7, 8, 16, 24, 64, 70])  # around the 8- and 16-float groups
def test_the_kernel_reproduces_its_documented_arithmetic_bit_for_bit(mode, dim):
    table, grad = random_gradient(30, dim, docs=5, seed=dim + 100 * mode)
    total = torch.rand(30 * (dim if mode == 2 else 1))  # some optimiser state already there
    expected_table, expected_total = table.clone(), total.clone()
    for lr in (0.5, 0.2):
        kernels.apply_rows(
            mode, dim, table.numpy(), total.numpy(), grad.rows.numpy(),
            grad.row_offsets.numpy(), grad.pair_docs.numpy(), grad.pair_weights.numpy(),
            grad.grad_hidden.numpy(), lr, 1e-10,
        )  # fmt: skip
        exact_step(mode, expected_table, expected_total, grad, lr, 1e-10)
    assert torch.equal(table, expected_table)
    assert torch.equal(total, expected_total)

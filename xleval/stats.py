"""Statistics for reports: intervals over seeds and over test examples, paired tests between
methods, multiple-testing correction and ranks.

A score has two sources of uncertainty: training randomness (which shots a seed drew, the
initialisation) and the finite test set. The Student-t interval over seeds covers the
first; the two-way percentile bootstrap (test examples and seeds resampled together, see
:func:`two_way_means`) covers both, and is what paired comparisons are built on. For
accuracy an exact paired permutation (sign-flip) test is computed too.

Bootstraps are vectorised (one gather or matrix product per chunk of resamples; metrics
rewritten as functions of per-example sums, :class:`ResampledMetric`) and seeded, so a
report's numbers are reproducible bit for bit. Everything is NumPy and the standard library
(the t distribution through the regularised incomplete beta function, by Lentz's continued
fraction): the core needs no SciPy.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function (Numerical Recipes, Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-14:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t distribution with ``df`` degrees of freedom."""
    x = df / (df + t * t)
    tail = 0.5 * betainc(df / 2.0, 0.5, x)
    return 1.0 - tail if t > 0 else tail


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: float) -> float:
    """Inverse of :func:`t_cdf` by bisection (monotone, so robust for any df >= 1); cached,
    as a report asks for the same few (p, df) hundreds of times."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    lo, hi = -1.0, 1.0
    while t_cdf(lo, df) > p:
        lo *= 2.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2.0


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean, sample std and the Student-t interval of the mean over ``values`` (e.g. seeds).

    With a single value the interval is undefined: ``ci`` is ``None`` and std is 0.
    """
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarise")
    mean = math.fsum(values) / n
    if n == 1:
        return {"mean": mean, "std": 0.0, "ci": None, "n": 1}
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "ci": [mean - half, mean + half], "n": n}


# -- tests on seeds -------------------------------------------------------------------


def paired_t_test(differences: Sequence[float]) -> float | None:
    """Two-sided p-value of Student's paired t-test that the mean difference is zero.

    Used over seeds: each seed trains both methods on the same shots, so their per-seed
    differences are paired. ``None`` with fewer than two seeds (no variance to test with).
    Identical differences give 1.0 when they are zero and 0.0 otherwise (t is infinite).
    """
    n = len(differences)
    if n < 2:
        return None
    mean = math.fsum(differences) / n
    std = math.sqrt(math.fsum((d - mean) ** 2 for d in differences) / (n - 1))
    if std == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    t = mean / (std / math.sqrt(n))
    return min(1.0, 2.0 * (1.0 - t_cdf(abs(t), n - 1)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the order given.

    Step-down: the i-th smallest p (0-based) is multiplied by m − i, and adjusted values are
    made monotone, so ``adjusted <= alpha`` rejects exactly the hypotheses Holm's procedure
    rejects at family-wise error rate ``alpha`` — under any dependence between the tests,
    which matters here: comparisons share methods, seeds and test examples.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def average_ranks(values: Sequence[float], higher_is_better: bool = True) -> list[float]:
    """Rank 1 for the best value; tied values share the mean of their ranks (Friedman-style)."""
    keyed = sorted(range(len(values)), key=lambda i: -values[i] if higher_is_better else values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(keyed):
        stop = start
        while stop + 1 < len(keyed) and values[keyed[stop + 1]] == values[keyed[start]]:
            stop += 1
        for position in range(start, stop + 1):
            ranks[keyed[position]] = (start + stop) / 2.0 + 1.0
        start = stop + 1
    return ranks


# -- the bootstrap over test examples ---------------------------------------------------

#: Indices drawn per chunk (8-16 MiB of temporaries): bounds memory at any size.
CHUNK_ELEMENTS = 1 << 21
#: Up to this many feature columns are summed by gathering; beyond, by counts @ features.
GATHER_MAX_COLUMNS = 4
#: counts @ features products below this many multiply-adds skip BLAS.
SMALL_PRODUCT = 1 << 22

SeedLike = int | Sequence[int]


def _chunks(resamples: int, n: int) -> list[slice]:
    rows = max(1, CHUNK_ELEMENTS // max(n, 1))
    return [slice(s, min(s + rows, resamples)) for s in range(0, resamples, rows)]


def bootstrap_indices(n: int, resamples: int, seed: SeedLike) -> Iterator[tuple[slice, np.ndarray]]:
    """Example indices of each bootstrap resample, a chunk of resamples at a time.

    Yields ``(rows, idx)``: ``idx[r]`` holds the n indices (drawn with replacement) of
    resample ``rows.start + r``. Chunk ``c`` draws from its own stream, spawned from
    ``seed`` (SFC64: the fastest of NumPy's generators), and chunk boundaries depend on
    ``n`` only: the same ``(n, resamples, seed)`` gives the same resamples bit for bit,
    whatever else is being resampled with them.
    """
    if n < 1:
        raise ValueError("nothing to resample")
    chunks = _chunks(resamples, n)
    streams = np.random.SeedSequence(seed).spawn(len(chunks))
    for rows, stream in zip(chunks, streams, strict=True):
        rng = np.random.Generator(np.random.SFC64(stream))
        yield rows, rng.integers(0, n, size=(rows.stop - rows.start, n))


IndexVisitor = Callable[[slice, np.ndarray], None]


def resampled_sums(
    features: np.ndarray,
    resamples: int,
    seed: SeedLike,
    *,
    visit: IndexVisitor | None = None,
) -> np.ndarray:
    """Column sums of ``features`` [n, d] over each bootstrap resample: [resamples, d].

    Every column sees the same resamples, so statistics built from different columns (two
    methods, several seeds) are paired. Vectorised: a few columns are gathered and summed;
    many are summed as ``counts @ features`` with the resample counts of each example, one
    matrix product per chunk. ``visit(rows, idx)`` sees each chunk's indices, for
    statistics that are not sums (see :class:`ResampledMetric`).
    """
    matrix = np.asarray(features, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix[:, None]
    n, d = matrix.shape
    out = np.empty((resamples, d), dtype=np.float64)
    gather = d <= GATHER_MAX_COLUMNS
    columns = np.ascontiguousarray(matrix.T)
    for rows, idx in bootstrap_indices(n, resamples, seed):
        if gather:
            for j in range(d):
                out[rows, j] = columns[j].take(idx).sum(axis=1)
        else:
            count = idx.shape[0]
            flat = (idx + (np.arange(count) * n)[:, None]).ravel()
            counts = np.bincount(flat, minlength=count * n).reshape(count, n).astype(np.float64)
            if count * n * d < SMALL_PRODUCT:
                # einsum stays on this thread: a BLAS call this small costs more in waking
                # its worker threads than in arithmetic, badly so on a busy machine
                out[rows] = np.einsum("bn,nd->bd", counts, matrix)
            else:
                out[rows] = counts @ matrix
        if visit is not None:
            visit(rows, idx)
    return out


def seed_resamples(n_seeds: int, resamples: int, seed: SeedLike) -> np.ndarray:
    """Seeds drawn with replacement for each resample: ``[resamples, n_seeds]`` positions.

    The second level of the two-way bootstrap (see :func:`two_way_means`).
    """
    rng = np.random.Generator(np.random.SFC64(np.random.SeedSequence(seed)))
    return rng.integers(0, n_seeds, size=(resamples, n_seeds))


def two_way_means(per_seed: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """The two-way ("pigeonhole", Owen 2007) bootstrap of a mean over seeds and examples.

    ``per_seed[s, b]`` is seed s's statistic on example resample b (the same example
    resample for every seed: their test examples are the same); ``draws[b]`` are the seeds
    drawn for resample b. Resampling only the examples would treat the trained models as
    fixed and ignore training randomness (which shots were drawn, the initialisation): in
    few-shot cells that is often the larger source of variation, and a test that ignores it
    finds "significant" differences another set of seeds would not reproduce. Resampling
    both keeps it. With few seeds this is conservative when seeds barely matter (their
    spread is then mostly test noise, counted twice) and somewhat liberal when they matter
    a lot (a handful of seeds understates their spread): prefer 5+ seeds for such claims.
    """
    per_seed = np.asarray(per_seed, dtype=np.float64)
    return np.take_along_axis(per_seed.T, draws, axis=1).mean(axis=1)


def percentile_interval(samples: np.ndarray, confidence: float) -> list[float]:
    """The percentile bootstrap interval: the (1 ± confidence)/2 quantiles of ``samples``."""
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.asarray(samples, dtype=np.float64), [tail, 1.0 - tail])
    return [float(low), float(high)]


def bootstrap_p_value(samples: np.ndarray, observed: float) -> float:
    """Two-sided p-value that the statistic's true value is 0, from its bootstrap samples.

    The bootstrap distribution, shifted to centre on 0, stands in for the null distribution
    (Efron & Tibshirani, ch. 16; the paired bootstrap test of Koehn 2004 and
    Berg-Kirkpatrick et al. 2012): p = (1 + #{|θ* − θ̂| ≥ |θ̂|}) / (B + 1). The +1s make it
    a valid p-value, never 0: with B resamples the smallest is 1/(B + 1), so B must exceed
    m/alpha for Holm over m tests to be able to reject anything.
    """
    samples = np.asarray(samples, dtype=np.float64)
    if observed == 0.0:
        return 1.0
    extreme = np.count_nonzero(np.abs(samples - observed) >= abs(observed))
    return float((1 + extreme) / (len(samples) + 1))


def bootstrap_mean_ci(
    values: np.ndarray, confidence: float = 0.95, resamples: int = 2000, seed: SeedLike = 0
) -> dict[str, Any]:
    """Mean of ``values`` (one per example) with its percentile bootstrap interval."""
    values = np.asarray(values, dtype=np.float64)
    means = resampled_sums(values, resamples, seed)[:, 0] / len(values)
    return {
        "mean": float(values.mean()),
        "ci": percentile_interval(means, confidence),
        "p_value": bootstrap_p_value(means, float(values.mean())),
    }


# -- an exact permutation test for accuracy -------------------------------------------


def _log_factorials(n: int) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))])


def _convolve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) * len(b) <= 1 << 20:
        return np.convolve(a, b)
    size = len(a) + len(b) - 1
    fft_size = 1 << (size - 1).bit_length()
    out = np.fft.irfft(np.fft.rfft(a, fft_size) * np.fft.rfft(b, fft_size), fft_size)[:size]
    return np.clip(out, 0.0, None)


def sign_flip_p_value(differences: np.ndarray) -> float:
    """Exact two-sided p-value of the paired sign-flip (permutation) test on integer
    per-example differences.

    For accuracy, ``differences[i]`` is Σ over seeds of correct_A − correct_B on example i.
    Under the null that the two methods are exchangeable on every example, each
    difference's sign is a fair coin, so T* = Σ ε_i d_i. Grouping examples by |d_i| = j,
    T* = Σ_j j (2 X_j − c_j) with X_j ~ Binomial(c_j, 1/2): its distribution is a
    convolution of a few binomials (at most one per seed count), computed exactly instead
    of sampling 2^n sign patterns. Returns P(|T*| ≥ |T|), which is never below the
    probability 2^(1−m) of the observed signs and their mirror image (m non-zero d_i).
    """
    d = np.asarray(differences)
    if d.size and not np.issubdtype(d.dtype, np.integer):
        if not np.all(d == np.round(d)):
            raise ValueError("the sign-flip test needs integer differences")
        d = np.round(d).astype(np.int64)
    d = d.astype(np.int64)
    observed = int(d.sum())
    magnitudes = np.abs(d[d != 0])
    m = len(magnitudes)
    if observed == 0 or m == 0:
        return 1.0
    counts = np.bincount(magnitudes)
    log_fact = _log_factorials(int(counts.max()))
    pmf = np.ones(1)
    for j, c in enumerate(counts):
        if j == 0 or c == 0:
            continue
        x = np.arange(c + 1)
        binomial = np.exp(log_fact[c] - log_fact[x] - log_fact[c - x] - c * math.log(2.0))
        component = np.zeros(j * c + 1)
        component[::j] = binomial
        pmf = _convolve(pmf, component)
    total = len(pmf) - 1  # Σ_j j c_j; U = Σ_j j X_j and T* = 2U − total
    high = (total + abs(observed)) // 2
    low = (total - abs(observed)) // 2
    p = float(pmf[high:].sum() + pmf[: low + 1].sum())
    return min(1.0, max(p, 2.0 ** max(1 - m, -1074)))


# -- metrics on resamples ---------------------------------------------------------------

Finish = Callable[[np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class ResampledMetric:
    """A metric written as a function of per-example feature sums, so that it can be
    recomputed on thousands of resamples with one matrix product instead of thousands of
    calls: ``value = finish(Σ_i w_i features[i], n)`` for resample counts ``w``.

    ``per_example`` is set when the metric is the plain mean of per-example values
    (accuracy, log-loss, Brier); with 0/1 values (accuracy) the exact sign-flip test applies.
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


def _mean_finish(sums: np.ndarray, n: int) -> np.ndarray:
    return sums[:, 0] / n


def mean_of(values: np.ndarray) -> ResampledMetric:
    """A metric that is the mean of ``values`` over examples."""
    values = np.asarray(values, dtype=np.float64)
    return ResampledMetric(values[:, None], _mean_finish, values)


def _onehot(index: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((len(index), size))
    out[np.arange(len(index)), index] = 1.0
    return out


def _accuracy(y: np.ndarray, p: np.ndarray, options: Mapping[str, Any]) -> ResampledMetric:
    return mean_of((p.argmax(axis=1) == y).astype(np.float64))


def _nll(y: np.ndarray, p: np.ndarray, options: Mapping[str, Any]) -> ResampledMetric:
    picked = np.maximum(p[np.arange(len(y)), y], options.get("eps", 1e-15))
    return mean_of(-np.log(picked))


def _brier(y: np.ndarray, p: np.ndarray, options: Mapping[str, Any]) -> ResampledMetric:
    return mean_of(((p - _onehot(y, p.shape[1])) ** 2).sum(axis=1))


def _macro_f1(y: np.ndarray, p: np.ndarray, options: Mapping[str, Any]) -> ResampledMetric:
    classes = p.shape[1]
    pred = p.argmax(axis=1)
    actual = _onehot(y, classes)
    predicted = _onehot(pred, classes)
    true_pos = actual * (pred == y)[:, None]

    def finish(sums: np.ndarray, n: int) -> np.ndarray:
        tp, pr, ac = sums[:, :classes], sums[:, classes : 2 * classes], sums[:, 2 * classes :]
        denominator = pr + ac
        present = denominator > 0
        f1 = np.where(present, 2.0 * tp / np.where(present, denominator, 1.0), 0.0)
        return f1.sum(axis=1) / present.sum(axis=1)

    return ResampledMetric(np.hstack([true_pos, predicted, actual]), finish)


def _ece(y: np.ndarray, p: np.ndarray, options: Mapping[str, Any]) -> ResampledMetric:
    bins = int(options.get("bins", 15))
    confidence = p.max(axis=1)
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    member = _onehot(which, bins)

    def finish(sums: np.ndarray, n: int) -> np.ndarray:
        count, hits, conf = sums[:, :bins], sums[:, bins : 2 * bins], sums[:, 2 * bins :]
        return np.abs(hits - conf).sum(axis=1) / count.sum(axis=1)

    return ResampledMetric(
        np.hstack([member, member * correct[:, None], member * confidence[:, None]]), finish
    )


#: Vectorised forms of the bundled metrics, by registered name. A plugin cannot be asked
#: for one (the metric hook returns only ``compute``), so they live here; each is trusted
#: only after it reproduces the plugin's own ``compute`` on the data (see
#: :func:`resampled_metric`), so a different metric registered under the same name falls
#: back to calling ``compute`` instead of being silently replaced.
VECTORISED: dict[str, Callable[[np.ndarray, np.ndarray, Mapping[str, Any]], ResampledMetric]] = {
    "accuracy": _accuracy,
    "nll": _nll,
    "brier": _brier,
    "macro_f1": _macro_f1,
    "ece": _ece,
}


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def resampled_metric(
    name: str, metric: Any, y_true: Any, probs: Any, expected: float | None = None
) -> ResampledMetric | None:
    """The vectorised form of ``metric`` on these predictions, or None if it has none.

    A metric object may offer ``per_example(y_true, probs) -> [n]`` (its value being their
    mean); otherwise the bundled metrics' forms in :data:`VECTORISED` are used by name.
    Either is trusted only if it reproduces ``metric.compute`` on the full data (or
    ``expected``, the value the run already computed) and on one resample.
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    n = len(y)
    if n == 0:
        return None
    candidate = None
    try:
        if callable(getattr(metric, "per_example", None)):
            candidate = mean_of(np.asarray(metric.per_example(y_true, probs), dtype=np.float64))
        elif name in VECTORISED:
            candidate = VECTORISED[name](y, p, getattr(metric, "options", None) or {})
    except Exception:  # a form that does not fit the data is no form: fall back to compute
        return None
    if candidate is None or candidate.features.shape[0] != n:
        return None
    full = float(metric.compute(y_true, probs)) if expected is None else float(expected)
    if not _close(candidate.value(), full):
        return None
    idx = np.random.Generator(np.random.SFC64(0)).integers(0, n, size=n)
    sums = candidate.features[idx].sum(axis=0)
    resampled = float(candidate.finish(sums[None, :], n)[0])
    if not _close(resampled, float(metric.compute(y_true[idx], probs[idx]))):
        return None
    return candidate

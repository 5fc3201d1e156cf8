"""Distances between distributions, for generative models: usable on their own.

Probability vectors are float64, the same length, non-negative and summing to 1. Where
scipy has the metric it is scipy's (``entropy``, ``jensenshannon``,
``wasserstein_distance``, ``ks_2samp``); written here is only what no well-kept library
has: the Qiskit-compatible relative entropy with its floor, the MMD with a multi-bandwidth
Gaussian kernel, mode coverage, and shot-noise confidence intervals.

When a distribution is estimated from ``shots`` measurements, :func:`with_confidence`
gives a percentile-bootstrap interval (resampling the counts from the multinomial they
came from) and, for the relative entropy, the plug-in estimate's finite-sample bias floor
``(K - 1) / (2 N)`` (Miller-Madow): differences smaller than it are noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial.distance import jensenshannon as _scipy_js
from scipy.stats import entropy as _scipy_entropy
from scipy.stats import ks_2samp, wasserstein_distance

from .errors import DistributionError

__all__ = [
    "MetricEstimate",
    "distribution_report",
    "entropy",
    "jensen_shannon",
    "kl_bias_floor",
    "ks_samples",
    "ks_statistic",
    "mmd",
    "mmd_samples",
    "mode_coverage",
    "pairwise_diversity",
    "relative_entropy",
    "sample_variance",
    "total_variation",
    "valid_fraction",
    "wasserstein1",
    "with_confidence",
]

Array = NDArray[np.float64]
#: Qiskit's QGAN floors empty bins at this before taking the relative entropy.
EMPTY_BIN_FLOOR = 1e-8


def _prob(p: ArrayLike, name: str = "p") -> Array:
    try:
        arr = np.asarray(p, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise DistributionError(f"{name} must be numbers: {exc}") from None
    if arr.size == 0:
        raise DistributionError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise DistributionError(f"{name} holds NaN or infinite values")
    if np.any(arr < 0):
        raise DistributionError(f"{name} holds negative probabilities")
    if abs(float(arr.sum()) - 1.0) > 1e-6:
        raise DistributionError(f"{name} must sum to 1, not {arr.sum():.9g}")
    return arr


def _pair(p: ArrayLike, q: ArrayLike) -> tuple[Array, Array]:
    a, b = _prob(p, "the generated distribution"), _prob(q, "the data distribution")
    if a.shape != b.shape:
        raise DistributionError(f"the distributions differ in length: {a.size} and {b.size}")
    return a, b


def _support(points: ArrayLike, k: int) -> Array:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim == 1:
        pts = pts[:, None]
    if pts.ndim != 2 or pts.shape[0] != k or not np.all(np.isfinite(pts)):
        raise DistributionError(f"the support must be {k} finite points, got shape {pts.shape}")
    return pts


def relative_entropy(gen: ArrayLike, data: ArrayLike) -> float:
    """``KL(gen || data)`` in nats, as Qiskit's QGAN reports it: ``scipy.stats.entropy``
    of the two distributions with empty (zero) bins of either floored at 1e-8."""
    p, q = _pair(gen, data)
    return float(
        _scipy_entropy(np.where(p > 0, p, EMPTY_BIN_FLOOR), np.where(q > 0, q, EMPTY_BIN_FLOOR))
    )


def entropy(p: ArrayLike) -> float:
    """Shannon entropy in nats."""
    return float(_scipy_entropy(_prob(p)))


def jensen_shannon(p: ArrayLike, q: ArrayLike) -> float:
    """The Jensen-Shannon *divergence* in nats (scipy's distance, squared); in [0, ln 2]."""
    a, b = _pair(p, q)
    return float(_scipy_js(a, b) ** 2)


def total_variation(p: ArrayLike, q: ArrayLike) -> float:
    """``max_A |P(A) - Q(A)| = sum |p - q| / 2``; in [0, 1]."""
    a, b = _pair(p, q)
    return float(0.5 * np.abs(a - b).sum())


def ks_statistic(p: ArrayLike, q: ArrayLike) -> float:
    """Kolmogorov-Smirnov statistic of two distributions on one ordered 1-D support:
    ``max |CDF_p - CDF_q|``."""
    a, b = _pair(p, q)
    return float(np.max(np.abs(np.cumsum(a) - np.cumsum(b))))


def ks_samples(x: ArrayLike, y: ArrayLike) -> tuple[float, float]:
    """``(statistic, p-value)`` of scipy's two-sample KS test on 1-D samples."""
    a, b = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise DistributionError("KS needs two non-empty sets of finite samples")
    result = ks_2samp(a, b)
    return float(result.statistic), float(result.pvalue)


def wasserstein1(p: ArrayLike, q: ArrayLike, support: ArrayLike) -> float:
    """Wasserstein-1 distance on ``support``: scipy's for a 1-D support; for a d-D grid, the
    sum of the d marginals' distances (an upper bound's cheap stand-in, said so here)."""
    a, b = _pair(p, q)
    pts = _support(support, a.size)
    total = 0.0
    for j in range(pts.shape[1]):
        values, inverse = np.unique(pts[:, j], return_inverse=True)
        pa = np.bincount(inverse, weights=a, minlength=values.size)
        pb = np.bincount(inverse, weights=b, minlength=values.size)
        total += float(wasserstein_distance(values, values, pa, pb))
    return total


def median_bandwidths(points: ArrayLike) -> tuple[float, float, float]:
    """``(m/2, m, 2m)`` with ``m`` the median distance between distinct points."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim == 1:
        pts = pts[:, None]
    d = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1))
    nonzero = d[d > 0]
    m = float(np.median(nonzero)) if nonzero.size else 1.0
    return (m / 2, m, 2 * m)


def _kernel(x: Array, y: Array, bandwidths: Sequence[float]) -> Array:
    d2: Array = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    out: Array = np.zeros_like(d2)
    for b in bandwidths:
        out += np.exp(-d2 / (2.0 * b * b))
    return out


def _bandwidths(bandwidths: Sequence[float] | None, points: Array) -> Sequence[float]:
    if bandwidths is None:
        return median_bandwidths(points)
    if len(bandwidths) == 0 or any(not (math.isfinite(b) and b > 0) for b in bandwidths):
        raise DistributionError(f"bandwidths must be positive and finite, got {bandwidths!r}")
    return bandwidths


def mmd(
    p: ArrayLike, q: ArrayLike, support: ArrayLike, bandwidths: Sequence[float] | None = None
) -> float:
    """Squared MMD of two distributions on ``support`` under ``sum_b exp(-d^2 / 2b^2)``:
    the exact quadratic form ``(p - q)^T K (p - q)`` (median heuristic when no bandwidths)."""
    a, b = _pair(p, q)
    pts = _support(support, a.size)
    diff = a - b
    value = float(diff @ _kernel(pts, pts, _bandwidths(bandwidths, pts)) @ diff)
    return max(value, 0.0)


def mmd_samples(x: ArrayLike, y: ArrayLike, bandwidths: Sequence[float] | None = None) -> float:
    """The (biased, V-statistic) squared MMD between two sample sets ``[N, d]``, ``[M, d]``."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    a = a[:, None] if a.ndim == 1 else a
    b = b[:, None] if b.ndim == 1 else b
    if a.size == 0 or b.size == 0 or a.shape[1] != b.shape[1]:
        raise DistributionError("MMD needs two non-empty sample sets of the same width")
    bw = _bandwidths(bandwidths, np.vstack([a, b])[:512])
    value = _kernel(a, a, bw).mean() + _kernel(b, b, bw).mean() - 2 * _kernel(a, b, bw).mean()
    return float(max(value, 0.0))


def _modes(data: Array, shape: Sequence[int] | None, min_mass: float) -> NDArray[np.int64]:
    """Strict local maxima of ``data`` on its (1-D, or ``shape``) grid with enough mass."""
    grid = data.reshape(tuple(shape)[::-1] if shape is not None else (data.size,))
    padded = np.pad(grid, 1, constant_values=-1.0)
    is_max = np.ones(grid.shape, dtype=bool)
    for axis in range(grid.ndim):
        for step in (-1, 1):
            neighbour = np.roll(padded, step, axis=axis)[tuple(slice(1, -1) for _ in grid.shape)]
            is_max &= grid > neighbour
    is_max &= grid >= min_mass
    return np.flatnonzero(is_max.ravel())


def mode_coverage(
    gen: ArrayLike,
    data: ArrayLike,
    *,
    threshold: float = 0.5,
    modes: Sequence[int] | None = None,
    shape: Sequence[int] | None = None,
    min_mass: float | None = None,
) -> float:
    """The share of the data's modes the generator covers: a mode is covered when the
    generated mass at it is at least ``threshold`` times the data's mass there. Modes are
    ``modes``, or the data's strict local maxima (on a grid of ``shape``, dimension 0
    fastest) with at least ``min_mass`` (default ``1 / (2K)``)."""
    p, q = _pair(gen, data)
    if not 0 < threshold <= 1:
        raise DistributionError(f"threshold must be in (0, 1], got {threshold!r}")
    found = (
        np.asarray(modes, dtype=np.int64)
        if modes is not None
        else _modes(q, shape, 1.0 / (2 * q.size) if min_mass is None else min_mass)
    )
    if found.size == 0:
        return 1.0
    return float(np.mean(p[found] >= threshold * q[found]))


def valid_fraction(gen: ArrayLike, support_mask: ArrayLike) -> float:
    """The generated mass on the valid support (``support_mask`` True where valid)."""
    p = _prob(gen)
    mask = np.asarray(support_mask, dtype=bool).ravel()
    if mask.shape != p.shape:
        raise DistributionError(f"the mask has {mask.size} entries, the distribution {p.size}")
    return float(p[mask].sum())


def sample_variance(samples: ArrayLike) -> float:
    """The mean per-dimension variance of samples ``[N, d]``."""
    x = np.asarray(samples, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    if x.shape[0] < 2:
        raise DistributionError("a variance needs at least 2 samples")
    return float(np.mean(np.var(x, axis=0)))


def pairwise_diversity(samples: ArrayLike, max_pairs: int = 2000, seed: int = 0) -> float:
    """The mean Euclidean distance between random pairs of samples (at most ``max_pairs``)."""
    x = np.asarray(samples, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    if x.shape[0] < 2:
        raise DistributionError("diversity needs at least 2 samples")
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(x), max_pairs)
    j = (i + rng.integers(1, len(x), max_pairs)) % len(x)
    return float(np.mean(np.linalg.norm(x[i] - x[j], axis=1)))


# --------------------------------------------------------------------------- shot noise
@dataclass(frozen=True, slots=True)
class MetricEstimate:
    """A metric of a distribution measured with shots: its value and a confidence
    interval; ``bias_floor`` is the plug-in KL's finite-sample bias (KL only)."""

    value: float
    low: float
    high: float
    bias_floor: float | None = None


def _counts(counts: ArrayLike, shots: int | None) -> tuple[NDArray[np.int64], int]:
    c = np.asarray(counts)
    if c.size == 0 or not np.all(np.isfinite(c)) or np.any(c < 0) or np.any(c != np.rint(c)):
        raise DistributionError("counts must be non-negative integers")
    ci = np.rint(c).astype(np.int64).ravel()
    total = int(ci.sum())
    if shots is not None and (isinstance(shots, bool) or shots < 1):
        raise DistributionError(f"shots must be an integer >= 1, got {shots!r}")
    if shots is not None and total != shots:
        raise DistributionError(f"the counts sum to {total}, not to the {shots} shots")
    if total == 0:
        raise DistributionError("the counts are all zero")
    return ci, total


def kl_bias_floor(counts: ArrayLike, shots: int | None = None) -> float:
    """``(K - 1) / (2 N)``: the Miller-Madow bias of a plug-in entropy (or KL) estimate
    from ``N`` shots over ``K`` non-empty bins."""
    c, n = _counts(counts, shots)
    return float((np.count_nonzero(c) - 1) / (2 * n))


def with_confidence(
    metric: Callable[[Array, Array], float],
    counts: ArrayLike,
    data: ArrayLike,
    *,
    shots: int | None = None,
    level: float = 0.95,
    n_boot: int = 200,
    seed: int = 0,
) -> MetricEstimate:
    """``metric(counts / shots, data)`` with a percentile-bootstrap interval at ``level``:
    the counts are redrawn ``n_boot`` times from the multinomial of their frequencies."""
    c, n = _counts(counts, shots)
    q = _prob(data, "the data distribution")
    if c.size != q.size:
        raise DistributionError(f"{c.size} counts for a distribution of {q.size}")
    if not 0 < level < 1:
        raise DistributionError(f"level must be in (0, 1), got {level!r}")
    p = c / n
    value = metric(p, q)
    draws = np.random.default_rng(seed).multinomial(n, p, size=n_boot) / n
    stats = np.array([metric(d, q) for d in draws])
    alpha = (1 - level) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    floor = kl_bias_floor(c) if metric is relative_entropy else None
    return MetricEstimate(float(value), float(min(low, value)), float(max(high, value)), floor)


def distribution_report(
    gen: ArrayLike,
    data: ArrayLike,
    points: ArrayLike,
    *,
    counts: ArrayLike | None = None,
    shots: int | None = None,
    shape: Sequence[int] | None = None,
    seed: int = 0,
    n_boot: int = 100,
) -> dict[str, float]:
    """Every metric by name (``relative_entropy``, ``jensen_shannon``, ``total_variation``,
    ``ks`` (1-D supports), ``wasserstein1``, ``mmd``, ``mode_coverage``, ``entropy``); with
    ``counts``, also ``<name>_low``/``<name>_high`` for the first three and
    ``relative_entropy_bias_floor``."""
    p, q = _pair(gen, data)
    pts = _support(points, p.size)
    out = {
        "relative_entropy": relative_entropy(p, q),
        "jensen_shannon": jensen_shannon(p, q),
        "total_variation": total_variation(p, q),
        "wasserstein1": wasserstein1(p, q, pts),
        "mmd": mmd(p, q, pts),
        "mode_coverage": mode_coverage(p, q, shape=shape),
        "entropy": entropy(p),
    }
    if pts.shape[1] == 1:
        out["ks"] = ks_statistic(p, q)
    if counts is not None:
        for name, fn in (
            ("relative_entropy", relative_entropy),
            ("jensen_shannon", jensen_shannon),
            ("total_variation", total_variation),
        ):
            est = with_confidence(fn, counts, q, shots=shots, seed=seed, n_boot=n_boot)
            out[f"{name}_low"], out[f"{name}_high"] = est.low, est.high
            if est.bias_floor is not None:
                out["relative_entropy_bias_floor"] = est.bias_floor
    return out

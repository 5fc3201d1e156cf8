"""Distribution metrics against scipy, closed forms and direct sums; bad inputs refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy as scipy_entropy
from scipy.stats import ks_2samp, norm, wasserstein_distance

from quantum_ml.distributions import (
    distribution_report,
    entropy,
    jensen_shannon,
    kl_bias_floor,
    ks_samples,
    ks_statistic,
    mmd,
    mmd_samples,
    mode_coverage,
    pairwise_diversity,
    relative_entropy,
    sample_variance,
    total_variation,
    valid_fraction,
    wasserstein1,
    with_confidence,
)
from quantum_ml.errors import DistributionError


def discretized_normal(mu: float, sigma: float, k: int = 16) -> np.ndarray:
    edges = np.linspace(-4, 4, k + 1)
    mass = np.diff(norm(mu, sigma).cdf(edges))
    return mass / mass.sum()


def test_relative_entropy_is_scipys_with_empty_bins_floored() -> None:
    p, q = discretized_normal(0.2, 1.0), discretized_normal(-0.3, 1.3)
    assert relative_entropy(p, q) == scipy_entropy(p, q)  # bit for bit on positive inputs
    # Two Bernoullis: KL = a ln(a/b) + (1-a) ln((1-a)/(1-b)).
    a, b = 0.3, 0.6
    closed = a * math.log(a / b) + (1 - a) * math.log((1 - a) / (1 - b))
    assert relative_entropy([a, 1 - a], [b, 1 - b]) == pytest.approx(closed, rel=1e-12)
    # An empty data bin is floored at 1e-8 (as Qiskit's QGAN), so the value stays finite.
    floored = relative_entropy([0.5, 0.5], [1.0, 0.0])
    assert floored == pytest.approx(scipy_entropy([0.5, 0.5], [1.0, 1e-8]), rel=1e-12)
    assert relative_entropy(p, p) == 0.0


def test_the_other_divergences_against_scipy_and_closed_forms() -> None:
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(12)), rng.dirichlet(np.ones(12))
    assert jensen_shannon(p, q) == pytest.approx(jensenshannon(p, q) ** 2, rel=1e-12)
    assert 0 <= jensen_shannon(p, q) <= math.log(2)
    assert jensen_shannon([1, 0], [0, 1]) == pytest.approx(math.log(2), rel=1e-12)
    assert total_variation(p, q) == pytest.approx(0.5 * np.abs(p - q).sum(), rel=1e-12)
    assert total_variation([1, 0], [0, 1]) == 1.0
    assert entropy(np.full(8, 1 / 8)) == pytest.approx(math.log(8), rel=1e-12)
    support = np.arange(12.0)
    assert wasserstein1(p, q, support) == pytest.approx(
        wasserstein_distance(support, support, p, q), rel=1e-12
    )
    # Moving all mass by 3 costs 3.
    assert wasserstein1([1, 0, 0, 0], [0, 0, 0, 1], np.arange(4.0)) == pytest.approx(3.0)


def test_ks_on_distributions_equals_ks_on_samples_that_realize_them() -> None:
    counts_p, counts_q = np.array([3, 1, 4, 1, 5]), np.array([2, 7, 1, 8, 2])
    values = np.arange(5.0)
    x, y = np.repeat(values, counts_p), np.repeat(values, counts_q)
    stat = ks_statistic(counts_p / counts_p.sum(), counts_q / counts_q.sum())
    assert stat == pytest.approx(ks_2samp(x, y).statistic, rel=1e-12)
    assert ks_samples(x, y)[0] == pytest.approx(stat, rel=1e-12)


def test_mmd_is_the_kernel_quadratic_form_and_matches_samples() -> None:
    rng = np.random.default_rng(1)
    points = np.arange(6.0)[:, None]
    p, q = rng.dirichlet(np.ones(6)), rng.dirichlet(np.ones(6))
    bw = (0.5, 1.0, 2.0)
    direct = 0.0
    for i in range(6):
        for j in range(6):
            k = sum(math.exp(-((i - j) ** 2) / (2 * b * b)) for b in bw)
            direct += (p[i] - q[i]) * (p[j] - q[j]) * k
    assert mmd(p, q, points, bw) == pytest.approx(direct, rel=1e-12)
    assert mmd(p, p, points, bw) == 0.0
    x = rng.choice(6, 4000, p=p).astype(float)
    y = rng.choice(6, 4000, p=q).astype(float)
    assert mmd_samples(x, y, bw) == pytest.approx(direct, abs=0.01)
    assert mmd(p, q, points) > 0  # the median heuristic picks bandwidths itself


def test_mode_coverage_counts_covered_modes() -> None:
    data = np.array([0.05, 0.3, 0.05, 0.05, 0.05, 0.3, 0.15, 0.05])  # modes at 1 and 5
    one = np.array([0.0, 0.9, 0.1, 0, 0, 0, 0, 0])
    both = np.array([0.0, 0.45, 0.05, 0, 0, 0.4, 0.1, 0])
    assert mode_coverage(one, data) == 0.5
    assert mode_coverage(both, data) == 1.0
    assert mode_coverage(one, data, modes=[1]) == 1.0
    # On a 2 x 2 grid (dimension 0 fastest): one mode at index 3.
    grid = np.array([0.1, 0.2, 0.2, 0.5])
    assert mode_coverage(np.array([0.4, 0.3, 0.3, 0.0]), grid, shape=[2, 2]) == 0.0
    assert valid_fraction(both, [True, True, True, False, False, True, True, False]) == 1.0


def test_sample_spread_helpers() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(0, 2.0, (20000, 2))
    assert sample_variance(x) == pytest.approx(4.0, rel=0.05)
    # X - X' is N(0, 2 sigma^2 I) in 2-D, so |X - X'| is Rayleigh: mean sqrt(pi) sigma.
    assert pairwise_diversity(x, max_pairs=20000) == pytest.approx(
        math.sqrt(math.pi) * 2.0, rel=0.05
    )


def test_shot_noise_intervals_cover_the_truth_and_the_bias_floor_fits() -> None:
    rng = np.random.default_rng(3)
    truth = discretized_normal(0.0, 1.0, 8)
    data = discretized_normal(0.4, 1.2, 8)
    true_tv = total_variation(truth, data)
    true_kl = relative_entropy(truth, data)
    covered_tv = covered_kl = 0
    for r in range(150):
        counts = rng.multinomial(2000, truth)
        tv = with_confidence(total_variation, counts, data, shots=2000, n_boot=200, seed=r)
        kl = with_confidence(relative_entropy, counts, data, shots=2000, n_boot=200, seed=r)
        covered_tv += tv.low <= true_tv <= tv.high
        covered_kl += kl.low <= true_kl <= kl.high
        assert kl.bias_floor == pytest.approx(kl_bias_floor(counts))
    assert 0.85 <= covered_tv / 150 <= 1.0
    assert 0.85 <= covered_kl / 150 <= 1.0
    # The plug-in entropy of a uniform 16-bin distribution from 200 shots is biased low by
    # about (K - 1) / (2 N).
    uniform = np.full(16, 1 / 16)
    estimates = [entropy(rng.multinomial(200, uniform) / 200) for _ in range(4000)]
    bias = math.log(16) - float(np.mean(estimates))
    assert bias == pytest.approx(15 / 400, rel=0.3)


def test_the_report_names_every_metric() -> None:
    p, q = discretized_normal(0.1, 1.0, 8), discretized_normal(0.0, 1.0, 8)
    report = distribution_report(p, q, np.arange(8.0))
    for key in (
        "relative_entropy",
        "jensen_shannon",
        "total_variation",
        "ks",
        "wasserstein1",
        "mmd",
        "mode_coverage",
        "entropy",
    ):
        assert math.isfinite(report[key])
    counts = np.random.default_rng(0).multinomial(500, p)
    noisy = distribution_report(counts / 500, q, np.arange(8.0), counts=counts, shots=500)
    assert (
        noisy["relative_entropy_low"] <= noisy["relative_entropy"] <= noisy["relative_entropy_high"]
    )
    assert noisy["relative_entropy_bias_floor"] == pytest.approx(kl_bias_floor(counts))


@pytest.mark.parametrize(
    ("p", "q", "match"),
    [
        ([0.5, 0.5], [1.0], "differ in length"),
        ([1.5, -0.5], [0.5, 0.5], "negative"),
        ([np.nan, 1.0], [0.5, 0.5], "NaN"),
        ([0.4, 0.4], [0.5, 0.5], "sum to 1"),
        ([], [], "empty"),
    ],
)
def test_bad_distributions_are_refused(p: list[float], q: list[float], match: str) -> None:
    with pytest.raises(DistributionError, match=match):
        relative_entropy(p, q)


def test_bad_counts_and_settings_are_refused() -> None:
    data = np.full(4, 0.25)
    with pytest.raises(DistributionError, match="shots"):
        with_confidence(total_variation, [1, 1, 1, 1], data, shots=0)
    with pytest.raises(DistributionError, match="sum to"):
        with_confidence(total_variation, [1, 1, 1, 1], data, shots=5)
    with pytest.raises(DistributionError, match="integers"):
        kl_bias_floor([0.5, 1.5])
    with pytest.raises(DistributionError, match="bandwidths"):
        mmd(data, data, np.arange(4.0), bandwidths=[0.0])
    with pytest.raises(DistributionError, match="threshold"):
        mode_coverage(data, data, threshold=0.0)

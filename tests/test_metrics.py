"""The sample-quality metrics on inputs whose answers are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mhgan_dist import data, metrics


def grid_points(counts_per_mode: list[int], rng: np.random.Generator, shift: float = 0.0) -> np.ndarray:
    """Grid samples with the given count at each of the 25 modes, std 0.05, shifted along x."""
    parts = [data.GRID_MODES[i] + 0.05 * rng.standard_normal((c, 2)) for i, c in enumerate(counts_per_mode)]
    points = np.concatenate(parts)
    points[:, 0] += shift
    return points


def test_modes_match_the_datasets():
    index, distance = metrics.nearest_mode(data.GRID_MODES, data.GRID_MODES)
    assert np.array_equal(index, np.arange(25)) and np.all(distance == 0)
    index, _ = metrics.nearest_mode(data.MIXTURE_MODES[:, None], data.MIXTURE_MODES[:, None])
    assert np.array_equal(index, np.arange(4))


def test_js_of_identical_distributions_is_zero_and_of_disjoint_ones_is_log_2():
    p = np.array([3.0, 1.0, 0.0, 6.0])
    assert metrics.js_divergence(p, 2 * p) == pytest.approx(0.0, abs=1e-15)
    assert metrics.js_divergence([1, 0], [0, 1]) == pytest.approx(math.log(2))
    assert metrics.js_divergence([1, 0], [0, 1], base=2) == pytest.approx(1.0)


def test_a_grid_sample_with_every_mode_equally_is_perfect():
    m = metrics.grid_metrics(data.GRID_MODES.repeat(40, axis=0))
    assert m.js_nats == pytest.approx(0.0, abs=1e-15) and m.js_bits == pytest.approx(0.0, abs=1e-15)
    assert m.hq_share == 1.0 and m.modes_recovered == 25 and m.n == 1000
    assert m.counts == [40] * 25 + [0]


def test_one_dropped_mode_gives_the_hand_computed_js():
    # P: 1/24 on 24 modes, 0 on the last and on the not-HQ bin; Q: 1/25 on each mode.
    # M = (P + Q)/2 = 49/1200 on 24 modes and 1/50 on the dropped one, so
    # KL(P||M) = ln(50/49), KL(Q||M) = (24/25) ln(48/49) + (1/25) ln 2.
    expected = 0.5 * (math.log(50 / 49) + 24 / 25 * math.log(48 / 49) + 1 / 25 * math.log(2))
    # Points 0.1 (2 std) from their modes: high quality, nearest mode unambiguous.
    points = data.GRID_MODES[:24].repeat(100, axis=0) + np.array([0.1, 0.0], dtype=np.float32)
    m = metrics.grid_metrics(points)
    assert m.counts == [100] * 24 + [0, 0] and m.hq_share == 1.0
    assert m.js_nats == pytest.approx(expected, rel=1e-12)
    assert m.js_bits == pytest.approx(expected / math.log(2), rel=1e-12)
    assert m.modes_recovered == 24


def test_samples_off_the_modes_fill_the_26th_bin():
    # Half the samples far from every mode: P = (1/50 each mode, 1/2 not HQ).
    points = np.concatenate([data.GRID_MODES.repeat(2, axis=0), np.full((50, 2), 0.5)])
    m = metrics.grid_metrics(points)
    assert m.counts[-1] == 50 and m.hq_share == 0.5 and m.modes_recovered == 25
    p = np.append(np.full(25, 1 / 50), 0.5)
    q = np.append(np.full(25, 1 / 25), 0.0)
    mid = (p + q) / 2
    expected = 0.5 * np.sum(p * np.log(p / mid)) + 0.5 * np.sum(q[:25] * np.log(q[:25] / mid[:25]))
    assert m.js_nats == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("shift_stds", [0.0, 2.0, 4.0, 5.0])
def test_a_shifted_grid_loses_hq_share_as_the_noncentral_chi_square_says(shift_stds):
    # Shifting every sample by s along x: |e + s|^2 / sigma^2 is non-central chi-square with
    # 2 degrees of freedom and non-centrality (s/sigma)^2, so the HQ share is its cdf at 4^2.
    n = 50_000
    rng = np.random.default_rng(int(shift_stds * 10))
    points = grid_points([n // 25] * 25, rng, shift=shift_stds * 0.05)
    expected = stats.ncx2.cdf(16.0, 2, shift_stds**2) if shift_stds else stats.chi2.cdf(16.0, 2)
    tolerance = 5.0 * math.sqrt(expected * (1 - expected) / n) + 1e-12  # 5 binomial standard errors
    assert abs(metrics.grid_metrics(points).hq_share - expected) <= tolerance


def test_modes_recovered_counts_modes_with_enough_hq_samples():
    counts = [3] * 20 + [1] * 3 + [0] * 2
    points = np.concatenate([data.GRID_MODES[i].reshape(1, 2).repeat(c, axis=0) for i, c in enumerate(counts)])
    assert metrics.grid_metrics(points).modes_recovered == 23
    assert metrics.grid_metrics(points, min_count=2).modes_recovered == 20


def test_mixture_js_has_no_hq_bin_and_matches_a_dropped_mode():
    points = np.repeat(np.array([0.1, 1.05, 1.9]), 100)  # the mode at 3 is missed
    m = metrics.mixture_metrics(points)
    assert m.counts == [100, 100, 100, 0, 0] and m.hq_share == 1.0 and m.modes_recovered == 3
    # P = 1/3 on three modes, Q = 1/4 on four: M = 7/24 on three, 1/8 on the fourth.
    expected = 0.5 * math.log((1 / 3) / (7 / 24)) + 0.5 * (0.75 * math.log((1 / 4) / (7 / 24)) + 0.25 * math.log(2))
    assert m.js_nats == pytest.approx(expected, rel=1e-12)
    far = metrics.mixture_metrics(np.array([-5.0, 0.0, 1.0, 2.0, 3.0, 9.0]))
    assert far.counts[-1] == 0  # far-away samples still go to their nearest mode


def test_inception_score_of_uniform_and_one_hot_probabilities():
    classes = 10
    uniform = np.full((500, classes), 1.0 / classes)
    assert metrics.inception_score(uniform) == pytest.approx((1.0, 0.0))
    one_hot = np.eye(classes)[np.arange(500) % classes]
    mean, std = metrics.inception_score(one_hot, splits=5)
    assert mean == pytest.approx(classes) and std == pytest.approx(0.0, abs=1e-12)
    collapsed = np.eye(classes)[np.zeros(500, dtype=int)]  # confident but all one class
    assert metrics.inception_score(collapsed)[0] == pytest.approx(1.0)


def test_inception_score_refuses_rows_that_are_not_distributions():
    with pytest.raises(ValueError):
        metrics.inception_score(np.full((4, 3), 0.5))
    with pytest.raises(ValueError):
        metrics.inception_score(np.full((4, 3), 1 / 3), splits=5)


def test_fid_of_identical_features_is_zero():
    features = np.random.default_rng(2).standard_normal((400, 16))
    assert metrics.fid(features, features) == pytest.approx(0.0, abs=1e-8)


def test_fid_of_a_shifted_copy_is_the_squared_mean_difference():
    rng = np.random.default_rng(3)
    features = rng.standard_normal((300, 8)) @ rng.standard_normal((8, 8))  # correlated features
    shift = rng.standard_normal(8)
    assert metrics.fid(features, features + shift) == pytest.approx(float(shift @ shift), rel=1e-8)


def test_frechet_distance_of_known_gaussians():
    # 1-D: (mu1 - mu2)^2 + (s1 - s2)^2.
    assert metrics.frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-1.0]), np.array([[1.0]])) == (
        pytest.approx(4.0 + 1.0)
    )
    # Commuting diagonal covariances: sum of (sqrt(a) - sqrt(b))^2.
    a, b = np.array([1.0, 9.0, 0.25]), np.array([4.0, 1.0, 0.25])
    expected = float(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    assert metrics.frechet_distance(np.zeros(3), np.diag(a), np.zeros(3), np.diag(b)) == pytest.approx(expected)


def test_reliability_curve_bins():
    p = np.array([0.05, 0.05, 0.95, 0.95, 0.5])
    y = np.array([0, 1, 1, 1, 0])
    mean_p, share, count = metrics.reliability_curve(p, y, bins=10)
    assert count.tolist() == [2, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    assert share[0] == 0.5 and share[9] == 1.0 and share[5] == 0.0
    assert mean_p[0] == pytest.approx(0.05) and np.isnan(mean_p[1])


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError):
        metrics.grid_metrics(np.zeros((5, 3)))
    with pytest.raises(ValueError):
        metrics.grid_metrics(np.array([[np.nan, 0.0]]))
    with pytest.raises(ValueError):
        metrics.js_divergence([0, 0], [1, 1])
    with pytest.raises(ValueError):
        metrics.fid(np.zeros((3, 2)), np.zeros((3, 4)))

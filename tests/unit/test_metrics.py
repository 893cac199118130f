"""The sample-quality metrics on inputs whose answers are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mhgan_dist.training import datasets
from mhgan_dist.quality import metrics


def grid_points(counts_per_mode: list[int], rng: np.random.Generator, shift: float = 0.0) -> np.ndarray:
    """Grid samples with the given count at each of the 25 modes, std 0.05, shifted along x."""
    parts = [datasets.GRID_MODES[i] + 0.05 * rng.standard_normal((c, 2)) for i, c in enumerate(counts_per_mode)]
    points = np.concatenate(parts)
    points[:, 0] += shift
    return points


def test_modes_match_the_datasets():
    index, distance = metrics.nearest_mode(datasets.GRID_MODES, datasets.GRID_MODES)
    assert np.array_equal(index, np.arange(25)) and np.all(distance == 0)
    index, _ = metrics.nearest_mode(datasets.MIXTURE_MODES[:, None], datasets.MIXTURE_MODES[:, None])
    assert np.array_equal(index, np.arange(4))


def test_js_of_identical_distributions_is_zero_and_of_disjoint_ones_is_log_2():
    p = np.array([3.0, 1.0, 0.0, 6.0])
    assert metrics.js_divergence(p, 2 * p) == pytest.approx(0.0, abs=1e-15)
    assert metrics.js_divergence([1, 0], [0, 1]) == pytest.approx(math.log(2))
    assert metrics.js_divergence([1, 0], [0, 1], base=2) == pytest.approx(1.0)


def test_a_grid_sample_with_every_mode_equally_is_perfect():
    m = metrics.grid_metrics(datasets.GRID_MODES.repeat(40, axis=0))
    assert m.js_nats == pytest.approx(0.0, abs=1e-15) and m.js_bits == pytest.approx(0.0, abs=1e-15)
    assert m.hq_share == 1.0 and m.modes_recovered == 25 and m.n == 1000
    assert m.counts == [40] * 25 + [0]


def test_one_dropped_mode_gives_the_hand_computed_js():
    # P: 1/24 on 24 modes, 0 on the last and on the not-HQ bin; Q: 1/25 on each mode.
    # M = (P + Q)/2 = 49/1200 on 24 modes and 1/50 on the dropped one, so
    # KL(P||M) = ln(50/49), KL(Q||M) = (24/25) ln(48/49) + (1/25) ln 2.
    expected = 0.5 * (math.log(50 / 49) + 24 / 25 * math.log(48 / 49) + 1 / 25 * math.log(2))
    # Points 0.1 (2 std) from their modes: high quality, nearest mode unambiguous.
    points = datasets.GRID_MODES[:24].repeat(100, axis=0) + np.array([0.1, 0.0], dtype=np.float32)
    m = metrics.grid_metrics(points)
    assert m.counts == [100] * 24 + [0, 0] and m.hq_share == 1.0
    assert m.js_nats == pytest.approx(expected, rel=1e-12)
    assert m.js_bits == pytest.approx(expected / math.log(2), rel=1e-12)
    assert m.modes_recovered == 24


def test_samples_off_the_modes_fill_the_26th_bin():
    # Half the samples far from every mode: P = (1/50 each mode, 1/2 not HQ).
    points = np.concatenate([datasets.GRID_MODES.repeat(2, axis=0), np.full((50, 2), 0.5)])
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
    points = np.concatenate([datasets.GRID_MODES[i].reshape(1, 2).repeat(c, axis=0) for i, c in enumerate(counts)])
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


# ------------------------------------------------------------ k-NN manifold scores


def slow_manifold_terms(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """The definitions, one point at a time (closed balls; radius = k-th neighbour, the point itself excluded)."""
    def radii(x):
        out = []
        for i in range(len(x)):
            d = np.sort(np.linalg.norm(np.delete(x, i, axis=0) - x[i], axis=1))
            out.append(d[k - 1])
        return np.array(out)

    r_real, r_fake = radii(real), radii(fake)
    d = np.linalg.norm(real[:, None, :] - fake[None, :, :], axis=2)  # [N, M]
    return {"fake_in_real": (d <= r_real[:, None]).any(axis=0), "fake_ball_count": (d <= r_real[:, None]).sum(axis=0),
            "real_in_fake": (d <= r_fake[None, :]).any(axis=1), "real_ball_fill": (d <= r_real[:, None]).sum(axis=1)}


def test_blocked_manifold_terms_match_the_definitions_point_by_point(monkeypatch):
    rng = np.random.default_rng(4)
    real = rng.standard_normal((130, 6))
    fake = 0.8 * rng.standard_normal((130, 6)) + 0.3
    monkeypatch.setattr(metrics, "_BLOCK_BYTES", 8 * 130 * 17)  # 17-row blocks: several, and a ragged last one
    terms = metrics.manifold_terms(real, fake, k=4)
    slow = slow_manifold_terms(real, fake, 4)
    for name, expected in slow.items():
        np.testing.assert_array_equal(getattr(terms, name), expected, err_msg=name)
    radii = metrics.knn_radii(real, 4)
    np.testing.assert_allclose(radii, [np.sort(np.linalg.norm(np.delete(real, i, 0) - real[i], axis=1))[3]
                                       for i in range(130)], rtol=1e-9)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_identical_sets_score_one_and_density_k_plus_one_over_k(k):
    # Each closed ball holds its centre and its k neighbours: (k + 1) per ball, N (k + 1) / (k N).
    x = np.random.default_rng(k).standard_normal((600, 12))
    m = metrics.manifold_metrics(x, x.copy(), k=k)
    assert (m.precision, m.recall, m.coverage) == (1.0, 1.0, 1.0)
    assert m.density == (k + 1) / k


def coverage_miss_probability(n_real: int, n_fake: int, k: int) -> float:
    """P(real i's ball holds no generated point) for exchangeable sets: its k nearest among the other
    n_real - 1 reals and the n_fake generated points are all reals, C(n_real - 1, k) / C(n_real - 1 + n_fake, k)."""
    return math.comb(n_real - 1, k) / math.comb(n_real - 1 + n_fake, k)


def check_same_distribution_scores(real: np.ndarray, fake: np.ndarray, k: int) -> None:
    """Density about 1 and coverage about 1 - miss, for two sets from one distribution.

    Expectations (exact for exchangeable points, by symmetry): a generated y lies in
    real i's ball iff y ranks among the k nearest of the N - 1 other reals and y,
    probability k/N, so E[density] = (1/kM) M N k/N = 1; coverage as in
    coverage_miss_probability. Standard errors: density is a two-sample U-statistic,
    Var ~ Var(C_j)/(k^2 M) + Var(B_i)/(k^2 N) to first order (C_j: real balls holding
    generated j; B_i: generated points in real ball i), plugged in from the terms;
    coverage is a mean of N indicators, Var ~ p(1-p)/N. Neighbouring balls share
    points, which the first-order terms leave out, so the tolerance is 6 standard errors.
    """
    terms = metrics.manifold_terms(real, fake, k)
    m = metrics.manifold_metrics(real, fake, k, terms=terms)
    n, mm = len(real), len(fake)
    se_density = math.sqrt(terms.fake_ball_count.var() / (k * k * mm) + terms.real_ball_fill.var() / (k * k * n))
    assert abs(m.density - 1.0) <= 6 * se_density, (m.density, se_density)
    expected = 1.0 - coverage_miss_probability(n, mm, k)
    se_coverage = math.sqrt(expected * (1 - expected) / n)
    assert abs(m.coverage - expected) <= 6 * se_coverage, (m.coverage, expected, se_coverage)
    assert abs(expected - (1 - 2.0**-k)) < 1e-3  # the large-n limit the papers quote


def test_two_samples_of_one_gaussian_give_density_one_and_coverage_one_minus_two_to_the_minus_k():
    rng = np.random.default_rng(11)
    check_same_distribution_scores(rng.standard_normal((3000, 16)), rng.standard_normal((3000, 16)), k=5)


def test_manifold_scores_refuse_unequal_sets_and_impossible_k():
    x = np.zeros((10, 3))
    with pytest.raises(ValueError, match="equal set sizes"):
        metrics.manifold_metrics(x, np.zeros((11, 3)))
    with pytest.raises(ValueError, match="k must be"):
        metrics.manifold_metrics(x, x, k=10)
    with pytest.raises(ValueError, match="dimension"):
        metrics.manifold_terms(x, np.zeros((10, 4)))


# --------------------------------------------------------------- class mix


def test_class_mix_of_a_uniform_set_is_zero_and_of_one_class_is_the_closed_form():
    uniform = metrics.class_mix(np.arange(1000) % 10, 10)
    assert uniform.js_nats == pytest.approx(0.0, abs=1e-15) and uniform.classes_recovered == 10
    assert uniform.counts == [100] * 10
    # P = one class, Q = uniform over C: M = (C + 1)/(2C) on that class and 1/(2C) elsewhere.
    # KL(P||M) = ln(2C/(C + 1)); KL(Q||M) = (1/C) ln(2/(C + 1)) + ((C - 1)/C) ln 2.
    c = 10
    expected = 0.5 * math.log(2 * c / (c + 1)) + 0.5 * (math.log(2 / (c + 1)) / c + (c - 1) / c * math.log(2))
    one = metrics.class_mix(np.full(50, 7), c)
    assert one.js_nats == pytest.approx(expected, rel=1e-12)
    assert one.js_bits == pytest.approx(expected / math.log(2), rel=1e-12)
    assert one.classes_recovered == 1 and one.counts[7] == 50
    with pytest.raises(ValueError):
        metrics.class_mix(np.array([0, 10]), 10)


# ----------------------------------------------------------------- spreads


ROUNDS = 400
# The bootstrap standard error from R rounds is itself an estimate, with relative
# standard deviation about 1/sqrt(2 (R - 1)) ~ 3.5% at R = 400; it targets the true
# standard error to O(1/n). Tolerance: 5 of those, 18%.
SPREAD_RTOL = 5 / math.sqrt(2 * (ROUNDS - 1))


def test_bootstrap_of_a_mean_matches_the_standard_error():
    values = np.random.default_rng(5).exponential(size=2000)
    spread = metrics.bootstrap(lambda idx: float(values[idx].mean()), values.size, np.random.default_rng(6),
                               rounds=ROUNDS)
    assert spread.value == values.mean() and spread.method == "bootstrap" and spread.rounds == ROUNDS
    assert spread.std == pytest.approx(values.std() / math.sqrt(values.size), rel=SPREAD_RTOL)
    assert spread.low < spread.value < spread.high


def test_manifold_bootstrap_spread_of_precision_is_binomial():
    rng = np.random.default_rng(7)
    real, fake = rng.standard_normal((1500, 8)), 1.3 * rng.standard_normal((1500, 8))
    terms = metrics.manifold_terms(real, fake)
    spreads = metrics.manifold_bootstrap(terms, np.random.default_rng(8), rounds=ROUNDS)
    full = metrics.manifold_metrics(real, fake, terms=terms)
    for name in ("precision", "recall", "coverage"):
        p = getattr(full, name)
        assert spreads[name].value == p
        assert spreads[name].std == pytest.approx(math.sqrt(p * (1 - p) / 1500), rel=SPREAD_RTOL), name
    assert spreads["density"].value == full.density and spreads["density"].std > 0


def test_seed_spread_is_mean_and_sample_std():
    s = metrics.seed_spread([1.0, 2.0, 4.0])
    assert (s.value, s.low, s.high, s.rounds, s.method) == (7 / 3, 1.0, 4.0, 3, "seeds")
    assert s.std == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1))
    assert metrics.seed_spread([2.5]).std == 0.0

"""The shipped Fashion-MNIST test-split classifier features as a reference for the sample-quality metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mhgan_dist.quality import metrics
from tests.unit.test_metrics import check_same_distribution_scores


# ------------------------------------- the shipped Fashion-MNIST test-split features

# The classifier features of all 10,000 test images ship with the package (package data of
# mhgan_dist/checkpoints/fashion-classifier/), so these tests need no dataset.


@pytest.fixture(scope="module")
def test_split():
    from mhgan_dist.quality.networks import load_reference_features

    reference = load_reference_features()
    assert reference.features.shape == (10_000, 128) and reference.labels.shape == (10_000,)
    order = np.random.default_rng(12).permutation(10_000)  # two random disjoint halves: exchangeable sets
    return reference, order[:5000], order[5000:]


def test_two_halves_of_the_test_split_give_density_one_and_coverage_one_minus_two_to_the_minus_k(test_split):
    reference, a, b = test_split
    check_same_distribution_scores(reference.features[a], reference.features[b], k=5)


def test_a_class_removed_lowers_recall_and_coverage_but_not_precision(test_split):
    reference, a, b = test_split
    n, removed_class = 4000, 1  # trousers: the most distinct class
    real = reference.features[a[:n]]
    control = reference.features[b[:n]]
    kept = b[reference.labels[b] != removed_class]
    assert kept.size >= n
    without = reference.features[kept[:n]]
    full = metrics.manifold_metrics(real, control)
    cut = metrics.manifold_metrics(real, without)
    # Each score is a mean of n indicators; the difference of two has standard error at most
    # sqrt(2 p (1 - p) / n) (the two sets share the real set, which only makes it smaller). 5 of those.
    def margin(p: float) -> float:
        return 5 * math.sqrt(2 * p * (1 - p) / n)

    assert cut.recall < full.recall - margin(full.recall), (cut, full)
    assert cut.coverage < full.coverage - margin(full.coverage), (cut, full)
    assert cut.precision >= full.precision - margin(full.precision), (cut, full)
    # about a tenth of the real set is trousers, which only trousers cover
    assert full.coverage - cut.coverage > 0.05


def test_fid_of_the_test_split_with_its_shipped_statistics_is_zero_up_to_float16_rounding(test_split):
    reference, _, _ = test_split
    assert metrics.fid(reference.features, reference.features) == pytest.approx(0.0, abs=1e-8)
    mean, cov = metrics.gaussian_statistics(reference.features)
    # The shipped statistics are of the float32 features; the shipped features are rounded to float16
    # (relative error 2^-11 ~ 5e-4 per value), which moves the FID by far less than 1e-3 of the trace.
    assert metrics.frechet_distance(mean, cov, reference.mean, reference.cov) < 1e-3 * np.trace(reference.cov)

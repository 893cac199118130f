"""Sample-quality metrics: the toy benchmarks' mode metrics, Inception Score, FID, k-NN manifold scores.

numpy only: no torch, no Ray, no files. Scoring networks (Inception, the digit
classifier) live in :mod:`mhgan_dist.quality.networks`; this module only turns
their outputs (class probabilities, feature vectors) into scores.

Toy problems (Turner et al. 2019, after Azadi et al. 2019):

- 2-D grid (25 modes, std 0.05): a sample is *high quality* (HQ) when it lies
  within 4 standard deviations (0.2) of its nearest mode. The JS divergence is
  between the histogram of nearest modes, with a 26th bin for the samples that
  are not HQ, and the uniform distribution over the 25 modes. A mode is
  *recovered* when at least one HQ sample is assigned to it.
- 1-D mixture (4 modes 1 apart, std 0.25): the JS divergence of the
  nearest-mode histogram over the 4 modes against uniform (a 4-std rule would
  exclude nothing there).

The papers do not state the logarithm base of their JS divergence, so every
JS value is given in nats (maximum ln 2 ~ 0.693) and in bits (maximum 1).

Images, in a scoring network's feature space (see :func:`manifold_metrics`):

- precision and recall (Kynkaanniemi et al., NeurIPS 2019): the share of
  generated samples inside the real k-NN manifold, and of real samples inside
  the generated one. The manifold of a set is the union of closed balls
  B(x_i, r_i), r_i the distance from x_i to its k-th nearest neighbour in the
  same set, itself excluded.
- density and coverage (Naeem et al., ICML 2020): density =
  (1/kM) sum_j sum_i 1[y_j in B(x_i, r_i)] over M generated y_j and real
  balls; coverage = (1/N) sum_i 1[some y_j in B(x_i, r_i)]. Identical sets give
  precision = recall = coverage = 1 and density = (k + 1)/k (each closed ball
  holds its centre and its k neighbours); two independent sets from one
  distribution give density about 1 and coverage about 1 - 2^-k.
- the class mix: the histogram of the classifier's argmax against uniform, as
  a JS divergence, and the classes recovered.

Each figure can carry a spread: :func:`bootstrap` resamples the generated
samples; :func:`manifold_bootstrap` resamples the per-sample terms of the
k-NN scores with their balls held fixed; :func:`seed_spread` summarises one
figure over run seeds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "HQ_STDS",
    "ModeMetrics",
    "nearest_mode",
    "mode_histogram",
    "js_divergence",
    "mode_metrics",
    "grid_metrics",
    "mixture_metrics",
    "inception_score",
    "gaussian_statistics",
    "frechet_distance",
    "fid",
    "reliability_curve",
    "pairwise_sq_distances",
    "knn_radii",
    "ManifoldTerms",
    "ManifoldMetrics",
    "manifold_terms",
    "manifold_metrics",
    "ClassMix",
    "class_mix",
    "Spread",
    "bootstrap",
    "manifold_bootstrap",
    "seed_spread",
    "DEFAULT_K",
]

HQ_STDS = 4.0
"""High quality = within this many standard deviations of the nearest mode."""

_GRID_MODES = np.array([(x, y) for x in range(-2, 3) for y in range(-2, 3)], dtype=np.float64)
_GRID_STD = 0.05
_MIXTURE_MODES = np.array([[0.0], [1.0], [2.0], [3.0]])
_MIXTURE_STD = 0.25


def _as_points(samples: np.ndarray, dim: int, name: str = "samples") -> np.ndarray:
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 1 and dim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{name} must have shape [n, {dim}], got {list(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def nearest_mode(samples: np.ndarray, modes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index (int64 [n], in 0..m-1) and Euclidean distance (float64 [n]) of each sample's nearest mode.

    samples: [n, d]; modes: [m, d]. Ties go to the lower mode index.
    """
    modes = np.asarray(modes, dtype=np.float64)
    if modes.ndim != 2 or modes.shape[0] == 0:
        raise ValueError(f"modes must have shape [m, d] with m >= 1, got {list(modes.shape)}")
    x = _as_points(samples, modes.shape[1])
    index = np.empty(x.shape[0], dtype=np.int64)
    distance = np.empty(x.shape[0], dtype=np.float64)
    chunk = max(1, (1 << 22) // max(1, modes.size))  # bounds the [chunk, m, d] temporary
    for a in range(0, x.shape[0], chunk):
        squared = ((x[a : a + chunk, None, :] - modes[None, :, :]) ** 2).sum(axis=2)
        index[a : a + chunk] = squared.argmin(axis=1)
        distance[a : a + chunk] = np.sqrt(squared[np.arange(squared.shape[0]), index[a : a + chunk]])
    return index, distance


def mode_histogram(samples: np.ndarray, modes: np.ndarray, radius: float | None) -> np.ndarray:
    """Counts per nearest mode, int64 [m + 1]; the last bin counts samples farther than ``radius``.

    radius: the high-quality distance (data units); None puts every sample in a mode bin.
    """
    index, distance = nearest_mode(samples, modes)
    m = np.asarray(modes).shape[0]
    if radius is not None:
        index = np.where(distance <= radius, index, m)
    return np.bincount(index, minlength=m + 1).astype(np.int64)


def js_divergence(p: np.ndarray, q: np.ndarray, base: float = np.e) -> float:
    """Jensen-Shannon divergence between two histograms (normalised here), in units of log ``base``.

    p, q: non-negative [k] with positive sums. 0 for equal distributions; at most
    log_base(2) (ln 2 nats, 1 bit) for disjoint ones. Empty bins contribute 0.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"histograms must be 1-D of equal length, got {list(p.shape)} and {list(q.shape)}")
    if (p < 0).any() or (q < 0).any() or not (p.sum() > 0 and q.sum() > 0):
        raise ValueError("histograms must be non-negative with a positive total")
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl_to_m(a: np.ndarray) -> float:
        used = a > 0
        return float(np.sum(a[used] * np.log(a[used] / m[used])))

    js = 0.5 * kl_to_m(p) + 0.5 * kl_to_m(q)
    return max(0.0, js) / float(np.log(base))


@dataclass(frozen=True)
class ModeMetrics:
    """Mode metrics of n samples against a mixture with m equal modes.

    hq_share: share of samples within the HQ radius of their nearest mode, in [0, 1].
    js_nats, js_bits: JS divergence of the (m + 1)-bin histogram (last bin: not HQ)
      against uniform over the m modes; nats in [0, ln 2], bits in [0, 1].
    modes_recovered: modes with at least ``min_count`` HQ samples, 0..m.
    counts: per-mode HQ counts then the not-HQ count, [m + 1].
    """

    n: int
    num_modes: int
    hq_share: float
    js_nats: float
    js_bits: float
    modes_recovered: int
    counts: list[int]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def mode_metrics(
    samples: np.ndarray, modes: np.ndarray, radius: float | None, min_count: int = 1
) -> ModeMetrics:
    """HQ share, JS divergence against uniform over the modes, and modes recovered.

    samples: [n, d]; modes: [m, d]; radius: HQ distance in data units (None: all HQ).
    """
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    counts = mode_histogram(samples, modes, radius)
    m = counts.size - 1
    uniform = np.append(np.ones(m), 0.0)
    n = int(counts.sum())
    return ModeMetrics(
        n=n,
        num_modes=m,
        hq_share=float(counts[:m].sum() / n),
        js_nats=js_divergence(counts, uniform),
        js_bits=js_divergence(counts, uniform, base=2.0),
        modes_recovered=int(np.count_nonzero(counts[:m] >= min_count)),
        counts=counts.tolist(),
    )


def grid_metrics(samples: np.ndarray, min_count: int = 1) -> ModeMetrics:
    """The 2-D grid's metrics: samples [n, 2]; HQ radius 4 x 0.05 = 0.2; 26 bins."""
    return mode_metrics(samples, _GRID_MODES, HQ_STDS * _GRID_STD, min_count)


def mixture_metrics(samples: np.ndarray, min_count: int = 1) -> ModeMetrics:
    """The 1-D mixture's metrics: samples [n, 1] or [n]; 4 modes, no HQ exclusion (hq_share is 1)."""
    return mode_metrics(samples, _MIXTURE_MODES, None, min_count)


# --------------------------------------------------------------- image scores


def _probabilities(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise ValueError(f"class probabilities must have shape [n, classes] with classes >= 2, got {list(p.shape)}")
    if not np.isfinite(p).all() or (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("class probabilities must be finite, non-negative, and sum to 1 per row")
    return p


def inception_score(probs: np.ndarray, splits: int = 1) -> tuple[float, float]:
    """Inception Score exp(E_x KL(p(y|x) || p(y))): (mean, std) over ``splits`` equal splits.

    probs: [n, classes] class probabilities per sample (softmax outputs). The
    score lies in [1, classes]: 1 when every sample gets the same distribution,
    ``classes`` for confident predictions spread evenly over the classes. The
    split scheme is Salimans et al.'s (the MH-GAN paper: 5,120 images in 80
    splits); the last split takes the remainder.
    """
    p = _probabilities(probs)
    if not 1 <= splits <= p.shape[0]:
        raise ValueError(f"splits must be in [1, {p.shape[0]}], got {splits}")
    scores = []
    for part in np.array_split(p, splits):
        marginal = part.mean(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(part > 0, part * (np.log(part) - np.log(marginal)), 0.0)
        scores.append(float(np.exp(terms.sum(axis=1).mean())))
    return float(np.mean(scores)), float(np.std(scores))


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [d] and unbiased covariance [d, d] (float64) of features [n, d], n >= 2."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must have shape [n, d] with n >= 2, got {list(f.shape)}")
    if not np.isfinite(f).all():
        raise ValueError("features contain NaN or infinite values")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(0.5 * (a + a.T))
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)); in squared
    feature units, >= 0. Tr((sigma1 sigma2)^(1/2)) is computed as the sum of the
    square roots of the eigenvalues of the symmetric s1^(1/2) sigma2 s1^(1/2),
    which has the same spectrum and avoids a non-symmetric matrix square root.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError("means must be [d] and covariances [d, d] of one d")
    root1 = _psd_sqrt(sigma1)
    inner = root1 @ sigma2 @ root1
    trace_sqrt = float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (inner + inner.T)), 0.0, None))))
    value = float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)
    return max(0.0, value)


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [n_a, d] and [n_b, d].

    With Inception pool3 features this is FID (Heusel et al. 2017); with other
    features it is the same formula on another embedding, not comparable to it.
    """
    mu_a, sigma_a = gaussian_statistics(features_a)
    mu_b, sigma_b = gaussian_statistics(features_b)
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"feature sets differ in dimension: {mu_a.shape[0]} and {mu_b.shape[0]}")
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)


# ----------------------------------------------------------- calibration plot


def reliability_curve(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin of predicted P(real): mean prediction, observed share of real, count.

    probabilities: [n] in [0, 1]; labels: [n], 1 = real, 0 = generated. Returns
    three [bins] arrays (float64, float64, int64); empty bins hold NaN means.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if p.shape != y.shape or p.ndim != 1 or p.size == 0:
        raise ValueError("probabilities and labels must be non-empty 1-D arrays of equal length")
    index = np.minimum((np.clip(p, 0.0, 1.0) * bins).astype(np.int64), bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(index, weights=p, minlength=bins) / count
        share = np.bincount(index, weights=y, minlength=bins) / count
    return mean_p, share, count.astype(np.int64)


# ------------------------------------------------- k-NN manifold scores (images)

DEFAULT_K = 5
"""k of the k-NN manifolds (Kynkaanniemi et al. and Naeem et al. both recommend 3 to 5; the issue fixes 5)."""

_BLOCK_BYTES = 32 << 20  # one float64 block of squared distances; 10,000 x 10,000 runs in ~400 row blocks


def _feature_matrix(features: np.ndarray, name: str) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] == 0 or f.shape[1] == 0:
        raise ValueError(f"{name} must have shape [n, d] with n, d >= 1, got {list(f.shape)}")
    if not np.isfinite(f).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return f


def _sq_distance_blocks(a: np.ndarray, b: np.ndarray):
    """Yields (first row, float64 [rows, len(b)]) blocks of squared Euclidean distances from rows of a to b.

    ||a||^2 + ||b||^2 - 2 a.b, clipped at 0. Blocks are sized by len(b) only, so
    two calls with equal inputs give bitwise-equal numbers: the self distances
    behind the radii and the cross distances they are compared with agree
    exactly when the two sets are the same (the identical-set identities).
    """
    rows = max(1, _BLOCK_BYTES // (8 * max(1, b.shape[0])))
    b_norms = np.einsum("ij,ij->i", b, b)
    for start in range(0, a.shape[0], rows):
        block = a[start : start + rows]
        d = np.einsum("ij,ij->i", block, block)[:, None] + b_norms[None, :] - 2.0 * (block @ b.T)
        np.maximum(d, 0.0, out=d)
        yield start, d


def pairwise_sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances float64 [n_a, n_b] between feature sets [n_a, d] and [n_b, d] (small sets)."""
    a, b = _feature_matrix(a, "first features"), _feature_matrix(b, "second features")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets differ in dimension: {a.shape[1]} and {b.shape[1]}")
    out = np.empty((a.shape[0], b.shape[0]))
    for start, d in _sq_distance_blocks(a, b):
        out[start : start + d.shape[0]] = d
    return out


def _knn_sq_radii(x: np.ndarray, k: int) -> np.ndarray:
    n = x.shape[0]
    radii = np.empty(n)
    for start, d in _sq_distance_blocks(x, x):
        rows = np.arange(d.shape[0])
        d[rows, start + rows] = np.inf  # a point is not its own neighbour (duplicates still are)
        radii[start : start + d.shape[0]] = np.partition(d, k - 1, axis=1)[:, k - 1]
    return radii


def _check_k(k: int, n: int) -> None:
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for a set of {n} points, got {k}")


def knn_radii(features: np.ndarray, k: int = DEFAULT_K) -> np.ndarray:
    """Distance float64 [n] from each point of features [n, d] to its k-th nearest neighbour, itself excluded."""
    x = _feature_matrix(features, "features")
    _check_k(k, x.shape[0])
    return np.sqrt(_knn_sq_radii(x, k))


@dataclass(frozen=True)
class ManifoldTerms:
    """Per-sample terms of the k-NN scores, from which :class:`ManifoldMetrics` are means.

    fake_in_real: bool [M], generated sample j lies in some real ball (precision).
    fake_ball_count: int64 [M], how many real balls hold generated sample j (density, over k).
    real_in_fake: bool [N], real sample i lies in some generated ball (recall).
    real_ball_fill: int64 [N], how many generated samples real i's ball holds (coverage: fill > 0).
    """

    k: int
    fake_in_real: np.ndarray
    fake_ball_count: np.ndarray
    real_in_fake: np.ndarray
    real_ball_fill: np.ndarray

    @property
    def real_covered(self) -> np.ndarray:
        """bool [N]: real i's ball holds some generated sample (coverage)."""
        return self.real_ball_fill > 0


@dataclass(frozen=True)
class ManifoldMetrics:
    """Precision, recall, coverage in [0, 1] and density in [0, N/k] of M generated against N real features."""

    k: int
    num_real: int
    num_fake: int
    precision: float
    recall: float
    density: float
    coverage: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _metrics_of(terms: ManifoldTerms, fake: np.ndarray | None = None, real: np.ndarray | None = None) -> tuple[float, ...]:
    f = slice(None) if fake is None else fake
    r = slice(None) if real is None else real
    count = terms.fake_ball_count[f]
    return (float(terms.fake_in_real[f].mean()), float(terms.real_in_fake[r].mean()),
            float(count.sum() / (terms.k * count.size)), float(terms.real_covered[r].mean()))


def manifold_terms(real_features: np.ndarray, fake_features: np.ndarray, k: int = DEFAULT_K) -> ManifoldTerms:
    """The per-sample terms of precision, recall, density and coverage (see :class:`ManifoldTerms`).

    real_features [N, d], fake_features [M, d]; balls are closed (a point at
    exactly the radius is inside, as in both papers' definitions). Memory is
    O((N + M) d) plus one distance block (~32 MB), so 10,000 x 10,000 is easy;
    time is three O(N M d) distance passes.
    """
    real = _feature_matrix(real_features, "real features")
    fake = _feature_matrix(fake_features, "generated features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sets differ in dimension: {real.shape[1]} and {fake.shape[1]}")
    _check_k(k, min(real.shape[0], fake.shape[0]))
    real_r2, fake_r2 = _knn_sq_radii(real, k), _knn_sq_radii(fake, k)
    fake_in_real = np.zeros(fake.shape[0], dtype=bool)
    fake_ball_count = np.zeros(fake.shape[0], dtype=np.int64)
    real_in_fake = np.empty(real.shape[0], dtype=bool)
    real_ball_fill = np.empty(real.shape[0], dtype=np.int64)
    for start, d in _sq_distance_blocks(real, fake):
        rows = slice(start, start + d.shape[0])
        inside = d <= real_r2[rows, None]  # [real block, fake]: fake j in real i's ball
        fake_ball_count += inside.sum(axis=0)
        fake_in_real |= inside.any(axis=0)
        real_ball_fill[rows] = inside.sum(axis=1)
        real_in_fake[rows] = (d <= fake_r2[None, :]).any(axis=1)
    return ManifoldTerms(k, fake_in_real, fake_ball_count, real_in_fake, real_ball_fill)


def manifold_metrics(real_features: np.ndarray, fake_features: np.ndarray, k: int = DEFAULT_K,
                     terms: ManifoldTerms | None = None) -> ManifoldMetrics:
    """Precision and recall (Kynkaanniemi et al. 2019), density and coverage (Naeem et al. 2020).

    real_features [N, d], fake_features [M, d] with N == M: all four scores
    depend on the set sizes (the balls shrink as n grows), so sets of unequal
    size are refused; subsample the larger one. ``terms``: from
    :func:`manifold_terms` on the same sets, to avoid computing them twice.
    """
    real = np.asarray(real_features)
    fake = np.asarray(fake_features)
    if real.ndim == 2 and fake.ndim == 2 and real.shape[0] != fake.shape[0]:
        raise ValueError(f"the k-NN scores need equal set sizes, got {real.shape[0]} real and {fake.shape[0]} "
                         "generated; subsample the larger set")
    if terms is None:
        terms = manifold_terms(real, fake, k)
    precision, recall, density, coverage = _metrics_of(terms)
    return ManifoldMetrics(k, int(terms.real_in_fake.size), int(terms.fake_in_real.size),
                           precision, recall, density, coverage)


# ---------------------------------------------------------------- class mix


@dataclass(frozen=True)
class ClassMix:
    """The class histogram of n samples against uniform over ``num_classes`` classes.

    counts: int [classes]; js_nats in [0, ln 2], js_bits in [0, 1];
    classes_recovered: classes with at least ``min_count`` samples.
    """

    n: int
    num_classes: int
    counts: list[int]
    js_nats: float
    js_bits: float
    classes_recovered: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def class_mix(labels: np.ndarray, num_classes: int, min_count: int = 1) -> ClassMix:
    """JS divergence of the histogram of ``labels`` (int [n] in 0..num_classes-1, e.g. a classifier's argmax)
    against the uniform distribution, and the classes recovered.

    A uniform label set gives 0; a one-class set gives
    JS = ((C - 1)/(2C)) ln 2 + (1/2) ln(2C/(C + 1)) + (1/(2C)) ln(2/(C + 1)) nats for C classes.
    """
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be a non-empty 1-D integer array, got {y.dtype} {list(y.shape)}")
    if num_classes < 2 or y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1} with at least 2 classes")
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    counts = np.bincount(y, minlength=num_classes).astype(np.int64)
    uniform = np.ones(num_classes)
    return ClassMix(n=int(y.size), num_classes=int(num_classes), counts=counts.tolist(),
                    js_nats=js_divergence(counts, uniform), js_bits=js_divergence(counts, uniform, base=2.0),
                    classes_recovered=int(np.count_nonzero(counts >= min_count)))


# ------------------------------------------------------------------ spreads


@dataclass(frozen=True)
class Spread:
    """One figure and its spread.

    value: the figure on the full sample (bootstrap) or the mean (seeds);
    std: the bootstrap standard error, or the sample standard deviation over
    seeds (ddof 1; 0 for one seed); low, high: the 2.5% and 97.5% bootstrap
    quantiles, or the seed minimum and maximum; rounds: bootstrap rounds or seeds.
    """

    value: float
    std: float
    low: float
    high: float
    rounds: int
    method: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def text(self, digits: int = 3) -> str:
        return f"{self.value:.{digits}f} ± {self.std:.{digits}f}"


def _spread(value: float, draws: np.ndarray, method: str) -> Spread:
    return Spread(float(value), float(draws.std(ddof=1)) if draws.size > 1 else 0.0,
                  float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975)), int(draws.size), method)


def bootstrap(statistic: Callable[[np.ndarray], float], n: int, rng: np.random.Generator,
              rounds: int = 200) -> Spread:
    """Spread of ``statistic(indices)`` over ``rounds`` resamples (with replacement) of n sample indices.

    statistic: maps int64 indices [n] into the samples to a float (FID, IS, class JS of those rows).
    value is statistic(arange(n)). Not for the k-NN scores: duplicated points have zero-radius
    neighbours; use :func:`manifold_bootstrap` there.
    """
    if n < 2 or rounds < 2:
        raise ValueError(f"bootstrap needs n >= 2 and rounds >= 2, got n={n}, rounds={rounds}")
    draws = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(rounds)], dtype=np.float64)
    return _spread(statistic(np.arange(n)), draws, "bootstrap")


def manifold_bootstrap(terms: ManifoldTerms, rng: np.random.Generator, rounds: int = 200) -> dict[str, Spread]:
    """Bootstrap spreads of precision, recall, density and coverage with the k-NN balls held fixed.

    Resamples the generated samples' terms (precision, density) and the real
    samples' terms (recall, coverage) with replacement. The balls themselves
    also vary with the samples, which this leaves out: it is a lower bound on
    the sampling spread, and the seed spread of several runs is the fuller one.
    """
    if rounds < 2:
        raise ValueError(f"rounds must be at least 2, got {rounds}")
    m, n = terms.fake_in_real.size, terms.real_in_fake.size
    draws = np.array([_metrics_of(terms, rng.integers(0, m, size=m), rng.integers(0, n, size=n))
                      for _ in range(rounds)])
    full = _metrics_of(terms)
    names = ("precision", "recall", "density", "coverage")
    return {name: _spread(full[i], draws[:, i], "bootstrap (k-NN balls fixed)") for i, name in enumerate(names)}


def seed_spread(values: Sequence[float]) -> Spread:
    """Mean, sample standard deviation (ddof 1; 0 for one value), minimum and maximum of a figure over seeds."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError("seed_spread needs at least one value")
    return Spread(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, float(v.min()), float(v.max()),
                  int(v.size), "seeds")

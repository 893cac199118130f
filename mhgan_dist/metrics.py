"""Sample-quality metrics: the toy benchmarks' mode metrics, Inception Score and FID math.

numpy only: no torch, no Ray, no files. Scoring networks (Inception, the digit
classifier) live in :mod:`mhgan_dist.scoring_models`; this module only turns
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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
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

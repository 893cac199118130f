"""Sample-quality numbers of one sample set, and the one choice of how a model kind's samples are scored.

:func:`scorer_for` picks, by model kind, the scoring network and the real reference
set: the toys' mode metrics (no network); the shipped Fashion-MNIST classifier
against its test split's features (classifier-feature scores: FID, IS analogue,
precision, recall, density, coverage, class mix, each with a bootstrap spread);
the shipped digit classifier, or Inception from a local weights file, against the
model's held-out real images (IS and FID). The returned :class:`QualityScorer`
maps samples to a dict of those numbers.

numpy at import; the scoring networks (torch) load inside :func:`scorer_for`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from mhgan_dist.errors import ConfigError
from mhgan_dist.quality import metrics

if TYPE_CHECKING:
    from mhgan_dist.models import ModelFiles
    from mhgan_dist.quality.networks import ImageScorer, ReferenceFeatures

__all__ = ["dataset_kind", "model_kind", "toy_quality", "image_quality", "inception_splits", "chain_statistics",
           "classifier_quality", "reference_subset", "Reference", "QualityScorer", "scorer_for", "TOY_KINDS",
           "IMAGE_KINDS", "CLASSIFIER_METRICS", "BOOTSTRAP_ROUNDS", "BOOTSTRAP_SEED", "MAX_KNN_SAMPLES",
           "NO_INCEPTION_NOTE"]

TOY_KINDS = ("grid2d", "mixture1d")
IMAGE_KINDS = ("image", "fashion")

BOOTSTRAP_ROUNDS = 100
BOOTSTRAP_SEED = 0
"""Every set's bootstrap uses default_rng(BOOTSTRAP_SEED): the same samples give the same spreads."""
MAX_KNN_SAMPLES = 10_000
"""The k-NN scores use at most this many samples per set (the reference set's size)."""
REFERENCE_SUBSET_SEED = 0

# (key, what it is): the classifier-feature scores of a sample set, in report and table order.
CLASSIFIER_METRICS: tuple[tuple[str, str], ...] = (
    ("fid", "FID"),
    ("inception_score", "IS analogue"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("density", "density"),
    ("coverage", "coverage"),
    ("class_js_bits", "class JS (bits)"),
    ("classes_recovered", "classes recovered"),
)


def dataset_kind(dataset: str | None, sample_shape: tuple[int, ...]) -> str:
    """"grid2d", "mixture1d", "fashion" (Fashion-MNIST, [1, 28, 28]), "image" ([C, H, W], C of 1 or 3) or "other"."""
    if dataset == "grid2d" and sample_shape == (2,):
        return "grid2d"
    if dataset == "mixture1d" and sample_shape == (1,):
        return "mixture1d"
    if dataset == "fashion" and sample_shape == (1, 28, 28):
        return "fashion"
    if len(sample_shape) == 3 and sample_shape[0] in (1, 3):
        return "image"
    return "other"


def model_kind(files: "ModelFiles") -> tuple[str, str]:
    """(kind, dataset) of a model: :func:`dataset_kind` of its model.json's dataset (else its name) and sample shape."""
    dataset = files.metadata.get("dataset") or files.name
    return dataset_kind(dataset, tuple(files.metadata.get("sample_shape", []))), dataset


def toy_quality(kind: str, samples: np.ndarray) -> dict[str, Any]:
    """The paper's mode metrics of samples [n, d] (see :mod:`mhgan_dist.quality.metrics`)."""
    if kind == "grid2d":
        return metrics.grid_metrics(samples).to_json()
    if kind == "mixture1d":
        return metrics.mixture_metrics(samples).to_json()
    raise ValueError(f"no toy metrics for {kind!r}")


def inception_splits(n: int) -> int:
    """Splits for the Inception Score: 10 (Salimans et al.) when each holds 500 or more images, else fewer."""
    return max(1, min(10, n // 500))


def image_quality(probs: np.ndarray, features: np.ndarray, real_features: np.ndarray | None) -> dict[str, Any]:
    """IS (mean, std over splits) of probs [n, classes] and FID of features [n, d] against real ones."""
    splits = inception_splits(probs.shape[0])
    mean, std = metrics.inception_score(probs, splits)
    out: dict[str, Any] = {"n": int(probs.shape[0]), "inception_score": mean, "inception_score_std": std,
                           "inception_score_splits": splits}
    if real_features is not None:
        out["fid"] = metrics.fid(features, real_features)
        out["fid_reference_n"] = int(real_features.shape[0])
    return out


def chain_statistics(stats: dict[str, Any], accepts: np.ndarray, restarted: np.ndarray, chain_length: int) -> dict[str, Any]:
    """Acceptance and restart numbers: the manifest's (every chain) and those of the loaded chains."""
    return {
        "acceptance_rate": stats.get("acceptance_rate"),
        "restart_rate": stats.get("restart_rate"),
        "mean_accepts_per_chain": float(accepts.mean()) if accepts.size else None,
        "chains_with_an_accept": float(np.mean(accepts > 0)) if accepts.size else None,
        "chains_loaded": int(accepts.size),
        "restarted_loaded": int(restarted.sum()),
        "chain_length": chain_length,
    }


def reference_subset(features: np.ndarray, n: int) -> np.ndarray:
    """n rows of a reference feature set [N, d] (all when n >= N), a fixed random subset: the same for every run,
    so runs are compared with the same real set."""
    if n >= features.shape[0]:
        return features
    order = np.random.default_rng(REFERENCE_SUBSET_SEED).permutation(features.shape[0])
    return features[np.sort(order[:n])]


def classifier_quality(probs: np.ndarray, features: np.ndarray, reference_features: np.ndarray,
                       reference_mean: np.ndarray, reference_cov: np.ndarray, *, k: int = metrics.DEFAULT_K,
                       rounds: int = BOOTSTRAP_ROUNDS) -> dict[str, Any]:
    """Classifier-feature scores of n samples against a real reference set, each with a bootstrap spread.

    probs [n, classes], features [n, d]: the classifier's outputs for the samples.
    reference_features [N, d], reference_mean [d], reference_cov [d, d]: the real reference (the test split).
    FID is against the reference's mean and covariance; the IS analogue uses
    :func:`inception_splits`; the k-NN scores use the first min(n, N, MAX_KNN_SAMPLES)
    samples against as many reference rows (:func:`reference_subset`): equal set
    sizes, so values are comparable only between sets of the same ``knn_n``.
    The class mix is the histogram of the argmax. ``spreads`` maps each figure to
    a :class:`~mhgan_dist.quality.metrics.Spread` (bootstrap over the samples; for the
    k-NN scores with the balls held fixed), seeded with BOOTSTRAP_SEED; with
    ``rounds`` = 0 there are none (the figures are the same, at a fraction of
    the time: for a study whose spreads come from seeds).
    """
    n, classes = probs.shape
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    splits = inception_splits(n)
    is_mean, is_std = metrics.inception_score(probs, splits)

    def fid_of(rows: np.ndarray) -> float:
        mean, cov = metrics.gaussian_statistics(features[rows])
        return metrics.frechet_distance(mean, cov, reference_mean, reference_cov)

    labels = probs.argmax(axis=1)
    mix = metrics.class_mix(labels, classes)
    knn_n = min(n, reference_features.shape[0], MAX_KNN_SAMPLES)
    real = reference_subset(reference_features, knn_n)
    terms = metrics.manifold_terms(real, features[:knn_n], k)
    knn = metrics.manifold_metrics(real, features[:knn_n], k, terms=terms)
    if rounds == 0:
        spreads = {}
        fid_value = fid_of(np.arange(n))
    else:
        spreads = _classifier_spreads(fid_of, probs, labels, classes, splits, terms, n, rng, rounds)
        fid_value = spreads["fid"].value
    return {
        "n": int(n),
        "fid": fid_value, "fid_reference_n": int(reference_features.shape[0]),
        "inception_score": is_mean, "inception_score_std": is_std, "inception_score_splits": splits,
        "precision": knn.precision, "recall": knn.recall, "density": knn.density, "coverage": knn.coverage,
        "knn_k": k, "knn_n": knn_n,
        "class_js_nats": mix.js_nats, "class_js_bits": mix.js_bits, "classes_recovered": mix.classes_recovered,
        "class_counts": mix.counts,
        "spreads": {name: spread.to_json() for name, spread in spreads.items()},
        "bootstrap_rounds": rounds,
    }


def _classifier_spreads(fid_of, probs: np.ndarray, labels: np.ndarray, classes: int, splits: int,
                        terms: metrics.ManifoldTerms, n: int, rng: np.random.Generator,
                        rounds: int) -> dict[str, metrics.Spread]:
    """The bootstrap spreads of :func:`classifier_quality`'s figures, drawn in this order from ``rng``."""
    return {
        "fid": metrics.bootstrap(fid_of, n, rng, rounds),
        "inception_score": metrics.bootstrap(lambda rows: metrics.inception_score(probs[rows], splits)[0], n, rng,
                                             rounds),
        **metrics.manifold_bootstrap(terms, rng, rounds),
        "class_js_bits": metrics.bootstrap(lambda rows: metrics.class_mix(labels[rows], classes).js_bits, n, rng,
                                           rounds),
        "classes_recovered": metrics.bootstrap(
            lambda rows: float(metrics.class_mix(labels[rows], classes).classes_recovered), n, rng, rounds),
    }


# ------------------------------------------------------------------ the scorer of a model kind

NO_INCEPTION_NOTE = ("IS and FID are left out: pass --inception-weights PATH (a local torchvision inception_v3 "
                     "state dict; nothing is downloaded)")


@dataclass(frozen=True, eq=False)
class Reference:
    """Real images in a scoring network's feature space.

    features: float [N, d]; mean: float64 [d] and cov: float64 [d, d], their Gaussian
    statistics (for the shipped Fashion-MNIST set, those of the features before they were
    stored at float16).
    """

    features: np.ndarray
    mean: np.ndarray
    cov: np.ndarray


@dataclass(frozen=True, eq=False)
class QualityScorer:
    """The sample-quality numbers of one model kind: ``scorer(samples) -> dict``, None where no network scores them.

    Build with :func:`scorer_for`. kind: :func:`dataset_kind`'s answer. network: the
    image scoring network (None for the toys, and for images without one: ``note`` says
    why). real: the model's held-out real samples [N, *sample_shape], or None.
    shipped_reference: the Fashion-MNIST test split's features, for fashion.
    classifier_scores: image samples get :func:`classifier_quality` against
    :attr:`reference` with ``rounds`` bootstrap rounds; otherwise IS, and FID against the
    real samples' features (:func:`image_quality`). The real samples are scored by the
    network once, on first use.
    """

    kind: str
    network: "ImageScorer | None" = None
    real: np.ndarray | None = None
    shipped_reference: "ReferenceFeatures | None" = None
    classifier_scores: bool = False
    rounds: int = BOOTSTRAP_ROUNDS
    note: str | None = None

    @cached_property
    def _real_scores(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(probs [N, classes], features [N, d]) of the real samples, None without network or real samples."""
        if self.network is None or self.real is None:
            return None
        return self.network.score(self.real)

    @cached_property
    def reference(self) -> Reference | None:
        """The real reference of classifier-feature scores: the shipped test split, else the real samples' features."""
        if self.shipped_reference is not None:
            shipped = self.shipped_reference
            return Reference(shipped.features, shipped.mean, shipped.cov)
        if self._real_scores is None:
            return None
        features = self._real_scores[1]
        return Reference(features, *metrics.gaussian_statistics(features))

    def __call__(self, samples: np.ndarray) -> dict[str, Any] | None:
        """The numbers of samples [n, *sample_shape]: toy metrics, classifier-feature scores, or IS and FID."""
        if self.kind in TOY_KINDS:
            return toy_quality(self.kind, samples)
        if self.network is None:
            return None
        probs, features = self.network.score(samples)
        if self.classifier_scores:
            reference = self.reference
            assert reference is not None  # scorer_for refuses classifier scores without one
            return classifier_quality(probs, features, reference.features, reference.mean, reference.cov,
                                      rounds=self.rounds)
        return image_quality(probs, features, None if self._real_scores is None else self._real_scores[1])

    def real_quality(self) -> dict[str, Any] | None:
        """The numbers of the real samples themselves (IS only where they are the FID reference); None without them."""
        if self.real is None:
            return None
        if self.kind in TOY_KINDS or self.classifier_scores or self.network is None:
            return self(self.real)
        probs, features = self._real_scores
        return image_quality(probs, features, None)


def scorer_for(kind: str, dataset: str | None, *, real: np.ndarray | None = None, device: str = "cpu",
               inception_weights: str | None = None, classifier_scores: bool = False,
               rounds: int = BOOTSTRAP_ROUNDS) -> QualityScorer:
    """The scorer of a model kind's samples: what scores them and against which real set.

    kind, dataset: :func:`dataset_kind`'s answer and the dataset name it came from.
    real: the model's held-out real samples [N, *sample_shape] (None: FID is left out).
    grid2d, mixture1d: the mode metrics, no network. fashion: the shipped
    Fashion-MNIST classifier against the test split's shipped features,
    classifier-feature scores with ``rounds`` bootstrap rounds. image of dataset
    digits: the shipped digit classifier; other images: Inception from
    ``inception_weights`` (a local file), else no network and a note. With
    ``classifier_scores``, digit and Inception scores are classifier-feature scores
    against the real samples too (ConfigError when there are none). Raises ModelError
    when a network's files are missing or altered.
    """
    if kind in TOY_KINDS:
        return QualityScorer(kind, real=real)
    from mhgan_dist.quality import networks

    if kind == "fashion":
        return QualityScorer(kind, networks.load_fashion_classifier(device=device), real,
                             networks.load_reference_features(), classifier_scores=True, rounds=rounds)
    if kind != "image":
        return QualityScorer(kind, real=real)
    if dataset != "digits" and inception_weights is None:
        return QualityScorer(kind, real=real, note=NO_INCEPTION_NOTE)
    if classifier_scores and real is None:
        raise ConfigError(f"the {dataset} model has no held-out real samples to score against")
    network = (networks.load_digit_classifier(device=device) if dataset == "digits"
               else networks.load_inception(inception_weights, device=device))
    return QualityScorer(kind, network, real, classifier_scores=classifier_scores, rounds=rounds)

"""Calibration of discriminator scores, and its diagnostics.

A calibrator maps raw D log-odds to calibrated log-odds of "real". It is fitted
once per run on held-out real scores (label 1) against as many generated
scores (label 0), and saved as JSON (numbers only, never a pickle).

Calibrators share one interface, chosen by name (:data:`CALIBRATORS`):
``fit(real_logits, fake_logits)``, ``predict_logit(raw)``,
``predict_proba(raw)``, ``to_json()`` and ``calibrator_from_json(obj)``.

numpy and scikit-learn only: no torch, no Ray, no files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

__all__ = [
    "CALIBRATORS",
    "Calibrator",
    "IdentityCalibrator",
    "IsotonicCalibrator",
    "CappedIsotonicCalibrator",
    "CalibrationMetrics",
    "make_calibrator",
    "calibrator_from_json",
    "sigmoid",
    "logit",
    "calibration_metrics",
    "cross_fitted_diagnostics",
]

ECE_BINS = 10


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Probability from log-odds, float64, stable for any finite input."""
    x = np.asarray(logits, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def logit(probabilities: np.ndarray) -> np.ndarray:
    """Log-odds from probabilities strictly inside (0, 1), float64."""
    p = np.asarray(probabilities, dtype=np.float64)
    return np.log(p) - np.log1p(-p)


def check_scores(name: str, scores: np.ndarray, minimum: int = 1) -> np.ndarray:
    """1-D finite floating log-odds with at least ``minimum`` entries, as float64; ValueError naming ``name``."""
    scores = np.asarray(scores)
    if scores.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {scores.shape}")
    if scores.size == 0:
        raise ValueError(f"{name} is empty")
    if scores.size < minimum:
        raise ValueError(f"{name} must hold at least {minimum} scores, got {scores.size}")
    if not np.issubdtype(scores.dtype, np.floating):
        raise ValueError(f"{name} must be floating-point log-odds, got dtype {scores.dtype}")
    if not np.isfinite(scores).all():
        raise ValueError(f"{name} contains NaN or infinite scores")
    return scores.astype(np.float64)


class Calibrator(Protocol):
    name: str

    def fit(self, real_logits: np.ndarray, fake_logits: np.ndarray) -> "Calibrator": ...

    def predict_logit(self, raw_logits: np.ndarray) -> np.ndarray: ...

    def predict_proba(self, raw_logits: np.ndarray) -> np.ndarray: ...

    def to_json(self) -> dict[str, Any]: ...


class IdentityCalibrator:
    """No calibration: raw log-odds are used as they are."""

    name = "none"

    def fit(self, real_logits: np.ndarray, fake_logits: np.ndarray) -> "IdentityCalibrator":
        check_scores("real_logits", real_logits)
        check_scores("fake_logits", fake_logits)
        return self

    def predict_logit(self, raw_logits: np.ndarray) -> np.ndarray:
        return check_scores("raw_logits", raw_logits)

    def predict_proba(self, raw_logits: np.ndarray) -> np.ndarray:
        return sigmoid(self.predict_logit(raw_logits))

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.name}


class IsotonicCalibrator:
    """Isotonic regression from raw log-odds to P(real), clipped out of bounds.

    Predictions interpolate linearly between the fitted thresholds (as
    scikit-learn's ``IsotonicRegression`` does) and are clipped to
    [1/(n+1), n/(n+1)], n the number of fitting scores, so every calibrated
    log-odds is finite.
    """

    name = "isotonic"

    def __init__(self, thresholds_x: np.ndarray | None = None, thresholds_y: np.ndarray | None = None,
                 num_fit: int = 0) -> None:
        self.thresholds_x = thresholds_x
        self.thresholds_y = thresholds_y
        self.num_fit = num_fit

    def fit(self, real_logits: np.ndarray, fake_logits: np.ndarray) -> "IsotonicCalibrator":
        from sklearn.isotonic import IsotonicRegression

        real = check_scores("real_logits", real_logits)
        fake = check_scores("fake_logits", fake_logits)
        x = np.concatenate([real, fake])
        y = np.concatenate([np.ones(real.size), np.zeros(fake.size)])
        model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        model.fit(x, y)
        self.thresholds_x = np.asarray(model.X_thresholds_, dtype=np.float64)
        self.thresholds_y = np.asarray(model.y_thresholds_, dtype=np.float64)
        self.num_fit = int(x.size)
        return self

    def _require_fitted(self) -> None:
        if self.thresholds_x is None or self.thresholds_y is None:
            raise ValueError("isotonic calibrator is not fitted")

    def predict_proba(self, raw_logits: np.ndarray) -> np.ndarray:
        self._require_fitted()
        raw = check_scores("raw_logits", raw_logits)
        p = np.interp(raw, self.thresholds_x, self.thresholds_y)
        n = self.num_fit
        return np.clip(p, 1.0 / (n + 1), n / (n + 1))

    def predict_logit(self, raw_logits: np.ndarray) -> np.ndarray:
        return logit(self.predict_proba(raw_logits))

    def to_json(self) -> dict[str, Any]:
        self._require_fitted()
        return {
            "kind": self.name,
            "num_fit": self.num_fit,
            "thresholds_x": [float(v) for v in self.thresholds_x],
            "thresholds_y": [float(v) for v in self.thresholds_y],
        }


class CappedIsotonicCalibrator(IsotonicCalibrator):
    """Isotonic regression whose probability is capped at the highest a generated fitting score gets.

    Isotonic regression often ends in an all-real top block: the real scores
    above every generated fitting score get P(real) = n/(n+1), odds about n,
    although no generated draw tested those odds. Independence MH chains that
    meet a proposal there stay for about n steps, so that block dominates long
    chains. The cap sets every block above the last one a generated fitting
    score reaches to that block's probability: the odds MH uses are then all
    odds the data measured. Below the cap the map equals the isotonic one.
    """

    name = "isotonic-capped"

    def __init__(self, thresholds_x: np.ndarray | None = None, thresholds_y: np.ndarray | None = None,
                 num_fit: int = 0, cap_probability: float | None = None) -> None:
        super().__init__(thresholds_x, thresholds_y, num_fit)
        self.cap_probability = cap_probability

    def fit(self, real_logits: np.ndarray, fake_logits: np.ndarray) -> "CappedIsotonicCalibrator":
        super().fit(real_logits, fake_logits)
        self.cap_probability = float(super().predict_proba(check_scores("fake_logits", fake_logits)).max())
        return self

    def predict_proba(self, raw_logits: np.ndarray) -> np.ndarray:
        if self.cap_probability is None:
            raise ValueError("capped isotonic calibrator is not fitted")
        return np.minimum(super().predict_proba(raw_logits), self.cap_probability)

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "cap_probability": self.cap_probability}


CALIBRATORS: dict[str, type] = {"none": IdentityCalibrator, "isotonic": IsotonicCalibrator,
                                "isotonic-capped": CappedIsotonicCalibrator}


def make_calibrator(name: str) -> Calibrator:
    """An unfitted calibrator by name ("isotonic", "isotonic-capped" or "none")."""
    try:
        return CALIBRATORS[name]()
    except KeyError:
        raise ValueError(f"calibration must be one of {sorted(CALIBRATORS)}, got {name!r}") from None


def calibrator_from_json(obj: dict[str, Any]) -> Calibrator:
    """Rebuilds a fitted calibrator from :meth:`to_json` output; ValueError if malformed."""
    if not isinstance(obj, dict) or obj.get("kind") not in CALIBRATORS:
        raise ValueError(f"calibration JSON must be an object with kind in {sorted(CALIBRATORS)}")
    if obj["kind"] == "none":
        return IdentityCalibrator()
    try:
        x = np.asarray(obj["thresholds_x"], dtype=np.float64)
        y = np.asarray(obj["thresholds_y"], dtype=np.float64)
        n = int(obj["num_fit"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"isotonic calibration JSON is malformed: {exc}") from None
    if (
        x.ndim != 1 or x.shape != y.shape or x.size == 0 or n < 1
        or not (np.isfinite(x).all() and np.isfinite(y).all())
        or np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0) or y.min() < 0 or y.max() > 1
    ):
        raise ValueError("isotonic calibration JSON must hold equal-length, finite, non-decreasing "
                         "thresholds with y in [0, 1] and num_fit >= 1")
    if obj["kind"] == "isotonic":
        return IsotonicCalibrator(x, y, n)
    cap = obj.get("cap_probability")
    if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0.0 < cap < 1.0:
        raise ValueError("capped isotonic calibration JSON must hold a cap_probability in (0, 1)")
    return CappedIsotonicCalibrator(x, y, n, float(cap))


@dataclass(frozen=True)
class CalibrationMetrics:
    """How well probabilities p match labels y (1 = real) on n scores.

    dawid_z: sum(y - p) / sqrt(sum p(1-p)), standard normal when calibrated;
    ece: expected calibration error over 10 equal-width bins;
    brier: mean (p - y)^2; log_loss: mean negative log-likelihood (nats).
    """

    n: int
    dawid_z: float
    ece: float
    brier: float
    log_loss: float

    def to_json(self) -> dict[str, float]:
        return asdict(self)


def calibration_metrics(probabilities: np.ndarray, labels: np.ndarray) -> CalibrationMetrics:
    """Calibration metrics of probabilities against 0/1 labels, both [n]."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if p.shape != y.shape or p.ndim != 1 or p.size == 0:
        raise ValueError(f"probabilities and labels must be non-empty and of equal length, got {p.shape} and {y.shape}")
    if np.isnan(p).any() or p.min() < 0 or p.max() > 1:
        raise ValueError("probabilities must lie in [0, 1] with no NaN")
    variance = float(np.sum(p * (1.0 - p)))
    residual = float(np.sum(y - p))
    if variance > 0:
        z = residual / np.sqrt(variance)
    else:  # every probability saturated at 0 or 1
        z = 0.0 if residual == 0 else float(np.copysign(np.inf, residual))
    bins = np.minimum((p * ECE_BINS).astype(np.int64), ECE_BINS - 1)
    gap = np.abs(np.bincount(bins, weights=y - p, minlength=ECE_BINS))
    ece = float(np.sum(gap) / p.size)
    brier = float(np.mean((p - y) ** 2))
    clipped = np.clip(p, 1e-12, 1.0 - 1e-12)
    log_loss = float(-np.mean(y * np.log(clipped) + (1.0 - y) * np.log1p(-clipped)))
    return CalibrationMetrics(int(p.size), float(z), ece, brier, log_loss)


def cross_fitted_diagnostics(
    real_logits: np.ndarray, fake_logits: np.ndarray, calibrator_name: str, seed: int
) -> dict[str, dict[str, float]]:
    """Metrics of raw and calibrated scores on data not used for the fit.

    Two-fold cross-fitting: the scores are split at random (``seed``) into two
    halves; a calibrator fitted on each half predicts the other, so every score
    gets an out-of-fold calibrated probability. Returns
    ``{"before": metrics of sigmoid(raw), "after": metrics of the out-of-fold
    calibrated probabilities}``, each a :class:`CalibrationMetrics` dict.
    """
    real = check_scores("real_logits", real_logits)
    fake = check_scores("fake_logits", fake_logits)
    if real.size < 2 or fake.size < 2:
        raise ValueError("cross-fitting needs at least 2 real and 2 generated scores")
    scores = np.concatenate([real, fake])
    labels = np.concatenate([np.ones(real.size), np.zeros(fake.size)])
    rng = np.random.default_rng(seed)
    # Split real and generated separately so each fold keeps both classes.
    fold = np.concatenate([rng.permutation(real.size) % 2, rng.permutation(fake.size) % 2])
    out_of_fold = np.empty(scores.size)
    for held_out in (0, 1):
        train, test = fold != held_out, fold == held_out
        calibrator = make_calibrator(calibrator_name).fit(
            scores[train & (labels == 1)], scores[train & (labels == 0)]
        )
        out_of_fold[test] = calibrator.predict_proba(scores[test])
    return {
        "before": calibration_metrics(sigmoid(scores), labels).to_json(),
        "after": calibration_metrics(out_of_fold, labels).to_json(),
    }

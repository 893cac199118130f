"""Calibration of discriminator scores, and its diagnostics.

A calibrator maps raw D log-odds to calibrated log-odds of "real". It is fitted
once per run on held-out real scores (label 1) against as many generated
scores (label 0), and saved as JSON (numbers only, never a pickle).

Calibrators share one interface, chosen by name (:data:`CALIBRATORS`):
``fit(real_logits, fake_logits)``, ``predict_logit(raw)``,
``predict_proba(raw)``, ``to_json()`` and ``calibrator_from_json(obj)``.

- ``none``: the raw log-odds.
- ``isotonic``, ``isotonic-capped``: isotonic regression (the paper's), and
  the variant whose odds never exceed those a generated fitting score reaches.
- ``platt``: logistic regression on the raw logit, sigmoid(a x + c) with a >= 0:
  a temperature and a shift (the paper authors' ``Beta1``).
- ``beta``: beta calibration (Kull, Silva Filho and Flach, AISTATS 2017), logistic
  regression on [log s, -log(1 - s)], s = sigmoid(x), with both coefficients >= 0
  so that the map is monotone (the paper authors' ``Beta2``).

Their ``Linear`` (logistic regression on the probability s itself) is left
out: its log-odds a s + c stay within [c, a + c] whatever D says, so it cannot
follow D into the tails where MH's odds ratios matter, and the paper's runs do
not use it.

Every calibrated log-odds is finite for every finite raw log-odds, and every
map is non-decreasing over the whole real line (huge |logit| included).

numpy (and SciPy for the Platt and beta fits) only: no torch, no Ray, no files.
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
    "isotonic_thresholds",
    "PlattCalibrator",
    "BetaCalibrator",
    "CalibrationMetrics",
    "make_calibrator",
    "fitted_calibrator",
    "calibrator_from_json",
    "sigmoid",
    "logit",
    "calibration_metrics",
    "out_of_fold_probabilities",
    "cross_fitted_diagnostics",
]

ECE_BINS = 10
# The largest finite float64: a calibrated log-odds that overflows is clamped here, never infinite.
_LOGIT_LIMIT = float(np.finfo(np.float64).max)


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


# Scores closer than this to the first score of a run of tied scores join that run (scikit-learn's
# IsotonicRegression groups float64 inputs the same way).
_TIE_RESOLUTION = float(np.finfo(np.float64).resolution)


def isotonic_thresholds(real: np.ndarray, fake: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The least-squares non-decreasing fit of label 1 (``real``) against 0 (``fake``) over the scores.

    real, fake: finite float64 log-odds, at least one in all. Returns
    (thresholds_x, thresholds_y), float64, x increasing: the fitted
    P(real) at each distinct score, without the points whose value equals
    both neighbours' (interpolating linearly between the rest gives the
    same function), as scikit-learn's ``IsotonicRegression(y_min=0,
    y_max=1)`` defines it.

    Exact: the pool-adjacent-violators algorithm runs on integer counts of
    real and of all scores per block and compares block means by cross
    multiplication, so each fitted value is the block's count ratio rounded
    once. It therefore does not depend on a library's summation order
    (scikit-learn hands the fit to SciPy's PAVA from SciPy 1.12 on, to its
    own before), and the job does not import scikit-learn and SciPy (about
    2 s of CPU) to fit it.
    """
    x = np.concatenate([real, fake])
    is_real = np.concatenate([np.ones(real.size, np.int64), np.zeros(fake.size, np.int64)])
    order = np.argsort(x, kind="stable")
    x, is_real = x[order], is_real[order]
    # Runs of tied scores: a run starts at a score at least _TIE_RESOLUTION above the run's first score.
    distinct = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])
    values = x[distinct]
    if values.size > 1 and np.any(values[1:] < values[:-1] + _TIE_RESOLUTION):
        keep = [0]
        for i in range(1, values.size):
            if values[i] >= values[keep[-1]] + _TIE_RESOLUTION:
                keep.append(i)
        distinct = distinct[keep]
    group_x = x[distinct]
    group_real = np.add.reduceat(is_real, distinct)
    group_all = np.diff(np.r_[distinct, x.size])
    # Pool adjacent violators on exact integer blocks: (real count, total count, first group).
    blocks: list[list[int]] = []
    for g, (r, n) in enumerate(zip(group_real.tolist(), group_all.tolist())):
        blocks.append([r, n, g])
        while len(blocks) > 1 and blocks[-2][0] * blocks[-1][1] >= blocks[-1][0] * blocks[-2][1]:
            r_last, n_last, _ = blocks.pop()
            blocks[-1][0] += r_last
            blocks[-1][1] += n_last
    fitted = np.empty(group_x.size, dtype=np.float64)
    starts = [b[2] for b in blocks] + [group_x.size]
    for (r, n, _), start, stop in zip(blocks, starts[:-1], starts[1:]):
        fitted[start:stop] = r / n
    keep = np.ones(fitted.size, dtype=bool)
    keep[1:-1] = (fitted[1:-1] != fitted[:-2]) | (fitted[1:-1] != fitted[2:])
    return group_x[keep], fitted[keep]


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
        real = check_scores("real_logits", real_logits)
        fake = check_scores("fake_logits", fake_logits)
        self.thresholds_x, self.thresholds_y = isotonic_thresholds(real, fake)
        self.num_fit = int(real.size + fake.size)
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


def _softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)), float64, exact to rounding for any finite x (never inf below the float maximum)."""
    return np.logaddexp(0.0, x)


def _finite_logits(logits: np.ndarray) -> np.ndarray:
    """Clamps overflowed (infinite) log-odds to the largest finite float; order is kept."""
    return np.clip(logits, -_LOGIT_LIMIT, _LOGIT_LIMIT)


def _fit_logistic(features: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, float]:
    """Logistic regression with non-negative coefficients: (coefficients [d], intercept).

    features: float64 [n, d]; targets: float64 [n] in (0, 1). Minimises the mean
    cross-entropy of sigmoid(features @ w + c) against the targets subject to
    w >= 0 (L-BFGS-B with bounds). Features are centred and scaled for the
    optimiser only (a positive scale keeps the sign constraint); a constant
    feature gets coefficient 0.
    """
    from scipy.optimize import minimize

    n, d = features.shape
    centre = features.mean(axis=0)
    scale = features.std(axis=0)
    constant = ~(scale > 0) | ~np.isfinite(scale)
    scale[constant] = 1.0
    x = (features - centre) / scale
    x[:, constant] = 0.0
    prior = float(np.clip(targets.mean(), 1e-12, 1.0 - 1e-12))

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ theta[:d] + theta[d]
        value = np.mean(targets * _softplus(-z) + (1.0 - targets) * _softplus(z))
        residual = sigmoid(z) - targets
        return float(value), np.concatenate([x.T @ residual / n, [residual.mean()]])

    start = np.concatenate([np.zeros(d), [np.log(prior) - np.log1p(-prior)]])
    result = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * d + [(None, None)],
                      options={"maxiter": 10_000, "ftol": 1e-15, "gtol": 1e-10})
    w = np.maximum(result.x[:d], 0.0) / scale
    w[constant] = 0.0
    intercept = float(result.x[d] - np.sum(w * centre))
    if not (np.isfinite(w).all() and np.isfinite(intercept)):
        raise ValueError("the logistic calibration fit did not converge to finite coefficients")
    return w, intercept


def _platt_targets(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
    """Platt's targets: (n1 + 1)/(n1 + 2) for real, 1/(n0 + 2) for generated, float64 [n1 + n0].

    With 0/1 targets the maximum-likelihood fit does not exist when D's scores
    separate the classes (the slope runs off to infinity); these targets, the
    posterior means under a uniform prior, keep every fit finite and move it by
    O(1/n) otherwise.
    """
    return np.concatenate([np.full(real.size, (real.size + 1.0) / (real.size + 2.0)),
                           np.full(fake.size, 1.0 / (fake.size + 2.0))])


def _number(obj: dict[str, Any], key: str, what: str, minimum: float | None = None) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) \
            or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum:g}"
        raise ValueError(f"{what} calibration JSON must hold a finite number{bound} as {key!r}, got {value!r}")
    return float(value)


def _num_fit(obj: dict[str, Any], what: str) -> int:
    value = obj.get("num_fit")
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ValueError(f"{what} calibration JSON must hold an integer num_fit >= 2, got {value!r}")
    return value


class PlattCalibrator:
    """Logistic regression on the raw logit: calibrated log-odds = slope * x + intercept, slope >= 0.

    A temperature (1/slope) and a shift, fitted by maximum likelihood with
    Platt's targets (:func:`_platt_targets`). The slope is constrained to be
    non-negative so the map keeps D's ranking; it is 0 only when D's scores
    carry no information the fit can use, and then every score gets the same
    odds (MH then moves at every step and emits the plain generator's samples).
    The map is affine, so it keeps the tails' odds ratios as D's ranking
    extrapolates them: no top block of constant odds as isotonic regression has.
    """

    name = "platt"

    def __init__(self, slope: float | None = None, intercept: float | None = None, num_fit: int = 0) -> None:
        self.slope = slope
        self.intercept = intercept
        self.num_fit = num_fit

    def fit(self, real_logits: np.ndarray, fake_logits: np.ndarray) -> "PlattCalibrator":
        real = check_scores("real_logits", real_logits)
        fake = check_scores("fake_logits", fake_logits)
        x = np.concatenate([real, fake])
        (slope,), intercept = _fit_logistic(x[:, None], _platt_targets(real, fake))
        self.slope, self.intercept, self.num_fit = float(slope), intercept, int(x.size)
        return self

    def _require_fitted(self) -> tuple[float, float]:
        if self.slope is None or self.intercept is None:
            raise ValueError("platt calibrator is not fitted")
        return self.slope, self.intercept

    def predict_logit(self, raw_logits: np.ndarray) -> np.ndarray:
        slope, intercept = self._require_fitted()
        raw = check_scores("raw_logits", raw_logits)
        with np.errstate(over="ignore"):
            return _finite_logits(slope * raw + intercept)

    def predict_proba(self, raw_logits: np.ndarray) -> np.ndarray:
        return sigmoid(self.predict_logit(raw_logits))

    def to_json(self) -> dict[str, Any]:
        slope, intercept = self._require_fitted()
        return {"kind": self.name, "num_fit": self.num_fit, "slope": slope, "intercept": intercept}

    @staticmethod
    def from_json(obj: dict[str, Any]) -> "PlattCalibrator":
        return PlattCalibrator(_number(obj, "slope", "platt", 0.0), _number(obj, "intercept", "platt"),
                               _num_fit(obj, "platt"))


class BetaCalibrator:
    """Beta calibration (Kull et al., 2017) of D's probability s = sigmoid(x).

    Calibrated log-odds = a log s - b log(1 - s) + c, with a, b >= 0: the exact
    posterior log-odds when D's probability is Beta(a1, b1)-distributed on real
    and Beta(a0, b0) on generated samples (a = a1 - a0, b = b0 - b1). In the raw
    logit x, log s = -softplus(-x) and -log(1 - s) = softplus(x), computed in
    log space, so no score saturates to log(0): for large x the map is about
    b x + c, for very negative x about a x + c, and its slope a sigmoid(-x) +
    b sigmoid(x) is >= 0 everywhere. Fitted by maximum likelihood with Platt's
    targets under the bounds a, b >= 0 (the constrained fit Kull et al. make by
    dropping a feature whose coefficient comes out negative). a = b = 0 (no
    usable information) gives constant odds, as :class:`PlattCalibrator` does.
    """

    name = "beta"

    def __init__(self, a: float | None = None, b: float | None = None, c: float | None = None,
                 num_fit: int = 0) -> None:
        self.a, self.b, self.c = a, b, c
        self.num_fit = num_fit

    @staticmethod
    def features(raw: np.ndarray) -> np.ndarray:
        """[log s, -log(1 - s)] of raw log-odds x, float64 [n, 2], finite for finite x."""
        return np.stack([-_softplus(-raw), _softplus(raw)], axis=1)

    def fit(self, real_logits: np.ndarray, fake_logits: np.ndarray) -> "BetaCalibrator":
        real = check_scores("real_logits", real_logits)
        fake = check_scores("fake_logits", fake_logits)
        x = np.concatenate([real, fake])
        (a, b), c = _fit_logistic(self.features(x), _platt_targets(real, fake))
        self.a, self.b, self.c, self.num_fit = float(a), float(b), c, int(x.size)
        return self

    def _require_fitted(self) -> tuple[float, float, float]:
        if self.a is None or self.b is None or self.c is None:
            raise ValueError("beta calibrator is not fitted")
        return self.a, self.b, self.c

    def predict_logit(self, raw_logits: np.ndarray) -> np.ndarray:
        a, b, c = self._require_fitted()
        raw = check_scores("raw_logits", raw_logits)
        # Only one of the two terms is large for any x, so inf - inf cannot occur.
        with np.errstate(over="ignore"):
            return _finite_logits(b * _softplus(raw) - a * _softplus(-raw) + c)

    def predict_proba(self, raw_logits: np.ndarray) -> np.ndarray:
        return sigmoid(self.predict_logit(raw_logits))

    def to_json(self) -> dict[str, Any]:
        a, b, c = self._require_fitted()
        return {"kind": self.name, "num_fit": self.num_fit, "a": a, "b": b, "c": c}

    @staticmethod
    def from_json(obj: dict[str, Any]) -> "BetaCalibrator":
        return BetaCalibrator(_number(obj, "a", "beta", 0.0), _number(obj, "b", "beta", 0.0),
                              _number(obj, "c", "beta"), _num_fit(obj, "beta"))


CALIBRATORS: dict[str, type] = {"none": IdentityCalibrator, "isotonic": IsotonicCalibrator,
                                "isotonic-capped": CappedIsotonicCalibrator, "platt": PlattCalibrator,
                                "beta": BetaCalibrator}


def make_calibrator(name: str) -> Calibrator:
    """An unfitted calibrator by name (a key of :data:`CALIBRATORS`)."""
    try:
        return CALIBRATORS[name]()
    except (KeyError, TypeError):
        raise ValueError(f"calibration must be one of {sorted(CALIBRATORS)}, got {name!r}") from None


def fitted_calibrator(method: str, real: np.ndarray, generated: np.ndarray,
                      saved: dict[str, Any] | None = None) -> Calibrator:
    """The calibrator a run uses: ``saved`` (a fitted calibrator's JSON, from a file the user
    gave) rebuilt as it is, else ``method`` (a key of :data:`CALIBRATORS`) fitted on raw
    logits ``real`` [n_real] and ``generated`` [n_generated]. ValueError (one sentence) for
    an unknown method or malformed JSON.
    """
    if saved is not None:
        return calibrator_from_json(saved)
    return make_calibrator(method).fit(real, generated)


def calibrator_from_json(obj: dict[str, Any]) -> Calibrator:
    """Rebuilds a fitted calibrator from :meth:`to_json` output; ValueError (one sentence) if malformed."""
    kind = obj.get("kind") if isinstance(obj, dict) else None
    if not isinstance(kind, str) or kind not in CALIBRATORS:
        raise ValueError(f"calibration JSON must be an object with kind in {sorted(CALIBRATORS)}")
    if kind == "none":
        return IdentityCalibrator()
    if kind == "platt":
        return PlattCalibrator.from_json(obj)
    if kind == "beta":
        return BetaCalibrator.from_json(obj)
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
    if kind == "isotonic":
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


def out_of_fold_probabilities(
    real_logits: np.ndarray, fake_logits: np.ndarray, calibrator_name: str, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two-fold cross-fitted calibrated probabilities: (probabilities, labels, fold), each [n1 + n0].

    Scores are ordered real first, then generated; labels are 1 for real.
    Each class is split at random (``seed``) into two halves, so each fold holds
    both classes; fold[i] in {0, 1}. A calibrator fitted on fold 1 - f alone
    predicts the scores of fold f, so no probability comes from a fit that saw
    its own score.
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
    return out_of_fold, labels, fold


def cross_fitted_diagnostics(
    real_logits: np.ndarray, fake_logits: np.ndarray, calibrator_name: str, seed: int
) -> dict[str, dict[str, float]]:
    """Metrics of raw and calibrated scores on data not used for the fit.

    Every score gets an out-of-fold calibrated probability
    (:func:`out_of_fold_probabilities`). Returns ``{"before": metrics of
    sigmoid(raw), "after": metrics of the out-of-fold calibrated
    probabilities}``, each a :class:`CalibrationMetrics` dict.
    """
    out_of_fold, labels, _ = out_of_fold_probabilities(real_logits, fake_logits, calibrator_name, seed)
    scores = np.concatenate([check_scores("real_logits", real_logits), check_scores("fake_logits", fake_logits)])
    return {
        "before": calibration_metrics(sigmoid(scores), labels).to_json(),
        "after": calibration_metrics(out_of_fold, labels).to_json(),
    }

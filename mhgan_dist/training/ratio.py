"""A density-ratio classifier for a frozen generator, and held-out diagnostics of any D.

MH-GAN's acceptance test uses D's odds as the ratio p_data/p_G. A GAN's own
discriminator is trained to win a game against a moving G: its odds may rank
samples well and still be a poor ratio. This module trains what the chains
actually need (Grover et al., NeurIPS 2019): a *fresh* probabilistic
classifier of real samples (label 1) against samples of the frozen G (label
0), in balanced batches, with binary cross-entropy on logits. BCE is a proper
scoring rule, so with balanced classes its minimiser is
``logit = log p_data(x) / p_G(x)``: the ratio itself, not only a ranking.

Choices, and why:

- **Fresh G samples every step** (a new latent batch per optimiser step): the
  generated class is unlimited, so the classifier can only overfit the real
  side, and never memorises a fixed set of fakes.
- **Early stopping on held-out log loss** (a validation split of the real
  training data against a fixed set of G samples, evaluated every
  ``steps_per_round`` steps; stop after ``patience`` rounds without a new
  minimum; the weights of the best round are kept). Log loss, not accuracy or
  AUC: the chains use the ratio, and AUC is blind to a miscalibrated scale
  (an over-confident classifier keeps its AUC while its odds explode).
- **Regularisation: weight decay (AdamW) + dropout.** Label smoothing is left
  out on purpose: with smoothing ``eps`` the BCE minimiser becomes
  ``(1 - eps) D + eps / 2``, which compresses every odds toward 1, a bias in
  the very ratio we want. Augmentation is left out too: it changes the two
  distributions being compared (a flip-invariant classifier estimates the
  ratio of the flip-symmetrised densities), which is only harmless when both
  p_data and p_G are invariant.
- **No batch norm**, so that the logit of a sample is a function of that
  sample alone (in training, batch statistics of all-real or mixed batches
  would leak the label); dropout is off in eval mode and in the exported file.
- Networks: an MLP for flat samples ``(d,)``; for images ``(C, S, S)`` two
  stride-2 3x3 convolutions (three when ``S > 32``) with LeakyReLU and
  dropout, then one linear logit.
- **A refit** (``init="joint"``, config kind ``"gan"``) runs the same loop,
  loss, early stopping and diagnostics on the GAN's *own* discriminator,
  rebuilt from the model's architecture and starting from the jointly trained
  weights (:func:`mhgan_dist.models.artifacts.gan_discriminator`): round 0 is
  the joint D itself. Its batch-norm layers stay in eval mode (running
  statistics frozen, affine parameters trained): batch statistics would make
  a sample's logit depend on its batchmates while training, whereas the
  exported D uses running statistics, so freezing them trains exactly the
  function the chains will use. No dropout (the architecture has none).

The diagnostics (:func:`score_diagnostics`, :func:`discriminator_diagnostics`)
score held-out real samples against fresh G samples that neither training nor
early stopping saw: AUC, log loss, Dawid's Z, ECE and Brier
(:func:`mhgan_dist.core.calibrators.calibration_metrics`), plus the two
self-normalisation checks of a ratio: the mean odds over generated samples
and the mean inverse odds over real samples, both 1 for the true ratio when
p_data and p_G share their support (at most 1 otherwise).

Determinism: on CPU, a fit is a deterministic function of its config, the
generator and the real data (seeded generators, deterministic algorithms, a
fixed thread count). torch, no Ray; files only in :func:`run`, through
:mod:`mhgan_dist.models.artifacts`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mhgan_dist.core.calibrators import calibration_metrics, sigmoid
from mhgan_dist.errors import ConfigError, InputError
from mhgan_dist.training.setup import deterministic, load_training_data, make_config, require_torch_device

__all__ = [
    "RatioConfig",
    "RatioRound",
    "RatioFit",
    "make_ratio_config",
    "INITS",
    "RatioMLP",
    "RatioConvNet",
    "build_ratio_classifier",
    "VALIDATION_FAKES",
    "HELDOUT_FAKES",
    "validation_split",
    "fit_ratio_classifier",
    "generated_samples",
    "discriminator_logits",
    "auc",
    "score_diagnostics",
    "discriminator_diagnostics",
    "compare_discriminators",
    "fit_ratio_model",
]

# Purposes of randomness within one fit (each its own seeded generator).
_SPLIT, _STEP_LATENTS, _REAL_ORDER = 10, 12, 13
VALIDATION_FAKES = 11
"""Purpose of the latents of the fixed generated validation samples (early stopping)."""
HELDOUT_FAKES = 20
"""Purpose of the latents of the generated samples of the held-out diagnostics (never trained or stopped on)."""
# exp() of a logit is clipped here, so an over-confident D gives a huge finite odds mean, never inf.
_MAX_LOGIT = 50.0


@dataclass(frozen=True)
class RatioConfig:
    """Everything that determines a fit besides G and the data (see :func:`make_ratio_config`)."""

    kind: str
    """``"mlp"`` (flat samples), ``"conv"`` (images ``[C, S, S]``) or ``"gan"`` (the GAN's own D, a refit)."""
    width: int | None
    """MLP hidden units, or the first convolution's channels (doubled in each later one); None for ``"gan"``."""
    dropout: float
    """Dropout probability after each hidden layer, in [0, 1)."""
    batch_size: int
    """Real samples per step; as many fresh G samples join them."""
    lr: float
    weight_decay: float
    """AdamW's decoupled weight decay."""
    steps_per_round: int
    """Optimiser steps between two evaluations of the validation log loss."""
    max_rounds: int
    patience: int
    """Stop after this many rounds without a new minimum of the validation log loss."""
    val_size: int | None = None
    """Real samples held out of the training data for early stopping (default: 10%, at most 5,000)."""
    seed: int = 0
    threads: int = 1
    device: str = "cpu"
    layers: int = 3
    """MLP hidden layers (the conv net's depth follows the image size)."""
    init: str = "fresh"
    """``"fresh"``: a new ratio classifier (kind mlp or conv); ``"joint"``: a refit of the GAN's own D (kind gan)."""
    max_seconds: float | None = None
    """Wall-clock budget: stop after the first round that ends this many seconds into the fit (None: no limit).
    A fit stopped so (``stopped == "time"``) depends on the machine's speed, not only on its config."""


_VECTOR_DEFAULTS: dict[str, Any] = dict(
    kind="mlp", width=128, dropout=0.1, batch_size=128, lr=2e-3, weight_decay=1e-2,
    steps_per_round=200, max_rounds=100, patience=5,
)
_IMAGE_DEFAULTS: dict[str, Any] = dict(
    kind="conv", width=32, dropout=0.25, batch_size=64, lr=5e-4, weight_decay=1e-2,
    steps_per_round=200, max_rounds=100, patience=5,
)
# The refit's learning rate and batch are the reference GANs' (DCGAN's 2e-4, batch 64): it continues
# training weights that are already near a solution, so a fresh classifier's rates would undo them.
_REFIT_DEFAULTS: dict[str, Any] = dict(
    kind="gan", width=None, dropout=0.0, batch_size=64, lr=2e-4, weight_decay=1e-2,
    steps_per_round=200, max_rounds=100, patience=5,
)
# Options that shape a fresh classifier; a refit keeps the GAN's own network.
_NETWORK_OPTIONS = ("kind", "width", "dropout", "layers")
INITS: tuple[str, ...] = ("fresh", "joint")
"""``--init`` values: a fresh ratio classifier, or the GAN's D refit from its joint weights."""


def make_ratio_config(sample_shape: Sequence[int], **overrides: Any) -> RatioConfig:
    """A validated :class:`RatioConfig` for samples of ``sample_shape``; ``None`` overrides keep the default.

    Flat samples ``(d,)`` get the MLP, images ``(C, S, S)`` the conv net;
    ``init="joint"`` gets the refit's defaults (kind ``"gan"``, no dropout,
    lr 2e-4, batch 64) and refuses the options that shape a fresh network.
    Raises ConfigError for an unknown option or an out-of-range value.
    """
    shape = tuple(int(s) for s in sample_shape)
    fields = {f.name for f in dataclasses.fields(RatioConfig)}
    unknown = set(overrides) - fields
    if unknown:
        raise ConfigError(f"unknown ratio-classifier option {sorted(unknown)[0]!r}.")
    init = overrides.get("init") or "fresh"
    if init not in INITS:
        raise ConfigError(f"--init must be one of {', '.join(INITS)}, not {init!r}.")
    if init == "joint":
        given = [k for k in _NETWORK_OPTIONS if overrides.get(k) is not None]
        if given:
            raise ConfigError(
                f"--{given[0]} does not apply to --init joint: the refit keeps the GAN's own discriminator network."
            )
        values: dict[str, Any] = dict(_REFIT_DEFAULTS)
    else:
        values = dict(_IMAGE_DEFAULTS if len(shape) == 3 else _VECTOR_DEFAULTS)
    values.update({k: v for k, v in overrides.items() if v is not None})
    cfg = RatioConfig(**values)
    _validate(cfg, shape)
    return cfg


def _validate(cfg: RatioConfig, shape: tuple[int, ...]) -> None:
    for name in ("width", "batch_size", "steps_per_round", "max_rounds", "patience", "val_size", "threads", "layers"):
        value = getattr(cfg, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, not {value!r}.")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise ConfigError(f"--seed must be a non-negative integer, not {cfg.seed!r}.")
    if cfg.max_seconds is not None and not (cfg.max_seconds > 0 and math.isfinite(cfg.max_seconds)):
        raise ConfigError(f"--max-seconds must be a positive number, not {cfg.max_seconds!r}.")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise ConfigError(f"--lr must be a positive number, not {cfg.lr!r}.")
    if not (cfg.weight_decay >= 0 and math.isfinite(cfg.weight_decay)):
        raise ConfigError(f"--weight-decay must be 0 or more, not {cfg.weight_decay!r}.")
    if not 0 <= cfg.dropout < 1:
        raise ConfigError(f"--dropout must lie in [0, 1), not {cfg.dropout!r}.")
    if cfg.init not in INITS:
        raise ConfigError(f"--init must be one of {', '.join(INITS)}, not {cfg.init!r}.")
    if (cfg.kind == "gan") != (cfg.init == "joint"):
        raise ConfigError("the GAN's own discriminator (kind 'gan') is the refit's network, and only the refit's (--init joint).")
    if cfg.kind not in ("mlp", "conv", "gan"):
        raise ConfigError(f"the ratio classifier is an 'mlp' or a 'conv' net, not {cfg.kind!r}.")
    if cfg.kind == "conv" and (len(shape) != 3 or shape[1] != shape[2]):
        raise ConfigError(f"the conv ratio classifier needs square images [C, S, S], not samples of shape {list(shape)}.")
    require_torch_device(cfg.device)


# ------------------------------------------------------------------ networks


class RatioMLP(nn.Module):
    """``[B, *shape]`` (flattened) -> ``[B]`` logits: ``layers`` x (Linear, LeakyReLU(0.2), Dropout)."""

    def __init__(self, in_dim: int, width: int = 128, layers: int = 3, dropout: float = 0.1) -> None:
        super().__init__()
        # A fixed affine map of the input (set by the fit to the real data's per-feature mean and
        # sd): the toys live in [-1, 4] or [-2.2, 2.2], and a standardised input trains faster.
        self.register_buffer("shift", torch.zeros(in_dim))
        self.register_buffer("scale", torch.ones(in_dim))
        modules: list[nn.Module] = []
        d = in_dim
        for _ in range(layers):
            modules += [nn.Linear(d, width), nn.LeakyReLU(0.2), nn.Dropout(dropout)]
            d = width
        modules.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x.reshape(x.shape[0], -1) - self.shift) / self.scale).reshape(x.shape[0])

    def standardise(self, real: torch.Tensor) -> None:
        """Set the input map to ``real``'s per-feature mean and sd (sd floored at 1e-6)."""
        flat = real.reshape(real.shape[0], -1).double()
        self.shift.copy_(flat.mean(0).float())
        self.scale.copy_(flat.std(0).clamp_min(1e-6).float() if len(flat) > 1 else torch.ones_like(self.scale))


class RatioConvNet(nn.Module):
    """``[B, C, S, S]`` -> ``[B]`` logits: stride-2 3x3 convolutions with LeakyReLU(0.2) and dropout, then Linear.

    Two convolutions for ``S <= 32`` (28 -> 14 -> 7), three above; no batch norm.
    """

    def __init__(self, channels: int, image_size: int, width: int = 32, dropout: float = 0.25) -> None:
        super().__init__()
        convs = 2 if image_size <= 32 else 3
        modules: list[nn.Module] = []
        c_in, c_out, side = channels, width, image_size
        for _ in range(convs):
            modules += [nn.Conv2d(c_in, c_out, 3, 2, 1), nn.LeakyReLU(0.2), nn.Dropout(dropout)]
            c_in, c_out, side = c_out, c_out * 2, (side + 1) // 2
        self.features = nn.Sequential(*modules)
        self.head = nn.Linear(c_in * side * side, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return self.head(h.reshape(h.shape[0], -1)).reshape(x.shape[0])


def build_ratio_classifier(cfg: RatioConfig, sample_shape: Sequence[int]) -> nn.Module:
    """A freshly initialised classifier for samples of ``sample_shape`` (torch's global RNG draws the weights).

    Not for kind ``"gan"``: a refit starts from the GAN's D, which the caller loads
    (:func:`mhgan_dist.models.artifacts.gan_discriminator`).
    """
    shape = tuple(int(s) for s in sample_shape)
    if cfg.kind == "gan" or cfg.width is None:
        raise ConfigError("a refit starts from the GAN's own discriminator, not from a freshly built network.")
    if cfg.kind == "conv":
        return RatioConvNet(shape[0], shape[1], cfg.width, cfg.dropout)
    return RatioMLP(int(np.prod(shape)), cfg.width, cfg.layers, cfg.dropout)


# --------------------------------------------------------------- sampling


def _latents(seed: int, purpose: int, count: int, latent_dim: int) -> torch.Tensor:
    rng = np.random.default_rng([seed, purpose])
    return torch.from_numpy(rng.standard_normal((count, latent_dim), dtype=np.float32))


def generated_samples(
    generator: nn.Module, count: int, *, latent_dim: int, seed: int, purpose: int = HELDOUT_FAKES,
    device: torch.device | str = "cpu", batch_size: int = 1024,
) -> torch.Tensor:
    """``count`` samples of G, float32 ``[count, *sample_shape]`` on CPU.

    Latents are standard normal from numpy's generator seeded by ``(seed,
    purpose)``, so the draws do not depend on the device or the batch size,
    and torch's random state is left alone. G runs in eval mode, its mode restored.
    """
    device = torch.device(device)
    z = _latents(seed, purpose, count, latent_dim)
    parts = []
    mode = generator.training
    generator.eval()  # a G being trained may hold batch norm: its running statistics must not move
    try:
        with torch.no_grad():
            for start in range(0, count, batch_size):
                parts.append(generator(z[start : start + batch_size].to(device)).float().cpu())
    finally:
        generator.train(mode)
    return torch.cat(parts)


def discriminator_logits(
    discriminator: nn.Module, samples: torch.Tensor | np.ndarray, *, device: torch.device | str = "cpu",
    batch_size: int = 1024,
) -> np.ndarray:
    """D's logits of ``samples`` ``[N, *shape]``, float64 ``[N]``; D is run in eval mode, its mode restored."""
    device = torch.device(device)
    x = torch.as_tensor(np.asarray(samples, dtype=np.float32)) if isinstance(samples, np.ndarray) else samples
    mode = discriminator.training
    discriminator.eval()
    out = []
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                logits = discriminator(x[start : start + batch_size].to(device))
                out.append(logits.reshape(-1).double().cpu().numpy())
    finally:
        discriminator.train(mode)
    return np.concatenate(out) if out else np.zeros(0)


# ------------------------------------------------------------ diagnostics


def auc(real_scores: np.ndarray, fake_scores: np.ndarray) -> float:
    """P(score of a real sample > score of a generated one), ties counting 1/2 (Mann-Whitney); numpy only."""
    from scipy.stats import rankdata

    real = np.asarray(real_scores, dtype=np.float64)
    fake = np.asarray(fake_scores, dtype=np.float64)
    if real.size == 0 or fake.size == 0:
        raise ValueError("AUC needs at least one real and one generated score")
    ranks = rankdata(np.concatenate([real, fake]))
    return float((ranks[: real.size].sum() - real.size * (real.size + 1) / 2) / (real.size * fake.size))


def score_diagnostics(real_logits: np.ndarray, fake_logits: np.ndarray) -> dict[str, float]:
    """How good a ratio estimator D is, from its logits on held-out real and generated samples (numpy only).

    Returns a JSON-ready dict: ``n_real``, ``n_fake``; ``auc`` (ranking, 0.5 =
    no signal); ``log_loss``, ``brier``, ``ece``, ``dawid_z`` of
    ``sigmoid(logit)`` against the labels (mean over all ``n_real + n_fake``
    scores; log loss in nats, log 2 = 0.693 for a D that knows nothing);
    ``fake_odds_mean`` = mean of exp(logit) over generated samples and
    ``real_inverse_odds_mean`` = mean of exp(-logit) over real ones: for the
    true ratio their expectations are the data's mass on G's support and G's
    mass on the data's support (E_G[p_data/p_G] = P_data(p_G > 0)), so 1 when
    the supports agree and below 1 where one side has mass the other lacks;
    far above 1 means over-confident odds (exp(logit) is capped at e^50);
    ``real_logit_mean``, ``fake_logit_mean``,
    ``logit_sd`` (over all scores). Logits must be finite.
    """
    real = np.asarray(real_logits, dtype=np.float64).reshape(-1)
    fake = np.asarray(fake_logits, dtype=np.float64).reshape(-1)
    if real.size == 0 or fake.size == 0:
        raise ValueError("diagnostics need at least one real and one generated score")
    if not (np.isfinite(real).all() and np.isfinite(fake).all()):
        raise ValueError("diagnostics need finite logits")
    scores = np.concatenate([real, fake])
    labels = np.concatenate([np.ones(real.size), np.zeros(fake.size)])
    metrics = calibration_metrics(sigmoid(scores), labels)
    # Log loss from logits directly: exact where the sigmoid rounds to 0 or 1.
    log_loss = float(np.concatenate([np.logaddexp(0.0, -real), np.logaddexp(0.0, fake)]).mean())
    return {
        "n_real": int(real.size),
        "n_fake": int(fake.size),
        "auc": auc(real, fake),
        "log_loss": log_loss,
        "dawid_z": metrics.dawid_z,
        "ece": metrics.ece,
        "brier": metrics.brier,
        "fake_odds_mean": float(np.mean(np.exp(np.minimum(fake, _MAX_LOGIT)))),
        "real_inverse_odds_mean": float(np.mean(np.exp(np.minimum(-real, _MAX_LOGIT)))),
        "real_logit_mean": float(real.mean()),
        "fake_logit_mean": float(fake.mean()),
        "logit_sd": float(scores.std()),
    }


def compare_discriminators(
    discriminators: Mapping[str, nn.Module], generator: nn.Module, real: np.ndarray, *, latent_dim: int, seed: int,
    fake_count: int | None = None, device: torch.device | str = "cpu", batch_size: int = 1024,
) -> dict[str, dict[str, float]]:
    """:func:`score_diagnostics` of each D on the same held-out ``real`` and the same fresh G samples.

    ``real`` float32 ``[N, *shape]`` must not have been used to train G or
    any of the D's. The classes are balanced, as in training, so that the
    log loss, Z, ECE and Brier judge the odds as a ratio: ``m = min(N,
    fake_count)`` (default N) generated samples from the seed stream ``(seed,
    HELDOUT_FAKES)``, which no fit of this module trains or stops on, against
    the first ``m`` real ones. Every D sees the same samples, so the
    comparison is paired.
    """
    count = min(len(real), fake_count or len(real))
    real = real[:count]
    fakes = generated_samples(generator, count, latent_dim=latent_dim, seed=seed, device=device, batch_size=batch_size)
    out = {}
    for name, d in discriminators.items():
        real_logits = discriminator_logits(d, real, device=device, batch_size=batch_size)
        fake_logits = discriminator_logits(d, fakes, device=device, batch_size=batch_size)
        out[name] = {**score_diagnostics(real_logits, fake_logits), "seed": int(seed)}
    return out


def discriminator_diagnostics(
    discriminator: nn.Module, generator: nn.Module, real: np.ndarray, *, latent_dim: int, seed: int,
    fake_count: int | None = None, device: torch.device | str = "cpu", batch_size: int = 1024,
) -> dict[str, float]:
    """:func:`score_diagnostics` of one D on held-out ``real`` against fresh G samples (see :func:`compare_discriminators`)."""
    return compare_discriminators(
        {"d": discriminator}, generator, real, latent_dim=latent_dim, seed=seed, fake_count=fake_count,
        device=device, batch_size=batch_size,
    )["d"]


# -------------------------------------------------------------------- fit


@dataclass(frozen=True)
class RatioRound:
    """One point of the training curve: the state after ``step`` optimiser steps."""

    round: int
    step: int
    real_epochs: float
    """Passes over the real fitting split so far."""
    train_log_loss: float | None
    """Mean BCE over the round's steps (nats, dropout on); None for round 0."""
    val_log_loss: float
    """BCE on the validation split against the fixed validation G samples (nats, eval mode)."""
    val_auc: float

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in dataclasses.asdict(self).items()}


@dataclass
class RatioFit:
    """A fitted classifier (the best round's weights, on CPU, eval mode) and how it got there."""

    classifier: nn.Module
    curve: list[RatioRound]
    best_round: int
    stopped: str
    """``"patience"`` (early stop), ``"max_rounds"`` or ``"time"`` (``max_seconds`` spent)."""
    fit_size: int
    val_size: int
    seconds: float

    def summary(self, cfg: RatioConfig) -> dict[str, Any]:
        """model.json's record of the fit: kind (``"ratio"`` or ``"refit"``), config, curve, best round, why it stopped."""
        best = self.curve[self.best_round]
        refit = cfg.init == "joint"
        network = (
            "the GAN's own discriminator, started from the jointly trained weights, batch norm frozen at its running statistics"
            if refit
            else f"a fresh {cfg.kind} classifier"
        )
        return {
            "kind": "refit" if refit else "ratio",
            "network": network,
            "config": dataclasses.asdict(cfg),
            "loss": "binary cross-entropy on logits, balanced real/generated batches",
            "regularisation": f"AdamW weight decay {cfg.weight_decay}, dropout {cfg.dropout}; no label smoothing, no augmentation",
            "early_stopping": f"validation log loss, patience {cfg.patience} rounds of {cfg.steps_per_round} steps",
            "fit_size": self.fit_size,
            "val_size": self.val_size,
            "best_round": self.best_round,
            "best_step": best.step,
            "best_val_log_loss": round(best.val_log_loss, 6),
            "stopped": self.stopped,
            "steps": self.curve[-1].step,
            "curve": [r.to_json() for r in self.curve],
            "seconds": round(self.seconds, 1),
        }


class _RealSource:
    """Real samples by index from an ndarray or a map-style dataset, as float32 tensors."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __len__(self) -> int:
        return len(self._real)

    def take(self, indices: np.ndarray) -> torch.Tensor:
        if isinstance(self._real, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(self._real[indices], dtype=np.float32))
        return torch.from_numpy(np.stack([np.asarray(self._real[int(i)], dtype=np.float32) for i in indices]))


def validation_split(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(validation, fitting) indices into ``n`` real training samples, int64.

    A permutation seeded by ``(seed, 10)``; its first ``val_size`` entries
    (sorted) are held out for early stopping, the rest are fitted on.
    """
    order = np.random.default_rng([seed, _SPLIT]).permutation(n)
    return np.sort(order[:val_size]), order[val_size:]


def _bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, labels)


def _train_mode(net: nn.Module) -> None:
    """Training mode, except batch norm: its running statistics stay frozen (see the module docstring)."""
    net.train()
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def fit_ratio_classifier(
    generator: nn.Module,
    real: Any,
    cfg: RatioConfig,
    *,
    latent_dim: int,
    sample_shape: Sequence[int],
    initial: nn.Module | None = None,
    log: Callable[[str], None] | None = None,
) -> RatioFit:
    """Train a classifier of ``real`` (label 1) against the frozen ``generator`` (label 0).

    The classifier is a fresh network (``cfg.init == "fresh"``) or a copy of
    ``initial`` (``"joint"``: the GAN's own D with its jointly trained
    weights, float32 ``[B, *sample_shape]`` -> ``[B]`` logits, which is never
    modified; required then, refused otherwise); the copy's batch-norm layers
    stay in eval mode throughout.

    ``generator`` maps float32 ``[B, latent_dim]`` on ``cfg.device`` to
    ``[B, *sample_shape]``; it is only run under ``no_grad``. ``real`` is the
    real *training* data, float32 ``[N, *sample_shape]`` (an ndarray or a
    map-style dataset of such items); a seeded ``cfg.val_size`` of it is held
    out for early stopping (:func:`validation_split`, against ``val_size``
    samples of G from the seed stream ``(cfg.seed, VALIDATION_FAKES)``) and
    never trained on. Each step takes
    ``cfg.batch_size`` real samples (reshuffled every pass) and as many fresh
    G samples. After round 0 (the untrained net, or the joint D) and every
    ``cfg.steps_per_round`` steps, the validation log loss is measured; the
    fit stops after ``cfg.patience`` rounds without a new minimum, after
    ``cfg.max_rounds``, or after the round that ends past ``cfg.max_seconds``,
    and returns the weights of the best round. ``log``
    receives one line per round. Raises ConfigError or InputError (too little
    data, wrong shape, non-finite samples).
    """
    shape = tuple(int(s) for s in sample_shape)
    if (initial is not None) != (cfg.init == "joint"):
        raise ConfigError("a refit (--init joint) starts from the GAN's discriminator, and only a refit does.")
    device = torch.device(cfg.device)
    source = _RealSource(real)
    n = len(source)
    val_n = cfg.val_size if cfg.val_size is not None else min(max(n // 10, 1), 5000)
    if val_n >= n:
        raise ConfigError(f"--val-size {val_n} leaves nothing to fit of the {n} real training samples.")
    if n - val_n < cfg.batch_size:
        raise ConfigError(
            f"{n} real training samples leave {n - val_n} after the {val_n} held out for early stopping, "
            f"fewer than one batch of {cfg.batch_size}."
        )
    started = time.perf_counter()
    g_mode = generator.training
    generator.eval()
    try:
        return _fit(generator, source, cfg, val_n, latent_dim, shape, device, started, initial, log)
    finally:
        generator.train(g_mode)


def _fit(
    generator: nn.Module, source: _RealSource, cfg: RatioConfig, val_n: int, latent_dim: int,
    shape: tuple[int, ...], device: torch.device, started: float, initial: nn.Module | None,
    log: Callable[[str], None] | None,
) -> RatioFit:

    n = len(source)
    with deterministic(cfg.seed, cfg.threads, device):
        val_idx, fit_idx = validation_split(n, val_n, cfg.seed)
        val_real = source.take(val_idx)
        if tuple(val_real.shape[1:]) != shape:
            raise InputError(f"the real training samples have shape {list(val_real.shape[1:])}, but the generator makes {list(shape)}.")
        if not torch.isfinite(val_real).all():
            raise InputError("the real training samples hold non-finite values (NaN or inf).")
        val_fake = generated_samples(generator, val_n, latent_dim=latent_dim, seed=cfg.seed, purpose=VALIDATION_FAKES, device=device)
        val_x = torch.cat([val_real, val_fake]).to(device)
        val_y = torch.cat([torch.ones(val_n), torch.zeros(val_n)]).to(device)

        net = copy.deepcopy(initial) if initial is not None else build_ratio_classifier(cfg, shape)
        if isinstance(net, RatioMLP):
            net.standardise(source.take(np.sort(fit_idx[:10_000])))
        net = net.to(device)
        optimiser = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        latents = torch.Generator().manual_seed(cfg.seed * 1_000_003 + _STEP_LATENTS)
        real_order = np.random.default_rng([cfg.seed, _REAL_ORDER])
        labels = torch.cat([torch.ones(cfg.batch_size), torch.zeros(cfg.batch_size)]).to(device)

        def evaluate(index: int, step: int, train_loss: float | None) -> RatioRound:
            logits = torch.from_numpy(discriminator_logits(net, val_x, device=device)).float().to(device)
            val_loss = float(_bce(logits, val_y))
            scores = logits.double().cpu().numpy()
            return RatioRound(index, step, step * cfg.batch_size / len(fit_idx), train_loss, val_loss,
                              auc(scores[:val_n], scores[val_n:]))

        curve = [evaluate(0, 0, None)]
        best, best_state, since_best = 0, copy.deepcopy(net.state_dict()), 0
        if log is not None:
            start = "the joint D" if initial is not None else "untrained"
            log(f"round 0: val log loss {curve[0].val_log_loss:.4f}, AUC {curve[0].val_auc:.3f} ({start})")
        permutation, cursor, step, stopped = real_order.permutation(fit_idx), 0, 0, "max_rounds"
        for index in range(1, cfg.max_rounds + 1):
            _train_mode(net)  # evaluate() leaves every module in training mode
            total = torch.zeros((), device=device)
            for _ in range(cfg.steps_per_round):
                if cursor + cfg.batch_size > len(permutation):
                    permutation, cursor = real_order.permutation(fit_idx), 0
                real_batch = source.take(permutation[cursor : cursor + cfg.batch_size]).to(device)
                cursor += cfg.batch_size
                with torch.no_grad():
                    fake_batch = generator(torch.randn(cfg.batch_size, latent_dim, generator=latents).to(device))
                loss = _bce(net(torch.cat([real_batch, fake_batch])), labels)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total += loss.detach()
                step += 1
            point = evaluate(index, step, float(total) / cfg.steps_per_round)
            curve.append(point)
            improved = point.val_log_loss < curve[best].val_log_loss
            if improved:
                best, best_state, since_best = index, copy.deepcopy(net.state_dict()), 0
            else:
                since_best += 1
            if log is not None:
                log(
                    f"round {index}: step {step} ({point.real_epochs:.2f} real epochs), train log loss "
                    f"{point.train_log_loss:.4f}, val log loss {point.val_log_loss:.4f}, AUC {point.val_auc:.3f}"
                    + (" *" if improved else "")
                )
            if since_best >= cfg.patience:
                stopped = "patience"
                break
            if cfg.max_seconds is not None and time.perf_counter() - started >= cfg.max_seconds:
                stopped = "time"
                break
        net.load_state_dict(best_state)
        net = net.cpu().eval()
    return RatioFit(net, curve, best, stopped, len(fit_idx), val_n, time.perf_counter() - started)


# -------------------------------------------------------------------- run

# model.json keys that describe the written files, not the model: never copied from the source.
_FILE_KEYS = ("format", "format_version", "latent_dim", "sample_shape", "discriminator_output", "real_samples",
              "versions", "files", "discriminators", "ratio_fit")


def _training_real(files: Any, dataset: str | None, data_root: str | None, real_train: str | None,
                   sample_shape: tuple[int, ...]) -> tuple[Any, dict[str, Any]]:
    """The real training data of the model (never its held-out samples) and how it was obtained."""
    from mhgan_dist.models.artifacts import load_real_samples

    if (dataset is None) == (real_train is None):
        raise ConfigError("give the real training data either as --dataset NAME or as --real-train PATH, not both or neither.")
    if real_train is not None:
        return load_real_samples(real_train, sample_shape), {"real_train": str(real_train)}
    recorded = files.metadata.get("dataset")
    if recorded is not None and recorded != dataset:
        raise ConfigError(f"model {files.name} was trained on {recorded}, not on {dataset}; pass --dataset {recorded}.")
    config = (files.metadata.get("training") or {}).get("config") or {}
    # The split that trained G: same seed, size and held-out share, so its held-out part stays out.
    keep = ("seed", "train_size", "holdout_fraction", "holdout_limit", "batch_size", "image_size")
    options = {k: config.get(k) for k in keep if config.get(k) is not None}
    cfg = make_config(dataset, data_root=data_root or config.get("data_root"), **options)
    split = load_training_data(cfg)
    if split.sample_shape != sample_shape:
        raise ConfigError(
            f"the {dataset} dataset has samples of shape {list(split.sample_shape)}, but the generator makes {list(sample_shape)}."
        )
    return split.train, {"dataset": dataset, "split": {k: getattr(cfg, k) for k in ("seed", "train_size", "holdout_fraction")}}


def _overlap(train: Any, heldout: np.ndarray) -> int | None:
    """Held-out samples that also occur (bit for bit) in an in-memory training array; None if not an array."""
    if not isinstance(train, np.ndarray):
        return None
    seen = {row.tobytes() for row in np.ascontiguousarray(train, dtype=np.float32).reshape(len(train), -1)}
    return sum(row.tobytes() in seen for row in heldout.reshape(len(heldout), -1))


def fit_ratio_model(
    model: str,
    output: str,
    options: Mapping[str, Any] | None = None,
    *,
    dataset: str | None = None,
    data_root: str | None = None,
    real_train: str | None = None,
    real: str | None = None,
    eval_fakes: int | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Fit a ratio classifier (or refit the GAN's D) for ``model``'s frozen G and write a model directory at ``output``.

    ``model`` is a shipped name or a model directory;
    ``options`` are :func:`make_ratio_config` overrides (the defaults follow
    the generator's sample shape; ``init="joint"`` refits the model's own D,
    rebuilt by :func:`mhgan_dist.models.artifacts.gan_discriminator`, instead
    of fitting a fresh classifier). The real training data is
    ``dataset`` (rebuilt with the split recorded in model.json, so the model's
    held-out samples stay out of it) or the array file ``real_train``. The
    held-out real samples are the model's own (``real.npy``) or ``real``. The
    output's ``discriminator.pt2`` is the new classifier; the jointly trained D
    is kept as ``discriminator-joint.pt2``; model.json's ``discriminators``
    holds :func:`score_diagnostics` of both on the held-out samples against
    ``eval_fakes`` (default: as many) fresh G samples, and ``ratio_fit`` the
    fit's kind (``"ratio"`` or ``"refit"``), config and curve. Returns (output path, the model.json document's
    ``discriminators`` and ``ratio_fit``). Raises the project's errors before
    anything is written.
    """
    from mhgan_dist.models.artifacts import (
        check_new_model_dir,
        gan_discriminator,
        joint_discriminator,
        joint_discriminator_name,
        load_pair,
        load_real_samples,
        resolve_model,
        save_with_discriminator,
    )

    if eval_fakes is not None and (isinstance(eval_fakes, bool) or not isinstance(eval_fakes, int) or eval_fakes < 1):
        raise ConfigError(f"--eval-fakes must be a positive integer, not {eval_fakes!r}.")
    files = resolve_model(model, real=real)
    check_new_model_dir(output, files, overwrite=overwrite)
    if files.real is None:
        raise InputError(
            f"model {files.generator.parent} has no held-out real samples (real.npy); give them with --real PATH."
        )
    options = dict(options or {})
    device = require_torch_device(options.get("device") or "cpu")
    pair = load_pair(files, device)
    cfg = make_ratio_config(pair.sample_shape, **options)
    refit = cfg.init == "joint"
    initial = gan_discriminator(files, device) if refit else None
    heldout = load_real_samples(files.real, pair.sample_shape)
    train, source_info = _training_real(files, dataset, data_root, real_train, pair.sample_shape)
    overlap = _overlap(train, heldout)
    # Bit-identical rows happen by chance in 1-D float32 data; only a sizeable share means a leak.
    if overlap is not None and overlap > max(1, len(heldout) // 100) and log is not None:
        log(f"warning: {overlap} of the {len(heldout)} held-out samples also occur in the training data.")
    if log is not None:
        what = f"refitting its GAN discriminator from {joint_discriminator(files)[0].name}" if refit else f"fitting a {cfg.kind} ratio classifier"
        log(f"{files.name}: {what} on {len(train)} real training samples (held-out: {len(heldout)}) on {device}")
    fit = fit_ratio_classifier(
        pair.generator, train, cfg, latent_dim=pair.latent_dim, sample_shape=pair.sample_shape, initial=initial, log=log
    )

    joint_path, joint_output = joint_discriminator(files)
    joint_files = dataclasses.replace(files, discriminator=joint_path, discriminator_output=joint_output)
    joint = load_pair(joint_files, device).discriminator
    joint_name = joint_discriminator_name(files)
    classifier = fit.classifier.to(device)
    diagnostics = compare_discriminators(
        {"discriminator.pt2": classifier, joint_name: joint}, pair.generator, heldout,
        latent_dim=pair.latent_dim, seed=cfg.seed, fake_count=eval_fakes, device=device,
    )
    if joint_path == files.discriminator:
        joint_kind = (files.metadata.get("training") or {}).get("discriminator") or "the source model's discriminator"
    else:
        joint_kind = ((files.metadata.get("discriminators") or {}).get(joint_path.name) or {}).get(
            "kind", "the source model's jointly trained discriminator"
        )
    new_kind = (
        "GAN discriminator refit from the jointly trained weights against the frozen generator (jobs.fit_ratio --init joint)"
        if refit
        else "ratio classifier fitted for the frozen generator (jobs.fit_ratio)"
    )
    discriminators = {
        "discriminator.pt2": {
            "kind": new_kind,
            "discriminator_output": "logit",
            "heldout": diagnostics["discriminator.pt2"],
        },
        joint_name: {
            "kind": joint_kind,
            "discriminator_output": joint_output,
            "heldout": diagnostics[joint_name],
        },
    }
    ratio_fit = {**fit.summary(cfg), "real_training_data": source_info, "heldout_in_training_data": overlap}
    metadata = {k: v for k, v in files.metadata.items() if k not in _FILE_KEYS}
    if isinstance(metadata.get("training"), dict):
        metadata["training"] = {
            **metadata["training"],
            "discriminator": f"{new_kind.split(' (')[0]}; the jointly trained D is {joint_name}",
        }
    metadata.update(
        source_model={"name": files.name, "fingerprint": pair.fingerprint},
        discriminators=discriminators,
        ratio_fit=ratio_fit,
    )
    out = save_with_discriminator(
        output, files, classifier.cpu(), latent_dim=pair.latent_dim, real=heldout, metadata=metadata, overwrite=overwrite,
        real_file=files.real,  # kept in its own format (e.g. fashion's 8-bit real.npz) when it is a file
    )
    return out, {"discriminators": discriminators, "ratio_fit": ratio_fit}

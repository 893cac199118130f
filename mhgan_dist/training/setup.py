"""What a training run is given: its config, its data split, its device and determinism.

Shared by the GAN training (:mod:`.gan`) and the ratio-model fit (:mod:`.ratio`),
which import it and not each other's internals. A dataset is returned in data
coordinates (see :mod:`.datasets`); the held-out share is never trained on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mhgan_dist.errors import ConfigError
from mhgan_dist.training import datasets

__all__ = [
    "DATASETS",
    "IMAGE_DATASETS",
    "TOY_DATASETS",
    "TrainConfig",
    "TrainingData",
    "deterministic",
    "load_test_data",
    "load_training_data",
    "make_config",
    "require_torch_device",
]

TOY_DATASETS = ("grid2d", "mixture1d")
IMAGE_DATASETS = ("cifar10", "celeba", "image-folder")
DATASETS: tuple[str, ...] = (*TOY_DATASETS, "digits", "fashion", *IMAGE_DATASETS)

# Per-dataset defaults. Toys: the paper's MLP GAN with a 2-D latent; batch 128
# rather than 64 keeps 150 epochs of the grid near 8 minutes on one CPU thread.
# Images: the DCGAN example's Adam(2e-4, beta1 0.5), batch 64, latent 100.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "grid2d": dict(architecture="mlp", latent_dim=2, epochs=150, batch_size=128, lr=1e-4, beta1=0.5),
    "mixture1d": dict(architecture="mlp", latent_dim=2, epochs=150, batch_size=128, lr=1e-4, beta1=0.5),
    "digits": dict(architecture="dcgan", latent_dim=32, epochs=300, batch_size=64, lr=2e-4, beta1=0.5, image_size=8),
    # Fashion-MNIST: 28x28 DCGAN (about 14M multiply-adds per G+D sample), 10 epochs of the 54,000 "gan" images.
    "fashion": dict(architecture="dcgan", latent_dim=100, epochs=10, batch_size=64, lr=2e-4, beta1=0.5, image_size=28),
    "cifar10": dict(architecture="dcgan", latent_dim=100, epochs=60, batch_size=64, lr=2e-4, beta1=0.5, image_size=32),
    "celeba": dict(architecture="dcgan", latent_dim=100, epochs=60, batch_size=64, lr=2e-4, beta1=0.5, image_size=64),
    "image-folder": dict(
        architecture="dcgan", latent_dim=100, epochs=60, batch_size=64, lr=2e-4, beta1=0.5, image_size=64
    ),
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (see :func:`make_config` for defaults)."""

    dataset: str
    architecture: str
    latent_dim: int
    epochs: int
    batch_size: int
    lr: float
    beta1: float
    beta2: float = 0.999
    seed: int = 0
    width: int | None = None
    """MLP hidden units (default 100) or DCGAN ngf = ndf (default 64)."""
    image_size: int | None = None
    """Image side in pixels (image datasets; digits is always 8)."""
    data_root: Path | None = None
    """Image datasets' local folder; fashion defaults to ``datasets.FASHION_DEFAULT_ROOT``."""
    train_size: int | None = None
    """Toys: points generated (default 64,000). fashion: use only the first N of the "gan" images. Others: use only this many images (quick runs)."""
    holdout_fraction: float = 0.1
    holdout_limit: int | None = None
    """Cap on the held-out real samples written to real.npy (large image sets; fashion: the first N of "heldout")."""
    save_epochs: tuple[int, ...] = ()
    refit_epochs: int = 0
    """Epochs of D-only training against the frozen G before each save (0: ship the jointly trained D)."""
    threads: int = 1
    device: str = "cpu"
    workers: int = 0


def make_config(dataset: str, **overrides: Any) -> TrainConfig:
    """A validated :class:`TrainConfig` for ``dataset``; ``None`` overrides keep the default.

    Raises ConfigError for an unknown dataset, option or out-of-range value.
    """
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}.")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(overrides) - fields
    if unknown:
        raise ConfigError(f"unknown training option {sorted(unknown)[0]!r}.")
    values: dict[str, Any] = {"dataset": dataset, **_DEFAULTS[dataset]}
    values.update({k: v for k, v in overrides.items() if v is not None})
    if dataset in TOY_DATASETS and values.get("image_size") is not None:
        raise ConfigError(f"--image-size is for image datasets, not {dataset}.")
    if dataset == "digits" and values.get("image_size") not in (None, 8):
        raise ConfigError("the digits dataset is 8x8; leave --image-size out.")
    if dataset == "fashion" and values.get("image_size") not in (None, 28):
        raise ConfigError("the fashion dataset is 28x28; leave --image-size out.")
    if values.get("data_root") is not None:
        values["data_root"] = Path(values["data_root"]).expanduser()
    values["save_epochs"] = tuple(sorted(set(int(e) for e in values.get("save_epochs", ()))))
    cfg = TrainConfig(**values)
    _validate(cfg)
    return cfg


def _validate(cfg: TrainConfig) -> None:
    def positive(name: str, value: Any) -> None:
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, not {value!r}.")

    for name in ("latent_dim", "epochs", "batch_size", "width", "image_size", "train_size", "holdout_limit", "threads"):
        positive(name, getattr(cfg, name))
    if cfg.refit_epochs < 0:
        raise ConfigError(f"--refit-epochs must be 0 or more, not {cfg.refit_epochs}.")
    if cfg.workers < 0:
        raise ConfigError(f"--workers must be 0 or more, not {cfg.workers}.")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise ConfigError(f"--lr must be a positive number, not {cfg.lr!r}.")
    if not (0 <= cfg.beta1 < 1 and 0 <= cfg.beta2 < 1):
        raise ConfigError(f"Adam's betas must lie in [0, 1), not ({cfg.beta1}, {cfg.beta2}).")
    if not 0 < cfg.holdout_fraction < 1:
        raise ConfigError(f"the held-out fraction must lie strictly between 0 and 1, not {cfg.holdout_fraction}.")
    bad = [e for e in cfg.save_epochs if not 1 <= e <= cfg.epochs]
    if bad:
        raise ConfigError(f"--save-epochs {bad[0]} is outside 1..{cfg.epochs} (the --epochs value).")
    require_torch_device(cfg.device)
    if cfg.dataset in IMAGE_DATASETS and cfg.data_root is None:
        raise ConfigError(f"the {cfg.dataset} dataset needs --data-root pointing at a local copy.")
    if cfg.architecture == "mlp" and cfg.dataset not in TOY_DATASETS:
        raise ConfigError(f"the MLP GAN is for the toy datasets, not {cfg.dataset}.")



def require_torch_device(name: str) -> torch.device:
    """The torch device ``name`` names; ConfigError when it is not one or is CUDA without a GPU."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"--device {name!r} is not a torch device.") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} was asked for, but torch sees no CUDA GPU here.")
    return device

# ---------------------------------------------------------------------- data


@dataclass
class TrainingData:
    """Training set and held-out set, in data coordinates."""

    train: Any
    """float32 ndarray ``[N, *sample_shape]``, or an ImageDataset of float32 ``[C, S, S]`` items."""
    holdout: np.ndarray
    """float32 ``[M, *sample_shape]``, never trained on (calibration, chain starts)."""
    sample_shape: tuple[int, ...]
    info: dict[str, Any]
    """Dataset settings for model.json."""


class _Subset:
    def __init__(self, dataset: Any, indices: np.ndarray) -> None:
        self._dataset, self._indices = dataset, indices

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int) -> np.ndarray:
        return self._dataset[int(self._indices[index])]


def _split(n: int, cfg: TrainConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(train, holdout) indices: a seeded shuffle, ``holdout_fraction`` of ``n`` held out."""
    held = max(1, int(round(n * cfg.holdout_fraction)))
    if n - held < cfg.batch_size:
        raise ConfigError(f"{n} samples leave {n - held} for training, fewer than one batch of {cfg.batch_size}.")
    order = rng.permutation(n)
    holdout = order[:held]
    if cfg.holdout_limit is not None:
        holdout = holdout[: cfg.holdout_limit]
    return order[held:], holdout


def load_training_data(cfg: TrainConfig) -> TrainingData:
    """Build or open ``cfg.dataset`` and split off the held-out share (seeded by ``cfg.seed``)."""
    data_rng = np.random.default_rng([cfg.seed, 0])
    split_rng = np.random.default_rng([cfg.seed, 1])
    info: dict[str, Any] = {"name": cfg.dataset}
    if cfg.dataset in TOY_DATASETS:
        n = cfg.train_size or (datasets.GRID_TRAIN_SIZE if cfg.dataset == "grid2d" else datasets.MIXTURE_TRAIN_SIZE)
        if cfg.dataset == "grid2d":
            array = datasets.grid2d(n, data_rng)
            info.update(modes="{-2, -1, 0, 1, 2}^2", std=datasets.GRID_STD)
        else:
            array = datasets.mixture1d(n, data_rng)
            info.update(modes=datasets.MIXTURE_MODES.tolist(), std=datasets.MIXTURE_STD)
        source: Any = array
    elif cfg.dataset == "fashion":
        return _fashion_training_data(cfg)
    elif cfg.dataset == "digits":
        array = datasets.digits()
        info.update(source="sklearn.datasets.load_digits", value_range=[-1.0, 1.0])
        source = array
    else:
        size = cfg.image_size or 64
        if cfg.dataset == "cifar10":
            source = datasets.cifar10(cfg.data_root, image_size=size)  # type: ignore[arg-type]
        elif cfg.dataset == "celeba":
            source = datasets.celeba(cfg.data_root, image_size=size)  # type: ignore[arg-type]
        else:
            source = datasets.image_folder(cfg.data_root, image_size=size)  # type: ignore[arg-type]
        info.update(root=str(cfg.data_root), image_size=size, value_range=[-1.0, 1.0])
    n = len(source)
    if cfg.dataset not in TOY_DATASETS and cfg.train_size is not None:
        n = min(n, cfg.train_size)
    train_idx, hold_idx = _split(n, cfg, split_rng)
    if isinstance(source, np.ndarray):
        train, holdout = source[train_idx], source[hold_idx]
    else:
        train = _Subset(source, train_idx)
        holdout = np.stack([source[int(i)] for i in hold_idx]).astype(np.float32)
    info.update(size=n, train_size=len(train_idx), holdout_size=len(hold_idx))
    sample_shape = tuple(int(s) for s in holdout.shape[1:])
    return TrainingData(train=train, holdout=np.ascontiguousarray(holdout, dtype=np.float32), sample_shape=sample_shape, info=info)


def _fashion_training_data(cfg: TrainConfig) -> TrainingData:
    """Fashion-MNIST's fixed roles (``datasets.fashion_split_indices``): train on "gan", hold out "heldout".

    The roles do not depend on ``cfg.seed`` or ``cfg.holdout_fraction``, so
    every fashion model's held-out reals were never seen by any fashion GAN.
    """
    root = cfg.data_root if cfg.data_root is not None else Path(datasets.FASHION_DEFAULT_ROOT)
    images, _ = datasets.fashion_mnist(root, split="train")
    roles = datasets.fashion_split_indices()
    gan, held = roles["gan"], roles["heldout"]
    if cfg.train_size is not None:
        gan = gan[: cfg.train_size]
    if cfg.holdout_limit is not None:
        held = held[: cfg.holdout_limit]
    if len(gan) < cfg.batch_size:
        raise ConfigError(f"{len(gan)} fashion training images are fewer than one batch of {cfg.batch_size}.")
    info: dict[str, Any] = {
        "name": "fashion",
        "source": "Fashion-MNIST train-*-ubyte.gz (Debian dataset-fashion-mnist)",
        "root": str(root),
        "image_size": 28,
        "value_range": [-1.0, 1.0],
        "split": (
            f"fixed roles of the 60,000 training images (datasets.fashion_split_indices, seed {datasets.FASHION_SPLIT_SEED}): "
            f"trained on the first {len(gan)} of the {datasets.FASHION_SPLIT_SIZES['gan']} 'gan' images, real samples are "
            f"the first {len(held)} of the {datasets.FASHION_SPLIT_SIZES['heldout']} 'heldout' images (sorted indices)"
        ),
        "size": len(gan) + len(held),
        "train_size": len(gan),
        "holdout_size": len(held),
    }
    return TrainingData(
        train=np.ascontiguousarray(images[gan]),
        holdout=np.ascontiguousarray(images[held]),
        sample_shape=(1, 28, 28),
        info=info,
    )


def load_test_data(cfg: TrainConfig) -> np.ndarray:
    """A dataset's separate test set, for evaluation only (never trained on, never held out).

    - grid2d: ``datasets.GRID_TEST_SIZE`` points, float32 ``[10000, 2]``.
    - fashion: Fashion-MNIST's test split, float32 ``[10000, 1, 28, 28]`` in
      ``[-1, 1]`` (from ``cfg.data_root`` or ``datasets.FASHION_DEFAULT_ROOT``).

    The grid's set:

    Drawn from its own seed stream ``(cfg.seed, 2)``: independent of the
    ``GRID_TRAIN_SIZE`` points of :func:`load_training_data` (of which 10% are
    the calibration hold-out), and drawing it leaves the training data, hence
    the shipped checkpoints, unchanged.
    For evaluation, e.g. saved as ``.npy`` and passed to ``jobs.evaluate --real``.
    Raises ConfigError for a dataset without one.
    """
    if cfg.dataset == "fashion":
        root = cfg.data_root if cfg.data_root is not None else Path(datasets.FASHION_DEFAULT_ROOT)
        return datasets.fashion_mnist(root, split="test")[0]
    if cfg.dataset != "grid2d":
        raise ConfigError(f"only grid2d and fashion have a separate test set, not {cfg.dataset}.")
    return datasets.grid2d(datasets.GRID_TEST_SIZE, np.random.default_rng([cfg.seed, 2]))




@contextlib.contextmanager
def deterministic(seed: int, threads: int, device: torch.device) -> Iterator[None]:
    """Seed torch, use deterministic algorithms and ``threads`` CPU threads; restore them afterwards."""
    previous = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    if device.type == "cuda":
        # cuBLAS is deterministic only with a fixed workspace; it must be set before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.set_num_threads(previous[1])

"""Training of the reference GANs (library side of ``jobs/train.py``).

One run: build the dataset in data coordinates, hold out a share of it for
calibration (never trained on), train G and D with the standard
non-saturating GAN loss and Adam, and write model directories with
:func:`mhgan_dist.models.save_model_dir`: ``OUTPUT/`` for the last epoch and
``OUTPUT/epoch-NNN/`` for each requested intermediate epoch.

Reproducibility: on CPU a run is a deterministic function of its config
(seeded torch and numpy generators, deterministic algorithms, a fixed thread
count, no data-loader workers by default). On a GPU it is seeded but cuDNN and
cuBLAS may still reorder sums.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mhgan_dist import data
from mhgan_dist.errors import ConfigError, OutputError
from mhgan_dist.models import build_pair, save_model_dir

__all__ = [
    "DATASETS",
    "TrainConfig",
    "TrainingData",
    "EpochStats",
    "Progress",
    "make_config",
    "load_training_data",
    "load_test_data",
    "deterministic",
    "discriminator_loss",
    "steps_per_epoch",
    "train_gan",
    "refit_discriminator",
    "run",
]

TOY_DATASETS = ("grid2d", "mixture1d")
IMAGE_DATASETS = ("cifar10", "celeba", "image-folder")
DATASETS: tuple[str, ...] = (*TOY_DATASETS, "digits", *IMAGE_DATASETS)
_MODEL_FILES = ("generator.pt2", "discriminator.pt2", "real.npy", "model.json")

# Per-dataset defaults. Toys: the paper's MLP GAN with a 2-D latent; batch 128
# rather than 64 keeps 150 epochs of the grid near 8 minutes on one CPU thread.
# Images: the DCGAN example's Adam(2e-4, beta1 0.5), batch 64, latent 100.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "grid2d": dict(architecture="mlp", latent_dim=2, epochs=150, batch_size=128, lr=1e-4, beta1=0.5),
    "mixture1d": dict(architecture="mlp", latent_dim=2, epochs=150, batch_size=128, lr=1e-4, beta1=0.5),
    "digits": dict(architecture="dcgan", latent_dim=32, epochs=300, batch_size=64, lr=2e-4, beta1=0.5, image_size=8),
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
    train_size: int | None = None
    """Toys: points generated (default 64,000). Others: use only this many images (quick runs)."""
    holdout_fraction: float = 0.1
    holdout_limit: int | None = None
    """Cap on the held-out real samples written to real.npy (large image sets)."""
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
    try:
        device = torch.device(cfg.device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"--device {cfg.device!r} is not a torch device.") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {cfg.device} was asked for, but torch sees no CUDA GPU here.")
    if cfg.dataset in IMAGE_DATASETS and cfg.data_root is None:
        raise ConfigError(f"the {cfg.dataset} dataset needs --data-root pointing at a local copy.")
    if cfg.architecture == "mlp" and cfg.dataset not in TOY_DATASETS:
        raise ConfigError(f"the MLP GAN is for the toy datasets, not {cfg.dataset}.")


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
        n = cfg.train_size or (data.GRID_TRAIN_SIZE if cfg.dataset == "grid2d" else data.MIXTURE_TRAIN_SIZE)
        if cfg.dataset == "grid2d":
            array = data.grid2d(n, data_rng)
            info.update(modes="{-2, -1, 0, 1, 2}^2", std=data.GRID_STD)
        else:
            array = data.mixture1d(n, data_rng)
            info.update(modes=data.MIXTURE_MODES.tolist(), std=data.MIXTURE_STD)
        source: Any = array
    elif cfg.dataset == "digits":
        array = data.digits()
        info.update(source="sklearn.datasets.load_digits", value_range=[-1.0, 1.0])
        source = array
    else:
        size = cfg.image_size or 64
        if cfg.dataset == "cifar10":
            source = data.cifar10(cfg.data_root, image_size=size)  # type: ignore[arg-type]
        elif cfg.dataset == "celeba":
            source = data.celeba(cfg.data_root, image_size=size)  # type: ignore[arg-type]
        else:
            source = data.image_folder(cfg.data_root, image_size=size)  # type: ignore[arg-type]
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


def load_test_data(cfg: TrainConfig) -> np.ndarray:
    """The grid's separate test set: ``data.GRID_TEST_SIZE`` points, float32 ``[10000, 2]``.

    Drawn from its own seed stream ``(cfg.seed, 2)``: independent of the
    ``GRID_TRAIN_SIZE`` points of :func:`load_training_data` (of which 10% are
    the calibration hold-out), and drawing it leaves the training data, hence
    the shipped checkpoints, unchanged.
    For evaluation, e.g. saved as ``.npy`` and passed to ``jobs.evaluate --real``.
    Raises ConfigError for a dataset without one.
    """
    if cfg.dataset != "grid2d":
        raise ConfigError(f"only grid2d has a separate test set, not {cfg.dataset}.")
    return data.grid2d(data.GRID_TEST_SIZE, np.random.default_rng([cfg.seed, 2]))


# ------------------------------------------------------------------ training


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


@dataclass(frozen=True)
class EpochStats:
    """Mean losses over one epoch's steps (non-saturating GAN loss, nats)."""

    epoch: int
    d_loss: float
    g_loss: float
    seconds: float


class Progress(Protocol):
    """Receives training progress; the job shows it (tqdm bar or log lines)."""

    def start(self, total_steps: int) -> None: ...

    def step(self) -> None: ...

    def epoch(self, stats: EpochStats) -> None: ...


def discriminator_loss(generator: nn.Module, discriminator: nn.Module, real: torch.Tensor, z: torch.Tensor) -> float:
    """D's loss on one fixed batch, in eval mode: BCE(D(real), 1) + BCE(D(G(z)), 0), nats.

    ``real`` float32 ``[B, *sample_shape]``; ``z`` float32 ``[B', latent_dim]``.
    The modules' train/eval modes are restored.
    """
    modes = generator.training, discriminator.training
    generator.eval()
    discriminator.eval()
    try:
        with torch.no_grad():
            real_logits, fake_logits = discriminator(real), discriminator(generator(z))
            loss = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            loss = loss + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    finally:
        generator.train(modes[0])
        discriminator.train(modes[1])
    return float(loss)


def _d_loss(discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    real_logits, fake_logits = discriminator(real), discriminator(fake)
    loss = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    return loss + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def _adam(module: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Adam:
    fused = device.type in ("cpu", "cuda")  # one kernel per step instead of one per tensor
    return torch.optim.Adam(module.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused)


def _batches(train: Any, cfg: TrainConfig, device: torch.device, shuffle: torch.Generator) -> Iterator[torch.Tensor]:
    """One epoch of float32 batches on ``device``; the last incomplete batch is dropped."""
    if isinstance(train, np.ndarray):
        tensor = torch.from_numpy(train).to(device)
        order = torch.randperm(len(tensor), generator=shuffle).to(device)
        for start in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size):
            yield tensor[order[start : start + cfg.batch_size]]
        return
    loader = torch.utils.data.DataLoader(
        train, batch_size=cfg.batch_size, shuffle=True, drop_last=True, generator=shuffle, num_workers=cfg.workers
    )
    for batch in loader:
        yield batch.to(device, dtype=torch.float32)


def steps_per_epoch(train: Any, batch_size: int) -> int:
    """Optimiser steps in one epoch (incomplete batches are dropped)."""
    return len(train) // batch_size


def train_gan(
    cfg: TrainConfig,
    generator: nn.Module,
    discriminator: nn.Module,
    train: Any,
    *,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> list[EpochStats]:
    """Train in place for ``cfg.epochs`` epochs; returns one :class:`EpochStats` per epoch.

    Each step follows the DCGAN example: D on a real batch (label 1) and a
    detached fake batch (label 0), then G on the same fake batch against
    label 1 (the non-saturating loss). Latents are standard normal. The caller
    seeds torch (see :func:`deterministic`); the epoch order comes from a
    generator seeded with ``cfg.seed``.
    """
    device = torch.device(device)
    generator.to(device).train()
    discriminator.to(device).train()
    opt_g = _adam(generator, cfg, device)
    opt_d = _adam(discriminator, cfg, device)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    if progress is not None:
        progress.start(cfg.epochs * steps_per_epoch(train, cfg.batch_size))
    history: list[EpochStats] = []
    for epoch in range(1, cfg.epochs + 1):
        started = time.perf_counter()
        d_sum = torch.zeros((), device=device)
        g_sum = torch.zeros((), device=device)
        steps = 0
        for real in _batches(train, cfg, device, shuffle):
            z = torch.randn(real.shape[0], cfg.latent_dim, device=device)
            fake = generator(z)
            d_loss = _d_loss(discriminator, real, fake.detach())
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()

            fake_logits = discriminator(fake)
            g_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()

            d_sum += d_loss.detach()
            g_sum += g_loss.detach()
            steps += 1
            if progress is not None:
                progress.step()
        stats = EpochStats(epoch, float(d_sum) / max(steps, 1), float(g_sum) / max(steps, 1), time.perf_counter() - started)
        history.append(stats)
        if progress is not None:
            progress.epoch(stats)
        if on_epoch is not None:
            on_epoch(stats)
    return history


def refit_discriminator(
    cfg: TrainConfig, generator: nn.Module, discriminator: nn.Module, train: Any, *, epoch: int, device: torch.device | str = "cpu"
) -> nn.Module:
    """A copy of D trained alone for ``cfg.refit_epochs`` epochs against G frozen (in eval mode).

    MH-GAN assumes D is close to the optimal D for the G it post-processes; a
    jointly trained D only tracks a moving G. Both inputs are left untouched;
    the randomness comes from generators seeded by ``(cfg.seed, epoch)``, so
    it never disturbs the training run.
    """
    device = torch.device(device)
    refit = copy.deepcopy(discriminator).to(device).train()
    g_mode = generator.training
    generator.eval()
    optimiser = _adam(refit, cfg, device)
    shuffle = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    latents = torch.Generator(device=device).manual_seed(cfg.seed * 100_019 + epoch)
    try:
        for _ in range(cfg.refit_epochs):
            for real in _batches(train, cfg, device, shuffle):
                with torch.no_grad():
                    fake = generator(torch.randn(real.shape[0], cfg.latent_dim, device=device, generator=latents))
                loss = _d_loss(refit, real, fake)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
    finally:
        generator.train(g_mode)
    return refit


# ----------------------------------------------------------------------- run


def _check_output(output: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise OutputError(f"output {output} exists and is not a directory.")
    if overwrite or not output.is_dir():
        return
    taken = [n for n in _MODEL_FILES if (output / n).exists()] + sorted(p.name for p in output.glob("epoch-[0-9]*"))
    if taken:
        raise OutputError(f"output directory {output} already holds a model ({taken[0]}); pass --overwrite to replace it.")


def run(
    cfg: TrainConfig,
    output: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Train a reference GAN and write ``output/`` (final epoch) and ``output/epoch-NNN/`` (``cfg.save_epochs``).

    Returns ``output``. Raises ConfigError, InputError or OutputError (an
    existing model in ``output`` without ``overwrite``) before any training.
    """
    out = Path(output).expanduser()
    _check_output(out, overwrite)
    device = torch.device(cfg.device)
    with deterministic(cfg.seed, cfg.threads, device):
        dataset = load_training_data(cfg)
        generator, discriminator = build_pair(
            cfg.architecture, dataset.sample_shape, latent_dim=cfg.latent_dim, width=cfg.width
        )
        if log is not None:
            log(
                f"{cfg.dataset}: {dataset.info['train_size']} training and {dataset.info['holdout_size']} held-out "
                f"samples of shape {list(dataset.sample_shape)}, {cfg.architecture} GAN, {cfg.epochs} epochs of "
                f"{steps_per_epoch(dataset.train, cfg.batch_size)} steps on {device} ({cfg.threads} thread(s))"
            )
        started = time.perf_counter()

        def save(directory: Path, stats: EpochStats) -> None:
            metadata = _metadata(cfg, dataset, stats, time.perf_counter() - started)
            # Saving must not draw from the training RNG: epoch-030/ of a long run
            # then equals the model of a run stopped at epoch 30.
            with torch.random.fork_rng(devices=[]):
                shipped_d, kept = discriminator, {}
                if cfg.refit_epochs:
                    shipped_d = refit_discriminator(
                        cfg, generator, discriminator, dataset.train, epoch=stats.epoch, device=device
                    )
                    kept = {"discriminator-joint.pt2": discriminator}
                    metadata["discriminators"] = _refit_diagnostics(cfg, generator, shipped_d, discriminator, dataset.holdout, device)
                save_model_dir(
                    directory,
                    generator,
                    shipped_d,
                    latent_dim=cfg.latent_dim,
                    sample_shape=dataset.sample_shape,
                    real=dataset.holdout,
                    metadata=metadata,
                    extra_discriminators=kept,
                )
            if log is not None:
                log(f"wrote {directory}")

        def on_epoch(stats: EpochStats) -> None:
            if stats.epoch in cfg.save_epochs:
                save(out / f"epoch-{stats.epoch:03d}", stats)

        history = train_gan(cfg, generator, discriminator, dataset.train, device=device, progress=progress, on_epoch=on_epoch)
        save(out, history[-1])
    return out


def _refit_diagnostics(
    cfg: TrainConfig, generator: nn.Module, refit: nn.Module, joint: nn.Module, holdout: np.ndarray, device: torch.device
) -> dict[str, Any]:
    """model.json's ``discriminators``: held-out diagnostics of the refit D and of the joint D kept beside it."""
    from mhgan_dist.ratio_training import compare_discriminators

    held = compare_discriminators(
        {"discriminator.pt2": refit, "discriminator-joint.pt2": joint}, generator, holdout,
        latent_dim=cfg.latent_dim, seed=cfg.seed, device=device,
    )
    kinds = {
        "discriminator.pt2": f"refit alone for {cfg.refit_epochs} epochs against the frozen generator",
        "discriminator-joint.pt2": "trained jointly with the generator",
    }
    return {name: {"kind": kinds[name], "discriminator_output": "logit", "heldout": held[name]} for name in kinds}


def _metadata(cfg: TrainConfig, dataset: TrainingData, stats: EpochStats, seconds: float) -> dict[str, Any]:
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
    settings["save_epochs"] = list(cfg.save_epochs)
    return {
        "dataset": cfg.dataset,
        "architecture": _architecture_name(cfg, dataset.sample_shape),
        "epochs": stats.epoch,
        "seed": cfg.seed,
        "data": dataset.info,
        "training": {
            "config": settings,
            "loss": "non-saturating GAN loss (BCE with logits)",
            "discriminator": (
                f"refit alone for {cfg.refit_epochs} epochs against the frozen generator"
                if cfg.refit_epochs
                else "trained jointly with the generator"
            ),
            "last_epoch_d_loss": round(stats.d_loss, 6),
            "last_epoch_g_loss": round(stats.g_loss, 6),
            "seconds": round(seconds, 1),
        },
    }


def _architecture_name(cfg: TrainConfig, sample_shape: Sequence[int]) -> str:
    if cfg.architecture == "mlp":
        return f"mlp-4x{cfg.width or 100}-relu"
    return f"dcgan-{sample_shape[-1]}x{sample_shape[-1]}-w{cfg.width or 64}"

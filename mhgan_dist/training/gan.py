"""Training of the reference GANs (library side of ``jobs/train.py``).

One run: build the dataset in data coordinates, hold out a share of it for
calibration (never trained on), train G and D with the standard
non-saturating GAN loss and Adam, and write model directories with
:func:`mhgan_dist.models.save_model_dir`: ``OUTPUT/`` for the last epoch and
``OUTPUT/epoch-NNN/`` for each requested intermediate epoch.

Resuming: after every epoch the run writes ``OUTPUT/train-state.pt`` (G, D,
both Adam states, the torch and shuffle RNG states, the epoch counter and
losses so far; about 12 MB for the fashion DCGAN), atomically. ``train_and_save(...,
resume=True)`` (``jobs.train --resume``) continues from it, with the same
config except ``epochs``, ``save_epochs``, ``refit_epochs``, ``threads``,
``device`` and ``workers``, which may change; on CPU with the same thread count
the result equals an uninterrupted run's. A later ``--resume`` with a larger
``--epochs`` extends a finished run. The file is read with
``torch.load(weights_only=True)``: tensors and plain containers only, nothing
else is unpickled.

Reproducibility: on CPU a run is a deterministic function of its config
(seeded torch and numpy generators, deterministic algorithms, a fixed thread
count, no data-loader workers by default). On a GPU it is seeded but cuDNN and
cuBLAS may still reorder sums.
"""

from __future__ import annotations

import copy
import dataclasses
import json
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

from mhgan_dist.errors import ConfigError, OutputError
from mhgan_dist.models import build_pair, save_model_dir
from mhgan_dist.training.ratio import compare_discriminators
from mhgan_dist.training.setup import (
    TrainConfig,
    TrainingData,
    deterministic,
    load_training_data,
)

__all__ = [
    "EpochStats",
    "TrainingProgress",
    "discriminator_loss",
    "steps_per_epoch",
    "train_gan",
    "refit_discriminator",
    "STATE_FILE",
    "train_and_save",
]

_MODEL_FILES = ("generator.pt2", "discriminator.pt2", "real.npy", "model.json")
STATE_FILE = "train-state.pt"
_STATE_FORMAT = "mhgan-dist training state v1"
# Settings that may differ between a run and its resumption (they change neither the data nor the update rule).
_RESUMABLE_CHANGES = ("epochs", "save_epochs", "refit_epochs", "threads", "device", "workers")


@dataclass(frozen=True)
class EpochStats:
    """Mean losses over one epoch's steps (non-saturating GAN loss, nats)."""

    epoch: int
    d_loss: float
    g_loss: float
    seconds: float


class TrainingProgress(Protocol):
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
    progress: TrainingProgress | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
    state: dict[str, Any] | None = None,
    on_state: Callable[[dict[str, Any]], None] | None = None,
) -> list[EpochStats]:
    """Train in place up to epoch ``cfg.epochs``; returns one :class:`EpochStats` per epoch (restored ones first).

    ``state`` (a dict ``on_state`` was given, e.g. read back from
    ``train-state.pt``) restores G, D, both optimisers, the torch RNG, the
    shuffle order and the epoch counter, and training continues after its
    epoch. ``on_state`` receives such a dict after every epoch (after
    ``on_epoch``).

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
    history: list[EpochStats] = []
    if state is not None:
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        torch.set_rng_state(state["torch_rng"])
        shuffle.set_state(state["shuffle_rng"])
        history = [EpochStats(int(e), float(d), float(g), float(t)) for e, d, g, t in state["history"]]
    first = len(history) + 1
    if progress is not None:
        progress.start(max(cfg.epochs - first + 1, 0) * steps_per_epoch(train, cfg.batch_size))
    for epoch in range(first, cfg.epochs + 1):
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
        if on_state is not None:
            on_state(
                {
                    "format": _STATE_FORMAT,
                    "epoch": epoch,
                    "generator": generator.state_dict(),
                    "discriminator": discriminator.state_dict(),
                    "opt_g": opt_g.state_dict(),
                    "opt_d": opt_d.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "shuffle_rng": shuffle.get_state(),
                    "history": [[h.epoch, h.d_loss, h.g_loss, h.seconds] for h in history],
                }
            )
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


def _check_output(output: Path, overwrite: bool, resume: bool) -> None:
    if overwrite and resume:
        raise ConfigError("--overwrite and --resume contradict each other; pass one.")
    if output.exists() and not output.is_dir():
        raise OutputError(f"output {output} exists and is not a directory.")
    if resume:
        if not (output / STATE_FILE).is_file():
            raise OutputError(f"output directory {output} holds no {STATE_FILE} to resume from; leave out --resume.")
        return
    if overwrite or not output.is_dir():
        return
    taken = [n for n in _MODEL_FILES if (output / n).exists()] + sorted(p.name for p in output.glob("epoch-[0-9]*"))
    if taken:
        also = ", or --resume with a larger --epochs to continue it" if (output / STATE_FILE).exists() else ""
        raise OutputError(f"output directory {output} already holds a model ({taken[0]}); pass --overwrite to replace it{also}.")
    if (output / STATE_FILE).exists():
        raise OutputError(
            f"output directory {output} holds an unfinished training run ({STATE_FILE}); pass --resume to continue it "
            f"or --overwrite to replace it."
        )


def _resumable_settings(cfg: TrainConfig) -> dict[str, Any]:
    return {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in dataclasses.asdict(cfg).items()
        if k not in _RESUMABLE_CHANGES
    }


def _write_state(path: Path, cfg: TrainConfig, state: dict[str, Any], seconds: float) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save({**state, "config": json.dumps(_resumable_settings(cfg), sort_keys=True), "seconds": seconds}, tmp)
    os.replace(tmp, path)


def _read_state(path: Path, cfg: TrainConfig) -> dict[str, Any]:
    """The state in ``path``, checked against ``cfg``; raises OutputError / ConfigError naming what is wrong."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged or foreign file
        raise OutputError(f"training state {path} cannot be read ({type(exc).__name__}); pass --overwrite to start over.") from exc
    if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
        raise OutputError(f"training state {path} is not a {_STATE_FORMAT} file; pass --overwrite to start over.")
    saved = json.loads(state["config"])
    for key, value in _resumable_settings(cfg).items():
        if saved.get(key) != value:
            raise ConfigError(
                f"--resume needs the run's own settings, but {key} is {value!r} here and {saved.get(key)!r} in {path}."
            )
    if int(state["epoch"]) >= cfg.epochs:
        raise OutputError(
            f"the run in {path.parent} is already trained to epoch {int(state['epoch'])}; pass a larger --epochs to continue it."
        )
    return state


def train_and_save(
    cfg: TrainConfig,
    output: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: TrainingProgress | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Train a reference GAN and write ``output/`` (final epoch) and ``output/epoch-NNN/`` (``cfg.save_epochs``).

    Also writes ``output/train-state.pt`` after every epoch; ``resume``
    continues from it (see the module docstring). Returns ``output``. Raises
    ConfigError, InputError or OutputError (an existing model or run in
    ``output`` without ``overwrite`` or ``resume``, a state of another config)
    before any training.
    """
    out = Path(output).expanduser()
    _check_output(out, overwrite, resume)
    state = _read_state(out / STATE_FILE, cfg) if resume else None
    if overwrite and (out / STATE_FILE).exists():
        (out / STATE_FILE).unlink()
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
        earlier = float(state["seconds"]) if state is not None else 0.0
        started = time.perf_counter() - earlier
        if state is not None and log is not None:
            log(f"resuming after epoch {int(state['epoch'])} from {out / STATE_FILE}")

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

        def on_state(snapshot: dict[str, Any]) -> None:
            out.mkdir(parents=True, exist_ok=True)
            _write_state(out / STATE_FILE, cfg, snapshot, time.perf_counter() - started)

        history = train_gan(
            cfg, generator, discriminator, dataset.train, device=device, progress=progress,
            on_epoch=on_epoch, state=state, on_state=on_state,
        )
        save(out, history[-1])
    return out


def _refit_diagnostics(
    cfg: TrainConfig, generator: nn.Module, refit: nn.Module, joint: nn.Module, holdout: np.ndarray, device: torch.device
) -> dict[str, Any]:
    """model.json's ``discriminators``: held-out diagnostics of the refit D and of the joint D kept beside it."""

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

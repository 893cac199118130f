"""Device and batch-size choice for the proposal actors (torch, no Ray)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mhgan_dist.errors import ConfigError
from mhgan_dist.pipeline.resources import (  # re-exported: the actor's choice, made torch-free for the driver
    CPU_BATCH_PROPOSALS,
    CPU_MIN_BATCH_PROPOSALS,
    GPU_BATCH_PROPOSALS,
    default_batch_size,
)

__all__ = ["select_device", "default_batch_size", "batch_size_for_memory", "configure_threads",
           "CPU_BATCH_PROPOSALS", "CPU_MIN_BATCH_PROPOSALS", "GPU_BATCH_PROPOSALS"]


def select_device(preference: str, granted_gpu_ids: Sequence[int | str], cuda_available: bool) -> torch.device:
    """The device an actor runs G and D on.

    preference "auto": CUDA when Ray granted this actor a GPU and torch sees one,
    else CPU. "cpu": always CPU. "cuda": CUDA, and a ConfigError when no GPU was
    granted or torch cannot use it (never a silent fallback the user did not ask for).
    """
    if preference == "cpu":
        return torch.device("cpu")
    usable = bool(granted_gpu_ids) and cuda_available
    if preference == "cuda" and not usable:
        reason = "Ray granted this actor no GPU (set --gpus-per-actor)" if not granted_gpu_ids else "torch cannot use CUDA here"
        raise ConfigError(f"--device cuda was asked for but {reason}")
    if preference not in ("auto", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {preference!r}")
    return torch.device("cuda", 0) if usable else torch.device("cpu")


# Share of the device's free memory one forward pass may use at its peak: the
# rest is headroom for the allocator's fragmentation and for the copy of the
# logits (and, when kept, samples) back to the host.
GPU_MEMORY_FRACTION = 0.5
# Beyond this a larger batch no longer raises throughput on any current GPU,
# and shards of a small run hold fewer proposals than one batch anyway.
GPU_MAX_BATCH_PROPOSALS = 1 << 20


def batch_size_for_memory(
    available_bytes: int,
    peak_bytes_per_proposal: float,
    *,
    fraction: float = GPU_MEMORY_FRACTION,
    minimum: int = 1,
    maximum: int = GPU_MAX_BATCH_PROPOSALS,
) -> int:
    """Largest power of two B in [minimum, maximum] with B * peak_bytes_per_proposal
    <= fraction * available_bytes: the batch that fills a GPU.

    available_bytes: device memory free to this process (bytes, >= 0).
    peak_bytes_per_proposal: peak memory one proposal's G+D forward pass adds
    (bytes, > 0), as measured on a probe batch. Returns ``minimum`` when even
    that does not fit: the forward pass then fails with CUDA's own out-of-memory
    error rather than silently running in a batch nobody asked for.
    """
    if peak_bytes_per_proposal <= 0:
        raise ValueError(f"peak_bytes_per_proposal must be positive, got {peak_bytes_per_proposal}")
    if not 1 <= minimum <= maximum:
        raise ValueError(f"need 1 <= minimum <= maximum, got {minimum}, {maximum}")
    fits = int(fraction * max(0, available_bytes) // peak_bytes_per_proposal)
    if fits < minimum:
        return minimum
    batch = 1 << (min(fits, maximum).bit_length() - 1)
    return max(minimum, batch)


def configure_threads(torch_threads: int | None, cpus: float) -> int:
    """Sets torch's intra-op threads from config (Ray sets OMP_NUM_THREADS to the
    actor's CPU share, which torch would otherwise follow); returns the count."""
    threads = torch_threads if torch_threads is not None else max(1, int(cpus))
    torch.set_num_threads(threads)
    return threads


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Largest acceptable difference in D's probability between reduced precision and
# fp32 on the validation batch; above it "auto" falls back to fp32.
PRECISION_TOLERANCE = 0.01


def choose_precision(preference: str, device: torch.device, disagreement) -> str:
    """The precision G and D run in: "fp32", "bf16" or "fp16".

    ``disagreement(precision)`` returns the largest |sigmoid(l_reduced) -
    sigmoid(l_fp32)| over a validation batch. "auto" is fp32 on CPU (reduced
    precision is rarely faster there) and on CUDA the first of bf16 (when the
    device supports it) or fp16 whose disagreement is within
    PRECISION_TOLERANCE, else fp32. An explicit reduced precision is used as
    asked, but refused (ConfigError) when it disagrees beyond the tolerance.
    """
    if preference not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {preference!r}")
    if preference == "fp32":
        return "fp32"
    if preference == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    if preference == "auto":
        if device.type != "cuda":
            return "fp32"
        candidates = ["bf16"] if torch.cuda.is_bf16_supported() else []
        candidates.append("fp16")
        for candidate in candidates:
            if disagreement(candidate) <= PRECISION_TOLERANCE:
                return candidate
        return "fp32"
    gap = disagreement(preference)
    if gap > PRECISION_TOLERANCE:
        raise ConfigError(
            f"--precision {preference} changes D's probabilities by up to {gap:.3g} against fp32 "
            f"(tolerance {PRECISION_TOLERANCE}); use fp32"
        )
    return preference


def autocast_dtype(precision: str) -> torch.dtype | None:
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

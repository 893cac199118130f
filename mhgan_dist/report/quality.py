"""Sample-quality numbers of one sample set: the toy metrics, or IS and FID from a scoring network."""

from __future__ import annotations

from typing import Any

import numpy as np

from mhgan_dist import metrics

__all__ = ["dataset_kind", "toy_quality", "image_quality", "inception_splits", "chain_statistics"]

TOY_KINDS = ("grid2d", "mixture1d")


def dataset_kind(dataset: str | None, sample_shape: tuple[int, ...]) -> str:
    """"grid2d", "mixture1d", "image" ([C, H, W] with C of 1 or 3) or "other"."""
    if dataset == "grid2d" and sample_shape == (2,):
        return "grid2d"
    if dataset == "mixture1d" and sample_shape == (1,):
        return "mixture1d"
    if len(sample_shape) == 3 and sample_shape[0] in (1, 3):
        return "image"
    return "other"


def toy_quality(kind: str, samples: np.ndarray) -> dict[str, Any]:
    """The paper's mode metrics of samples [n, d] (see :mod:`mhgan_dist.metrics`)."""
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

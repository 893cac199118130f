"""The shipped model directories: they load, sample in range, match their hashes, stay small."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mhgan_dist.training.datasets import GRID_MODES, MIXTURE_MODES
from mhgan_dist.models import SHIPPED_MODELS, checkpoints_dir, load_pair, load_real_samples, resolve_model, sha256_file

EXPECTED = {  # name: (sample_shape, latent_dim, dataset)
    "grid2d": ((2,), 2, "grid2d"),
    "mixture1d": ((1,), 2, "mixture1d"),
    "digits": ((1, 8, 8), 32, "digits"),
    "fashion": ((1, 28, 28), 100, "fashion"),
}
REAL_FILE = {"fashion": "real.npz"}  # 8-bit levels, zip-compressed; the others ship float32 real.npy
SIZE_LIMIT = {"fashion": 25_000_000}  # the budget for everything fashion adds to the package


def _samples(name: str, n: int) -> np.ndarray:
    pair = load_pair(resolve_model(name))
    with torch.inference_mode():
        return pair.generator(torch.randn(n, pair.latent_dim, generator=torch.Generator().manual_seed(0))).numpy()


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_shipped_model_loads(name: str) -> None:
    shape, latent, dataset = EXPECTED[name]
    files = resolve_model(name)
    assert files.generator.parent == checkpoints_dir() / name and files.real is not None
    pair = load_pair(files)
    assert pair.sample_shape == shape and pair.latent_dim == latent
    assert files.metadata["dataset"] == dataset and files.metadata["latent_dim"] == latent
    real = load_real_samples(files.real, pair.sample_shape)
    assert len(real) == files.metadata["real_samples"] == files.metadata["data"]["holdout_size"]
    with torch.inference_mode():
        x = pair.generator(torch.randn(1, latent))
        assert pair.discriminator(x).shape == (1,)


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_shipped_hashes_match_and_size(name: str) -> None:
    directory = checkpoints_dir() / name
    meta = json.loads((directory / "model.json").read_text())
    assert set(meta["files"]) == {"generator.pt2", "discriminator.pt2", REAL_FILE.get(name, "real.npy")}
    for file_name, entry in meta["files"].items():
        assert sha256_file(directory / file_name) == entry["sha256"], file_name
        assert (directory / file_name).stat().st_size == entry["bytes"]
    total = sum(p.stat().st_size for p in directory.iterdir())
    assert total < SIZE_LIMIT.get(name, 1_000_000)  # committed to git: keep the toys well under 2 MB


def test_grid2d_samples_and_its_failure() -> None:
    x = _samples("grid2d", 10_000)
    assert np.abs(x).max() < 4.0
    dist = np.sqrt(((x[:, None, :] - GRID_MODES[None]) ** 2).sum(-1))
    hq = dist.min(1) < 0.2
    counts = np.bincount(dist.argmin(1)[hq], minlength=25)
    assert 0.8 < hq.mean() < 0.95  # mostly on the grid ...
    assert (counts < 0.2 * 10_000 / 25).sum() >= 5  # ... but uneven: the failure MH-GAN corrects
    real = load_real_samples(resolve_model("grid2d").real)
    assert (np.sqrt(((real[:, None, :] - GRID_MODES[None]) ** 2).sum(-1)).min(1) < 0.2).mean() > 0.99


def test_mixture1d_samples_under_cover_the_mode_at_3() -> None:
    x = _samples("mixture1d", 10_000)[:, 0]
    assert -2.0 < x.min() and x.max() < 5.0
    within = np.array([(np.abs(x - m) < 0.25).mean() for m in MIXTURE_MODES])
    # Share within 1 std of each mode: the data has about 0.17 each; the shipped G about 0.10 at 3.
    assert within[3] < 0.75 * within[:3].min()


def test_digits_samples_in_range() -> None:
    x = _samples("digits", 256)
    assert x.shape == (256, 1, 8, 8) and x.min() >= -1.0 and x.max() <= 1.0
    assert x.std(0).mean() > 0.1  # not collapsed to one image


def test_fashion_model_and_its_reals() -> None:
    from mhgan_dist.training.datasets import FASHION_SPLIT_SIZES

    files = resolve_model("fashion")
    meta = files.metadata
    assert files.real is not None and files.real.name == "real.npz"
    assert meta["architecture"] == "dcgan-28x28-w64" and meta["training"]["config"]["batch_size"] == 64
    assert meta["data"]["train_size"] == FASHION_SPLIT_SIZES["gan"]  # trained on the whole "gan" role
    real = load_real_samples(files.real, (1, 28, 28))
    assert len(real) >= 2_000 and len(real) == meta["real_samples"]
    assert real.min() == -1.0 and real.max() == 1.0
    # On the loader's 256-level grid g/127.5 - 1: the file holds Fashion-MNIST images, not rescaled ones.
    assert np.array_equal(np.rint((real + 1) * 127.5) / np.float32(127.5) - np.float32(1.0), real)


def test_fashion_samples_look_like_the_data() -> None:
    x = _samples("fashion", 512)
    real = load_real_samples(resolve_model("fashion").real)[:512]
    assert x.shape == (512, 1, 28, 28) and x.min() >= -1.0 and x.max() <= 1.0
    # Not collapsed: per-pixel spread across samples comparable with the data's (about 0.6 there).
    assert x.std(0).mean() > 0.5 * real.std(0).mean()
    # Garments on a dark background: the mean images agree closely (a random G gives about 0 correlation).
    corr = np.corrcoef(x.mean(0).ravel(), real.mean(0).ravel())[0, 1]
    assert corr > 0.9
    # Mostly background: the share of near-black pixels is close to the data's (about half).
    assert abs((x < -0.9).mean() - (real < -0.9).mean()) < 0.15

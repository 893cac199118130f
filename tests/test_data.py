"""Datasets: shapes, statistics and the no-download rule for image datasets."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from mhgan_dist import data
from mhgan_dist.errors import InputError


def _nearest(x: np.ndarray, modes: np.ndarray) -> np.ndarray:
    return np.argmin(((x[:, None, :] - modes[None, :, :]) ** 2).sum(-1), axis=1)


def test_grid_settings() -> None:
    assert data.GRID_MODES.shape == (25, 2)
    assert sorted(set(data.GRID_MODES.ravel().tolist())) == [-2.0, -1.0, 0.0, 1.0, 2.0]
    assert data.GRID_STD == 0.05
    assert (data.GRID_TRAIN_SIZE, data.GRID_TEST_SIZE) == (64_000, 10_000)


def test_grid2d_statistics() -> None:
    x = data.grid2d(50_000, np.random.default_rng(0))
    assert x.shape == (50_000, 2) and x.dtype == np.float32
    nearest = _nearest(x, data.GRID_MODES)
    counts = np.bincount(nearest, minlength=25)
    assert counts.min() > 0.9 * 2000 and counts.max() < 1.1 * 2000  # equal weights
    offsets = x - data.GRID_MODES[nearest]
    assert np.allclose(offsets.mean(0), 0.0, atol=0.002)
    assert np.allclose(offsets.std(0), data.GRID_STD, rtol=0.03)
    # 4 std from a mode is the paper's "high quality"; a Gaussian is there > 99.9%.
    assert (np.linalg.norm(offsets, axis=1) < 0.2).mean() > 0.999


def test_mixture1d_statistics() -> None:
    x = data.mixture1d(40_000, np.random.default_rng(1))
    assert x.shape == (40_000, 1) and x.dtype == np.float32
    assert data.MIXTURE_MODES.tolist() == [0.0, 1.0, 2.0, 3.0] and data.MIXTURE_STD == 0.25
    assert abs(x.mean() - 1.5) < 0.02
    # Modes overlap at std 0.25, so check the mixture's exact variance: within + between.
    assert abs(x.var() - (0.25**2 + 1.25)) < 0.03


def test_toys_are_seeded() -> None:
    a = data.grid2d(10, np.random.default_rng(5))
    b = data.grid2d(10, np.random.default_rng(5))
    assert np.array_equal(a, b)
    assert data.grid2d(0, np.random.default_rng(0)).shape == (0, 2)


def test_digits() -> None:
    x = data.digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32
    assert x.min() == -1.0 and x.max() == 1.0
    assert -0.8 < x.mean() < -0.2  # mostly background


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the dataset loader tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("loader", [data.cifar10, data.celeba, data.image_folder])
def test_missing_image_root_is_input_error(loader, tmp_path: Path, no_network: None) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(InputError, match=r"nowhere.*not found; downloads are disabled"):
        loader(missing)


@pytest.mark.parametrize("loader", [data.cifar10, data.celeba])
def test_empty_torchvision_root_is_input_error(loader, tmp_path: Path, no_network: None) -> None:
    with pytest.raises(InputError, match="downloads are disabled"):
        loader(tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing fetched or extracted


def test_image_folder(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "sub").mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate([(40, 30), (20, 20), (64, 48)]):
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / ("sub" if i else ".") / f"im{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    ds = data.image_folder(tmp_path, image_size=16)
    assert len(ds) == 3
    item = ds[0]
    assert item.shape == (3, 16, 16) and item.dtype == np.float32
    assert -1.0 <= item.min() and item.max() <= 1.0
    grey = data.image_folder(tmp_path, image_size=8, channels=1)[2]
    assert grey.shape == (1, 8, 8)


def test_image_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(InputError, match="holds no image files"):
        data.image_folder(tmp_path)


@pytest.mark.parametrize("layout", ["celeba/img_align_celeba", "img_align_celeba"])
def test_celeba_falls_back_to_its_image_folder(layout: str, tmp_path: Path, no_network: None) -> None:
    from PIL import Image

    # No list files, so torchvision's CelebA fails its check and the loader takes the images alone.
    folder = tmp_path / layout
    folder.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (12, 10), (80 * i, 255, 0)).save(folder / f"{i + 1:06d}.png")
    ds = data.celeba(tmp_path, image_size=8)
    assert len(ds) == 3
    item = ds[2]
    assert item.shape == (3, 8, 8) and item.dtype == np.float32
    assert np.allclose(item[:, 0, 0], [160 / 127.5 - 1, 1.0, -1.0], atol=1e-6)  # RGB scaled to [-1, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [layout.split("/")[0]]  # nothing fetched

"""The image-folder datasets (torchvision, PIL): local files only, never a download."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mhgan_dist.errors import InputError
from mhgan_dist.training import datasets


@pytest.mark.parametrize("loader", [datasets.cifar10, datasets.celeba, datasets.image_folder])
def test_missing_image_root_is_input_error(loader, tmp_path: Path, no_network: None) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(InputError, match=r"nowhere.*not found; downloads are disabled"):
        loader(missing)


@pytest.mark.parametrize("loader", [datasets.cifar10, datasets.celeba])
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
    ds = datasets.image_folder(tmp_path, image_size=16)
    assert len(ds) == 3
    item = ds[0]
    assert item.shape == (3, 16, 16) and item.dtype == np.float32
    assert -1.0 <= item.min() and item.max() <= 1.0
    grey = datasets.image_folder(tmp_path, image_size=8, channels=1)[2]
    assert grey.shape == (1, 8, 8)


def test_image_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(InputError, match="holds no image files"):
        datasets.image_folder(tmp_path)


@pytest.mark.parametrize("layout", ["celeba/img_align_celeba", "img_align_celeba"])
def test_celeba_falls_back_to_its_image_folder(layout: str, tmp_path: Path, no_network: None) -> None:
    from PIL import Image

    # No list files, so torchvision's CelebA fails its check and the loader takes the images alone.
    folder = tmp_path / layout
    folder.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (12, 10), (80 * i, 255, 0)).save(folder / f"{i + 1:06d}.png")
    ds = datasets.celeba(tmp_path, image_size=8)
    assert len(ds) == 3
    item = ds[2]
    assert item.shape == (3, 8, 8) and item.dtype == np.float32
    assert np.allclose(item[:, 0, 0], [160 / 127.5 - 1, 1.0, -1.0], atol=1e-6)  # RGB scaled to [-1, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [layout.split("/")[0]]  # nothing fetched

"""Datasets: shapes, statistics and the no-download rule for image datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mhgan_dist.training import datasets
from mhgan_dist.errors import InputError


def _nearest(x: np.ndarray, modes: np.ndarray) -> np.ndarray:
    return np.argmin(((x[:, None, :] - modes[None, :, :]) ** 2).sum(-1), axis=1)


def test_grid_settings() -> None:
    assert datasets.GRID_MODES.shape == (25, 2)
    assert sorted(set(datasets.GRID_MODES.ravel().tolist())) == [-2.0, -1.0, 0.0, 1.0, 2.0]
    assert datasets.GRID_STD == 0.05
    assert (datasets.GRID_TRAIN_SIZE, datasets.GRID_TEST_SIZE) == (64_000, 10_000)


def test_grid2d_statistics() -> None:
    x = datasets.grid2d(50_000, np.random.default_rng(0))
    assert x.shape == (50_000, 2) and x.dtype == np.float32
    nearest = _nearest(x, datasets.GRID_MODES)
    counts = np.bincount(nearest, minlength=25)
    assert counts.min() > 0.9 * 2000 and counts.max() < 1.1 * 2000  # equal weights
    offsets = x - datasets.GRID_MODES[nearest]
    assert np.allclose(offsets.mean(0), 0.0, atol=0.002)
    assert np.allclose(offsets.std(0), datasets.GRID_STD, rtol=0.03)
    # 4 std from a mode is the paper's "high quality"; a Gaussian is there > 99.9%.
    assert (np.linalg.norm(offsets, axis=1) < 0.2).mean() > 0.999


def test_mixture1d_statistics() -> None:
    x = datasets.mixture1d(40_000, np.random.default_rng(1))
    assert x.shape == (40_000, 1) and x.dtype == np.float32
    assert datasets.MIXTURE_MODES.tolist() == [0.0, 1.0, 2.0, 3.0] and datasets.MIXTURE_STD == 0.25
    assert abs(x.mean() - 1.5) < 0.02
    # Modes overlap at std 0.25, so check the mixture's exact variance: within + between.
    assert abs(x.var() - (0.25**2 + 1.25)) < 0.03


def test_toys_are_seeded() -> None:
    a = datasets.grid2d(10, np.random.default_rng(5))
    b = datasets.grid2d(10, np.random.default_rng(5))
    assert np.array_equal(a, b)
    assert datasets.grid2d(0, np.random.default_rng(0)).shape == (0, 2)


def test_digits() -> None:
    x = datasets.digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32
    assert x.min() == -1.0 and x.max() == 1.0
    assert -0.8 < x.mean() < -0.2  # mostly background


# ------------------------------------------------------------- fashion-mnist

FASHION_ROOT = Path(datasets.FASHION_DEFAULT_ROOT)
FASHION_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
needs_fashion = pytest.mark.skipif(
    not all((FASHION_ROOT / name).is_file() for name in FASHION_FILES),
    reason=f"Fashion-MNIST files not in {FASHION_ROOT}: apt-get install dataset-fashion-mnist (Debian package)",
)


def _write_idx(path: Path, magic: int, sizes: list[int], payload: bytes) -> None:
    import gzip

    header = np.array([magic, *sizes], dtype=">i4").tobytes()
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header + payload)


def _tiny_fashion(folder: Path, n: int, *, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Write an n-image IDX pair for ``split``; returns (uint8 pixels [n, 28, 28], uint8 labels [n])."""
    prefix = "train" if split == "train" else "t10k"
    # Every grey level 0..255 and every label occur; a regular pattern keeps the gzip write fast.
    pixels = ((np.arange(n * 784) * 7) % 256).astype(np.uint8).reshape(n, 28, 28)
    labels = ((np.arange(n) * 3) % 10).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", 2051, [n, 28, 28], pixels.tobytes())
    _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", 2049, [n], labels.tobytes())
    return pixels, labels


def test_fashion_constants() -> None:
    assert datasets.FASHION_DEFAULT_ROOT == "/usr/share/datasets/fashion-mnist"
    assert datasets.FASHION_CLASSES[0] == "T-shirt/top" and datasets.FASHION_CLASSES[9] == "Ankle boot"
    assert len(datasets.FASHION_CLASSES) == 10


@pytest.fixture(scope="module")
def fashion_splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Both real splits, read once for the module's tests."""
    return {split: datasets.fashion_mnist(split=split) for split in ("train", "test")}


@needs_fashion
@pytest.mark.parametrize("split, count", [("train", 60_000), ("test", 10_000)])
def test_fashion_real_files(split: str, count: int, fashion_splits: dict) -> None:
    images, labels = fashion_splits[split]
    assert images.shape == (count, 1, 28, 28) and images.dtype == np.float32
    assert labels.shape == (count,) and labels.dtype == np.int64
    assert images.min() == -1.0 and images.max() == 1.0
    # Grey levels g map to g/127.5 - 1 exactly: 256 values on that lattice, no others.
    levels = np.unique(images[:500])
    assert np.allclose((levels + 1.0) * 127.5, np.round((levels + 1.0) * 127.5), atol=1e-4)
    assert -0.8 < images.mean() < 0.0  # mostly dark background around a lighter garment
    # The dataset is balanced: 6,000 (train) / 1,000 (test) per class.
    assert np.bincount(labels, minlength=10).tolist() == [count // 10] * 10


@needs_fashion
def test_fashion_explicit_root_equals_default(fashion_splits: dict) -> None:
    a, la = datasets.fashion_mnist(FASHION_ROOT, split="test")
    b, lb = fashion_splits["test"]
    assert np.array_equal(a, b) and np.array_equal(la, lb)


def test_fashion_reader_scales_exactly(tmp_path: Path) -> None:
    # A valid file with the right count: 10,000 test images built here, so this runs without the package.
    pixels, labels = _tiny_fashion(tmp_path, 10_000, split="test")
    images, got = datasets.fashion_mnist(tmp_path, split="test")
    assert np.array_equal(got, labels.astype(np.int64))
    assert np.allclose(images[:, 0], pixels / 127.5 - 1.0, atol=1e-6)


def test_fashion_missing_files_name_the_package(tmp_path: Path, no_network: None) -> None:
    with pytest.raises(InputError, match=r"train-images-idx3-ubyte\.gz not found.*apt-get install dataset-fashion-mnist.*--data-root"):
        datasets.fashion_mnist(tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing fetched


def _corrupt(folder: Path, kind: str) -> str:
    """Break the test split's files in ``folder`` one way; returns the name of the file at fault."""
    images = folder / "t10k-images-idx3-ubyte.gz"
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    # Low-entropy content keeps the gzip writes fast; only the structure matters here.
    good_pixels = (np.arange(10_000 * 784) % 251).astype(np.uint8).tobytes()
    good_labels = (np.arange(10_000) % 10).astype(np.uint8).tobytes()
    _write_idx(images, 2051, [10_000, 28, 28], good_pixels)
    _write_idx(labels, 2049, [10_000], good_labels)
    if kind == "not gzip":
        images.write_bytes(b"this is not a gzip file at all")
        return images.name
    if kind == "gzip cut short":
        raw = images.read_bytes()
        images.write_bytes(raw[: len(raw) // 2])
        return images.name
    if kind == "payload truncated":
        _write_idx(images, 2051, [10_000, 28, 28], good_pixels[:-100])
        return images.name
    if kind == "header truncated":
        _write_idx(labels, 2049, [], b"")
        return labels.name
    if kind == "wrong magic":
        _write_idx(images, 2049, [10_000, 28, 28], good_pixels)  # the labels' magic on the images file
        return images.name
    if kind == "wrong count":
        _write_idx(images, 2051, [9_999, 28, 28], good_pixels[: 9_999 * 784])
        return images.name
    if kind == "wrong shape":
        _write_idx(images, 2051, [10_000, 32, 24], good_pixels[: 10_000 * 768])
        return images.name
    if kind == "label count":
        _write_idx(labels, 2049, [9_000], good_labels[:9_000])
        return labels.name
    if kind == "label range":
        bad = bytearray(good_labels)
        bad[17] = 10
        _write_idx(labels, 2049, [10_000], bytes(bad))
        return labels.name
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind, pattern",
    [
        ("not gzip", "not a readable gzip file"),
        ("gzip cut short", "not a readable gzip file"),
        ("payload truncated", "is truncated"),
        ("header truncated", "is truncated"),
        ("wrong magic", "magic number 2049, not 2051"),
        ("wrong count", r"sizes \[9999, 28, 28\], not \[10000, 28, 28\]"),
        ("wrong shape", r"sizes \[10000, 32, 24\]"),
        ("label count", "holds 9000 labels, not 10000"),
        ("label range", "label 10, outside 0..9"),
    ],
)
def test_fashion_bad_files_are_named(kind: str, pattern: str, tmp_path: Path) -> None:
    name = _corrupt(tmp_path, kind)
    with pytest.raises(InputError, match=pattern) as caught:
        datasets.fashion_mnist(tmp_path, split="test")
    assert str(tmp_path / name) in str(caught.value)


def test_fashion_bad_split() -> None:
    from mhgan_dist.errors import ConfigError

    with pytest.raises(ConfigError, match="'train' or 'test', not 'valid'"):
        datasets.fashion_mnist(split="valid")


def test_fashion_split_roles_are_fixed_disjoint_and_cover_training() -> None:
    roles = datasets.fashion_split_indices()
    assert set(roles) == {"gan", "heldout"}
    gan, held = roles["gan"], roles["heldout"]
    assert (len(gan), len(held)) == (54_000, 6_000) == (datasets.FASHION_SPLIT_SIZES["gan"], datasets.FASHION_SPLIT_SIZES["heldout"])
    assert gan.dtype == held.dtype == np.int64
    assert np.all(np.diff(gan) > 0) and np.all(np.diff(held) > 0)  # sorted, no repeats
    assert np.intersect1d(gan, held).size == 0
    assert np.array_equal(np.union1d(gan, held), np.arange(60_000))
    again = datasets.fashion_split_indices()
    assert np.array_equal(again["gan"], gan) and np.array_equal(again["heldout"], held)
    # Pinned: a changed seed or permutation would silently move images between roles of shipped models.
    assert held[:5].tolist() == [14, 43, 53, 58, 69]
    # A random 10% held out, not a block: spread over the whole index range.
    assert np.histogram(held, bins=10, range=(0, 60_000))[0].min() > 500


@needs_fashion
def test_fashion_heldout_is_class_balanced(fashion_splits: dict) -> None:
    _, labels = fashion_splits["train"]
    counts = np.bincount(labels[datasets.fashion_split_indices()["heldout"]], minlength=10)
    # 6,000 draws without replacement from 10 equal classes: per-class sd ~ sqrt(600 * 0.9 * 0.9) ~ 23; 5 sd is 116.
    assert counts.min() > 600 - 116 and counts.max() < 600 + 116

"""Datasets for the reference GANs: synthetic toys, bundled digits, local images.

Every dataset is returned in its *data coordinates*, the space a generator
trained on it samples in and the MH-GAN output is written in:

- :func:`grid2d`: the paper's 2-D grid, 25 isotropic Gaussians with means on
  ``{-2, -1, 0, 1, 2}^2`` and std 0.05; float32 ``[n, 2]``.
- :func:`mixture1d`: the paper's 1-D mixture, 4 equal Gaussians at 0, 1, 2, 3
  with std 0.25; float32 ``[n, 1]``.
- :func:`digits`: scikit-learn's bundled 8x8 digits (1,797 images), grey levels
  0..16 mapped linearly to ``[-1, 1]`` (a tanh generator's range);
  float32 ``[1797, 1, 8, 8]``.
- :func:`fashion_mnist`: Fashion-MNIST (Xiao et al. 2017, MIT licence) from
  the original gzipped IDX files that Debian's ``dataset-fashion-mnist``
  package installs in :data:`FASHION_DEFAULT_ROOT`; 28x28 grey levels 0..255
  mapped linearly to ``[-1, 1]`` (g -> g/127.5 - 1, no padding); float32
  ``[n, 1, 28, 28]`` with int64 class labels ``[n]`` in ``0..9``
  (:data:`FASHION_CLASSES`).
- :func:`cifar10`, :func:`celeba`, :func:`image_folder`: images the user already
  has on disk, as a map-style dataset of float32 ``[C, S, S]`` arrays in
  ``[-1, 1]``. Nothing is ever downloaded: a missing path is an
  :class:`~mhgan_dist.errors.InputError`.

Fashion-MNIST roles (:func:`fashion_split_indices`, fixed, the same on every
machine). No image has two roles:

- ``"gan"``: 54,000 of the 60,000 training images; the GAN and its
  discriminator (including a ``--refit-epochs`` refit) train on these only.
- ``"heldout"``: the other 6,000 training images (10%, the paper's share held
  out): real samples for calibration and MH chain starts, never trained on.
- the test split (10,000 images, ``split="test"``): image-quality metrics only.

The split is a permutation of ``range(60000)`` by
``numpy.random.default_rng(FASHION_SPLIT_SEED)``; each role's indices are
sorted. (The metric classifier trains on the whole training split; that is
not one of these roles.)

The toy datasets need numpy only (and scikit-learn for digits); torchvision and
Pillow are imported only when an image dataset is opened.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mhgan_dist.errors import ConfigError, InputError

__all__ = [
    "GRID_MODES",
    "GRID_STD",
    "GRID_TRAIN_SIZE",
    "GRID_TEST_SIZE",
    "MIXTURE_MODES",
    "MIXTURE_STD",
    "MIXTURE_TRAIN_SIZE",
    "IMAGE_SUFFIXES",
    "FASHION_DEFAULT_ROOT",
    "FASHION_CLASSES",
    "FASHION_SPLIT_SEED",
    "FASHION_SPLIT_SIZES",
    "ImageDataset",
    "grid2d",
    "mixture1d",
    "digits",
    "fashion_mnist",
    "fashion_split_indices",
    "cifar10",
    "celeba",
    "image_folder",
]

GRID_MODES: np.ndarray = np.array(
    list(itertools.product(range(-2, 3), repeat=2)), dtype=np.float32
)
"""float32 ``[25, 2]``: the grid's mode centres, row-major over ``{-2..2}^2``."""
GRID_STD: float = 0.05
GRID_TRAIN_SIZE: int = 64_000
"""Points the grid's training run draws; 10% of them are held out for calibration."""
GRID_TEST_SIZE: int = 10_000
"""Points in the grid's separate test set (``training.load_test_data``, its own seed stream)."""

MIXTURE_MODES: np.ndarray = np.array([0.0, 1.0, 2.0, 3.0], dtype=np.float32)
"""float32 ``[4]``: the 1-D mixture's mode centres (equal weights)."""
MIXTURE_STD: float = 0.25
MIXTURE_TRAIN_SIZE: int = 64_000

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")

FASHION_DEFAULT_ROOT: str = "/usr/share/datasets/fashion-mnist"
"""Where Debian's ``dataset-fashion-mnist`` package puts the gzipped IDX files."""
FASHION_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""Fashion-MNIST's class names in label order (label ``i`` is ``FASHION_CLASSES[i]``)."""
FASHION_SPLIT_SEED: int = 20_190_514
"""Seed of the fixed permutation behind :func:`fashion_split_indices` (never change it: shipped models depend on it)."""
FASHION_SPLIT_SIZES: dict[str, int] = {"gan": 54_000, "heldout": 6_000}
"""Images per role in the 60,000-image training split."""


class ImageDataset(Protocol):
    """Map-style dataset: ``ds[i]`` is float32 ``[C, S, S]`` in ``[-1, 1]``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> np.ndarray: ...


def _check_count(n: int) -> None:
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ConfigError(f"the sample count must be a non-negative integer, not {n!r}.")


def _gaussian_mixture(n: int, modes: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Equal-weight isotropic mixture: float32 ``[n, d]`` for ``modes`` ``[k, d]``."""
    _check_count(n)
    which = rng.integers(0, len(modes), size=n)
    noise = rng.standard_normal((n, modes.shape[1]))
    return (modes[which].astype(np.float64) + std * noise).astype(np.float32)


def grid2d(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points of the 5x5 grid of Gaussians; float32 ``[n, 2]``, roughly in ``[-2.2, 2.2]``."""
    return _gaussian_mixture(n, GRID_MODES, GRID_STD, rng)


def mixture1d(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points of the 1-D mixture of 4 Gaussians; float32 ``[n, 1]``, roughly in ``[-1, 4]``."""
    return _gaussian_mixture(n, MIXTURE_MODES[:, None], MIXTURE_STD, rng)


def digits() -> np.ndarray:
    """scikit-learn's 8x8 digits as float32 ``[1797, 1, 8, 8]`` in ``[-1, 1]`` (grey level g -> g/8 - 1)."""
    from sklearn.datasets import load_digits

    images = load_digits().images  # float64 [1797, 8, 8], grey levels 0..16
    return (images[:, None, :, :] / 8.0 - 1.0).astype(np.float32)


# --------------------------------------------------------------------- images


def _existing_dir(root: str | Path, what: str) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        raise InputError(f"{what} folder {path} not found; downloads are disabled, so point --data-root at a local copy.")
    return path


def _image_transform(image_size: int, channels: int) -> Any:
    """torchvision transform: PIL image -> float32 tensor ``[channels, S, S]`` in ``[-1, 1]``."""
    from torchvision import transforms

    steps: list[Any] = [transforms.Resize(image_size), transforms.CenterCrop(image_size)]
    if channels == 1:
        steps.append(transforms.Grayscale(1))
    steps += [transforms.ToTensor(), transforms.Normalize([0.5] * channels, [0.5] * channels)]
    return transforms.Compose(steps)


class _TorchvisionImages:
    """Drops the label of a torchvision dataset and returns numpy arrays."""

    def __init__(self, dataset: Any) -> None:
        self._dataset = dataset

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, index: int) -> np.ndarray:
        image, _ = self._dataset[index]
        return image.numpy()


class _ImageFiles:
    """Every image file under a folder (recursively, sorted), resized and centre-cropped."""

    def __init__(self, files: list[Path], image_size: int, channels: int) -> None:
        self._files = files
        self._channels = channels
        self._transform = _image_transform(image_size, channels)

    def __len__(self) -> int:
        return len(self._files)

    def __getitem__(self, index: int) -> np.ndarray:
        from PIL import Image

        path = self._files[index]
        try:
            with Image.open(path) as image:
                image = image.convert("L" if self._channels == 1 else "RGB")
                return self._transform(image).numpy()
        except OSError as exc:
            raise InputError(f"image file {path} cannot be read ({exc}).") from exc


def _check_image_size(image_size: int) -> None:
    if not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"the image size must be a positive integer, not {image_size!r}.")


def cifar10(root: str | Path, *, image_size: int = 32, train: bool = True) -> ImageDataset:
    """CIFAR-10 from a local torchvision layout (``root/cifar-10-batches-py``); never downloads.

    Items are float32 ``[3, image_size, image_size]`` in ``[-1, 1]`` (labels dropped).
    """
    _check_image_size(image_size)
    path = _existing_dir(root, "CIFAR-10")
    from torchvision.datasets import CIFAR10

    try:
        dataset = CIFAR10(str(path), train=train, download=False, transform=_image_transform(image_size, 3))
    except RuntimeError as exc:
        raise InputError(
            f"CIFAR-10 not found under {path} (expected {path / 'cifar-10-batches-py'}); downloads are disabled."
        ) from exc
    return _TorchvisionImages(dataset)


def celeba(root: str | Path, *, image_size: int = 64) -> ImageDataset:
    """CelebA from a local torchvision layout (``root/celeba/...``); never downloads.

    Uses torchvision's ``CelebA`` (all splits, as the PyTorch DCGAN example
    trains on every image) when its list files verify, otherwise every image in
    ``root/celeba/img_align_celeba`` or ``root/img_align_celeba``. Items are
    float32 ``[3, image_size, image_size]`` in ``[-1, 1]``.
    """
    _check_image_size(image_size)
    path = _existing_dir(root, "CelebA")
    from torchvision.datasets import CelebA

    try:
        dataset = CelebA(
            str(path), split="all", target_type=[], download=False, transform=_image_transform(image_size, 3)
        )
        return _TorchvisionImages(dataset)
    except RuntimeError:
        pass
    for folder in (path / "celeba" / "img_align_celeba", path / "img_align_celeba"):
        if folder.is_dir():
            return image_folder(folder, image_size=image_size)
    raise InputError(
        f"CelebA not found under {path} (expected {path / 'celeba' / 'img_align_celeba'}); downloads are disabled."
    )


def image_folder(root: str | Path, *, image_size: int = 64, channels: int = 3) -> ImageDataset:
    """Every image file under ``root`` (any depth, no class folders needed), sorted by path.

    Images are converted to RGB (``channels=3``) or grey (``channels=1``),
    resized so the short side is ``image_size`` and centre-cropped. Items are
    float32 ``[channels, image_size, image_size]`` in ``[-1, 1]``.
    """
    _check_image_size(image_size)
    if channels not in (1, 3):
        raise ConfigError(f"the channel count must be 1 or 3, not {channels!r}.")
    path = _existing_dir(root, "image")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"image folder {path} holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
    return _ImageFiles(files, image_size, channels)


# ------------------------------------------------------------- fashion-mnist

_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
_FASHION_FILES: dict[str, tuple[str, str, int]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60_000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10_000),
}
_FASHION_SIDE = 28


def _read_gzip(path: Path) -> bytes:
    import gzip
    import zlib

    if not path.is_file():
        raise InputError(
            f"Fashion-MNIST file {path} not found; install it with `apt-get install dataset-fashion-mnist` "
            f"or point --data-root at a folder holding the gzipped IDX files (nothing is downloaded)."
        )
    try:
        with gzip.open(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"Fashion-MNIST file {path} is not a readable gzip file ({exc}).") from exc


def _idx_payload(path: Path, raw: bytes, magic: int, dims: int) -> tuple[tuple[int, ...], np.ndarray]:
    """Check an IDX header (big-endian int32 magic and ``dims`` sizes); return (sizes, uint8 payload)."""
    header = 4 * (1 + dims)
    if len(raw) < header:
        raise InputError(f"Fashion-MNIST file {path} is truncated: {len(raw)} bytes, shorter than its {header}-byte header.")
    fields = np.frombuffer(raw[:header], dtype=">i4")
    if int(fields[0]) != magic:
        raise InputError(f"Fashion-MNIST file {path} has magic number {int(fields[0])}, not {magic}; it is not the expected IDX file.")
    sizes = tuple(int(v) for v in fields[1:])
    expected = header + int(np.prod(sizes, dtype=np.int64))
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "longer than its header says"
        raise InputError(f"Fashion-MNIST file {path} is {state}: {len(raw)} bytes where sizes {list(sizes)} need {expected}.")
    return sizes, np.frombuffer(raw, dtype=np.uint8, offset=header)


def fashion_mnist(root: str | Path | None = None, *, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST's ``split`` ("train": 60,000 images, "test": 10,000) from local gzipped IDX files.

    ``root`` defaults to :data:`FASHION_DEFAULT_ROOT`. Returns (images float32
    ``[n, 1, 28, 28]`` in ``[-1, 1]``, grey level g -> g/127.5 - 1; labels
    int64 ``[n]`` in ``0..9``). Raises ConfigError for another split and
    InputError, naming the file, for a missing, corrupt or truncated file or a
    wrong magic number, count, shape or label. Never downloads.
    """
    if split not in _FASHION_FILES:
        raise ConfigError(f"the Fashion-MNIST split must be 'train' or 'test', not {split!r}.")
    folder = Path(FASHION_DEFAULT_ROOT if root is None else root).expanduser()
    image_name, label_name, count = _FASHION_FILES[split]
    image_path, label_path = folder / image_name, folder / label_name

    sizes, pixels = _idx_payload(image_path, _read_gzip(image_path), _IDX_IMAGES_MAGIC, 3)
    if sizes != (count, _FASHION_SIDE, _FASHION_SIDE):
        raise InputError(
            f"Fashion-MNIST file {image_path} holds images of sizes {list(sizes)}, not [{count}, 28, 28]."
        )
    (n_labels,), labels = _idx_payload(label_path, _read_gzip(label_path), _IDX_LABELS_MAGIC, 1)
    if n_labels != count:
        raise InputError(f"Fashion-MNIST file {label_path} holds {n_labels} labels, not {count} (one per image).")
    if labels.size and int(labels.max()) >= len(FASHION_CLASSES):
        raise InputError(f"Fashion-MNIST file {label_path} holds label {int(labels.max())}, outside 0..9.")

    images = pixels.reshape(count, 1, _FASHION_SIDE, _FASHION_SIDE).astype(np.float32)
    images /= 127.5
    images -= 1.0
    return images, labels.astype(np.int64)


def fashion_split_indices() -> dict[str, np.ndarray]:
    """The fixed roles of the 60,000 training images: ``{"gan": int64 [54000], "heldout": int64 [6000]}``.

    Disjoint, together all of ``range(60000)``, each sorted; the same on every
    machine (a permutation by :data:`FASHION_SPLIT_SEED`). See the module
    docstring for what each role is for.
    """
    order = np.random.default_rng(FASHION_SPLIT_SEED).permutation(_FASHION_FILES["train"][2])
    held = FASHION_SPLIT_SIZES["heldout"]
    return {"gan": np.sort(order[held:]).astype(np.int64), "heldout": np.sort(order[:held]).astype(np.int64)}

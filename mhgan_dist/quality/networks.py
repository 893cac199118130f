"""Networks that score image samples: Inception v3 from a local file, and the digit classifier.

Both map images float32 ``[n, C, H, W]`` in ``[-1, 1]`` (the generators'
range) to class probabilities ``[n, classes]`` and feature vectors
``[n, d]``, which :mod:`mhgan_dist.quality.metrics` turns into Inception Score and
FID. Nothing is ever downloaded:

- :func:`load_inception` builds torchvision's ``inception_v3`` architecture and
  loads a state dict the user already has (for example torchvision's
  ``inception_v3_google-0cc3c7bd.pth``) with ``torch.load(weights_only=True)``,
  so no pickled code runs. Features are the 2,048-d pool3 activations,
  probabilities the softmax of its 1,000 ImageNet logits. These are
  torchvision's weights, not the TensorFlow graph of the original Inception
  Score code (1,008 classes), so values are close to but not identical with
  published TF numbers.
- :func:`load_digit_classifier` loads the small CNN shipped in
  ``checkpoints/digits-classifier/`` (trained on scikit-learn's 8x8 digits by
  :func:`train_digit_classifier`). Its scores use 10 digit classes and 64-d
  features: they measure the digits model only and are **not comparable** with
  Inception Score or FID numbers.
- :func:`load_fashion_classifier` loads the CNN shipped in
  ``checkpoints/fashion-classifier/`` (trained on all 60,000 Fashion-MNIST
  training images by :func:`train_fashion_classifier`), and
  :func:`load_reference_features` the classifier features of the 10,000
  test images with their mean and covariance, shipped beside it so that
  evaluation needs no dataset. Its scores (10 clothing classes, 128-d
  features) are classifier-feature scores of Fashion-MNIST models only, **not
  comparable** with Inception Score or FID numbers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mhgan_dist.errors import InputError, ModelError, first_line
from mhgan_dist.models import checkpoints_dir, sha256_file
from mhgan_dist.models.artifacts import _export, _load_pt2

__all__ = [
    "ImageScorer",
    "INCEPTION_SIZE",
    "DIGIT_CLASSIFIER_DIR",
    "load_inception",
    "load_digit_classifier",
    "DigitCNN",
    "train_digit_classifier",
    "save_digit_classifier",
    "FASHION_CLASSIFIER_DIR",
    "FashionCNN",
    "train_fashion_classifier",
    "save_fashion_classifier",
    "load_fashion_classifier",
    "ReferenceFeatures",
    "load_reference_features",
]

INCEPTION_SIZE = 299
DIGIT_CLASSIFIER_DIR = "digits-classifier"
_CLASSIFIER_FILE = "classifier.pt2"
_CLASSIFIER_JSON = "classifier.json"
FASHION_CLASSIFIER_DIR = "fashion-classifier"
_FEATURES_FILE = "test-features.npz"
_STATS_FILE = "test-stats.npz"


@dataclass
class ImageScorer:
    """A loaded scoring network; call :meth:`score` on images.

    name: the network, for notes ("inception-v3 (...)", "the shipped digits classifier").
    comparable_to_inception: False for scorers whose IS/FID must not be read as Inception numbers.
    """

    name: str
    comparable_to_inception: bool
    num_classes: int
    feature_dim: int
    _forward: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 64
    info: dict[str, Any] = field(default_factory=dict)

    @torch.inference_mode()
    def score(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(class probabilities float64 [n, classes], features float64 [n, feature_dim]).

        images: float32 [n, C, H, W] in [-1, 1]; C is 1 or 3.
        """
        x = np.asarray(images, dtype=np.float32)
        if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0:
            raise InputError(f"images to score must have shape [n, 1 or 3, H, W], got {list(x.shape)}.")
        probs = np.empty((x.shape[0], self.num_classes))
        features = np.empty((x.shape[0], self.feature_dim))
        for a in range(0, x.shape[0], self.batch_size):
            batch = torch.from_numpy(np.array(x[a : a + self.batch_size], copy=True)).to(self.device)
            logits, feats = self._forward(batch)
            probs[a : a + batch.shape[0]] = torch.softmax(logits.double(), dim=1).cpu().numpy()
            features[a : a + batch.shape[0]] = feats.double().cpu().numpy()
        return probs, features


# ------------------------------------------------------------------ Inception


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelError(f"Inception weights file {path} not found; pass a local inception_v3 state dict (nothing is downloaded).")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelError(f"Inception weights file {path} is not a plain state dict that loads with weights_only ({first}).") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"Inception weights file {path} does not hold a state dict of tensors.")
    return obj


def load_inception(weights: str | Path, device: str | torch.device = "cpu", batch_size: int = 32) -> ImageScorer:
    """torchvision's inception_v3 with the state dict in ``weights`` (a local file; never downloaded).

    The state dict may include or omit the auxiliary classifier. Images are
    resized to 299x299 (bilinear) and grey images repeated to 3 channels; the
    network takes them in [-1, 1] as the original Inception graph did
    (``transform_input`` off). Raises ModelError for a missing file, a file
    that needs unpickling, or weights that do not fit the architecture.
    """
    from torchvision.models import Inception3

    path = Path(weights).expanduser()
    state = _read_state_dict(path)
    has_aux = any(k.startswith("AuxLogits.") for k in state)
    model = Inception3(num_classes=1000, aux_logits=has_aux, transform_input=False, init_weights=False)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"Inception weights file {path} does not fit torchvision's inception_v3 "
                         f"({first_line(exc, 200)}).") from None
    device = torch.device(device)
    model = model.eval().to(device)
    pooled: list[torch.Tensor] = []
    model.avgpool.register_forward_hook(lambda _m, _i, out: pooled.append(out))

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if x.shape[2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        pooled.clear()
        logits = model(x)
        return logits, torch.flatten(pooled[-1], 1)

    return ImageScorer(
        name="inception-v3 (torchvision architecture, local weights)",
        comparable_to_inception=True,
        num_classes=1000,
        feature_dim=2048,
        _forward=forward,
        device=device,
        batch_size=batch_size,
        info={"weights": str(path), "weights_sha256": sha256_file(path)},
    )


# ------------------------------------------------------------ digit classifier


class DigitCNN(nn.Module):
    """8x8 grey digits ``[B, 1, 8, 8]`` in [-1, 1] -> (logits ``[B, 10]``, features ``[B, 64]``)."""

    feature_dim = 64

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, self.feature_dim), nn.ReLU(),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(self.feature_dim, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return self.head(self.dropout(features)), features


def train_digit_classifier(
    images: np.ndarray, labels: np.ndarray, *, seed: int = 0, epochs: int = 20, test_fraction: float = 0.2
) -> tuple[DigitCNN, dict[str, Any]]:
    """Trains :class:`DigitCNN` on a stratified split; returns it (eval mode) and its record.

    images: float32 [N, 1, 8, 8] in [-1, 1]; labels: int [N] in 0..9. The
    record holds the split sizes, seed, epochs and the test accuracy in [0, 1].
    Deterministic on CPU for a given seed (one thread, seeded torch and split).
    """
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    train_idx, test_idx = train_test_split(indices, test_size=test_fraction, random_state=seed, stratify=labels)
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        model = DigitCNN()
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
        order = torch.Generator().manual_seed(seed)
        started = time.perf_counter()
        for _ in range(epochs):
            model.train()
            for batch in torch.randperm(len(train_idx), generator=order).split(64):
                rows = torch.from_numpy(train_idx)[batch]
                logits, _ = model(x[rows])
                loss = F.cross_entropy(logits, y[rows])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
        model.eval()
        with torch.no_grad():
            logits, _ = model(x[torch.from_numpy(test_idx)])
        accuracy = float((logits.argmax(1) == y[torch.from_numpy(test_idx)]).float().mean())
    finally:
        torch.set_num_threads(threads)
    record = {
        "dataset": "sklearn.datasets.load_digits (grey level g -> g/8 - 1)",
        "architecture": "conv3x3(32)-relu-conv3x3(64)-relu-maxpool2-fc(64)-relu-dropout(0.3)-fc(10)",
        "classes": 10,
        "feature_dim": DigitCNN.feature_dim,
        "seed": seed,
        "epochs": epochs,
        "optimiser": "Adam(lr=1e-3), batch 64, cross-entropy",
        "num_train": int(len(train_idx)),
        "num_test": int(len(test_idx)),
        "test_accuracy": accuracy,
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    return model, record


def save_digit_classifier(directory: str | Path, model: DigitCNN, record: dict[str, Any]) -> Path:
    """Exports ``model`` with torch.export to ``directory/classifier.pt2`` plus ``classifier.json``."""
    out = Path(directory).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    blob = _export(model, torch.zeros(2, 1, 8, 8), "digit classifier")
    (out / _CLASSIFIER_FILE).write_bytes(blob)
    document = {
        **record,
        "format": "mhgan-dist digit classifier",
        "input": "float32 [B, 1, 8, 8] in [-1, 1]",
        "outputs": ["logits float32 [B, 10]", f"features float32 [B, {DigitCNN.feature_dim}]"],
        "files": {_CLASSIFIER_FILE: {"sha256": sha256_file(out / _CLASSIFIER_FILE)}},
        "torch": torch.__version__,
    }
    (out / _CLASSIFIER_JSON).write_text(json.dumps(document, indent=2) + "\n")
    return out


def _load_classifier(folder: Path, what: str, input_shape: tuple[int, ...], device: str | torch.device):
    """(forward, record) of an exported classifier in ``folder``; ModelError when missing, altered or unloadable."""
    program_path, record_path = folder / _CLASSIFIER_FILE, folder / _CLASSIFIER_JSON
    if not program_path.is_file() or not record_path.is_file():
        raise ModelError(f"{what} files {_CLASSIFIER_FILE} and {_CLASSIFIER_JSON} are missing from {folder}.")
    record = json.loads(record_path.read_text())
    expected = record.get("files", {}).get(_CLASSIFIER_FILE, {}).get("sha256")
    if expected is not None and sha256_file(program_path) != expected:
        raise ModelError(f"{what} file {program_path} does not match the sha256 in its {_CLASSIFIER_JSON}.")
    program = _load_pt2(program_path, what)
    device = torch.device(device)
    if device.type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    module = program.module()

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if tuple(x.shape[1:]) != input_shape:
            raise InputError(f"the {what} takes images of shape {list(input_shape)}, not {list(x.shape[1:])}.")
        logits, features = module(x)
        return logits, features

    return forward, record, device


def _classifier_scorer(folder: Path, what: str, name: str, input_shape: tuple[int, ...], feature_dim: int,
                       device: str | torch.device, reported: tuple[str, ...]) -> ImageScorer:
    """A 10-class classifier saved in ``folder`` as an :class:`ImageScorer`; ``reported``: its
    training record's keys to keep in ``info``."""
    forward, record, device = _load_classifier(folder, what, input_shape, device)
    return ImageScorer(
        name=name,
        comparable_to_inception=False,
        num_classes=10,
        feature_dim=int(record.get("feature_dim", feature_dim)),
        _forward=forward,
        device=device,
        batch_size=512,
        info={"directory": str(folder), **{key: record.get(key) for key in reported}},
    )


def load_digit_classifier(directory: str | Path | None = None, device: str | torch.device = "cpu") -> ImageScorer:
    """The shipped digit classifier (or one in ``directory``) as an :class:`ImageScorer`.

    Raises ModelError when the files are missing, altered or unloadable.
    """
    folder = Path(directory).expanduser() if directory is not None else checkpoints_dir() / DIGIT_CLASSIFIER_DIR
    return _classifier_scorer(folder, "digit classifier", "the shipped digits classifier", (1, 8, 8),
                              DigitCNN.feature_dim, device, ("test_accuracy", "num_test"))


# ---------------------------------------------------------- fashion classifier


class FashionCNN(nn.Module):
    """28x28 grey images ``[B, 1, 28, 28]`` in [-1, 1] -> (logits ``[B, 10]``, features ``[B, 128]``).

    About 0.8M multiply-adds per image (strided convolutions instead of pooling:
    cheap enough to train in minutes on a busy 2-core machine); the features are
    the ReLU outputs of the penultimate layer (non-negative).
    """

    feature_dim = 128

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, self.feature_dim), nn.ReLU(),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(self.feature_dim, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return self.head(self.dropout(features)), features


def _batched_forward(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    logits, features = zip(*(model(part) for part in x.split(batch)), strict=True)
    return torch.cat(logits), torch.cat(features)


def train_fashion_classifier(
    train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray, test_labels: np.ndarray, *,
    seed: int = 0, epochs: int = 3, batch_size: int = 128, threads: int = 2,
    log: Callable[[str], None] | None = None,
) -> tuple[FashionCNN, dict[str, Any]]:
    """Trains :class:`FashionCNN` on the whole training split; returns it (eval mode) and its record.

    train_images float32 [N, 1, 28, 28] in [-1, 1], train_labels int [N] in
    0..9; the test split only measures the accuracy. Adam (lr 1e-3 decayed
    linearly to 0), batch ``batch_size``. Deterministic on CPU for a given seed and
    thread count. The record holds the settings, test accuracy in [0, 1] and
    training seconds.
    """
    say = log or (lambda message: None)
    x = torch.from_numpy(np.ascontiguousarray(train_images, dtype=np.float32))
    y = torch.from_numpy(np.asarray(train_labels, dtype=np.int64))
    x_test = torch.from_numpy(np.ascontiguousarray(test_images, dtype=np.float32))
    y_test = torch.from_numpy(np.asarray(test_labels, dtype=np.int64))
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28) or y.shape != (x.shape[0],):
        raise InputError(f"training images must be [N, 1, 28, 28] with N labels, got {list(x.shape)} and {list(y.shape)}.")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        model = FashionCNN()
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
        steps = epochs * -(-x.shape[0] // batch_size)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1.0 - step / steps)
        order = torch.Generator().manual_seed(seed)
        started = time.perf_counter()
        for epoch in range(epochs):
            model.train()
            for rows in torch.randperm(x.shape[0], generator=order).split(batch_size):
                logits, _ = model(x[rows])
                loss = F.cross_entropy(logits, y[rows])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
            model.eval()
            with torch.no_grad():
                accuracy = float((_batched_forward(model, x_test)[0].argmax(1) == y_test).float().mean())
            say(f"epoch {epoch + 1}/{epochs}: test accuracy {accuracy:.4f} "
                f"({time.perf_counter() - started:.0f} s)")
    finally:
        torch.set_num_threads(previous)
    record = {
        "dataset": "Fashion-MNIST (Debian dataset-fashion-mnist), all 60,000 training images; pixel p -> p/127.5 - 1",
        "architecture": "conv5x5/2(32)-relu-conv3x3/2(32)-relu-fc(128)-relu-dropout(0.3)-fc(10)",
        "classes": 10,
        "feature_dim": FashionCNN.feature_dim,
        "seed": seed,
        "epochs": epochs,
        "optimiser": f"Adam(lr=1e-3, linear decay to 0), batch {batch_size}, cross-entropy",
        "threads": threads,
        "num_train": int(x.shape[0]),
        "num_test": int(x_test.shape[0]),
        "test_accuracy": accuracy,
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    return model, record


def save_fashion_classifier(directory: str | Path, model: FashionCNN, record: dict[str, Any],
                            test_images: np.ndarray, test_labels: np.ndarray) -> Path:
    """Writes the classifier and the test split's reference features to ``directory``.

    classifier.pt2 (torch.export), classifier.json (record, hashes),
    test-features.npz (features float16 [n, 128], labels uint8 [n], compressed) and
    test-stats.npz (float64 mean [128] and covariance [128, 128] of the float32 features).
    """
    out = Path(directory).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    with torch.no_grad():
        logits, features = _batched_forward(model, torch.from_numpy(np.ascontiguousarray(test_images, np.float32)))
    features = features.numpy().astype(np.float64)
    labels = np.asarray(test_labels, dtype=np.int64)
    (out / _CLASSIFIER_FILE).write_bytes(_export(model, torch.zeros(2, 1, 28, 28), "fashion classifier"))
    np.savez_compressed(out / _FEATURES_FILE, features=features.astype(np.float16), labels=labels.astype(np.uint8))
    np.savez_compressed(out / _STATS_FILE, mean=features.mean(axis=0), cov=np.cov(features, rowvar=False))
    document = {
        **record,
        "format": "mhgan-dist fashion classifier",
        "input": "float32 [B, 1, 28, 28] in [-1, 1]",
        "outputs": ["logits float32 [B, 10]", f"features float32 [B, {FashionCNN.feature_dim}]"],
        "reference": {"split": "Fashion-MNIST test (t10k), all images", "num": int(labels.size),
                      "features_file": _FEATURES_FILE, "stats_file": _STATS_FILE,
                      "accuracy_of_saved_features": float((logits.argmax(1).numpy() == labels).mean())},
        "files": {name: {"sha256": sha256_file(out / name), "bytes": (out / name).stat().st_size}
                  for name in (_CLASSIFIER_FILE, _FEATURES_FILE, _STATS_FILE)},
        "torch": torch.__version__,
    }
    (out / _CLASSIFIER_JSON).write_text(json.dumps(document, indent=2) + "\n")
    return out


def _fashion_folder(directory: str | Path | None) -> Path:
    return Path(directory).expanduser() if directory is not None else checkpoints_dir() / FASHION_CLASSIFIER_DIR


def load_fashion_classifier(directory: str | Path | None = None, device: str | torch.device = "cpu") -> ImageScorer:
    """The shipped Fashion-MNIST classifier (or one in ``directory``) as an :class:`ImageScorer`.

    Raises ModelError when the files are missing, altered or unloadable.
    """
    return _classifier_scorer(_fashion_folder(directory), "fashion classifier", "the shipped Fashion-MNIST classifier",
                              (1, 28, 28), FashionCNN.feature_dim, device, ("test_accuracy", "num_test", "num_train"))


@dataclass(frozen=True)
class ReferenceFeatures:
    """A real reference set in a classifier's feature space.

    features: float32 [n, d] (stored as float16); labels: int64 [n] true classes;
    mean: float64 [d] and cov: float64 [d, d] of the unrounded features.
    """

    name: str
    features: np.ndarray
    labels: np.ndarray
    mean: np.ndarray
    cov: np.ndarray


def load_reference_features(directory: str | Path | None = None) -> ReferenceFeatures:
    """The shipped Fashion-MNIST test split's classifier features; ModelError when missing or altered."""
    folder = _fashion_folder(directory)
    record_path = folder / _CLASSIFIER_JSON
    paths = [folder / _FEATURES_FILE, folder / _STATS_FILE]
    if not record_path.is_file() or not all(p.is_file() for p in paths):
        raise ModelError(f"the reference features {_FEATURES_FILE} and {_STATS_FILE} are missing from {folder}.")
    hashes = json.loads(record_path.read_text()).get("files", {})
    for path in paths:
        expected = hashes.get(path.name, {}).get("sha256")
        if expected is not None and sha256_file(path) != expected:
            raise ModelError(f"reference features file {path} does not match the sha256 in its {_CLASSIFIER_JSON}.")
    with np.load(paths[0], allow_pickle=False) as f, np.load(paths[1], allow_pickle=False) as s:
        return ReferenceFeatures(name="Fashion-MNIST test split (10,000 images)",
                                 features=f["features"].astype(np.float32), labels=f["labels"].astype(np.int64),
                                 mean=s["mean"].astype(np.float64), cov=s["cov"].astype(np.float64))

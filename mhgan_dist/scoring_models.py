"""Networks that score image samples: Inception v3 from a local file, and the digit classifier.

Both map images float32 ``[n, C, H, W]`` in ``[-1, 1]`` (the generators'
range) to class probabilities ``[n, classes]`` and feature vectors
``[n, d]``, which :mod:`mhgan_dist.metrics` turns into Inception Score and
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

from mhgan_dist.errors import InputError, ModelError
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
]

INCEPTION_SIZE = 299
DIGIT_CLASSIFIER_DIR = "digits-classifier"
_CLASSIFIER_FILE = "classifier.pt2"
_CLASSIFIER_JSON = "classifier.json"


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
        first = str(exc).strip().splitlines()[0][:200]
        raise ModelError(f"Inception weights file {path} does not fit torchvision's inception_v3 ({first}).") from None
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


def load_digit_classifier(directory: str | Path | None = None, device: str | torch.device = "cpu") -> ImageScorer:
    """The shipped digit classifier (or one in ``directory``) as an :class:`ImageScorer`.

    Raises ModelError when the files are missing, altered or unloadable.
    """
    folder = Path(directory).expanduser() if directory is not None else checkpoints_dir() / DIGIT_CLASSIFIER_DIR
    program_path, record_path = folder / _CLASSIFIER_FILE, folder / _CLASSIFIER_JSON
    if not program_path.is_file() or not record_path.is_file():
        raise ModelError(f"digit classifier files {_CLASSIFIER_FILE} and {_CLASSIFIER_JSON} are missing from {folder}.")
    record = json.loads(record_path.read_text())
    expected = record.get("files", {}).get(_CLASSIFIER_FILE, {}).get("sha256")
    if expected is not None and sha256_file(program_path) != expected:
        raise ModelError(f"digit classifier file {program_path} does not match the sha256 in its {_CLASSIFIER_JSON}.")
    program = _load_pt2(program_path, "digit classifier")
    device = torch.device(device)
    if device.type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    module = program.module()

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if tuple(x.shape[1:]) != (1, 8, 8):
            raise InputError(f"the digit classifier takes images of shape [1, 8, 8], not {list(x.shape[1:])}.")
        logits, features = module(x)
        return logits, features

    return ImageScorer(
        name="the shipped digits classifier",
        comparable_to_inception=False,
        num_classes=10,
        feature_dim=int(record.get("feature_dim", DigitCNN.feature_dim)),
        _forward=forward,
        device=device,
        batch_size=512,
        info={"directory": str(folder), "test_accuracy": record.get("test_accuracy"),
              "num_test": record.get("num_test")},
    )

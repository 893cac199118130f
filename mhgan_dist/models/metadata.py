"""Where model directories are and what their model.json says, without torch.

Reading a model's metadata (its recommendation, its dataset) must not cost a
torch import: the job reads it while parsing flags. Loading the programs is
:mod:`mhgan_dist.models.artifacts`' concern.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mhgan_dist.errors import ModelError

SHIPPED_MODELS: tuple[str, ...] = ("grid2d", "mixture1d", "digits", "fashion")
"""Model names that resolve to the package's own model directories."""


def checkpoints_dir() -> Path:
    """The folder of the shipped model directories (package data)."""
    return Path(__file__).resolve().parent.parent / "checkpoints"


def shipped_or_given_directory(model: str | os.PathLike[str]) -> Path:
    """The directory a model name stands for: the shipped one for a shipped name, else the path itself.

    Does not check that it exists.
    """
    name = os.fspath(model)
    return checkpoints_dir() / name if name in SHIPPED_MODELS else Path(name).expanduser()


def read_model_json(directory: Path) -> dict[str, Any]:
    """The contents of ``directory/model.json``; ``{}`` when the directory has none.

    Raises ModelError naming the file when it is not JSON or not a JSON object.
    """
    path = directory / "model.json"
    if not path.exists():
        return {}
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"model file {path} is not valid JSON ({exc}).") from exc
    if not isinstance(metadata, dict):
        raise ModelError(f"model file {path} must hold a JSON object.")
    return metadata

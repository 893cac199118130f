"""Model files without torch: find a model's files, fingerprint them, read its real samples.

What a process needs to plan a run and check its inputs (the job's driver)
without importing torch (about 2.5 s of CPU): loading and saving the programs
themselves is :mod:`mhgan_dist.models.artifacts`'s concern.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mhgan_dist.errors import ConfigError, InputError, ModelError
from mhgan_dist.models.metadata import SHIPPED_MODELS, read_model_json, shipped_or_given_directory

__all__ = [
    "DISCRIMINATOR_OUTPUTS",
    "ModelFiles",
    "check_sample_shape",
    "compress_real_samples",
    "load_real_samples",
    "model_fingerprint",
    "resolve_model",
    "sha256_file",
]

DISCRIMINATOR_OUTPUTS: tuple[str, ...] = ("logit", "probability")
PROGRAM_SUFFIXES = (".pt2", ".pt")
REAL_NAMES = ("real.npy", "real.npz", "real.parquet")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelFiles:
    """Where a G/D pair lives and how to read it (nothing is loaded yet)."""

    name: str
    """Shipped name, or the directory / generator file stem of a user model."""
    generator: Path
    """``.pt2`` (torch.export) or ``.pt`` (TorchScript)."""
    discriminator: Path
    real: Path | None
    """Held-out real samples (``.npy`` or Parquet with a ``sample`` column); None if unknown."""
    latent_dim: int | None
    """None: read it from the generator program."""
    discriminator_output: str
    """``"logit"`` or ``"probability"`` (D ends in a sigmoid)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """model.json contents; ``{}`` for a bare pair."""


def _check_options(latent_dim: int | None, discriminator_output: str | None) -> None:
    if latent_dim is not None and (isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1):
        raise ConfigError(f"the latent dimension must be a positive integer, not {latent_dim!r}.")
    if discriminator_output is not None and discriminator_output not in DISCRIMINATOR_OUTPUTS:
        raise ConfigError(
            f"the discriminator output must be one of {', '.join(DISCRIMINATOR_OUTPUTS)}, not {discriminator_output!r}."
        )


def _existing_file(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelError(f"{what} file {p} not found.")
    return p


def _existing_real(path: str | os.PathLike[str]) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"real samples file {p} not found.")
    return p


def _find_program(directory: Path, stem: str) -> Path:
    for suffix in PROGRAM_SUFFIXES:
        candidate = directory / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise ModelError(f"model directory {directory} has no {stem}.pt2 or {stem}.pt file.")


def resolve_model(
    model: str | os.PathLike[str] | None = None,
    *,
    generator: str | os.PathLike[str] | None = None,
    discriminator: str | os.PathLike[str] | None = None,
    latent_dim: int | None = None,
    real: str | os.PathLike[str] | None = None,
    discriminator_output: str | None = None,
) -> ModelFiles:
    """Find the files of a model without loading them.

    ``model`` is a shipped name (:data:`SHIPPED_MODELS`) or a model directory
    (``generator.pt2|.pt``, ``discriminator.pt2|.pt``, optional ``real.npy`` or
    ``real.parquet`` and ``model.json``); or ``generator`` and ``discriminator``
    name a user's own pair (then ``model`` must be None). An explicit ``real``,
    ``latent_dim`` or ``discriminator_output`` overrides the directory's;
    ``discriminator_output`` defaults to model.json's value, else ``"logit"``.

    Raises ConfigError (bad combination or value), ModelError (missing model
    file, bad model.json) or InputError (missing real samples file).
    """
    _check_options(latent_dim, discriminator_output)
    if model is not None and (generator is not None or discriminator is not None):
        raise ConfigError("give either a model (name or directory) or a generator and discriminator file, not both.")
    if model is None:
        if generator is None or discriminator is None:
            raise ConfigError("give a model name or directory, or both a generator and a discriminator file.")
        g = _existing_file(generator, "generator")
        return ModelFiles(
            name=g.stem,
            generator=g,
            discriminator=_existing_file(discriminator, "discriminator"),
            real=None if real is None else _existing_real(real),
            latent_dim=latent_dim,
            discriminator_output=discriminator_output or "logit",
            metadata={},
        )

    name = os.fspath(model)
    directory = shipped_or_given_directory(name)
    if name in SHIPPED_MODELS:
        if not directory.is_dir():
            raise ModelError(f"shipped model directory {directory} is missing from the installation.")
    else:
        if not directory.is_dir():
            raise ModelError(
                f"model {name!r} is neither a shipped model ({', '.join(SHIPPED_MODELS)}) nor an existing directory."
            )
        name = directory.resolve().name
    metadata = read_model_json(directory)
    if real is not None:
        real_path: Path | None = _existing_real(real)
    else:
        real_path = next((directory / n for n in REAL_NAMES if (directory / n).exists()), None)
    json_output = metadata.get("discriminator_output")
    if discriminator_output is None and json_output is not None:
        if json_output not in DISCRIMINATOR_OUTPUTS:
            raise ModelError(f"model file {directory / 'model.json'} has an unknown discriminator_output {json_output!r}.")
        discriminator_output = json_output
    if latent_dim is None and metadata.get("latent_dim") is not None:
        latent_dim = metadata["latent_dim"]
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise ModelError(f"model file {directory / 'model.json'} has an invalid latent_dim {latent_dim!r}.")
    return ModelFiles(
        name=name,
        generator=_find_program(directory, "generator"),
        discriminator=_find_program(directory, "discriminator"),
        real=real_path,
        latent_dim=latent_dim,
        discriminator_output=discriminator_output or "logit",
        metadata=metadata,
    )


def model_fingerprint(files: ModelFiles) -> str:
    """sha256 hex over the G file bytes, the D file bytes and the discriminator output kind: the model's identity in a run."""
    digest = hashlib.sha256()
    for path in (files.generator, files.discriminator):
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    digest.update(files.discriminator_output.encode())
    return digest.hexdigest()


def load_real_samples(path: str | os.PathLike[str], sample_shape: Sequence[int] | None = None) -> np.ndarray:
    """Read held-out real samples as float32 ``[N, *sample_shape]``, N >= 1, finite.

    ``.npy`` files are read with ``allow_pickle=False``. ``.npz`` files (also
    without pickle) hold ``sample``, uint8 grey levels ``[N, *sample_shape]``,
    and ``value_range`` ``[lo, hi]``: level g is ``lo + g / (255 / (hi - lo))``
    (see :func:`compress_real_samples`). Anything else is read as
    Parquet (a file or a folder of files) with a ``sample`` column of
    ``arrow.fixed_shape_tensor``, (nested) fixed or variable lists of equal
    lengths, or plain numbers (then the sample shape is ``(1,)``). A ``[N]``
    array is taken as ``[N, 1]`` when ``sample_shape`` is ``(1,)``. Raises
    InputError naming the file.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"real samples file {p} not found.")
    if p.suffix == ".npy":
        try:
            array = np.load(p, allow_pickle=False)
        except ValueError as exc:
            raise InputError(f"real samples file {p} holds pickled objects, which are refused; save a numeric array.") from exc
        except OSError as exc:
            raise InputError(f"real samples file {p} is not a readable .npy array ({exc}).") from exc
    elif p.suffix == ".npz":
        array = _read_npz_samples(p)
    else:
        array = _read_parquet_samples(p)
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise InputError(f"real samples file {p} holds {array.dtype} values, not real numbers.")
    array = np.asarray(array, dtype=np.float32)
    expected = None if sample_shape is None else tuple(int(s) for s in sample_shape)
    if array.ndim == 1 and expected in (None, (1,)):
        array = array[:, None]
    if array.ndim < 2 or len(array) == 0:
        raise InputError(f"real samples file {p} must hold at least one sample as [N, *sample_shape], not shape {list(array.shape)}.")
    if expected is not None:
        check_sample_shape(array, p, expected)
    if not np.isfinite(array).all():
        raise InputError(f"real samples file {p} holds non-finite values (NaN or inf).")
    return np.ascontiguousarray(array)


def check_sample_shape(samples: np.ndarray, path: str | os.PathLike[str], sample_shape: Sequence[int]) -> None:
    """Raises InputError naming ``path`` unless ``samples`` is ``[N, *sample_shape]`` (what the generator makes)."""
    expected = [int(s) for s in sample_shape]
    if list(samples.shape[1:]) != expected:
        raise InputError(
            f"real samples file {Path(path).expanduser()} holds samples of shape {list(samples.shape[1:])}, "
            f"but the generator makes {expected}."
        )


def _read_npz_samples(path: Path) -> np.ndarray:
    if not zipfile.is_zipfile(path):
        raise InputError(f"real samples file {path} is not a readable .npz archive (no zip structure).")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = set(archive.files)
            levels = archive["sample"] if "sample" in names else None
            bounds = archive["value_range"] if "value_range" in names else None
    except ValueError as exc:
        raise InputError(f"real samples file {path} holds pickled objects, which are refused; save numeric arrays.") from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"real samples file {path} is not a readable .npz archive ({exc}).") from exc
    if levels is None or bounds is None:
        raise InputError(f"real samples file {path} must hold the arrays 'sample' and 'value_range'.")
    if levels.dtype != np.uint8:
        raise InputError(f"real samples file {path} holds {levels.dtype} levels, not uint8.")
    bounds = np.asarray(bounds, dtype=np.float64)
    if bounds.shape != (2,) or not np.isfinite(bounds).all() or not bounds[0] < bounds[1]:
        raise InputError(f"real samples file {path} has value_range {bounds.tolist()}, not [lo, hi] with lo < hi.")
    array = levels.astype(np.float32)
    array /= np.float32(255.0 / (bounds[1] - bounds[0]))
    array += np.float32(bounds[0])
    return array


def compress_real_samples(directory: str | os.PathLike[str], value_range: tuple[float, float] = (-1.0, 1.0)) -> Path:
    """Replace ``directory/real.npy`` by ``real.npz`` (uint8 levels, zip-compressed) when that is exact.

    For images on a 256-level grid of ``value_range`` (e.g. Fashion-MNIST's
    g/127.5 - 1): every sample must read back bit for bit, else ModelError and
    nothing changes. model.json's ``files`` entry is updated. Returns the new
    file's path. About 4x smaller before compression.
    """
    out = Path(directory).expanduser()
    source = out / "real.npy"
    real = load_real_samples(source)
    lo, hi = float(value_range[0]), float(value_range[1])
    levels = np.rint((real.astype(np.float64) - lo) * (255.0 / (hi - lo)))
    if levels.min() < 0 or levels.max() > 255:
        raise ModelError(f"real samples in {source} fall outside {list(value_range)}.")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, sample=levels.astype(np.uint8), value_range=np.array([lo, hi]))
    target = out / "real.npz"
    _write_atomic(target, buffer.getvalue())
    if not np.array_equal(load_real_samples(target), real):
        target.unlink()
        raise ModelError(f"real samples in {source} are not 8-bit levels of {list(value_range)}; kept real.npy.")
    document = read_model_json(out)
    files = document.get("files", {})
    files.pop("real.npy", None)
    files["real.npz"] = {"sha256": sha256_file(target), "bytes": target.stat().st_size}
    document["files"] = files
    _write_atomic(out / "model.json", (json.dumps(document, indent=2, sort_keys=False) + "\n").encode())
    source.unlink()
    return target


def _read_parquet_samples(path: Path) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["sample"])
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise InputError(f"real samples file {path} is neither a .npy array nor Parquet with a 'sample' column ({_short(exc)}).") from exc
    column = table.column("sample").combine_chunks()
    if column.null_count:
        raise InputError(f"real samples file {path} has missing values in its 'sample' column.")
    if isinstance(column.type, pa.FixedShapeTensorType):
        return np.asarray(column.to_numpy_ndarray())
    dims: list[int] = [len(column)]
    values: pa.Array = column
    while pa.types.is_list(values.type) or pa.types.is_large_list(values.type) or pa.types.is_fixed_size_list(values.type):
        if values.null_count:
            raise InputError(f"real samples file {path} has missing values in its 'sample' column.")
        if pa.types.is_fixed_size_list(values.type):
            size = values.type.list_size
        else:
            lengths = np.asarray(values.value_lengths())
            size = int(lengths[0]) if len(lengths) else 0
            if len(lengths) and (lengths != size).any():
                raise InputError(f"real samples file {path} has samples of different lengths in its 'sample' column.")
        dims.append(size)
        values = values.flatten()
    if values.null_count:
        raise InputError(f"real samples file {path} has missing values in its 'sample' column.")
    try:
        flat = values.to_numpy(zero_copy_only=False)
    except pa.ArrowException as exc:
        raise InputError(f"real samples file {path} has a 'sample' column of type {column.type}, not numbers.") from exc
    return flat.reshape(dims)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _short(exc: BaseException) -> str:
    """One line of an exception for a one-sentence message."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    if len(line) > 200:
        line = line[:197] + "..."
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


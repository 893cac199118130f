"""Model artifacts: find, load, validate and save a generator/discriminator pair.

A *model directory* holds::

    generator.pt2       torch.export program: float32 [B, latent_dim] -> float32 [B, *sample_shape]
    discriminator.pt2   torch.export program: float32 [B, *sample_shape] -> float32 [B] logits
    real.npy            held-out real samples, float32 [N, *sample_shape] (calibration, chain starts)
                        (or real.npz: the same as 8-bit grey levels, see :func:`compress_real_samples`)
    model.json          dataset, architecture, latent_dim, sample_shape, epochs, seed, versions, sha256s

A user may instead bring a bare pair of files: torch.export programs (``.pt2``,
batch dimension dynamic with minimum 1) or TorchScript (``.pt``). Either is
loaded without the user's Python code, and nothing is ever unpickled:
TorchScript has its own restricted loader, and a ``.pt2`` archive whose
payloads would go through pickle is refused before torch opens it.

Finding the files and reading the real samples, which need no torch, live in
:mod:`mhgan_dist.models.files` (re-exported here).
"""

from __future__ import annotations

import copy
import io
import json
import os
import platform
import shutil
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mhgan_dist.errors import ConfigError, ModelError, OutputError
from mhgan_dist.models.metadata import SHIPPED_MODELS, checkpoints_dir
from mhgan_dist.models.files import (
    DISCRIMINATOR_OUTPUTS,
    PROGRAM_SUFFIXES,
    REAL_NAMES,
    ModelFiles,
    _check_options,
    _short,
    _write_atomic,
    compress_real_samples,
    load_real_samples,
    model_fingerprint,
    resolve_model,
    sha256_file,
)

__all__ = [
    "SHIPPED_MODELS",
    "DISCRIMINATOR_OUTPUTS",
    "ModelFiles",
    "LoadedPair",
    "checkpoints_dir",
    "resolve_model",
    "load_pair",
    "load_real_samples",
    "save_model_dir",
    "compress_real_samples",
    "sha256_file",
    "JOINT_DISCRIMINATOR_STEM",
    "joint_discriminator",
    "joint_discriminator_name",
    "check_new_model_dir",
    "save_with_discriminator",
    "gan_discriminator",
]

MODEL_FORMAT = "mhgan-dist model directory"
MODEL_FORMAT_VERSION = 1
# Probabilities are clamped to [eps, 1 - eps] in float64 before the logit, so
# a saturated sigmoid gives a large finite logit (about +-36.8), never inf.
_PROBABILITY_EPS = 1e-16
_CHECK_BATCHES = (1, 3)


# -------------------------------------------------------------------- resolve


# ----------------------------------------------------------------- programs


def _pickled_payload(archive: zipfile.ZipFile) -> str | None:
    """Name of a member of a PT2 archive that torch.export.load would unpickle, if any."""
    for member in archive.namelist():
        if member.endswith("_config.json") and ("/data/weights/" in member or "/data/constants/" in member):
            config = json.loads(archive.read(member)).get("config", {})
            for fqn, payload in config.items():
                path = str(payload.get("path_name", ""))
                if payload.get("use_pickle") or path.startswith(("custom_obj", "opaque_obj")):
                    return f"{member}:{fqn}"
        elif "/data/constants/" in member and member.endswith(".pt"):
            return member  # the legacy constants format is one pickle
        elif "/data/sample_inputs/" in member:
            try:
                torch.load(io.BytesIO(archive.read(member)), weights_only=True)
            except Exception:
                return member
    return None


def _is_pt2_archive(path: Path) -> bool:
    """True for a zip written by torch.export.save (it carries an ``archive_format`` member)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n == "archive_format" or n.endswith("/archive_format") for n in names)


def _write_model_json(folder: Path, metadata: dict[str, Any], latent_dim: int, sample_shape: Sequence[int],
                      real_samples: int, names: Sequence[str]) -> None:
    """Writes ``folder/model.json``: ``metadata``, the format, the pair's shapes and each named file's sha256 and size."""
    files = {n: {"sha256": sha256_file(folder / n), "bytes": (folder / n).stat().st_size} for n in names}
    document = {
        **metadata,
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "latent_dim": latent_dim,
        "sample_shape": list(sample_shape),
        "discriminator_output": "logit",
        "real_samples": real_samples,
        "versions": _versions(),
        "files": files,
    }
    _write_atomic(folder / "model.json", (json.dumps(document, indent=2, sort_keys=False) + "\n").encode())


def _load_pt2(path: Path, what: str) -> torch.export.ExportedProgram:
    try:
        with zipfile.ZipFile(path) as archive:
            unsafe = _pickled_payload(archive)
    except (zipfile.BadZipFile, OSError, ValueError, AttributeError) as exc:
        raise ModelError(f"{what} file {path} is a damaged torch.export archive ({_short(exc)}).") from exc
    if unsafe is not None:
        raise ModelError(
            f"{what} file {path} stores a pickled payload ({unsafe}), which is refused; re-export it with plain tensors."
        )
    try:
        return torch.export.load(path)
    except Exception as exc:
        raise ModelError(f"{what} file {path} could not be loaded as a torch.export program ({_short(exc)}).") from exc


def _load_program(path: Path, what: str, device: torch.device) -> tuple[nn.Module, str, int | None]:
    """Load a file as torch.export or TorchScript onto ``device``; returns (module, kind, declared latent_dim)."""
    if not path.is_file():
        raise ModelError(f"{what} file {path} not found.")
    if _is_pt2_archive(path):
        program = _load_pt2(path, what)
        declared = _export_input_dim(program, path) if what == "generator" else None
        try:
            if device.type != "cpu":
                from torch.export.passes import move_to_device_pass

                program = move_to_device_pass(program, device)
            module = program.module()
        except Exception as exc:
            raise ModelError(f"{what} file {path} cannot be placed on device {device} ({_short(exc)}).") from exc
        kind = "torch.export"
    else:
        try:
            with warnings.catch_warnings():
                # TorchScript is deprecated in favour of torch.export, but users' .pt files are supported.
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(str(path), map_location=device)
        except Exception as exc:
            raise ModelError(
                f"{what} file {path} is neither a torch.export program (.pt2) nor a TorchScript file (.pt)."
            ) from exc
        declared = getattr(module, "latent_dim", None)
        if isinstance(declared, bool) or not isinstance(declared, int):
            declared = None
        kind = "torchscript"
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module, kind, declared


def _export_input_dim(program: torch.export.ExportedProgram, path: Path) -> int | None:
    """The latent dimension an exported generator declares: its single input's second dimension, if fixed."""
    user_inputs = list(program.graph_signature.user_inputs)
    if len(user_inputs) != 1:
        return None
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name == user_inputs[0]:
            shape = getattr(node.meta.get("val"), "shape", None)
            if shape is None:
                return None
            if len(shape) != 2:
                dims = ", ".join(str(d) for d in shape)
                raise ModelError(
                    f"generator file {path} takes inputs of shape [{dims}]; a generator must take [batch, latent_dim]."
                )
            return int(shape[1]) if isinstance(shape[1], int) else None
    return None


class _Program(nn.Module):
    """Wraps a loaded program so that ``.train()/.eval()/.to()`` behave.

    An exported program's module refuses ``train()``/``eval()`` (its mode was
    fixed at export time), so the wrapper never forwards them to it.
    """

    def __init__(self, inner: nn.Module, kind: str) -> None:
        super().__init__()
        self.inner = inner
        self.kind = kind

    def train(self, mode: bool = True) -> _Program:
        self.training = mode
        if self.kind == "torchscript":
            self.inner.train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class _LogitDiscriminator(_Program):
    """D as one float32 logit per sample, ``[B]``, whatever the file returns (``[B]`` or ``[B, 1]``)."""

    def __init__(self, inner: nn.Module, kind: str, output: str) -> None:
        super().__init__(inner, kind)
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        out = out.reshape(out.shape[0])
        if self.output == "probability":
            p = out.double().clamp(_PROBABILITY_EPS, 1.0 - _PROBABILITY_EPS)
            out = torch.log(p) - torch.log1p(-p)
        return out.float()


@dataclass
class LoadedPair:
    """A validated G/D pair, ready to run under ``torch.inference_mode()``."""

    generator: nn.Module
    """float32 ``[B, latent_dim]`` -> float32 ``[B, *sample_shape]`` on ``device``."""
    discriminator: nn.Module
    """float32 ``[B, *sample_shape]`` -> float32 ``[B]`` logits on ``device``."""
    latent_dim: int
    sample_shape: tuple[int, ...]
    device: torch.device
    fingerprint: str
    """sha256 hex over the G file bytes, the D file bytes and the discriminator output kind."""


def _check_hashes(files: ModelFiles) -> None:
    """Compare the files with model.json's sha256s, when it records them."""
    recorded = files.metadata.get("files")
    if not isinstance(recorded, dict):
        return
    checked: list[tuple[str, Path | None]] = [("generator", files.generator), ("discriminator", files.discriminator)]
    if files.real is not None and files.real.parent == files.generator.parent:
        checked.append(("real samples", files.real))
    for what, path in checked:
        entry = recorded.get(path.name) if path is not None else None
        if isinstance(entry, dict) and "sha256" in entry and sha256_file(path) != entry["sha256"]:
            raise ModelError(f"{what} file {path} does not match the sha256 recorded in its model.json.")


def _run(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, what: str, path: Path, detail: str) -> Any:
    try:
        return fn(x)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{what} file {path} failed on {detail} ({_short(exc)}).") from exc


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def load_pair(files: ModelFiles, device: str | torch.device = "cpu") -> LoadedPair:
    """Load, move to ``device``, set eval mode and validate G and D against each other.

    Each file is tried as a torch.export program (a PT2 archive) and else as
    TorchScript, whatever its suffix. ``latent_dim`` is ``files.latent_dim``, else
    the generator's declared one (the exported input's second dimension or a
    TorchScript attribute ``latent_dim``). The check runs G on batches of 1 and
    3: its output must be a float32 tensor ``[B, *sample_shape]`` of a fixed
    shape, finite, on ``device``; D must accept it and return ``[B]`` or ``[B, 1]``
    finite floats (probabilities in ``[0, 1]`` when so declared). Any failure is
    a ModelError naming the file.
    """
    device = torch.device(device)
    _check_options(files.latent_dim, files.discriminator_output)
    for what, path in (("generator", files.generator), ("discriminator", files.discriminator)):
        if not Path(path).is_file():
            raise ModelError(f"{what} file {path} not found.")
    _check_hashes(files)
    g_module, g_kind, declared = _load_program(Path(files.generator), "generator", device)
    d_module, d_kind, _ = _load_program(Path(files.discriminator), "discriminator", device)

    latent_dim = files.latent_dim
    if latent_dim is None:
        if declared is None:
            raise ModelError(
                f"generator file {files.generator} does not declare its latent dimension; give it (--latent-dim)."
            )
        latent_dim = declared
    elif declared is not None and declared != latent_dim:
        raise ModelError(f"generator file {files.generator} takes latents of dimension {declared}, not {latent_dim}.")

    generator = _Program(g_module, g_kind).eval()
    discriminator = _LogitDiscriminator(d_module, d_kind, files.discriminator_output).eval()
    sample_shape = _validate(generator, discriminator, files, latent_dim, device)
    return LoadedPair(
        generator=generator,
        discriminator=discriminator,
        latent_dim=latent_dim,
        sample_shape=sample_shape,
        device=device,
        fingerprint=model_fingerprint(files),
    )


def _validate(
    generator: _Program, discriminator: _LogitDiscriminator, files: ModelFiles, latent_dim: int, device: torch.device
) -> tuple[int, ...]:
    g_path, d_path = files.generator, files.discriminator
    latents = torch.randn(max(_CHECK_BATCHES), latent_dim, generator=torch.Generator().manual_seed(0))
    sample_shape: tuple[int, ...] | None = None
    with torch.inference_mode():
        for batch in _CHECK_BATCHES:
            z = latents[:batch].to(device)
            detail = f"a batch of {batch} latents of dimension {latent_dim}"
            x = _run(generator.inner, z, "generator", g_path, detail)
            if not isinstance(x, torch.Tensor):
                raise ModelError(f"generator file {g_path} returned a {type(x).__name__}, not one tensor.")
            if x.dtype != torch.float32:
                raise ModelError(f"generator file {g_path} returned {x.dtype} samples, not torch.float32.")
            if x.ndim < 2 or x.shape[0] != batch:
                raise ModelError(f"generator file {g_path} returned shape {_shape(x)} for a batch of {batch}.")
            if sample_shape is None:
                sample_shape = tuple(int(s) for s in x.shape[1:])
            elif tuple(x.shape[1:]) != sample_shape:
                raise ModelError(f"generator file {g_path} returns samples of changing shape {list(sample_shape)} and {list(x.shape[1:])}.")
            if x.device != device:
                raise ModelError(f"generator file {g_path} returned samples on {x.device}, not on {device}.")
            if not torch.isfinite(x).all():
                raise ModelError(f"generator file {g_path} returned non-finite values (NaN or inf) for a batch of {batch}.")

            raw = _run(
                discriminator.inner, x, "discriminator", d_path,
                f"the generator's samples of shape {_shape(x)} (the pair does not connect)",
            )
            if not isinstance(raw, torch.Tensor):
                raise ModelError(f"discriminator file {d_path} returned a {type(raw).__name__}, not one tensor.")
            if tuple(raw.shape) not in ((batch,), (batch, 1)):
                raise ModelError(
                    f"discriminator file {d_path} returned shape {_shape(raw)} for {batch} samples; expected [{batch}] or [{batch}, 1]."
                )
            if not raw.is_floating_point():
                raise ModelError(f"discriminator file {d_path} returned {raw.dtype} scores, not floating point.")
            if raw.device != device:
                raise ModelError(f"discriminator file {d_path} returned scores on {raw.device}, not on {device}.")
            if not torch.isfinite(raw).all():
                raise ModelError(f"discriminator file {d_path} returned non-finite scores (NaN or inf).")
            if files.discriminator_output == "probability" and ((raw < 0) | (raw > 1)).any():
                raise ModelError(
                    f"discriminator file {d_path} returned values outside [0, 1] though its output is declared a probability."
                )
    assert sample_shape is not None
    return sample_shape


# --------------------------------------------------------------- real data


# -------------------------------------------------------------------- save


def _export(module: nn.Module, example: torch.Tensor, what: str) -> bytes:
    """torch.export with a dynamic batch dimension (minimum 1), serialised to bytes."""
    # Dim.DYNAMIC would let export assume a batch of at least 2; min=1 keeps batch 1 legal.
    batch = torch.export.Dim("batch", min=1)
    try:
        program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    except Exception as exc:
        raise ModelError(f"the {what} cannot be exported with torch.export ({_short(exc)}).") from exc
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        own = version("mhgan-dist")
    except PackageNotFoundError:
        own = "unknown"
    return {"mhgan_dist": own, "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}


def save_model_dir(
    directory: str | os.PathLike[str],
    generator: nn.Module,
    discriminator: nn.Module,
    *,
    latent_dim: int,
    sample_shape: Sequence[int],
    real: np.ndarray,
    metadata: dict[str, Any],
    extra_discriminators: dict[str, nn.Module] | None = None,
) -> Path:
    """Write a model directory and return its path.

    G and D are exported from CPU copies in eval mode (the caller's modules are
    untouched) with a dynamic batch dimension of minimum 1, to
    ``generator.pt2`` and ``discriminator.pt2``; ``real`` (float32
    ``[N, *sample_shape]``) goes to ``real.npy``; ``model.json`` gets
    ``metadata`` (dataset, architecture, epochs, seed, ...) plus ``format``,
    ``latent_dim``, ``sample_shape``, ``discriminator_output`` ("logit"),
    library ``versions`` and each file's ``sha256`` and size. The written pair is
    loaded back and checked with :func:`load_pair`. ``extra_discriminators``
    maps file names (e.g. ``discriminator-joint.pt2``) to more D's exported
    the same way and listed in ``files``, kept for comparison only.
    """
    _check_options(latent_dim, None)
    shape = tuple(int(s) for s in sample_shape)
    real = np.ascontiguousarray(real, dtype=np.float32)
    if real.ndim < 2 or real.shape[1:] != shape or len(real) == 0:
        raise ConfigError(f"the real samples have shape {list(real.shape)}, not [N, {', '.join(map(str, shape))}] with N >= 1.")
    out = Path(directory).expanduser()
    out.mkdir(parents=True, exist_ok=True)

    g = copy.deepcopy(generator).cpu().eval()
    d = copy.deepcopy(discriminator).cpu().eval()
    example = torch.randn(2, latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        samples = g(example)
        if tuple(samples.shape[1:]) != shape:
            raise ConfigError(f"the generator makes samples of shape {list(samples.shape[1:])}, not {list(shape)}.")
    blobs = {"generator.pt2": _export(g, example, "generator"), "discriminator.pt2": _export(d, samples, "discriminator")}
    for name, extra in (extra_discriminators or {}).items():
        if name in (*blobs, "real.npy", "model.json") or not name.endswith(".pt2") or "/" in name:
            raise ConfigError(f"an extra discriminator cannot be saved as {name!r}.")
        blobs[name] = _export(copy.deepcopy(extra).cpu().eval(), samples, "discriminator")
    for name, blob in blobs.items():
        _write_atomic(out / name, blob)
    buffer = io.BytesIO()
    np.save(buffer, real, allow_pickle=False)
    _write_atomic(out / "real.npy", buffer.getvalue())

    _write_model_json(out, metadata, latent_dim, shape, len(real), (*blobs, "real.npy"))

    loaded = load_pair(resolve_model(out))
    with torch.inference_mode():
        expected = d(samples)
        got = loaded.discriminator(loaded.generator(example))
    if loaded.sample_shape != shape or not torch.allclose(got, expected.reshape(-1), rtol=1e-4, atol=1e-5):
        raise ModelError(f"the exported pair in {out} does not reproduce the eager models' outputs.")
    return out


# ------------------------------------------------- a new D beside the joint one

JOINT_DISCRIMINATOR_STEM = "discriminator-joint"


def joint_discriminator(files: ModelFiles) -> tuple[Path, str]:
    """(file, output kind) of a model's jointly trained D.

    A directory written by :func:`save_with_discriminator` keeps it as
    ``discriminator-joint.pt2|.pt`` (its output kind recorded in model.json's
    ``discriminators`` entry); any other model's jointly trained D is its
    ``discriminator`` file.
    """
    directory = files.generator.parent
    for suffix in PROGRAM_SUFFIXES:
        candidate = directory / f"{JOINT_DISCRIMINATOR_STEM}{suffix}"
        if candidate.is_file():
            entry = (files.metadata.get("discriminators") or {}).get(candidate.name) or {}
            output = entry.get("discriminator_output", "logit") if isinstance(entry, dict) else "logit"
            if output not in DISCRIMINATOR_OUTPUTS:
                raise ModelError(f"model file {directory / 'model.json'} has an unknown discriminator_output {output!r}.")
            return candidate, output
    return files.discriminator, files.discriminator_output


def joint_discriminator_name(files: ModelFiles) -> str:
    """The name :func:`save_with_discriminator` gives the kept joint D: ``discriminator-joint.pt2`` or ``.pt``."""
    path, _ = joint_discriminator(files)
    return JOINT_DISCRIMINATOR_STEM + (".pt2" if _is_pt2_archive(path) else ".pt")


def check_new_model_dir(directory: str | os.PathLike[str], source: ModelFiles, *, overwrite: bool = False) -> Path:
    """``directory`` as a Path if :func:`save_with_discriminator` may write there, else OutputError.

    Refused: the source model's own directory, a file, and a non-empty
    directory unless ``overwrite``.
    """
    out = Path(directory).expanduser()
    if out.exists() and out.resolve() == source.generator.parent.resolve():
        raise OutputError(f"output {out} is the source model's own directory; write the new model elsewhere.")
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} exists and is not a directory.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputError(f"output directory {out} is not empty; pass --overwrite to replace it.")
    return out


def save_with_discriminator(
    directory: str | os.PathLike[str],
    source: ModelFiles,
    discriminator: nn.Module,
    *,
    latent_dim: int,
    real: np.ndarray,
    metadata: dict[str, Any],
    overwrite: bool = False,
    real_file: str | os.PathLike[str] | None = None,
) -> Path:
    """Write a model directory pairing ``source``'s generator with a new ``discriminator``, keeping the joint D.

    The generator file and the jointly trained D (:func:`joint_discriminator`)
    are copied byte for byte, the latter as :func:`joint_discriminator_name`;
    ``discriminator`` (float32 ``[B, *sample_shape]`` -> ``[B]`` logits) is
    exported from a CPU copy in eval mode to ``discriminator.pt2``; ``real``
    goes to ``real.npy``, unless ``real_file`` (a ``real.npy|.npz|.parquet``
    file holding the same samples, e.g. the source's own) is given: it is then
    copied byte for byte under its name; ``model.json`` gets ``metadata`` plus the format
    fields, ``discriminator_output`` "logit" and every file's sha256. The
    directory is assembled beside ``directory`` and moved into place only
    after it loads with :func:`load_pair` and the exported D reproduces the
    eager one, so a failure leaves nothing half-written. An existing model in
    ``directory`` is replaced only with ``overwrite``; ``directory`` may not be
    the source's own. Raises ConfigError, ModelError or OutputError.
    """
    _check_options(latent_dim, None)
    out = check_new_model_dir(directory, source, overwrite=overwrite)
    joint_path, _ = joint_discriminator(source)
    joint_name = joint_discriminator_name(source)
    g_name = "generator" + (".pt2" if _is_pt2_archive(source.generator) else ".pt")
    real = np.ascontiguousarray(real, dtype=np.float32)
    if real.ndim < 2 or len(real) == 0:
        raise ConfigError(f"the real samples have shape {list(real.shape)}, not [N, *sample_shape] with N >= 1.")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        shutil.copyfile(source.generator, tmp / g_name)
        shutil.copyfile(joint_path, tmp / joint_name)
        d = copy.deepcopy(discriminator).cpu().eval()
        example = torch.from_numpy(real[np.arange(2) % len(real)])
        _write_atomic(tmp / "discriminator.pt2", _export(d, example, "discriminator"))
        if real_file is not None and Path(real_file).name in REAL_NAMES and Path(real_file).is_file():
            real_name = Path(real_file).name
            shutil.copyfile(real_file, tmp / real_name)
        else:
            real_name = "real.npy"
            buffer = io.BytesIO()
            np.save(buffer, real, allow_pickle=False)
            _write_atomic(tmp / real_name, buffer.getvalue())
        names = (g_name, "discriminator.pt2", joint_name, real_name)
        _write_model_json(tmp, metadata, latent_dim, real.shape[1:], len(real), names)

        loaded = load_pair(resolve_model(tmp))
        if loaded.sample_shape != tuple(real.shape[1:]):
            raise ConfigError(
                f"the real samples have shape {list(real.shape[1:])}, but the generator makes {list(loaded.sample_shape)}."
            )
        with torch.inference_mode():
            samples = loaded.generator(torch.randn(3, loaded.latent_dim, generator=torch.Generator().manual_seed(0)))
            expected = d(samples).reshape(-1)
            got = loaded.discriminator(samples)
        if not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
            raise ModelError(f"the exported discriminator in {out} does not reproduce the eager model's outputs.")
        if out.is_dir():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def gan_discriminator(files: ModelFiles, device: str | torch.device = "cpu") -> nn.Module:
    """The model's jointly trained D as a trainable eager module of its own GAN architecture.

    An exported program cannot be trained further, so the network is rebuilt
    with :func:`mhgan_dist.models.architectures.build_pair` from model.json
    (``training.config.architecture`` and ``width``, ``latent_dim``,
    ``sample_shape``: what ``jobs.train`` records) and given the state dict of
    :func:`joint_discriminator`'s file (weights and buffers, batch-norm running
    statistics included, loaded strictly). The rebuilt D must reproduce the
    file's logits in eval mode on a few inputs of ``sample_shape``. Returns
    it on ``device``, in eval mode, float32 ``[B, *sample_shape]`` -> ``[B]``
    logits, every parameter requiring grad. Raises ConfigError when model.json
    does not name a reference architecture (a user's own GAN: its D cannot be
    retrained without its code) and ModelError when the weights do not fit it.
    """
    from mhgan_dist.models.architectures import ARCHITECTURES, build_pair

    config = (files.metadata.get("training") or {}).get("config") or {}
    architecture, width = config.get("architecture"), config.get("width")
    shape, latent_dim = files.metadata.get("sample_shape"), files.latent_dim
    where = files.generator.parent / "model.json"
    if architecture not in ARCHITECTURES or not isinstance(shape, list) or latent_dim is None:
        raise ConfigError(
            f"{where} does not record a reference GAN architecture (training.config.architecture, sample_shape, "
            f"latent_dim), so its discriminator cannot be rebuilt for a refit; fit a fresh ratio classifier instead."
        )
    path, output = joint_discriminator(files)
    if output != "logit":
        raise ModelError(f"discriminator file {path} returns probabilities; a refit needs the GAN's own logit D.")
    _, discriminator = build_pair(architecture, shape, latent_dim=latent_dim, width=width)
    program, _, _ = _load_program(path, "discriminator", torch.device("cpu"))
    try:
        discriminator.load_state_dict(program.state_dict(), strict=True)
    except RuntimeError as exc:
        raise ModelError(
            f"discriminator file {path} does not hold the weights of the {architecture} discriminator that {where} "
            f"describes ({_short(exc)})."
        ) from exc
    discriminator.eval()
    probe = torch.randn(3, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        rebuilt = discriminator(probe).reshape(-1)
        exported = _run(program, probe, "discriminator", path, "a probe batch").reshape(-1).float()
    if not torch.allclose(rebuilt, exported, rtol=1e-4, atol=1e-4):
        raise ModelError(f"the {architecture} discriminator rebuilt from {where} does not reproduce {path}'s logits.")
    for parameter in discriminator.parameters():
        parameter.requires_grad_(True)
    return discriminator.to(device)

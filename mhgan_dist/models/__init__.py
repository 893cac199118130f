"""Generator/discriminator models: reference architectures and model files.

``files`` finds a model's files and reads its real samples (no torch);
``metadata`` reads ``model.json`` and knows the shipped models (no torch);
``artifacts`` loads, validates and saves the programs; ``architectures``
holds the reference networks the training job builds. The names from the
last two are imported on first use, so that a process that only plans a run
(the job's driver) never imports torch.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from mhgan_dist.models.metadata import SHIPPED_MODELS, checkpoints_dir
from mhgan_dist.models.files import (
    DISCRIMINATOR_OUTPUTS,
    ModelFiles,
    check_sample_shape,
    load_real_samples,
    model_fingerprint,
    resolve_model,
    sha256_file,
)

if TYPE_CHECKING:  # what the lazy names below resolve to, for type checkers and editors
    from mhgan_dist.models.architectures import (
        ARCHITECTURES,
        DCGANDiscriminator,
        DCGANGenerator,
        MLPDiscriminator,
        MLPGenerator,
        build_pair,
    )
    from mhgan_dist.models.artifacts import LoadedPair, load_pair, save_model_dir

_WITH_TORCH = {
    "ARCHITECTURES": "architectures",
    "DCGANDiscriminator": "architectures",
    "DCGANGenerator": "architectures",
    "MLPDiscriminator": "architectures",
    "MLPGenerator": "architectures",
    "build_pair": "architectures",
    "LoadedPair": "artifacts",
    "load_pair": "artifacts",
    "save_model_dir": "artifacts",
}


def __getattr__(name: str) -> Any:
    module = _WITH_TORCH.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ARCHITECTURES",
    "DISCRIMINATOR_OUTPUTS",
    "SHIPPED_MODELS",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "LoadedPair",
    "MLPDiscriminator",
    "MLPGenerator",
    "ModelFiles",
    "build_pair",
    "check_sample_shape",
    "checkpoints_dir",
    "load_pair",
    "load_real_samples",
    "model_fingerprint",
    "resolve_model",
    "save_model_dir",
    "sha256_file",
]

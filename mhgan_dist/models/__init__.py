"""Generator/discriminator models: reference architectures and model files.

``artifacts`` owns the files (find, load, validate, save); ``architectures``
holds the reference networks the training job builds.
"""

from mhgan_dist.models.architectures import (
    ARCHITECTURES,
    DCGANDiscriminator,
    DCGANGenerator,
    MLPDiscriminator,
    MLPGenerator,
    build_pair,
)
from mhgan_dist.models.artifacts import (
    DISCRIMINATOR_OUTPUTS,
    SHIPPED_MODELS,
    LoadedPair,
    ModelFiles,
    check_sample_shape,
    checkpoints_dir,
    load_pair,
    load_real_samples,
    resolve_model,
    save_model_dir,
    sha256_file,
)

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
    "resolve_model",
    "save_model_dir",
    "sha256_file",
]

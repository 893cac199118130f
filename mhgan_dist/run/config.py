"""Typed configuration of a run, one frozen dataclass per concern.

Jobs build a :class:`JobConfig` from flags and an optional YAML/TOML file of
the same options (flags win; unknown keys are refused). ``run_identity()`` is
what makes two runs "the same config": everything that can change the output
rows or the file layout, and nothing that only changes how fast it is made.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mhgan_dist.errors import ConfigError, first_line

__all__ = [
    "ModelConfig",
    "SamplingConfig",
    "ResourceConfig",
    "OutputConfig",
    "JobConfig",
    "PICKER_NAMES",
    "CALIBRATION_METHODS",
    "load_config_file",
    "build_job_config",
    "config_differences",
]

PICKER_NAMES = ("mh", "drs", "base")
# Calibrations fitted per run (mhgan_dist.core.calibrators.CALIBRATORS); anything else is a saved .json.
CALIBRATION_METHODS = ("isotonic", "isotonic-capped", "platt", "beta", "none")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ModelConfig:
    """Which generator/discriminator pair, and the held-out real samples."""

    model: str | None = "grid2d"
    generator: str | None = None
    discriminator: str | None = None
    latent_dim: int | None = None
    real: str | None = None
    discriminator_output: str = "logit"

    def validate(self) -> None:
        if (self.generator is None) != (self.discriminator is None):
            raise ConfigError("--generator and --discriminator must be given together")
        if self.latent_dim is not None and self.latent_dim < 1:
            raise ConfigError(f"--latent-dim must be at least 1, got {self.latent_dim}")
        if self.discriminator_output not in ("logit", "probability"):
            raise ConfigError(
                f"--discriminator-output must be logit or probability, got {self.discriminator_output!r}"
            )


@dataclass(frozen=True)
class SamplingConfig:
    """What is sampled: counts, chain length, picker, calibration, seed.

    calibration: "isotonic", "isotonic-capped", "platt", "beta", "none", or a path to a
    saved calibration JSON.
    calibration_draws: generated draws for the fit; None = as many as real samples.
    thin: None for the paper's independent chains (one output per chain of
    ``chain_length`` proposals); an int T >= 1 or "auto" for long chains that
    emit every T-th state (mhgan_dist.core.thinning), ``outputs_per_chain`` each.
    repeat_budget: with thin="auto", the largest expected share of outputs that
    repeat their predecessor, in (0, 1). thin_pilot_draws: generated draws,
    kept out of the calibration fit, from which that share is estimated.
    odds_power: b in (0, 1], tempering: MH's (and DRS's) target is p_G x odds^b;
    1 is the paper's. odds_cap_quantile: None, or q in (0, 1]: the chains' odds
    are capped at the q-quantile of the generated calibration draws' calibrated
    odds (mhgan_dist.core.pickers). Neither applies to the base picker.
    """

    num_samples: int = 10_000
    chain_length: int = 640
    picker: str = "mh"
    calibration: str = "isotonic"
    seed: int = 0
    calibration_draws: int | None = None
    drs_pilot_draws: int = 10_000
    drs_gamma_percentile: float = 95.0
    thin: int | str | None = None
    repeat_budget: float = 0.01
    outputs_per_chain: int = 64
    thin_pilot_draws: int = 20_000
    odds_power: float = 1.0
    odds_cap_quantile: float | None = None

    def validate(self) -> None:
        if self.num_samples < 1:
            raise ConfigError(f"--num-samples must be at least 1, got {self.num_samples}")
        if self.chain_length < 1:
            raise ConfigError(f"--chain-length must be at least 1, got {self.chain_length}")
        if self.picker not in PICKER_NAMES:
            raise ConfigError(f"--picker must be one of {', '.join(PICKER_NAMES)}, got {self.picker!r}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"--seed must be in [0, 2**63), got {self.seed}")
        if self.calibration_draws is not None and self.calibration_draws < 2:
            raise ConfigError(f"--calibration-draws must be at least 2, got {self.calibration_draws}")
        if self.drs_pilot_draws < 1:
            raise ConfigError(f"--drs-pilot-draws must be at least 1, got {self.drs_pilot_draws}")
        if not 0.0 <= self.drs_gamma_percentile <= 100.0:
            raise ConfigError(
                f"--drs-gamma-percentile must be in [0, 100], got {self.drs_gamma_percentile}"
            )
        if self.calibration not in CALIBRATION_METHODS and not self.calibration.endswith(".json"):
            raise ConfigError(
                f"--calibration must be one of {', '.join(CALIBRATION_METHODS)} or a path to a .json file, "
                f"got {self.calibration!r}"
            )
        if self.thin is not None:
            if self.thin != "auto" and not (isinstance(self.thin, int) and self.thin >= 1):
                raise ConfigError(f"--thin must be an integer >= 1 or auto, got {self.thin!r}")
            if self.picker != "mh":
                raise ConfigError(f"--thin runs long MH chains; it cannot be used with --picker {self.picker}")
        if not 0.0 < self.repeat_budget < 1.0:
            raise ConfigError(f"--repeat-budget must be in (0, 1), got {self.repeat_budget}")
        if self.outputs_per_chain < 1:
            raise ConfigError(f"--outputs-per-chain must be at least 1, got {self.outputs_per_chain}")
        if self.thin_pilot_draws < 2:
            raise ConfigError(f"--thin-pilot-draws must be at least 2, got {self.thin_pilot_draws}")
        if not 0.0 < self.odds_power <= 1.0:  # also refuses NaN
            raise ConfigError(f"--odds-power must be in (0, 1], got {self.odds_power}")
        if self.odds_cap_quantile is not None and not 0.0 < self.odds_cap_quantile <= 1.0:
            raise ConfigError(f"--odds-cap-quantile must be in (0, 1], got {self.odds_cap_quantile}")
        if self.picker == "base" and (self.odds_power != 1.0 or self.odds_cap_quantile is not None):
            raise ConfigError("--odds-power and --odds-cap-quantile change the chains' target; "
                              "the base picker runs no chain, so leave them at their defaults with --picker base")

    @property
    def thinned(self) -> bool:
        return self.thin is not None

    @property
    def num_proposals(self) -> int:
        """Proposals of the independent chains; a thinned run's count is known once T is (ChainLayout)."""
        return self.num_samples * self.chain_length


@dataclass(frozen=True)
class ResourceConfig:
    """How the work is spread; never changes the output rows.

    num_actors: proposal actors; None = one per GPU when the cluster has GPUs,
    else one per CPU core of every node (``floor(node CPUs)`` each).
    gpus_per_actor: GPUs per actor; None = 1 when the cluster has GPUs, else 0.
    cpus_per_actor: CPUs each actor asks Ray for; None = 1, so that a node of
    N cores holds N actors (nothing else the job runs asks Ray for CPU).
    torch_threads: intra-op threads per actor; None = ``max(1, floor(cpus_per_actor))``
    (one thread for the default actor).
    batch_size: proposals per G+D forward pass; None = a default per device.
    precision: "auto" (fp32 on CPU; bf16/fp16 on CUDA when D's probabilities
    agree with fp32 within 0.01), or "fp32", "bf16", "fp16".
    resource_timeout: seconds a run may wait, making no progress, for capacity
    the cluster does not have (actors that cannot be placed) before it stops;
    0 waits forever.
    progress_watch_interval: seconds between the lines that say what waits
    while nothing progresses.
    """

    num_actors: int | None = None
    gpus_per_actor: float | None = None
    cpus_per_actor: float | None = None
    torch_threads: int | None = None
    batch_size: int | None = None
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    max_in_flight_per_actor: int = 2
    resource_timeout: float = 1200.0
    progress_watch_interval: float = 30.0

    def validate(self) -> None:
        if self.num_actors is not None and self.num_actors < 1:
            raise ConfigError(f"--num-actors must be at least 1, got {self.num_actors}")
        if self.gpus_per_actor is not None and (self.gpus_per_actor < 0 or not math.isfinite(self.gpus_per_actor)):
            raise ConfigError(f"--gpus-per-actor must be >= 0, got {self.gpus_per_actor}")
        if self.cpus_per_actor is not None and (self.cpus_per_actor <= 0 or not math.isfinite(self.cpus_per_actor)):
            raise ConfigError(f"--cpus-per-actor must be > 0, got {self.cpus_per_actor}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ConfigError(f"--torch-threads must be at least 1, got {self.torch_threads}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.device not in DEVICES:
            raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"--precision must be one of auto, fp32, bf16, fp16, got {self.precision!r}")
        if self.max_in_flight_per_actor < 1:
            raise ConfigError("--max-in-flight-per-actor must be at least 1")
        if self.resource_timeout < 0 or not math.isfinite(self.resource_timeout):
            raise ConfigError(f"--resource-timeout must be >= 0 seconds (0 waits forever), got {self.resource_timeout}")
        if self.progress_watch_interval <= 0 or not math.isfinite(self.progress_watch_interval):
            raise ConfigError(f"--progress-watch-interval must be > 0 seconds, got {self.progress_watch_interval}")

    @property
    def actor_cpus(self) -> float:
        """CPUs one actor asks Ray for."""
        return self.cpus_per_actor if self.cpus_per_actor is not None else 1.0


@dataclass(frozen=True)
class OutputConfig:
    """Where and how the run is written.

    shard_chains: chains per proposal shard and per output part (file layout).
    """

    output: str = ""
    shard_chains: int | None = None
    store_proposal_samples: bool = False
    report: bool = False

    def validate(self) -> None:
        if not self.output:
            raise ConfigError("--output is required")
        if self.shard_chains is not None and self.shard_chains < 1:
            raise ConfigError(f"--shard-chains must be at least 1, got {self.shard_chains}")


# The options of the thinned chain mode (used only when thin is set).
THINNING_OPTIONS = ("thin", "repeat_budget", "outputs_per_chain", "thin_pilot_draws")
# Options added after runs were first recorded, with the value that reproduces the runs made before them.
ODDS_OPTION_DEFAULTS = {"odds_power": 1.0, "odds_cap_quantile": None}

# Proposals per shard the default layout aims at: about 1 MiB of scores.
DEFAULT_SHARD_PROPOSALS = 262_144
# Fewest shards the default layout aims at: with fewer, the last shards of a small
# run leave actors idle (2 shards on 2 actors left one idle 22% of a dcgan32 run).
MIN_SHARDS = 64


@dataclass(frozen=True)
class JobConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    resources: ResourceConfig = field(default_factory=ResourceConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def validate(self) -> "JobConfig":
        self.model.validate()
        self.sampling.validate()
        self.resources.validate()
        self.output.validate()
        return self

    @property
    def shard_chains(self) -> int:
        """Chains per shard of the independent chains (``chain_length`` proposals each)."""
        return self.shard_chains_for(self.sampling.chain_length, self.sampling.num_samples)

    def shard_chains_for(self, chain_proposals: int, num_chains: int) -> int:
        """Chains per shard and part for ``num_chains`` chains of ``chain_proposals`` proposals each.

        The default aims at DEFAULT_SHARD_PROPOSALS per shard, and at no fewer
        than MIN_SHARDS shards, so that a small run still spreads evenly over
        the actors. It depends on the run's size only, never on its resources.
        """
        if self.output.shard_chains is not None:
            return self.output.shard_chains
        by_size = max(1, DEFAULT_SHARD_PROPOSALS // chain_proposals)
        by_count = max(1, -(-num_chains // MIN_SHARDS))
        return min(by_size, by_count)

    def run_identity(
        self,
        *,
        batch_size: int,
        precision: str,
        model_fingerprint: str,
        device: str | None = None,
        real_sha256: str | None = None,
        calibration_sha256: str | None = None,
    ) -> dict[str, Any]:
        """The options that define a run's output; resource options are left out.

        The resolved ``batch_size``, ``precision`` and ``device`` type ("cpu"
        or "cuda") are in: G and D run on batches aligned to proposal indices,
        and another batch size, precision or device type may change the low
        bits of scores. ``real_sha256`` fingerprints the content of the real
        samples used (the model fingerprint covers G and D only);
        ``calibration_sha256`` the content of a saved calibration file (None
        for a calibration fitted by the run).
        """
        sampling = dataclasses.asdict(self.sampling)
        if not self.sampling.thinned:
            # Absent rather than at their defaults: runs recorded before thinning existed stay the same config.
            for name in THINNING_OPTIONS:
                del sampling[name]
        for name, default in ODDS_OPTION_DEFAULTS.items():
            if sampling[name] == default:
                del sampling[name]  # likewise: runs recorded before tempering and clipping existed
        return {
            "model_fingerprint": model_fingerprint,
            **{f"sampling.{k}": v for k, v in sampling.items()},
            # A thinned run's chain length, hence its default layout, follows from T.
            "output.shard_chains": self.output.shard_chains if self.sampling.thinned else self.shard_chains,
            "output.store_proposal_samples": self.output.store_proposal_samples,
            "resources.batch_size": batch_size,
            "resources.precision": precision,
            "resources.device": device,
            "model.real_sha256": real_sha256,
            "sampling.calibration_sha256": calibration_sha256,
        }

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Identity keys added after runs were first recorded: a recorded identity without
# one cannot be checked on it, and is compared on the rest.
LATER_IDENTITY_KEYS = ("resources.device", "model.real_sha256", "sampling.calibration_sha256")


def config_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Names of the options whose values differ between two run identities."""
    keys = sorted(set(recorded) | set(current))
    return [k for k in keys if recorded.get(k) != current.get(k)
            and not (k in LATER_IDENTITY_KEYS and k not in recorded)]


# Option name (as in flags, with underscores) -> (section, field).
OPTION_FIELDS: dict[str, tuple[str, str]] = {
    f.name: (section, f.name)
    for section, cls in (("model", ModelConfig), ("sampling", SamplingConfig),
                         ("resources", ResourceConfig), ("output", OutputConfig))
    for f in fields(cls)
}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Reads a flat YAML or TOML mapping of options; keys may use - or _.

    YAML goes through the safe loader, so tags that would build Python objects
    are refused.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"config file {path} must end in .yaml, .yml or .toml")
    except ConfigError:
        raise
    except Exception as exc:  # yaml.YAMLError, tomllib.TOMLDecodeError
        raise ConfigError(f"config file {path} cannot be parsed: {first_line(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of options")
    options = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in OPTION_FIELDS and name != "config":
            raise ConfigError(f"config file {path} has an unknown option {key!r}")
        options[name] = value
    return options


def build_job_config(options: dict[str, Any]) -> JobConfig:
    """A validated JobConfig from a flat mapping of option name -> value."""
    sections: dict[str, dict[str, Any]] = {"model": {}, "sampling": {}, "resources": {}, "output": {}}
    for name, value in options.items():
        if name not in OPTION_FIELDS:
            raise ConfigError(f"unknown option {name!r}")
        if name == "thin" and isinstance(value, str) and value.strip().isdigit():
            value = int(value)  # --thin 8 arrives as text
        section, attr = OPTION_FIELDS[name]
        sections[section][attr] = value
    try:
        config = JobConfig(
            model=ModelConfig(**sections["model"]),
            sampling=SamplingConfig(**sections["sampling"]),
            resources=ResourceConfig(**sections["resources"]),
            output=OutputConfig(**sections["output"]),
        )
    except TypeError as exc:
        raise ConfigError(f"invalid options: {exc}") from None
    _check_types(config)
    return config.validate()


def _check_types(config: JobConfig) -> None:
    for section in (config.model, config.sampling, config.resources, config.output):
        for f in fields(section):
            value = getattr(section, f.name)
            expected = f.type if isinstance(f.type, str) else str(f.type)
            if value is None:
                if "None" not in expected:
                    raise ConfigError(f"option {f.name} must not be empty")
                continue
            members = [m.strip() for m in expected.split("|")]
            ok = any(
                (m == "int" and isinstance(value, int) and not isinstance(value, bool))
                or (m == "float" and isinstance(value, (int, float)) and not isinstance(value, bool))
                or (m == "str" and isinstance(value, str))
                or (m == "bool" and isinstance(value, bool))
                for m in members
            )
            if not ok:
                raise ConfigError(f"option {f.name} has the wrong type: {value!r}")

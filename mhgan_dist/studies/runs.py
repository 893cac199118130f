"""The pipeline runs a study makes or reuses, and the study's progress log.

A study names each run by its folder: :func:`run_config` builds the job config
of one (model, picker, seed, n, K, calibration, odds options), and
:func:`ensure_run` makes it with the pipeline's driver unless the folder holds a
complete run of the same sampling settings. Ray must already be started (or
joined) when a run is made; a reused run needs no Ray.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mhgan_dist.errors import ConfigError, InputError
from mhgan_dist.run.config import ODDS_OPTION_DEFAULTS, JobConfig, build_job_config
from mhgan_dist.run.record import RecordedRun, read_run

__all__ = ["StudyLog", "ChainOptions", "run_config", "ensure_run", "recorded_run", "complete_run"]


class StudyLog:
    """Progress lines on stderr, each with the seconds since the log was made; silent when ``quiet``."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.started:7.1f} s] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ChainOptions:
    """The chains' calibration (a method's name or a saved .json), tempering b and odds cap quantile."""

    calibration: str = "isotonic"
    odds_power: float = 1.0
    odds_cap_quantile: float | None = None

    def check(self) -> None:
        """ConfigError (one sentence) for a value the pipeline refuses."""
        build_job_config({"output": "unused", **self.to_json()})

    def to_json(self) -> dict[str, str | float | None]:
        return {"calibration": self.calibration, "odds_power": self.odds_power,
                "odds_cap_quantile": self.odds_cap_quantile}


def run_config(model: Path | str, output: Path, *, picker: str, seed: int, num_samples: int, chain_length: int,
               calibration: str = "isotonic", num_actors: int | None = None, odds_power: float = 1.0,
               odds_cap_quantile: float | None = None) -> JobConfig:
    """The job config of one run into ``output``; base runs carry no odds options (they use none)."""
    resources = {} if num_actors is None else {"num_actors": num_actors}
    odds = {} if picker == "base" else {"odds_power": odds_power, "odds_cap_quantile": odds_cap_quantile}
    return build_job_config({
        "model": str(model), "output": str(output), "picker": picker, "seed": seed, "num_samples": num_samples,
        "chain_length": chain_length, "calibration": calibration, **resources, **odds,
    })


def recorded_run(path: Path) -> RecordedRun | None:
    """The record of the run in ``path``, finished or not; None when the folder holds none."""
    try:
        return read_run(str(path))
    except InputError:
        return None


def complete_run(path: Path) -> RecordedRun | None:
    """The record of the complete run in ``path``; None when the folder holds none (yet)."""
    run = recorded_run(path)
    return run if run is not None and run.complete else None


def ensure_run(config: JobConfig, log: Callable[[str], None], source: Path | None = None) -> None:
    """Makes the run of ``config`` (re-picking ``source``'s proposals when given), or reuses a complete one.

    A complete run in the output folder is reused when its sampling settings are
    ``config``'s, without the driver: its identity check would also refuse runs
    made before a change of the run format that does not affect the rows a study
    compares. ConfigError when the folder holds a run of other settings.
    """
    out = Path(config.output.output)
    recorded = complete_run(out)
    if recorded is not None:
        # Runs recorded before the odds options existed ran at their defaults.
        sampling = {**ODDS_OPTION_DEFAULTS, **recorded.config["sampling"]}
        if sampling != dataclasses.asdict(config.sampling):
            raise ConfigError(f"{out} holds a run of other settings; remove it or use another --work")
        log(f"reusing the complete run {out}")
        return
    from mhgan_dist.pipeline.driver import run_job  # Ray: only when a run is made

    summary = run_job(config, source_run=None if source is None else str(source), show_progress=False,
                      log=lambda message: None)
    log(summary.lines()[0] + f" ({summary.seconds:.1f} s)")

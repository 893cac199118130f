"""The experiments of ``jobs.reproduce``, by name: one settings object, and the study each name runs.

grid2d, mixture1d: :func:`mhgan_dist.studies.paper.toy_experiment`;
chain-length: :func:`mhgan_dist.studies.paper.chain_length_study`;
calibrator-study: :func:`mhgan_dist.studies.calibrator.run_study`;
digits-classifier, fashion-classifier: :func:`mhgan_dist.studies.classifiers.train_classifier`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mhgan_dist.errors import ConfigError
from mhgan_dist.studies import calibrator, paper
from mhgan_dist.studies.classifiers import ClassifierTraining, train_classifier
from mhgan_dist.studies.runs import ChainOptions, StudyLog

__all__ = ["EXPERIMENTS", "Experiment", "run_experiment"]

EXPERIMENTS = ("grid2d", "mixture1d", "chain-length", "calibrator-study", "digits-classifier",
               "fashion-classifier")


@dataclass(frozen=True)
class Experiment:
    """What ``jobs.reproduce`` was asked to run: the experiment's name and every setting, one per flag
    (see its help). Paths are as given (``~`` not expanded yet); None: not given. ``command`` is the
    argument list, quoted in the calibrator study's results.
    """

    experiment: str
    work: str | None
    models: str | None
    model: str
    epochs: tuple[int, ...]
    seeds: tuple[int, ...]
    num_samples: int
    chain_length: int
    lengths: tuple[int, ...]
    num_actors: int | None
    calibration: str
    odds_power: float
    odds_cap_quantile: float | None
    discriminators: str | None
    calibrations: tuple[str, ...]
    odds_powers: tuple[float, ...]
    confirm: str | None
    train_seed: int
    output: str | None
    classifier_epochs: int | None
    data_root: str | None
    torch_threads: int
    quiet: bool
    command: tuple[str, ...] = ()


def _path(text: str | None) -> Path | None:
    return None if text is None else Path(text).expanduser()


def run_experiment(config: Experiment, *, start_ray: Callable[[], object]) -> None:
    """Runs the named experiment; ``start_ray`` starts or joins Ray, called only before runs are made.

    ConfigError (one sentence) for a bad calibration or odds setting, checked
    before any training or run, and for a missing work folder.
    """
    log = StudyLog(config.quiet)
    if config.experiment in ("digits-classifier", "fashion-classifier"):
        train_classifier(ClassifierTraining(config.experiment.removesuffix("-classifier"), _path(config.output),
                                            config.classifier_epochs, config.train_seed, config.data_root,
                                            config.torch_threads), log)
        return
    chain = ChainOptions(config.calibration, config.odds_power, config.odds_cap_quantile)
    chain.check()
    if not config.work:
        raise ConfigError("--work DIR is required")
    work = Path(config.work).expanduser()
    if config.experiment == "calibrator-study":
        study = calibrator.CalibratorStudy(work, config.model, config.discriminators, config.calibrations,
                                           config.odds_powers, config.lengths, config.seeds, config.num_samples,
                                           config.confirm, config.num_actors, config.torch_threads, config.command)
        calibrator.run_study(study, start_ray=start_ray, log=log)
    elif config.experiment == "chain-length":
        paper.chain_length_study(paper.ChainLengthStudy(config.model, work, config.lengths, config.seeds,
                                                        config.num_samples, chain, config.num_actors),
                                 start_ray=start_ray, log=log)
    else:
        paper.toy_experiment(paper.ToyExperiment(config.experiment, work, _path(config.models), config.epochs,
                                                 config.seeds, config.num_samples, config.chain_length, chain,
                                                 config.num_actors, config.train_seed),
                             start_ray=start_ray, log=log)

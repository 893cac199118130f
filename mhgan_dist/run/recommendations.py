"""Sampling settings a model directory recommends for itself, in its model.json.

A model's own study can show that the job-wide defaults (K = 640, isotonic,
b = 1) are not the best for it; its model.json may then carry

    "sampling_defaults": {
        "settings": {"calibration": "beta", "odds_power": 0.25, "chain_length": 160},
        "reason": "one sentence: the evidence, e.g. the study table it comes from"
    }

The job fills every recommended option the user did not set (by flag or
config file) and says which it used and why; a flag always wins. Only the
options below may be recommended: they change what is picked, never the
proposals, so a run with and without the recommendation can be re-picked from
the same proposal shards.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mhgan_dist.run.config import JobConfig, ModelConfig, SamplingConfig, build_job_config
from mhgan_dist.errors import ConfigError, ModelError
from mhgan_dist.models.metadata import read_model_json, shipped_or_given_directory

RECOMMENDABLE = ("chain_length", "calibration", "odds_power", "odds_cap_quantile")
"""Options (SamplingConfig fields, named as in the config file) a model may recommend."""

_FLAG = {name: "--" + name.replace("_", "-") for name in RECOMMENDABLE}


@dataclass(frozen=True)
class Recommendation:
    """What a model.json recommends: ``settings`` (option name -> value) and why."""

    settings: dict[str, Any]
    reason: str
    source: str
    """The model.json it was read from."""

    def flags(self, names: tuple[str, ...] | None = None) -> str:
        """``--odds-power 0.25 --calibration beta`` for ``names`` (default: all settings)."""
        return " ".join(f"{_FLAG[n]} {self.settings[n]}" for n in (names or tuple(self.settings)))


def model_recommendation(model: str | os.PathLike[str]) -> Recommendation | None:
    """The recommendation of a shipped model name or model directory; None without one.

    Reads model.json only (no torch): a name that is neither a shipped model
    nor a directory is not an error here, loading the model says so. Raises
    ModelError for a model.json that is not JSON or a malformed block.
    """
    directory = shipped_or_given_directory(model)
    return read_recommendation(read_model_json(directory), directory / "model.json")  # {}: no model.json


def read_recommendation(metadata: dict[str, Any], source: str | Path) -> Recommendation | None:
    """The validated ``sampling_defaults`` block of a model.json's contents, or None if it has none.

    Raises ModelError naming ``source`` when the block is malformed: not an
    object, an option that may not be recommended, a value the job would
    refuse, or a missing reason.
    """
    block = metadata.get("sampling_defaults")
    if block is None:
        return None
    where = f"model file {source}"
    if not isinstance(block, dict) or not isinstance(block.get("settings"), dict):
        raise ModelError(f"{where} has a sampling_defaults that is not an object with a 'settings' object.")
    reason = block.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ModelError(f"{where} has sampling_defaults without a 'reason' saying where they come from.")
    settings = dict(block["settings"])
    unknown = sorted(set(settings) - set(RECOMMENDABLE))
    if unknown:
        raise ModelError(f"{where} recommends {', '.join(unknown)}, but a model may only recommend "
                         f"{', '.join(RECOMMENDABLE)}.")
    if not settings:
        raise ModelError(f"{where} has sampling_defaults with no settings.")
    for name, value in settings.items():
        numeric = name != "calibration"
        if numeric and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
            raise ModelError(f"{where} recommends {name} = {value!r}, which is not a number.")
        if name == "chain_length" and not isinstance(value, int):
            raise ModelError(f"{where} recommends chain_length = {value!r}, which is not a whole number.")
        if name == "calibration" and (not isinstance(value, str) or value.endswith(".json")):
            raise ModelError(f"{where} recommends calibration = {value!r}; it must name a calibration method.")
    try:
        dataclasses.replace(SamplingConfig(), **settings).validate()
    except ConfigError as exc:
        raise ModelError(f"{where} has sampling_defaults the job refuses: {exc}.") from None
    return Recommendation(settings=settings, reason=reason.strip(), source=str(source))


def apply_recommendation(options: dict[str, Any], recommendation: Recommendation | None) -> tuple[str, ...]:
    """Fills, in place, the recommended options absent from ``options``; returns the names it filled.

    Options that do not apply to the run are left out: tempering and the odds
    cap with ``picker="base"``, the chain length with ``thin`` set.
    """
    if recommendation is None:
        return ()
    skipped: set[str] = set()
    if options.get("picker") == "base":
        skipped |= {"odds_power", "odds_cap_quantile"}  # the base picker runs no chain to temper
    if options.get("thin") is not None:
        skipped.add("chain_length")  # thinned chains take their length from T
    filled = tuple(n for n in recommendation.settings if n not in options and n not in skipped)
    for name in filled:
        options[name] = recommendation.settings[name]
    return filled


def recommended_record(recommendation: Recommendation | None, filled: tuple[str, ...]) -> dict[str, Any] | None:
    """What a run records of the recommendation it used (None if it used none), with the line the job prints."""
    if recommendation is None or not filled:
        return None
    overridden = tuple(n for n in recommendation.settings if n not in filled)
    line = f"the model recommends {recommendation.flags(filled)}: {recommendation.reason}"
    if overridden:
        line += f" (your {', '.join(_FLAG[n] for n in overridden)} kept)"
    return {"used": {n: recommendation.settings[n] for n in filled}, "overridden": list(overridden),
            "reason": recommendation.reason, "source": recommendation.source, "line": line}


def recommended_job_config(options: dict[str, Any]) -> tuple[JobConfig, dict[str, Any] | None]:
    """The job config of ``options`` (flag names with underscores; a config file's merged under the
    flags), with the model's recommendation filling the sampling options not given; and the record of
    what it filled (:func:`recommended_record`). A generator given without ``model`` means no shipped
    model. ConfigError for a bad option, ModelError for a malformed recommendation."""
    options = dict(options)
    if "generator" in options and "model" not in options:
        options["model"] = None
    model = options.get("model", ModelConfig().model)
    recommendation = model_recommendation(model) if model is not None else None
    filled = apply_recommendation(options, recommendation)
    return build_job_config(options), recommended_record(recommendation, filled)

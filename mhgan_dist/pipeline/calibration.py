"""The calibration stage: one fit per run, written to ``calibration/``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from mhgan_dist.core import calibrators
from mhgan_dist.core import pickers
from mhgan_dist.core import thinning
from mhgan_dist.errors import InputError, MhganError
from mhgan_dist.run.store import RunStore

__all__ = ["CalibrationOutcome", "calibrate", "load_calibration_file", "CALIBRATOR_PATH", "REPORT_PATH"]

CALIBRATOR_PATH = "calibration/isotonic.json"
REPORT_PATH = "calibration/report.json"
SCORES_PATH = "calibration/scores.parquet"


@dataclass(frozen=True)
class CalibrationOutcome:
    """What the chains need from calibration, and what the report shows."""

    calibrator: dict[str, Any]  # calibrator JSON
    calibration_id: str  # sha256 of the calibrator JSON, 16 hex digits
    pilot_max_raw: float | None  # max raw logit over the DRS pilot draws; None when not drawn
    diagnostics: dict[str, Any]
    thinning: dict[str, Any] | None = None  # thinned chains only: see choose_thinning
    odds_cap: dict[str, float] | None = None  # with --odds-cap-quantile: {"quantile", "logit"}, see calibrate

    @property
    def odds_cap_logit(self) -> float | None:
        return None if self.odds_cap is None else float(self.odds_cap["logit"])

    @property
    def thin(self) -> int | None:
        return None if self.thinning is None else int(self.thinning["thin"])

    def to_json(self) -> dict[str, Any]:
        out = {
            "calibrator": self.calibrator,
            "calibration_id": self.calibration_id,
            "pilot_max_raw": self.pilot_max_raw,
            "diagnostics": self.diagnostics,
            "thinning": self.thinning,
        }
        if self.odds_cap is not None:  # absent without a cap: reports stay as they were
            out["odds_cap"] = self.odds_cap
        return out

    @staticmethod
    def from_json(obj: dict[str, Any]) -> "CalibrationOutcome":
        pilot = obj.get("pilot_max_raw")
        return CalibrationOutcome(obj["calibrator"], obj["calibration_id"], None if pilot is None else float(pilot),
                                  obj["diagnostics"], obj.get("thinning"), obj.get("odds_cap"))


def choose_thinning(
    calibrator: calibrators.Calibrator,
    real_raw: np.ndarray,
    thin_pilot_raw: np.ndarray,
    requested: int | str,
    repeat_budget: float,
    outputs_per_chain: int,
    odds_power: float = 1.0,
    odds_cap_logit: float | None = None,
) -> dict[str, Any]:
    """T for thinned chains and its expected repeat share, from pilot draws kept out of the fit.

    odds_power, odds_cap_logit: the chains' tempering and clipping; the estimates
    use the log-odds the chains compare (mhgan_dist.core.pickers.target_logits).

    requested: T, or "auto" for the smallest T whose expected share (the larger
    of the target's and the real starts' estimate) is within ``repeat_budget``.
    Returns {"requested", "thin", "repeat_budget", "pilot_draws", "mean_acceptance",
    "expected": RepeatEstimate.to_json(), "expected_low"}: the expected share of
    repeats lies in [expected_low, expected.share] (restarted chains repeat less,
    see thinning.restart_dilution). ConfigError when no T fits the budget.
    """
    pilot = pickers.target_logits(calibrator.predict_logit(thin_pilot_raw.astype(np.float64)), odds_power,
                                  odds_cap_logit)
    real = pickers.target_logits(calibrator.predict_logit(real_raw.astype(np.float64)), odds_power, odds_cap_logit)
    thin = thinning.choose_thin(pilot, repeat_budget, calibrated_real_logits=real)[0] if requested == "auto" \
        else int(requested)
    expected = thinning.estimate_repeat_share(pilot, thin, real)
    dilution = thinning.restart_dilution(pilot, thin, outputs_per_chain, real)
    return {
        "requested": requested,
        "thin": thin,
        "repeat_budget": repeat_budget,
        "pilot_draws": int(thin_pilot_raw.size),
        "mean_acceptance": thinning.mean_acceptance(pilot),
        "expected": expected.to_json(),
        "expected_low": max(0.0, expected.share - dilution),
    }


def calibration_id(calibrator_json: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(calibrator_json, sort_keys=True).encode()).hexdigest()[:16]


def load_calibration_file(path: str) -> dict[str, Any]:
    """A saved calibrator's JSON from a local path or URI; InputError if unusable."""
    try:
        store = RunStore(path.rsplit("/", 1)[0] if "/" in path else ".")
        obj = json.loads(store.read_bytes(path.rsplit("/", 1)[-1]))
        calibrators.calibrator_from_json(obj)
    except FileNotFoundError:
        raise InputError(f"calibration file {path} does not exist") from None
    except MhganError as exc:  # the store's own sentence names the location
        raise InputError(f"calibration file {path} cannot be read: {exc}") from None
    except (ValueError, OSError) as exc:  # JSON syntax, or a calibrator's malformed fields
        raise InputError(f"calibration file {path} is not a usable calibration: {exc}") from None
    return obj


def calibrate(
    store: RunStore,
    real_raw: np.ndarray,
    generated_raw: np.ndarray,
    pilot_raw: np.ndarray,
    method: str,
    seed: int,
    saved: dict[str, Any] | None = None,
    thin_pilot_raw: np.ndarray | None = None,
    thin_requested: int | str | None = None,
    repeat_budget: float = thinning.DEFAULT_REPEAT_BUDGET,
    outputs_per_chain: int = thinning.DEFAULT_OUTPUTS_PER_CHAIN,
    odds_power: float = 1.0,
    odds_cap_quantile: float | None = None,
) -> CalibrationOutcome:
    """Fits (or takes ``saved``) the calibrator, chooses T for thinned chains, and writes ``calibration/``.

    real_raw, generated_raw: raw D logits of held-out real samples and of as
    many generated draws no chain uses; pilot_raw: raw logits of the DRS pilot
    (empty when the picker is not DRS); thin_pilot_raw: raw logits of the
    thinning pilot draws (thinned chains only, with ``thin_requested``).
    Diagnostics are cross-fitted for a fitted method, measured directly for a
    saved calibrator. odds_cap_quantile: the chains' odds cap, taken at that
    quantile of the generated draws' calibrated log-odds (``odds_cap`` of the
    outcome); odds_power: the chains' tempering, for the choice of T.
    """
    fitted = calibrators.fitted_calibrator(method, real_raw, generated_raw, saved)
    if saved is not None:
        labels = np.concatenate([np.ones(real_raw.size), np.zeros(generated_raw.size)])
        scores = np.concatenate([real_raw, generated_raw]).astype(np.float64)
        diagnostics = {
            "before": calibrators.calibration_metrics(calibrators.sigmoid(scores), labels).to_json(),
            "after": calibrators.calibration_metrics(fitted.predict_proba(scores), labels).to_json(),
            "method": "saved",
        }
    else:
        diagnostics = {**calibrators.cross_fitted_diagnostics(real_raw, generated_raw, method, seed), "method": method}
    calibrator_json = fitted.to_json()
    odds_cap = None
    if odds_cap_quantile is not None:
        cap = pickers.odds_cap_logit(fitted.predict_logit(generated_raw.astype(np.float64)), odds_cap_quantile)
        odds_cap = {"quantile": float(odds_cap_quantile), "logit": cap}
    thinning_choice = None
    if thin_requested is not None:
        if thin_pilot_raw is None or thin_pilot_raw.size < 2:
            raise ValueError("thinned chains need at least 2 thinning pilot draws")
        thinning_choice = choose_thinning(fitted, real_raw, thin_pilot_raw, thin_requested, repeat_budget,
                                          outputs_per_chain, odds_power,
                                          None if odds_cap is None else odds_cap["logit"])
    outcome = CalibrationOutcome(
        calibrator=calibrator_json,
        calibration_id=calibration_id(calibrator_json),
        pilot_max_raw=float(np.max(pilot_raw)) if pilot_raw.size else None,
        diagnostics={**diagnostics, "num_real": int(real_raw.size), "num_generated": int(generated_raw.size),
                     "num_pilot": int(pilot_raw.size)},
        thinning=thinning_choice,
        odds_cap=odds_cap,
    )
    store.write_table(
        SCORES_PATH,
        pa.table({
            "label": pa.array(np.concatenate([np.ones(real_raw.size), np.zeros(generated_raw.size)]).astype(np.int8)),
            "d_score_raw": pa.array(np.concatenate([real_raw, generated_raw]).astype(np.float32)),
        }),
    )
    store.write_json(CALIBRATOR_PATH, calibrator_json)
    store.write_json(REPORT_PATH, outcome.to_json())
    return outcome

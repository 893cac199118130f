"""Re-picks of a finished run's proposals in this process: no Ray, seconds per setting.

What ``jobs.repick`` does as a Ray job, for many settings of one run: the run's
proposal scores and saved calibration scores are read once, each calibrator is
fitted once on the saved scores (the pipeline's fit: ``fitted_calibrator``
on the held-out real and generated scores, used through its JSON, as the chain
tasks use it), and each (picker, calibrator, b, K) pick runs
:func:`mhgan_dist.pipeline.chains.pick_chains` over all chains at once with the
pipeline's keyed streams. Chain i of a pick at K uses the run's proposals
[i K, (i + 1) K), as a re-pick at K does, so its picks equal those of
``jobs.repick --from RUN --chain-length K`` pick for pick. Picked samples are
rebuilt with :meth:`ProposalWorker.generate` on the run's batch size and
precision.

Reads files and runs G and D (for samples, and for the DRS pilot draws that an
MH run does not score); no Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mhgan_dist.core import calibrators
from mhgan_dist.core import pickers
from mhgan_dist.run.config import CALIBRATION_METHODS, SamplingConfig
from mhgan_dist.errors import ConfigError, InputError
from mhgan_dist.pipeline.calibration import SCORES_PATH
from mhgan_dist.pipeline.chains import ProposalLayout, pick_chains, read_scores
from mhgan_dist.run.record import RunIdentity, read_run
from mhgan_dist.core.streams import Stream

__all__ = ["PickSetting", "LocalPick", "StoredRun"]


@dataclass(frozen=True)
class PickSetting:
    """One re-pick: picker ("mh", "drs", "base"), calibration (a fitted method's name), b, K, odds cap quantile."""

    picker: str
    calibration: str
    chain_length: int
    odds_power: float = 1.0
    odds_cap_quantile: float | None = None

    def validate(self) -> None:
        if self.picker not in pickers.PICKERS:
            raise ConfigError(f"picker must be one of {', '.join(pickers.PICKERS)}, got {self.picker!r}")
        if self.calibration not in CALIBRATION_METHODS:
            raise ConfigError(f"calibration must be one of {', '.join(CALIBRATION_METHODS)}, got {self.calibration!r}")
        if self.chain_length < 1:
            raise ConfigError(f"K must be at least 1, got {self.chain_length}")
        try:
            pickers.check_odds_options(self.odds_power, None)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.odds_cap_quantile is not None and not 0.0 < self.odds_cap_quantile <= 1.0:
            raise ConfigError(f"the odds cap quantile must be in (0, 1], got {self.odds_cap_quantile}")


@dataclass(frozen=True)
class LocalPick:
    """A pick of n chains: what the pipeline's chain part would hold for them.

    proposal_index: int64 [n], the run's proposal each chain emits (i K + picked);
    result: the picker's per-chain arrays. acceptance_rate: accepts / (n K), as
    the run's manifest counts it; restart_rate: share of restarted chains;
    no_accept_share: chains whose emitted pass accepted nothing.
    """

    setting: PickSetting
    proposal_index: np.ndarray
    result: pickers.PickResult

    @property
    def acceptance_rate(self) -> float:
        return float(self.result.accepts.sum() / (self.result.accepts.size * self.setting.chain_length))

    @property
    def restart_rate(self) -> float:
        return float(np.mean(self.result.restarted))

    @property
    def no_accept_share(self) -> float:
        return float(np.mean(self.result.accepts == 0))


@dataclass
class StoredRun:
    """A complete run whose proposal scores are re-picked here. Build with :meth:`open`.

    scores: float32 [num_proposals], the raw D score of every proposal;
    real_raw, generated_raw: the saved calibration scores (held-out real, and
    the generated draws no chain uses), float32.
    """

    uri: str
    identity: RunIdentity
    sampling: dict[str, Any]
    scores: np.ndarray
    real_raw: np.ndarray
    generated_raw: np.ndarray
    _calibrators: dict[str, tuple[calibrators.Calibrator, dict[str, Any]]] = field(default_factory=dict)

    @staticmethod
    def open(uri: str) -> "StoredRun":
        """Reads a complete, non-re-pick, independent-chains run; InputError when it is not one."""
        run = read_run(uri, complete=True)
        display = run.store.display
        if run.identity.source_run:
            raise InputError(f"{display} is itself a re-pick; re-pick from the run that made the proposals")
        if run.proposals_deleted:
            raise InputError(f"{display} no longer holds its proposal shards")
        layout = run.layout
        if layout is None or layout.thin is not None:
            raise InputError(f"{display} is a thinned run; local re-picks need independent chains")
        proposals = ProposalLayout(run.store, layout.shard_proposals, layout.num_proposals)
        table = run.store.read_table(SCORES_PATH)
        labels = table.column("label").to_numpy()
        raw = table.column("d_score_raw").to_numpy()
        return StoredRun(uri=uri, identity=run.identity, sampling=run.config["sampling"],
                         scores=read_scores(proposals, 0, layout.num_proposals), real_raw=raw[labels == 1],
                         generated_raw=raw[labels == 0])

    # ------------------------------------------------------------ recorded facts

    @property
    def seed(self) -> int:
        return self.identity.seed

    @property
    def model_fingerprint(self) -> str:
        return self.identity.model_fingerprint

    @property
    def num_proposals(self) -> int:
        return int(self.scores.size)

    @property
    def batch_size(self) -> int:
        return int(self.identity.resources.batch_size)

    @property
    def precision(self) -> str:
        return self.identity.resources.precision or "fp32"

    @property
    def device(self) -> str:
        """The device type the run's proposals were scored on ("cpu" when not recorded)."""
        return self.identity.resources.device or "cpu"

    @property
    def drs_pilot_draws(self) -> int:
        return int(self.sampling.get("drs_pilot_draws", SamplingConfig.drs_pilot_draws))

    @property
    def drs_gamma_percentile(self) -> float:
        return float(self.sampling.get("drs_gamma_percentile", SamplingConfig.drs_gamma_percentile))

    # ------------------------------------------------------------------ picking

    def calibrator(self, name: str) -> tuple[calibrators.Calibrator, dict[str, Any]]:
        """(calibrator, its JSON) fitted once on the saved scores, as the run's calibration stage fits it."""
        if name not in self._calibrators:
            as_json = calibrators.fitted_calibrator(name, self.real_raw, self.generated_raw).to_json()
            # The chain tasks use the calibrator rebuilt from its JSON; so does every pick here.
            self._calibrators[name] = (calibrators.calibrator_from_json(as_json), as_json)
        return self._calibrators[name]

    def pick(self, setting: PickSetting, num_chains: int, pilot_max_raw: float | None = None) -> LocalPick:
        """Picks chains 0 .. num_chains-1 at ``setting``; drs needs ``pilot_max_raw`` (:meth:`pilot_max_raw`)."""
        setting.validate()
        k = setting.chain_length
        if num_chains < 1 or num_chains * k > self.num_proposals:
            raise ConfigError(f"{num_chains:,} chains of K = {k} need {num_chains * k:,} proposals; "
                              f"{self.uri} holds {self.num_proposals:,}")
        calibrator, _ = self.calibrator(setting.calibration)
        raw = self.scores[: num_chains * k].reshape(num_chains, k)
        logits = calibrator.predict_logit(raw.reshape(-1)).reshape(raw.shape)
        cap = None
        if setting.odds_cap_quantile is not None:
            # The pipeline's cap comes from the calibrator as fitted, before its JSON round trip.
            fitted = calibrators.fitted_calibrator(setting.calibration, self.real_raw, self.generated_raw)
            cap = pickers.odds_cap_logit(fitted.predict_logit(self.generated_raw.astype(np.float64)),
                                         setting.odds_cap_quantile)
        result = pick_chains(setting.picker, logits, calibrator, self.real_raw, self.seed, 0,
                             pilot_max_raw=pilot_max_raw, drs_gamma_percentile=self.drs_gamma_percentile,
                             odds_power=setting.odds_power, odds_cap_logit=cap)
        index = np.arange(num_chains, dtype=np.int64) * k + result.picked.astype(np.int64)
        return LocalPick(setting, index, result)

    # ------------------------------------------------------------- G and D here

    def worker(self, model: str, threads: int | None = None):
        """A proposal worker on ``model`` (which must be the run's: same fingerprint) in this process, at the
        run's batch size and precision, on CUDA when the run's proposals were scored there and CUDA is here
        (else the CPU, with ``threads`` torch threads; default: torch's current count)."""
        import torch

        from mhgan_dist.models import resolve_model
        from mhgan_dist.pipeline.proposals import ProposalWorker

        cuda = self.device == "cuda" and torch.cuda.is_available()
        worker = ProposalWorker(resolve_model(model), seed=self.seed, device="cuda" if cuda else "cpu",
                                precision="fp32", torch_threads=threads or torch.get_num_threads(),
                                granted_gpu_ids=(0,) if cuda else ())
        if worker.pair.fingerprint != self.model_fingerprint:
            raise ConfigError(f"{model} is not the model of the run {self.uri} (its fingerprint differs)")
        worker.configure(self.batch_size, self.precision)
        return worker

    def pilot_max_raw(self, worker) -> float:
        """The raw maximum over the run's DRS pilot draws, scored as a DRS re-pick's pipeline scores them."""
        scores = worker.score_stream(int(Stream.DRS_PILOT), 0, self.drs_pilot_draws)
        value = float(np.max(scores))
        if not math.isfinite(value):
            raise InputError(f"the DRS pilot draws of {self.uri} have no finite maximum")
        return value

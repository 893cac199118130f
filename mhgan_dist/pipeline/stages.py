"""The stages of a run, as the scheduler sees them, and the run state they share.

    CalibrationScoring          real samples and calibration/pilot draws, in chunks
        -> CalibrationFit       the calibrator (and T for --thin auto), in a driver thread
    ScoreShards                 proposals/shard-N
        -> PickChains           chains/part-N, once calibration is known
        -> Materialise          samples/part-N, from chains/part-N

Every unit but the fit runs on a proposal actor: G and D in its default thread,
chain picking (numpy, milliseconds) in its "chains" thread. The fit, once per
run and a fraction of a second of numpy, runs in a thread of the driver's
process beside the scheduler's loop: it asks Ray for no worker, and a process
death it had no part in cannot be charged to it (the scheduler cannot tell
which of a dead actor's threads died).

Each stage's ``done`` records the finished file in the manifest and hands the
part's next unit back to the scheduler. The fit hands back what every actor
then receives once (:func:`calibration_share`: the calibrator, the real scores,
the picker's settings and the samples' metadata, so that chain-picking and
samples calls carry only their part's index and range) and, with --thin auto,
the parts' first units. A samples part is made from the chain part its actor
reads from the run directory, and its statistics come back with its record.
:class:`RunState` holds what the stages share: the parts, the layout, the
calibration outcome, the manifest and the timings. Failures never reach a
stage: the scheduler and its ledger handle them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import ray

from mhgan_dist.core import streams
from mhgan_dist.core import thinning
from mhgan_dist.core.streams import Stream
from mhgan_dist.errors import ConfigError, OutputError
from mhgan_dist.pipeline.calibration import CALIBRATOR_PATH, REPORT_PATH, SCORES_PATH, CalibrationOutcome, calibrate
from mhgan_dist.pipeline.chains import ChainLayout, ChainRun, ProposalLayout
from mhgan_dist.pipeline.progress import Progress
from mhgan_dist.pipeline.reports import CalibratedRun, ChainsResult, PartStats, SamplesResult, StageResult
from mhgan_dist.pipeline.scheduler import ActorShare, Handoff, Stage, Unit
from mhgan_dist.run.config import JobConfig
from mhgan_dist.run.faults import FaultPlan
from mhgan_dist.run.record import ManifestWriter, SourceRun
from mhgan_dist.run.store import FileRecord, RunStore, part_path, shard_path

__all__ = ["Part", "RunState", "StageTimings", "PartStages", "CalibrationScoring",
           "CalibrationFit", "ScoreShards", "PickChains", "Materialise", "calibration_share", "SCORE_CHUNK",
           "CALIBRATED", "thinned_layout"]

# Rows of real samples or generated draws per calibration scoring call.
SCORE_CHUNK = 65_536
# The share (ActorShare.name) that chain-picking and samples calls need: the run's CalibratedRun.
CALIBRATED = "calibration"


@dataclass(eq=False)
class Part:
    """Chains [chain_start, chain_stop) of the layout: shard, chain part and samples part ``index``."""

    index: int
    chain_start: int
    chain_stop: int
    outputs: int = 0  # kept output samples of the part
    shard_done: bool = False
    chains_done: bool = False
    samples_done: bool = False
    redo_shard: bool = False
    stats: PartStats | None = None  # of its samples part, when this attempt made it


@dataclass
class StageTimings:
    """What the actors reported: busy seconds per stage, the proposal stage's first start and last finish
    (seconds since the epoch) and the chain-picking processes' peak resident bytes."""

    proposal_busy_s: float = 0.0
    chains_busy_s: float = 0.0
    materialise_busy_s: float = 0.0
    first_shard_started_at: float | None = None
    last_shard_finished_at: float | None = None
    chain_worker_peak_rss: int = 0

    def to_json(self) -> dict[str, float | int | None]:
        return asdict(self)


def thinned_layout(config: JobConfig, thin: int) -> ChainLayout:
    plan = thinning.plan_chains(config.sampling.num_samples, thin, config.sampling.outputs_per_chain)
    return ChainLayout.thinned(plan, config.shard_chains_for(plan.chain_length, plan.num_chains))


def _sha(store: RunStore, path: str) -> str:
    return hashlib.sha256(store.read_bytes(path)).hexdigest()


@dataclass(eq=False)
class RunState:
    """What the stages of one run share."""

    config: JobConfig
    store: RunStore
    manifest: ManifestWriter
    faults: FaultPlan
    say: Callable[[str], None]
    seed: int
    fingerprint: str  # of G and D's files
    source: SourceRun | None
    show_progress: bool
    layout: ChainLayout | None = None
    parts: list[Part] = field(default_factory=list)
    proposals: ProposalLayout | None = None
    progress: Progress | None = None
    outcome: CalibrationOutcome | None = None
    calibration_started: float = field(default_factory=time.monotonic)
    proposals_made: int = 0
    files_recorded: int = 0
    timings: StageTimings = field(default_factory=StageTimings)

    def recorded(self, record: FileRecord) -> None:
        self.manifest.record(record)
        self.files_recorded += 1
        self.faults.maybe_fail("driver", self.files_recorded)

    def verified(self, path: str) -> bool:
        record = self.manifest.trusted(path)
        if record is None:
            return False
        if self.store.verify(record):
            return True
        self.manifest.forget(path)  # truncated or corrupt: redo it
        return False

    def plan_parts(self, chosen: ChainLayout) -> list[Part]:
        """The parts of the layout, with what a previous attempt finished and verified."""
        source, store, manifest, n = self.source, self.store, self.manifest, self.config.sampling.num_samples
        if source is None:
            self.proposals = ProposalLayout(store, chosen.shard_chains * chosen.chain_proposals, chosen.num_proposals)
        else:
            if chosen.num_proposals > source.num_proposals:
                raise ConfigError(
                    f"{n:,} samples at {chosen.chain_proposals / chosen.outputs_per_chain:g} proposals each need "
                    f"{chosen.num_proposals:,} proposals but {source.display} holds {source.num_proposals:,}"
                )
            self.proposals = ProposalLayout(RunStore(source.uri), source.shard_proposals, source.num_proposals)
        recorded_layout = manifest.body.get("layout")
        if recorded_layout is not None and recorded_layout != chosen.to_json():
            raise OutputError(f"output directory {store.display} holds parts of another chain layout; "
                              "use another --output")
        manifest.body["layout"] = chosen.to_json()
        self.layout = chosen
        for index, (c0, c1) in enumerate(chosen.parts()):
            part = Part(index, c0, c1, outputs=chosen.outputs_of(c0, c1))
            self.parts.append(part)
            shard_recorded = manifest.trusted(shard_path(index)) is not None
            part.shard_done = source is not None or self.verified(shard_path(index))
            part.samples_done = self.verified(part_path("samples", index))
            if part.samples_done:
                # A corrupt shard is redone even when its samples are fine: a later re-pick reads it.
                part.redo_shard = shard_recorded and not part.shard_done
                continue
            part.chains_done = part.shard_done and self.verified(part_path("chains", index))
        manifest.flush(force=True)
        self.progress = Progress(chosen.num_proposals, n, enabled=self.show_progress)
        self.progress.advance(
            proposals=sum(p.chain_stop - p.chain_start for p in self.parts if p.shard_done or p.samples_done)
            * chosen.chain_proposals,
            samples=sum(p.outputs for p in self.parts if p.samples_done))
        return self.parts

    def adopt_calibration(self, outcome: CalibrationOutcome) -> list[Part]:
        """Calibration is known (fitted now or verified from an earlier attempt): chains may start. Returns
        the parts planned now (--thin auto, whose layout follows from T), else none."""
        self.outcome = outcome
        self.manifest.body["calibration"] = outcome.to_json()
        if self.layout is None:
            return self.plan_parts(thinned_layout(self.config, outcome.thin))
        return []

    def calibrated_run(self, real_raw: np.ndarray) -> CalibratedRun:
        """What every chain-picking and samples call needs, once the layout and calibration are known.
        real_raw: raw logits of the held-out real samples, float32 [R]."""
        sampling, layout, outcome = self.config.sampling, self.layout, self.outcome
        chains = ChainRun(
            sampling.picker, self.seed, layout.chain_proposals, self.proposals, outcome.calibrator, real_raw,
            outcome.pilot_max_raw, sampling.drs_gamma_percentile, thin=layout.thin,
            num_samples=sampling.num_samples, odds_power=sampling.odds_power, odds_cap_logit=outcome.odds_cap_logit)
        metadata = {"run_id": self.manifest.run_id, "model_fingerprint": self.fingerprint,
                    "picker": sampling.picker, "chain_length": layout.chain_proposals, "seed": self.seed,
                    "format_version": streams.FORMAT_VERSION, "thin": layout.thin,
                    "outputs_per_chain": layout.outputs_per_chain, "calibration_id": outcome.calibration_id}
        return CalibratedRun(chains, metadata)


def calibration_share(run: CalibratedRun) -> ActorShare:
    """``run`` for every proposal actor, put in the object store once and adopted by each actor once."""
    ref = ray.put(run)
    return ActorShare(CALIBRATED, lambda actor: actor.adopt.remote(ref))


# ------------------------------------------------------------------ calibration


@dataclass(frozen=True, eq=False)
class _Fitted:
    outcome: CalibrationOutcome
    records: list[FileRecord]  # of the calibration/ files
    real_raw: np.ndarray


class CalibrationFit(Stage[dict[str, np.ndarray]]):
    """The calibration fit, in a driver thread; its outcome becomes the run's and chains may start.

    One unit, whose payload is every score the fit takes (raw logits by what
    they score: "real", "calibration", "drs_pilot", "thin_pilot"). ``run``
    fits and writes ``calibration/``; ``done`` (in the scheduler's loop)
    records it and hands back the share and, with --thin auto, the parts'
    first units (through ``parts``).
    """

    title = "calibration fit"
    runs_in_driver = True

    def __init__(self, state: RunState, saved_calibration: dict[str, Any] | None, parts: "PartStages") -> None:
        super().__init__()
        self.state, self.saved, self.parts = state, saved_calibration, parts

    def run(self, unit: Unit[dict[str, np.ndarray]]) -> _Fitted:
        state, scores = self.state, unit.payload
        sampling = state.config.sampling
        outcome = calibrate(
            state.store, scores["real"], scores["calibration"], scores["drs_pilot"], sampling.calibration,
            state.seed, self.saved, scores["thin_pilot"] if sampling.thinned else None, sampling.thin,
            sampling.repeat_budget, min(sampling.outputs_per_chain, sampling.num_samples), sampling.odds_power,
            sampling.odds_cap_quantile)
        records = [FileRecord(path, 0, state.store.size(path), _sha(state.store, path))
                   for path in (SCORES_PATH, CALIBRATOR_PATH, REPORT_PATH)]
        return _Fitted(outcome, records, scores["real"])

    def done(self, unit: Unit[dict[str, np.ndarray]], result: _Fitted) -> Handoff:
        state, outcome = self.state, result.outcome
        state.manifest.body["calibration"] = outcome.to_json()
        for record in result.records:
            state.recorded(record)
        state.manifest.body["timings"]["calibration_s"] = time.monotonic() - state.calibration_started
        if outcome.thinning is not None:
            state.say(f"thinned chains: T={outcome.thin} ({outcome.thinning['requested']}), expected repeat "
                      f"share {outcome.thinning['expected']['share']:.4f}")
        planned = state.adopt_calibration(outcome)
        return Handoff(self.parts.first_units(planned), calibration_share(state.calibrated_run(result.real_raw)))


class CalibrationScoring(Stage[Stream | None]):
    """Raw D scores of the real samples and of the calibration, DRS-pilot and thinning-pilot draws.

    Unit key: (what, start, stop) with ``what`` "real" or a Stream's name;
    payload: the Stream (None for real samples). Once every chunk is in, the
    fit's unit follows, with the concatenated scores.
    """

    title = "calibration scoring"

    def __init__(self, fit: CalibrationFit) -> None:
        super().__init__()
        self.fit = fit
        self.scores: dict[str, dict[int, np.ndarray]] = {what: {} for what in ("real", "calibration", "drs_pilot",
                                                                                 "thin_pilot")}
        self.given: dict[str, np.ndarray] = {}  # scores known without an actor (a re-pick's saved ones)
        self.outstanding = 0

    def add_range(self, what: str, stream: Stream | None, total: int) -> None:
        for start in range(0, total, SCORE_CHUNK):
            self.add((what, start, min(total, start + SCORE_CHUNK)), stream)
            self.outstanding += 1

    def describe(self, unit: Unit[Stream | None]) -> str:
        what, start, stop = unit.key
        return f"calibration scoring of {'real samples' if what == 'real' else what.replace('_', ' ') + ' draws'} " \
               f"[{start}, {stop})"

    def submit(self, unit: Unit[Stream | None], actor: Any) -> ray.ObjectRef:
        what, start, stop = unit.key
        if unit.payload is None:
            return actor.score_real.remote(start, stop)
        return actor.score_stream.remote(int(unit.payload), start, stop)

    def done(self, unit: Unit[Stream | None], result: np.ndarray) -> Handoff:
        what, start, _ = unit.key
        self.scores[what][start] = result
        self.outstanding -= 1
        return Handoff([self.fit_unit()]) if self.outstanding == 0 else Handoff()

    def fit_unit(self) -> Unit[dict[str, np.ndarray]]:
        """The fit, with every score (also when no chunk needed an actor)."""
        joined = {}
        for what, chunks in self.scores.items():
            if what in self.given:
                joined[what] = self.given[what]
            else:
                joined[what] = (np.concatenate([chunks[s] for s in sorted(chunks)]) if chunks
                                else np.array([], np.float32))
        return self.fit.unit("fit", joined)


# ------------------------------------------------------------------ parts


class Materialise(Stage[Part]):
    """G over a part's picked proposals: ``samples/part-N``. First in line: it frees memory and finishes parts."""

    title = "samples part"
    extra_load = 1
    needs = CALIBRATED  # the samples carry the calibration's id

    def __init__(self, state: RunState) -> None:
        super().__init__()
        self.state = state

    def ready(self) -> bool:
        return self.state.outcome is not None

    def submit(self, unit: Unit[Part], actor: Any) -> ray.ObjectRef:
        part = unit.payload
        return actor.write_samples.remote(part.index, part.chain_start, part.chain_stop)

    def done(self, unit: Unit[Part], result: SamplesResult) -> Handoff:
        part, state = unit.payload, self.state
        state.recorded(result.record)
        state.timings.materialise_busy_s += result.seconds
        part.samples_done = True
        part.stats = result.stats
        state.progress.advance(samples=part.outputs)
        return Handoff()


class PickChains(Stage[Part]):
    """The picker over a part's chains: ``chains/part-N``; waits for calibration.

    Runs on a proposal actor, in its "chains" thread beside G and D (a few
    milliseconds of numpy per part), so it needs no CPU of its own and no
    process start; ``extra_load`` lets it past the actor's queue of shards.
    """

    title = "chain part"
    extra_load = 2
    actor_thread = "chains"  # the actor's "chains" concurrency group (actor.ProposalActor.pick_part)
    needs = CALIBRATED

    def __init__(self, state: RunState, samples: Materialise, max_tasks: int) -> None:
        super().__init__()
        self.state, self.samples, self.max_tasks = state, samples, max_tasks

    def ready(self) -> bool:
        return self.state.outcome is not None and self.in_flight < self.max_tasks

    def submit(self, unit: Unit[Part], actor: Any) -> ray.ObjectRef:
        part = unit.payload
        return actor.pick_part.remote(part.index, part.chain_start, part.chain_stop)

    def done(self, unit: Unit[Part], result: ChainsResult) -> Handoff:
        part, timings = unit.payload, self.state.timings
        timings.chains_busy_s += result.seconds
        timings.chain_worker_peak_rss = max(timings.chain_worker_peak_rss, result.peak_rss)
        self.state.recorded(result.record)
        part.chains_done = True
        return Handoff([self.samples.unit(part.index, part)])


class ScoreShards(Stage[Part]):
    """G and D over a part's proposals: ``proposals/shard-N``. Held back while many parts wait for chains."""

    title = "proposal shard"

    def __init__(self, state: RunState, chains: PickChains, backlog: int) -> None:
        super().__init__()
        self.state, self.chains, self.backlog = state, chains, backlog

    def ready(self) -> bool:
        return len(self.chains.queue) <= self.backlog

    def submit(self, unit: Unit[Part], actor: Any) -> ray.ObjectRef:
        part, state = unit.payload, self.state
        length = state.layout.chain_proposals
        return actor.write_shard.remote(part.index, part.chain_start * length, part.chain_stop * length,
                                        state.config.output.store_proposal_samples)

    def done(self, unit: Unit[Part], result: StageResult) -> Handoff:
        part, state, t = unit.payload, self.state, self.state.timings
        state.recorded(result.record)
        t.proposal_busy_s += result.seconds
        first = t.first_shard_started_at
        t.first_shard_started_at = result.started_at if first is None else min(first, result.started_at)
        t.last_shard_finished_at = max(t.last_shard_finished_at or 0.0, result.finished_at)
        state.proposals_made += result.record.rows
        state.progress.advance(proposals=result.record.rows)
        part.shard_done = True
        return Handoff([] if part.samples_done else [self.chains.unit(part.index, part)])


@dataclass(frozen=True)
class PartStages:
    """The stages a part goes through, in order."""

    shards: ScoreShards
    chains: PickChains
    samples: Materialise

    def first_units(self, parts: Iterable[Part]) -> list[Unit[Part]]:
        """The unit each part still needs first: its shard (missing, or corrupt under finished samples), else
        its chain part, else its samples part; none for a finished part."""
        units = []
        for part in parts:
            if (not part.samples_done and not part.shard_done) or part.redo_shard:
                units.append(self.shards.unit(part.index, part))
            elif not part.samples_done and not part.chains_done:
                units.append(self.chains.unit(part.index, part))
            elif not part.samples_done:
                units.append(self.samples.unit(part.index, part))
        return units

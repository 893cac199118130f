"""The stages of a run, as the scheduler sees them, and the run state they share.

    CalibrationScoring          real samples and calibration/pilot draws, in chunks
        -> CalibrationFit       the isotonic map (and T for --thin auto), in the driver
    ScoreShards                 proposals/shard-N
        -> PickChains           chains/part-N, once calibration is known
        -> Materialise          samples/part-N

Every unit of a stage runs on a proposal actor: G and D in its default thread,
chain picking (numpy, milliseconds) in its "chains" thread. The fit, once per
run and a fraction of a second of numpy, runs in the driver's
process as the last calibration score comes in: as a Ray task it started a
worker process, and on an actor a process death it had no part in could be
charged to it (the scheduler cannot tell which of a dead actor's threads died).

Each stage's ``done`` records the finished file in the manifest and queues the
part's next stage. :class:`RunState` holds what they share: the parts, the
layout, the calibration outcome, the manifest and the timings. Failures never
reach a stage: :mod:`mhgan_dist.pipeline.scheduler` handles them.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from mhgan_dist.core import streams
from mhgan_dist.core import thinning
from mhgan_dist.run.config import JobConfig
from mhgan_dist.errors import ConfigError, OutputError
from mhgan_dist.run.faults import FaultPlan
from mhgan_dist.pipeline.calibration import CALIBRATOR_PATH, REPORT_PATH, SCORES_PATH, CalibrationOutcome, calibrate
from mhgan_dist.pipeline.chains import ChainLayout, ChainTask, ProposalLayout
from mhgan_dist.pipeline.progress import Progress
from mhgan_dist.pipeline.scheduler import Stage, Unit
from mhgan_dist.run.store import FileRecord, RunStore, part_path, shard_path
from mhgan_dist.core.streams import Stream

__all__ = ["Part", "RunState", "CalibrationScoring", "CalibrationFit", "ScoreShards", "PickChains", "Materialise",
           "SCORE_CHUNK", "thinned_layout"]

# Rows of real samples or generated draws per calibration scoring call.
SCORE_CHUNK = 65_536


@dataclass(eq=False)
class Part:
    index: int
    chain_start: int
    chain_stop: int
    outputs: int = 0  # kept output samples of the part
    shard_done: bool = False
    chains: pa.Table | None = None
    samples_done: bool = False
    redo_shard: bool = False


def thinned_layout(config: JobConfig, thin: int) -> ChainLayout:
    plan = thinning.plan_chains(config.sampling.num_samples, thin, config.sampling.outputs_per_chain)
    return ChainLayout.thinned(plan, config.shard_chains_for(plan.chain_length, plan.num_chains))


def _sha(store: RunStore, path: str) -> str:
    return hashlib.sha256(store.read_bytes(path)).hexdigest()


@dataclass(eq=False)
class RunState:
    """What the stages of one run share. ``manifest`` is the driver's _Manifest."""

    config: JobConfig
    store: RunStore
    manifest: Any
    faults: FaultPlan
    say: Any
    seed: int
    fingerprint: str
    source: dict | None
    show_progress: bool
    layout: ChainLayout | None = None
    parts: list[Part] = field(default_factory=list)
    proposals: ProposalLayout | None = None
    metadata_base: dict[str, Any] = field(default_factory=dict)
    progress: Progress | None = None
    outcome: CalibrationOutcome | None = None
    real_ref: Any = None
    calibration_started: float = field(default_factory=time.monotonic)
    proposals_made: int = 0
    files_recorded: int = 0
    timings: dict[str, Any] = field(default_factory=lambda: {
        "proposal_busy_s": 0.0, "chains_busy_s": 0.0, "materialise_busy_s": 0.0,
        "first_shard_started_at": None, "last_shard_finished_at": None, "chain_worker_peak_rss": 0})
    stages: dict[str, Stage] = field(default_factory=dict)

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
        del self.manifest.body["files"][path]  # truncated or corrupt: redo it
        return False

    def plan_parts(self, chosen: ChainLayout) -> None:
        """The parts of the layout, with what a previous attempt finished and verified; queues the rest."""
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
            if part.shard_done and self.verified(part_path("chains", index)):
                part.chains = store.read_table(part_path("chains", index))
        manifest.flush(force=True)
        for part in self.parts:
            if (not part.samples_done and not part.shard_done) or part.redo_shard:
                self.stages["shards"].add(part.index, part)
            elif not part.samples_done and part.chains is None:
                self.stages["chains"].add(part.index, part)
            elif not part.samples_done:
                self.stages["samples"].add(part.index, part)
        sampling = self.config.sampling
        self.metadata_base = {"run_id": manifest.body["run_id"], "model_fingerprint": self.fingerprint,
                              "picker": sampling.picker, "chain_length": chosen.chain_proposals, "seed": self.seed,
                              "format_version": streams.FORMAT_VERSION, "thin": chosen.thin,
                              "outputs_per_chain": chosen.outputs_per_chain}
        self.progress = Progress(chosen.num_proposals, n, enabled=self.show_progress)
        self.progress.advance(
            proposals=sum(p.chain_stop - p.chain_start for p in self.parts if p.shard_done or p.samples_done)
            * chosen.chain_proposals,
            samples=sum(p.outputs for p in self.parts if p.samples_done))

    def adopt_calibration(self, outcome: CalibrationOutcome) -> None:
        """Calibration is known (fitted now or verified from an earlier attempt): chains may start."""
        self.outcome = outcome
        self.manifest.body["calibration"] = outcome.to_json()
        if self.layout is None:
            self.plan_parts(thinned_layout(self.config, outcome.thin))


# ------------------------------------------------------------------ calibration


class CalibrationScoring(Stage):
    """Raw D scores of the real samples and of the calibration, DRS-pilot and thinning-pilot draws.

    Unit key: (what, start, stop) with ``what`` "real" or a Stream's name;
    payload: the Stream (None for real samples). Once every chunk is in, the
    fit runs with the concatenated scores.
    """

    title = "calibration scoring"

    def __init__(self, state: RunState, fit: "CalibrationFit", given: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.state, self.fit = state, fit
        self.scores: dict[str, dict[int, np.ndarray]] = {what: {} for what in ("real", "calibration", "drs_pilot",
                                                                                 "thin_pilot")}
        self.given = given  # scores known without an actor (a re-pick's saved ones; no draws asked)
        self.outstanding = 0

    def add_range(self, what: str, stream: Stream | None, total: int) -> None:
        for start in range(0, total, SCORE_CHUNK):
            self.add((what, start, min(total, start + SCORE_CHUNK)), stream)
            self.outstanding += 1

    def describe(self, unit: Unit) -> str:
        what, start, stop = unit.key
        return f"calibration scoring of {'real samples' if what == 'real' else what.replace('_', ' ') + ' draws'} " \
               f"[{start}, {stop})"

    def submit(self, unit: Unit, actor: Any) -> Any:
        what, start, stop = unit.key
        if unit.payload is None:
            return actor.score_real.remote(start, stop)
        return actor.score_stream.remote(int(unit.payload), start, stop)

    def done(self, unit: Unit, result: np.ndarray) -> None:
        what, start, _ = unit.key
        self.scores[what][start] = result
        self.outstanding -= 1
        if self.outstanding == 0:
            self.finish()

    def finish(self) -> None:
        """Runs the fit with every score (also when no chunk needed an actor)."""
        joined = {}
        for what, chunks in self.scores.items():
            if what in self.given:
                joined[what] = self.given[what]
            else:
                joined[what] = (np.concatenate([chunks[s] for s in sorted(chunks)]) if chunks
                                else np.array([], np.float32))
        self.fit.run(joined)


class CalibrationFit:
    """The calibration fit, in the driver's process; its outcome becomes the run's and chains may start."""

    def __init__(self, state: RunState, saved_calibration: dict | None) -> None:
        self.state, self.saved = state, saved_calibration

    def run(self, scores: dict[str, np.ndarray]) -> None:
        state = self.state
        sampling = state.config.sampling
        if state.real_ref is None:
            state.real_ref = ray.put(scores["real"])  # once, not once per chain part
        outcome = calibrate(
            state.store, scores["real"], scores["calibration"], scores["drs_pilot"], sampling.calibration,
            state.seed, self.saved, scores["thin_pilot"] if sampling.thinned else None, sampling.thin,
            sampling.repeat_budget, min(sampling.outputs_per_chain, sampling.num_samples), sampling.odds_power,
            sampling.odds_cap_quantile)
        state.manifest.body["calibration"] = outcome.to_json()
        for path in (SCORES_PATH, CALIBRATOR_PATH, REPORT_PATH):
            state.recorded(FileRecord(path, 0, state.store.size(path), _sha(state.store, path)))
        state.manifest.body["timings"]["calibration_s"] = time.monotonic() - state.calibration_started
        if outcome.thinning is not None:
            state.say(f"thinned chains: T={outcome.thin} ({outcome.thinning['requested']}), expected repeat "
                      f"share {outcome.thinning['expected']['share']:.4f}")
        state.adopt_calibration(outcome)


# ------------------------------------------------------------------ parts


class ScoreShards(Stage):
    """G and D over a part's proposals: ``proposals/shard-N``. Held back while many parts wait for chains."""

    title = "proposal shard"

    def __init__(self, state: RunState, backlog: int) -> None:
        super().__init__()
        self.state, self.backlog = state, backlog

    def ready(self) -> bool:
        return len(self.state.stages["chains"].queue) <= self.backlog

    def submit(self, unit: Unit, actor: Any) -> Any:
        part, state = unit.payload, self.state
        length = state.layout.chain_proposals
        return actor.write_shard.remote(state.store, part.index, part.chain_start * length, part.chain_stop * length,
                                        state.config.output.store_proposal_samples)

    def done(self, unit: Unit, result: Any) -> None:
        part, state, t = unit.payload, self.state, self.state.timings
        state.recorded(result.record)
        t["proposal_busy_s"] += result.seconds
        first = t["first_shard_started_at"]
        t["first_shard_started_at"] = result.started_at if first is None else min(first, result.started_at)
        t["last_shard_finished_at"] = max(t["last_shard_finished_at"] or 0.0, result.finished_at)
        state.proposals_made += result.record.rows
        state.progress.advance(proposals=result.record.rows)
        part.shard_done = True
        if not part.samples_done:
            state.stages["chains"].add(part.index, part)


class PickChains(Stage):
    """The picker over a part's chains: ``chains/part-N``; waits for calibration.

    Runs on a proposal actor, in its "chains" thread beside G and D (a few
    milliseconds of numpy per part), so it needs no CPU of its own and no
    process start; ``extra_load`` lets it past the actor's queue of shards.
    """

    title = "chain part"
    extra_load = 2
    actor_thread = "chains"  # the actor's "chains" concurrency group (actor.ProposalActor.pick_part)

    def __init__(self, state: RunState, max_tasks: int) -> None:
        super().__init__()
        self.state, self.max_tasks = state, max_tasks

    def ready(self) -> bool:
        return self.state.outcome is not None and self.in_flight < self.max_tasks

    def submit(self, unit: Unit, actor: Any) -> Any:
        part, state = unit.payload, self.state
        sampling, layout, outcome = state.config.sampling, state.layout, state.outcome
        task = ChainTask(part.index, part.chain_start, part.chain_stop, layout.chain_proposals, sampling.picker,
                         state.seed, sampling.drs_gamma_percentile, thin=layout.thin,
                         num_samples=sampling.num_samples, odds_power=sampling.odds_power,
                         odds_cap_logit=outcome.odds_cap_logit)
        return actor.pick_part.remote(
            task, state.proposals, state.store, outcome.calibrator, state.real_ref, outcome.pilot_max_raw,
            state.faults)

    def done(self, unit: Unit, result: Any) -> None:
        part, state = unit.payload, self.state
        record, table, seconds, rss = result
        state.timings["chains_busy_s"] += seconds
        state.timings["chain_worker_peak_rss"] = max(state.timings["chain_worker_peak_rss"], rss)
        state.recorded(record)
        part.chains = table
        state.stages["samples"].add(part.index, part)


class Materialise(Stage):
    """G over a part's picked proposals: ``samples/part-N``. First in line: it frees memory and finishes parts."""

    title = "samples part"
    extra_load = 1

    def __init__(self, state: RunState) -> None:
        super().__init__()
        self.state = state

    def ready(self) -> bool:
        return self.state.outcome is not None  # the samples carry the calibration's id

    def submit(self, unit: Unit, actor: Any) -> Any:
        part, state = unit.payload, self.state
        metadata = {**state.metadata_base, "calibration_id": state.outcome.calibration_id}
        return actor.write_samples.remote(state.store, part.index, part.chains, metadata)

    def done(self, unit: Unit, result: Any) -> None:
        part, state = unit.payload, self.state
        state.recorded(result.record)
        state.timings["materialise_busy_s"] += result.seconds
        part.samples_done = True
        part.chains = None
        state.progress.advance(samples=part.outputs)

"""The driver: schedules proposal, calibration, chain and materialisation work on Ray.

Stages overlap with bounded work in flight: each proposal actor has at most
``max_in_flight_per_actor`` shards queued; a finished shard's chains are picked
on an actor's "chains" thread as soon as calibration is known; a finished chain part is
materialised by an actor, ahead of further shards. Every finished file is
recorded in ``manifest.json`` with its size and sha256, so a re-run skips work
that is done and verified, redoes anything missing or corrupt, and writes
``_SUCCESS`` last.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray

from mhgan_dist.core import calibrators
from mhgan_dist.core import pickers
from mhgan_dist.core import thinning
from mhgan_dist.run.config import CALIBRATION_METHODS, JobConfig
from mhgan_dist.errors import ConfigError, MhganError, NonFiniteScoresError, StageError
from mhgan_dist.run.faults import FaultPlan
from mhgan_dist.models import ModelFiles, check_sample_shape, load_real_samples, model_fingerprint, resolve_model
from mhgan_dist.pipeline.calibration import (
    REPORT_PATH,
    SCORES_PATH,
    CalibrationOutcome,
    choose_thinning,
    load_calibration_file,
)
from mhgan_dist.pipeline.chains import ChainLayout
from mhgan_dist.pipeline.actor import ProposalActor
from mhgan_dist.pipeline.reports import WorkerInfo, part_stats, peak_rss_bytes
from mhgan_dist.pipeline.resources import ActorLayout, ClusterView, check_fits, default_batch_size, plan_layout
from mhgan_dist.pipeline.scheduler import (
    ActorPool,
    Recovery,
    ResourceWatch,
    Scheduler,
    kill_actor,
    first_line,
    user_error,
    wait_for_first_actor,
)
from mhgan_dist.pipeline.stages import (
    CalibrationFit,
    CalibrationScoring,
    Materialise,
    PartStages,
    PickChains,
    RunState,
    ScoreShards,
    calibration_share,
    thinned_layout,
)
from mhgan_dist.run.record import (
    ManifestWriter,
    RecordedRun,
    ResolvedResources,
    RunIdentity,
    SourceRun,
    check_run,
    open_run,
    read_run,
    read_source_run,
    recorded_identity,
)
from mhgan_dist.run.store import RunStore, part_path, redact_uri
from mhgan_dist.core.streams import Stream

__all__ = ["RunSummary", "DryRunEstimate", "run_job", "dry_run", "RESTART_RATE_WARNING", "ACCEPT_RATE_WARNING"]

# Above this share of restarted chains, or below this MH acceptance rate, K is
# likely too small or D saturated: the output is mostly restart passes.
RESTART_RATE_WARNING = 0.10
ACCEPT_RATE_WARNING = 0.01
# Thinned chains: observed repeat share this many standard errors above the expected one.
REPEAT_EXCESS_WARNING_Z = 3.0


@dataclass
class RunSummary:
    """What a run did; ``status`` is "complete" or "already complete"."""

    output: str
    status: str
    num_samples: int
    picker: str
    chain_length: int
    acceptance_rate: float
    restart_rate: float
    calibration_z_before: float | None
    calibration_z_after: float | None
    proposals_per_s: float | None
    seconds: float
    warnings: list[str] = field(default_factory=list)
    thin: int | None = None  # thinned chains: T
    proposals_per_output: float | None = None
    repeat_share: float | None = None  # thinned chains: observed share of outputs repeating their predecessor
    expected_repeat_share: float | None = None
    recovery: dict[str, Any] | None = None  # Recovery.to_json(): retries, actors lost and replaced

    def lines(self) -> list[str]:
        z = "n/a"
        if self.calibration_z_before is not None:
            z = f"{self.calibration_z_before:+.2f} -> {self.calibration_z_after:+.2f}"
        rate = "n/a" if self.proposals_per_s is None else f"{self.proposals_per_s:,.0f} proposals/s"
        mode = f"K={self.chain_length}"
        thinned = []
        if self.thin is not None:
            mode = f"thinned chains, T={self.thin}, {self.proposals_per_output:.2f} proposals per sample"
            observed = "n/a" if self.repeat_share is None else f"{self.repeat_share:.4f}"
            expected = "n/a" if self.expected_repeat_share is None else f"{self.expected_repeat_share:.4f}"
            thinned = [f"repeat share {observed} (expected {expected})"]
        return [
            f"{self.status}: {self.num_samples:,} samples ({self.picker}, {mode}) in {redact_uri(self.output)}",
            f"acceptance rate {self.acceptance_rate:.3f}, restart rate {self.restart_rate:.3f}, "
            f"calibration Z {z}, throughput {rate}, {self.seconds:.1f} s",
            *thinned,
            *self._recovery_lines(),
            *[f"warning: {w}" for w in self.warnings],
        ]

    def _recovery_lines(self) -> list[str]:
        r = self.recovery
        if not r or not (r["retries"] or r["actors_lost"]):
            return []
        return [f"recovered: {r['retries']} unit(s) run again, {r['actors_lost']} proposal actor(s) lost, "
                f"{r['actors_replaced']} replaced (manifest.json: recovery)"]


@dataclass
class DryRunEstimate:
    """What a run as configured would cost, from a few timed batches."""

    proposals: int
    extra_draws: int  # calibration (+ DRS pilot) draws beyond the chains' proposals
    num_actors: int
    device: str
    batch_size: int
    proposals_per_s_per_actor: float
    estimated_seconds: float
    disk_bytes: int
    thin: int | None = None  # thinned chains: T (with --thin auto, what calibration chose here)

    def lines(self) -> list[str]:
        thinned = [] if self.thin is None else [f"thinned chains: T={self.thin}"]
        return [*thinned,
            f"dry run: {self.proposals:,} proposals (+ {self.extra_draws:,} calibration draws) on "
            f"{self.num_actors} actor(s) ({self.device}, batch {self.batch_size})",
            f"measured {self.proposals_per_s_per_actor:,.0f} proposals/s per actor; estimated wall time "
            f"{self.estimated_seconds:,.0f} s; disk about {self.disk_bytes / 2**20:,.1f} MiB; nothing was written",
        ]


# ----------------------------------------------------------------- the actor


def _actor_starter(config: JobConfig, model: ModelFiles, seed: int, faults: FaultPlan, layout: ActorLayout):
    """A function that starts one proposal actor of ``layout``. Ray never restarts one, nor retries its
    calls: the scheduler replaces a dead actor with a new one and runs its work again."""
    res = config.resources
    actor_class = ray.remote(concurrency_groups={"chains": 1})(ProposalActor).options(
        num_cpus=layout.cpus, num_gpus=layout.gpus, max_restarts=0, max_task_retries=0)

    def start():
        return actor_class.remote(
            model, config.output.output, seed=seed, device=res.device, precision=res.precision,
            compile_models=res.compile,
            torch_threads=layout.threads, cpus=layout.cpus, faults=faults,
            gpu_share=min(1.0, layout.gpus) if layout.gpus > 0 else 1.0,
        )
    return start


def _plan_actors(config: JobConfig) -> ActorLayout:
    """The actor layout for the cluster as it is now; refuses one a job-started Ray cannot hold."""
    view = ClusterView.current()
    layout = plan_layout(config.resources, view)
    check_fits(layout, view, config.resources)
    return layout


def _start_actors(config: JobConfig, model: ModelFiles, seed: int, faults: FaultPlan, layout: ActorLayout):
    """(actor handles, starter): ``layout.count`` proposal actors started."""
    start = _actor_starter(config, model, seed, faults, layout)
    return [start() for _ in range(layout.count)], start


def _watch(config: JobConfig, say) -> ResourceWatch:
    res = config.resources
    return ResourceWatch(res.progress_watch_interval, res.resource_timeout, say)


def _first_actor(handles: list, layout: ActorLayout, watch: ResourceWatch):
    """(index, WorkerInfo) of the first actor up."""
    return wait_for_first_actor(handles, [h.info.remote() for h in handles], watch, layout.request())


# ---------------------------------------------------------- run identity


def _samples_sha256(samples: np.ndarray) -> str:
    """Hex sha256 of an array's content (shape and float32 values), whatever file format held it."""
    digest = hashlib.sha256(json.dumps(list(samples.shape)).encode())
    digest.update(np.ascontiguousarray(samples, dtype=np.float32).data)
    return digest.hexdigest()


def _json_sha256(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------ the run


def run_job(
    config: JobConfig,
    *,
    source_run: str | None = None,
    faults: FaultPlan | None = None,
    show_progress: bool = True,
    log=None,
    recommended: dict[str, Any] | None = None,
) -> RunSummary:
    """Runs (or resumes, or recognises as done) the job described by ``config``.

    With ``source_run``, proposals are not made but read from that run's
    shards (re-picking): its seed, model and batch size are used.
    ``recommended``: the model.json recommendation the command line applied
    (mhgan_dist.run.recommendations.recommended_record), kept in the manifest.
    Ray must be initialised. Raises MhganError subclasses for anything a user
    can fix.
    """
    began = time.monotonic()
    faults = faults or FaultPlan.from_env()
    say = log or (lambda message: print(message, file=sys.stderr, flush=True))
    sampling = config.sampling
    store = RunStore(config.output.output)
    store.ensure_writable()

    source = read_source_run(source_run) if source_run else None
    model = _resolve(config, source)
    fingerprint = model_fingerprint(model)
    seed = sampling.seed
    if source is not None:
        if source.identity.model_fingerprint != fingerprint:
            raise ConfigError(f"the model files differ from those that made the proposals of {source.display}")
        if not sampling.thinned and sampling.num_proposals > source.num_proposals:
            raise ConfigError(
                f"--num-samples {sampling.num_samples} x --chain-length {sampling.chain_length} needs "
                f"{sampling.num_proposals:,} proposals but {source.display} holds {source.num_proposals:,}"
            )
    saved_calibration = None
    if sampling.calibration not in CALIBRATION_METHODS:
        saved_calibration = load_calibration_file(sampling.calibration)

    # The actors load and validate G and D as they start (a bad file stops the run with
    # one sentence from the first actor); loading them here too would delay the first
    # proposal by the seconds a torch.export load takes. The real samples are read here,
    # and checked against the generator's sample shape once an actor reports it.
    if model.real is None:
        raise ConfigError(f"model {model.name} has no held-out real samples; pass --real PATH")
    real = load_real_samples(model.real)
    # The identity names these inputs by content: their paths may stay while the files change.
    contents = {"real_sha256": _samples_sha256(real),
                "calibration_sha256": None if saved_calibration is None else _json_sha256(saved_calibration)}

    def identity_for(resources: ResolvedResources) -> RunIdentity:
        return RunIdentity.of(config, resources, model_fingerprint=fingerprint, source_run=source_run, **contents)

    layout = _plan_actors(config)
    resources = _resolve_resources(config, recorded_identity(store), source, layout, int(np.prod(real.shape[1:])))
    # Known before any actor starts (a CPU run, or a resumed one), the identity makes a finished run a quick no-op.
    identity = identity_for(resources) if resources.complete else None
    if identity is not None and check_run(store, identity):
        return _summary_of_complete(read_run(store), config, began)
    handles, start = _start_actors(config, model, seed, faults, layout)
    recovery = Recovery()
    pool = None
    try:
        first, info = _first_actor(handles, layout, _watch(config, say))
        check_sample_shape(real, model.real, info.sample_shape)
        if identity is None:  # a new run on GPUs: batch size and precision are the first actor's measured choice
            resources = ResolvedResources(resources.batch_size or info.batch_size,
                                          resources.precision or info.precision, info.device)
            identity = identity_for(resources)
        elif resources.device != info.device:  # recorded on another device type: open_run refuses the run
            identity = identity_for(ResolvedResources(resources.batch_size, resources.precision, info.device))
        state, manifest = open_run(store, identity, config)
        if state == "complete":
            return _summary_of_complete(read_run(store), config, began)

        def configured(handle):
            return handle, handle.configure.remote(resources.batch_size, resources.precision)
        pool = ActorPool(lambda: configured(start()), [configured(h) for h in handles],
                         max_replacements=max(MIN_REPLACEMENTS, REPLACEMENTS_PER_ACTOR * len(handles)),
                         recovery=recovery, describe_request=layout.request())
        say(f"run {manifest.run_id}: {state}, {len(handles)} proposal actor(s) on {info.device} "
            f"({layout.request()} each), batch {resources.batch_size}, {resources.precision}, "
            f"{info.threads} torch thread(s) each")
        try:
            if recommended is not None:
                manifest.body["model_recommendation"] = {k: v for k, v in recommended.items() if k != "line"}
            return _pipeline(_Attempt(config, store, manifest, pool, info, real, seed, source, saved_calibration,
                                      faults, show_progress, say, began))
        except MhganError as exc:
            if isinstance(exc, NonFiniteScoresError):
                # Policy: stop. The failed run's manifest says why (and how many), never complete.
                manifest.body["nonfinite_scores"] = {**exc.details, "policy": "stop"}
            manifest.body["recovery"] = recovery.to_json()
            manifest.flush(force=True)
            raise
    finally:
        if pool is not None:
            pool.kill_all()
        for handle in handles:
            kill_actor(handle)


# A run gives up replacing lost actors after this many per actor it started with (and at least MIN_REPLACEMENTS).
REPLACEMENTS_PER_ACTOR = 3
MIN_REPLACEMENTS = 6


# Bytes of a Parquet file beyond its rows (footer, schema, metadata), as measured on grid2d.
PARQUET_FILE_OVERHEAD = 2_700


def dry_run(config: JobConfig, *, num_batches: int = 3) -> DryRunEstimate:
    """Scores a few batches on one actor and estimates the run's wall time and disk use.

    Assumes the actors scale linearly and that G+D dominate (true when
    the other stages overlap, as they do). Writes nothing. Ray must be initialised.
    """
    model = _resolve(config, None)
    real = load_real_samples(model.real) if model.real else None
    layout = _plan_actors(config)
    handles, _ = _start_actors(config, model, config.sampling.seed, FaultPlan(), layout)
    try:
        first, info = _first_actor(handles, layout, _watch(config, lambda m: print(m, file=sys.stderr, flush=True)))
        if real is not None:
            check_sample_shape(real, model.real, info.sample_shape)
        sample_bytes = 4 * int(np.prod(info.sample_shape))
        real_count = 0 if real is None else len(real)
        actor = handles[first]
        try:
            if config.resources.batch_size:
                ray.get(actor.configure.remote(config.resources.batch_size, info.precision))
                info = ray.get(actor.info.remote())
            proposals, seconds = ray.get(actor.time_batches.remote(num_batches))
            thin = config.sampling.thin
            if thin == "auto":  # what calibration would choose: score its draws on this actor
                thin = _dry_run_thin(config, actor, real_count)
        except ray.exceptions.RayError as exc:
            raise (user_error(exc) or StageError(f"the dry run failed: {first_line(exc)}")) from None
    finally:
        for handle in handles:
            kill_actor(handle)
    sampling = config.sampling
    rate = proposals / seconds
    extra = (sampling.calibration_draws or real_count) + (sampling.drs_pilot_draws if sampling.picker == "drs" else 0)
    extra += sampling.thin_pilot_draws if sampling.thinned else 0
    layout = (ChainLayout.independent(sampling.num_samples, sampling.chain_length, config.shard_chains)
              if thin is None else thinned_layout(config, thin))
    total = layout.num_proposals
    per_proposal = 4 + (sample_bytes if config.output.store_proposal_samples else 0)
    # Output rows: the sample plus about 54 bytes of score, id and chain columns; each
    # proposal shard and samples part adds its Parquet footer (schema and metadata).
    disk = (total * per_proposal + sampling.num_samples * (sample_bytes + 54)
            + 2 * len(layout.parts()) * PARQUET_FILE_OVERHEAD)
    return DryRunEstimate(total, extra, len(handles), info.device, info.batch_size, rate,
                          (total + extra) / (rate * len(handles)), disk, thin)


def _dry_run_thin(config: JobConfig, actor, real_count: int) -> int:
    """T that --thin auto would choose: calibration's draws scored on ``actor``, fitted here."""
    sampling = config.sampling
    real_raw = ray.get(actor.score_real.remote(0, real_count))
    generated_raw = ray.get(actor.score_stream.remote(int(Stream.CALIBRATION), 0,
                                                      sampling.calibration_draws or real_count))
    pilot_raw = ray.get(actor.score_stream.remote(int(Stream.THIN_PILOT), 0, sampling.thin_pilot_draws))
    saved = None if sampling.calibration in CALIBRATION_METHODS else load_calibration_file(sampling.calibration)
    fitted = calibrators.fitted_calibrator(sampling.calibration, real_raw, generated_raw, saved)
    cap = None if sampling.odds_cap_quantile is None else pickers.odds_cap_logit(
        fitted.predict_logit(generated_raw.astype(np.float64)), sampling.odds_cap_quantile)
    return choose_thinning(fitted, real_raw, pilot_raw, "auto", sampling.repeat_budget, 1, sampling.odds_power,
                           cap)["thin"]


def _resolve(config: JobConfig, source: SourceRun | None) -> ModelFiles:
    m = config.model
    if source is not None:
        recorded = source.config["model"]
        m = type(m)(**{**recorded, **{k: v for k, v in vars(m).items() if k == "real" and v}})
    return resolve_model(
        m.model if m.generator is None else None,
        generator=m.generator, discriminator=m.discriminator, latent_dim=m.latent_dim,
        real=m.real, discriminator_output=m.discriminator_output,
    )


def _resolve_resources(config: JobConfig, recorded: RunIdentity | None, source: SourceRun | None,
                       layout: ActorLayout, sample_numel: int) -> ResolvedResources:
    """Batch size, precision and device type of the run, as far as known before any actor starts.

    In order: the source run's batch size and precision when re-picking (its
    proposals are scored already); the flags; what an earlier attempt recorded;
    and on actors granted no GPU, what every such actor chooses (CPU, fp32, the
    CPU batch for the sample size). A None is for the first actor to measure
    (batch size and precision on a GPU).
    """
    res = config.resources
    before = ResolvedResources()
    if recorded is not None:
        try:
            before = recorded.resources
        except (KeyError, TypeError, ValueError):  # a malformed record: open_run says what is wrong
            before = ResolvedResources()
    device = res.device if res.device != "auto" else before.device
    if device is None and layout.gpus == 0:
        device = "cpu"
    on_cpu = device == "cpu"
    if source is not None:
        if res.batch_size not in (None, source.resources.batch_size):
            raise ConfigError("--batch-size cannot change when re-picking; proposals were scored already")
        return ResolvedResources(source.resources.batch_size, source.resources.precision, device)
    batch_size = res.batch_size or before.batch_size or (default_batch_size("cpu", sample_numel) if on_cpu else None)
    precision = res.precision if res.precision != "auto" else before.precision or ("fp32" if on_cpu else None)
    return ResolvedResources(batch_size, precision, device)


def _summary_of_complete(run: RecordedRun, config: JobConfig, began: float) -> RunSummary:
    stats = run.stats
    return RunSummary(
        output=run.store.uri, status="already complete", num_samples=int(stats.get("num_samples", 0)),
        picker=config.sampling.picker, chain_length=config.sampling.chain_length,
        acceptance_rate=float(stats.get("acceptance_rate", 0.0)), restart_rate=float(stats.get("restart_rate", 0.0)),
        calibration_z_before=stats.get("calibration_z_before"), calibration_z_after=stats.get("calibration_z_after"),
        proposals_per_s=None, seconds=time.monotonic() - began, **_thinning_summary(stats),
    )


@dataclass(frozen=True)
class _Attempt:
    """What one attempt at a run hands the pipeline: the config, the run directory and its manifest, the
    actors (their pool counts what was survived), the first actor's report, the held-out real samples, the
    re-pick source and saved calibration if any, the faults to inject, and how to report."""

    config: JobConfig
    store: RunStore
    manifest: ManifestWriter
    pool: ActorPool
    info: WorkerInfo
    real: np.ndarray
    seed: int
    source: SourceRun | None
    saved_calibration: dict[str, Any] | None
    faults: FaultPlan
    show_progress: bool
    say: Callable[[str], None]
    began: float  # time.monotonic() when the job started


def _pipeline(attempt: _Attempt) -> RunSummary:
    """Wires the stages to the scheduler, runs them, and writes the summary."""
    config, store, manifest, pool = attempt.config, attempt.store, attempt.manifest, attempt.pool
    sampling, res = config.sampling, config.resources
    manifest.body["timings"] = manifest.body.get("timings", {})
    run = RunState(config, store, manifest, attempt.faults, attempt.say, attempt.seed, attempt.info.fingerprint,
                   attempt.source, attempt.show_progress)
    samples = Materialise(run)
    chains = PickChains(run, samples, max_tasks=2 * pool.target + 1)
    parts = PartStages(ScoreShards(run, chains, backlog=2 * pool.target), chains, samples)
    fit = CalibrationFit(run, attempt.saved_calibration, parts)
    scoring = CalibrationScoring(fit)
    scheduler = Scheduler(pool, [fit, samples, scoring, chains, parts.shards], _watch(config, attempt.say),
                          max_in_flight=res.max_in_flight_per_actor)
    planned = []
    if not sampling.thinned:
        planned = run.plan_parts(ChainLayout.independent(sampling.num_samples, sampling.chain_length,
                                                         config.shard_chains))
    elif sampling.thin != "auto":
        planned = run.plan_parts(thinned_layout(config, sampling.thin))
    # The layout of --thin auto follows from the T that calibration chooses.

    if run.verified(REPORT_PATH) and run.verified(SCORES_PATH):
        planned += run.adopt_calibration(CalibrationOutcome.from_json(store.read_json(REPORT_PATH)))
        scheduler.share(calibration_share(run.calibrated_run(_real_scores(store))))
    else:
        _queue_calibration(run, scoring, attempt.real.shape[0])
    for unit in parts.first_units(planned):
        unit.stage.queue.append(unit)

    started = time.monotonic()
    scheduler.run()
    run.progress.close()
    elapsed = time.monotonic() - started
    stage = run.timings.to_json()
    try:
        stage["actor_peak_rss"] = max(ray.get([h.peak_rss.remote() for h in scheduler.actors_up()], timeout=60))
    except (ray.exceptions.RayError, ValueError):
        stage["actor_peak_rss"] = None
    stage["driver_peak_rss"] = peak_rss_bytes()
    if stage["first_shard_started_at"] is not None:
        window = stage["last_shard_finished_at"] - stage["first_shard_started_at"]
        stage["proposal_stage_s"] = window
        stage["steady_proposals_per_s"] = run.proposals_made / window if window > 0 else None
    manifest.body["timings"].update(stage)
    manifest.body["recovery"] = pool.recovery.to_json()
    return _finish(config, store, manifest, run.parts, run.layout, run.proposals_made, elapsed, attempt.began,
                   attempt.say, pool.recovery)


def _queue_calibration(run: RunState, scoring: CalibrationScoring, real_count: int) -> None:
    """Queues what calibration needs scored: real samples and draws on the actors, or a re-pick's saved scores."""
    sampling, source = run.config.sampling, run.source
    pilot_needed = sampling.picker == "drs"
    if source is not None:
        # Re-pick: the source's saved calibration scores, no generator pass.
        source_store = RunStore(source.uri)
        scores = source_store.read_table(SCORES_PATH)
        labels = scores.column("label").to_numpy()
        raw = scores.column("d_score_raw").to_numpy()
        scoring.given.update(real=raw[labels == 1], calibration=raw[labels == 0])
        pilot_max = CalibrationOutcome.from_json(source_store.read_json(REPORT_PATH)).pilot_max_raw
        if pilot_max is not None or not pilot_needed:
            pilot_needed = False
            if pilot_max is not None:
                scoring.given["drs_pilot"] = np.array([pilot_max], np.float32)
    else:
        scoring.add_range("real", None, real_count)
        scoring.add_range("calibration", Stream.CALIBRATION, sampling.calibration_draws or real_count)
    if pilot_needed:  # only DRS needs the pilot's maximum
        scoring.add_range("drs_pilot", Stream.DRS_PILOT, sampling.drs_pilot_draws)
    if sampling.thinned:  # a deterministic stream: a re-pick scores the same draws again
        scoring.add_range("thin_pilot", Stream.THIN_PILOT, sampling.thin_pilot_draws)
    if scoring.outstanding == 0:
        scoring.fit.queue.append(scoring.fit_unit())


def _real_scores(store: RunStore) -> np.ndarray:
    """Raw logits of the held-out real samples, float32 [R], as a fit of an earlier attempt recorded them."""
    scores = store.read_table(SCORES_PATH)
    labels = scores.column("label").to_numpy()
    return scores.column("d_score_raw").to_numpy()[labels == 1]


def _finish(config, store, manifest, parts, layout: ChainLayout, proposals_made, elapsed, began, say,
            recovery: Recovery) -> RunSummary:
    sampling = config.sampling
    # Parts this attempt made bring their statistics; those an earlier attempt finished are read.
    stats = [part.stats or part_stats(store.read_table(part_path("samples", part.index),
                                                       columns=["chain_id", "accepts", "restarted", "repeat"]),
                                      part.chain_start, part.chain_stop)
             for part in parts]
    rows, accepts = sum(s.rows for s in stats), sum(s.accepts for s in stats)
    if rows != sampling.num_samples:
        raise StageError(f"the samples parts hold {rows} rows, not the {sampling.num_samples} asked for")
    outputs_per_chain, restarted, repeats_per_chain = (np.concatenate(c) for c in zip(
        *((s.outputs, s.restarted, s.repeats) for s in stats)))
    restart_rate = float(np.mean(restarted))
    acceptance = accepts / (rows * layout.steps_per_output) if rows else 0.0
    diagnostics = manifest.body.get("calibration", {}).get("diagnostics", {})
    z_before = diagnostics.get("before", {}).get("dawid_z")
    z_after = diagnostics.get("after", {}).get("dawid_z")
    warnings = []
    if sampling.picker == "mh" and restart_rate > RESTART_RATE_WARNING:
        steps = f"K={sampling.chain_length}" if layout.thin is None else f"T={layout.thin}"
        warnings.append(
            f"{restart_rate:.1%} of chains accepted nothing and were restarted: {steps} "
            "may be too small, or D is saturated on real samples"
        )
    if sampling.picker == "mh" and acceptance < ACCEPT_RATE_WARNING:
        warnings.append(
            f"the MH acceptance rate is {acceptance:.2%}: D separates real from generated almost perfectly "
            "(saturated); calibration or a longer chain may help"
        )
    thinned = None
    if layout.thin is not None:
        thinned = _thinning_stats(manifest.body["calibration"]["thinning"], layout, outputs_per_chain,
                                  repeats_per_chain)
        manifest.body["thinning"] = thinned
        if layout.thin > sampling.chain_length:
            warnings.append(
                f"T={layout.thin} spends more proposals per sample than the independent chains' "
                f"K={sampling.chain_length}: thinning saves nothing with this discriminator and calibration"
            )
        if thinned["excess_z"] is not None and thinned["excess_z"] > REPEAT_EXCESS_WARNING_Z:
            warnings.append(
                f"{thinned['observed']['repeat_share']:.2%} of outputs repeat their predecessor, "
                f"{thinned['excess_z']:.1f} standard errors above the expected "
                f"{thinned['expected']['share']:.2%}: chains stay at states whose odds the pilot draws did not "
                "test (often the calibration's top block); consider a larger --thin or the independent chains"
            )
    throughput = proposals_made / elapsed if proposals_made and elapsed > 0 else None
    manifest.body["stats"] = {
        "num_samples": rows, "acceptance_rate": acceptance, "restart_rate": restart_rate,
        "calibration_z_before": z_before, "calibration_z_after": z_after,
        "proposals_made_this_attempt": proposals_made, "warnings": warnings,
        "thin": layout.thin, "proposals_per_output": layout.num_proposals / rows,
        "repeat_share": None if thinned is None else thinned["observed"]["repeat_share"],
        "expected_repeat_share": None if thinned is None else thinned["expected"]["share"],
    }
    manifest.body["timings"].update({"pipeline_s": elapsed, "total_s": time.monotonic() - began,
                                     "proposals_per_s": throughput})
    manifest.finish()
    return RunSummary(
        output=store.uri, status="complete", num_samples=rows, picker=sampling.picker,
        chain_length=sampling.chain_length, acceptance_rate=acceptance, restart_rate=restart_rate,
        calibration_z_before=z_before, calibration_z_after=z_after, proposals_per_s=throughput,
        seconds=time.monotonic() - began, warnings=warnings, **_thinning_summary(manifest.body["stats"]),
        recovery=recovery.to_json(),
    )


def _thinning_summary(stats: dict[str, Any]) -> dict[str, Any]:
    return {name: stats.get(name) for name in ("thin", "proposals_per_output", "repeat_share",
                                                "expected_repeat_share")}


def _thinning_stats(choice: dict[str, Any], layout: ChainLayout, outputs_per_chain: np.ndarray,
                    repeats_per_chain: np.ndarray) -> dict[str, Any]:
    """The manifest's ``thinning``: the calibration's choice of T, and the repeats observed."""
    expected = thinning.RepeatEstimate(**{k: v for k, v in choice["expected"].items() if k != "share"})
    tally = thinning.RepeatTally.from_counts(outputs_per_chain, repeats_per_chain.astype(np.int64))
    z = tally.excess_z(expected)
    return {**choice, "observed": tally.to_json(), "excess_z": None if math.isnan(z) else z,
            "proposals_per_output": layout.num_proposals / layout.num_samples,
            "outputs_per_chain": layout.outputs_per_chain, "chain_proposals": layout.chain_proposals}

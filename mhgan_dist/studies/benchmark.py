"""The benchmarks of ``jobs.benchmark``: the job and the actor's code against a bare G+D loop, the MH
kernel, and peak memory against run size.

`default` is the headline: ``python -m jobs.generate`` exactly as a user runs it,
no resource, batch or thread flags, against the best bare G+D loop (over thread
layouts and batch sizes) on the same cores, end to end. `pipeline` runs the
job in this process with 1 and 2 actors against the bare loop; `worker` times
the proposal actor's scoring code alone; `pickers` the vectorised MH kernel
against a one-chain loop; `load` the peak memory of runs of several sizes.
Each suite returns its figures as a dict and as (figure, value) rows
(:func:`run_benchmark`); it measures, and asserts nothing about speed.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mhgan_dist.core import pickers, streams
from mhgan_dist.core.streams import Stream
from mhgan_dist.run.record import read_run

__all__ = ["SUITES", "BenchmarkConfig", "BenchmarkResult", "run_benchmark", "bench_pickers", "bench_pipeline",
           "bench_worker", "bench_default", "bench_load", "bare_loop", "bare_layouts", "best_bare_layouts",
           "full_job", "default_job", "usable_cores", "is_image_model", "default_bench_batch_size",
           "append_markdown", "BARE_BATCH_SIZES"]

SUITES = ("default", "pickers", "pipeline", "worker", "load")


def _plain_loop_mh(logits: np.ndarray, initial: np.ndarray, exponentials: np.ndarray) -> np.ndarray:
    """The one-chain-at-a-time baseline (no restart pass: it only times the inner loop)."""
    picked = np.full(logits.shape[0], -1, dtype=np.int64)
    for c in range(logits.shape[0]):
        current = float(initial[c])
        for k in range(logits.shape[1]):
            if current - logits[c, k] <= exponentials[c, k]:
                current = float(logits[c, k])
                picked[c] = k
    return picked


def bench_pickers(num_proposals: int, chain_length: int, repeats: int) -> dict:
    """MH throughput in proposals/s, random draws included, against the plain loop."""
    chains = num_proposals // chain_length
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 2.0, size=(chains, chain_length)).astype(np.float32)
    initial = rng.normal(0.0, 2.0, size=chains).astype(np.float32)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        exps = streams.chain_exponentials(0, Stream.MH_STEPS, 0, chains, chain_length)
        pickers.mh(
            logits,
            initial,
            exps,
            lambda rows: streams.chain_exponentials_at(0, Stream.MH_RESTART, rows, chain_length - 1),
        )
        timings.append(time.perf_counter() - start)
    best = min(timings)
    loop_chains = max(1, min(chains, 200_000 // chain_length))
    start = time.perf_counter()
    _plain_loop_mh(logits[:loop_chains], initial[:loop_chains], exps[:loop_chains])
    loop_rate = loop_chains * chain_length / (time.perf_counter() - start)
    rate = chains * chain_length / best
    return {
        "suite": "pickers",
        "proposals": chains * chain_length,
        "chain_length": chain_length,
        "dtype": "float32",
        "threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "mh_seconds_best_of": [round(t, 4) for t in timings],
        "mh_proposals_per_s": rate,
        "plain_loop_proposals_per_s": loop_rate,
        "speedup_vs_plain_loop": rate / loop_rate,
        "target_proposals_per_s": 5e7,
    }


def _export_dcgan32(directory: Path, seed: int = 0) -> Path:
    """A randomly initialised DCGAN at 32x32 (ngf = ndf = 64), exported as a model directory."""
    import torch

    from mhgan_dist.models import save_model_dir
    from mhgan_dist.models.architectures import build_pair

    torch.manual_seed(seed)
    generator, discriminator = build_pair("dcgan", (3, 32, 32), latent_dim=100)
    real = np.random.default_rng(seed).uniform(-1, 1, size=(512, 3, 32, 32)).astype(np.float32)
    save_model_dir(directory, generator.eval(), discriminator.eval(), latent_dim=100, sample_shape=(3, 32, 32),
                   real=real, metadata={"dataset": "random", "architecture": "dcgan", "note": "benchmark only"})
    return directory


def bare_loop(model_dir: str, threads: int, batch_size: int, seconds: float, device: str = "cpu",
              precision: str = "fp32", channels_last: bool = False) -> float:
    """Proposals/s of G then D in a plain PyTorch loop (inference mode, one process).

    ``channels_last``: convolutions on NHWC weights, as the actors run image
    models; without it the loop is the one a user writes. On CUDA the loop
    always does what an actor does for speed (latents made on the device,
    channels-last convolutions, autocast at ``precision``) and synchronises
    before reading the clock.
    """
    import torch

    from mhgan_dist.models import load_pair, resolve_model
    from mhgan_dist.pipeline.devices import autocast_dtype

    torch.set_num_threads(threads)
    target = torch.device(device)
    pair = load_pair(resolve_model(model_dir), target)
    if (channels_last or target.type == "cuda") and len(pair.sample_shape) == 3:
        pair.generator.to(memory_format=torch.channels_last)
        pair.discriminator.to(memory_format=torch.channels_last)
    dtype = autocast_dtype(precision)

    def step() -> None:
        z = torch.randn(batch_size, pair.latent_dim, device=target)
        with torch.autocast(target.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            pair.discriminator(pair.generator(z)).float()

    def sync() -> None:
        if target.type == "cuda":
            torch.cuda.synchronize()

    done = 0
    with torch.inference_mode():
        step()  # warm-up
        sync()
        began = time.perf_counter()
        while time.perf_counter() - began < seconds:
            step()
            done += batch_size
        sync()
    return done / (time.perf_counter() - began)


def _bare_worker(args: tuple) -> float:
    return bare_loop(*args)


def bare_processes(model_dir: str, processes: int, batch_size: int, seconds: float,
                   channels_last: bool = False) -> float:
    """Summed proposals/s of ``processes`` one-thread CPU bare loops running at once."""
    import multiprocessing

    work = [(model_dir, 1, batch_size, seconds, "cpu", "fp32", channels_last)] * processes
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        return float(sum(pool.map(_bare_worker, work)))


def bare_layouts(model_dir: str, batch_size: int, seconds: float, device: str, precision: str,
                 cores: int, channels_last: bool = False) -> dict[str, float]:
    """The bare loop in each layout the jobs use: one process per thread count, and on CPU
    as many one-thread processes as cores at once (what several one-thread actors could reach)."""
    if device == "cuda":
        return {"1 process": bare_loop(model_dir, cores, batch_size, seconds, device, precision)}
    rates = {f"1 process x {t} thread(s)": bare_loop(model_dir, t, batch_size, seconds, channels_last=channels_last)
             for t in sorted({1, cores})}
    if cores > 1:
        rates[f"{cores} processes x 1 thread"] = bare_processes(model_dir, cores, batch_size, seconds, channels_last)
    return rates


def full_job(model_dir: str, output: Path, *, num_samples: int, chain_length: int, num_actors: int,
             threads: int, batch_size: int, num_cpus: int, device: str = "cpu", precision: str = "fp32",
             num_gpus: int = 0) -> dict:
    """The whole job in this process, Ray start-up included; its manifest's timings."""
    import ray

    from mhgan_dist.run.config import build_job_config
    from mhgan_dist.pipeline.driver import run_job

    began = time.perf_counter()
    ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    try:
        options = {
            "model": model_dir, "num_samples": num_samples, "chain_length": chain_length,
            "num_actors": num_actors, "torch_threads": threads, "batch_size": batch_size,
            "output": str(output), "device": device, "precision": precision,
        }
        if num_gpus:
            options["gpus_per_actor"] = num_gpus / num_actors
        summary = run_job(build_job_config(options), show_progress=False, log=lambda m: None)
    finally:
        ray.shutdown()
    wall = time.perf_counter() - began
    run = read_run(str(output), complete=True)
    timings = run.timings
    proposals = num_samples * chain_length
    shard_bytes = sum(record.bytes for path, record in run.files.items() if path.startswith("proposals/"))
    return {
        "num_actors": num_actors, "threads_per_actor": threads, "proposals": proposals,
        "end_to_end_s": wall, "end_to_end_proposals_per_s": proposals / wall,
        "startup_s": wall - timings["pipeline_s"],
        "steady_proposals_per_s": timings.get("steady_proposals_per_s"),
        "stage_s": {k: timings.get(k) for k in ("calibration_s", "proposal_stage_s", "proposal_busy_s",
                                                  "chains_busy_s", "materialise_busy_s", "pipeline_s")},
        "bytes_per_proposal": shard_bytes / proposals,
        "peak_rss_mib": {"driver": timings["driver_peak_rss"] / 2**20,
                         "actor": (timings.get("actor_peak_rss") or 0) / 2**20,
                         "chain_worker": timings["chain_worker_peak_rss"] / 2**20},
        "acceptance_rate": summary.acceptance_rate,
    }


BARE_BATCH_SIZES = (128, 256, 512)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. under ``taskset``), not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


NHWC = ", NHWC"  # in a bare layout's name: the loop ran channels-last convolutions, as the actors do


def _sample_shape(model_dir: str) -> list[int]:
    """The sample shape its model.json records; [] when it records none."""
    from mhgan_dist.models.metadata import read_model_json, shipped_or_given_directory

    return list(read_model_json(shipped_or_given_directory(model_dir)).get("sample_shape") or ())


def is_image_model(model_dir: str) -> bool:
    return len(_sample_shape(model_dir)) == 3


def best_bare_layouts(model_dir: str, cores: int, seconds: float) -> dict[str, float]:
    """Proposals/s of the bare CPU loop in every thread layout x batch size in :data:`BARE_BATCH_SIZES`,
    for image models both as a user writes it and with channels-last convolutions (names with NHWC)."""
    formats = (False, True) if is_image_model(model_dir) else (False,)
    return {f"{layout}{NHWC if channels_last else ''}, batch {batch}": rate
            for channels_last in formats
            for batch in BARE_BATCH_SIZES
            for layout, rate in bare_layouts(model_dir, batch, seconds, "cpu", "fp32", cores,
                                             channels_last).items()}


def _bracket_best(before: dict[str, float], after: dict[str, float], plain_only: bool = False) -> tuple[float, str]:
    """(rate, layout) of the layout with the best mean over a job's two bracketing sweeps."""
    return max(((before[k] + after[k]) / 2, k) for k in after if not (plain_only and NHWC in k))


def default_job(model_dir: str, output: Path, *, num_samples: int, chain_length: int, cores: int) -> dict:
    """``python -m jobs.generate`` as a user types it (no resource, batch or thread flags) in a fresh process.

    The wall time runs from the command's start to its exit: interpreter and
    imports, Ray start-up, calibration, proposals, chains, materialisation and
    Ray shut-down. Ray sizes a local node by the machine's core count, not by
    the process's CPU affinity, so when this process is restricted to fewer
    cores (``taskset``) the job gets ``--num-cpus`` = those cores: what Ray
    would detect on a machine of that size.
    """
    command = [sys.executable, "-m", "jobs.generate", "--model", model_dir, "--num-samples", str(num_samples),
               "--chain-length", str(chain_length), "--seed", "1", "--output", str(output), "--quiet"]
    if cores < (os.cpu_count() or cores):
        command += ["--num-cpus", str(cores)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    began = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"the default job failed (exit {done.returncode}): {done.stderr[-2000:]}")
    # "run ID: new, 2 proposal actor(s) on cpu (1 CPU and 0 GPU each), batch 256, fp32, 1 torch thread(s) each"
    started = [line.split(": ", 1)[1] for line in done.stderr.splitlines() if line.startswith("run ")]
    timings = read_run(str(output), complete=True).timings
    proposals = num_samples * chain_length
    return {
        "command": " ".join(shlex.quote(part) for part in command[1:]),
        "num_samples": num_samples, "proposals": proposals, "end_to_end_s": wall,
        "end_to_end_proposals_per_s": proposals / wall,
        "steady_proposals_per_s": timings.get("steady_proposals_per_s"),
        "pipeline_s": timings.get("pipeline_s"), "layout": started[0] if started else "not printed",
    }


def bench_default(model: str, durations: list[float], chain_length: int, workdir: Path, *,
                  bare_seconds: float = 15.0) -> dict:
    """The default layout, end to end, against the best bare loop on the same cores.

    Every job is bracketed by two sweeps of the bare loop over thread layouts
    and batch sizes, and for image models over memory formats too (the loop a
    user writes, and with the channels-last convolutions the actors run);
    its ratio is to the best layout's mean over its brackets, and, never
    flattering the job, to the best single bare figure of the run. Beside
    them, ``ratio_to_plain`` is to the best loop as a user writes it.
    A job of target ``seconds`` is sized so that its proposals would take
    ``seconds`` at the first sweep's best rate.
    """
    cores = usable_cores()
    model_dir = _model_dir(model, workdir)
    brackets = [best_bare_layouts(model_dir, cores, bare_seconds)]
    first_best = max(brackets[0].values())
    jobs = []
    for seconds in durations:
        num_samples = max(1, round(first_best * seconds / chain_length))
        job = default_job(model_dir, workdir / f"default-{cores}-cores-{seconds:g}s", num_samples=num_samples,
                          chain_length=chain_length, cores=cores)
        brackets.append(best_bare_layouts(model_dir, cores, bare_seconds))
        job["target_s"] = seconds
        job["bare_bracket_best"] = _bracket_best(brackets[-2], brackets[-1])
        job["ratio"] = job["end_to_end_proposals_per_s"] / job["bare_bracket_best"][0]
        job["plain_bracket_best"] = _bracket_best(brackets[-2], brackets[-1], plain_only=True)
        job["ratio_to_plain"] = job["end_to_end_proposals_per_s"] / job["plain_bracket_best"][0]
        jobs.append(job)
    best = max(rate for bracket in brackets for rate in bracket.values())
    for job in jobs:
        job["ratio_to_best_single"] = job["end_to_end_proposals_per_s"] / best
    return {"suite": "default", "model": model, "cores": cores, "chain_length": chain_length,
            "bare": brackets, "bare_best_single": best, "jobs": jobs}


def _default_rows(result: dict) -> list[tuple[str, str]]:
    tag = f"{result['model']}, {result['cores']} core(s)"
    rows = []
    for layout in result["bare"][0]:
        rows.append((f"{tag}: bare G+D loop, {layout}", ", ".join(f"{b[layout]:,.0f}/s" for b in result["bare"])))
    rows.append((f"{tag}: best single bare figure", f"{result['bare_best_single']:,.0f} proposals/s"))
    for job in result["jobs"]:
        rate, layout = job["bare_bracket_best"]
        name = f"{tag}: default job, about {job['target_s'] / 60:g} min"
        rows += [
            (f"{name}: command", f"`python {job['command']}`"),
            (f"{name}: proposals", f"{job['proposals']:,} (K={result['chain_length']}, {job['num_samples']:,} samples)"),
            (f"{name}: end to end", f"{job['end_to_end_s']:.1f} s, {job['end_to_end_proposals_per_s']:,.0f} "
                                    f"proposals/s (steady {job['steady_proposals_per_s'] or 0:,.0f}/s)"),
            (f"{name}: **ratio to the best bare loop**", f"**{job['ratio']:.3f}** (to {layout}: {rate:,.0f}/s, "
                                                         f"mean of its brackets; {job['ratio_to_best_single']:.3f} "
                                                         "to the best single figure)"),
        ]
        if job["plain_bracket_best"][1] != layout:
            plain_rate, plain_layout = job["plain_bracket_best"]
            rows.append((f"{name}: ratio to the best bare loop as a user writes it (no NHWC)",
                         f"{job['ratio_to_plain']:.3f} (to {plain_layout}: {plain_rate:,.0f}/s, mean of its brackets)"))
        rows += [
            (f"{name}: layout the job chose", job["layout"]),
        ]
    return rows


def _model_dir(model: str, workdir: Path) -> str:
    """The model to benchmark: a randomly initialised DCGAN for "dcgan32", else a name or directory."""
    return str(_export_dcgan32(workdir / "dcgan32")) if model == "dcgan32" else model


def default_bench_batch_size(model_dir: str, device: str) -> int:
    """On CPU the job's own batch for the model's samples (devices.default_batch_size); on a GPU, where
    the actors size it to free memory, a fixed large batch by sample size."""
    numel = int(np.prod(_sample_shape(model_dir) or [2]))
    if device == "cpu":
        import torch

        from mhgan_dist.pipeline.devices import default_batch_size

        return default_batch_size(torch.device("cpu"), numel)
    return 8192 if numel > 64 else 65_536


def bench_pipeline(model: str, seconds: float, chain_length: int, workdir: Path, *, device: str = "cpu",
                   precision: str = "fp32", batch_size: int | None = None) -> dict:
    """Bare loop vs the whole job on one model, with 1 and 2 proposal actors.

    The bare loop is measured in every layout before, between and after the
    jobs, so that each job is bracketed by two bare measurements: the shared
    machine's speed drifts by several per cent over minutes. A job's ratio is
    to the best layout's mean over its two brackets; its ratio to the best
    single bare figure of the whole run (the max of noisy measurements, which
    never flatters the job) is reported beside it.
    """
    cores = os.cpu_count() or 1
    model_dir = _model_dir(model, workdir)
    if batch_size is None:
        batch_size = default_bench_batch_size(model_dir, device)
    bare_seconds = min(30.0, seconds / 4)
    image = is_image_model(model_dir)  # the bare loop then runs channels-last, as the actors do
    brackets = [bare_layouts(model_dir, batch_size, bare_seconds, device, precision, cores, image)]
    # Enough samples for the proposal stage to last about `seconds` at the bare rate.
    num_samples = max(1, int(max(brackets[0].values()) * seconds / chain_length))
    result = {"suite": "pipeline", "model": model, "cores": cores, "chain_length": chain_length,
              "device": device, "precision": precision, "batch_size": batch_size, "num_samples": num_samples,
              "jobs": [], "bare": brackets}
    num_gpus = 1 if device == "cuda" else 0
    for actors in (1, 2):
        threads = max(1, cores // actors) if device == "cpu" else 1
        job = full_job(model_dir, workdir / f"{model}-{actors}", num_samples=num_samples,
                       chain_length=chain_length, num_actors=actors, threads=threads, batch_size=batch_size,
                       num_cpus=max(cores, actors + 1), device=device, precision=precision, num_gpus=num_gpus)
        brackets.append(bare_layouts(model_dir, batch_size, bare_seconds, device, precision, cores, image))
        job["bare_bracket_proposals_per_s"] = _bracket_best(brackets[-2], brackets[-1])[0]
        result["jobs"].append(job)
    best = max(rate for bracket in brackets for rate in bracket.values())
    result["bare_best_proposals_per_s"] = best
    for job in result["jobs"]:
        bare = job["bare_bracket_proposals_per_s"]
        job["steady_ratio"] = (job["steady_proposals_per_s"] or 0.0) / bare
        job["end_to_end_ratio"] = job["end_to_end_proposals_per_s"] / bare
        job["steady_ratio_to_best"] = (job["steady_proposals_per_s"] or 0.0) / best
        job["end_to_end_ratio_to_best"] = job["end_to_end_proposals_per_s"] / best
    return result


def bench_worker(model: str, seconds: float, rounds: int, workdir: Path, *, batch_size: int | None = None) -> dict:
    """The proposal actor's scoring code against the bare loop, in one process, on CPU.

    Alternates ``rounds`` times between the bare loop and ProposalWorker scoring
    proposal shards (counter-based latents, host copies of the logits), each for
    ``seconds`` at all cores' threads, so both see the same machine; no Ray runs.
    The bare loop runs image models channels-last, as the worker does: the
    ratio is the worker code's own cost.
    Also times the counter-based latents alone (what bounds one actor on a fast GPU).
    """
    from mhgan_dist.models import resolve_model
    from mhgan_dist.pipeline.proposals import ProposalWorker

    cores = os.cpu_count() or 1
    model_dir = _model_dir(model, workdir)
    worker = ProposalWorker(resolve_model(model_dir), seed=0, device="cpu", precision="fp32", torch_threads=cores)
    batch_size = batch_size or worker.batch_size  # the job's own CPU batch for this model's samples
    worker.configure(batch_size, "fp32")
    shard = 10 * batch_size

    def worker_rate() -> float:
        worker.score_stream(int(Stream.PROPOSALS), 0, batch_size)  # warm-up
        began, position = time.perf_counter(), 0
        while time.perf_counter() - began < seconds:
            worker.score_stream(int(Stream.PROPOSALS), position, position + shard)
            position += shard
        return position / (time.perf_counter() - began)

    channels_last = is_image_model(model_dir)
    bare, scored = [], []
    for _ in range(rounds):
        bare.append(bare_loop(model_dir, cores, batch_size, seconds, channels_last=channels_last))
        scored.append(worker_rate())
    latent_dim = worker.info().latent_dim
    rows, began = 0, time.perf_counter()
    while time.perf_counter() - began < min(seconds, 5.0):
        streams.latents(0, Stream.PROPOSALS, rows, rows + 8192, latent_dim)
        rows += 8192
    return {"suite": "worker", "model": model, "threads": cores, "batch_size": batch_size, "bare": bare,
            "worker": scored, "ratio": float(np.mean(scored) / np.mean(bare)),
            "latent_dim": latent_dim, "latent_rows_per_s": rows / (time.perf_counter() - began)}


def _worker_rows(result: dict) -> list[tuple[str, str]]:
    tag = f"{result['model']}, {result['threads']} thread(s), batch {result['batch_size']}"
    return [
        (f"{tag}: bare G+D loop, each round", ", ".join(f"{r:,.0f}/s" for r in result["bare"])),
        (f"{tag}: ProposalWorker scoring, each round", ", ".join(f"{r:,.0f}/s" for r in result["worker"])),
        (f"{tag}: ratio of the means", f"{result['ratio']:.3f}"),
        (f"counter-based latents, one thread, {result['latent_dim']} dimensions",
         f"{result['latent_rows_per_s']:,.0f} rows/s"),
    ]


def _pipeline_rows(result: dict) -> list[tuple[str, str]]:
    where = f"{result['device']}, {result['precision']}, batch {result['batch_size']}"
    when = ["before the jobs", "after job 1", "after job 2"]
    rows = [(f"{result['model']}: bare G+D loop, {layout} ({where})",
             ", ".join(f"{bracket[layout]:,.0f}/s {when[i]}" for i, bracket in enumerate(result["bare"])))
            for layout in result["bare"][0]]
    rows.append((f"{result['model']}: best single bare figure", f"{result['bare_best_proposals_per_s']:,.0f} proposals/s"))
    for job in result["jobs"]:
        tag = f"{result['model']}: job, {job['num_actors']} actor(s) x {job['threads_per_actor']} thread(s)"
        stages = ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in job["stage_s"].items() if v is not None)
        rows += [
            (f"{tag}: proposals", f"{job['proposals']:,} (K={result['chain_length']}, {result['num_samples']:,} samples)"),
            (f"{tag}: bare baseline (best layout, mean of its brackets)",
             f"{job['bare_bracket_proposals_per_s']:,.0f} proposals/s"),
            (f"{tag}: steady-state ratio to bare", f"{job['steady_ratio']:.3f} ({job['steady_proposals_per_s']:,.0f}/s; "
                                                    f"{job['steady_ratio_to_best']:.3f} to the best single figure)"),
            (f"{tag}: end-to-end ratio to bare", f"{job['end_to_end_ratio']:.3f} ({job['end_to_end_s']:.1f} s, "
                                                  f"start-up and calibration {job['startup_s']:.1f} s; "
                                                  f"{job['end_to_end_ratio_to_best']:.3f} to the best single figure)"),
            (f"{tag}: stages", stages),
            (f"{tag}: bytes on disk per proposal", f"{job['bytes_per_proposal']:.2f}"),
            (f"{tag}: peak memory (MiB)", ", ".join(f"{k} {v:,.0f}" for k, v in job["peak_rss_mib"].items())),
        ]
    return rows


def bench_load(model: str, sizes: list[int], chain_length: int, workdir: Path) -> dict:
    """Peak memory of driver, actor and chain worker for runs of each size (proposals)."""
    cores = os.cpu_count() or 1
    runs = []
    for proposals in sizes:
        num_samples = max(1, proposals // chain_length)
        job = full_job(model, workdir / f"load-{proposals}", num_samples=num_samples, chain_length=chain_length,
                       num_actors=1, threads=cores, batch_size=4096, num_cpus=cores)
        runs.append(job)
    return {"suite": "load", "model": model, "chain_length": chain_length, "runs": runs}


def _load_rows(result: dict) -> list[tuple[str, str]]:
    rows = []
    for job in result["runs"]:
        tag = f"{result['model']}: {job['proposals']:,} proposals"
        rows += [
            (f"{tag}: wall time", f"{job['end_to_end_s']:.1f} s ({job['end_to_end_proposals_per_s']:,.0f} proposals/s)"),
            (f"{tag}: peak memory (MiB)", ", ".join(f"{k} {v:,.0f}" for k, v in job["peak_rss_mib"].items())),
        ]
    return rows


def _machine() -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()}, {os.cpu_count()} cores, {device}, {platform.python_implementation()} "
            f"{platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}")


def append_markdown(path: Path, title: str, rows: list[tuple[str, str]], argv: list[str]) -> None:
    command = "python -m jobs.benchmark " + " ".join(shlex.quote(a) for a in argv)
    lines = [
        f"\n## {title} ({dt.date.today().isoformat()})\n",
        f"Command: `{command}`  \nMachine: {_machine()}\n",
        "| figure | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
    ]
    with path.open("a") as f:
        f.write("\n".join(lines))


# ------------------------------------------------------------------ suites by name


@dataclass(frozen=True)
class BenchmarkConfig:
    """One suite's settings, as ``jobs.benchmark SUITE`` takes them (a suite reads only its own).

    model: grid2d, dcgan32 (a randomly initialised DCGAN at 32x32) or a model
    directory. workdir: where runs are written (None: a new temporary folder).
    default: ``minutes`` (target lengths of the jobs' proposal work), ``bare_seconds``.
    pickers: ``num_proposals``, ``repeats``. pipeline: ``seconds`` (target length
    of the proposal stage), ``device``, ``precision``, ``batch_size``. worker:
    ``seconds`` (each measurement), ``rounds``, ``batch_size``. load: ``sizes``
    (proposals per run). Every suite: ``chain_length``. A setting's default here
    is only a placeholder for the suites that do not read it: jobs.benchmark
    passes each suite's flags with the suite's own defaults.
    """

    suite: str
    model: str = "grid2d"
    chain_length: int = 640
    workdir: Path | None = None
    minutes: tuple[float, ...] = (2.0, 4.0)
    bare_seconds: float = 15.0
    num_proposals: int = 10_000_000
    repeats: int = 5
    seconds: float = 120.0
    device: str = "cpu"
    precision: str = "fp32"
    batch_size: int | None = None
    rounds: int = 3
    sizes: tuple[int, ...] = (1_000_000, 10_000_000)


@dataclass(frozen=True)
class BenchmarkResult:
    """A suite's figures: ``result`` (JSON-ready), and ``rows`` of (figure, value) under ``title``."""

    title: str
    rows: list[tuple[str, str]]
    result: dict[str, Any]


def _workdir(config: BenchmarkConfig, prefix: str) -> Path:
    return config.workdir or Path(tempfile.mkdtemp(prefix=prefix))


def run_benchmark(config: BenchmarkConfig) -> BenchmarkResult:
    """Runs the suite ``config.suite`` (one of :data:`SUITES`)."""
    model = config.model
    if config.suite == "load":
        result = bench_load(model, list(config.sizes), config.chain_length, _workdir(config, "mhgan-load-"))
        return BenchmarkResult(f"Load: peak memory against run size, {model}", _load_rows(result), result)
    if config.suite == "default":
        result = bench_default(model, [60.0 * m for m in config.minutes], config.chain_length,
                               _workdir(config, "mhgan-default-"), bare_seconds=config.bare_seconds)
        title = f"Default layout (no flags) against the best bare loop: {model}, {result['cores']} core(s)"
        return BenchmarkResult(title, _default_rows(result), result)
    if config.suite == "worker":
        result = bench_worker(model, config.seconds, config.rounds, _workdir(config, "mhgan-worker-"),
                              batch_size=config.batch_size)
        return BenchmarkResult(f"Proposal actor code against the bare model: {model}", _worker_rows(result), result)
    if config.suite == "pipeline":
        workdir = _workdir(config, "mhgan-bench-")
        kernel = bench_pickers(1_000_000, config.chain_length, 3)["mh_proposals_per_s"]
        result = bench_pipeline(model, config.seconds, config.chain_length, workdir, device=config.device,
                                precision=config.precision, batch_size=config.batch_size)
        result["chain_kernel_proposals_per_s"] = kernel
        rows = _pipeline_rows(result) + [("chain kernel (mh, one core)", f"{kernel:.3g} proposals/s")]
        return BenchmarkResult(f"Pipeline against the bare model: {model}", rows, result)
    result = bench_pickers(config.num_proposals, config.chain_length, config.repeats)
    rows = [
        ("proposals (float32 scores)", f"{result['proposals']:,}"),
        ("chain length K", str(result["chain_length"])),
        ("vectorised mh, random draws included", f"{result['mh_proposals_per_s']:.3g} proposals/s"),
        ("plain one-chain loop", f"{result['plain_loop_proposals_per_s']:.3g} proposals/s"),
        ("speed-up over the plain loop", f"{result['speedup_vs_plain_loop']:.0f}x"),
        ("target", "5e+07 proposals/s"),
    ]
    return BenchmarkResult("MH picker kernel, one core", rows, result)

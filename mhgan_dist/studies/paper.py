"""The paper's toy experiments (grid2d, mixture1d) and the chain-length study, as ``jobs.reproduce`` runs them.

For each model and run seed, one pipeline MH run makes the proposals, and base,
DRS and raw-D MH re-pick the same proposals (same seed, no second G/D pass).
DRS with gamma = 0 is picked in this process from the same scores
(:func:`drs_gamma_zero`: the pipeline has no gamma = 0 option). Every (epoch or
K, seed, method) row holds the paper's mode metrics, acceptance and restart
rates; WORK/results.json holds the rows, WORK/results.md the table over seeds.
Runs already complete in WORK are reused. Needs Ray for the runs it makes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mhgan_dist.errors import ConfigError
from mhgan_dist.studies.runs import ChainOptions, StudyLog, ensure_run, run_config

__all__ = ["ToyExperiment", "ChainLengthStudy", "toy_experiment", "chain_length_study", "drs_gamma_zero"]


@dataclass(frozen=True)
class ToyExperiment:
    """The paper's comparison on a toy dataset over training epochs.

    dataset: "grid2d" or "mixture1d". models: a jobs.train output with
    epoch-NNN/ folders to use, or None to train into WORK/model (seed
    ``train_seed``, saving every epoch of ``epochs``). Per epoch and seed:
    ``num_samples`` samples per method at K = ``chain_length``.
    """

    dataset: str
    work: Path
    models: Path | None
    epochs: tuple[int, ...]
    seeds: tuple[int, ...]
    num_samples: int
    chain_length: int
    chain: ChainOptions
    num_actors: int | None = None
    train_seed: int = 0


@dataclass(frozen=True)
class ChainLengthStudy:
    """Quality against K on one toy model: every K in ``lengths`` re-picks the proposals of a run at the largest."""

    model: str
    work: Path
    lengths: tuple[int, ...]
    seeds: tuple[int, ...]
    num_samples: int
    chain: ChainOptions
    num_actors: int | None = None


def toy_experiment(config: ToyExperiment, *, start_ray: Callable[[], object], log: StudyLog) -> None:
    """Trains (or takes) the models, compares the methods per epoch and seed, writes WORK/results.{json,md}
    and WORK/report/ (the last epoch's first seed), and prints the table."""
    from mhgan_dist.report import evaluate_runs
    from mhgan_dist.report.paper import grid_table, mixture_table

    work = config.work
    work.mkdir(parents=True, exist_ok=True)
    root = config.models or _train(config.dataset, work, config.epochs, config.train_seed, log)
    start_ray()
    began = time.monotonic()
    rows = []
    for epoch in config.epochs:
        model = _model_dir(root, epoch)
        for seed in config.seeds:
            out = work / "runs" / f"epoch-{epoch:03d}" / f"seed-{seed}"
            for row in _paired(config.dataset, model, out, seed, config.num_samples, config.chain_length, log,
                               num_actors=config.num_actors, chain=config.chain):
                rows.append({"epoch": epoch, **row})
    settings = {"dataset": config.dataset, "models": str(root), "epochs": list(config.epochs),
                "seeds": list(config.seeds), "num_samples": config.num_samples, "chain_length": config.chain_length,
                **config.chain.to_json(), "seconds": round(time.monotonic() - began)}
    table = grid_table(rows) if config.dataset == "grid2d" else mixture_table(rows)
    _write_results(work, f"{config.dataset}: base, DRS and MH-GAN on the same proposals", rows, table, settings)
    last = work / "runs" / f"epoch-{max(config.epochs):03d}" / f"seed-{config.seeds[0]}"
    report = evaluate_runs([str(last / m) for m in ("base", "drs", "mh-raw", "mh")], str(work / "report"))
    print(table)
    print(f"results: {work / 'results.md'}\nreport: {report.html}")


def chain_length_study(config: ChainLengthStudy, *, start_ray: Callable[[], object], log: StudyLog) -> None:
    """Compares the methods at every K on each seed's proposals, writes WORK/results.{json,md}, prints the table.
    ConfigError unless the model is a grid2d or mixture1d one."""
    from mhgan_dist.models import resolve_model
    from mhgan_dist.quality.scores import TOY_KINDS, model_kind
    from mhgan_dist.report.paper import chain_length_table

    work = config.work
    work.mkdir(parents=True, exist_ok=True)
    kind, _ = model_kind(resolve_model(config.model))
    if kind not in TOY_KINDS:
        raise ConfigError(f"chain-length needs a grid2d or mixture1d model, not {config.model}")
    start_ray()
    began = time.monotonic()
    rows = []
    for seed in config.seeds:
        rows += _paired(kind, config.model, work / "runs" / f"seed-{seed}", seed, config.num_samples,
                        max(config.lengths), log, lengths=sorted(config.lengths), num_actors=config.num_actors,
                        chain=config.chain)
    settings = {"model": config.model, "seeds": list(config.seeds), "num_samples": config.num_samples,
                "lengths": list(config.lengths), **config.chain.to_json(), "seconds": round(time.monotonic() - began)}
    table = chain_length_table(rows)
    _write_results(work, "quality against chain length K", rows, table, settings)
    print(table)
    print(f"results: {work / 'results.md'}")


# ------------------------------------------------------------------ models


def _train(dataset: str, work: Path, epochs: tuple[int, ...], seed: int, log: StudyLog) -> Path:
    """The model folder: WORK/model (last epoch) with epoch-NNN/ for the others; trained unless present."""
    from mhgan_dist.training.gan import train_and_save
    from mhgan_dist.training.setup import make_config

    root = work / "model"
    final = max(epochs)
    if (root / "model.json").exists():
        log(f"reusing the trained models in {root}")
        return root
    cfg = make_config(dataset, epochs=final, save_epochs=[e for e in epochs if e != final], seed=seed)
    log(f"training {dataset} for {final} epochs (saving {sorted(set(epochs))}) into {root}")
    train_and_save(cfg, root, log=log)
    return root


def _model_dir(root: Path, epoch: int) -> Path:
    """The model of ``epoch`` in a jobs.train output: epoch-NNN/, or the root when it is the final epoch."""
    from mhgan_dist.models.metadata import read_model_json

    saved = root / f"epoch-{epoch:03d}"
    if saved.is_dir():
        return saved
    recorded = read_model_json(root).get("epochs")
    if recorded == epoch:
        return root
    raise ConfigError(f"{root} holds no model of epoch {epoch} (no {saved.name}/, and its model.json is of epoch {recorded})")


# ------------------------------------------------------------------ the comparison


def drs_gamma_zero(source: Path, drs_run: Path, model: Path | str, seed: int, num_samples: int,
                   chain_length: int) -> tuple[np.ndarray, np.ndarray]:
    """DRS with gamma = 0 on ``source``'s proposals: (samples [n, *shape], passed tests per chain [n]).

    The pipeline's DRS takes gamma only as a per-chain percentile, so this
    applies :func:`mhgan_dist.core.pickers.drs` with gamma = 0 to the scores, and
    with the calibrator, pilot maximum and uniforms, of the pipeline DRS run
    ``drs_run`` on the same proposals, and rebuilds the picked samples with a
    proposal worker in this process.
    """
    from mhgan_dist.core import calibrators, pickers, streams
    from mhgan_dist.models import resolve_model
    from mhgan_dist.pipeline.calibration import CALIBRATOR_PATH, REPORT_PATH
    from mhgan_dist.pipeline.chains import ProposalLayout, read_scores
    from mhgan_dist.pipeline.proposals import ProposalWorker
    from mhgan_dist.run.record import read_run
    from mhgan_dist.run.store import RunStore

    run = read_run(str(source), complete=True)
    recorded = run.layout
    assert recorded is not None and recorded.thin is None, source  # a study's own independent-chains run
    layout = ProposalLayout(run.store, recorded.shard_proposals, recorded.num_proposals)
    raw = read_scores(layout, 0, num_samples * chain_length).reshape(num_samples, chain_length)
    drs = RunStore(str(drs_run))
    calibrator = calibrators.calibrator_from_json(drs.read_json(CALIBRATOR_PATH))
    logits = calibrator.predict_logit(raw.reshape(-1).astype(np.float64)).reshape(raw.shape)
    pilot_raw = float(drs.read_json(REPORT_PATH)["pilot_max_raw"])
    pilot = float(calibrator.predict_logit(np.array([pilot_raw]))[0])
    uniforms = streams.chain_uniforms(seed, streams.Stream.DRS_STEPS, 0, num_samples, chain_length)
    result = pickers.drs(logits, pilot, uniforms, gamma=0.0)
    worker = ProposalWorker(resolve_model(str(model)), seed=seed, device="cpu")
    resources = run.identity.resources
    worker.configure(resources.batch_size, resources.precision)
    samples = worker.generate(np.arange(num_samples, dtype=np.int64) * chain_length + result.picked)
    return samples, result.accepts


def _row(kind: str, samples: np.ndarray, stats: dict[str, Any], accepts: np.ndarray, **keys: Any) -> dict[str, Any]:
    """Metrics of one method's samples; ``no_accept_share``: chains whose emitted pass accepted nothing
    (for DRS: no proposal passed, so the highest-scoring one was emitted)."""
    from mhgan_dist.quality.scores import toy_quality

    return {**keys, **toy_quality(kind, samples), "acceptance_rate": stats.get("acceptance_rate"),
            "restart_rate": stats.get("restart_rate"), "no_accept_share": float(np.mean(accepts == 0))}


def _paired(kind: str, model: Path | str, out: Path, seed: int, n: int, k: int, log: StudyLog,
            lengths: list[int] | None = None, num_actors: int | None = None,
            chain: ChainOptions = ChainOptions()) -> list[dict[str, Any]]:
    """Every method on one seed's proposals; with ``lengths``, every K of them re-picks the largest K's.

    chain: the calibration of the mh and drs rows, and the odds options of the mh,
    mh-raw and drs rows (see jobs.generate).
    """
    from mhgan_dist.report.runs import load_run

    calibrated = chain.calibration
    odds = {"odds_power": chain.odds_power, "odds_cap_quantile": chain.odds_cap_quantile}
    source = out / "mh"
    ensure_run(run_config(model, source, picker="mh", seed=seed, num_samples=n, chain_length=k,
                          num_actors=num_actors, calibration=calibrated, **odds), log)
    rows = []
    for length in lengths or [k]:
        suffix = "" if lengths is None else f"-k{length}"
        runs = {"mh": source} if length == k else {}
        plan = {"base": ("base", "isotonic"), "drs": ("drs", calibrated), "mh-raw": ("mh", "none")}
        if length != k:
            plan["mh"] = ("mh", calibrated)
        for method, (picker, calibration) in plan.items():
            target = out / f"{method}{suffix}"
            ensure_run(run_config(model, target, picker=picker, seed=seed, num_samples=n, chain_length=length,
                                  calibration=calibration, num_actors=num_actors, **odds), log, source=source)
            runs[method] = target
        for method, path in runs.items():
            run = load_run(str(path))
            rows.append(_row(kind, run.samples, run.stats, run.accepts, seed=seed, chain_length=length, method=method,
                             run=str(path)))
        samples, accepts = drs_gamma_zero(source, runs["drs"], model, seed, n, length)
        rows.append(_row(kind, samples, {}, accepts, seed=seed, chain_length=length, method="drs-gamma0",
                         run=str(source)))
    return rows


def _write_results(work: Path, name: str, rows: list[dict[str, Any]], table: str, settings: dict[str, Any]) -> None:
    (work / "results.json").write_text(json.dumps({"experiment": name, "settings": settings, "rows": rows},
                                                  indent=1, default=str) + "\n")
    lines = [f"# {name}", "", "Settings: " + ", ".join(f"{k} = {v}" for k, v in settings.items()), "",
             "Mean ± sample standard deviation over the run seeds (one trained model; the seeds change the "
             "proposals, chains and calibration draws).", "", table, ""]
    (work / "results.md").write_text("\n".join(lines))

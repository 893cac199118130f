r"""Reproduce the paper's toy experiments and run the calibrator study: `python -m jobs.reproduce EXPERIMENT ...`.

    python -m jobs.reproduce grid2d --work runs/reproduce/grid2d           # train 150 epochs, then compare
    python -m jobs.reproduce mixture1d --work runs/reproduce/mixture1d
    python -m jobs.reproduce chain-length --work runs/reproduce/k          # quality against K on grid2d
    python -m jobs.reproduce calibrator-study --work runs/study --model fashion \
        --discriminators joint=fashion,refit=runs/fashion-refit,ratio=runs/fashion-ratio \
        --lengths 10,40,160 --seeds 0,1 --num-samples 2000                  # screening
    python -m jobs.reproduce calibrator-study --work runs/study --model fashion \
        --discriminators joint=fashion,refit=runs/fashion-refit,ratio=runs/fashion-ratio \
        --confirm auto --seeds 2,3,4 --num-samples 5000                     # confirmation
    python -m jobs.reproduce digits-classifier --output mhgan_dist/checkpoints/digits-classifier
    python -m jobs.reproduce fashion-classifier --output mhgan_dist/checkpoints/fashion-classifier

grid2d, mixture1d: train the paper's MLP GAN (jobs.train's settings) saving
the --epochs checkpoints, or take them from --models DIR (a jobs.train output
with epoch-NNN/ folders). For each epoch and run seed, one MH run makes the
proposals, and base, DRS and raw-D MH re-pick the same proposals (same seed,
no second G/D pass). DRS with gamma = 0 is picked in this process from the
same scores (the pipeline has no gamma = 0 option yet). The metrics of
every (epoch, seed, method) go to WORK/results.json, and a table over seeds
beside the paper's values to WORK/results.md; WORK/report/ holds the report
of the last epoch's first seed.

chain-length: the same on one model (default: the shipped grid2d) for several
K, every K re-picking the proposals of one run at the largest K.

calibrator-study: which discriminator, calibrator, tempering b and K make MH
best, on any grid2d, mixture1d, fashion or digits model (--model; the
discriminators compared are model directories with the same G, named in
--discriminators, default joint=--model). Per (D, seed), one pipeline MH run
at the largest K (WORK/runs/D/seed-S/mh, reused when complete) makes the
proposals; every row (base at each K; DRS per calibrator, b = 1; MH per
calibrator and b) re-picks them in this process with the pipeline's own
calibration fit and random streams (the picks equal jobs.repick's), rebuilds
the picked samples with G, and scores them: FID, IS analogue, precision,
recall, density, coverage and class mix for image models (the shipped
classifier's features), JS, HQ share and modes for the toys; acceptance and
restart rates for all. Each row is appended to WORK/results.jsonl as it
finishes, and a re-run skips the rows there. WORK/results.md has the table
(mean +- sd over seeds), the class mix, the seconds each part took, and the
setting the selection rule chooses (mhgan_dist.studies.calibrator.SELECTION_RULE:
lowest mean FID, JS for the toys; ties within 2 paired sd go to the smaller
K, the simpler calibrator, b = 1, the first listed D); figures: the metric
against K, precision against recall. --confirm auto (or D:CALIBRATION:B:K)
measures that setting against base and DRS (isotonic b = 1, and the chosen
calibrator and b) on the same proposals of other seeds, into WORK/confirm/:
the paired differences, the issue's checks, and base beside MH as samples.

The smallest run, a smoke test of the whole chain (four tiny runs on the shipped grid2d):

    python -m jobs.reproduce chain-length --work /tmp/k --lengths 4 --seeds 0 --num-samples 16 --num-actors 1

Work already finished in WORK (models, complete runs, study rows) is reused on a re-run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from jobs.cli import add_common_flags, init_ray, run_main
from mhgan_dist.errors import ConfigError

EXPERIMENTS = ("grid2d", "mixture1d", "chain-length", "calibrator-study", "digits-classifier",
               "fashion-classifier")
# Simplest first, the order of the selection rule's calibrator tie-break (mhgan_dist.studies.calibrator).
STUDY_CALIBRATIONS = ("none", "isotonic", "isotonic-capped", "platt", "beta")


def _comma_separated(text: str, convert, what: str) -> list:
    try:
        values = [convert(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}s, not {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one {what}")
    return values


def _ints(text: str) -> list[int]:
    return _comma_separated(text, int, "integer")


def _floats(text: str) -> list[float]:
    return _comma_separated(text, float, "number")


def _names(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("expected at least one name")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=EXPERIMENTS)
    p.add_argument("--work", help="working folder for models, runs and results (toy experiments, calibrator-study; required)")
    p.add_argument("--models", metavar="DIR", help="a jobs.train output to use instead of training")
    p.add_argument("--model", default="grid2d",
                   help="chain-length, calibrator-study: shipped model name or model directory")
    p.add_argument("--epochs", type=_ints, default=[10, 30, 60, 150], metavar="E1,E2,...",
                   help="training epochs to compare (default: 10,30,60,150); the largest is trained")
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2], metavar="S1,S2,...", help="run seeds (default: 0,1,2)")
    p.add_argument("--num-samples", type=int, default=10_000, help="samples per method and run (default: 10000)")
    p.add_argument("--chain-length", type=int, default=640, help="K (default: 640)")
    p.add_argument("--lengths", type=_ints, default=[10, 40, 160, 640], metavar="K1,K2,...",
                   help="chain-length: the K values (default: 10,40,160,640)")
    p.add_argument("--num-actors", type=int, metavar="N",
                   help="proposal actors per run (default: as jobs.generate); 1 starts fastest on a small machine")
    p.add_argument("--calibration", default="isotonic", metavar="NAME|PATH.json",
                   help="calibration of the mh and drs rows: isotonic (default, the paper's), isotonic-capped, "
                        "platt, beta, or a saved .json (mh-raw stays uncalibrated, base needs none)")
    p.add_argument("--odds-power", type=float, default=1.0, metavar="B",
                   help="tempering of the mh, mh-raw and drs rows: target p_G x odds^B (default: 1, the paper's)")
    p.add_argument("--odds-cap-quantile", type=float, metavar="Q",
                   help="cap the chains' odds at the Q-quantile of the generated calibration draws (default: none)")
    study = p.add_argument_group("calibrator-study")
    study.add_argument("--discriminators", metavar="NAME=MODEL,...",
                       help="the discriminators compared, each a model directory (or shipped name) with the same G, "
                            "in order of preference for the selection rule's last tie-break (default: joint=--model)")
    study.add_argument("--calibrations", type=_names, default=list(STUDY_CALIBRATIONS), metavar="C1,C2,...",
                       help="calibrators of the mh and drs rows (default: none,isotonic,isotonic-capped,platt,beta)")
    study.add_argument("--odds-powers", type=_floats, default=[1.0, 0.5, 0.25], metavar="B1,B2,...",
                       help="tempering b of the mh rows (default: 1,0.5,0.25); drs rows use b = 1")
    study.add_argument("--confirm", metavar="auto|D:CALIBRATION:B:K",
                       help="confirmation instead of screening: the setting the selection rule chose from WORK's "
                            "screening (auto), or one given, against base and DRS, into WORK/confirm/")
    p.add_argument("--train-seed", type=int, default=0, help="training seed (default: 0)")
    p.add_argument("--output", help="digits-classifier, fashion-classifier: folder to write (default: the shipped "
                   "location)")
    p.add_argument("--classifier-epochs", type=int,
                   help="digits-classifier, fashion-classifier: epochs (default: 20 and 3)")
    p.add_argument("--data-root", help="fashion-classifier: the Fashion-MNIST IDX folder (default: Debian's)")
    p.add_argument("--torch-threads", type=int, default=2,
                   help="fashion-classifier, calibrator-study: torch threads in this process (default: 2)")
    p.add_argument("--quiet", action="store_true")
    add_common_flags(p)
    return p


# ------------------------------------------------------------------ helpers


class _Log:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.started:7.1f} s] {message}", file=sys.stderr, flush=True)


def _train(dataset: str, work: Path, epochs: list[int], seed: int, log: _Log) -> Path:
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
    saved = root / f"epoch-{epoch:03d}"
    if saved.is_dir():
        return saved
    recorded = json.loads((root / "model.json").read_text()).get("epochs") if (root / "model.json").exists() else None
    if recorded == epoch:
        return root
    raise ConfigError(f"{root} holds no model of epoch {epoch} (no {saved.name}/, and its model.json is of epoch {recorded})")


def _config(model: Path | str, output: Path, *, picker: str, seed: int, num_samples: int, chain_length: int,
            calibration: str = "isotonic", num_actors: int | None = None, odds_power: float = 1.0,
            odds_cap_quantile: float | None = None):
    from mhgan_dist.run.config import build_job_config

    resources = {} if num_actors is None else {"num_actors": num_actors}
    odds = {} if picker == "base" else {"odds_power": odds_power, "odds_cap_quantile": odds_cap_quantile}
    return build_job_config({
        "model": str(model), "output": str(output), "picker": picker, "seed": seed, "num_samples": num_samples,
        "chain_length": chain_length, "calibration": calibration, **resources, **odds,
    })


def _run(config, log: _Log, source: Path | None = None) -> None:
    from mhgan_dist.pipeline.driver import run_job

    out = Path(config.output.output)
    if (out / "_SUCCESS").exists():
        # Reused without the driver: its identity check would also refuse runs made before a
        # change of the run format that does not affect the rows compared here.
        from mhgan_dist.run.config import ODDS_OPTION_DEFAULTS

        # Runs recorded before the odds options existed ran at their defaults.
        recorded = {**ODDS_OPTION_DEFAULTS, **json.loads((out / "manifest.json").read_text())["config"]["sampling"]}
        if recorded != dataclasses.asdict(config.sampling):
            raise ConfigError(f"{out} holds a run of other settings; remove it or use another --work")
        log(f"reusing the complete run {out}")
        return
    summary = run_job(config, source_run=None if source is None else str(source), show_progress=False,
                      log=lambda message: None)
    log(summary.lines()[0] + f" ({summary.seconds:.1f} s)")


def _drs_gamma_zero(source: Path, drs_run: Path, model: Path | str, seed: int, num_samples: int,
                    chain_length: int) -> tuple[np.ndarray, np.ndarray]:
    """DRS with gamma = 0 on ``source``'s proposals: (samples [n, *shape], passed tests per chain [n]).

    The pipeline's DRS takes gamma only as a per-chain percentile, so this
    applies :func:`mhgan_dist.core.pickers.drs` with gamma = 0 to the scores, and
    with the calibrator, pilot maximum and uniforms, of the pipeline DRS run
    ``drs_run`` on the same proposals, and rebuilds the picked samples with a
    proposal worker in this process.
    """
    from mhgan_dist.core import calibrators
    from mhgan_dist.core import pickers
    from mhgan_dist.core import streams
    from mhgan_dist.models import resolve_model
    from mhgan_dist.pipeline.calibration import CALIBRATOR_PATH, REPORT_PATH
    from mhgan_dist.pipeline.chains import ProposalLayout, read_scores
    from mhgan_dist.pipeline.proposals import ProposalWorker
    from mhgan_dist.run.store import RUN_CONFIG, RunStore

    store = RunStore(str(source))
    identity = store.read_json(RUN_CONFIG)["identity"]
    shard_chains = int(identity["output.shard_chains"])
    k_source = int(identity["sampling.chain_length"])
    total = int(identity["sampling.num_samples"]) * k_source
    layout = ProposalLayout(store, shard_chains * k_source, total)
    raw = read_scores(layout, 0, num_samples * chain_length).reshape(num_samples, chain_length)
    drs_store = RunStore(str(drs_run))
    calibrator = calibrators.calibrator_from_json(drs_store.read_json(CALIBRATOR_PATH))
    logits = calibrator.predict_logit(raw.reshape(-1).astype(np.float64)).reshape(raw.shape)
    pilot_raw = float(drs_store.read_json(REPORT_PATH)["pilot_max_raw"])
    pilot = float(calibrator.predict_logit(np.array([pilot_raw]))[0])
    uniforms = streams.chain_uniforms(seed, streams.Stream.DRS_STEPS, 0, num_samples, chain_length)
    result = pickers.drs(logits, pilot, uniforms, gamma=0.0)
    worker = ProposalWorker(resolve_model(str(model)), seed=seed, device="cpu")
    worker.configure(int(identity["resources.batch_size"]), identity.get("resources.precision", "fp32"))
    samples = worker.generate(np.arange(num_samples, dtype=np.int64) * chain_length + result.picked)
    return samples, result.accepts


def _row(kind: str, samples: np.ndarray, stats: dict[str, Any], accepts: np.ndarray, **keys: Any) -> dict[str, Any]:
    """Metrics of one method's samples; ``no_accept_share``: chains whose emitted pass accepted nothing
    (for DRS: no proposal passed, so the highest-scoring one was emitted)."""
    from mhgan_dist.quality.scores import toy_quality

    return {**keys, **toy_quality(kind, samples), "acceptance_rate": stats.get("acceptance_rate"),
            "restart_rate": stats.get("restart_rate"), "no_accept_share": float(np.mean(accepts == 0))}


def _paired(kind: str, model: Path | str, out: Path, seed: int, n: int, k: int, log: _Log,
            lengths: list[int] | None = None, num_actors: int | None = None,
            chain_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every method on one seed's proposals; with ``lengths``, every K of them re-picks the largest K's.

    chain_options: "calibration" (of the mh and drs rows; default isotonic, the paper's),
    "odds_power" and "odds_cap_quantile" (of the mh, mh-raw and drs rows), see jobs.generate.
    """
    from mhgan_dist.report.runs import load_run

    options = dict(chain_options or {})
    calibrated = options.pop("calibration", "isotonic")
    source = out / "mh"
    _run(_config(model, source, picker="mh", seed=seed, num_samples=n, chain_length=k, num_actors=num_actors,
                 calibration=calibrated, **options), log)
    rows = []
    for length in lengths or [k]:
        suffix = "" if lengths is None else f"-k{length}"
        runs = {"mh": source} if length == k else {}
        plan = {"base": ("base", "isotonic"), "drs": ("drs", calibrated), "mh-raw": ("mh", "none")}
        if length != k:
            plan["mh"] = ("mh", calibrated)
        for method, (picker, calibration) in plan.items():
            target = out / f"{method}{suffix}"
            _run(_config(model, target, picker=picker, seed=seed, num_samples=n, chain_length=length,
                         calibration=calibration, num_actors=num_actors, **options), log, source=source)
            runs[method] = target
        for method, path in runs.items():
            run = load_run(str(path))
            rows.append(_row(kind, run.samples, run.stats, run.accepts, seed=seed, chain_length=length, method=method,
                             run=str(path)))
        samples, accepts = _drs_gamma_zero(source, runs["drs"], model, seed, n, length)
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


def _chain_options(args: argparse.Namespace) -> dict[str, Any]:
    """The chains' calibration, tempering and clipping flags; validated here, before any training or run."""
    from mhgan_dist.run.config import build_job_config

    options = {"calibration": args.calibration, "odds_power": args.odds_power,
               "odds_cap_quantile": args.odds_cap_quantile}
    build_job_config({"output": "unused", **options})  # ConfigError: one sentence, exit 2
    return options


# -------------------------------------------------------------- experiments


def _toy(args: argparse.Namespace, runtime: dict[str, Any], log: _Log) -> int:
    from mhgan_dist.report import evaluate_runs
    from mhgan_dist.report.paper import grid_table, mixture_table

    if not args.work:
        raise ConfigError("--work DIR is required")
    work = Path(args.work).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    dataset = args.experiment
    root = Path(args.models).expanduser() if args.models else _train(dataset, work, args.epochs, args.train_seed, log)
    init_ray(runtime)
    began = time.monotonic()
    rows = []
    for epoch in args.epochs:
        model = _model_dir(root, epoch)
        for seed in args.seeds:
            out = work / "runs" / f"epoch-{epoch:03d}" / f"seed-{seed}"
            for row in _paired(dataset, model, out, seed, args.num_samples, args.chain_length, log,
                               num_actors=args.num_actors, chain_options=_chain_options(args)):
                rows.append({"epoch": epoch, **row})
    settings = {"dataset": dataset, "models": str(root), "epochs": args.epochs, "seeds": args.seeds,
                "num_samples": args.num_samples, "chain_length": args.chain_length, **_chain_options(args),
                "seconds": round(time.monotonic() - began)}
    table = grid_table(rows) if dataset == "grid2d" else mixture_table(rows)
    _write_results(work, f"{dataset}: base, DRS and MH-GAN on the same proposals", rows, table, settings)
    last = work / "runs" / f"epoch-{max(args.epochs):03d}" / f"seed-{args.seeds[0]}"
    report = evaluate_runs([str(last / m) for m in ("base", "drs", "mh-raw", "mh")], str(work / "report"))
    print(table)
    print(f"results: {work / 'results.md'}\nreport: {report.html}")
    return 0


def _chain_length(args: argparse.Namespace, runtime: dict[str, Any], log: _Log) -> int:
    from mhgan_dist.models import resolve_model
    from mhgan_dist.report.paper import chain_length_table
    from mhgan_dist.quality.scores import dataset_kind

    if not args.work:
        raise ConfigError("--work DIR is required")
    work = Path(args.work).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    files = resolve_model(args.model)
    kind = dataset_kind(files.metadata.get("dataset") or files.name, tuple(files.metadata.get("sample_shape", [])))
    if kind not in ("grid2d", "mixture1d"):
        raise ConfigError(f"chain-length needs a grid2d or mixture1d model, not {args.model}")
    init_ray(runtime)
    began = time.monotonic()
    longest = max(args.lengths)
    rows = []
    for seed in args.seeds:
        rows += _paired(kind, args.model, work / "runs" / f"seed-{seed}", seed, args.num_samples, longest, log,
                        lengths=sorted(args.lengths), num_actors=args.num_actors, chain_options=_chain_options(args))
    settings = {"model": args.model, "seeds": args.seeds, "num_samples": args.num_samples, "lengths": args.lengths,
                **_chain_options(args),
                "seconds": round(time.monotonic() - began)}
    table = chain_length_table(rows)
    _write_results(work, "quality against chain length K", rows, table, settings)
    print(table)
    print(f"results: {work / 'results.md'}")
    return 0


# ------------------------------------------------------------ calibrator study

STUDY_RESULTS = "results.jsonl"
CONFIRM_DIR = "confirm"
# Picked proposals kept per row for the sample figures: an image grid's worth, or a toy scatter's.
PICKED_HEAD = {"image": 64, "toy": 1000}


@dataclasses.dataclass(frozen=True)
class _StudyModel:
    """One discriminator of the study: its name, model spec, files and fingerprint."""

    name: str
    model: str
    files: Any
    fingerprint: str


def _study_models(args: argparse.Namespace) -> tuple[str, list[_StudyModel]]:
    """(kind, the discriminators in preference order); every one must be of --model's kind."""
    from mhgan_dist.models import model_fingerprint, resolve_model
    from mhgan_dist.quality.scores import dataset_kind

    def kind_of(files) -> str:
        return dataset_kind(files.metadata.get("dataset") or files.name, tuple(files.metadata.get("sample_shape", [])))

    kind = kind_of(resolve_model(args.model))
    pairs = []
    for part in (args.discriminators or f"joint={args.model}").split(","):
        name, sep, model = part.strip().partition("=")
        if not sep or not name or not model or any(c in name for c in "|:/ "):
            raise ConfigError(f"--discriminators takes NAME=MODEL pairs (names without | : / or spaces), not {part!r}")
        pairs.append((name, model))
    if len({name for name, _ in pairs}) < len(pairs):
        raise ConfigError("--discriminators names must differ")
    models = []
    for name, model in pairs:
        files = resolve_model(model)
        if kind_of(files) != kind:
            raise ConfigError(f"discriminator {name} ({model}) is a {kind_of(files)} model, not a {kind} one like "
                              f"--model {args.model}")
        models.append(_StudyModel(name, model, files, model_fingerprint(files)))
    unknown = sorted(set(args.calibrations) - set(STUDY_CALIBRATIONS))
    if unknown:
        raise ConfigError(f"--calibrations must be among {', '.join(STUDY_CALIBRATIONS)}, not {', '.join(unknown)}")
    for b in args.odds_powers:
        if not 0.0 < b <= 1.0:
            raise ConfigError(f"--odds-powers must lie in (0, 1], got {b:g}")
    return kind, models


def _screening_plan(args: argparse.Namespace) -> list[tuple[str, str, float, int]]:
    """(method, calibration, b, K) of every screening row of one (D, seed)."""
    plan = []
    for k in sorted(set(args.lengths)):
        plan.append(("base", "none", 1.0, k))
        plan += [("drs", cal, 1.0, k) for cal in args.calibrations]
        plan += [("mh", cal, float(b), k) for cal in args.calibrations for b in args.odds_powers]
    return plan


def _confirmation_plan(setting) -> list[tuple[str, str, float, int]]:
    """Base, the chosen MH, DRS as the paper runs it (isotonic, b = 1) and DRS with the chosen calibrator and b."""
    k, cal, b = setting.chain_length, setting.calibration, setting.odds_power
    plan = [("base", "none", 1.0, k), ("mh", cal, b, k), ("drs", "isotonic", 1.0, k), ("drs", cal, b, k)]
    return list(dict.fromkeys(plan))


def _drs_pilot(path: Path, stored, worker, log: _Log) -> float:
    """The source run's DRS pilot maximum, scored once and kept beside the run."""
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("model_fingerprint") == stored.model_fingerprint and cached.get("draws") == stored.drs_pilot_draws:
            return float(cached["pilot_max_raw"])
    began = time.perf_counter()
    value = stored.pilot_max_raw(worker)
    seconds = time.perf_counter() - began
    path.write_text(json.dumps({"pilot_max_raw": value, "draws": stored.drs_pilot_draws, "seconds": seconds,
                                "model_fingerprint": stored.model_fingerprint}) + "\n")
    log(f"scored {stored.drs_pilot_draws:,} DRS pilot draws ({seconds:.1f} s)")
    return value


def _study_pass(root: Path, stage: str, models: list[_StudyModel], plans: dict[str, list], seeds: list[int],
                n: int, kind: str, scorer, args: argparse.Namespace, runtime: dict[str, Any], log: _Log):
    """Every planned row of every (D, seed) not yet in ROOT/results.jsonl; returns the log and the planned keys.

    Per (D, seed): one pipeline MH run at the plan's largest K (reused when
    complete) makes the proposals; every row re-picks them in this process.
    """
    from mhgan_dist.pipeline.local_repick import PickSetting, StoredRun
    from mhgan_dist.studies.calibrator import ResultsLog, row_key

    results = ResultsLog(root / STUDY_RESULTS)
    planned = []
    head = PICKED_HEAD["toy" if kind in ("grid2d", "mixture1d") else "image"]
    for model in models:
        plan = plans.get(model.name, [])
        if not plan:
            continue
        longest = max(k for *_, k in plan)
        for seed in seeds:
            todo = []
            for method, cal, b, k in plan:
                key = row_key(model.name, seed, method, cal, b, k, n)
                planned.append(key)
                if key not in results:
                    todo.append((key, method, cal, b, k))
                elif results.rows[key].get("model_fingerprint") != model.fingerprint:
                    raise ConfigError(f"{results.path} holds results of another model as D={model.name}; "
                                      "use another --work")
            if not todo:
                continue
            source = root / "runs" / model.name / f"seed-{seed}" / "mh"
            if not (source / "_SUCCESS").exists():
                init_ray(runtime)
            _run(_config(model.model, source, picker="mh", seed=seed, num_samples=n, chain_length=longest,
                         num_actors=args.num_actors), log)
            stored = StoredRun.open(str(source))
            worker = stored.worker(model.model, args.torch_threads)
            pilot = None
            for key, method, cal, b, k in todo:
                began = time.perf_counter()
                if method == "drs" and pilot is None:
                    pilot = _drs_pilot(source.parent / "drs-pilot.json", stored, worker, log)
                    began = time.perf_counter()
                pick = stored.pick(PickSetting(method, cal, k, b), n, pilot)
                picked = time.perf_counter()
                samples = worker.generate(pick.proposal_index)
                generated = time.perf_counter()
                quality = scorer(samples)
                scored = time.perf_counter()
                row = {"key": key, "stage": stage, "d": model.name, "model": model.model,
                       "model_fingerprint": model.fingerprint, "seed": seed, "method": method, "calibration": cal,
                       "odds_power": b, "chain_length": k, "num_samples": n, "source": str(source), **quality,
                       "acceptance_rate": pick.acceptance_rate, "restart_rate": pick.restart_rate,
                       "no_accept_share": pick.no_accept_share,
                       "seconds": {"pick": picked - began, "generate": generated - picked, "metrics": scored - generated},
                       "picked_head": pick.proposal_index[:head].tolist()}
                results.append(row)
                metric = "fid" if "fid" in quality else "js_nats"
                log(f"D={model.name} seed {seed} {method} {cal} b={b:g} K={k}: {metric} {quality[metric]:.4g}, "
                    f"acceptance {pick.acceptance_rate:.3f}, restarts {pick.restart_rate:.3f} "
                    f"({scored - began:.1f} s)")
    return results, planned


def _study_timings(rows: list[dict[str, Any]]) -> str:
    """Seconds per part: the proposal runs (their manifests), DRS pilots, picks, sample rebuilds, metrics."""
    sources = sorted({r["source"] for r in rows})
    proposal = 0.0
    pilots = 0.0
    for source in sources:
        manifest = Path(source) / "manifest.json"
        if manifest.exists():
            proposal += float(json.loads(manifest.read_text()).get("timings", {}).get("total_s") or 0.0)
        pilot = Path(source).parent / "drs-pilot.json"
        if pilot.exists():
            pilots += float(json.loads(pilot.read_text()).get("seconds") or 0.0)
    parts = {name: sum(r["seconds"][name] for r in rows) for name in ("pick", "generate", "metrics")}
    return (f"Time: {len(sources)} proposal run(s) {proposal:,.0f} s (pipeline, from their manifests); DRS pilot "
            f"draws {pilots:,.0f} s; {len(rows)} rows: picks {parts['pick']:,.1f} s, sample rebuilds "
            f"{parts['generate']:,.1f} s, metrics {parts['metrics']:,.1f} s.")


def _calibration_scores(rows: list[dict[str, Any]], names: list[str], seed: int
                        ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(D, real raw logits, generated raw logits) of each D's proposal run on ``seed``, from its saved scores."""
    from mhgan_dist.pipeline.local_repick import StoredRun

    out = []
    for name in names:
        run = StoredRun.open(str(next(r["source"] for r in rows if r["d"] == name and r["seed"] == seed)))
        out.append((name, run.real_raw, run.generated_raw))
    return out


def _study_header(title: str, args: argparse.Namespace, models: list[_StudyModel], n: int, seeds: list[int]) -> list[str]:
    lines = [f"# {title}", "", f"Command: `python -m jobs.reproduce {' '.join(args.argv)}`",
             "", f"Model kind of --model {args.model}; n = {n:,} samples per row; seeds {', '.join(map(str, seeds))}.",
             "", "| D | model | fingerprint |", "|---|---|---|"]
    lines += [f"| {m.name} | {m.model} | `{m.fingerprint[:16]}` |" for m in models]
    return lines + [""]


def _calibrator_study(args: argparse.Namespace, runtime: dict[str, Any], log: _Log) -> int:
    from mhgan_dist.report import figures
    from mhgan_dist.studies.calibrator import (
        SELECTION_RULE,
        TIE_SDS,
        QualityScorer,
        Setting,
        calibration_png,
        choose_setting,
        confirmation_markdown,
        metric_against_k_png,
        precision_recall_png,
        primary_metric,
        screening_markdown,
    )

    if not args.work:
        raise ConfigError("--work DIR is required")
    work = Path(args.work).expanduser()
    kind, models = _study_models(args)
    names = [m.name for m in models]
    metric = primary_metric(kind)
    first = models[0].files
    scorer = QualityScorer(kind, first.metadata.get("dataset") or first.name,
                           None if first.real is None else str(first.real),
                           tuple(first.metadata.get("sample_shape", [])))
    rule = SELECTION_RULE.format(metric="FID" if metric == "fid" else "JS (nats)", sds=TIE_SDS,
                                 discriminators=", ".join(names))
    n, seeds = args.num_samples, args.seeds
    work.mkdir(parents=True, exist_ok=True)

    if args.confirm is None:
        results, planned = _study_pass(work, "screening", models, {m.name: _screening_plan(args) for m in models},
                                       seeds, n, kind, scorer, args, runtime, log)
        rows = [results.rows[key] for key in dict.fromkeys(planned)]
        chosen, candidates = choose_setting(rows, metric, names)
        (work / "selection.json").write_text(json.dumps({"rule": rule, "metric": metric, "chosen": chosen.to_json(),
                                                         "candidates": [c.to_json() for c in candidates]},
                                                        indent=1) + "\n")
        (work / f"{metric}-against-k.png").write_bytes(metric_against_k_png(
            rows, metric, f"{metric} against K (mean ± sd over seeds {', '.join(map(str, seeds))})", names))
        figure_lines = [f"![{metric} against K]({metric}-against-k.png)"]
        if metric == "fid":
            (work / "precision-recall.png").write_bytes(precision_recall_png(rows, names, chosen))
            figure_lines.append("![precision against recall](precision-recall.png)")
        (work / "calibration.png").write_bytes(calibration_png(_calibration_scores(rows, names, seeds[0]),
                                                               ("none", "isotonic", "beta")))
        figure_lines.append(f"![each D's raw logits and reliability curves, seed {seeds[0]}](calibration.png)")
        ties = [c for c in candidates if c.ties]
        lines = _study_header("Calibrator study: screening", args, models, n, seeds)
        lines += [rule, "", f"**Chosen: {chosen.label()}** (best mean: {candidates[0].setting.label()}, "
                  f"{candidates[0].mean:.4g}).", "",
                  f"Tied with the best ({len(ties)}): " + "; ".join(
                      f"{c.setting.label()} ({c.mean:.4g}, {c.diff_mean:+.3g} ± {c.diff_sd:.3g})" for c in ties), "",
                  _study_timings(rows), "", screening_markdown(rows, kind, names, scorer.class_names, chosen),
                  *figure_lines, ""]
        (work / "results.md").write_text("\n".join(lines))
        print(f"chosen: {chosen.label()}")
        print(f"results: {work / 'results.md'}")
        return 0

    if args.confirm == "auto":
        screening = work / STUDY_RESULTS
        if not screening.exists():
            raise ConfigError(f"--confirm auto needs the screening's {screening}; run the screening first")
        from mhgan_dist.studies.calibrator import ResultsLog

        setting, _ = choose_setting([r for r in ResultsLog(screening).values() if r.get("stage") == "screening"
                                     and r["d"] in names], metric, names)
        origin = f"chosen by the selection rule from the screening in {screening}"
    else:
        parts = args.confirm.split(":")
        try:
            d, cal, b, k = parts
            setting = Setting(d, cal, float(b), int(k))
        except ValueError:
            raise ConfigError(f"--confirm takes auto or D:CALIBRATION:B:K, not {args.confirm!r}") from None
        if d not in names or cal not in STUDY_CALIBRATIONS or not 0.0 < setting.odds_power <= 1.0 \
                or setting.chain_length < 1:
            raise ConfigError(f"--confirm {args.confirm}: D must be one of {', '.join(names)}, the calibration one "
                              f"of {', '.join(STUDY_CALIBRATIONS)}, b in (0, 1] and K >= 1")
        origin = "given on the command line"
    print(f"confirming: {setting.label()} ({origin})")
    root = work / CONFIRM_DIR
    root.mkdir(parents=True, exist_ok=True)
    chosen_model = next(m for m in models if m.name == setting.discriminator)
    results, planned = _study_pass(root, "confirmation", [chosen_model],
                                   {setting.discriminator: _confirmation_plan(setting)}, seeds, n, kind, scorer,
                                   args, runtime, log)
    rows = [results.rows[key] for key in dict.fromkeys(planned)]
    figure_lines = _confirmation_samples(root, rows, setting, chosen_model, kind, args.torch_threads, figures)
    lines = _study_header("Calibrator study: confirmation", args, [chosen_model], n, seeds)
    lines += [f"Setting: **{setting.label()}**, {origin}.", "", rule, "", _study_timings(rows), "",
              confirmation_markdown(rows, kind, setting, scorer.class_names), *figure_lines, ""]
    (root / "results.md").write_text("\n".join(lines))
    checks = confirmation_markdown(rows, kind, setting, scorer.class_names)
    print(checks[checks.index("Checks"):].strip())
    print(f"results: {root / 'results.md'}")
    return 0


def _confirmation_samples(root: Path, rows: list[dict[str, Any]], setting, model: _StudyModel, kind: str,
                          threads: int, figures) -> list[str]:
    """samples.png: base beside the chosen MH on the first seed's proposals, rebuilt from the rows' picks."""
    from mhgan_dist.training import datasets
    from mhgan_dist.pipeline.local_repick import StoredRun

    seed = min(r["seed"] for r in rows)
    base = next(r for r in rows if r["seed"] == seed and r["method"] == "base")
    mh = next(r for r in rows if r["seed"] == seed and r["method"] == "mh")
    worker = StoredRun.open(base["source"]).worker(model.model, threads)
    panels = [(f"base (seed {seed})", worker.generate(np.asarray(base["picked_head"], dtype=np.int64))),
              (f"MH: {setting.label()}", worker.generate(np.asarray(mh["picked_head"], dtype=np.int64)))]
    if kind == "grid2d":
        png = figures.scatter_panels(panels, modes=datasets.GRID_MODES)
    elif kind == "mixture1d":
        png = figures.histogram_panels([(title, x[:, 0]) for title, x in panels], modes=datasets.MIXTURE_MODES)
    else:
        png = figures.image_grid_panels(panels)
    (root / "samples.png").write_bytes(png)
    return ["![base beside the chosen MH](samples.png)"]


def _digits_classifier(args: argparse.Namespace, log: _Log) -> int:
    from sklearn.datasets import load_digits

    from mhgan_dist.training import datasets
    from mhgan_dist.models import checkpoints_dir
    from mhgan_dist.quality.networks import DIGIT_CLASSIFIER_DIR, save_digit_classifier, train_digit_classifier

    output = Path(args.output).expanduser() if args.output else checkpoints_dir() / DIGIT_CLASSIFIER_DIR
    log(f"training the digit classifier for {args.classifier_epochs or 20} epochs")
    model, record = train_digit_classifier(datasets.digits(), load_digits().target, seed=args.train_seed,
                                           epochs=args.classifier_epochs or 20)
    save_digit_classifier(output, model, record)
    print(f"test accuracy {record['test_accuracy']:.4f} on {record['num_test']} held-out digits; wrote {output}")
    return 0


def _fashion_classifier(args: argparse.Namespace, log: _Log) -> int:
    from mhgan_dist.training import datasets
    from mhgan_dist.models import checkpoints_dir
    from mhgan_dist.quality.networks import FASHION_CLASSIFIER_DIR, save_fashion_classifier, train_fashion_classifier

    output = Path(args.output).expanduser() if args.output else checkpoints_dir() / FASHION_CLASSIFIER_DIR
    train_images, train_labels = datasets.fashion_mnist(args.data_root, split="train")
    test_images, test_labels = datasets.fashion_mnist(args.data_root, split="test")
    epochs = args.classifier_epochs or 3
    log(f"training the Fashion-MNIST classifier on {len(train_labels):,} images for {epochs} epochs")
    model, record = train_fashion_classifier(train_images, train_labels, test_images, test_labels,
                                             seed=args.train_seed, epochs=epochs, threads=args.torch_threads, log=log)
    save_fashion_classifier(output, model, record, test_images, test_labels)
    print(f"test accuracy {record['test_accuracy']:.4f} on {record['num_test']:,} test images "
          f"({record['train_seconds']:.0f} s); wrote {output}")
    return 0


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(argv)
    runtime = {k: getattr(args, k) for k in ("ray_address", "num_cpus") if getattr(args, k, None) is not None}
    log = _Log(args.quiet)
    if args.experiment == "digits-classifier":
        return _digits_classifier(args, log)
    if args.experiment == "fashion-classifier":
        return _fashion_classifier(args, log)
    _chain_options(args)  # bad calibration or odds flags fail here, before any training or Ray start
    if args.experiment == "calibrator-study":
        return _calibrator_study(args, runtime, log)
    if args.experiment == "chain-length":
        return _chain_length(args, runtime, log)
    return _toy(args, runtime, log)


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())

"""Reproduce the paper's toy experiments: `python -m jobs.reproduce EXPERIMENT --work DIR [options]`.

    python -m jobs.reproduce grid2d --work runs/reproduce/grid2d           # train 150 epochs, then compare
    python -m jobs.reproduce mixture1d --work runs/reproduce/mixture1d
    python -m jobs.reproduce chain-length --work runs/reproduce/k          # quality against K on grid2d
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

The smallest run, a smoke test of the whole chain (four tiny runs on the shipped grid2d):

    python -m jobs.reproduce chain-length --work /tmp/k --lengths 4 --seeds 0 --num-samples 16 --num-actors 1

Work already finished in WORK (models, complete runs) is reused on a re-run.
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

EXPERIMENTS = ("grid2d", "mixture1d", "chain-length", "digits-classifier", "fashion-classifier")


def _ints(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, not {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=EXPERIMENTS)
    p.add_argument("--work", help="working folder for models, runs and results (toy experiments; required)")
    p.add_argument("--models", metavar="DIR", help="a jobs.train output to use instead of training")
    p.add_argument("--model", default="grid2d", help="chain-length: shipped model name or model directory")
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
    p.add_argument("--train-seed", type=int, default=0, help="training seed (default: 0)")
    p.add_argument("--output", help="digits-classifier, fashion-classifier: folder to write (default: the shipped "
                   "location)")
    p.add_argument("--classifier-epochs", type=int,
                   help="digits-classifier, fashion-classifier: epochs (default: 20 and 3)")
    p.add_argument("--data-root", help="fashion-classifier: the Fashion-MNIST IDX folder (default: Debian's)")
    p.add_argument("--torch-threads", type=int, default=2, help="fashion-classifier: torch threads (default: 2)")
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
    from mhgan_dist.training import make_config, run

    root = work / "model"
    final = max(epochs)
    if (root / "model.json").exists():
        log(f"reusing the trained models in {root}")
        return root
    cfg = make_config(dataset, epochs=final, save_epochs=[e for e in epochs if e != final], seed=seed)
    log(f"training {dataset} for {final} epochs (saving {sorted(set(epochs))}) into {root}")
    run(cfg, root, log=log)
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
    from mhgan_dist.config import build_job_config

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
        from mhgan_dist.config import ODDS_OPTION_DEFAULTS

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
    applies :func:`mhgan_dist.pickers.drs` with gamma = 0 to the scores, and
    with the calibrator, pilot maximum and uniforms, of the pipeline DRS run
    ``drs_run`` on the same proposals, and rebuilds the picked samples with a
    proposal worker in this process.
    """
    from mhgan_dist import calibration, pickers, streams
    from mhgan_dist.models import resolve_model
    from mhgan_dist.pipeline.calibrate import CALIBRATOR_PATH, REPORT_PATH
    from mhgan_dist.pipeline.chains import ProposalLayout, read_scores
    from mhgan_dist.pipeline.proposals import ProposalWorker
    from mhgan_dist.store import RUN_CONFIG, RunStore

    store = RunStore(str(source))
    identity = store.read_json(RUN_CONFIG)["identity"]
    shard_chains = int(identity["output.shard_chains"])
    k_source = int(identity["sampling.chain_length"])
    total = int(identity["sampling.num_samples"]) * k_source
    layout = ProposalLayout(store, shard_chains * k_source, total)
    raw = read_scores(layout, 0, num_samples * chain_length).reshape(num_samples, chain_length)
    drs_store = RunStore(str(drs_run))
    calibrator = calibration.calibrator_from_json(drs_store.read_json(CALIBRATOR_PATH))
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
    from mhgan_dist.report.quality import toy_quality

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
    from mhgan_dist.config import build_job_config

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
    from mhgan_dist.report.quality import dataset_kind

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


def _digits_classifier(args: argparse.Namespace, log: _Log) -> int:
    from sklearn.datasets import load_digits

    from mhgan_dist import data
    from mhgan_dist.models import checkpoints_dir
    from mhgan_dist.scoring_models import DIGIT_CLASSIFIER_DIR, save_digit_classifier, train_digit_classifier

    output = Path(args.output).expanduser() if args.output else checkpoints_dir() / DIGIT_CLASSIFIER_DIR
    log(f"training the digit classifier for {args.classifier_epochs or 20} epochs")
    model, record = train_digit_classifier(data.digits(), load_digits().target, seed=args.train_seed,
                                           epochs=args.classifier_epochs or 20)
    save_digit_classifier(output, model, record)
    print(f"test accuracy {record['test_accuracy']:.4f} on {record['num_test']} held-out digits; wrote {output}")
    return 0


def _fashion_classifier(args: argparse.Namespace, log: _Log) -> int:
    from mhgan_dist import data
    from mhgan_dist.models import checkpoints_dir
    from mhgan_dist.scoring_models import FASHION_CLASSIFIER_DIR, save_fashion_classifier, train_fashion_classifier

    output = Path(args.output).expanduser() if args.output else checkpoints_dir() / FASHION_CLASSIFIER_DIR
    train_images, train_labels = data.fashion_mnist(args.data_root, split="train")
    test_images, test_labels = data.fashion_mnist(args.data_root, split="test")
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
    runtime = {k: getattr(args, k) for k in ("ray_address", "num_cpus") if getattr(args, k, None) is not None}
    log = _Log(args.quiet)
    if args.experiment == "digits-classifier":
        return _digits_classifier(args, log)
    if args.experiment == "fashion-classifier":
        return _fashion_classifier(args, log)
    _chain_options(args)  # bad calibration or odds flags fail here, before any training or Ray start
    if args.experiment == "chain-length":
        return _chain_length(args, runtime, log)
    return _toy(args, runtime, log)


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())

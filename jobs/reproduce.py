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
import sys

from jobs.cli import add_common_flags, init_ray, run_main
from mhgan_dist.studies.calibrator import CALIBRATOR_ORDER
from mhgan_dist.studies.experiments import EXPERIMENTS, Experiment, run_experiment


def _list_of(convert, what: str):
    """An argparse type: comma-separated values, at least one."""
    def parse(text: str) -> list:
        try:
            values = [convert(part.strip()) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}s, not {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected at least one {what}")
        return values
    return parse


_ints, _floats, _names = _list_of(int, "integer"), _list_of(float, "number"), _list_of(str, "name")


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
    study.add_argument("--calibrations", type=_names, default=list(CALIBRATOR_ORDER), metavar="C1,C2,...",
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


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(Experiment) if f.name != "command"}
    config = Experiment(**{k: tuple(v) if isinstance(v, list) else v for k, v in flags.items()}, command=tuple(argv))
    runtime = {k: getattr(args, k) for k in ("ray_address", "num_cpus") if getattr(args, k, None) is not None}
    run_experiment(config, start_ray=lambda: init_ray(runtime))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())

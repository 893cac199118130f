"""Re-pick a finished run's proposals: `python -m jobs.repick --from RUN_DIR --output NEW_DIR [...]`.

No generator or discriminator pass is spent on proposals: the new run reads
the score column of RUN_DIR's shards, refits calibration on RUN_DIR's saved
calibration scores when asked, and runs G once per output sample to
materialise it. Its rows equal those of a fresh run with the same settings
and seed.
"""

from __future__ import annotations

import argparse
import sys

from jobs.cli import CALIBRATION_HELP, add_common_flags, add_picker_flags, check_output_location, init_ray, run_main
from mhgan_dist.run.config import JobConfig, build_job_config
from mhgan_dist.errors import InputError
from mhgan_dist.run.record import read_run

S = argparse.SUPPRESS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.repick", description=__doc__, argument_default=S,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source", required=True, help="a run directory whose proposal shards are complete")
    p.add_argument("--output", required=True, help="the new run directory")
    p.add_argument("--chain-length", type=int, help="K for the new run (default: the source's)")
    p.add_argument("--num-samples", type=int,
                   help="output samples (default: as many as the source's proposals allow at the new K)")
    p.add_argument("--picker", choices=("mh", "drs", "base"))
    p.add_argument("--calibration", help=CALIBRATION_HELP + " (default: the source's)")
    add_picker_flags(p)
    p.add_argument("--drs-gamma-percentile", type=float)
    p.add_argument("--thin", metavar="T|auto", help="thinned chains, as in jobs.generate")
    p.add_argument("--repeat-budget", type=float)
    p.add_argument("--outputs-per-chain", type=int)
    p.add_argument("--thin-pilot-draws", type=int)
    p.add_argument("--real", help="held-out real samples, when the source's are not reachable from here")
    p.add_argument("--num-actors", type=int)
    p.add_argument("--cpus-per-actor", type=float)
    p.add_argument("--gpus-per-actor", type=float)
    p.add_argument("--torch-threads", type=int)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--shard-chains", type=int)
    p.add_argument("--quiet", action="store_true")
    add_common_flags(p)
    return p


ODDS_OPTIONS = ("odds_power", "odds_cap_quantile")


def merge_options(recorded: dict, given: dict) -> dict:
    """The source's recorded options overridden by the flags given; a new dict.

    The source's tempering and clipping (ODDS_OPTIONS) shape its chains; with
    ``--picker base``, which runs none, they are dropped unless given again
    (and then refused by the config).
    """
    options = {**recorded, **given}
    if options.get("picker") == "base" and not set(ODDS_OPTIONS) & set(given):
        for name in ODDS_OPTIONS:
            options.pop(name, None)
    return options


def _main(argv: list[str]) -> int:
    from mhgan_dist.run.guard import run_guarded
    from mhgan_dist.pipeline.driver import RunSummary, run_job

    given = vars(build_parser().parse_args(argv))
    runtime = {k: given.pop(k) for k in ("quiet", "debug", "ray_address", "num_cpus") if k in given}
    source = given.pop("source")
    recorded = read_run(source)
    options = {}
    for section in ("model", "sampling"):
        options.update(recorded.config[section])
    options["batch_size"] = recorded.identity.resources.batch_size
    layout = recorded.layout
    held = layout.num_proposals if layout is not None else int(options["num_samples"]) * int(options["chain_length"])
    options = merge_options(options, given)
    if "num_samples" not in given:
        if options.get("thin") not in (None, "auto"):
            per_output = int(options["thin"])
        elif options.get("thin") is None:
            per_output = int(options["chain_length"])
        else:
            raise InputError("--thin auto needs --num-samples when re-picking: T is known only after calibration")
        options["num_samples"] = held // per_output
    check_output_location(options["output"])
    config = build_job_config(options)

    def run(job: JobConfig) -> RunSummary:
        init_ray(runtime)
        return run_job(job, source_run=source, show_progress=not runtime.get("quiet", False))

    outcome = run_guarded(config, run)  # the run lease of jobs.generate: one writer per run directory
    for line in outcome.lines():
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())

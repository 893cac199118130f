"""Generate an MH-GAN sample dataset: `python -m jobs.generate [options]`.

The same command runs on a laptop (a local Ray is started) and as a
`ray job submit --working-dir . -- python -m jobs.generate ...` entrypoint
(the cluster in RAY_ADDRESS is joined). Options may also come from a YAML or
TOML file (`--config`); flags win over the file.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jobs.cli import CALIBRATION_HELP, add_common_flags, add_picker_flags, check_output_location, init_ray, run_main
from mhgan_dist.run.config import JobConfig, load_config_file
from mhgan_dist.run.recommendations import recommended_job_config

def build_parser() -> argparse.ArgumentParser:
    """The public command line; defaults live in mhgan_dist.run.config, so unset flags are absent."""
    p = argparse.ArgumentParser(prog="python -m jobs.generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=argparse.SUPPRESS)
    m = p.add_argument_group("model")
    m.add_argument("--model", help="a shipped reference model (grid2d, mixture1d, digits, fashion) or a model directory "
                                   "(default: grid2d)")
    m.add_argument("--generator", help="the user's generator: torch.export .pt2 or TorchScript .pt")
    m.add_argument("--discriminator", help="the user's discriminator: torch.export .pt2 or TorchScript .pt")
    m.add_argument("--latent-dim", type=int, help="latent size, when the generator file does not tell")
    m.add_argument("--discriminator-output", choices=("logit", "probability"),
                   help="what D returns (default: logit); probabilities are converted to logits")
    m.add_argument("--real", help="held-out real samples: .npy [N, *shape] or Parquet with a 'sample' column")
    s = p.add_argument_group("sampling")
    s.add_argument("--num-samples", type=int, help="output samples (default: 10000)")
    s.add_argument("--chain-length", type=int, help="proposals per chain, K (default: 640)")
    s.add_argument("--picker", choices=("mh", "drs", "base"), help="default: mh")
    s.add_argument("--calibration", help=CALIBRATION_HELP)
    add_picker_flags(s)
    s.add_argument("--seed", type=int, help="run seed (default: 0)")
    s.add_argument("--calibration-draws", type=int, help="generated draws for calibration (default: as many as real)")
    s.add_argument("--drs-pilot-draws", type=int, help="pilot draws for DRS's maximum (default: 10000)")
    s.add_argument("--drs-gamma-percentile", type=float, help="DRS's gamma percentile (default: 95)")
    t = p.add_argument_group("thinned chains (instead of one chain of K proposals per sample)")
    t.add_argument("--thin", metavar="T|auto",
                   help="run long MH chains that emit every T-th state; auto chooses the smallest T whose "
                        "expected share of repeated outputs is within --repeat-budget")
    t.add_argument("--repeat-budget", type=float,
                   help="with --thin auto: largest expected share of outputs repeating their predecessor "
                        "(default: 0.01)")
    t.add_argument("--outputs-per-chain", type=int, help="outputs each long chain emits (default: 64)")
    t.add_argument("--thin-pilot-draws", type=int,
                   help="generated draws, kept out of the calibration fit, that estimate the repeat share "
                        "(default: 20000)")
    r = p.add_argument_group("resources (never change the output)")
    r.add_argument("--num-actors", type=int,
                   help="proposal actors (default: one per GPU when the cluster has GPUs, else one per CPU core "
                        "of every node)")
    r.add_argument("--gpus-per-actor", type=float, help="GPUs per proposal actor (default: 1 when the cluster has "
                                                        "GPUs, else 0)")
    r.add_argument("--cpus-per-actor", type=float,
                   help="CPUs each proposal actor asks Ray for (default: 1, so N cores hold N actors)")
    r.add_argument("--torch-threads", type=int, help="torch threads per actor (default: its whole CPUs, at least 1)")
    r.add_argument("--resource-timeout", type=float, metavar="SECONDS",
                   help="stop, resumable, after this long without progress while work waits for capacity the "
                        "cluster lacks (default: 1200; 0 waits forever)")
    r.add_argument("--progress-watch-interval", type=float, metavar="SECONDS",
                   help="while nothing progresses, say what waits this often (default: 30)")
    r.add_argument("--batch-size", type=int, help="proposals per forward pass (default: by device)")
    r.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: auto (GPU when granted)")
    r.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"),
                   help="default: auto (fp32 on CPU; bf16/fp16 on GPU when D agrees with fp32 within 0.01)")
    r.add_argument("--compile", action="store_true", help="torch.compile G and D in each actor")
    o = p.add_argument_group("output")
    o.add_argument("--output", help="run directory: a local path or a pyarrow filesystem URI (required)")
    o.add_argument("--shard-chains", type=int, help="chains per proposal shard and output part")
    o.add_argument("--store-proposal-samples", action="store_true", help="keep sample payloads in proposal shards")
    o.add_argument("--report", action="store_true",
                   help="then evaluate the run and write OUTPUT/report/ (report.html, report.json, figures)")
    n = p.add_argument_group("nightly (dated runs under --output; see cluster/README.md)")
    n.add_argument("--nightly", action="store_true",
                   help="write the run to OUTPUT/date=YYYY-MM-DD/ and point OUTPUT/latest.json at the newest "
                        "complete date")
    n.add_argument("--date", help="the run's date, YYYY-MM-DD (default: today, UTC); its seed derives from it "
                                  "unless --seed is given")
    n.add_argument("--keep", type=int, help="remove complete dates older than the newest N")
    n.add_argument("--keep-proposals", action="store_true",
                   help="keep a finished date's proposal shards (default: delete them)")
    p.add_argument("--config", help="YAML or TOML file of these options")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--dry-run", action="store_true",
                   help="score a few batches, print the estimated wall time, proposals and disk use, and exit")
    add_common_flags(p)
    return p


RUNTIME_FLAGS = ("config", "quiet", "dry_run", "debug", "ray_address", "num_cpus",
                 "nightly", "date", "keep", "keep_proposals")


def parse_job_config(argv: list[str], parser: argparse.ArgumentParser | None = None) -> tuple[JobConfig, dict[str, Any]]:
    """(validated JobConfig, runtime flags) from argv and the --config file."""
    parser = parser or build_parser()
    given = vars(parser.parse_args(argv))
    options: dict[str, Any] = {}
    if "config" in given:
        options.update(load_config_file(given["config"]))
        options.pop("config", None)
    runtime = {k: given.pop(k) for k in RUNTIME_FLAGS if k in given}
    options.update(given)
    runtime["seed_given"] = "seed" in options  # by a flag or the config file: a nightly date keeps it
    config, runtime["recommended"] = recommended_job_config(options)
    return config, runtime


def _main(argv: list[str]) -> int:
    from mhgan_dist.run.guard import run_guarded
    from mhgan_dist.run.nightly import NightlyOptions
    from mhgan_dist.pipeline.driver import RunSummary, run_job

    config, runtime = parse_job_config(argv)
    check_output_location(config.output.output)
    recommended = runtime["recommended"]
    if recommended is not None:
        print(recommended["line"], file=sys.stderr, flush=True)
    if runtime.get("dry_run"):
        from mhgan_dist.pipeline.driver import dry_run
        init_ray(runtime)
        print("\n".join(dry_run(config).lines()))
        return 0
    nightly = NightlyOptions.from_flags(runtime, seed_given=runtime["seed_given"])

    def run(job: JobConfig) -> RunSummary:
        init_ray(runtime)
        return run_job(job, show_progress=not runtime.get("quiet", False), recommended=recommended)

    outcome = run_guarded(config, run, nightly=nightly)  # the run lease; with --nightly, the dated layout
    print("\n".join(outcome.lines()))
    if config.output.report:
        from mhgan_dist.report import evaluate_runs

        print(f"report: {evaluate_runs([outcome.summary.output]).html}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())

"""Quality against cost: the paper's independent chains (K proposals per sample) and long thinned chains.

    python -m jobs.tradeoff --problems exact1d,grid2d --seeds 0,1,2 --output runs/tradeoff --plot docs/images/thinning.png
    python -m jobs.tradeoff --fast --output /tmp/tradeoff          # a small run, for tests

For each problem and seed, one pool of proposals is drawn as the pipeline
draws them (``streams.latents(seed, Stream.PROPOSALS, ...)``), scored by D and
calibrated (``--calibration``, isotonic by default, fitted on held-out real.npy
against as many generated draws from ``Stream.CALIBRATION``; or a saved .json),
then tempered and clipped as the chains compare them (``--odds-power``,
``--odds-cap-quantile``; the exact1d cap comes from its own Stream.CALIBRATION
draws). Every configuration picks from that same pool:

- base: the first proposal of each independent chain (1 proposal per sample);
- independent chains, K proposals each (chain i uses the first K proposals of
  block i of the pool): K proposals per sample, no repeats;
- thinned chains (:mod:`mhgan_dist.core.thinning`) of N outputs each, every T steps
  (chain c uses proposals [cNT, (c+1)NT)): T proposals per sample; and T
  chosen by :func:`~mhgan_dist.core.thinning.choose_thin` for the repeat budget.

Quality: exact1d (G = N(0, 1), data N(1, 1), exact D log-odds x - 0.5, no
model, no calibration): KS distance of the outputs to N(1, 1). grid2d: JS
divergence of the nearest-mode histogram (nats), high-quality share and modes
(:mod:`mhgan_dist.quality.metrics`). digits: the shipped digit classifier's score
(IS-style, 10 classes) and the Frechet distance of its features to the held-out
real digits. fashion: the shipped Fashion-MNIST classifier's scores against the
test split's features (FID, IS analogue, k-NN precision, recall, density,
coverage with k = 5, class-mix JS; mhgan_dist.quality.scores). Writes OUTPUT/tradeoff.json (every row), OUTPUT/tradeoff.md (the
table, mean +- standard error over seeds) and the plot. No Ray is needed.
Exit status 0 on success, 2 on a user error.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jobs.cli import run_main
from mhgan_dist.core import calibrators, thinning
from mhgan_dist.studies.tradeoff import PROBLEMS, Settings, run_tradeoff


def _ints(text: str, low: int = 1) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, not {text!r}") from None
    if not values or min(values) < low:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= {low}, not {text!r}")
    return values


def _seeds(text: str) -> tuple[int, ...]:
    return _ints(text, low=0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.tradeoff", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", default="exact1d,grid2d", help=f"comma-separated, of {', '.join(PROBLEMS)}")
    p.add_argument("--seeds", type=_seeds, default=(0, 1, 2))
    p.add_argument("--outputs", type=int, default=10_240, help="output samples per configuration and seed")
    p.add_argument("--outputs-per-chain", type=int, default=thinning.DEFAULT_OUTPUTS_PER_CHAIN)
    p.add_argument("--ks", type=_ints, default=(10, 20, 40, 80, 160, 320, 640))
    p.add_argument("--thins", type=_ints, default=(1, 2, 4, 8, 16, 32, 64))
    p.add_argument("--budget", type=float, default=thinning.DEFAULT_REPEAT_BUDGET)
    p.add_argument("--pilot-draws", type=int, default=20_000,
                   help="generated draws (Stream.THIN_PILOT) that estimate the repeat share")
    p.add_argument("--calibration", default="isotonic", metavar="NAME|PATH.json",
                   help=f"model problems: {', '.join(sorted(calibrators.CALIBRATORS))}, fitted as the pipeline "
                        "fits them, or a saved calibration .json (default: isotonic)")
    p.add_argument("--odds-power", type=float, default=1.0, metavar="B",
                   help="temper the chains' target to p_G x odds^B, B in (0, 1] (default: 1, the paper's)")
    p.add_argument("--odds-cap-quantile", type=float, metavar="Q",
                   help="cap the chains' odds at the Q-quantile of the generated calibration draws' (default: none)")
    p.add_argument("--cache", metavar="DIR", help="keep raw D scores here and reuse them (model problems)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--batch", type=int, default=8192, help="G and D batch size")
    p.add_argument("--output", required=True, metavar="DIR")
    p.add_argument("--plot", metavar="PNG", help="also write the plot here (default: OUTPUT/tradeoff.png)")
    p.add_argument("--from-json", nargs="+", metavar="JSON",
                   help="skip measuring: merge the rows of earlier tradeoff.json files into one table and plot")
    p.add_argument("--fast", action="store_true", help="exact1d only, 1,024 outputs, 2 seeds, short K and T lists")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--debug", action="store_true")
    return p


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    problems = tuple(p.strip() for p in args.problems.split(",") if p.strip())
    settings = Settings(problems, tuple(args.seeds), args.outputs, args.outputs_per_chain, tuple(args.ks),
                        tuple(args.thins), args.budget, args.threads, args.batch, args.pilot_draws,
                        args.calibration, args.cache, args.odds_power, args.odds_cap_quantile)
    settings.check()
    log = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    run_tradeoff(settings.fast() if args.fast else settings, Path(args.output).expanduser(),
                 plot_path=Path(args.plot) if args.plot else None, from_json=args.from_json or (), log=log)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())

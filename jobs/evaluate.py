"""Evaluate finished runs and write a report: `python -m jobs.evaluate RUN [RUN ...] [options]`.

    python -m jobs.evaluate runs/base runs/drs runs/mh
    python -m jobs.evaluate runs/cifar-mh --inception-weights ~/weights/inception_v3_google-0cc3c7bd.pth

Give one run directory per picker (typically the same seed, so the same
proposals). The report calls each run by its folder's name (or --name), not
by where it is stored. Writes report.json, report.html and PNG figures to
--output (default: <first run>/report/). The metrics: the paper's JS divergence, high
quality share and modes recovered for the toy models; Inception Score and FID
for images, with Inception weights from a local file (never downloaded), or
with the shipped digit classifier for the digits model. For the fashion model,
classifier-feature scores from the shipped Fashion-MNIST classifier against
the test split's shipped features (no dataset needed): FID, the IS analogue,
precision, recall, density and coverage (k = 5, equal set sizes) and the class
mix, each with a bootstrap spread; given several seeds per method, a table over
seeds (also as summary.md). These are not comparable with Inception numbers.
No Ray is needed.
Exit status 0 on success, 2 on a user error.
"""

from __future__ import annotations

import argparse
import sys

from jobs.cli import run_main
from mhgan_dist.report import DEFAULT_MAX_SAMPLES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN", help="finished run directories (local paths or URIs)")
    p.add_argument("--output", help="report folder (default: <first run>/report/)")
    p.add_argument("--inception-weights", metavar="PATH",
                   help="a local torchvision inception_v3 state dict, for IS and FID of image runs")
    p.add_argument("--real", metavar="PATH", help="real samples to compare with (default: the model's real.npy)")
    p.add_argument("--name", action="append", dest="names", metavar="NAME",
                   help="what the report calls a run: once per RUN, in order (default: each run folder's name, "
                        "with parent folders where two share one)")
    p.add_argument("--max-samples", type=int, default=DEFAULT_MAX_SAMPLES,
                   help=f"samples read per run, the first by sample_id (default: {DEFAULT_MAX_SAMPLES:,})")
    p.add_argument("--device", default="cpu", help="torch device of the scoring network (default: cpu)")
    p.add_argument("--inline-figures", action="store_true", help="also embed the PNGs in report.html")
    p.add_argument("--quiet", action="store_true", help="print only where the report is")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    return p


def summary_lines(report: dict) -> list[str]:
    """One line per run (and the real reference) with the headline numbers."""
    keys = [("js_nats", "JS {:.4f} nats"), ("js_bits", "{:.4f} bits"), ("hq_share", "HQ {:.3f}"),
            ("modes_recovered", "modes {}"), ("inception_score", "IS {:.3f}"), ("fid", "FID {:.3f}"),
            ("precision", "P {:.3f}"), ("recall", "R {:.3f}"), ("density", "D {:.3f}"), ("coverage", "C {:.3f}"),
            ("class_js_bits", "class JS {:.4f} bits"), ("classes_recovered", "classes {}")]

    def numbers(quality: dict | None) -> str:
        if not quality:
            return "no quality metrics"
        return ", ".join(fmt.format(quality[k]) for k, fmt in keys if quality.get(k) is not None)

    lines = [f"{run['label']:<24} {numbers(run['quality'])}; acceptance "
             f"{run['chains']['acceptance_rate'] or 0:.3f}, restarts {run['chains']['restart_rate'] or 0:.3f}"
             for run in report["runs"]]
    if report.get("real") and report["real"].get("quality"):
        lines.append(f"{'real (held out)':<24} {numbers(report['real']['quality'])}")
    return lines


def _main(argv: list[str]) -> int:
    from mhgan_dist.report import evaluate_runs

    args = build_parser().parse_args(argv)
    log = None if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    result = evaluate_runs(args.runs, args.output, inception_weights=args.inception_weights, device=args.device,
                           max_samples=args.max_samples, real=args.real, names=args.names,
                           inline_figures=args.inline_figures, log=log)
    if not args.quiet:
        for line in summary_lines(result.report):
            print(line)
    print(f"report: {result.html}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())

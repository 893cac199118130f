"""Benchmarks: `python -m jobs.benchmark default|pipeline|worker|pickers|load`.

`default` is the headline: `python -m jobs.generate` exactly as a user runs it,
no resource, batch or thread flags, against the best bare G+D loop (over
thread layouts and batch sizes) on the same cores, end to end.

Prints a table, writes it as JSON with --json, and with --markdown appends the
figures, the command and the machine to BENCHMARKS.md. A benchmark, not a
test: it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from mhgan_dist.studies.benchmark import BenchmarkConfig, append_markdown, run_benchmark


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per suite."""
    parser = argparse.ArgumentParser(prog="python -m jobs.benchmark", description=__doc__)
    sub = parser.add_subparsers(dest="suite", required=True)
    d = sub.add_parser("default", help="the job with no resource flags against the best bare G+D loop (headline)")
    d.add_argument("--model", default="dcgan32", help="grid2d, dcgan32 (random init), or a model directory")
    d.add_argument("--minutes", type=float, nargs="+", default=[2.0, 4.0],
                   help="target lengths of the jobs' proposal work (default: 2 4)")
    d.add_argument("--chain-length", type=int, default=640)
    d.add_argument("--bare-seconds", type=float, default=15.0, help="length of each bare-loop measurement")
    d.add_argument("--workdir", type=Path, help="where runs are written (default: a temporary folder)")
    p = sub.add_parser("pickers", help="MH kernel throughput on one core")
    p.add_argument("--num-proposals", type=int, default=10_000_000)
    p.add_argument("--chain-length", type=int, default=640)
    p.add_argument("--repeats", type=int, default=5)
    q = sub.add_parser("pipeline", help="the whole job against a bare G+D loop")
    q.add_argument("--model", default="grid2d", help="grid2d, dcgan32 (random init), or a model directory")
    q.add_argument("--seconds", type=float, default=120.0, help="target length of the proposal stage")
    q.add_argument("--chain-length", type=int, default=640)
    q.add_argument("--workdir", type=Path, help="where runs are written (default: a temporary folder)")
    q.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where G and D run (cuda: one GPU, "
                   "shared by the 2-actor job)")
    q.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    q.add_argument("--batch-size", type=int, help="proposals per G+D pass (default on CPU: the job's own batch for "
                   "the model, 256 for 28x28 and 32x32 images, 4096 for 2-D samples; on GPU 8192 for images, "
                   "65536 for samples of at most 64 numbers)")
    w = sub.add_parser("worker", help="the actor's scoring code against the bare loop, no Ray")
    w.add_argument("--model", default="dcgan32", help="grid2d, dcgan32 (random init), or a model directory")
    w.add_argument("--seconds", type=float, default=20.0, help="length of each measurement")
    w.add_argument("--rounds", type=int, default=3)
    w.add_argument("--batch-size", type=int, help="proposals per G+D pass (default: the job's own CPU batch for "
                   "the model: 256 for 28x28 and 32x32 images, 4096 for 2-D samples)")
    w.add_argument("--workdir", type=Path)
    lo = sub.add_parser("load", help="peak memory at several run sizes")
    lo.add_argument("--model", default="grid2d")
    lo.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000], help="proposals per run")
    lo.add_argument("--chain-length", type=int, default=640)
    lo.add_argument("--workdir", type=Path)
    for s in (d, p, q, w, lo):
        s.add_argument("--json", type=Path, help="write the results as JSON here")
        s.add_argument("--markdown", type=Path, help="append the results to this Markdown file")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(BenchmarkConfig) if hasattr(args, f.name)}
    bench = run_benchmark(BenchmarkConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in flags.items()}))
    width = max(len(k) for k, _ in bench.rows)
    for k, v in bench.rows:
        print(f"{k:<{width}}  {v}")
    if args.json:
        args.json.write_text(json.dumps(bench.result, indent=2))
    if args.markdown:
        append_markdown(args.markdown, bench.title, bench.rows, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())

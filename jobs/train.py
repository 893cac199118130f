"""Train a reference GAN and write a model directory.

    python -m jobs.train --dataset grid2d --epochs 150 --save-epochs 10,30,60 --output runs/grid2d
    python -m jobs.train --dataset fashion --threads 2 --save-epochs 5,10 --output runs/fashion
    ray job submit --working-dir . -- python -m jobs.train --dataset digits --output /mnt/models/digits

Writes OUTPUT/{generator.pt2, discriminator.pt2, real.npy, model.json} for the
last epoch and OUTPUT/epoch-NNN/ for each --save-epochs value, and
OUTPUT/train-state.pt after every epoch so that --resume can continue an
interrupted (or finished, with a larger --epochs) run. Exit status 0 on
success, 2 on a user error (one sentence on stderr; --debug adds the traceback).
Under `ray job submit` the working directory is a temporary copy, so a relative
--output is refused there.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any, TextIO

from jobs.cli import check_output_location
from mhgan_dist.errors import MhganError
from mhgan_dist.training.gan import EpochStats, train_and_save
from mhgan_dist.training.setup import DATASETS, make_config


# Flags passed to make_config under their own names.
_CONFIG_FLAGS = ("data_root", "epochs", "batch_size", "lr", "beta1", "seed", "latent_dim", "width", "image_size",
                 "train_size", "holdout_limit", "save_epochs", "refit_epochs", "threads", "device", "workers")


def _epochs(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated epoch numbers, not {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--output", required=True, metavar="DIR", help="model directory to write")
    p.add_argument(
        "--data-root", metavar="PATH",
        help="local copy of cifar10 / celeba / an image folder, or the Fashion-MNIST IDX files "
        "(default for fashion: /usr/share/datasets/fashion-mnist, from `apt-get install dataset-fashion-mnist`); "
        "never downloaded",
    )
    p.add_argument("--epochs", type=int, help="default: 150 (toys), 300 (digits), 10 (fashion), 60 (other images)")
    p.add_argument("--batch-size", type=int, help="default: 128 (toys), 64 (images)")
    p.add_argument("--lr", type=float, help="Adam learning rate; default: 1e-4 (toys), 2e-4 (DCGAN)")
    p.add_argument("--beta1", type=float, help="Adam beta1; default 0.5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latent-dim", type=int, help="default: 2 (toys), 32 (digits), 100 (fashion and other images)")
    p.add_argument("--width", type=int, help="MLP hidden units (100) or DCGAN ngf = ndf (64)")
    p.add_argument("--image-size", type=int, help="image side for cifar10 (32), celeba and image-folder (64)")
    p.add_argument("--train-size", type=int, help="toys: points generated (64000); fashion: the first N 'gan' images; others: use only N images")
    p.add_argument("--holdout-limit", type=int, help="write at most N held-out samples to real.npy")
    p.add_argument("--save-epochs", type=_epochs, default=[], metavar="E1,E2,...", help="also write OUTPUT/epoch-NNN/")
    p.add_argument(
        "--refit-epochs", type=int, default=0, metavar="N",
        help="train a copy of D alone for N epochs against the frozen G before each save (default 0)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (fixed for reproducibility; default 1)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--workers", type=int, default=0, help="data-loader worker processes for image datasets")
    p.add_argument("--overwrite", action="store_true", help="replace a model or training run already in OUTPUT")
    p.add_argument(
        "--resume", action="store_true",
        help="continue the run in OUTPUT from its last finished epoch (OUTPUT/train-state.pt, written after every "
        "epoch); same settings, --epochs may grow",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


class _Reporter:
    """A tqdm bar over all steps on a terminal; otherwise a log line per epoch, at most every 10 s."""

    def __init__(self, total_epochs: int, stream: TextIO) -> None:
        self._total = total_epochs
        self._stream = stream
        self._bar: Any = None
        self._last_line = 0.0

    def start(self, total_steps: int) -> None:
        if self._stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, unit="step", file=self._stream, dynamic_ncols=True)

    def step(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def epoch(self, stats: EpochStats) -> None:
        text = f"epoch {stats.epoch}/{self._total} d_loss={stats.d_loss:.4f} g_loss={stats.g_loss:.4f}"
        if self._bar is not None:
            self._bar.set_postfix_str(text)
            return
        now = time.monotonic()
        if now - self._last_line >= 10 or stats.epoch in (1, self._total):
            self._last_line = now
            print(f"{text} ({stats.seconds:.1f} s/epoch)", file=self._stream, flush=True)

    def log(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(message, file=self._stream)
        else:
            print(message, file=self._stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    reporter: _Reporter | None = None
    try:
        check_output_location(args.output)
        cfg = make_config(args.dataset, **{name: getattr(args, name) for name in _CONFIG_FLAGS})
        reporter = _Reporter(cfg.epochs, sys.stderr)
        started = time.monotonic()
        out = train_and_save(cfg, args.output, overwrite=args.overwrite, resume=args.resume, progress=reporter, log=reporter.log)
        reporter.close()
        print(f"wrote {out} in {time.monotonic() - started:.0f} s", file=sys.stderr)
        return 0
    except MhganError as exc:
        if reporter is not None:
            reporter.close()
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Fit a density-ratio classifier for a frozen generator and write a model directory that uses it as D.

    python -m jobs.fit_ratio --model grid2d --dataset grid2d --output runs/grid2d-ratio
    python -m jobs.fit_ratio --model runs/my-gan --real-train my_train.npy --output runs/my-gan-ratio
    python -m jobs.fit_ratio --model fashion --dataset fashion --init joint --output runs/fashion-refit

The output's discriminator.pt2 is a fresh classifier of real vs generated
samples (binary cross-entropy, AdamW weight decay + dropout, fresh G samples
every step, early-stopped on held-out log loss); the model's jointly trained D
is kept beside it as discriminator-joint.pt2, and model.json records the
held-out AUC, log loss, Dawid's Z, ECE and Brier of both, and the training
curve. The real training data must be what G was trained on, never the
model's held-out real.npy. With --init joint the same loop refits the
GAN's own discriminator instead, starting from its jointly trained weights.
Exit status 0 on success, 2 on a user error (one
sentence on stderr; --debug adds the traceback).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

from jobs.cli import check_output_location, run_main
from mhgan_dist.training.ratio import INITS
from mhgan_dist.training.setup import DATASETS

__all__ = ["build_parser", "main", "format_report"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.fit_ratio", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="shipped model name or model directory (its G is kept frozen)")
    p.add_argument("--output", required=True, metavar="DIR", help="model directory to write (not the source's own)")
    source = p.add_argument_group("real training data (one of)")
    source.add_argument("--dataset", choices=DATASETS, help="rebuild the model's training split of this dataset")
    source.add_argument("--real-train", metavar="PATH", help="your own real training samples, .npy or Parquet [N, *shape]")
    p.add_argument("--data-root", metavar="PATH", help="local copy of an image dataset (never downloaded)")
    p.add_argument("--real", metavar="PATH", help="held-out real samples (default: the model's real.npy)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--init", choices=INITS, default="fresh",
        help="fresh: a new ratio classifier (default); joint: refit the GAN's own discriminator, rebuilt from "
        "model.json's architecture and started from its jointly trained weights (lr 2e-4, batch 64, no dropout)",
    )
    p.add_argument("--width", type=int, help="MLP hidden units (128) or first conv channels (32)")
    p.add_argument("--dropout", type=float, help="dropout probability (0.1 MLP, 0.25 conv)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay (0.01)")
    p.add_argument("--lr", type=float, help="AdamW learning rate (2e-3 MLP, 5e-4 conv, 2e-4 refit)")
    p.add_argument("--batch-size", type=int, help="real samples per step, joined by as many fresh G samples (128 MLP, 64 conv and refit)")
    p.add_argument("--steps-per-round", type=int, help="optimiser steps between validation evaluations (200)")
    p.add_argument("--max-rounds", type=int, help="at most this many rounds (100)")
    p.add_argument("--patience", type=int, help="stop after this many rounds without a lower validation log loss (5)")
    p.add_argument("--max-seconds", type=float, help="stop after the first round that ends past this wall-clock budget (no limit)")
    p.add_argument("--val-size", type=int, help="real training samples held out for early stopping (10%%, at most 5000)")
    p.add_argument("--eval-fakes", type=int, help="held-out diagnostics on N fresh G samples against the first N held-out reals (default: all reals)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (fixed for reproducibility; default 1)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--overwrite", action="store_true", help="replace a model already in OUTPUT")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def format_report(result: dict[str, Any]) -> str:
    """The training curve and both D's held-out diagnostics, as aligned text lines."""
    fit = result["ratio_fit"]
    lines = ["round   step  real-epochs  train-log-loss  val-log-loss  val-AUC"]
    for r in fit["curve"]:
        train = "" if r["train_log_loss"] is None else f"{r['train_log_loss']:.4f}"
        mark = " *" if r["round"] == fit["best_round"] else ""
        lines.append(
            f"{r['round']:5d} {r['step']:6d} {r['real_epochs']:12.2f} {train:>15} {r['val_log_loss']:13.4f} {r['val_auc']:8.3f}{mark}"
        )
    lines.append(f"{fit['kind']}: kept round {fit['best_round']} (*), stopped by {fit['stopped']} after {fit['steps']} steps")
    lines.append("held-out real vs fresh G:       AUC  log-loss  Dawid-Z    ECE   Brier  E_G[odds]")
    for name, entry in result["discriminators"].items():
        d = entry["heldout"]
        lines.append(
            f"  {name:26s} {d['auc']:6.3f} {d['log_loss']:9.4f} {d['dawid_z']:8.2f} {d['ece']:6.3f} {d['brier']:7.4f} "
            f"{d['fake_odds_mean']:10.3g}"
        )
    return "\n".join(lines)


def _body(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from mhgan_dist.training.ratio import fit_ratio_model

    check_output_location(args.output)
    options = dict(
        width=args.width, dropout=args.dropout, weight_decay=args.weight_decay, lr=args.lr,
        batch_size=args.batch_size, steps_per_round=args.steps_per_round, max_rounds=args.max_rounds,
        patience=args.patience, val_size=args.val_size, seed=args.seed, threads=args.threads, device=args.device,
        init=args.init, max_seconds=args.max_seconds,
    )
    started = time.monotonic()

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    out, result = fit_ratio_model(
        args.model, args.output, options, dataset=args.dataset, data_root=args.data_root, real_train=args.real_train,
        real=args.real, eval_fakes=args.eval_fakes, overwrite=args.overwrite, log=log,
    )
    print(format_report(result))
    print(f"wrote {out} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_body, None if argv is None else list(argv))


if __name__ == "__main__":
    sys.exit(main())

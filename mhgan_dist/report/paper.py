"""The paper's toy-benchmark values, and tables of our results beside them (no Ray, no torch)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PAPER_GRID", "METHODS", "Summary", "summarise", "grid_table", "mixture_table", "chain_length_table"]

# Turner et al. 2019, 2-D grid, read off the paper's vector figures (about +-0.003):
# epoch -> method -> (JSD, HQ share). MH is the calibrated MH-GAN; the base unit of JSD is not stated.
PAPER_GRID: dict[int, dict[str, tuple[float, float]]] = {
    10: {"base": (0.171, 0.759), "drs": (0.084, 0.921), "mh": (0.173, 0.983)},
    30: {"base": (0.138, 0.931), "drs": (0.107, 0.966), "mh": (0.017, 0.978)},
    60: {"base": (0.081, 0.965), "drs": (0.068, 0.978), "mh": (0.018, 0.989)},
    150: {"base": (0.083, 0.981), "drs": (0.077, 0.990), "mh": (0.017, 0.995)},
}

# Method key -> (label, key of the paper's column it corresponds to, or None).
METHODS: dict[str, tuple[str, str | None]] = {
    "base": ("GAN (base)", "base"),
    "drs": ("DRS, gamma at 95th pct (cal)", "drs"),
    "drs-gamma0": ("DRS, gamma = 0 (cal)", None),
    "mh-raw": ("MH-GAN, raw D", None),
    "mh": ("MH-GAN, calibrated", "mh"),
}


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof 1; 0 for one value), min and max of one metric over seeds."""

    mean: float
    std: float
    low: float
    high: float
    n: int

    def text(self, digits: int = 3) -> str:
        if self.n == 1:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "min": self.low, "max": self.high, "n": self.n}


def summarise(values: Iterable[float]) -> Summary:
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("no values to summarise")
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return Summary(float(v.mean()), std, float(v.min()), float(v.max()), int(v.size))


def _group(rows: Sequence[dict[str, Any]], key: str) -> dict[tuple[Any, str], list[dict[str, Any]]]:
    groups: dict[tuple[Any, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row[key], row["method"]), []).append(row)
    return groups


def grid_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: per epoch and method, JS (nats, bits), HQ share and modes over seeds, with the paper's values.

    rows: one per (epoch, seed, method) with keys epoch, seed, method, js_nats, js_bits, hq_share, modes_recovered.
    """
    lines = [
        "| epoch | method | JS nats | JS bits | HQ share | modes (of 25) | paper JSD | paper HQ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups = _group(rows, "epoch")
    for epoch in sorted({r["epoch"] for r in rows}):
        for method, (label, paper_key) in METHODS.items():
            group = groups.get((epoch, method))
            if not group:
                continue
            paper = PAPER_GRID.get(epoch, {}).get(paper_key) if paper_key else None
            modes = summarise(r["modes_recovered"] for r in group)
            lines.append(
                f"| {epoch} | {label} | {summarise(r['js_nats'] for r in group).text(4)} | "
                f"{summarise(r['js_bits'] for r in group).text(4)} | {summarise(r['hq_share'] for r in group).text(3)} | "
                f"{modes.text(1)} (min {modes.low:.0f}) | "
                f"{'–' if paper is None else f'{paper[0]:.3f}'} | {'–' if paper is None else f'{paper[1]:.3f}'} |"
            )
    return "\n".join(lines)


def mixture_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: per epoch and method, JS (nats, bits) and the share of samples nearest each mode."""
    lines = [
        "| epoch | method | JS nats | JS bits | share at 0 / 1 / 2 / 3 (mean over seeds) |",
        "|---|---|---|---|---|",
    ]
    groups = _group(rows, "epoch")
    for epoch in sorted({r["epoch"] for r in rows}):
        for method, (label, _) in METHODS.items():
            group = groups.get((epoch, method))
            if not group:
                continue
            shares = np.mean([np.asarray(r["counts"][:4], float) / r["n"] for r in group], axis=0)
            lines.append(
                f"| {epoch} | {label} | {summarise(r['js_nats'] for r in group).text(4)} | "
                f"{summarise(r['js_bits'] for r in group).text(4)} | {' / '.join(f'{s:.3f}' for s in shares)} |"
            )
    return "\n".join(lines)


def chain_length_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: per chain length K and method, grid metrics over seeds, with proposals per sample."""
    lines = [
        "| K | method | JS nats | JS bits | HQ share | modes recovered | acceptance | restarts |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups = _group(rows, "chain_length")
    for k in sorted({r["chain_length"] for r in rows}):
        for method, (label, _) in METHODS.items():
            group = groups.get((k, method))
            if not group:
                continue
            acceptance = [r["acceptance_rate"] for r in group if r.get("acceptance_rate") is not None]
            restarts = [r["restart_rate"] for r in group if r.get("restart_rate") is not None]
            lines.append(
                f"| {k} | {label} | {summarise(r['js_nats'] for r in group).text(4)} | "
                f"{summarise(r['js_bits'] for r in group).text(4)} | {summarise(r['hq_share'] for r in group).text(3)} | "
                f"{summarise(r['modes_recovered'] for r in group).text(1)} | "
                f"{summarise(acceptance).text(3) if acceptance and method.startswith('mh') else '–'} | "
                f"{summarise(restarts).text(3) if restarts and method.startswith('mh') else '–'} |"
            )
    return "\n".join(lines)

"""The report's figures as PNG bytes (matplotlib's Agg canvas; pyplot and its global state are not used)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mhgan_dist.quality import metrics

__all__ = [
    "png_bytes",
    "scatter_panels",
    "histogram_panels",
    "image_grid",
    "image_grid_panels",
    "class_histogram",
    "reliability_diagram",
    "score_histogram",
    "chain_histogram",
]

DPI = 100
_REAL_COLOUR = "#444444"
_GENERATED_COLOUR = "#d62728"
_PICKED_COLOUR = "#1f77b4"


def png_bytes(figure: Figure) -> bytes:
    """The figure drawn on an Agg canvas, as PNG bytes at :data:`DPI`, cropped to its content."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _panels(count: int, width: float = 3.4, height: float = 3.4) -> tuple[Figure, list]:
    columns = min(count, 5)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(width * columns, height * rows))
    axes = [figure.add_subplot(rows, columns, i + 1) for i in range(count)]
    return figure, axes


def scatter_panels(panels: Sequence[tuple[str, np.ndarray]], modes: np.ndarray | None = None,
                   max_points: int = 5000) -> bytes:
    """Side-by-side scatter plots of 2-D samples: one panel per (title, points [n, 2]).

    modes: [m, 2] centres drawn as crosses; at most ``max_points`` (the first) points per panel.
    """
    figure, axes = _panels(len(panels))
    limits = None
    if modes is not None:
        low, high = modes.min(axis=0) - 0.6, modes.max(axis=0) + 0.6
        limits = (low, high)
    for ax, (title, points) in zip(axes, panels, strict=True):
        shown = points[:max_points]
        ax.scatter(shown[:, 0], shown[:, 1], s=3, alpha=0.5, color=_PICKED_COLOUR, linewidths=0, rasterized=True)
        if modes is not None:
            ax.scatter(modes[:, 0], modes[:, 1], marker="x", s=18, color=_GENERATED_COLOUR, linewidths=0.8)
        if limits is not None:
            ax.set_xlim(limits[0][0], limits[1][0])
            ax.set_ylim(limits[0][1], limits[1][1])
        ax.set_aspect("equal")
        ax.set_title(f"{title}\n({len(shown):,} of {len(points):,} points)", fontsize=9)
        ax.tick_params(labelsize=7)
    return png_bytes(figure)


def histogram_panels(panels: Sequence[tuple[str, np.ndarray]], modes: np.ndarray | None = None,
                     real: np.ndarray | None = None) -> bytes:
    """Side-by-side histograms of 1-D samples, one panel per (title, values [n]); real data as an outline."""
    figure, axes = _panels(len(panels), width=3.6, height=2.8)
    values = [v.reshape(-1) for _, v in panels] + ([real.reshape(-1)] if real is not None else [])
    low = min(float(np.percentile(v, 0.1)) for v in values) - 0.3
    high = max(float(np.percentile(v, 99.9)) for v in values) + 0.3
    bins = np.linspace(low, high, 121)
    for ax, (title, v) in zip(axes, panels, strict=True):
        ax.hist(v.reshape(-1), bins=bins, density=True, color=_PICKED_COLOUR, alpha=0.7)
        if real is not None:
            ax.hist(real.reshape(-1), bins=bins, density=True, histtype="step", color=_REAL_COLOUR, label="real")
        if modes is not None:
            for m in modes.reshape(-1):
                ax.axvline(float(m), color=_GENERATED_COLOUR, linewidth=0.6, linestyle=":")
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
    return png_bytes(figure)


def _tile_canvas(images: np.ndarray, columns: int, rows: int | None = None) -> np.ndarray:
    """float32 [H', W', 3] canvas of up to columns x rows images [n, C, H, W] in [-1, 1], 1-pixel white gaps."""
    count = min(len(images), columns * (rows or columns))
    rows = max(1, math.ceil(count / columns)) if rows is None else rows
    channels, height, width = images.shape[1:]
    canvas = np.ones((rows * (height + 1) + 1, columns * (width + 1) + 1, 3), dtype=np.float32)
    for i in range(count):
        r, c = divmod(i, columns)
        tile = np.clip((images[i] + 1.0) / 2.0, 0.0, 1.0).transpose(1, 2, 0)
        if channels == 1:
            tile = np.repeat(tile, 3, axis=2)
        canvas[1 + r * (height + 1): 1 + r * (height + 1) + height, 1 + c * (width + 1): 1 + c * (width + 1) + width] = tile
    return canvas


def image_grid(images: np.ndarray, title: str, columns: int = 8) -> bytes:
    """A grid of up to ``columns``^2 images [n, C, H, W] in [-1, 1] (grey or RGB)."""
    canvas = _tile_canvas(images, columns)
    figure = Figure(figsize=(3.2, 3.2 * canvas.shape[0] / canvas.shape[1] + 0.35))
    ax = figure.add_subplot(1, 1, 1)
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    return png_bytes(figure)


def image_grid_panels(panels: Sequence[tuple[str, np.ndarray]], columns: int = 8, rows: int = 8) -> bytes:
    """Image grids side by side, one panel per (title, images [n, C, H, W] in [-1, 1]); up to columns x rows each."""
    figure, axes = _panels(len(panels), width=3.2, height=3.2 * rows / columns + 0.35)
    for ax, (title, images) in zip(axes, panels, strict=True):
        ax.imshow(_tile_canvas(images, columns, rows), interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(title, fontsize=9)
    return png_bytes(figure)


def class_histogram(panels: Sequence[tuple[str, np.ndarray]], class_names: Sequence[str]) -> bytes:
    """Grouped bars: the share of each set's samples per class (label, counts [classes]); a line at uniform."""
    figure = Figure(figsize=(max(6.0, 0.9 * len(class_names) + 0.25 * len(panels) * len(class_names) / 4), 3.4))
    ax = figure.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(panels))
    x = np.arange(len(class_names))
    for i, (label, counts) in enumerate(panels):
        counts = np.asarray(counts, dtype=np.float64)
        colour = _REAL_COLOUR if label.startswith("real") else None
        ax.bar(x - 0.4 + (i + 0.5) * width, counts / counts.sum(), width, label=label, color=colour)
    ax.axhline(1.0 / len(class_names), color="#999999", linestyle="--", linewidth=0.8, label="uniform")
    ax.set_xticks(x, list(class_names), rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("share of samples (classifier argmax)", fontsize=8)
    ax.legend(fontsize=6, ncol=min(4, len(panels) + 1))
    ax.tick_params(labelsize=7)
    return png_bytes(figure)


def reliability_diagram(labels: np.ndarray, before: np.ndarray, after: np.ndarray,
                        titles: tuple[str, str], bins: int = 10) -> bytes:
    """Reliability diagrams of P(real) before and after calibration, side by side.

    labels: [n] (1 = real); before, after: [n] probabilities. Marker area follows the bin count.
    """
    figure, axes = _panels(2, width=3.0, height=3.0)
    for ax, probabilities, title in zip(axes, (before, after), titles, strict=True):
        mean_p, share, count = metrics.reliability_curve(probabilities, labels, bins)
        used = count > 0
        ax.plot([0, 1], [0, 1], color="#999999", linewidth=0.8, linestyle="--")
        ax.plot(mean_p[used], share[used], color=_PICKED_COLOUR, linewidth=1.0)
        ax.scatter(mean_p[used], share[used], s=8 + 200 * count[used] / count.sum(), color=_PICKED_COLOUR, zorder=3)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("predicted P(real)", fontsize=8)
        ax.set_ylabel("observed share of real", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
    return png_bytes(figure)


def score_histogram(labels: np.ndarray, raw: np.ndarray, picked_raw: np.ndarray | None, picked_label: str) -> bytes:
    """Histogram of raw D logits: held-out real vs generated calibration draws, and the emitted samples'."""
    figure = Figure(figsize=(5.2, 3.0))
    ax = figure.add_subplot(1, 1, 1)
    real, generated = raw[labels == 1], raw[labels == 0]
    values = [real, generated] + ([picked_raw] if picked_raw is not None else [])
    low = min(float(np.percentile(v, 0.5)) for v in values)
    high = max(float(np.percentile(v, 99.5)) for v in values)
    if high <= low:
        low, high = low - 1.0, high + 1.0
    bins = np.linspace(low, high, 61)
    ax.hist(np.clip(generated, low, high), bins=bins, density=True, alpha=0.5, color=_GENERATED_COLOUR,
            label=f"generated (calibration draws, n={generated.size:,})")
    ax.hist(np.clip(real, low, high), bins=bins, density=True, alpha=0.5, color=_REAL_COLOUR,
            label=f"real (held out, n={real.size:,})")
    if picked_raw is not None:
        ax.hist(np.clip(picked_raw, low, high), bins=bins, density=True, histtype="step", linewidth=1.4,
                color=_PICKED_COLOUR, label=f"emitted by {picked_label} (n={picked_raw.size:,})")
    ax.set_xlabel("raw D logit (clipped to the 0.5-99.5% range)", fontsize=8)
    ax.set_ylabel("density", fontsize=8)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    return png_bytes(figure)


def chain_histogram(accepts: np.ndarray, restarted: np.ndarray, chain_length: int, title: str) -> bytes:
    """Histogram of accepted moves per chain; restarted chains (MH's cap-out) stacked in another colour."""
    figure = Figure(figsize=(5.2, 3.0))
    ax = figure.add_subplot(1, 1, 1)
    top = max(1, int(accepts.max()) if accepts.size else 1)
    bins = np.arange(0, top + 2) - 0.5 if top <= 60 else np.linspace(-0.5, top + 0.5, 61)
    ax.hist([accepts[~restarted], accepts[restarted]], bins=bins, stacked=True,
            color=[_PICKED_COLOUR, _GENERATED_COLOUR], label=["chains", "restarted chains"])
    ax.set_xlabel(f"accepted moves per chain (K = {chain_length})", fontsize=8)
    ax.set_ylabel("chains", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    return png_bytes(figure)


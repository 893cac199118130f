"""Random streams keyed by (run seed, stream, row): counter-based at block level.

Every random number the pipeline uses is a pure function of the run seed, the
purpose it serves (the stream) and the index of the thing it belongs to (a
proposal, a chain). Rows are grouped in fixed blocks; block ``b`` of a stream is
drawn by a PCG64 generator seeded with ``SeedSequence(seed, spawn_key=(stream,
b))``, a hash of the key and the block counter, so a row's values do not depend
on how rows are batched, sharded or spread over workers, and any row can be
regenerated alone. (PCG64 rather than Philox: its exponential variates are
about 40% faster, and the MH kernel's throughput is bound by them.)
Changing a block size or a draw below changes every run's output: they are
part of the on-disk format (``FORMAT_VERSION``).

numpy only: no torch, no Ray.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import numpy as np

__all__ = [
    "FORMAT_VERSION",
    "Stream",
    "latents",
    "latents_at",
    "chain_exponentials",
    "chain_exponentials_at",
    "chain_uniforms",
    "chain_integers",
]

FORMAT_VERSION = 1

LATENT_BLOCK_ROWS = 1024
CHAIN_BLOCK_ROWS = 256
_MAX_SEED = 2**63


class Stream(enum.IntEnum):
    """Independent purposes of randomness within one run."""

    PROPOSALS = 0  # latents of chain proposals: row = proposal index
    CALIBRATION = 1  # latents of generated calibration draws no chain uses
    DRS_PILOT = 2  # latents of the DRS pilot draws (estimate of max logit)
    MH_STEPS = 3  # per-chain exponential variates of the MH pass
    MH_RESTART = 4  # per-chain exponential variates of the restart pass
    DRS_STEPS = 5  # per-chain uniforms of DRS acceptance tests
    REAL_INIT = 6  # per-chain index of the real sample a chain starts from
    THIN_STEPS = 7  # per-chain exponential variates of a long thinned chain: [L] per chain
    THIN_RESTART = 8  # per-chain variates of a thinned chain's restart pass: [T - 1] per chain
    THIN_PILOT = 9  # latents of generated draws that estimate the repeat share (not in the calibration fit)


def _check_seed(seed: int) -> int:
    seed = int(seed)
    if not 0 <= seed < _MAX_SEED:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
    return seed


def _generator(seed: int, stream: Stream, block: int) -> np.random.Generator:
    sequence = np.random.SeedSequence(_check_seed(seed), spawn_key=(int(stream), int(block)))
    return np.random.Generator(np.random.PCG64(sequence))


def _rows(
    seed: int,
    stream: Stream,
    start: int,
    stop: int,
    block_rows: int,
    draw_block: Callable[[np.random.Generator], np.ndarray],
    step_major: bool = False,
) -> np.ndarray:
    """Rows [start, stop) of a stream whose block ``b`` is ``draw_block(generator(b))``.

    ``draw_block`` returns [block_rows, ...], or [width, block_rows] when
    ``step_major``; the result is then the transposed (Fortran-ordered) view
    [stop - start, width], which the pickers consume without a copy.
    """
    if start < 0 or stop < start:
        raise ValueError(f"row range must satisfy 0 <= start <= stop, got [{start}, {stop})")
    if stop == start:
        empty = draw_block(_generator(seed, stream, 0))
        return (empty.T if step_major else empty)[:0]
    first_block, last_block = start // block_rows, (stop - 1) // block_rows
    out = None
    for block in range(first_block, last_block + 1):
        drawn = draw_block(_generator(seed, stream, block))
        rows = drawn.T if step_major else drawn
        lo = max(start, block * block_rows)
        hi = min(stop, (block + 1) * block_rows)
        if out is None:
            shape = (stop - start,) + rows.shape[1:]
            out = np.empty(shape[::-1] if step_major else shape, dtype=rows.dtype)
            out_rows = out.T if step_major else out
        out_rows[lo - start : hi - start] = rows[lo - block * block_rows : hi - block * block_rows]
    return out_rows


def latents(seed: int, stream: Stream, start: int, stop: int, latent_dim: int) -> np.ndarray:
    """Standard normal latents of rows [start, stop) of ``stream``: float32 [stop - start, latent_dim]."""
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
    return _rows(
        seed,
        stream,
        start,
        stop,
        LATENT_BLOCK_ROWS,
        lambda g: g.standard_normal((LATENT_BLOCK_ROWS, latent_dim), dtype=np.float32),
    )


def _rows_at(indices: np.ndarray, block_rows: int, rows_of_range: Callable[[int, int], np.ndarray]) -> np.ndarray:
    """Rows at arbitrary indices (any order, repeats allowed), drawing each covering block once."""
    indices = np.asarray(indices, dtype=np.int64)
    if indices.ndim != 1:
        raise ValueError(f"indices must be one-dimensional, got shape {indices.shape}")
    if indices.size and indices.min() < 0:
        raise ValueError("indices must be non-negative")
    template = rows_of_range(0, 0)
    out = np.empty((indices.size,) + template.shape[1:], dtype=template.dtype)
    blocks = indices // block_rows
    for block in np.unique(blocks):
        where = np.flatnonzero(blocks == block)
        start = int(block) * block_rows
        out[where] = rows_of_range(start, start + block_rows)[indices[where] - start]
    return out


def latents_at(seed: int, stream: Stream, indices: np.ndarray, latent_dim: int) -> np.ndarray:
    """Latents of arbitrary rows: float32 [len(indices), latent_dim], equal row for row to :func:`latents`."""
    return _rows_at(indices, LATENT_BLOCK_ROWS, lambda a, b: latents(seed, stream, a, b, latent_dim))


def chain_exponentials_at(seed: int, stream: Stream, chain_ids: np.ndarray, steps: int) -> np.ndarray:
    """:func:`chain_exponentials` of arbitrary chains: float32 [len(chain_ids), steps]."""
    return _rows_at(chain_ids, CHAIN_BLOCK_ROWS, lambda a, b: chain_exponentials(seed, stream, a, b, steps))


def chain_exponentials(seed: int, stream: Stream, start: int, stop: int, steps: int) -> np.ndarray:
    """Standard exponential variates (= -log U) for chains [start, stop): float32 [stop - start, steps].

    The result is a Fortran-ordered view (its transpose is contiguous), the layout
    :func:`mhgan_dist.core.pickers.mh` steps through.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    return _rows(
        seed,
        stream,
        start,
        stop,
        CHAIN_BLOCK_ROWS,
        lambda g: g.standard_exponential((steps, CHAIN_BLOCK_ROWS), dtype=np.float32),
        step_major=True,
    )


def chain_uniforms(seed: int, stream: Stream, start: int, stop: int, steps: int) -> np.ndarray:
    """Uniforms in [0, 1) for chains [start, stop): float64 [stop - start, steps]."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    return _rows(
        seed, stream, start, stop, CHAIN_BLOCK_ROWS, lambda g: g.random((CHAIN_BLOCK_ROWS, steps))
    )


def chain_integers(seed: int, stream: Stream, start: int, stop: int, high: int) -> np.ndarray:
    """One integer in [0, high) per chain in [start, stop): int64 [stop - start]."""
    if high < 1:
        raise ValueError(f"high must be >= 1, got {high}")
    return _rows(
        seed,
        stream,
        start,
        stop,
        CHAIN_BLOCK_ROWS,
        lambda g: g.integers(0, high, size=CHAIN_BLOCK_ROWS, dtype=np.int64),
    )

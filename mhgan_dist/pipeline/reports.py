"""Plain values that pass between the driver and a proposal worker, importable without torch.

The driver unpickles the workers' replies and builds what it sends them;
defined beside the torch code, they would make it import torch (about 2.5 s of
CPU) to do so.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mhgan_dist.pipeline.chains import ChainRun
from mhgan_dist.run.store import FileRecord

__all__ = ["WorkerInfo", "StageResult", "SamplesResult", "ChainsResult", "PartStats", "CalibratedRun", "part_stats",
           "peak_rss_bytes"]


@dataclass(frozen=True)
class WorkerInfo:
    """What a started worker holds: its device type ("cpu" or "cuda"), G's latent size and sample
    shape, the model fingerprint, torch threads, process id, and the precision and batch it chose."""

    device: str
    latent_dim: int
    sample_shape: tuple[int, ...]
    fingerprint: str
    threads: int
    pid: int
    precision: str
    batch_size: int


@dataclass(frozen=True)
class StageResult:
    """A finished file and when its work ran (wall-clock seconds since the epoch)."""

    record: FileRecord
    started_at: float
    finished_at: float

    @property
    def seconds(self) -> float:
        return self.finished_at - self.started_at


@dataclass(frozen=True, eq=False)
class PartStats:
    """What a run's closing statistics take from one part, chains [c0, c0 + C): its rows, the sum of their
    ``accepts``, and per chain its outputs (int64 [C]), whether it restarted (bool [C]) and its outputs
    that repeat their predecessor (int64 [C])."""

    rows: int
    accepts: int
    outputs: np.ndarray
    restarted: np.ndarray
    repeats: np.ndarray


def part_stats(table: pa.Table, chain_start: int, chain_stop: int) -> PartStats:
    """The statistics of rows with ``chain_id``, ``accepts``, ``restarted`` and ``repeat`` columns (a chain part,
    or the samples part made from it) of chains [chain_start, chain_stop)."""
    chains = table.column("chain_id").to_numpy() - chain_start
    count = chain_stop - chain_start
    if chains.size and not (0 <= chains.min() and chains.max() < count):
        raise ValueError(f"a part of chains [{chain_start}, {chain_stop}) holds rows of other chains")
    restarted = table.column("restarted").to_numpy(zero_copy_only=False)
    repeats = table.column("repeat").to_numpy(zero_copy_only=False)
    # The restart rule is per chain: a thinned chain's outputs all carry its flag.
    return PartStats(rows=table.num_rows, accepts=int(pc.sum(table.column("accepts")).as_py() or 0),
                     outputs=np.bincount(chains, minlength=count),
                     restarted=np.bincount(chains, weights=restarted, minlength=count) > 0,
                     repeats=np.bincount(chains, weights=repeats, minlength=count).astype(np.int64))


@dataclass(frozen=True)
class SamplesResult(StageResult):
    """A finished samples part, with the statistics of its rows."""

    stats: PartStats


@dataclass(frozen=True)
class ChainsResult:
    """A finished chain part: its file, the seconds the picker took, and the worker's peak resident bytes."""

    record: FileRecord
    seconds: float
    peak_rss: int


@dataclass(frozen=True, eq=False)
class CalibratedRun:
    """What every chain-picking and samples call of a run needs once calibration is known; each proposal actor
    receives it once. samples_metadata: the ``mhgan.*`` metadata of every samples file (mhgan_dist.run.schema)."""

    chains: ChainRun
    samples_metadata: dict[str, Any]


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far, in bytes.

    Linux's VmHWM of the process's own memory map. ``getrusage``'s ru_maxrss
    would carry over the peak of the process that forked this one (a 1 GB
    benchmark or notebook that starts the job reports a 1 GB driver), since
    Linux keeps it across exec.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere

"""What a proposal worker reports to the driver: plain values, importable without torch.

The driver unpickles these from the actors' replies; defined beside the
torch code, they would make it import torch (about 2.5 s of CPU) to read them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from mhgan_dist.run.store import FileRecord

__all__ = ["WorkerInfo", "StageResult", "peak_rss_bytes"]


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

"""The proposal worker as a Ray actor, in a module a driver can import without torch.

:class:`ProposalActor` imports :class:`~mhgan_dist.pipeline.proposals.ProposalWorker`
(torch, the model loader) when Ray starts it, in the actor's own process: the
driver only plans and schedules, and importing torch there would delay its
start by about 2.5 s of CPU on the cores the actors are about to use.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import ray

from mhgan_dist.errors import MhganError
from mhgan_dist.models import ModelFiles
from mhgan_dist.pipeline.reports import StageResult, WorkerInfo
from mhgan_dist.run.store import RunStore

__all__ = ["ProposalActor"]


class ProposalActor:
    """Holds one :class:`~mhgan_dist.pipeline.proposals.ProposalWorker`; each method is the worker's.

    A user error while it starts (a bad model file, a device it cannot use) is
    kept and raised by ``info`` and ``configure``, the calls the driver waits on
    before giving an actor work: raised from ``__init__`` instead, the actor's
    process dies and Ray prints its traceback and a native stack dump to the
    driver's stderr, burying the job's one sentence.
    """

    def __init__(self, model: ModelFiles, **options: Any) -> None:
        from mhgan_dist.pipeline.proposals import ProposalWorker

        self._start_error: MhganError | None = None
        try:
            self._worker = ProposalWorker(model, granted_gpu_ids=tuple(ray.get_gpu_ids()), **options)
        except MhganError as exc:
            self._start_error = exc

    def _started(self):
        if self._start_error is not None:
            raise self._start_error
        return self._worker

    def info(self) -> WorkerInfo:
        return self._started().info()

    def configure(self, batch_size: int, precision: str) -> None:
        self._started().configure(batch_size, precision)

    def score_stream(self, stream: int, start: int, stop: int) -> np.ndarray:
        return self._worker.score_stream(stream, start, stop)

    def score_real(self, start: int, stop: int) -> np.ndarray:
        return self._worker.score_real(start, stop)

    def write_shard(self, store: RunStore, index: int, start: int, stop: int, keep_samples: bool) -> StageResult:
        return self._worker.write_shard(store, index, start, stop, keep_samples)

    def write_samples(self, store: RunStore, index: int, chains: pa.Table, metadata: dict) -> StageResult:
        return self._worker.write_samples(store, index, chains, metadata)

    def time_batches(self, num_batches: int) -> tuple[int, float]:
        return self._worker.time_batches(num_batches)

    def peak_rss(self) -> int:
        return self._worker.peak_rss()

    # Chain picking runs in the actor's own "chains" thread: never queued behind G and D, and in a
    # warm process. As Ray tasks of a fraction of a CPU each part started a fresh worker process
    # (Ray reaps idle workers beyond one per CPU within a second): 49 of them in a 6-minute run on
    # 2 cores, about a tenth of the machine.
    @ray.method(concurrency_group="chains")
    def pick_part(self, *args: Any):
        return self._worker.pick_part(*args)

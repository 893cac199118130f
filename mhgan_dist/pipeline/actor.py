"""The proposal worker as a Ray actor, in a module a driver can import without torch.

:class:`ProposalActor` imports :class:`~mhgan_dist.pipeline.proposals.ProposalWorker`
(torch, the model loader) when Ray starts it, in the actor's own process: the
driver only plans and schedules, and importing torch there would delay its
start by about 2.5 s of CPU on the cores the actors are about to use.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import ray

from mhgan_dist.core.calibrators import Calibrator
from mhgan_dist.errors import MhganError
from mhgan_dist.models import ModelFiles
from mhgan_dist.pipeline.reports import CalibratedRun, ChainsResult, SamplesResult, StageResult, WorkerInfo
from mhgan_dist.run.store import RunStore

__all__ = ["ProposalActor"]


class ProposalActor:
    """Holds one :class:`~mhgan_dist.pipeline.proposals.ProposalWorker`, and what each of its calls needs once.

    ``output``: the run directory it writes (opened on the first write; a dry
    run writes nothing). ``adopt`` gives it the run's :class:`CalibratedRun`
    once calibration is known, before any chain-picking or samples call.

    A user error while it starts (a bad model file, a device it cannot use) is
    kept and raised by ``info`` and ``configure``, the calls the driver waits on
    before giving an actor work: raised from ``__init__`` instead, the actor's
    process dies and Ray prints its traceback and a native stack dump to the
    driver's stderr, burying the job's one sentence.
    """

    def __init__(self, model: ModelFiles, output: str | None = None, **options: Any) -> None:
        from mhgan_dist.pipeline.proposals import ProposalWorker

        self._output = output
        self._store: RunStore | None = None
        self._run: CalibratedRun | None = None
        self._calibrator: Calibrator | None = None
        self._start_error: MhganError | None = None
        try:
            self._worker = ProposalWorker(model, granted_gpu_ids=tuple(ray.get_gpu_ids()), **options)
        except MhganError as exc:
            self._start_error = exc

    def _started(self):
        if self._start_error is not None:
            raise self._start_error
        return self._worker

    def _run_store(self) -> RunStore:
        if self._store is None:
            if self._output is None:
                raise RuntimeError("this proposal actor was started without a run directory")
            self._store = RunStore(self._output)
        return self._store

    def _calibrated(self) -> CalibratedRun:
        if self._run is None:
            raise RuntimeError("chain picking and samples need the run's calibration: adopt it first")
        return self._run

    def info(self) -> WorkerInfo:
        return self._started().info()

    def configure(self, batch_size: int, precision: str) -> None:
        self._started().configure(batch_size, precision)

    def score_stream(self, stream: int, start: int, stop: int) -> np.ndarray:
        return self._worker.score_stream(stream, start, stop)

    def score_real(self, start: int, stop: int) -> np.ndarray:
        return self._worker.score_real(start, stop)

    def write_shard(self, index: int, start: int, stop: int, keep_samples: bool) -> StageResult:
        return self._worker.write_shard(self._run_store(), index, start, stop, keep_samples)

    def write_samples(self, index: int, chain_start: int, chain_stop: int) -> SamplesResult:
        return self._worker.write_samples(self._run_store(), index, chain_start, chain_stop,
                                          self._calibrated().samples_metadata)

    def time_batches(self, num_batches: int) -> tuple[int, float]:
        return self._worker.time_batches(num_batches)

    def peak_rss(self) -> int:
        return self._worker.peak_rss()

    # Chain picking runs in the actor's own "chains" thread: never queued behind G and D, and in a
    # warm process. As Ray tasks of a fraction of a CPU each part started a fresh worker process
    # (Ray reaps idle workers beyond one per CPU within a second): 49 of them in a 6-minute run on
    # 2 cores, about a tenth of the machine. ``adopt`` runs there too, so that it never waits behind
    # G and D's queue of shards.
    @ray.method(concurrency_group="chains")
    def adopt(self, run: CalibratedRun) -> None:
        self._calibrator = run.chains.calibrator_of()
        self._run = run

    @ray.method(concurrency_group="chains")
    def pick_part(self, index: int, chain_start: int, chain_stop: int) -> ChainsResult:
        run = self._calibrated()
        return self._worker.pick_part(run.chains, self._calibrator, index, chain_start, chain_stop,
                                      self._run_store())

"""The light Ray tasks of the pipeline: chain picking and the calibration fit.

Kept apart from the actor module so that a task's worker imports numpy,
scikit-learn and pyarrow, never torch.
"""

from __future__ import annotations

import resource
import time
from typing import Any

import pyarrow as pa
import ray

from mhgan_dist.pipeline.calibrate import CalibrationOutcome, calibrate
from mhgan_dist.pipeline.chains import pick_part
from mhgan_dist.store import FileRecord

__all__ = ["pick_part_task", "calibrate_task"]


# Ray's retries are off: the scheduler retries (and counts) every failed attempt.
# The CPU they ask for comes from config (ResourceConfig.task_cpus) through .options().
@ray.remote(max_retries=0)
def pick_part_task(*args: Any) -> tuple[FileRecord, pa.Table, float, int]:
    """:func:`pick_part`, plus its seconds and this worker's peak resident bytes."""
    began = time.perf_counter()
    record, table = pick_part(*args)
    return record, table, time.perf_counter() - began, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@ray.remote(max_retries=0)
def calibrate_task(*args: Any) -> CalibrationOutcome:
    return calibrate(*args)

"""The Ray tasks of the pipeline: chain picking and the calibration fit.

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

__all__ = ["pick_part_task", "calibrate_task", "CHAIN_TASK_CPUS", "TASK_MAX_RETRIES"]

TASK_MAX_RETRIES = 3
CHAIN_TASK_CPUS = 0.5


@ray.remote(num_cpus=CHAIN_TASK_CPUS, max_retries=TASK_MAX_RETRIES, retry_exceptions=True)
def pick_part_task(*args: Any) -> tuple[FileRecord, pa.Table, float, int]:
    """:func:`pick_part`, plus its seconds and this worker's peak resident bytes."""
    began = time.perf_counter()
    record, table = pick_part(*args)
    return record, table, time.perf_counter() - began, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@ray.remote(num_cpus=CHAIN_TASK_CPUS, max_retries=TASK_MAX_RETRIES)
def calibrate_task(*args: Any) -> CalibrationOutcome:
    return calibrate(*args)

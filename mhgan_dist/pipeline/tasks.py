"""The light Ray task of the pipeline: the calibration fit (once per run).

Kept apart from the actor module so that its worker imports numpy,
scikit-learn and pyarrow, never torch. Chain picking runs on the proposal
actors (``ProposalWorker.pick_part``).
"""

from __future__ import annotations

from typing import Any

import ray

from mhgan_dist.pipeline.calibrate import CalibrationOutcome, calibrate

__all__ = ["calibrate_task"]


# Ray's retries are off: the scheduler retries (and counts) every failed attempt.
# The CPU it asks for comes from config (ResourceConfig.task_cpus) through .options().
@ray.remote(max_retries=0)
def calibrate_task(*args: Any) -> CalibrationOutcome:
    return calibrate(*args)

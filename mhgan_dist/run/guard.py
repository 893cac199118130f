"""What every run goes through: the nightly layout when asked for, and one writer per run directory.

:func:`run_guarded` wraps the job's run (``jobs.generate``, ``jobs.repick``).
What keeps a second run out of a run directory while one writes it depends on
where the directory is:

==========================================  =====================================================
run directory                               guarded by
==========================================  =====================================================
complete (``_SUCCESS``)                     nothing to guard: the run only recognises it
local path, ``file://``, a POSIX mount      :class:`~mhgan_dist.run.lease.RunLease`: flock on
(NFS, EFS, Filestore)                       ``_LEASE``, held by the job's process until it ends
a POSIX filesystem that refuses flock       the scheduler; the run says so on stderr
object stores (``s3://``, ``gs://``) and    the scheduler (one run per date: CronJob
other pyarrow filesystems (``hdfs://``)     ``concurrencyPolicy: Forbid``, systemd, ``flock``
                                            under cron); a nightly run says so on stderr
==========================================  =====================================================

pyarrow offers no create-if-absent and no lock on object stores, so nothing
in the run itself can refuse a second writer there.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from mhgan_dist.run.config import JobConfig
from mhgan_dist.run.lease import RunLease
from mhgan_dist.run.nightly import NightlyOptions, check_single_run_output, dated_run, finish_date
from mhgan_dist.run.record import SUCCESS
from mhgan_dist.run.store import RunStore, redact_uri

__all__ = ["GuardedOutcome", "run_guarded"]


class _Summary(Protocol):
    def lines(self) -> list[str]: ...


S = TypeVar("S", bound=_Summary)


@dataclass
class GuardedOutcome(Generic[S]):
    """The run's summary and what the nightly steps did, as printable lines."""

    summary: S
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [*self.summary.lines(), *self.notes]


def run_guarded(
    config: JobConfig,
    run: Callable[[JobConfig], S],
    *,
    nightly: NightlyOptions | None = None,
    say: Callable[[str], None] | None = None,
) -> GuardedOutcome[S]:
    """Runs ``run`` on ``config`` (or on its dated form), one writer at a time.

    Without ``nightly``: refuses a nightly root, then runs. With ``nightly``:
    refuses a root that holds a single run and a date that ``--keep`` would
    remove at once, runs ``OUTPUT/date=YYYY-MM-DD`` with the date's seed, then
    (also when the date was already complete) finishes the date
    (:func:`~mhgan_dist.run.nightly.finish_date`). Either way the run holds
    the run directory's lease where there is one (see the module docstring).
    ``run`` must be idempotent (``run_job`` is) and raise MhganError for user
    errors; ``say`` takes the notes meant for stderr.
    """
    say = say or (lambda message: print(message, file=sys.stderr, flush=True))
    if nightly is None:
        check_single_run_output(config.output.output)
        summary = _run_alone(config, run, say, nightly=False)
        return GuardedOutcome(summary)
    root, job = dated_run(config, nightly)
    summary = _run_alone(job, run, say, nightly=True)
    # Outside the lease: these steps touch only complete dates and are idempotent.
    return GuardedOutcome(summary, finish_date(root, nightly))


def _run_alone(job: JobConfig, run: Callable[[JobConfig], S], say: Callable[[str], None], *, nightly: bool) -> S:
    store = RunStore(job.output.output)
    if store.exists(SUCCESS):
        return run(job)
    if not store.is_local:
        if nightly:
            say(f"note: no lease on {redact_uri(job.output.output)}: object stores have no exclusive create through "
                "pyarrow, so the scheduler must not start two runs of one date (see cluster/README.md)")
        return run(job)
    with RunLease(store.root, say=say) as lease:
        if not lease.held:
            say(f"note: no lease on {store.root}: its filesystem refuses flock ({lease.unsupported}), so the "
                "scheduler must not start two runs of it at once")
        return run(job)

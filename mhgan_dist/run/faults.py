"""Built-in fault injection, for tests and fire drills (no Ray, no torch).

Set ``MHGAN_FAULTS`` in the driver's environment to a comma-separated list of
``POINT:INDEX:TIMES:MODE`` entries; the driver hands the plan to every worker.

POINT   where: ``shard`` (a proposal actor, half-way through scoring shard INDEX),
        ``calibration`` (a proposal actor, scoring the calibration draws from
        row INDEX on: 0 is the first chunk), ``chains`` (an actor picking the chains of
        part INDEX), ``materialise`` (an actor writing samples part INDEX),
        ``driver`` (the driver, after INDEX files are recorded in the manifest).
TIMES   how many times it fires (``always`` for every attempt).
MODE    ``exit``: the process dies at once (``os._exit``, like a lost worker;
        for the driver, SIGKILL); ``raise``: an exception (a persistent bug);
        ``wait``: the process writes its pid to ``POINT-INDEX.waiting`` in the
        state folder and sleeps (up to WAIT_LIMIT_S, then goes on), so that a
        test can kill its node while that work is in flight.

Firings are counted in files under ``MHGAN_FAULTS_STATE`` (default: a folder in
the system temp directory), so a restarted process sees earlier firings.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Fault", "FaultPlan", "InjectedFault", "ENV_VAR", "STATE_ENV_VAR"]

ENV_VAR = "MHGAN_FAULTS"
STATE_ENV_VAR = "MHGAN_FAULTS_STATE"
POINTS = ("shard", "calibration", "chains", "materialise", "driver")
MODES = ("exit", "raise", "wait")
WAIT_LIMIT_S = 600.0


class InjectedFault(RuntimeError):
    """Raised by a ``raise`` fault."""


@dataclass(frozen=True)
class Fault:
    point: str
    index: int
    times: int | None  # None = always
    mode: str


@dataclass(frozen=True)
class FaultPlan:
    faults: tuple[Fault, ...] = ()
    state_dir: str = ""

    @staticmethod
    def parse(text: str | None, state_dir: str | None = None) -> "FaultPlan":
        """Parses the ``MHGAN_FAULTS`` syntax; ValueError on a malformed entry."""
        if not text:
            return FaultPlan()
        faults = []
        for entry in text.split(","):
            parts = entry.strip().split(":")
            if len(parts) != 4 or parts[0] not in POINTS or parts[3] not in MODES:
                raise ValueError(f"{ENV_VAR} entry {entry!r} must be POINT:INDEX:TIMES:MODE with POINT in {POINTS}")
            times = None if parts[2] == "always" else int(parts[2])
            faults.append(Fault(parts[0], int(parts[1]), times, parts[3]))
        state = state_dir or os.path.join(tempfile.gettempdir(), "mhgan-faults")
        return FaultPlan(tuple(faults), state)

    @staticmethod
    def from_env() -> "FaultPlan":
        return FaultPlan.parse(os.environ.get(ENV_VAR), os.environ.get(STATE_ENV_VAR))

    def maybe_fail(self, point: str, index: int) -> None:
        """Fires the matching fault, if any and not yet fired its number of times."""
        for fault in self.faults:
            if fault.point != point or fault.index != index:
                continue
            counter = Path(self.state_dir) / f"{point}-{index}"
            fired = int(counter.read_text()) if counter.exists() else 0
            if fault.times is not None and fired >= fault.times:
                continue
            counter.parent.mkdir(parents=True, exist_ok=True)
            counter.write_text(str(fired + 1))
            if fault.mode == "raise":
                raise InjectedFault(f"injected fault at {point} {index}")
            if fault.mode == "wait":
                (Path(self.state_dir) / f"{point}-{index}.waiting").write_text(str(os.getpid()))
                time.sleep(WAIT_LIMIT_S)
                return
            if point == "driver":
                os.kill(os.getpid(), signal.SIGKILL)
            os._exit(17)

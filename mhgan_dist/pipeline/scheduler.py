"""The scheduler: units of work on proposal actors, and the one place that handles failure.

A *unit* is one idempotent piece of work (calibration draws, a proposal shard, a
chain part, a samples part): deterministic content under a deterministic file
name, so running it again, on any actor, gives the same bytes. A
:class:`Stage` owns a queue of units, says how one runs (``submit``) and what
its result means (``done``); it never sees a failure. The :class:`Scheduler`
hands queued units to actors, collects results and decides what a failure
means. The policy, all of it here:

- Ray's own actor restarts are off: every attempt is the scheduler's, so it
  is counted. A unit whose actor died (the process, or the node under it), or
  that raised anything but a user error, goes back to the head of its stage's
  queue and runs again, preferably on another actor. Of the calls pending on a dead actor, the ones
  it may have died in are charged with the failure: the first in submission
  order of each of the actor's threads (``Stage.actor_thread``: an actor runs
  one thread's calls in order, and its threads side by side, and Ray does not
  say which call the process died in); the others are re-queued uncharged.
- A unit charged with a failure runs alone from then on: it waits for an
  actor of its own to finish what it holds, and nothing else is sent to that
  actor while it runs, so a death there is its own. A poison shard's first
  death may charge an innocent chain part pending beside it; both then run
  alone, and only the shard dies again. (The hold yields while the unit's
  stage is not ready: its back-pressure may wait on work that needs that
  actor.) A unit charged with MAX_UNIT_FAILURES failures stops the run, named.
  A dead actor is never used again: the :class:`ActorPool` replaces it with a
  new one, so a unit that kills its actor has by then failed on that many
  different actors. A unit that raises on a live actor is charged too, and
  retried on another actor where one is free.
- A user error (:class:`~mhgan_dist.errors.MhganError`: non-finite scores, a
  bad file) stops the run at once: running it again would fail the same way.
- Replacements are asked of Ray at once; one that cannot be placed stays
  pending and the run carries on with the actors it has. The
  :class:`ResourceWatch` reports, while nothing progresses and something waits
  for capacity, what waits and what the cluster has free, and stops the run
  after its timeout.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray

from mhgan_dist import errors
from mhgan_dist.errors import MhganError, NonFiniteScoresError, StageError

__all__ = ["Unit", "Stage", "ActorPool", "ResourceWatch", "Scheduler", "Recovery", "MAX_UNIT_FAILURES",
           "user_error", "first_line", "wait_for_first_actor", "settle", "kill_actor"]

MAX_UNIT_FAILURES = 3
# Calls still pending on a dead actor are waited for this long to learn which one it died in.
DEAD_ACTOR_WAIT_S = 30.0
POLL_S = 0.5


# ------------------------------------------------------------------ units and stages


@dataclass(eq=False)
class Unit:
    """One piece of a stage's work; ``key`` names it within the stage (a part index, a row range)."""

    stage: "Stage"
    key: Any
    payload: Any = None
    failures: list[str] = field(default_factory=list)  # first line of each failed attempt's cause
    avoid: set[int] = field(default_factory=set)  # ids of the actors it failed on

    @property
    def name(self) -> str:
        return self.stage.describe(self)


class Stage:
    """One kind of work: a queue of units, how to run one, and what its result means.

    Subclasses set ``title`` (what a unit is called in messages, e.g.
    "proposal shard") and implement ``submit`` (calls the proposal actor it is
    given and returns the ObjectRef of the call) and ``done`` (takes the
    call's result). ``ready()`` says whether more units may
    start now (dependencies, back-pressure); ``extra_load`` lets the stage use
    that many calls beyond the per-actor limit (work that frees memory).
    ``actor_thread`` names the actor's concurrency group the stage's calls
    run in ("default": G and D's own thread).
    """

    title = "unit"
    extra_load = 0
    actor_thread = "default"

    def __init__(self) -> None:
        self.queue: deque[Unit] = deque()
        self.in_flight = 0  # kept by the scheduler

    def add(self, key: Any, payload: Any = None) -> Unit:
        unit = Unit(self, key, payload)
        self.queue.append(unit)
        return unit

    def requeue(self, unit: Unit) -> None:
        self.queue.appendleft(unit)

    def ready(self) -> bool:
        return True

    def describe(self, unit: Unit) -> str:
        return f"{self.title} {unit.key}"

    def submit(self, unit: Unit, actor: Any) -> Any:
        raise NotImplementedError

    def done(self, unit: Unit, result: Any) -> None:
        raise NotImplementedError


# ------------------------------------------------------------------ failures


def user_error(exc: BaseException) -> MhganError | None:
    """The user error a Ray failure carries (raised in a task, an actor call or an actor's __init__), if any."""
    cause = getattr(exc, "cause", None)
    creation = getattr(exc, "creation_task_error", None)  # an actor whose __init__ raised
    if cause is None and creation is not None:
        cause = getattr(creation, "cause", creation)
    if isinstance(cause, NonFiniteScoresError):
        return NonFiniteScoresError(str(cause), cause.details)
    if isinstance(cause, MhganError):
        return type(cause)(str(cause))
    return None


def first_line(exc: BaseException) -> str:
    """The most telling line of an exception's text (Ray's carry whole remote tracebacks)."""
    cause = getattr(exc, "cause", None)
    if cause is not None and not isinstance(exc, ray.exceptions.RayActorError):
        exc = cause
    return errors.first_line(exc)


def _actor_died(exc: BaseException) -> bool:
    return isinstance(exc, ray.exceptions.RayActorError) and user_error(exc) is None


@dataclass
class Recovery:
    """What the run survived: counted in manifest.json and the closing lines."""

    retries: int = 0  # units run again after their attempt failed or was lost with its actor
    actors_lost: int = 0
    actors_replaced: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)  # the charged failures, first RECORDED_FAILURES

    RECORDED_FAILURES = 50

    def charge(self, unit: Unit, cause: str) -> None:
        if len(self.failures) < self.RECORDED_FAILURES:
            self.failures.append({"unit": unit.name, "cause": cause})

    def to_json(self) -> dict[str, Any]:
        return {"retries": self.retries, "actors_lost": self.actors_lost, "actors_replaced": self.actors_replaced,
                "failures": list(self.failures)}


# ------------------------------------------------------------------ actors


@dataclass(eq=False)
class _Actor:
    id: int
    handle: Any
    ready_ref: Any  # the call whose return means the actor is up; None once it has returned
    load: int = 0
    held_for: Unit | None = None  # a charged unit this actor drains for, then runs alone


class ActorPool:
    """The proposal actors: those up, those Ray has not placed yet, and their replacements.

    ``make()`` starts one actor and returns (handle, ref of a call that returns
    once the actor is up and configured). ``target`` actors are kept: each lost
    one is replaced at once, up to ``max_replacements`` in all.
    """

    def __init__(self, make: Callable[[], tuple[Any, Any]], started: list[tuple[Any, Any]], *,
                 max_replacements: int, recovery: Recovery, describe_request: str) -> None:
        self.make = make
        self.max_replacements = max_replacements
        self.recovery = recovery
        self.describe_request = describe_request  # e.g. "1 CPU and 0 GPU"
        self._ids = itertools.count()
        self.up: list[_Actor] = []
        self.starting: list[_Actor] = [_Actor(next(self._ids), h, r) for h, r in started]
        self.target = len(self.starting)

    @property
    def actors(self) -> list[_Actor]:
        return self.up + self.starting

    def poll(self) -> bool:
        """Moves actors that came up to ``up``; True if any did. Raises a user error from an actor's start."""
        if not self.starting:
            return False
        refs = [a.ready_ref for a in self.starting]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        came_up = False
        for actor in [a for a in self.starting if a.ready_ref in set(ready)]:
            try:
                ray.get(actor.ready_ref)
            except ray.exceptions.RayError as exc:
                error = user_error(exc)
                if error is not None:
                    raise error from None
                self.starting.remove(actor)
                self.lose(actor, first_line(exc))
                continue
            self.starting.remove(actor)
            actor.ready_ref = None
            self.up.append(actor)
            came_up = True
        return came_up

    def pick(self, limit: int, avoid: set[int]) -> _Actor | None:
        """The least loaded actor that is up, not held, with fewer than ``limit`` calls, preferring those
        not in ``avoid``."""
        return _least_loaded([a for a in self.up if a.load < limit and a.held_for is None], avoid)

    def pick_alone(self, unit: Unit) -> _Actor | None:
        """An actor for ``unit`` to run on alone: holds the least loaded free one (preferring those it has
        not failed on) so that nothing new is sent to it, and returns it once its calls are done."""
        held = next((a for a in self.up if a.held_for is unit), None)
        if held is None:
            held = _least_loaded([a for a in self.up if a.held_for is None], unit.avoid)
            if held is None:
                return None
            held.held_for = unit
        return held if held.load == 0 else None

    def lose(self, actor: _Actor, cause: str) -> None:
        """Forgets a dead actor and starts a new one in its place."""
        self.remove(actor)
        self.replace(cause)

    def remove(self, actor: _Actor) -> None:
        """Forgets a dead actor (counted as lost)."""
        if actor in self.up:
            self.up.remove(actor)
        if actor in self.starting:
            self.starting.remove(actor)
        kill_actor(actor.handle)
        self.recovery.actors_lost += 1

    def replace(self, cause: str) -> None:
        """Starts a new actor in place of a lost one, while replacements remain."""
        if self.recovery.actors_replaced < self.max_replacements:
            handle, ref = self.make()
            self.starting.append(_Actor(next(self._ids), handle, ref))
            self.recovery.actors_replaced += 1
        elif not self.actors:
            raise StageError(
                f"every proposal actor was lost ({self.recovery.actors_lost} in all, the last: {cause}) and "
                f"{self.max_replacements} replacements were made; fix the cause and re-run the same command to resume"
            )

    def kill_all(self) -> None:
        for actor in self.actors:
            kill_actor(actor.handle)


def _least_loaded(free: list[_Actor], avoid: set[int]) -> _Actor | None:
    """The least loaded of ``free``, preferring those whose id is not in ``avoid``; None if it is empty."""
    if not free:
        return None
    return min([a for a in free if a.id not in avoid] or free, key=lambda a: a.load)


def kill_actor(handle: Any) -> None:
    try:
        ray.kill(handle, no_restart=True)
    except Exception:  # an actor that never started, or whose node is gone
        pass


def settle(refs: list) -> None:
    """Collects what the calls still in flight became, as the job stops.

    Ray logs the error of a call whose result nobody fetched, with the worker's
    traceback, when its reference is dropped: after the job's own one-sentence
    message. Fetching each failure here marks it handled.
    """
    if not refs:
        return
    ray.wait(refs, num_returns=len(refs), timeout=5)
    for ref in refs:
        try:
            ray.get(ref, timeout=0)
        except (ray.exceptions.RayError, TimeoutError):
            pass


# ------------------------------------------------------------------ the watch


class ResourceWatch:
    """Says what waits for capacity while nothing progresses, and stops the run after ``timeout_s``.

    ``progressed()`` is called on every finished unit and every actor that comes
    up. ``check(blocked)`` is called often; after ``interval_s`` without
    progress it calls ``blocked()``, which returns a description of what waits
    for capacity the cluster does not have, or None when nothing does (a long
    unit is running). While something waits it prints that every
    ``interval_s``, and raises StageError once nothing has progressed for
    ``timeout_s`` (0: never).
    """

    def __init__(self, interval_s: float, timeout_s: float, say: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s, self.timeout_s, self.say, self.clock = interval_s, timeout_s, say, clock
        self.progressed()

    def progressed(self) -> None:
        self.since = self.clock()
        self.next_line = self.since + self.interval_s

    def check(self, blocked: Callable[[], str | None]) -> None:
        now = self.clock()
        if now < self.next_line:
            return
        what = blocked()
        self.next_line = now + self.interval_s
        if what is None:
            return
        stalled = now - self.since
        if self.timeout_s and stalled >= self.timeout_s:
            raise StageError(
                f"nothing progressed for {stalled:.0f} s while {what}, so the run stopped "
                f"(--resource-timeout {self.timeout_s:g}); give the cluster that capacity or ask for less, "
                "then re-run the same command to resume"
            )
        self.say(f"waiting {stalled:.0f} s: {what}")


def cluster_free() -> str:
    """What the cluster has free now, as a phrase."""
    total, free = ray.cluster_resources(), ray.available_resources()
    return (f"the cluster has {free.get('CPU', 0.0):g} of {total.get('CPU', 0.0):g} CPUs and "
            f"{free.get('GPU', 0.0):g} of {total.get('GPU', 0.0):g} GPUs free")


def wait_for_first_actor(handles: list, info_refs: list, watch: ResourceWatch, describe_request: str) -> tuple[int, Any]:
    """(index, info) of the first actor to come up; the watch reports while none is placed.

    Raises the user error of an actor whose __init__ failed, or StageError when
    every actor failed to start.
    """
    pending = dict(zip(info_refs, range(len(handles))))
    last = "no actor started"
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
        for ref in ready:
            index = pending.pop(ref)
            try:
                return index, ray.get(ref)
            except ray.exceptions.RayError as exc:
                error = user_error(exc)
                if error is not None:
                    # The others fail alike: stop them and collect their calls, so that Ray
                    # does not print their tracebacks after the one sentence.
                    for handle in handles:
                        kill_actor(handle)
                    settle(list(pending))
                    raise error from None
                last = first_line(exc)
        if pending:
            watch.check(lambda: f"{len(pending)} proposal actor(s) have not started (each asks {describe_request}); "
                                f"{cluster_free()}")
    raise StageError(f"no proposal actor could start ({last}); fix the cause and re-run the same command to resume")


# ------------------------------------------------------------------ the scheduler


class Scheduler:
    """Runs stages' units on the pool's actors until every queue is empty.

    ``stages`` are in priority order: when an actor has room, the first stage
    with a queued unit that is ready gets it. ``max_in_flight`` is the calls one
    actor may hold (plus the stage's ``extra_load``).
    """

    def __init__(self, pool: ActorPool, stages: list[Stage], watch: ResourceWatch, *, max_in_flight: int,
                 recovery: Recovery) -> None:
        self.pool, self.stages, self.watch = pool, stages, watch
        self.max_in_flight, self.recovery = max_in_flight, recovery
        self.in_flight: dict[Any, tuple[Unit, _Actor]] = {}  # in submission order

    def run(self) -> None:
        """Until nothing is queued or in flight. On a stop (a user error, a poison unit, the watch's
        timeout) the actors are killed and the calls in flight collected before the error propagates."""
        try:
            while True:
                if self.pool.poll():
                    self.watch.progressed()
                self._fill()
                if not self.in_flight and not any(stage.queue for stage in self.stages):
                    return
                if self.in_flight:
                    ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=POLL_S)
                    for ref in ready:
                        if ref in self.in_flight:  # a dead actor's calls may have been collected with it
                            self._collect(ref)
                else:
                    time.sleep(POLL_S / 5)
                self.watch.check(self._blocked)
        except MhganError:
            self.pool.kill_all()
            settle(list(self.in_flight))
            raise

    def _fill(self) -> None:
        holding = [a for a in self.pool.up if a.held_for is not None]
        if holding:  # only after a failure: a run without one skips this
            running = {id(unit) for unit, _ in self.in_flight.values()}
            for actor in holding:
                if id(actor.held_for) not in running and not actor.held_for.stage.ready():
                    # Its stage may wait on work that needs this very actor (back-pressure): let it go.
                    actor.held_for = None
        for stage in self.stages:
            waiting: list[Unit] = []  # charged units whose actor is still draining
            while stage.queue and stage.ready():
                unit = stage.queue[0]
                if unit.failures:
                    actor = self.pool.pick_alone(unit)
                    if actor is None:
                        waiting.append(stage.queue.popleft())
                        continue
                else:
                    actor = self.pool.pick(self.max_in_flight + stage.extra_load, unit.avoid)
                    if actor is None:
                        break
                actor.load += 1
                stage.queue.popleft()
                ref = stage.submit(unit, actor.handle)
                stage.in_flight += 1
                self.in_flight[ref] = (unit, actor)
            stage.queue.extendleft(reversed(waiting))

    def _release(self, ref: Any) -> tuple[Unit, _Actor]:
        unit, actor = self.in_flight.pop(ref)
        unit.stage.in_flight -= 1
        actor.load -= 1
        if actor.held_for is unit:
            actor.held_for = None
        return unit, actor

    def _collect(self, ref: Any) -> None:
        try:
            result = ray.get(ref)
        except ray.exceptions.RayError as exc:
            unit, actor = self.in_flight[ref]
            if _actor_died(exc):
                self._actor_lost(actor)
            else:
                self._release(ref)
                self._failed(unit, actor, exc)
            return
        unit, _ = self._release(ref)
        self.watch.progressed()
        unit.stage.done(unit, result)

    def _actor_lost(self, actor: _Actor) -> None:
        """Every call pending on a dead actor: those that finished count, the ones it may have died in
        (the first unfinished call of each actor thread) are charged, the rest run again elsewhere; the
        actor is replaced."""
        refs = [ref for ref, (_, a) in self.in_flight.items() if a is actor]
        ray.wait(refs, num_returns=len(refs), timeout=DEAD_ACTOR_WAIT_S)
        self.pool.remove(actor)
        charged: dict[str, tuple[Unit, BaseException]] = {}  # actor thread -> its first unfinished call
        cause = "the actor died"
        for ref in refs:
            unit, _ = self._release(ref)
            try:
                result = ray.get(ref, timeout=0)
            except (ray.exceptions.RayError, TimeoutError) as exc:
                error = user_error(exc)
                if error is not None:
                    raise error from None
                if unit.stage.actor_thread not in charged:
                    charged[unit.stage.actor_thread] = (unit, exc)
                    cause = first_line(exc)
                else:
                    self.recovery.retries += 1
                    unit.stage.requeue(unit)
                continue
            self.watch.progressed()
            unit.stage.done(unit, result)
        for unit, exc in charged.values():
            self._failed(unit, actor, exc)  # raises for a unit that has failed too often
        self.pool.replace(cause)

    def _failed(self, unit: Unit, actor: _Actor, exc: BaseException) -> None:
        """Charges ``unit`` with a failure on ``actor``; it runs alone from then on."""
        error = user_error(exc)
        if error is not None:
            raise error from None
        cause = first_line(exc)
        unit.failures.append(cause)
        self.recovery.charge(unit, cause)
        unit.avoid.add(actor.id)
        if len(unit.failures) >= MAX_UNIT_FAILURES:
            where = f"{len(unit.failures)} times, on {len(unit.avoid)} different proposal " \
                    f"actor{'s' if len(unit.avoid) > 1 else ''}"
            raise StageError(
                f"{unit.name} failed {where} and is not tried again (the last time: {cause}); "
                "fix the cause and re-run the same command to resume"
            )
        self.recovery.retries += 1
        unit.stage.requeue(unit)

    def _blocked(self) -> str | None:
        """What waits for capacity, or None when the work in flight is merely running."""
        actor_work = sum(len(s.queue) + s.in_flight for s in self.stages)
        if self.pool.up or not self.pool.starting or not actor_work:
            return None
        queued = [f"{len(s.queue)} {s.title}(s)" for s in self.stages if s.queue]
        return (f"{len(self.pool.starting)} proposal actor(s) have not started (each asks "
                f"{self.pool.describe_request})" + (f"; queued: {', '.join(queued)}" if queued else "")
                + f"; {cluster_free()}")

"""The scheduler: units of work on proposal actors, one ``ray.wait`` loop that never blocks on one actor.

A :class:`Stage` owns a queue of units, says how one runs (``submit`` on an
actor, or ``run`` in a driver thread) and what its result means (``done``,
which hands the follow-on units back as a :class:`Handoff`); it never sees a
failure. The :class:`Scheduler` hands queued units to actors, collects what
comes back and reports every outcome to the
:class:`~mhgan_dist.pipeline.ledger.Ledger`, which holds the failure policy
(who is charged when an actor dies, who runs alone, when the run stops) and
says what to do. Nothing in the loop waits on one actor or one fit: a dead
actor's calls settle as their outcomes arrive, and work that runs in the driver
(the calibration fit) runs in a thread beside the loop.

What every call of a stage needs once the run knows it (the calibrator, the
real scores) goes to each actor once, as an :class:`ActorShare`: to the actors
up when it is shared, and to each actor that comes up later, before any unit of
a stage that ``needs`` it.

The :class:`ActorPool` holds the actors' handles; the :class:`ResourceWatch`
reports, while nothing progresses and something waits for capacity, what waits
and what the cluster has free, and stops the run after its timeout.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import ray

from mhgan_dist import errors
from mhgan_dist.errors import MhganError, NonFiniteScoresError, StageError
from mhgan_dist.pipeline.ledger import MAX_UNIT_FAILURES, Ledger, Recovery, Verdict

__all__ = ["Unit", "Stage", "Handoff", "ActorShare", "ActorPool", "ResourceWatch", "Scheduler", "Recovery",
           "MAX_UNIT_FAILURES", "user_error", "first_line", "wait_for_first_actor", "settle", "kill_actor"]

POLL_S = 0.5
# While driver work runs, the loop looks for its end this often (a fit takes a fraction of a second).
DRIVER_POLL_S = 0.02

P = TypeVar("P")


# ------------------------------------------------------------------ units and stages


@dataclass(eq=False)
class Unit(Generic[P]):
    """One piece of a stage's work; ``key`` names it within the stage (a part index, a row range)."""

    stage: "Stage[P]"
    key: Hashable
    payload: P

    @property
    def name(self) -> str:
        return self.stage.describe(self)

    @property
    def thread(self) -> str:
        return self.stage.actor_thread


@dataclass(frozen=True)
class ActorShare:
    """What every actor receives once: ``send(handle)`` makes the call that delivers it and returns its
    ObjectRef; units of stages whose ``needs`` is ``name`` go only to actors where that call returned."""

    name: str
    send: Callable[[Any], ray.ObjectRef]


@dataclass(frozen=True)
class Handoff:
    """What a finished unit hands back: the follow-on units to queue (each names its stage), and what
    every actor needs from now on."""

    units: Sequence[Unit] = ()
    share: ActorShare | None = None


class Stage(Generic[P]):
    """One kind of work: a queue of units, how to run one, and what its result means.

    Subclasses set ``title`` (what a unit is called in messages, e.g.
    "proposal shard") and implement ``done`` (takes the result, returns the
    :class:`Handoff`) and either ``submit`` (calls the proposal actor it is
    given and returns the ObjectRef of the call) or, with ``runs_in_driver``,
    ``run`` (the work itself, in a driver thread beside the scheduler's loop).
    ``ready()`` says whether more units may start now (dependencies,
    back-pressure); ``extra_load`` lets the stage use that many calls beyond
    the per-actor limit (work that frees memory). ``actor_thread`` names the
    actor's concurrency group the stage's calls run in ("default": G and D's
    own thread); ``needs`` the :class:`ActorShare` its calls rely on.
    """

    title = "unit"
    extra_load = 0
    actor_thread = "default"
    needs: str | None = None
    runs_in_driver = False

    def __init__(self) -> None:
        self.queue: deque[Unit[P]] = deque()
        self.in_flight = 0  # kept by the scheduler

    def unit(self, key: Hashable, payload: P) -> Unit[P]:
        """A unit of this stage, not queued: a :class:`Handoff` or ``add`` queues it."""
        return Unit(self, key, payload)

    def add(self, key: Hashable, payload: P) -> Unit[P]:
        unit = self.unit(key, payload)
        self.queue.append(unit)
        return unit

    def requeue(self, unit: Unit[P]) -> None:
        self.queue.appendleft(unit)

    def ready(self) -> bool:
        return True

    def describe(self, unit: Unit[P]) -> str:
        return f"{self.title} {unit.key}"

    def submit(self, unit: Unit[P], actor: Any) -> ray.ObjectRef:
        raise NotImplementedError

    def run(self, unit: Unit[P]) -> Any:
        raise NotImplementedError

    def done(self, unit: Unit[P], result: Any) -> Handoff:
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


def _outcome(ref: ray.ObjectRef) -> tuple[Any, ray.exceptions.RayError | None]:
    """(result, None) of a finished call, or (None, its Ray error); raises the user error a failure carries."""
    try:
        return ray.get(ref), None
    except ray.exceptions.RayError as exc:
        error = user_error(exc)
        if error is not None:
            raise error from None
        return None, exc


def first_line(exc: BaseException) -> str:
    """The most telling line of an exception's text (Ray's carry whole remote tracebacks)."""
    cause = getattr(exc, "cause", None)
    if cause is not None and not isinstance(exc, ray.exceptions.RayActorError):
        exc = cause
    return errors.first_line(exc)


# ------------------------------------------------------------------ actors


class ActorPool:
    """The proposal actors' handles, by id: those asked of Ray, and the call that says each is up.

    ``make()`` starts one actor and returns (handle, ref of a call that returns
    once the actor is up and configured). ``target`` actors are started first;
    the scheduler's ledger decides when a lost one is replaced, up to
    ``max_replacements`` in all, and counts it in ``recovery``.
    """

    def __init__(self, make: Callable[[], tuple[Any, ray.ObjectRef]], started: list[tuple[Any, ray.ObjectRef]], *,
                 max_replacements: int, recovery: Recovery, describe_request: str) -> None:
        self.make = make
        self.max_replacements = max_replacements
        self.recovery = recovery
        self.describe_request = describe_request  # e.g. "1 CPU and 0 GPU"
        self._ids = itertools.count()
        self.handles: dict[int, Any] = {}
        self.starting: dict[ray.ObjectRef, int] = {}  # the call that says it is up -> actor id
        for handle, ref in started:
            self._add(handle, ref)
        self.target = len(started)

    def _add(self, handle: Any, ready_ref: ray.ObjectRef) -> int:
        actor_id = next(self._ids)
        self.handles[actor_id] = handle
        self.starting[ready_ref] = actor_id
        return actor_id

    def start(self) -> int:
        """Starts one more actor; its id."""
        return self._add(*self.make())

    def kill(self, actor_id: int) -> None:
        """Kills a dead actor's handle and forgets it."""
        kill_actor(self.handles.pop(actor_id))
        for ref in [r for r, i in self.starting.items() if i == actor_id]:
            del self.starting[ref]

    def kill_all(self) -> None:
        for handle in self.handles.values():
            kill_actor(handle)


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


@dataclass(eq=False)
class _InFlight:
    """The scheduler's outstanding work: Ray calls of units, share deliveries, driver work."""

    calls: dict[ray.ObjectRef, Unit] = field(default_factory=dict)  # in submission order
    shares: dict[ray.ObjectRef, tuple[int, str]] = field(default_factory=dict)  # -> (actor id, share name)
    driver: dict[concurrent.futures.Future, Unit] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.calls or self.shares or self.driver)


class Scheduler:
    """Runs stages' units on the pool's actors (and driver stages' in a thread) until every queue is empty.

    ``stages`` are in priority order: when an actor has room, the first stage
    with a queued unit that is ready gets it. ``max_in_flight`` is the calls one
    actor may hold (plus the stage's ``extra_load``).
    """

    def __init__(self, pool: ActorPool, stages: list[Stage], watch: ResourceWatch, *, max_in_flight: int) -> None:
        self.pool, self.stages, self.watch, self.max_in_flight = pool, stages, watch, max_in_flight
        self.ledger = Ledger(max_replacements=pool.max_replacements, recovery=pool.recovery)
        for actor_id in pool.handles:
            self.ledger.add_actor(actor_id)
        self.shares: list[ActorShare] = []
        self.in_flight = _InFlight()
        self._driver: concurrent.futures.ThreadPoolExecutor | None = None

    def share(self, share: ActorShare) -> None:
        """Sends ``share`` to every actor up now, and from now on to each one as it comes up."""
        self.shares.append(share)
        for actor_id in self.ledger.actors_up:
            self._send_share(actor_id, share)

    def actors_up(self) -> list[Any]:
        """Handles of the actors up and alive."""
        return [self.pool.handles[a] for a in self.ledger.actors_up]

    def run(self) -> None:
        """Until nothing is queued or in flight. On a stop (a user error, a poison unit, the watch's
        timeout) the actors are killed and the calls in flight collected before the error propagates."""
        try:
            while True:
                self._poll_actors()
                self._apply(self.ledger.expire())
                self._collect_driver_work()
                self._fill()
                if not self.in_flight and not any(stage.queue for stage in self.stages):
                    return
                self._wait()
                self.watch.check(self._blocked)
        except MhganError:
            self.pool.kill_all()
            settle([*self.in_flight.calls, *self.in_flight.shares])
            raise
        finally:
            if self._driver is not None:
                self._driver.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------- waiting

    def _wait(self) -> None:
        """Until something in flight finishes or an actor comes up (at most POLL_S)."""
        refs = [*self.in_flight.calls, *self.in_flight.shares, *self.pool.starting]
        if refs:
            timeout = DRIVER_POLL_S if self.in_flight.driver else POLL_S
            ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
            for ref in ready:
                if ref in self.in_flight.calls:
                    self._collect(ref)
                elif ref in self.in_flight.shares:
                    self._shared(ref)
                # An actor's start call: the next _poll_actors takes it.
        elif self.in_flight.driver:
            concurrent.futures.wait(self.in_flight.driver, timeout=POLL_S,
                                    return_when=concurrent.futures.FIRST_COMPLETED)
        else:  # nothing can finish, so no stage can become ready: a bug, not a state to wait in
            queued = {stage.title: len(stage.queue) for stage in self.stages if stage.queue}
            raise RuntimeError(f"the scheduler has queued units ({queued}) and nothing in flight or starting")

    def _poll_actors(self) -> None:
        """Takes the actors whose start call returned: up (and sent what is shared), or lost."""
        starting = dict(self.pool.starting)
        if not starting:
            return
        ready, _ = ray.wait(list(starting), num_returns=len(starting), timeout=0)
        for ref in ready:
            actor_id = starting[ref]
            _, failure = _outcome(ref)
            if failure is not None:
                self._apply(self.ledger.start_failed(actor_id, first_line(failure)))
                continue
            del self.pool.starting[ref]
            self.ledger.came_up(actor_id)
            self.watch.progressed()
            for share in self.shares:
                self._send_share(actor_id, share)

    # ------------------------------------------------------------- sending

    def _fill(self) -> None:
        self.ledger.release_holds(lambda unit: unit.stage.ready())
        for stage in self.stages:
            if stage.runs_in_driver:
                while stage.queue and stage.ready():
                    self._run_in_driver(stage.queue.popleft())
                continue
            waiting: list[Unit] = []  # charged units whose actor is still draining
            while stage.queue and stage.ready():
                unit = stage.queue[0]
                actor_id = self.ledger.place(unit, self.max_in_flight + stage.extra_load, stage.needs)
                if actor_id is None:
                    if self.ledger.charged(unit):
                        waiting.append(stage.queue.popleft())
                        continue
                    break
                stage.queue.popleft()
                ref = stage.submit(unit, self.pool.handles[actor_id])
                stage.in_flight += 1
                self.in_flight.calls[ref] = unit
                self.ledger.sent(ref, unit, actor_id)
            stage.queue.extendleft(reversed(waiting))

    def _send_share(self, actor_id: int, share: ActorShare) -> None:
        ref = share.send(self.pool.handles[actor_id])
        self.in_flight.shares[ref] = (actor_id, share.name)

    def _run_in_driver(self, unit: Unit) -> None:
        if self._driver is None:
            self._driver = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mhgan-driver")
        unit.stage.in_flight += 1
        self.in_flight.driver[self._driver.submit(unit.stage.run, unit)] = unit

    # ------------------------------------------------------------ outcomes

    def _collect(self, ref: ray.ObjectRef) -> None:
        unit = self.in_flight.calls.pop(ref)
        unit.stage.in_flight -= 1
        result, failure = _outcome(ref)
        if isinstance(failure, ray.exceptions.RayActorError):
            self._apply(self.ledger.died(ref, first_line(failure)))
            return
        if failure is not None:
            self._apply(self.ledger.raised(ref, first_line(failure)))
            return
        self.watch.progressed()
        handoff = unit.stage.done(unit, result)  # recorded before a charge it settles may stop the run
        self._apply(self.ledger.returned(ref))
        self._hand_off(handoff)

    def _shared(self, ref: ray.ObjectRef) -> None:
        actor_id, name = self.in_flight.shares.pop(ref)
        _, failure = _outcome(ref)
        if failure is not None:
            self._apply(self.ledger.lost(actor_id, first_line(failure)))
            return
        self.ledger.holds(actor_id, name)

    def _collect_driver_work(self) -> None:
        for future in [f for f in self.in_flight.driver if f.done()]:
            unit = self.in_flight.driver.pop(future)
            unit.stage.in_flight -= 1
            result = future.result()  # its exception is the run's: driver work is not retried
            self.watch.progressed()
            self._hand_off(unit.stage.done(unit, result))

    def _hand_off(self, handoff: Handoff) -> None:
        for unit in handoff.units:
            unit.stage.queue.append(unit)
        if handoff.share is not None:
            self.share(handoff.share)

    def _apply(self, verdict: Verdict) -> None:
        for actor_id in verdict.dead:
            self.pool.kill(actor_id)
        for ref in verdict.forget:
            self.in_flight.calls.pop(ref).stage.in_flight -= 1
        for unit in verdict.retry:
            unit.stage.requeue(unit)
        for _ in range(verdict.replace):
            self.ledger.add_actor(self.pool.start())

    def _blocked(self) -> str | None:
        """What waits for capacity, or None when the work in flight is merely running."""
        actor_work = sum(len(s.queue) + s.in_flight for s in self.stages if not s.runs_in_driver)
        starting = self.ledger.actors_starting
        if self.ledger.actors_up or not starting or not actor_work:
            return None
        queued = [f"{len(s.queue)} {s.title}(s)" for s in self.stages if s.queue]
        return (f"{starting} proposal actor(s) have not started (each asks "
                f"{self.pool.describe_request})" + (f"; queued: {', '.join(queued)}" if queued else "")
                + f"; {cluster_free()}")

"""The failure policy of a run: a ledger of its units, its proposal actors and the charges, with no Ray in it.

stdlib only (and :mod:`mhgan_dist.errors`): no Ray, no torch, no numpy. The
scheduler (:mod:`mhgan_dist.pipeline.scheduler`) reports what happened, as
events, and asks the ledger where a unit may run; every rule below lives here.

A *unit* is one idempotent piece of work (calibration draws, a proposal shard,
a chain part, a samples part): deterministic content under a deterministic file
name, so running it again, on any actor, gives the same bytes. A *call* is one
attempt of a unit on an actor, named by any hashable key (the scheduler uses
Ray's ObjectRef).

- Ray's own actor restarts are off: every attempt is the scheduler's, so it
  is counted. A unit whose actor died (the process, or the node under it), or
  that raised anything but a user error, goes back to the head of its stage's
  queue and runs again, preferably on another actor. Of the calls pending on a
  dead actor, the ones it may have died in are charged with the failure: the
  first unfinished call in submission order of each of the actor's threads
  (an actor runs one thread's calls in order, and its threads side by side, and
  Ray does not say which call the process died in); the others are queued
  again uncharged. A call that returns after its actor died counts. The
  dead actor's calls settle as their outcomes arrive; those still unanswered
  DEAD_ACTOR_WAIT_S after the death count as unfinished.
- A unit charged with a failure runs alone from then on: it waits for an
  actor of its own to finish what it holds, and nothing else is sent to that
  actor while it runs, so a death there is its own. A poison shard's first
  death may charge an innocent chain part pending beside it; both then run
  alone, and only the shard dies again. The hold yields while the unit's
  stage is not ready: its back-pressure may wait on work that needs that
  actor. A unit charged with MAX_UNIT_FAILURES failures stops the run, named.
- A dead actor is never used again: once its calls have settled it is replaced
  by a new one, so a unit that kills its actor has by then failed on that many
  different actors. A unit that raises on a live actor is charged too, and
  retried on another actor where one is free.
- Replacements are asked for at once, up to ``max_replacements`` in all; one
  that never comes up leaves the run on the actors it has. Once the
  replacements are spent, the run goes on while any actor is left and stops
  when the last is lost.
- User errors (:class:`~mhgan_dist.errors.MhganError` raised by a call) never
  reach the ledger: the scheduler stops the run at once, since running the
  unit again would fail the same way.

Each event returns a :class:`Verdict` (what the scheduler must do now); a
stop raises :class:`~mhgan_dist.errors.StageError` with its one sentence.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Protocol

from mhgan_dist.errors import StageError

__all__ = ["Ledger", "Recovery", "Verdict", "Work", "MAX_UNIT_FAILURES", "DEAD_ACTOR_WAIT_S"]

MAX_UNIT_FAILURES = 3
# A dead actor's calls still unanswered this long after its death count as unfinished.
DEAD_ACTOR_WAIT_S = 30.0
ACTOR_DIED = "the actor died"


class Work(Protocol):
    """A unit as the ledger sees it: hashable by identity."""

    @property
    def name(self) -> str:
        """What messages call it, e.g. "proposal shard 1"."""

    @property
    def thread(self) -> str:
        """The actor thread (concurrency group) its calls run in."""


@dataclass
class Recovery:
    """What the run survived: counted in manifest.json and the closing lines."""

    retries: int = 0  # units run again after their attempt failed or was lost with its actor
    actors_lost: int = 0
    actors_replaced: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)  # the charged failures, first RECORDED_FAILURES

    RECORDED_FAILURES = 50

    def charge(self, unit: Work, cause: str) -> None:
        if len(self.failures) < self.RECORDED_FAILURES:
            self.failures.append({"unit": unit.name, "cause": cause})

    def to_json(self) -> dict[str, int | list[dict[str, str]]]:
        return {"retries": self.retries, "actors_lost": self.actors_lost, "actors_replaced": self.actors_replaced,
                "failures": list(self.failures)}


@dataclass(frozen=True)
class Verdict:
    """What the scheduler does after an event, in this order: kill ``dead`` actors' handles, stop awaiting
    ``forget`` calls, queue each of ``retry`` again at the head of its stage's queue (in this order), start
    ``replace`` new actors; ``done`` is the unit whose call returned (its result counts), if any."""

    done: Work | None = None
    retry: tuple[Work, ...] = ()
    forget: tuple[Hashable, ...] = ()
    dead: tuple[int, ...] = ()
    replace: int = 0


@dataclass
class _Draft:
    done: Work | None = None
    retry: list[Work] = field(default_factory=list)
    forget: list[Hashable] = field(default_factory=list)
    dead: list[int] = field(default_factory=list)
    replace: int = 0

    def verdict(self) -> Verdict:
        return Verdict(self.done, tuple(self.retry), tuple(self.forget), tuple(self.dead), self.replace)


@dataclass(eq=False)
class _Actor:
    id: int
    up: bool = False
    dead: bool = False
    load: int = 0  # calls in flight
    held_for: Work | None = None  # a charged unit this actor drains for, then runs alone
    holds: set[str] = field(default_factory=set)  # names of what it was sent once (see Ledger.holds)


@dataclass(eq=False)
class _Call:
    key: Hashable
    unit: Work
    actor: _Actor


@dataclass(eq=False)
class _Charges:
    causes: list[str] = field(default_factory=list)  # first line of each charged attempt's cause
    actors: set[int] = field(default_factory=set)  # ids of the actors it was charged on


@dataclass(eq=False)
class _Loss:
    """A dead actor whose calls are settling: per thread, its calls in submission order."""

    actor: _Actor
    threads: dict[str, list[_Call]]
    deadline: float
    cause: str
    outcome: dict[_Call, str | None] = field(default_factory=dict)  # None: returned; else why it did not finish
    charged: dict[str, _Call | None] = field(default_factory=dict)  # thread -> its charged call, once known
    handled: set[_Call] = field(default_factory=set)

    def settled(self) -> bool:
        return all(call in self.outcome for calls in self.threads.values() for call in calls)


class Ledger:
    """Units, actors and charges of one run; the scheduler's events in, its orders out.

    max_replacements: new actors started in place of lost ones, in all.
    clock: seconds, monotonic (for DEAD_ACTOR_WAIT_S).
    """

    def __init__(self, *, max_replacements: int, recovery: Recovery,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_replacements, self.recovery, self.clock = max_replacements, recovery, clock
        self._actors: dict[int, _Actor] = {}
        self._up: list[_Actor] = []  # in the order they came up
        self._calls: dict[Hashable, _Call] = {}  # in submission order
        self._charges: dict[Work, _Charges] = {}
        self._losses: dict[int, _Loss] = {}

    # -------------------------------------------------------------- actors

    def add_actor(self, actor_id: int) -> None:
        """A new actor, asked of Ray and not up yet, named by ``actor_id`` (never reused)."""
        self._actors[actor_id] = _Actor(actor_id)

    def came_up(self, actor_id: int) -> None:
        actor = self._actors[actor_id]
        actor.up = True
        self._up.append(actor)

    def holds(self, actor_id: int, name: str) -> None:
        """The actor holds what the scheduler sends each actor once (``name``: e.g. "calibration");
        units of stages that need it go only to actors that hold it."""
        self._actors[actor_id].holds.add(name)

    def start_failed(self, actor_id: int, cause: str) -> Verdict:
        """An actor died before it came up (not a user error): it is lost and replaced."""
        draft = _Draft()
        self._lose(self._actors[actor_id], cause, draft)
        return draft.verdict()

    def lost(self, actor_id: int, cause: str) -> Verdict:
        """An actor is known dead other than through a unit's call; its calls settle as they answer."""
        draft = _Draft()
        actor = self._actors[actor_id]
        if not actor.dead:
            self._lose(actor, cause, draft)
        return draft.verdict()

    @property
    def actors_up(self) -> list[int]:
        return [a.id for a in self._up]

    @property
    def actors_starting(self) -> int:
        return sum(1 for a in self._actors.values() if not a.up and not a.dead)

    # ----------------------------------------------------------- placement

    def charged(self, unit: Work) -> bool:
        return unit in self._charges

    def failures(self, unit: Work) -> tuple[str, ...]:
        """The causes ``unit`` was charged with, oldest first."""
        charges = self._charges.get(unit)
        return () if charges is None else tuple(charges.causes)

    def release_holds(self, ready: Callable[[Work], bool]) -> None:
        """An actor held for a charged unit that is not running lets go while the unit's stage is not
        ready (``ready(unit)`` False): that stage may wait on work that needs this very actor."""
        held = [a for a in self._up if a.held_for is not None]
        if not held:
            return
        running = {id(call.unit) for call in self._calls.values()}
        for actor in held:
            if id(actor.held_for) not in running and not ready(actor.held_for):
                actor.held_for = None

    def place(self, unit: Work, limit: int, needs: str | None = None) -> int | None:
        """The actor ``unit`` may be sent to now, or None.

        An uncharged unit: the least loaded actor that is up, not held, holds
        ``needs`` and has fewer than ``limit`` calls, preferring those it has not
        failed on; None when every one is full. A charged unit runs alone: it
        holds the least loaded free actor (preferring those it has not failed
        on) so that nothing new is sent there, and gets it once its calls are
        done; None while it drains.
        """
        eligible = [a for a in self._up if needs is None or needs in a.holds]
        charges = self._charges.get(unit)
        avoid = set() if charges is None else charges.actors
        if charges is None:
            actor = _least_loaded([a for a in eligible if a.load < limit and a.held_for is None], avoid)
            return None if actor is None else actor.id
        held = next((a for a in eligible if a.held_for is unit), None)
        if held is None:
            held = _least_loaded([a for a in eligible if a.held_for is None], avoid)
            if held is None:
                return None
            held.held_for = unit
        return held.id if held.load == 0 else None

    def sent(self, key: Hashable, unit: Work, actor_id: int) -> None:
        """A call of ``unit`` went to the actor, named ``key`` until its outcome is reported."""
        actor = self._actors[actor_id]
        actor.load += 1
        self._calls[key] = _Call(key, unit, actor)

    # ------------------------------------------------------------ outcomes

    def returned(self, key: Hashable) -> Verdict:
        """The call returned: its unit's result counts, also when its actor has died since."""
        call = self._release(key)
        draft = _Draft(done=call.unit)
        if call.actor.dead:
            self._settle(call, None, draft)
        return draft.verdict()

    def raised(self, key: Hashable, cause: str) -> Verdict:
        """The call raised (not a user error) on an actor that is alive: its unit is charged and queued
        again, or stops the run after MAX_UNIT_FAILURES charges. On an actor already known dead the call
        is one of its unfinished ones."""
        call = self._release(key)
        draft = _Draft()
        if call.actor.dead:
            self._settle(call, cause, draft)
        else:
            self._charge(call, cause, draft)
        return draft.verdict()

    def died(self, key: Hashable, cause: str) -> Verdict:
        """The call's actor died (``cause``: what Ray said). The actor is lost; this call and every other
        call it had pending settle as unfinished or returned, and once all have, a replacement starts."""
        call = self._calls[key]
        draft = _Draft()
        if not call.actor.dead:
            self._lose(call.actor, ACTOR_DIED, draft)
        self._release(key)
        self._settle(call, cause, draft)
        return draft.verdict()

    def expire(self) -> Verdict:
        """Calls of an actor dead for DEAD_ACTOR_WAIT_S that never answered: unfinished, no longer awaited."""
        draft = _Draft()
        now = self.clock()
        for loss in [loss for loss in self._losses.values() if now >= loss.deadline]:
            for calls in loss.threads.values():
                for call in calls:
                    if call not in loss.outcome:
                        self._release(call.key)
                        draft.forget.append(call.key)
                        loss.outcome[call] = f"no answer {DEAD_ACTOR_WAIT_S:g} s after its actor died"
            self._advance(loss, draft)
        return draft.verdict()

    # ------------------------------------------------------------ internals

    def _release(self, key: Hashable) -> _Call:
        call = self._calls.pop(key)
        call.actor.load -= 1
        if call.actor.held_for is call.unit:
            call.actor.held_for = None
        return call

    def _lose(self, actor: _Actor, cause: str, draft: _Draft) -> None:
        actor.dead = True
        actor.held_for = None
        if actor in self._up:
            self._up.remove(actor)
        self.recovery.actors_lost += 1
        draft.dead.append(actor.id)
        threads: dict[str, list[_Call]] = {}
        for call in self._calls.values():
            if call.actor is actor:
                threads.setdefault(call.unit.thread, []).append(call)
        loss = _Loss(actor, threads, self.clock() + DEAD_ACTOR_WAIT_S, cause)
        self._losses[actor.id] = loss
        self._advance(loss, draft)

    def _settle(self, call: _Call, cause: str | None, draft: _Draft) -> None:
        loss = self._losses[call.actor.id]
        loss.outcome[call] = cause
        self._advance(loss, draft)

    def _advance(self, loss: _Loss, draft: _Draft) -> None:
        """Decides what the settled calls of a dead actor mean, as far as their outcomes allow."""
        for thread, calls in loss.threads.items():
            if thread not in loss.charged:
                for call in calls:
                    if call not in loss.outcome:
                        break  # an earlier call is still unanswered: nothing to decide in this thread yet
                    if loss.outcome[call] is not None:
                        loss.charged[thread] = call
                        break
                else:
                    loss.charged[thread] = None  # every call returned
                if thread not in loss.charged:
                    continue
            charged = loss.charged[thread]
            for call in calls:
                if call in loss.outcome and call not in loss.handled:
                    loss.handled.add(call)
                    cause = loss.outcome[call]
                    if call is charged:
                        loss.cause = cause
                        self._charge(call, cause, draft)  # raises for a unit charged too often
                    elif cause is not None:
                        self.recovery.retries += 1
                        draft.retry.append(call.unit)
        if loss.settled() and self._losses.get(loss.actor.id) is loss:
            del self._losses[loss.actor.id]
            self._replace(loss.cause, draft)

    def _charge(self, call: _Call, cause: str, draft: _Draft) -> None:
        """Charges the call's unit with a failure on its actor; it runs alone from then on."""
        unit = call.unit
        charges = self._charges.setdefault(unit, _Charges())
        charges.causes.append(cause)
        charges.actors.add(call.actor.id)
        self.recovery.charge(unit, cause)
        if len(charges.causes) >= MAX_UNIT_FAILURES:
            actors = len(charges.actors)
            raise StageError(
                f"{unit.name} failed {len(charges.causes)} times, on {actors} different proposal "
                f"actor{'s' if actors > 1 else ''} and is not tried again (the last time: {cause}); "
                "fix the cause and re-run the same command to resume"
            )
        self.recovery.retries += 1
        draft.retry.append(unit)

    def _replace(self, cause: str, draft: _Draft) -> None:
        """A new actor in place of a lost one, while replacements remain; the run stops when none is left."""
        if self.recovery.actors_replaced < self.max_replacements:
            self.recovery.actors_replaced += 1
            draft.replace += 1
        elif not any(not a.dead for a in self._actors.values()):
            raise StageError(
                f"every proposal actor was lost ({self.recovery.actors_lost} in all, the last: {cause}) and "
                f"{self.max_replacements} replacements were made; fix the cause and re-run the same command to resume"
            )


def _least_loaded(free: list[_Actor], avoid: set[int]) -> _Actor | None:
    """The least loaded of ``free``, preferring those whose id is not in ``avoid``; None if it is empty."""
    if not free:
        return None
    return min([a for a in free if a.id not in avoid] or free, key=lambda a: a.load)

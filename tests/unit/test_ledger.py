"""The failure policy (mhgan_dist.pipeline.ledger) driven by scripted events: no Ray, no actors.

Each test plays what the scheduler would report (calls sent, returned, raised, an actor's death) and checks
what the ledger orders: who is charged, what runs again and alone, when a replacement starts, when the run
stops and with which sentence. Tests named after a RELIABILITY.md row play that row's fault.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest

from mhgan_dist.errors import StageError
from mhgan_dist.pipeline.ledger import DEAD_ACTOR_WAIT_S, MAX_UNIT_FAILURES, Ledger, Recovery, Verdict

LIMIT = 3  # calls per actor


@dataclass(eq=False)
class U:
    name: str
    thread: str = "default"


def shard(i: int) -> U:
    return U(f"proposal shard {i}")


def part(i: int) -> U:
    return U(f"chain part {i}", "chains")


class Run:
    """A ledger, its actors and a clock; calls are named c0, c1, ... in the order they are sent."""

    def __init__(self, actors: int = 2, max_replacements: int = 6) -> None:
        self.now = 0.0
        self.recovery = Recovery()
        self.ledger = Ledger(max_replacements=max_replacements, recovery=self.recovery, clock=lambda: self.now)
        self._ids = itertools.count()
        self._calls = itertools.count()
        self.actors = [self.start(up=True) for _ in range(actors)]

    def start(self, up: bool = False) -> int:
        actor_id = next(self._ids)
        self.ledger.add_actor(actor_id)
        if up:
            self.ledger.came_up(actor_id)
        return actor_id

    def replace(self, verdict: Verdict, up: bool = True) -> list[int]:
        return [self.start(up) for _ in range(verdict.replace)]

    def send(self, unit: U, actor: int) -> str:
        call = f"c{next(self._calls)}"
        self.ledger.sent(call, unit, actor)
        return call

    def place_and_send(self, unit: U, limit: int = LIMIT) -> tuple[int, str]:
        actor = self.ledger.place(unit, limit)
        assert actor is not None, f"{unit.name} found no actor"
        return actor, self.send(unit, actor)


def names(units) -> list[str]:
    return [u.name for u in units]


def charged(recovery: Recovery) -> list[str]:
    return [f["unit"] for f in recovery.failures]


# ------------------------------------------------------------------ an actor's death


def test_a_death_charges_the_first_unfinished_call_of_each_thread_and_requeues_the_rest_uncharged():
    run = Run(actors=1)
    a = run.actors[0]
    s0, s1, s2, p0, p1 = shard(0), shard(1), shard(2), part(0), part(1)
    c_s0, c_s1, c_s2 = (run.send(u, a) for u in (s0, s1, s2))
    c_p0, c_p1 = run.send(p0, a), run.send(p1, a)
    # s0's reply was on its way: it arrives after the death is known, and counts.
    first = run.ledger.died(c_s1, "ActorDiedError: the actor died unexpectedly")
    assert first.dead == (a,) and first.replace == 0 and first.retry == ()
    reply = run.ledger.returned(c_s0)
    assert reply.done is s0 and names(reply.retry) == ["proposal shard 1"]  # s1 was the first unfinished
    later = [run.ledger.died(c, "ActorDiedError") for c in (c_s2, c_p0, c_p1)]
    retried = [u for v in (first, reply, *later) for u in v.retry]
    assert sorted(names(retried)) == ["chain part 0", "chain part 1", "proposal shard 1", "proposal shard 2"]
    assert charged(run.recovery) == ["proposal shard 1", "chain part 0"]  # one per thread
    assert run.ledger.charged(s1) and run.ledger.charged(p0)
    assert not run.ledger.charged(s2) and not run.ledger.charged(p1)
    # The replacement is asked for once every call of the dead actor has settled.
    assert [v.replace for v in later] == [0, 0, 1]
    assert run.recovery.to_json() == {"retries": 4, "actors_lost": 1, "actors_replaced": 1,
                                      "failures": [{"unit": "proposal shard 1", "cause": "ActorDiedError: the actor died unexpectedly"},
                                                   {"unit": "chain part 0", "cause": "ActorDiedError"}]}


def test_a_later_calls_outcome_waits_for_the_earlier_ones_of_its_thread():
    """Outcomes arrive in any order; the charge still goes to the first unfinished call in submission order."""
    run = Run(actors=1)
    a = run.actors[0]
    s0, s1, s2 = shard(0), shard(1), shard(2)
    c0, c1, c2 = (run.send(u, a) for u in (s0, s1, s2))
    v2 = run.ledger.died(c2, "died")
    assert v2.retry == () and charged(run.recovery) == []  # c0 and c1 may still have finished
    v1 = run.ledger.died(c1, "died")
    assert v1.retry == ()
    v0 = run.ledger.returned(c0)  # c0 finished before the process died
    assert v0.done is s0
    assert names(v0.retry) == ["proposal shard 1", "proposal shard 2"] and v0.replace == 1
    assert charged(run.recovery) == ["proposal shard 1"]


def test_a_reply_that_arrives_after_its_actor_died_counts_and_nothing_else_goes_there():
    run = Run(actors=2)
    a, b = run.actors
    s0, s1 = shard(0), shard(1)
    c0, c1 = run.send(s0, a), run.send(s1, a)
    run.ledger.died(c1, "died")
    assert run.ledger.actors_up == [b]
    assert run.ledger.place(shard(5), LIMIT) == b  # the dead actor takes nothing new
    verdict = run.ledger.returned(c0)
    assert verdict.done is s0 and verdict.replace == 1
    assert charged(run.recovery) == ["proposal shard 1"] and not run.ledger.charged(s0)


def test_calls_of_a_dead_actor_that_never_answer_count_as_unfinished_after_the_wait():
    run = Run(actors=1)
    a = run.actors[0]
    s0, s1, p0 = shard(0), shard(1), part(0)
    c0, c1, cp = run.send(s0, a), run.send(s1, a), run.send(p0, a)
    run.ledger.died(c1, "died")
    run.now = DEAD_ACTOR_WAIT_S - 1
    assert run.ledger.expire() == Verdict()
    run.now = DEAD_ACTOR_WAIT_S
    verdict = run.ledger.expire()
    assert set(verdict.forget) == {c0, cp}  # no longer awaited
    assert charged(run.recovery) == ["proposal shard 0", "chain part 0"]
    assert sorted(names(verdict.retry)) == ["chain part 0", "proposal shard 0", "proposal shard 1"]
    assert verdict.replace == 1


def test_a_worker_node_lost_with_two_actors_charges_each_actors_first_calls_and_replaces_both():
    """RELIABILITY: a worker node removed while calibration draws, a shard, a chain part or a samples part
    is in flight on it."""
    run = Run(actors=3)
    a, b, c = run.actors
    on_a = [run.send(shard(0), a), run.send(part(0), a)]
    on_b = [run.send(U("samples part 1"), b), run.send(shard(2), b)]
    on_c = run.send(shard(3), c)  # the surviving node
    verdicts = [run.ledger.died(call, "node lost") for call in on_a + on_b]
    assert sum(v.replace for v in verdicts) == 2
    assert charged(run.recovery) == ["proposal shard 0", "chain part 0", "samples part 1"]
    assert sorted(names(u for v in verdicts for u in v.retry)) == [
        "chain part 0", "proposal shard 0", "proposal shard 2", "samples part 1"]
    assert run.ledger.returned(on_c).done is not None
    assert run.recovery.actors_lost == 2 and run.recovery.actors_replaced == 2


# ------------------------------------------------------------------ charged units run alone


def test_a_charged_unit_waits_for_an_actor_to_drain_and_nothing_else_is_sent_there():
    run = Run(actors=2)
    a, b = run.actors
    s1 = shard(1)
    busy_a = [run.send(shard(i), a) for i in (10, 11)]
    busy_b = [run.send(shard(i), b) for i in (20, 21, 22)]
    run.ledger.raised(run.send(s1, a), "RuntimeError: boom")  # charged on a: it prefers b now
    assert run.ledger.charged(s1) and run.ledger.failures(s1) == ("RuntimeError: boom",)
    assert run.ledger.place(s1, LIMIT) is None  # b holds calls: s1 holds b and waits for it to drain
    assert run.ledger.place(shard(30), LIMIT) == a  # b takes nothing new
    for call in busy_b:
        assert run.ledger.place(shard(31), LIMIT) == a
        run.ledger.returned(call)
    assert run.ledger.place(s1, LIMIT) == b
    run.send(s1, b)
    assert run.ledger.place(shard(32), 10) == a  # b runs s1 alone
    assert all(run.ledger.returned(call).done is not None for call in busy_a)


def test_a_charged_units_hold_yields_while_its_stage_is_not_ready():
    run = Run(actors=1)
    a = run.actors[0]
    s0 = shard(0)
    busy = run.send(part(1), a)
    run.ledger.raised(run.send(s0, a), "boom")
    assert run.ledger.place(s0, LIMIT) is None  # holds a while a's chain part runs
    assert run.ledger.place(part(2), LIMIT) is None
    run.ledger.release_holds(lambda unit: unit is not s0)  # the shard stage waits for the chain parts
    assert run.ledger.place(part(2), LIMIT) == a
    run.ledger.release_holds(lambda unit: True)
    assert run.ledger.returned(busy).done is not None


def test_an_innocent_unit_charged_beside_a_poison_one_runs_alone_and_succeeds():
    """RELIABILITY: the actor dies on every try of shard 1 (a poison shard) with a chain part pending in its
    other thread: the chain part is charged once, then succeeds alone; the shard stops the run after its
    third charged death, on 3 different actors, and the last dead actor is not replaced."""
    run = Run(actors=2)
    poison, innocent = shard(1), part(0)
    actor, c_shard = run.place_and_send(poison)
    c_part = run.send(innocent, actor)
    run.ledger.died(c_shard, "ActorDiedError: exit 17")
    run.replace(run.ledger.died(c_part, "ActorDiedError: exit 17"))
    assert charged(run.recovery) == ["proposal shard 1", "chain part 0"]
    actor, c_part = run.place_and_send(innocent)
    assert run.ledger.place(shard(2), LIMIT) != actor  # alone
    assert run.ledger.returned(c_part).done is innocent
    for attempt in (2, 3):
        actor, call = run.place_and_send(poison)
        if attempt == 3:
            with pytest.raises(StageError) as stop:
                run.ledger.died(call, "ActorDiedError: exit 17")
        else:
            run.replace(run.ledger.died(call, "ActorDiedError: exit 17"))
    assert str(stop.value) == (
        "proposal shard 1 failed 3 times, on 3 different proposal actors and is not tried again (the last time: "
        "ActorDiedError: exit 17); fix the cause and re-run the same command to resume")
    assert charged(run.recovery) == ["proposal shard 1", "chain part 0", "proposal shard 1", "proposal shard 1"]
    assert run.recovery.actors_lost == 3 and run.recovery.actors_replaced == 2


def test_a_chain_part_whose_neighbours_reply_was_lost_with_the_process_takes_the_charge_once():
    """RELIABILITY: the actor picking chain part 1 dies on every try; the first death is charged to chain part 0,
    picked before it on that actor, whose reply was still on its way; part 1 then runs 4 times, charged 3."""
    run = Run(actors=1, max_replacements=6)
    p0, p1 = part(0), part(1)
    actor = run.actors[0]
    c0, c1 = run.send(p0, actor), run.send(p1, actor)
    run.ledger.died(c1, "died")
    run.replace(run.ledger.died(c0, "died"))
    assert charged(run.recovery) == ["chain part 0"] and names(run.ledger.failures(p1)) == []
    tries = 1
    while True:
        _, call = run.place_and_send(p1)
        tries += 1
        try:
            run.replace(run.ledger.died(call, "died"))
        except StageError as exc:
            assert str(exc).startswith("chain part 1 failed 3 times, on 3 different proposal actors")
            break
    assert tries == 4 and charged(run.recovery).count("chain part 1") == 3
    assert run.recovery.actors_lost == tries and run.recovery.actors_replaced == tries - 1


def test_a_chain_part_that_dies_twice_finishes_on_its_third_try():
    """RELIABILITY: the actor picking chain part 1 dies twice; the third attempt finishes."""
    run = Run(actors=2)
    p1 = part(1)
    for _ in range(2):
        _, call = run.place_and_send(p1)
        run.replace(run.ledger.died(call, "died"))
    _, call = run.place_and_send(p1)
    assert run.ledger.returned(call).done is p1
    assert run.recovery.to_json()["actors_lost"] == run.recovery.actors_replaced == 2
    assert charged(run.recovery) == ["chain part 1"] * 2 and run.recovery.retries == 2


def test_a_shard_killed_half_way_is_charged_and_its_actor_replaced():
    """RELIABILITY: a proposal actor dies half-way through shard 2 (one actor)."""
    run = Run(actors=1)
    a = run.actors[0]
    shards = [shard(i) for i in range(4)]
    calls = [run.send(u, a) for u in shards[:3]]
    assert run.ledger.returned(calls[0]).done is shards[0]
    assert run.ledger.returned(calls[1]).done is shards[1]
    verdict = run.ledger.died(calls[2], "ActorDiedError")
    assert verdict.dead == (a,) and verdict.retry == (shards[2],) and verdict.replace == 1
    assert run.ledger.actors_up == [] and run.ledger.place(shards[3], LIMIT) is None
    (new,) = run.replace(verdict)
    assert run.recovery.actors_replaced == 1 and charged(run.recovery) == ["proposal shard 2"]
    assert run.ledger.place(shards[2], LIMIT) == new


# ------------------------------------------------------------------ raised on a live actor


def test_a_unit_that_raises_on_every_try_stops_the_run_naming_it_on_each_actor_it_tried():
    """RELIABILITY: shard 3 raises on every attempt (2 actors): it moves to the other actor when one is free."""
    run = Run(actors=2)
    s3 = shard(3)
    tried = []
    for attempt in range(MAX_UNIT_FAILURES):
        actor, call = run.place_and_send(s3)
        tried.append(actor)
        if attempt < MAX_UNIT_FAILURES - 1:
            verdict = run.ledger.raised(call, "InjectedFault: injected fault at shard 3")
            assert verdict.retry == (s3,) and verdict.dead == () and verdict.replace == 0
    with pytest.raises(StageError) as stop:
        run.ledger.raised(call, "InjectedFault: injected fault at shard 3")
    assert tried[0] != tried[1]  # retried on the actor it had not failed on
    assert str(stop.value) == (
        "proposal shard 3 failed 3 times, on 2 different proposal actors and is not tried again (the last time: "
        "InjectedFault: injected fault at shard 3); fix the cause and re-run the same command to resume")
    assert run.recovery.actors_lost == 0 and run.recovery.retries == 2


def test_a_unit_raising_on_the_only_actor_names_one_actor():
    run = Run(actors=1)
    u = shard(0)
    with pytest.raises(StageError, match=r"^proposal shard 0 failed 3 times, on 1 different proposal actor and"):
        for _ in range(MAX_UNIT_FAILURES):
            _, call = run.place_and_send(u)
            run.ledger.raised(call, "boom")


# ------------------------------------------------------------------ replacements


def test_a_replacement_that_cannot_be_placed_leaves_the_run_on_the_survivors():
    """RELIABILITY: a worker node removed while 4 actors fill both nodes; the 2 replacements stay pending."""
    run = Run(actors=4)
    lost = run.actors[:2]
    for actor in lost:
        run.replace(run.ledger.died(run.send(shard(actor), actor), "node lost"), up=False)
    assert run.ledger.actors_starting == 2 and run.ledger.actors_up == run.actors[2:]
    placed = {run.place_and_send(shard(10 + i), limit=2)[0] for i in range(4)}
    assert placed == set(run.actors[2:])
    assert run.ledger.place(shard(20), limit=2) is None  # full: it waits for the survivors
    assert run.recovery.actors_lost == 2 and run.recovery.actors_replaced == 2


def test_when_the_replacements_run_out_the_run_goes_on_until_the_last_actor_is_lost():
    run = Run(actors=2, max_replacements=1)
    a, b = run.actors
    (c,) = run.replace(run.ledger.died(run.send(shard(0), a), "died"))
    assert run.replace(run.ledger.died(run.send(shard(1), b), "died")) == []  # budget spent; c goes on
    assert run.ledger.actors_up == [c]
    with pytest.raises(StageError) as stop:
        run.ledger.died(run.send(shard(2), c), "ActorDiedError: the node went")
    assert str(stop.value) == (
        "every proposal actor was lost (3 in all, the last: ActorDiedError: the node went) and 1 replacements were "
        "made; fix the cause and re-run the same command to resume")


def test_an_actor_that_dies_while_it_starts_is_replaced_without_a_charge():
    run = Run(actors=1)
    starting = run.start()
    verdict = run.ledger.start_failed(starting, "ActorDiedError: could not start")
    assert verdict.dead == (starting,) and verdict.replace == 1 and verdict.retry == ()
    assert run.recovery.failures == [] and run.recovery.actors_lost == 1


def test_an_actor_lost_outside_a_call_settles_its_calls_as_they_answer():
    run = Run(actors=2)
    a, _ = run.actors
    s0 = shard(0)
    call = run.send(s0, a)
    verdict = run.ledger.lost(a, "the share call failed")
    assert verdict.dead == (a,) and verdict.replace == 0
    assert run.ledger.lost(a, "again") == Verdict()  # known dead already
    settled = run.ledger.died(call, "ActorDiedError")
    assert settled.retry == (s0,) and settled.replace == 1 and charged(run.recovery) == ["proposal shard 0"]


def test_units_that_need_a_share_go_only_to_actors_that_hold_it():
    run = Run(actors=2)
    a, b = run.actors
    unit = U("samples part 0")
    assert run.ledger.place(unit, LIMIT, needs="calibration") is None
    run.ledger.holds(b, "calibration")
    assert run.ledger.place(unit, LIMIT, needs="calibration") == b
    assert run.ledger.place(shard(0), LIMIT) in (a, b)

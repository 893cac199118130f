"""The scheduler on real Ray actors, with small stages of its own (no G or D): the failure policy as it
plays out there, and a loop that keeps collecting while driver work runs."""

from __future__ import annotations

import itertools
import sys
import threading
import time

import pytest
import ray.cloudpickle

from mhgan_dist.pipeline.scheduler import ActorPool, Handoff, Recovery, ResourceWatch, Scheduler, Stage


# Ray's workers cannot import this test module by name: its classes travel by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class _Worker:
    """Runs keyed calls side by side (up to 4 at once) and records, per call, the calls that overlapped it."""

    def __init__(self) -> None:
        self.active: set[str] = set()
        self.overlaps: dict[str, set[str]] = {}
        self.lock = threading.Lock()
        self.failed: set[str] = set()

    def ready(self) -> bool:
        return True

    def work(self, key: str, seconds: float, fail_once: bool) -> str:
        with self.lock:
            self.overlaps.setdefault(key, set()).update(self.active)
            for other in self.active:
                self.overlaps.setdefault(other, set()).add(key)
            self.active.add(key)
        try:
            if fail_once and key not in self.failed:
                self.failed.add(key)
                raise RuntimeError(f"{key} fails once")
            time.sleep(seconds)
            return key
        finally:
            with self.lock:
                self.active.discard(key)

    def report(self) -> dict[str, set[str]]:
        return self.overlaps


class _Calls(Stage):
    """Units named ``{title}-{key}``; ``fail_once`` keys raise on their first try; ``then`` gets each done unit's key."""

    def __init__(self, title: str, keys: list[int], *, seconds: float, fail_once: set[int] = frozenset(),
                 then: "_Calls | None" = None, ready_when=None) -> None:
        super().__init__()
        self.title, self.seconds, self.fail_once, self.then, self.ready_when = title, seconds, fail_once, then, ready_when
        self.finished: list[int] = []
        for key in keys:
            self.add(key, None)

    def ready(self) -> bool:
        return self.ready_when is None or self.ready_when()

    def submit(self, unit, actor):
        return actor.work.remote(f"{self.title}-{unit.key}", self.seconds, unit.key in self.fail_once)

    def done(self, unit, result) -> Handoff:
        self.finished.append(unit.key)
        return Handoff([] if self.then is None else [self.then.unit(unit.key, None)])


def _run(ray, stages: list[Stage], *, max_in_flight: int, timeout_s: float = 120.0):
    """Runs the stages on one actor in a thread; returns (actor handle, recovery, error or None)."""
    worker = ray.remote(num_cpus=0, max_concurrency=4)(_Worker).remote()
    recovery = Recovery()
    pool = ActorPool(lambda: pytest.fail("no actor may be replaced here"), [(worker, worker.ready.remote())],
                     max_replacements=0, recovery=recovery, describe_request="0 CPU")
    scheduler = Scheduler(pool, stages, ResourceWatch(1000, 0, print), max_in_flight=max_in_flight)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            scheduler.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), (
        f"the scheduler stalled: queued {[(s.title, [u.key for u in s.queue]) for s in stages]}, "
        f"in flight {[(u.stage.title, u.key) for u in scheduler.in_flight.calls.values()]}")
    return worker, recovery, errors[0] if errors else None


def test_a_unit_charged_with_a_failure_runs_alone_on_its_next_try(ray_session):
    """Up to 3 calls share the actor; a unit that failed once is retried only once the actor is empty,
    and nothing else is sent to the actor while it runs."""
    stage = _Calls("unit", list(range(8)), seconds=0.3, fail_once={1})
    worker, recovery, error = _run(ray_session, [stage], max_in_flight=3)
    assert error is None
    assert sorted(stage.finished) == list(range(8))
    overlaps = ray_session.get(worker.report.remote())
    assert [f["unit"] for f in recovery.failures] == ["unit 1"] and recovery.retries == 1
    # Its failed first try ran beside others (the actor held 3); the retry ran with no company.
    assert overlaps["unit-1"] - {"unit-0", "unit-2"} == set(), overlaps["unit-1"]
    # The others still shared the actor: running alone is for the charged unit only.
    assert any(len(beside) >= 2 for key, beside in overlaps.items() if key != "unit-1"), overlaps


def test_a_charged_unit_whose_stage_is_not_ready_does_not_hold_the_actor_the_other_stage_needs(ray_session):
    """A charged first-stage unit waits for the actor to drain; meanwhile the stage stops being ready until
    the second stage's queue empties, which needs the same (only) actor: the hold must yield to it."""
    second = _Calls("second", [], seconds=0.05)
    first = _Calls("first", list(range(6)), seconds=0.5, fail_once={0}, then=second,
                   ready_when=lambda: not second.queue)
    _, recovery, error = _run(ray_session, [first, second], max_in_flight=3, timeout_s=90)
    assert error is None
    assert sorted(first.finished) == list(range(6)) and sorted(second.finished) == list(range(6))
    assert [f["unit"] for f in recovery.failures] == ["first 0"]


def test_a_unit_failing_on_every_try_stops_the_run_after_three_naming_it(ray_session):
    class AlwaysFails(_Calls):
        tries = itertools.count()

        def submit(self, unit, actor):
            return actor.work.remote(f"{self.title}-{unit.key}-{next(self.tries)}", self.seconds, unit.key == 2)

    stage = AlwaysFails("unit", list(range(5)), seconds=0.1)
    _, recovery, error = _run(ray_session, [stage], max_in_flight=2)
    assert error is not None and str(error).startswith(
        "unit 2 failed 3 times, on 1 different proposal actor and is not tried again (the last time: ")
    assert [f["unit"] for f in recovery.failures] == ["unit 2"] * 3


def test_the_loop_collects_actor_results_while_driver_work_runs(ray_session):
    """Driver work (the calibration fit's kind) runs in a thread beside the loop: here it waits until the loop
    has collected every actor unit, which it could not do if the loop waited for the driver work."""
    collected = threading.Event()

    class Calls(_Calls):
        def done(self, unit, result) -> Handoff:
            handoff = super().done(unit, result)
            if len(self.finished) == 6:
                collected.set()
            return handoff

    class Driver(Stage):
        title = "driver work"
        runs_in_driver = True

        def __init__(self) -> None:
            super().__init__()
            self.results: list[bool] = []
            self.add("wait", None)

        def run(self, unit) -> bool:
            return collected.wait(timeout=60)

        def done(self, unit, result) -> Handoff:
            self.results.append(result)
            return Handoff()

    driver, calls = Driver(), Calls("unit", list(range(6)), seconds=0.2)
    _, recovery, error = _run(ray_session, [driver, calls], max_in_flight=2, timeout_s=90)
    assert error is None and driver.results == [True]
    assert sorted(calls.finished) == list(range(6)) and recovery.failures == []

"""The run lease with real processes: a live holder, a stopped one, SIGKILLed ones, contenders.

Holders are separate Python processes that import only the lease module, so
the lock they hold is the kernel's, as in a real run.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mhgan_dist.errors import OutputError
from mhgan_dist.run.lease import LEASE_FILE, LeaseHolder, RunLease

REPO = Path(__file__).resolve().parents[2]

# Holds the lease on argv[1] until its stdin closes; with argv[2] == "fork", first
# forks a child that outlives it (as a forked helper of a run would) until then.
HOLDER = """
import os, sys
from mhgan_dist.run.lease import RunLease
lease = RunLease(sys.argv[1])
lease.acquire()
if sys.argv[2] == "fork" and os.fork() == 0:
    lease.release()  # as a forked child unwinding its parent's `with` would
    os.write(1, f"child {os.getpid()}\\n".encode())
    sys.stdin.read()
    os._exit(0)
os.write(1, f"held {os.getpid()}\\n".encode())  # one write: the child's line never splits it
sys.stdin.read()
"""


@pytest.fixture
def holder_process() -> Iterator[Callable[..., tuple[subprocess.Popen, int | None]]]:
    """Starts a process holding the lease on a directory: (process, pid of its forked child or None)."""
    started: list[subprocess.Popen] = []

    def start(directory: Path, mode: str = "plain") -> tuple[subprocess.Popen, int | None]:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory), mode], cwd=REPO,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        started.append(proc)
        said = dict(line.split() for line in first_lines(proc, 2 if mode == "fork" else 1))
        assert said["held"] == str(proc.pid)
        return proc, int(said["child"]) if "child" in said else None

    yield start
    for proc in started:
        proc.stdin.close()  # ends a forked child too: it reads the same pipe
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def first_lines(proc: subprocess.Popen, count: int, timeout_s: float = 60.0) -> list[str]:
    """The first ``count`` lines ``proc`` writes; fails when it stops short of them for ``timeout_s``."""
    data, deadline = b"", time.monotonic() + timeout_s
    while data.count(b"\n") < count:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(proc.stdout.fileno(), 4096) if ready else b""
        assert chunk, f"the holder wrote {data!r}, then nothing"
        data += chunk
    return data.decode().splitlines()


def quiet_lease(directory: Path, said: list[str] | None = None) -> RunLease:
    return RunLease(str(directory), say=(said.append if said is not None else lambda _: None))


def test_a_held_lease_names_its_holder_refuses_a_rival_and_is_removed_on_release(tmp_path: Path) -> None:
    lease = quiet_lease(tmp_path / "run")
    with lease:
        record = json.loads((tmp_path / "run" / LEASE_FILE).read_text())
        assert record["holder"] == {"host": socket.gethostname(), "pid": os.getpid()}
        assert LeaseHolder.from_json(record) == lease.holder and lease.took_over is None
        # The lock belongs to the descriptor: a second lease in this very process is refused too.
        with pytest.raises(OutputError, match=rf"run is being written by another run \(host .*, pid {os.getpid()}\); "):
            quiet_lease(tmp_path / "run").acquire()
    assert os.listdir(tmp_path / "run") == [] and not lease.held
    with quiet_lease(tmp_path / "run") as again:  # free again once released
        assert again.held


def test_a_live_holder_in_another_process_refuses_the_rival_with_one_sentence(tmp_path: Path, holder_process) -> None:
    proc, _ = holder_process(tmp_path / "run")
    with pytest.raises(OutputError) as refused:
        quiet_lease(tmp_path / "run").acquire()
    assert str(refused.value) == (f"{tmp_path / 'run'} is being written by another run (host {socket.gethostname()}, "
                                  f"pid {proc.pid}); wait for that run or re-run this one later")
    assert proc.poll() is None


def test_a_stopped_holder_keeps_the_lease_until_it_ends(tmp_path: Path, holder_process) -> None:
    # A stalled holder (a paused VM, SIGSTOP) is alive: nobody may write beside it, however long it stalls.
    proc, _ = holder_process(tmp_path / "run")
    proc.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(OutputError, match=f"pid {proc.pid}"):
            quiet_lease(tmp_path / "run").acquire()
    finally:
        proc.send_signal(signal.SIGCONT)
    proc.stdin.close()  # it ends normally: the kernel drops its lock, the file stays
    assert proc.wait(timeout=30) == 0
    with quiet_lease(tmp_path / "run") as lease:
        assert lease.took_over is not None and lease.took_over.pid == proc.pid


def test_a_sigkilled_holder_is_taken_over_at_once(tmp_path: Path, holder_process) -> None:
    proc, _ = holder_process(tmp_path / "run")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    said: list[str] = []
    with quiet_lease(tmp_path / "run", said) as lease:
        assert lease.took_over is not None and lease.took_over.pid == proc.pid
    assert said == [f"took over the lease on {tmp_path / 'run'} from host {socket.gethostname()} pid {proc.pid} "
                    "(its holder's process is gone)"]


def test_a_forked_child_of_a_sigkilled_holder_does_not_keep_the_lease(tmp_path: Path, holder_process) -> None:
    proc, child = holder_process(tmp_path / "run", "fork")
    with pytest.raises(OutputError, match=f"pid {proc.pid}"):  # the child's release left the parent's lease alone
        quiet_lease(tmp_path / "run").acquire()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    os.kill(child, 0)  # the child lives on, and so does its copy of the holder's descriptors
    with quiet_lease(tmp_path / "run") as lease:
        assert lease.took_over is not None and lease.took_over.pid == proc.pid


def test_a_lease_file_left_by_a_lost_machine_is_taken_over_at_once(tmp_path: Path) -> None:
    # Nobody holds its lock (the NFS server freed it with the lost client's state): it names a holder, nothing more.
    directory = tmp_path / "run"
    directory.mkdir()
    (directory / LEASE_FILE).write_text(json.dumps(LeaseHolder("another-host", 4242, 1.0).to_json()))
    said: list[str] = []
    with quiet_lease(directory, said) as lease:
        assert lease.took_over == LeaseHolder("another-host", 4242, 1.0)
        assert json.loads((directory / LEASE_FILE).read_text())["holder"]["pid"] == os.getpid()
    assert said == [f"took over the lease on {directory} from host another-host pid 4242 (its holder's process is gone)"]


@pytest.mark.parametrize("content", ["", '{"holder": {"host": "h"', '{"format": "something else"}'])
def test_an_unreadable_lease_file_is_taken_over_silently(tmp_path: Path, content: str) -> None:
    directory = tmp_path / "run"
    directory.mkdir()
    (directory / LEASE_FILE).write_text(content)  # its writer died before or while writing it
    said: list[str] = []
    with quiet_lease(directory, said) as lease:
        assert lease.took_over is None
        assert json.loads((directory / LEASE_FILE).read_text())["holder"]["pid"] == os.getpid()
    assert said == [] and os.listdir(directory) == []


def test_a_rival_that_opened_the_file_before_its_holder_released_it_does_not_hold_it(tmp_path: Path) -> None:
    # The interleaving contenders seldom hit, put in order by hand: the rival opens the lease
    # file, its holder removes it and ends its lock, then the rival locks the file it opened.
    holder, rival = quiet_lease(tmp_path / "run"), quiet_lease(tmp_path / "run")
    holder.acquire()
    fd, created = rival._open()
    holder.release()
    try:
        assert rival._take(fd, created) is None  # locked, but off the path: try again
    finally:
        os.close(fd)
    with quiet_lease(tmp_path / "run") as third:  # whoever then creates the file holds it
        assert third.held and os.listdir(tmp_path / "run") == [LEASE_FILE]


def test_a_release_leaves_a_lease_file_that_is_not_its_own(tmp_path: Path) -> None:
    first = quiet_lease(tmp_path / "run")
    first.acquire()
    (tmp_path / "run" / LEASE_FILE).unlink()  # by hand: the next run creates and locks a new file
    with quiet_lease(tmp_path / "run") as second:
        first.release()
        assert LeaseHolder.from_json(json.loads((tmp_path / "run" / LEASE_FILE).read_text())) == second.holder
        with pytest.raises(OutputError, match="is being written by another run"):
            quiet_lease(tmp_path / "run").acquire()


CONTENDER = """
import os, sys, time
from mhgan_dist.errors import OutputError
from mhgan_dist.run.lease import RunLease
directory, log, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
done = 0
while done < rounds:
    lease = RunLease(directory, say=lambda _: None)
    try:
        lease.acquire()
    except OutputError:
        time.sleep(0.002)
        continue
    with open(log, "a") as f:
        f.write(f"in {os.getpid()}\\n")
    time.sleep(0.005)
    with open(log, "a") as f:
        f.write(f"out {os.getpid()}\\n")
    lease.release()
    done += 1
"""


def test_contending_processes_hold_the_lease_one_at_a_time(tmp_path: Path) -> None:
    log = tmp_path / "log"
    procs = [subprocess.Popen([sys.executable, "-c", CONTENDER, str(tmp_path / "run"), str(log), "15"], cwd=REPO)
             for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    events = log.read_text().splitlines()  # "in PID" and "out PID", in the order they happened
    assert len(events) == 90
    for enter, leave in zip(events[0::2], events[1::2]):
        kind, pid = enter.split()
        assert kind == "in" and leave == f"out {pid}"  # no one entered while another held the lease
    assert os.listdir(tmp_path / "run") == []


def test_an_unusable_lease_directory_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match=r"^output directory .*/file/run is not writable: \[Errno 20\] Not a directory"):
        quiet_lease(tmp_path / "file" / "run").acquire()


def test_lease_records_name_a_host_and_a_pid_or_nothing() -> None:
    holder = LeaseHolder("h", 7, 12.5)
    assert LeaseHolder.from_json(holder.to_json()) == holder
    for body in (None, [], {}, {"holder": "h"}, {"holder": {"host": "h"}}, {"holder": {"host": "h", "pid": "7"}},
                 {"holder": {"host": "h", "pid": True}}, {"holder": {"host": 1, "pid": 7}}):
        assert LeaseHolder.from_json(body) is None, body

"""Nightly dated runs (layout, latest.json, retention, seeds) and the run lease.

Layout and retention run against a local path, a file:// URI and S3 (a moto
server on loopback); the real pipeline runs nightly on S3 and file:// too.
The lease is exercised with real processes: a live holder, a SIGKILLed one,
holders on another host, a stalled holder that loses it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from jobs import generate, repick
from mhgan_dist.run.config import build_job_config
from mhgan_dist.errors import ConfigError, OutputError, StageError
from mhgan_dist.run.nightly import (
    LATEST,
    LEASE_FILE,
    LEASE_TTL_S,
    LeaseHolder,
    LeaseRecord,
    NightlyOptions,
    NightlyRoot,
    RunLease,
    child_uri,
    date_seed,
    dated_config,
    lease_state,
    parse_date,
    run_guarded,
)
from mhgan_dist.run.store import MANIFEST, RUN_CONFIG, SUCCESS, RunStore, part_path, redact_uri, shard_path

REPO = Path(__file__).resolve().parents[2]
D1, D2, D3 = dt.date(2031, 1, 1), dt.date(2031, 1, 2), dt.date(2031, 1, 3)


# ------------------------------------------------------------------ dates


@pytest.mark.parametrize("text", ["2031-1-1", "20310101", "2031-02-30", "tomorrow", "2031-01-01T00:00"])
def test_parse_date_takes_only_iso_calendar_dates(text: str) -> None:
    with pytest.raises(ConfigError, match="--date"):
        parse_date(text)
    assert parse_date("2031-02-28") == dt.date(2031, 2, 28)


def test_date_seed_is_pinned_distinct_and_in_range() -> None:
    # Pinned: the seed is part of every dated run's identity, so changing the
    # derivation would turn re-runs of existing dates into refused runs.
    assert date_seed(0, D1) == 4059312580096158981
    seeds = {date_seed(base, day) for base in (0, 1, 7) for day in (D1, D2, D3)}
    assert len(seeds) == 9 and all(0 <= s < 2**63 for s in seeds)


def test_nightly_options_from_flags() -> None:
    assert NightlyOptions.from_flags({}, seed_given=False) is None
    with pytest.raises(ConfigError, match="--date, --keep only apply with --nightly"):
        NightlyOptions.from_flags({"date": "2031-01-01", "keep": 3}, seed_given=False)
    with pytest.raises(ConfigError, match="--keep must be at least 1"):
        NightlyOptions.from_flags({"nightly": True, "keep": 0}, seed_given=False)
    options = NightlyOptions.from_flags({"nightly": True}, seed_given=False, today=D2)
    assert options == NightlyOptions(date=D2, keep=None, keep_proposals=False, seed_given=False)


def test_dated_config_moves_the_output_and_derives_the_seed_unless_given(tmp_path: Path) -> None:
    config = build_job_config({"output": str(tmp_path), "seed": 5})
    derived = dated_config(config, NightlyOptions(D1))
    assert derived.output.output == str(tmp_path / "date=2031-01-01")
    assert derived.sampling.seed == date_seed(5, D1)
    assert dated_config(config, NightlyOptions(D1, seed_given=True)).sampling.seed == 5


@pytest.mark.parametrize("root, joined", [
    ("/data/nightly", "/data/nightly/date=2031-01-01"),
    ("file:///data/nightly/", "file:///data/nightly/date=2031-01-01"),
    ("s3://bucket", "s3://bucket/date=2031-01-01"),
    ("s3://k:s@bucket/a/b?endpoint_override=127.0.0.1:9000&scheme=http",
     "s3://k:s@bucket/a/b/date=2031-01-01?endpoint_override=127.0.0.1:9000&scheme=http"),
    ("gs://bucket/p", "gs://bucket/p/date=2031-01-01"),
])
def test_child_uri_keeps_scheme_credentials_and_query(root: str, joined: str) -> None:
    assert child_uri(root, "date=2031-01-01") == joined


# ---------------------------------------------------------- storage kinds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("uri, shown", [
    ("/data/runs/a", "/data/runs/a"),
    ("file:///data/runs/a", "file:///data/runs/a"),
    ("s3://bucket/a?region=us-east-1", "s3://bucket/a?region=us-east-1"),
    ("s3://AKIA:wJalr@bucket/a?endpoint_override=h:9000&scheme=http",
     "s3://***@bucket/a?endpoint_override=h:9000&scheme=http"),
    ("s3://bucket/a?access_key=AKIA&secret_key=wJalr&session_token=t0k&region=eu",
     "s3://bucket/a?access_key=***&secret_key=***&session_token=***&region=eu"),
    ("gs://bucket/a?access_token=ya29&credential_token_expiration=1", "gs://bucket/a?access_token=***&credential_token_expiration=***"),
])
def test_redact_uri_hides_credentials_only(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


@pytest.fixture(scope="module")
def s3_base() -> Iterator[tuple[str, str]]:
    """A moto S3 server on loopback with bucket mhgan-test: yields (URI prefix, URI query)."""
    pytest.importorskip("moto", reason="the S3 tests need moto[server] (pip install -e '.[test]')")
    executable = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or shutil.which("moto_server")
    if executable is None:
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    port = _free_port()
    server = subprocess.Popen([executable, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.2)
        fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", access_key="testing",
                               secret_key="testing", region="us-east-1", allow_bucket_creation=True)
        fs.create_dir("mhgan-test")
        yield "s3://testing:testing@mhgan-test", f"endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(params=["path", "file-uri", "s3"])
def root_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh nightly root on each kind of storage."""
    if request.param == "path":
        return str(tmp_path / "nightly")
    if request.param == "file-uri":
        return (tmp_path / "nightly").as_uri()
    prefix, query = request.getfixturevalue("s3_base")
    return f"{prefix}/{request.node.name.replace('[', '-').rstrip(']')}?{query}"


@dataclass
class FakeSummary:
    output: str
    status: str

    def lines(self) -> list[str]:
        return [f"{self.status}: {self.output}"]


def fake_run(calls: list[str], fail: bool = False) -> Callable:
    """Stands in for run_job: writes a minimal complete run (shard, samples, manifest, _SUCCESS)."""

    def run(job) -> FakeSummary:
        calls.append(job.output.output)
        store = RunStore(job.output.output)
        if store.exists(SUCCESS):
            return FakeSummary(store.uri, "already complete")
        store.write_json(RUN_CONFIG, {"seed": job.sampling.seed})
        store.write_table(shard_path(0), pa.table({"d_score_raw": pa.array([0.5, 1.5], pa.float32())}))
        store.write_table(part_path("samples", 0), pa.table({"sample_id": [0, 1]}))
        if fail:
            raise StageError("the fake run failed before its _SUCCESS")
        store.write_json(MANIFEST, {"run_id": f"run-{job.sampling.seed}", "stats": {"num_samples": 2}})
        store.write_bytes(SUCCESS, b"")
        return FakeSummary(store.uri, "complete")

    return run


def nightly(root: str, day: dt.date, run: Callable, **options) -> list[str]:
    config = build_job_config({"output": root})
    return run_guarded(config, run, nightly=NightlyOptions(day, **options), say=lambda _: None).lines()


def latest_of(root: str) -> dict:
    return RunStore(root).read_json(LATEST)


def test_dated_runs_latest_and_retention(root_uri: str) -> None:
    calls: list[str] = []
    nightly(root_uri, D1, fake_run(calls), keep=2)
    store = RunStore(root_uri)
    assert store.exists("date=2031-01-01/_SUCCESS") and store.exists("date=2031-01-01/samples/part-000000.parquet")
    assert store.list("date=2031-01-01/proposals") == []  # a finished date's shards are deleted
    assert latest_of(root_uri)["date"] == "2031-01-01"
    assert latest_of(root_uri)["run_id"] == f"run-{date_seed(0, D1)}"

    lines = nightly(root_uri, D2, fake_run(calls), keep=2, keep_proposals=True)
    assert latest_of(root_uri)["date"] == "2031-01-02" and latest_of(root_uri)["path"] == "date=2031-01-02"
    assert store.list("date=2031-01-02/proposals") == ["date=2031-01-02/proposals/shard-000000.parquet"]
    assert "nightly: latest.json -> date=2031-01-02" in lines

    # A re-run of a finished date is a no-op: the run recognises it, latest stays.
    before = {p: store.size(p) for p in store.list("date=2031-01-01")}
    lines = nightly(root_uri, D1, fake_run(calls), keep=2)
    assert lines[0].startswith("already complete") and latest_of(root_uri)["date"] == "2031-01-02"
    assert {p: store.size(p) for p in store.list("date=2031-01-01")} == before

    lines = nightly(root_uri, D3, fake_run(calls), keep=2)
    assert NightlyRoot(root_uri).complete_dates() == [D2, D3]
    assert store.list("date=2031-01-01") == []
    assert "nightly: removed date=2031-01-01 (--keep 2)" in lines
    assert latest_of(root_uri)["date"] == "2031-01-03"
    assert [c.rsplit("/", 1)[-1].split("?")[0] for c in calls] == [
        "date=2031-01-01", "date=2031-01-02", "date=2031-01-01", "date=2031-01-03"]


def test_latest_moves_only_after_success_and_unfinished_dates_are_kept(root_uri: str) -> None:
    nightly(root_uri, D1, fake_run([]))
    with pytest.raises(StageError):
        nightly(root_uri, D2, fake_run([], fail=True), keep=1)
    assert latest_of(root_uri)["date"] == "2031-01-01"
    root = NightlyRoot(root_uri)
    assert root.dates() == [D1, D2] and root.complete_dates() == [D1]
    # The failed date resumes; then retention removes only complete dates.
    lines = nightly(root_uri, D3, fake_run([]), keep=1)
    assert root.dates() == [D2, D3] and latest_of(root_uri)["date"] == "2031-01-03"
    assert any("unfinished older date(s) 2031-01-02" in line for line in lines)


def test_keep_refuses_a_date_it_would_remove_at_once(tmp_path: Path) -> None:
    root = str(tmp_path / "nightly")
    nightly(root, D2, fake_run([]))
    nightly(root, D3, fake_run([]))
    with pytest.raises(ConfigError, match="--date 2031-01-01 is older than the newest 2 complete date"):
        nightly(root, D1, fake_run([]), keep=2)
    nightly(root, D1, fake_run([]), keep=3)
    assert NightlyRoot(root).complete_dates() == [D1, D2, D3]


def test_an_interrupted_removal_is_finished_by_the_next_prune(tmp_path: Path) -> None:
    root = str(tmp_path / "nightly")
    for day in (D1, D2):
        nightly(root, day, fake_run([]))
    store = RunStore(root)
    store.write_bytes("date=2031-01-01/_DELETING", b"")  # as if killed after the marker
    assert NightlyRoot(root).complete_dates() == [D2]
    assert NightlyRoot(root).prune(keep=5) == [D1]
    assert NightlyRoot(root).dates() == [D2]


def test_nightly_and_single_runs_do_not_share_a_directory(tmp_path: Path) -> None:
    root = str(tmp_path / "nightly")
    nightly(root, D1, fake_run([]))
    with pytest.raises(OutputError, match="holds nightly runs"):
        run_guarded(build_job_config({"output": root}), fake_run([]), say=lambda _: None)
    single = str(tmp_path / "single")
    run_guarded(build_job_config({"output": single}), fake_run([]), say=lambda _: None)
    with pytest.raises(OutputError, match="holds a single run"):
        nightly(single, D1, fake_run([]))


def test_no_lease_on_object_stores_is_said(s3_base: tuple[str, str]) -> None:
    prefix, query = s3_base
    said: list[str] = []
    config = build_job_config({"output": f"{prefix}/no-lease?{query}"})
    run_guarded(config, fake_run([]), nightly=NightlyOptions(D1), say=said.append)
    assert any("no lease" in s and "scheduler" in s for s in said)
    assert not RunStore(f"{prefix}/no-lease/date=2031-01-01?{query}").exists(LEASE_FILE)


# -------------------------------------------------------------------- lease


HOLDER = """
import sys, time
from mhgan_dist.run.nightly import RunLease
lease = RunLease(sys.argv[1], ttl_s=float(sys.argv[2]), heartbeat_s=float(sys.argv[3]))
lease.acquire()
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder_process(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Starts a process that acquires a lease on a directory and sleeps holding it."""
    started: list[subprocess.Popen] = []

    def start(directory: Path, ttl_s: float = LEASE_TTL_S, heartbeat_s: float = 5.0) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory), str(ttl_s), str(heartbeat_s)],
                                cwd=REPO, stdout=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def write_foreign_lease(directory: Path, *, heartbeat_age_s: float, ttl_s: float = LEASE_TTL_S,
                        heartbeat_s: float = 5.0) -> None:
    """A lease of another run, as one that took it over: a new, complete file at the lease path.

    Never written into the file already there: a holder's heartbeat may be
    reading or renewing that one (a run taking over unlinks it and creates
    its own), and one rename leaves no moment with the path absent.
    """
    now = time.time()
    holder = LeaseHolder("another-host", 4242, "pid:[1]", "f" * 32)
    record = LeaseRecord(holder, now - heartbeat_age_s - 60, now - heartbeat_age_s, ttl_s, heartbeat_s)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "foreign-lease").write_text(json.dumps(record.to_json()))
    os.replace(directory / "foreign-lease", directory / LEASE_FILE)


def quiet_lease(directory: Path, **kwargs) -> RunLease:
    return RunLease(str(directory), say=lambda _: None, **kwargs)


def test_lease_holds_renews_and_releases(tmp_path: Path) -> None:
    lease = quiet_lease(tmp_path / "run", ttl_s=2.0, heartbeat_s=0.1)
    with lease:
        first = json.loads((tmp_path / "run" / LEASE_FILE).read_text())
        assert first["holder"]["pid"] == os.getpid() and first["holder"]["host"] == socket.gethostname()
        assert first["expires_at"] == pytest.approx(first["heartbeat_at"] + 2.0)
        time.sleep(0.5)
        renewed = json.loads((tmp_path / "run" / LEASE_FILE).read_text())
        assert renewed["heartbeat_at"] > first["heartbeat_at"] and renewed["holder"] == first["holder"]
        with pytest.raises(OutputError, match="is being written by another run"):
            quiet_lease(tmp_path / "run").acquire()
    assert sorted(os.listdir(tmp_path / "run")) == [] and not lease.lost  # the lock file goes too


def test_a_live_holder_in_another_process_refuses_the_run(tmp_path: Path, holder_process, capsys) -> None:
    root = tmp_path / "nightly"
    holder_process(root / "date=2031-01-01")
    code = generate.main(["--nightly", "--date", "2031-01-01", "--output", str(root), "--num-samples", "10"])
    err = capsys.readouterr().err
    assert code == 2 and "is being written by another run" in err and "Traceback" not in err
    assert err.count("\n") == 1  # one sentence


def test_a_sigkilled_holder_is_taken_over_at_once(tmp_path: Path, holder_process) -> None:
    proc = holder_process(tmp_path / "run")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    started = time.monotonic()
    lease = quiet_lease(tmp_path / "run")
    with lease:
        assert lease.took_over is not None and lease.took_over.holder.pid == proc.pid
    assert time.monotonic() - started < 3  # not the 30 s expiry: the holder's pid is gone here


def test_an_expired_foreign_lease_is_taken_over(tmp_path: Path) -> None:
    write_foreign_lease(tmp_path / "run", heartbeat_age_s=LEASE_TTL_S + 1)
    lease = quiet_lease(tmp_path / "run")
    with lease:
        assert lease.took_over is not None and lease.took_over.holder.host == "another-host"


def test_a_fresh_foreign_lease_refuses_and_a_stale_one_is_waited_out(tmp_path: Path) -> None:
    write_foreign_lease(tmp_path / "live", heartbeat_age_s=1.0)
    with pytest.raises(OutputError, match="host another-host, pid 4242"):
        quiet_lease(tmp_path / "live").acquire()
    # Not renewed for 3 heartbeats: its holder is gone; wait out the rest of the expiry.
    write_foreign_lease(tmp_path / "stale", heartbeat_age_s=1.0, ttl_s=3.0, heartbeat_s=0.2)
    said: list[str] = []
    started = time.monotonic()
    lease = RunLease(str(tmp_path / "stale"), say=said.append)
    with lease:
        waited = time.monotonic() - started
    assert 1.5 <= waited < 4.5 and lease.took_over is not None
    assert any(re.match(r"waiting up to [12] s for the lease on .*: host another-host pid 4242 stopped renewing it", s)
               for s in said)


def test_an_unreadable_lease_counts_by_its_age(tmp_path: Path) -> None:
    directory = tmp_path / "run"
    directory.mkdir()
    (directory / LEASE_FILE).write_text("")  # its writer died between create and write
    old = time.time() - LEASE_TTL_S - 1
    os.utime(directory / LEASE_FILE, (old, old))
    with quiet_lease(directory) as lease:
        assert json.loads((directory / LEASE_FILE).read_text())["holder"]["token"] == lease.holder.token


CONTENDER = """
import os, sys, time
from mhgan_dist.errors import OutputError
from mhgan_dist.run.nightly import RunLease
directory, log, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
done = 0
while done < rounds:
    lease = RunLease(directory, heartbeat_s=0.5, say=lambda _: None)
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
    assert sorted(os.listdir(tmp_path / "run")) == []


def test_an_unusable_lease_directory_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="is not writable"):
        quiet_lease(tmp_path / "file" / "run").acquire()


def test_lease_state() -> None:
    me = LeaseHolder.this_process()
    now = 1_000.0
    other_host = LeaseHolder("another-host", 1, me.pid_namespace, "t")
    record = LeaseRecord(other_host, 0.0, now - 2, 30.0, 5.0)
    assert lease_state(record, now, me) == "live"
    assert lease_state(record, now + 20, me) == "stale"
    assert lease_state(record, now + 28, me) == "expired"
    gone = LeaseRecord(LeaseHolder(me.host, 2**22 + 12345, me.pid_namespace, "t"), 0.0, now - 2, 30.0, 5.0)
    assert lease_state(gone, now, me) == "dead"
    elsewhere = LeaseRecord(LeaseHolder(me.host, 2**22 + 12345, "pid:[other]", "t"), 0.0, now - 2, 30.0, 5.0)
    assert lease_state(elsewhere, now, me) == "live"  # another pid namespace: its pid says nothing here


@pytest.mark.parametrize("sigint", [signal.default_int_handler, signal.SIG_IGN],
                         ids=["sigint-default", "sigint-ignored"])
def test_a_holder_that_loses_its_lease_stops_with_one_sentence(tmp_path: Path, sigint) -> None:
    # SIGINT ignored is how a background job of a non-interactive shell (`job &`
    # in a script) starts; the lease loss must stop the run all the same.
    root = str(tmp_path / "nightly")
    path = tmp_path / "nightly" / "date=2031-01-01" / LEASE_FILE

    def slow_run(job) -> FakeSummary:
        # Another run takes the lease over, as after this process stalled past the expiry.
        write_foreign_lease(path.parent, heartbeat_age_s=0.0)
        time.sleep(30)
        raise AssertionError("the lease loss did not interrupt the run")

    config = build_job_config({"output": root})
    started = time.monotonic()
    before = signal.signal(signal.SIGINT, sigint)
    try:
        with pytest.raises(OutputError, match="was taken over by host another-host pid 4242 while this run held it"):
            run_guarded(config, slow_run, nightly=NightlyOptions(D1), say=lambda _: None, lease_ttl_s=3.0,
                        heartbeat_s=0.2)
        assert signal.getsignal(signal.SIGINT) is sigint  # the run's own SIGINT handling is undone
    finally:
        signal.signal(signal.SIGINT, before)
    assert time.monotonic() - started < 10
    assert json.loads(path.read_text())["holder"]["host"] == "another-host"  # not released: not ours


def test_a_takeover_between_a_renewals_check_and_its_write_survives(tmp_path: Path) -> None:
    """The order that loses, step by step: the heartbeat checks that it holds the lease, another
    run takes the lease over (nothing stops it where the filesystem has no flock), then the
    heartbeat writes its renewal. The renewal reads the clock between its check and its write,
    so the clock given to the lease is where the takeover is put."""
    directory = tmp_path / "run"
    take_over_now = False

    def clock() -> float:
        nonlocal take_over_now
        if take_over_now:
            take_over_now = False
            write_foreign_lease(directory, heartbeat_age_s=0.0)
        return time.time()

    # The heartbeat thread waits an hour: every renewal here is one the test makes.
    lease = RunLease(str(directory), ttl_s=7200.0, heartbeat_s=3600.0, say=lambda _: None, clock=clock)
    with lease:
        assert lease.renew()
        take_over_now = True
        assert lease.renew()  # it checked before the takeover, so it renewed
        assert not take_over_now
        # The renewal did not overwrite the other run's lease ...
        assert json.loads((directory / LEASE_FILE).read_text())["holder"]["host"] == "another-host"
        # ... and the next heartbeat finds it lost.
        assert not lease.renew() and lease.lost
        assert lease.lost_reason == (f"the lease on {directory} was taken over by host another-host pid 4242 "
                                     "while this run held it")
    assert json.loads((directory / LEASE_FILE).read_text())["holder"]["host"] == "another-host"


# ------------------------------------------------- the real job, nightly


def run_generate(*args: str) -> tuple[int, str]:
    """jobs.generate.main in this process, on the test session's Ray; (exit code, stdout + stderr)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = generate.main(list(args))
    return code, out.getvalue() + err.getvalue()


TINY = ("--num-samples", "120", "--chain-length", "8", "--shard-chains", "40", "--num-actors", "1", "--quiet")


def test_nightly_job_on_s3(ray_session, tiny_model, s3_base, tmp_path: Path) -> None:
    prefix, query = s3_base
    root = f"{prefix}/job?{query}"
    common = ("--nightly", "--keep", "1", "--model", str(tiny_model), "--output", root, *TINY)
    code, text = run_generate("--date", "2031-01-01", *common)
    assert code == 0, text
    first = RunStore(child_uri(root, "date=2031-01-01"))
    assert first.exists(SUCCESS) and first.list("proposals") == []
    manifest = first.read_json(MANIFEST)
    # The manifest names no deleted shard, and a re-pick says why it cannot run.
    assert manifest["proposals_deleted"] == 3 and not [p for p in manifest["files"] if p.startswith("proposals/")]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert repick.main(["--from", first.uri, "--output", str(tmp_path / "repicked"), "--quiet"]) == 2
    assert "deleted when its nightly run finished" in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1
    assert prefix.split("//", 1)[1].split("@", 1)[0] not in err.getvalue()
    assert manifest["identity"]["sampling.seed"] == date_seed(0, D1)
    assert sum(first.read_table(p).num_rows for p in first.list("samples")) == 120
    assert latest_of(root)["date"] == "2031-01-01"
    # The URI's credentials are in no output line and no file the run writes.
    secret = prefix.split("//", 1)[1].split("@", 1)[0]
    assert ":" in secret and secret not in text, text
    recorded = [first.read_bytes(p) for p in (RUN_CONFIG, MANIFEST)]
    recorded.append(json.dumps(latest_of(root)).encode())
    assert not [body for body in recorded if secret.encode() in body]
    assert "***@" in first.read_json(RUN_CONFIG)["config"]["output"]["output"]

    code, text = run_generate("--date", "2031-01-01", *common)
    assert code == 0 and "already complete" in text, text
    assert first.read_json(MANIFEST) == manifest

    code, text = run_generate("--date", "2031-01-02", *common)
    assert code == 0, text
    assert latest_of(root)["date"] == "2031-01-02"
    assert NightlyRoot(root).dates() == [D2] and "removed date=2031-01-01 (--keep 1)" in text


def test_nightly_job_on_a_file_uri_keeps_proposals_on_request(ray_session, tiny_model, tmp_path: Path) -> None:
    root = (tmp_path / "nightly").as_uri()
    args = ("--nightly", "--date", "2031-01-01", "--keep-proposals", "--seed", "3", "--model", str(tiny_model),
            "--output", root, *TINY)
    code, text = run_generate(*args)
    assert code == 0, text
    day = tmp_path / "nightly" / "date=2031-01-01"
    assert (day / SUCCESS).exists() and len(list((day / "proposals").iterdir())) == 3
    assert json.loads((day / MANIFEST).read_text())["identity"]["sampling.seed"] == 3  # given, not derived
    assert not (day / LEASE_FILE).exists() and not (day / f"{LEASE_FILE}.lock").exists()
    code, text = run_generate(*args)
    assert code == 0 and "already complete" in text

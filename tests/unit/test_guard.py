"""run_guarded with a stand-in run: the nightly layout, latest.json and retention on a local path,
a file:// URI and S3 (a moto server on loopback), refusals, and the lease a run holds while it writes.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

from mhgan_dist.errors import ConfigError, OutputError, StageError
from mhgan_dist.run.config import build_job_config
from mhgan_dist.run.guard import run_guarded
from mhgan_dist.run.lease import LEASE_FILE, RunLease
from mhgan_dist.run.nightly import LATEST, NightlyOptions, NightlyRoot, date_seed
from mhgan_dist.run.record import MANIFEST, RUN_CONFIG, SUCCESS
from mhgan_dist.run.store import RunStore, part_path, redact_uri, shard_path

D1, D2, D3 = dt.date(2031, 1, 1), dt.date(2031, 1, 2), dt.date(2031, 1, 3)


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


def fake_run(calls: list[str], fail: bool = False, during: Callable[[str], None] | None = None) -> Callable:
    """Stands in for run_job: writes a minimal complete run (shard, samples, manifest, _SUCCESS).

    ``during`` is called with the run directory once the run has started writing.
    """

    def run(job) -> FakeSummary:
        calls.append(job.output.output)
        store = RunStore(job.output.output)
        if store.exists(SUCCESS):
            return FakeSummary(store.uri, "already complete")
        store.write_json(RUN_CONFIG, {"seed": job.sampling.seed})
        if during is not None:
            during(job.output.output)
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


def single(output: str, run: Callable) -> list[str]:
    return run_guarded(build_job_config({"output": output}), run, say=lambda _: None).lines()


def latest_of(root: str) -> dict:
    return RunStore(root).read_json(LATEST)


# ------------------------------------------------------------ the nightly layout


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
        single(root, fake_run([]))
    single_run = str(tmp_path / "single")
    single(single_run, fake_run([]))
    with pytest.raises(OutputError, match="holds a single run"):
        nightly(single_run, D1, fake_run([]))


# ------------------------------------------------------------ storage kinds


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


def test_no_lease_on_object_stores_is_said(s3_base: tuple[str, str]) -> None:
    prefix, query = s3_base
    said: list[str] = []
    config = build_job_config({"output": f"{prefix}/no-lease?{query}"})
    run_guarded(config, fake_run([]), nightly=NightlyOptions(D1), say=said.append)
    assert said == [f"note: no lease on s3://***@mhgan-test/no-lease/date=2031-01-01?{query}: object stores have no "
                    "exclusive create through pyarrow, so the scheduler must not start two runs of one date "
                    "(see cluster/README.md)"]
    assert not RunStore(f"{prefix}/no-lease/date=2031-01-01?{query}").exists(LEASE_FILE)


# ------------------------------------------------------------ the lease


@pytest.mark.parametrize("kind", ["single", "nightly"])
def test_a_run_holds_the_lease_while_it_writes_and_releases_it_however_it_ends(tmp_path: Path, kind: str) -> None:
    refusals: list[str] = []

    def rival(directory: str) -> None:
        assert os.path.exists(os.path.join(directory, LEASE_FILE))
        with pytest.raises(OutputError) as refused:
            RunLease(directory, say=lambda _: None).acquire()
        refusals.append(str(refused.value))

    def guarded(output: Path, run: Callable) -> Path:
        """Runs ``run`` guarded on ``output``; the run directory it writes."""
        if kind == "single":
            single(str(output), run)
            return output
        nightly(str(output), D1, run)
        return output / "date=2031-01-01"

    done = guarded(tmp_path / "ok", fake_run([], during=rival))
    with pytest.raises(StageError):
        guarded(tmp_path / "failed", fake_run([], fail=True, during=rival))
    failed = tmp_path / "failed" / ("date=2031-01-01" if kind == "nightly" else "")
    assert refusals == [f"{os.path.normpath(directory)} is being written by another run "
                        f"(host {socket.gethostname()}, pid {os.getpid()}); wait for that run or re-run this one later"
                        for directory in (done, failed)]
    assert (done / SUCCESS).exists() and not (done / LEASE_FILE).exists() and not (failed / LEASE_FILE).exists()


def test_a_complete_run_is_recognised_while_another_holds_its_lease(tmp_path: Path) -> None:
    # Recognising a finished run writes nothing, so it needs no lease.
    single(str(tmp_path / "run"), fake_run([]))
    with RunLease(str(tmp_path / "run"), say=lambda _: None):
        assert single(str(tmp_path / "run"), fake_run([]))[0].startswith("already complete")

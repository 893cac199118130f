"""Nightly runs of the real job on a local Ray: on S3 (a moto server on loopback) and a file:// URI,
and a run refused while another process holds its lease.

What the nightly schedule, the guard and the lease do on their own is tested in
tests/unit (test_nightly_schedule.py, test_guard.py, test_lease.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs import generate, repick
from mhgan_dist.run.lease import LEASE_FILE
from mhgan_dist.run.nightly import LATEST, NightlyRoot, child_uri, date_seed
from mhgan_dist.run.record import MANIFEST, RUN_CONFIG, SUCCESS
from mhgan_dist.run.store import RunStore

REPO = Path(__file__).resolve().parents[2]
D1, D2 = dt.date(2031, 1, 1), dt.date(2031, 1, 2)

# Holds the lease on argv[1] until its stdin closes.
HOLDER = ("import sys; from mhgan_dist.run.lease import RunLease; RunLease(sys.argv[1]).acquire(); "
          "print('held', flush=True); sys.stdin.read()")


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen]:
    """Another process holding the lease on OUTPUT/date=2031-01-01 of tmp_path/nightly."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "nightly" / "date=2031-01-01")], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_a_live_holder_in_another_process_refuses_the_run(tmp_path: Path, holder, capsys) -> None:
    code = generate.main(["--nightly", "--date", "2031-01-01", "--output", str(tmp_path / "nightly"),
                          "--num-samples", "10"])
    err = capsys.readouterr().err
    assert code == 2 and "is being written by another run" in err and f"pid {holder.pid})" in err
    assert "Traceback" not in err and err.count("\n") == 1  # one sentence


def latest_of(root: str) -> dict:
    return RunStore(root).read_json(LATEST)


# ------------------------------------------------- the real job, nightly


def run_generate(*args: str) -> tuple[int, str]:
    """jobs.generate.main in this process, on the test session's Ray; (exit code, stdout + stderr)."""
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
    assert not (day / LEASE_FILE).exists()
    code, text = run_generate(*args)
    assert code == 0 and "already complete" in text

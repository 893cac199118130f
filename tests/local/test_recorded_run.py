"""A run recorded by an earlier release stays readable, re-pickable and resumable.

``tests/data/grid2d-run-853c64b`` was made by the code at commit 853c64b (before the run
record had a module of its own) with::

    python -m jobs.generate --model grid2d --num-samples 200 --chain-length 20 --seed 7 \
        --num-actors 1 --shard-chains 100 --quiet --output RUN
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from jobs import generate, repick
from mhgan_dist.run.record import read_run
from tests.conftest import assert_same_rows, read_samples

RECORDED = Path(__file__).resolve().parents[1] / "data" / "grid2d-run-853c64b"
FLAGS = ["--model", "grid2d", "--num-samples", "200", "--chain-length", "20", "--seed", "7", "--num-actors", "1",
         "--shard-chains", "100", "--quiet"]


def _copy(tmp_path: Path) -> Path:
    run = tmp_path / "recorded"
    shutil.copytree(RECORDED, run)
    return run


def _contents(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_the_record_of_an_earlier_release_reads_as_typed_values():
    run = read_run(str(RECORDED), complete=True)
    assert run.identity.seed == 7 and run.identity.source_run is None
    assert run.identity.run_id == json.loads((RECORDED / "manifest.json").read_text())["run_id"]
    assert run.identity.resources.batch_size > 0 and run.identity.resources.precision == "fp32"
    assert (run.layout.shard_chains, run.layout.chain_proposals, run.layout.num_chains) == (100, 20, 200)
    assert sorted(p for p in run.files if p.startswith("samples/")) == [
        "samples/part-000000.parquet", "samples/part-000001.parquet"]
    assert run.stats["num_samples"] == 200


def test_the_same_command_on_an_earlier_releases_finished_run_is_a_no_op(ray_session, tmp_path, capsys):
    run = _copy(tmp_path)
    before = _contents(run)
    assert generate.main([*FLAGS, "--output", str(run)]) == 0
    assert "already complete" in capsys.readouterr().out
    assert _contents(run) == before


def test_an_earlier_releases_run_resumes_to_the_same_rows(ray_session, tmp_path):
    run = _copy(tmp_path)
    (run / "_SUCCESS").unlink()
    (run / "samples" / "part-000001.parquet").unlink()
    assert generate.main([*FLAGS, "--output", str(run)]) == 0
    recorded = json.loads((RECORDED / "manifest.json").read_text())["files"]
    resumed = json.loads((run / "manifest.json").read_text())["files"]
    for part in ("samples/part-000000.parquet", "samples/part-000001.parquet"):
        assert resumed[part]["sha256"] == recorded[part]["sha256"]
    assert_same_rows(RECORDED, run)


def test_an_earlier_releases_run_re_picks_with_todays_code(ray_session, tmp_path):
    run = _copy(tmp_path)
    same = tmp_path / "same"
    assert repick.main(["--from", str(run), "--output", str(same), "--num-actors", "1", "--quiet"]) == 0
    assert_same_rows(RECORDED, same)  # the same picker and settings on the same proposals: the same rows
    drs = tmp_path / "drs"
    assert repick.main(["--from", str(run), "--output", str(drs), "--picker", "drs", "--num-actors", "1",
                        "--quiet"]) == 0
    picked = read_samples(drs)
    assert picked["sample_id"].tolist() == list(range(200))
    # DRS picks one of each chain's own 20 proposals, from the recorded shards.
    np.testing.assert_array_equal(picked["proposal_index"] // 20, np.arange(200))
    assert read_run(str(drs), complete=True).identity.source_run == str(run)

"""The Ray job end to end, as a user runs it, on a real local Ray."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from scipy import stats

from jobs import generate
from mhgan_dist.run import schema
from tests.conftest import read_samples

SMALL = ["--num-samples", "300", "--chain-length", "32", "--shard-chains", "128", "--quiet"]


@pytest.fixture(scope="module")
def grid_runs(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    runs = {}
    for picker in ("mh", "drs", "base"):
        out = root / picker
        assert generate.main(["--model", "grid2d", "--picker", picker, "--output", str(out), *SMALL]) == 0
        runs[picker] = out
    return runs


@pytest.mark.parametrize("picker", ["mh", "drs", "base"])
def test_each_picker_writes_the_exact_rows_and_schema(grid_runs, picker):
    out = grid_runs[picker]
    assert (out / "_SUCCESS").exists()
    files = sorted((out / "samples").glob("*.parquet"))
    assert [f.name for f in files] == ["part-000000.parquet", "part-000001.parquet", "part-000002.parquet"]
    table = pq.read_table(out / "samples")
    assert table.num_rows == 300
    ids = table.column("sample_id").to_numpy()
    assert np.array_equal(np.sort(ids), np.arange(300))
    assert np.array_equal(ids, table.column("chain_id").to_numpy())
    sample_type = table.schema.field("sample").type
    assert isinstance(sample_type, pa.FixedShapeTensorType) and sample_type.shape == [2]
    assert sample_type.value_type == pa.float32()
    assert table.schema.field("d_score_raw").type == pa.float32()
    p = table.column("d_score_calibrated").to_numpy()
    assert ((p > 0) & (p < 1)).all()
    restarted = table.column("restarted").to_numpy()
    if picker != "mh":
        assert not restarted.any()
    proposal = table.column("proposal_index").to_numpy()
    assert ((proposal >= ids * 32) & (proposal < (ids + 1) * 32)).all()
    if picker == "base":
        assert np.array_equal(proposal, ids * 32)
    meta = schema.read_metadata(pq.read_schema(files[0]))
    assert meta["picker"] == picker and meta["chain_length"] == 32 and meta["sample_shape"] == [2]
    assert {"run_id", "model_fingerprint", "calibration_id", "value_range"} <= meta.keys()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["stats"]["num_samples"] == 300
    recorded = manifest["files"]
    assert sum(recorded[f"samples/{f.name}"]["rows"] for f in files) == 300
    assert manifest["config"]["sampling"]["picker"] == picker
    assert {"calibration_s", "pipeline_s", "total_s"} <= manifest["timings"].keys()
    assert "before" in manifest["calibration"]["diagnostics"]


def test_the_pickers_see_the_same_proposals(grid_runs):
    # Proposal shards are a function of (seed, index) only: identical across pickers.
    for shard in sorted((grid_runs["mh"] / "proposals").glob("*.parquet")):
        assert pq.read_table(shard).equals(pq.read_table(grid_runs["base"] / "proposals" / shard.name))
    base = read_samples(grid_runs["base"])
    mh = read_samples(grid_runs["mh"])
    moved = mh["proposal_index"] != base["proposal_index"]
    assert moved.mean() > 0.5  # MH mostly leaves the first proposal


def test_readers_see_the_output(grid_runs):
    import duckdb
    import pandas as pd
    import ray

    out = grid_runs["mh"]
    frame = pd.read_parquet(out / "samples")
    assert len(frame) == 300 and frame["sample_id"].is_unique
    assert len(frame["sample"].iloc[0]) == 2
    con = duckdb.connect()
    count, distinct = con.execute(
        f"select count(*), count(distinct sample_id) from read_parquet('{out}/samples/*.parquet')"
    ).fetchone()
    assert count == distinct == 300
    ds = ray.data.read_parquet(str(out / "samples"))
    assert ds.count() == 300
    batch = ds.take_batch(5, batch_format="numpy")
    assert batch["sample"].shape == (5, 2)


class _Shift(torch.nn.Module):
    def forward(self, z):
        return z  # G: the standard normal


class _ExactLogit(torch.nn.Module):
    def forward(self, x):
        # log N(x; 1, 1) - log N(x; 0, 1): D's log-odds for data N(1, 1) against G.
        return (x - 0.5)[:, 0]


def _export(module, example, path):
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))


def test_exact_discriminator_mh_matches_the_data_and_base_the_generator(ray_session, tmp_path):
    _export(_Shift(), torch.zeros(4, 1), tmp_path / "g.pt2")
    _export(_ExactLogit(), torch.zeros(4, 1), tmp_path / "d.pt2")
    real = np.random.default_rng(5).normal(1.0, 1.0, size=(4000, 1)).astype(np.float32)
    np.save(tmp_path / "real.npy", real)
    common = ["--generator", str(tmp_path / "g.pt2"), "--discriminator", str(tmp_path / "d.pt2"),
              "--real", str(tmp_path / "real.npy"), "--calibration", "none", "--num-samples", "2000",
              "--chain-length", "100", "--seed", "3", "--quiet"]
    assert generate.main([*common, "--picker", "mh", "--output", str(tmp_path / "mh")]) == 0
    assert generate.main([*common, "--picker", "base", "--output", str(tmp_path / "base")]) == 0
    mh = read_samples(tmp_path / "mh")["sample"][:, 0]
    base = read_samples(tmp_path / "base")["sample"][:, 0]
    data, generator = stats.norm(1.0, 1.0).cdf, stats.norm(0.0, 1.0).cdf
    # Significance 1e-3 for the right distribution; the wrong one (a shift of one
    # standard deviation, KS distance 0.38) is rejected far beyond it at n = 2000.
    assert stats.kstest(mh, data).pvalue > 1e-3
    assert stats.kstest(mh, generator).pvalue < 1e-20
    assert stats.kstest(base, generator).pvalue > 1e-3
    assert stats.kstest(base, data).pvalue < 1e-20


def test_rows_do_not_depend_on_the_torch_thread_count(ray_session, tmp_path, capsys):
    """--torch-threads is a resource, not part of the run's identity: a convolutional G and D on 1 and on
    2 threads per actor must give bit-identical proposal scores and output rows."""
    from tests.conftest import assert_same_rows

    runs = {}
    for threads in (1, 2):
        out = tmp_path / f"threads-{threads}"
        capsys.readouterr()
        assert generate.main(["--model", "digits", "--num-samples", "96", "--chain-length", "24", "--shard-chains",
                              "32", "--seed", "3", "--batch-size", "512", "--num-actors", "1", "--torch-threads",
                              str(threads), "--output", str(out), "--quiet"]) == 0
        assert f"{threads} torch thread(s) each" in capsys.readouterr().err  # the actor did run on that many
        runs[threads] = out
    assert_same_rows(runs[1], runs[2])
    for shard in sorted((runs[1] / "proposals").glob("*.parquet")):
        assert pq.read_table(shard).equals(pq.read_table(runs[2] / "proposals" / shard.name)), shard.name

"""Thinned chains through the job (`--thin T|auto`), on a real local Ray.

The model is the exact-discriminator 1-D problem: G draws N(0, 1), the data is
N(1, 1), and D returns the exact log-odds x - 1/2, so with ``--calibration
none`` the chains' target is the data distribution.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from scipy import stats

from jobs import generate, repick
from mhgan_dist.run import schema
from mhgan_dist.run.config import THINNING_OPTIONS
from tests.conftest import assert_same_rows, read_samples
from tests.local.test_generate import _ExactLogit, _export, _Shift
from tests.unit.test_thinning import ks_threshold_for_chains

NUM_SAMPLES = 2000
PER_CHAIN = 16  # 125 chains: enough independent units for the per-chain standard errors
ALPHA = 1e-3


@pytest.fixture(scope="module")
def exact_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("exact")
    _export(_Shift(), torch.zeros(4, 1), root / "g.pt2")
    _export(_ExactLogit(), torch.zeros(4, 1), root / "d.pt2")
    np.save(root / "real.npy", np.random.default_rng(5).normal(1.0, 1.0, size=(4000, 1)).astype(np.float32))
    return root


def flags(model, *extra):
    return ["--generator", str(model / "g.pt2"), "--discriminator", str(model / "d.pt2"),
            "--real", str(model / "real.npy"), "--calibration", "none", "--seed", "3", "--quiet",
            "--num-samples", str(NUM_SAMPLES), "--outputs-per-chain", str(PER_CHAIN), *extra]


@pytest.fixture(scope="module")
def auto_run(ray_session, exact_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("auto") / "run"
    assert generate.main([*flags(exact_model, "--thin", "auto", "--num-actors", "1"), "--output", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def thin2_run(ray_session, exact_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("thin2") / "run"
    assert generate.main([*flags(exact_model, "--thin", "2", "--num-actors", "1", "--shard-chains", "32"),
                          "--output", str(out)]) == 0
    return out


def manifest(run):
    return json.loads((run / "manifest.json").read_text())


def test_outputs_are_laid_out_by_chain_and_slot(auto_run, exact_model):
    m = manifest(auto_run)
    thin = m["thinning"]["thin"]
    rows = read_samples(auto_run)
    per_chain = PER_CHAIN
    assert np.array_equal(rows["sample_id"], np.arange(NUM_SAMPLES))
    assert np.array_equal(rows["chain_id"], rows["sample_id"] // per_chain)
    slot = rows["sample_id"] % per_chain
    assert np.array_equal(rows["emit_step"], (slot + 1) * thin - 1)
    length = per_chain * thin
    assert m["layout"]["chain_proposals"] == length
    # Each output is a proposal of its own chain, emitted at or before its step.
    offset = rows["proposal_index"] - rows["chain_id"] * length
    assert ((offset >= 0) & (offset <= rows["emit_step"])).all()
    # A repeat is exactly an output equal to its chain's previous one.
    same_as_previous = np.zeros(NUM_SAMPLES, dtype=bool)
    same_as_previous[1:] = (rows["proposal_index"][1:] == rows["proposal_index"][:-1]) & (slot[1:] > 0)
    assert np.array_equal(rows["repeat"], same_as_previous)
    assert not rows["repeat"][slot == 0].any()
    # No real starting sample is ever emitted: every sample is G of its proposal's latent, not a real row.
    real = np.load(exact_model / "real.npy")[:, 0]
    assert not np.isin(rows["sample"][:, 0], real).any()
    meta = schema.read_metadata(pq.read_schema(next((auto_run / "samples").glob("*.parquet"))))
    assert meta["thin"] == thin and meta["outputs_per_chain"] == per_chain and meta["chain_length"] == length


def test_auto_thin_keeps_the_repeat_share_within_the_budget(auto_run):
    t = manifest(auto_run)["thinning"]
    assert t["requested"] == "auto" and t["repeat_budget"] == 0.01
    assert t["expected"]["share"] <= 0.01
    observed = t["observed"]
    assert observed["repeat_share"] <= 0.01 + 3 * observed["repeat_share_se"]
    assert t["proposals_per_output"] == pytest.approx(t["thin"] * -(-NUM_SAMPLES // PER_CHAIN) * PER_CHAIN
                                                      / NUM_SAMPLES)
    # A smaller T would break the budget: auto chose the smallest that keeps it (the exact
    # problem needs more than one step per output at 1%).
    assert t["thin"] > 1


def test_thinned_outputs_follow_the_data_distribution(auto_run):
    values = read_samples(auto_run)["sample"][:, 0].astype(np.float64).reshape(-1, PER_CHAIN)
    data = stats.norm(1.0, 1.0).cdf
    threshold, ess = ks_threshold_for_chains(values, data, ALPHA)
    assert stats.kstest(values.reshape(-1), data).statistic < threshold
    # The test has power: the generator's distribution is rejected far beyond it.
    assert stats.kstest(values.reshape(-1), stats.norm(0.0, 1.0).cdf).statistic > 5 * threshold


def test_observed_repeat_share_matches_the_expected_one_within_per_chain_error(thin2_run):
    t = manifest(thin2_run)["thinning"]
    assert t["thin"] == 2 and t["requested"] == 2
    observed, expected = t["observed"], t["expected"]
    assert observed["chains"] == -(-NUM_SAMPLES // PER_CHAIN)
    assert observed["repeats"] > 50  # at T = 2 repeats are common, so the comparison has power
    # Restarted chains repeat less than stationary ones until those move: the expected
    # share lies in [expected_low, expected share], each estimated from the pilot draws.
    se = np.hypot(observed["repeat_share_se"], expected["at_target_se"])
    assert 0.2 < t["expected_low"] < expected["share"]  # at T = 2 the interval is wide
    assert t["expected_low"] - 3 * se <= observed["repeat_share"] <= expected["share"] + 3 * se
    assert t["excess_z"] <= 3


def test_same_rows_whatever_the_actors_and_file_layout(thin2_run, exact_model, tmp_path):
    out = tmp_path / "two"
    assert generate.main([*flags(exact_model, "--thin", "2", "--num-actors", "2", "--shard-chains", "32"),
                          "--output", str(out)]) == 0
    assert_same_rows(thin2_run, out)


def test_repick_into_thinned_chains_equals_a_fresh_run(thin2_run, exact_model, tmp_path):
    # 992 samples: 62 chains of 16 x 4 proposals fit in the source's 125 x 16 x 2 = 4,000.
    fresh, repicked = tmp_path / "fresh", tmp_path / "repicked"
    assert generate.main([*flags(exact_model, "--thin", "4", "--num-actors", "1"), "--num-samples", "992",
                          "--output", str(fresh)]) == 0
    assert repick.main(["--from", str(thin2_run), "--output", str(repicked), "--thin", "4",
                        "--num-samples", "992", "--quiet"]) == 0
    assert_same_rows(fresh, repicked)
    assert not (repicked / "proposals").exists()


def test_interrupted_auto_run_resumes_to_the_same_rows(auto_run, exact_model, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    args = [*flags(exact_model, "--thin", "auto", "--num-actors", "1"), "--output", str(out)]
    monkeypatch.setenv("MHGAN_FAULTS", "materialise:0:always:raise")
    monkeypatch.setenv("MHGAN_FAULTS_STATE", str(tmp_path / "faults"))
    assert generate.main(args) == 2
    assert not (out / "_SUCCESS").exists()
    monkeypatch.delenv("MHGAN_FAULTS")
    assert generate.main(args) == 0
    assert_same_rows(auto_run, out)
    assert manifest(out)["thinning"]["thin"] == manifest(auto_run)["thinning"]["thin"]


@pytest.mark.parametrize("extra, words", [
    (["--thin", "0"], "--thin must be an integer >= 1 or auto"),
    (["--thin", "often"], "--thin must be an integer >= 1 or auto"),
    (["--thin", "4", "--picker", "drs"], "cannot be used with --picker drs"),
    (["--thin", "auto", "--repeat-budget", "1.5"], "--repeat-budget must be in (0, 1)"),
    (["--thin", "4", "--outputs-per-chain", "0"], "--outputs-per-chain must be at least 1"),
])
def test_bad_thinning_options_are_one_clear_error(extra, words, tmp_path, capsys):
    assert generate.main(["--output", str(tmp_path / "run"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]
    assert not (tmp_path / "run").exists()


def test_thin_from_a_config_file(tmp_path):
    (tmp_path / "job.toml").write_text('thin = 8\noutputs_per_chain = 32\noutput = "x"\n')
    config, _ = generate.parse_job_config(["--config", str(tmp_path / "job.toml")])
    assert config.sampling.thin == 8 and config.sampling.outputs_per_chain == 32
    independent = generate.parse_job_config(["--output", "x"])[0]
    # Runs of the paper's mode keep the identity they had before thinning existed.
    identity = independent.run_identity(batch_size=1, precision="fp32", model_fingerprint="f")
    assert not {f"sampling.{name}" for name in THINNING_OPTIONS} & set(identity)


def test_dry_run_reports_the_t_a_run_would_choose(auto_run, exact_model, tmp_path, capsys):
    out = tmp_path / "dry"
    capsys.readouterr()
    assert generate.main([*flags(exact_model, "--thin", "auto", "--num-actors", "1", "--dry-run"),
                          "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    thin = manifest(auto_run)["thinning"]["thin"]
    assert f"thinned chains: T={thin}" in printed
    assert f"dry run: {-(-NUM_SAMPLES // PER_CHAIN) * PER_CHAIN * thin:,} proposals" in printed
    assert not out.exists()

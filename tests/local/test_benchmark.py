"""The benchmark harness runs from its command line and reports what issue #8 asks for.

Only the harness is checked here (a tiny run): speed is measured by the benchmark
itself and written to BENCHMARKS.md, never asserted in a timed test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pipeline_benchmark_reports_ratios_bytes_memory_and_both_actor_counts(tmp_path):
    out_json, out_md = tmp_path / "bench.json", tmp_path / "BENCH.md"
    out_md.write_text("# Benchmarks\n")
    done = subprocess.run(
        [sys.executable, "-m", "jobs.benchmark", "pipeline", "--model", "grid2d", "--seconds", "2",
         "--chain-length", "64", "--workdir", str(tmp_path / "runs"), "--json", str(out_json),
         "--markdown", str(out_md)],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out_json.read_text())
    brackets = result["bare"]  # before, between and after the two jobs
    assert len(brackets) == 3 and len({frozenset(b) for b in brackets}) == 1 and len(brackets[0]) >= 2
    best = result["bare_best_proposals_per_s"]
    assert best == max(rate for bracket in brackets for rate in bracket.values())
    assert [job["num_actors"] for job in result["jobs"]] == [1, 2]
    for i, job in enumerate(result["jobs"]):
        bare = max((brackets[i][k] + brackets[i + 1][k]) / 2 for k in brackets[0])
        assert abs(job["bare_bracket_proposals_per_s"] - bare) < 1e-9 and bare <= best
        assert job["proposals"] == result["num_samples"] * 64
        assert abs(job["end_to_end_ratio"] - job["end_to_end_proposals_per_s"] / bare) < 1e-9
        assert abs(job["end_to_end_ratio_to_best"] - job["end_to_end_proposals_per_s"] / best) < 1e-9
        assert 0 < job["end_to_end_ratio"] < job["steady_ratio"] + 1e-9  # start-up only ever lowers it
        assert 4.0 <= job["bytes_per_proposal"] <= 8.0  # the default store: one float32 score per proposal
        assert all(mib > 50 for mib in job["peak_rss_mib"].values())
    assert result["chain_kernel_proposals_per_s"] > 0
    printed = done.stdout
    assert "steady-state ratio to bare" in printed and "end-to-end ratio to bare" in printed
    markdown = out_md.read_text()
    assert "Command: `python -m jobs.benchmark pipeline --model grid2d --seconds 2" in markdown
    assert "2 actor(s) x 1 thread(s): bytes on disk per proposal" in markdown


def test_worker_benchmark_alternates_bare_and_actor_code(tmp_path):
    out_json, out_md = tmp_path / "bench.json", tmp_path / "BENCH.md"
    done = subprocess.run(
        [sys.executable, "-m", "jobs.benchmark", "worker", "--model", "grid2d", "--seconds", "0.5",
         "--rounds", "2", "--workdir", str(tmp_path / "w"), "--json", str(out_json), "--markdown", str(out_md)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out_json.read_text())
    assert len(result["bare"]) == len(result["worker"]) == 2 and min(result["bare"] + result["worker"]) > 0
    assert abs(result["ratio"] - sum(result["worker"]) / sum(result["bare"])) < 1e-9
    assert result["latent_dim"] == 2 and result["latent_rows_per_s"] > 0
    assert "ProposalWorker scoring, each round" in done.stdout
    assert "Command: `python -m jobs.benchmark worker --model grid2d" in out_md.read_text()


def test_default_benchmark_runs_the_job_without_flags_between_bare_sweeps(tmp_path):
    out_json, out_md = tmp_path / "bench.json", tmp_path / "BENCH.md"
    done = subprocess.run(
        [sys.executable, "-m", "jobs.benchmark", "default", "--model", "grid2d", "--minutes", "0.01",
         "--chain-length", "64", "--bare-seconds", "0.3", "--workdir", str(tmp_path / "d"),
         "--json", str(out_json), "--markdown", str(out_md)],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out_json.read_text())
    brackets = result["bare"]  # before and after the one job
    assert len(brackets) == 2 and set(brackets[0]) == set(brackets[1])
    assert {key.rsplit(", batch ", 1)[1] for key in brackets[0]} == {"128", "256", "512"}
    (job,) = result["jobs"]
    assert "--num-actors" not in job["command"] and "--batch-size" not in job["command"]
    assert job["proposals"] == job["num_samples"] * 64
    rate, layout = job["bare_bracket_best"]
    assert rate == max((brackets[0][k] + brackets[1][k]) / 2 for k in brackets[0]) and layout in brackets[0]
    assert abs(job["ratio"] - job["end_to_end_proposals_per_s"] / rate) < 1e-9
    # grid2d has no convolutions: its loop has one memory format, so the plain loop is the best loop.
    assert not any("NHWC" in key for key in brackets[0]) and job["ratio_to_plain"] == job["ratio"]
    assert "proposal actor(s)" in job["layout"]
    assert "ratio to the best bare loop" in out_md.read_text()


def test_worker_benchmark_defaults_to_the_jobs_own_batch(tmp_path):
    # The job's actors run 28x28 images at 256 per pass on CPU (devices.default_batch_size), not the 4,096
    # of 2-D samples: the benchmark measures what they run.
    import torch

    from mhgan_dist.pipeline.devices import default_batch_size

    out_json = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "jobs.benchmark", "worker", "--model", "fashion", "--seconds", "0.2",
         "--rounds", "1", "--workdir", str(tmp_path / "w"), "--json", str(out_json)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads(out_json.read_text())["batch_size"] == default_batch_size(torch.device("cpu"), 28 * 28) == 256


def test_the_bare_sweep_tries_channels_last_for_image_models_only():
    from mhgan_dist.studies.benchmark import is_image_model

    assert is_image_model("fashion") and is_image_model("digits")
    assert not is_image_model("grid2d") and not is_image_model("mixture1d")


def test_the_pipeline_benchmark_defaults_to_the_jobs_own_cpu_batch():
    import torch

    from mhgan_dist.pipeline.devices import default_batch_size
    from mhgan_dist.studies.benchmark import default_bench_batch_size

    assert default_bench_batch_size("fashion", "cpu") == default_batch_size(torch.device("cpu"), 28 * 28) == 256
    assert default_bench_batch_size("grid2d", "cpu") == default_batch_size(torch.device("cpu"), 2)

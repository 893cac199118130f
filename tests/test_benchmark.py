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
    bare = result["bare_proposals_per_s"]
    assert bare == max(*result["bare_before"].values(), *result["bare_after"].values())
    assert set(result["bare_before"]) == set(result["bare_after"]) and len(result["bare_before"]) >= 2
    assert [job["num_actors"] for job in result["jobs"]] == [1, 2]
    for job in result["jobs"]:
        assert job["proposals"] == result["num_samples"] * 64
        assert abs(job["end_to_end_ratio"] - job["end_to_end_proposals_per_s"] / bare) < 1e-9
        assert 0 < job["end_to_end_ratio"] < job["steady_ratio"] + 1e-9  # start-up only ever lowers it
        assert 4.0 <= job["bytes_per_proposal"] <= 8.0  # the default store: one float32 score per proposal
        assert all(mib > 50 for mib in job["peak_rss_mib"].values())
    assert result["chain_kernel_proposals_per_s"] > 0
    printed = done.stdout
    assert "steady-state ratio to bare" in printed and "end-to-end ratio to bare" in printed
    markdown = out_md.read_text()
    assert "Command: `python -m jobs.benchmark pipeline --model grid2d --seconds 2" in markdown
    assert "2 actor(s) x 1 thread(s): bytes on disk per proposal" in markdown

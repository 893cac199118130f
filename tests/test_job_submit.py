"""`ray job submit --working-dir .` against a real Ray head, as a user runs the job on a cluster."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pyarrow.parquet as pq

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def submit(url, env, *job_args, timeout=600):
    command = ["ray", "job", "submit", "--address", url, "--working-dir", ".", "--", "python", "-m", *job_args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_job_submit_runs_generate_on_the_cluster(ray_head, tmp_path):
    url, env = ray_head
    out = tmp_path / "submitted"
    done = submit(url, env, "jobs.generate", "--model", "grid2d", "--num-samples", "200", "--chain-length", "16",
                  "--output", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "complete: 200 samples" in done.stdout
    assert (out / "_SUCCESS").exists()
    table = pq.read_table(out / "samples")
    assert table.num_rows == 200
    assert np.array_equal(np.sort(table.column("sample_id").to_numpy()), np.arange(200))


def test_job_submit_refuses_a_relative_output(ray_head):
    url, env = ray_head
    done = submit(url, env, "jobs.generate", "--num-samples", "10", "--output", "relative/dir")
    assert done.returncode != 0
    assert "--output 'relative/dir' is relative" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr

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


def test_a_ray_the_job_starts_itself_runs_no_dashboard_and_no_metrics():
    # A private Ray temp dir: no `ray start` head (such as .ci/run's) is found, so init_ray starts its own.
    import shutil
    import sys
    import tempfile

    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths live under it
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": temp_dir}
    code = (
        "import glob, os, ray\n"
        "from jobs.cli import init_ray\n"
        "assert init_ray({'num_cpus': 1})\n"
        "lines = []\n"
        "for path in set(glob.glob('/proc/[0-9]*/cmdline')) - {f'/proc/{os.getpid()}/cmdline'}:\n"
        "    try:\n"
        "        lines.append(open(path, 'rb').read().replace(b'\\0', b' ').decode(errors='replace'))\n"
        "    except OSError:\n"
        "        pass\n"
        f"heads = [line for line in lines if {temp_dir!r} in line and 'dashboard/dashboard.py' in line]\n"
        "print(len(heads), sum('--modules-to-load=' in line for line in heads))\n"
        "ray.shutdown()\n"
        f"raylet_logs = glob.glob(os.path.join({temp_dir!r}, '**', 'session_latest', 'logs', 'raylet.out'), "
        "recursive=True)\n"
        "print(int(any('Disabled stats' in open(path).read() for path in raylet_logs)))\n"
    )
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=300)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    # Ray 2.60 keeps a dashboard head process either way; without the dashboard it loads only the
    # modules named in --modules-to-load (usage stats), not the web UI's.
    heads, restricted, stats_disabled = map(int, done.stdout.split()[-3:])
    assert heads == 1 and restricted == 1
    assert stats_disabled == 1  # no metrics collection: its raylet starts without waiting for the exporter

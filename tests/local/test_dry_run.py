"""`--dry-run` estimates a run's proposals, time and disk use, writes nothing, and its
disk estimate is close to what the same run then writes."""

from __future__ import annotations

import json

from jobs import generate
from mhgan_dist.pipeline.driver import dry_run, run_job


def test_dry_run_estimates_what_the_run_then_uses(ray_session, tiny_model, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--model", str(tiny_model), "--num-samples", "300", "--chain-length", "40", "--num-actors", "1",
            "--batch-size", "256", "--quiet", "--output", str(out)]
    capsys.readouterr()
    assert generate.main([*argv, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "dry run: 12,000 proposals" in printed and "estimated wall time" in printed
    assert not out.exists()

    config, _ = generate.parse_job_config(argv)
    estimate = dry_run(config)
    assert estimate.proposals == 300 * 40
    assert estimate.extra_draws > 0 and estimate.num_actors == 1 and estimate.batch_size == 256
    expected_seconds = (estimate.proposals + estimate.extra_draws) / estimate.proposals_per_s_per_actor
    assert abs(estimate.estimated_seconds - expected_seconds) <= 1e-6 * expected_seconds

    run_job(config, show_progress=False, log=lambda m: None)
    files = json.loads((out / "manifest.json").read_text())["files"]
    written = sum(entry["bytes"] for path, entry in files.items()
                  if path.startswith(("proposals/", "samples/")))
    # Parquet's per-file footers make small runs heavier than the per-row estimate.
    assert 0.5 * written <= estimate.disk_bytes <= 1.5 * written, (estimate.disk_bytes, written)

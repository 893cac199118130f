"""The picker trade-off (jobs.tradeoff): its table, its options and the shipped fashion model's image metrics."""

from __future__ import annotations

import json

import numpy as np


def test_the_tradeoff_job_fast_mode_writes_its_table_and_plot(tmp_path):
    from jobs import tradeoff

    assert tradeoff.main(["--fast", "--output", str(tmp_path), "--quiet"]) == 0
    table = (tmp_path / "tradeoff.md").read_text()
    assert "| thinned | 4 |" in table and "| independent | 40 |" in table
    assert (tmp_path / "tradeoff.png").stat().st_size > 10_000
    assert tradeoff.main(["--problems", "nope", "--output", str(tmp_path), "--quiet"]) == 2


def test_the_tradeoff_job_takes_tempering_clipping_and_the_new_calibrators(tmp_path):
    from jobs import tradeoff

    assert tradeoff.main(["--fast", "--odds-power", "0.5", "--odds-cap-quantile", "0.99", "--output", str(tmp_path),
                          "--quiet"]) == 0
    rows = json.loads((tmp_path / "tradeoff.json").read_text())["rows"]
    assert {r["problem"] for r in rows} == {"exact1d, b=0.5, odds capped at q=0.99"}
    # Tempered toward G = N(0, 1), the chains' outputs are farther from the data N(1, 1) than at b = 1,
    # and nearer than G's own draws (the base rows): the KS distances are ordered with a wide margin.
    k40 = np.mean([r["ks"] for r in rows if r["mode"] == "independent" and r["param"] == 40])
    base = np.mean([r["ks"] for r in rows if r["mode"] == "base"])
    assert 0.1 < k40 < base - 0.1  # KS(N(0.5, 1), N(1, 1)) = 0.197, KS(N(0, 1), N(1, 1)) = 0.383
    for bad in (["--odds-power", "0"], ["--odds-cap-quantile", "1.5"], ["--calibration", "linear"]):
        assert tradeoff.main(["--fast", *bad, "--output", str(tmp_path), "--quiet"]) == 2
    from mhgan_dist.studies.tradeoff import problem_label

    assert problem_label("grid2d", "beta", 0.25) == "grid2d, beta calibration, b=0.25"
    assert problem_label("grid2d", "isotonic-capped") == "grid2d, capped calibration"  # as before
    assert problem_label("grid2d", "isotonic") == "grid2d"


def test_the_tradeoff_job_measures_the_shipped_fashion_model_with_its_image_metrics(tmp_path):
    from jobs import tradeoff

    args = ["--problems", "fashion", "--seeds", "0", "--outputs", "64", "--outputs-per-chain", "8", "--ks", "4,8",
            "--thins", "1,2", "--pilot-draws", "512", "--calibration", "beta", "--odds-power", "0.5",
            "--batch", "512", "--cache", str(tmp_path / "cache"), "--quiet"]
    assert tradeoff.main([*args, "--output", str(tmp_path / "a")]) == 0
    rows = json.loads((tmp_path / "a" / "tradeoff.json").read_text())["rows"]
    by_mode = {(r["mode"], r["param"]) for r in rows}
    assert {("base", 1), ("independent", 4), ("independent", 8), ("thinned", 1), ("thinned", 2)} <= by_mode
    for r in rows:
        assert r["problem"] == "fashion, beta calibration, b=0.5" and r["outputs"] == 64
        assert r["fid"] > 0 and 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1 and r["inception_score"] >= 1
    table = (tmp_path / "a" / "tradeoff.md").read_text()
    assert "classifier-feature FID" in table and "precision" in table and "class-mix JS" in table
    # The cached raw scores give the second run the same rows.
    assert sorted((tmp_path / "cache").glob("fashion-*-seed0-proposals*.npy"))
    assert tradeoff.main([*args, "--output", str(tmp_path / "b")]) == 0
    again = json.loads((tmp_path / "b" / "tradeoff.json").read_text())["rows"]
    assert [(r["mode"], r["param"], r["fid"]) for r in again] == [(r["mode"], r["param"], r["fid"]) for r in rows]

"""The pickers' calibrator and odds options through the jobs, on a real local Ray: the rows are the
numpy pickers' picks on the run's own score files."""

import os

import numpy as np
import pytest

from mhgan_dist.core import pickers
from mhgan_dist.core import streams
from mhgan_dist.core.streams import Stream



def _chain_rows_by_numpy(source, run, picker, k, n):
    """The picks of ``run`` (a re-pick of ``source``) recomputed here from the files and the streams."""
    import pyarrow.parquet as pq

    from mhgan_dist.core import calibrators
    from mhgan_dist.pipeline.calibration import CALIBRATOR_PATH, REPORT_PATH, SCORES_PATH
    from mhgan_dist.pipeline.chains import ProposalLayout, read_scores
    from mhgan_dist.run.record import RUN_CONFIG
    from mhgan_dist.run.store import RunStore

    store, out = RunStore(str(source)), RunStore(str(run))
    identity = store.read_json(RUN_CONFIG)["identity"]
    shard = int(identity["output.shard_chains"]) * int(identity["sampling.chain_length"])
    total = int(identity["sampling.num_samples"]) * int(identity["sampling.chain_length"])
    raw = read_scores(ProposalLayout(store, shard, total), 0, n * k).reshape(n, k)
    calibrator = calibrators.calibrator_from_json(out.read_json(CALIBRATOR_PATH))
    report = out.read_json(REPORT_PATH)
    cap = report.get("odds_cap", {}).get("logit")
    scores = pq.read_table(os.path.join(run, SCORES_PATH))
    labels = scores.column("label").to_numpy()
    real_raw = scores.column("d_score_raw").to_numpy()[labels == 1]
    generated = calibrator.predict_logit(scores.column("d_score_raw").to_numpy()[labels == 0].astype(np.float64))
    logits = calibrator.predict_logit(raw.reshape(-1)).reshape(raw.shape)
    power = float(out.read_json(RUN_CONFIG)["config"]["sampling"]["odds_power"])
    if picker == "mh":
        start = calibrator.predict_logit(
            real_raw[streams.chain_integers(seed := int(identity["sampling.seed"]), Stream.REAL_INIT, 0, n,
                                            real_raw.size)].astype(np.float64))
        result = pickers.mh(logits, start, streams.chain_exponentials(seed, Stream.MH_STEPS, 0, n, k),
                            lambda rows: streams.chain_exponentials_at(seed, Stream.MH_RESTART, rows, k - 1),
                            odds_power=power, odds_cap_logit=cap)
    else:
        seed = int(identity["sampling.seed"])
        pilot = float(calibrator.predict_logit(np.array([report["pilot_max_raw"]]))[0])
        result = pickers.drs(logits, pilot, streams.chain_uniforms(seed, Stream.DRS_STEPS, 0, n, k),
                             odds_power=power, odds_cap_logit=cap)
    return np.arange(n) * k + result.picked, cap, generated


def test_the_jobs_take_the_new_calibrators_and_odds_options(ray_session, tmp_path):
    # Two small runs (each job run starts actors: tens of seconds on a loaded 2-core machine).
    import json

    from jobs import generate, repick
    from tests.conftest import read_samples

    n, k = 240, 24
    source = tmp_path / "source"
    assert generate.main(["--model", "grid2d", "--calibration", "beta", "--odds-power", "0.5",
                          "--odds-cap-quantile", "0.9", "--num-samples", str(n), "--chain-length", str(k),
                          "--shard-chains", "80", "--num-actors", "1", "--quiet", "--output", str(source)]) == 0
    report = json.loads((source / "calibration" / "report.json").read_text())
    assert report["calibrator"]["kind"] == "beta" and report["diagnostics"]["method"] == "beta"
    # Tempered, clipped, beta-calibrated MH, then a Platt-calibrated DRS re-pick with its own options:
    # the jobs' rows are the pickers' picks on the files' scores.
    drs = tmp_path / "drs"
    assert repick.main(["--from", str(source), "--output", str(drs), "--picker", "drs", "--calibration", "platt",
                        "--odds-power", "0.25", "--num-actors", "1", "--quiet"]) == 0
    for run, picker, power, calibrator in ((source, "mh", 0.5, "beta"), (drs, "drs", 0.25, "platt")):
        expected, cap, generated = _chain_rows_by_numpy(source, run, picker, k, n)
        assert cap == pytest.approx(np.quantile(generated, 0.9))  # the source's cap quantile is inherited
        np.testing.assert_array_equal(read_samples(run)["proposal_index"], expected)
        identity = json.loads((run / "manifest.json").read_text())["identity"]
        assert (identity["sampling.odds_power"], identity["sampling.odds_cap_quantile"]) == (power, 0.9)
        assert identity["sampling.calibration"] == calibrator
    # Bad input fails before any chain runs, with exit status 2 and no run left behind.
    assert repick.main(["--from", str(source), "--output", str(tmp_path / "bad"), "--picker", "base",
                        "--odds-power", "0.5", "--quiet"]) == 2
    malformed = tmp_path / "malformed.json"
    malformed.write_text(json.dumps({"kind": "platt", "num_fit": 10, "slope": -1.0, "intercept": 0.0}))
    assert repick.main(["--from", str(source), "--output", str(tmp_path / "bad2"), "--calibration", str(malformed),
                        "--quiet"]) == 2
    assert not (tmp_path / "bad2" / "_SUCCESS").exists()


def test_reproduce_reuses_a_complete_run_recorded_before_the_odds_options(tmp_path):
    import dataclasses
    import json

    from mhgan_dist.errors import ConfigError
    from mhgan_dist.run.record import MANIFEST, RUN_CONFIG, RUN_FORMAT, SUCCESS
    from mhgan_dist.studies.runs import ensure_run, run_config

    config = run_config("grid2d", tmp_path / "run", picker="mh", seed=0, num_samples=16, chain_length=4)
    recorded = dataclasses.asdict(config.sampling)
    del recorded["odds_power"], recorded["odds_cap_quantile"]  # as a run made before they existed recorded it
    (tmp_path / "run").mkdir()
    body = {"format": RUN_FORMAT, "version": 1, "identity": {"sampling.seed": 0}, "config": {"sampling": recorded}}
    (tmp_path / "run" / RUN_CONFIG).write_text(json.dumps(body))
    (tmp_path / "run" / MANIFEST).write_text(json.dumps({**body, "files": {}, "complete": True}))
    (tmp_path / "run" / SUCCESS).write_text("")
    said = []
    ensure_run(config, said.append)  # no Ray: reused as it is
    assert said == [f"reusing the complete run {tmp_path / 'run'}"]
    tempered = run_config("grid2d", tmp_path / "run", picker="mh", seed=0, num_samples=16, chain_length=4,
                          odds_power=0.5)
    with pytest.raises(ConfigError, match="other settings"):
        ensure_run(tempered, said.append)

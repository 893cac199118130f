"""The calibrator study (jobs.reproduce calibrator-study): in-process re-picks equal the pipeline's, the
selection rule, and a resumable results log."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mhgan_dist.studies.calibrator import ResultsLog, Setting, choose_setting, paired_differences, row_key
from tests.conftest import read_samples

# ------------------------------------------------------------------ the selection rule (no Ray)


def _row(d, seed, cal, b, k, fid, method="mh"):
    return {"d": d, "seed": seed, "method": method, "calibration": cal, "odds_power": b, "chain_length": k,
            "fid": fid}


def test_the_selection_rule_takes_the_smaller_k_among_ties_then_the_simpler_calibrator():
    rows = [
        # Best mean (10.0), K = 160.
        *[_row("joint", s, "beta", 1.0, 160, v) for s, v in enumerate([9.0, 11.0, 10.0])],
        # Within 2 paired sd of the best (differences 2, -1, 0.5: mean .5, sd 1.5), K = 40, platt.
        *[_row("joint", s, "platt", 1.0, 40, v) for s, v in enumerate([11.0, 10.0, 10.5])],
        # Same K = 40, isotonic (simpler than platt), also tied (differences 1.5, -0.5, 1.5: mean .83, sd 1.15).
        *[_row("refit", s, "isotonic", 0.5, 40, v) for s, v in enumerate([10.5, 10.5, 11.5])],
        # K = 10, mean 10.2, but its paired differences are consistent (0.2 each: sd 0): not a tie.
        *[_row("joint", s, "none", 1.0, 10, v) for s, v in enumerate([9.2, 11.2, 10.2])],
        # DRS and base rows never compete, however good.
        *[_row("joint", s, "isotonic", 1.0, 10, 1.0, method="drs") for s in range(3)],
        *[_row("joint", s, "none", 1.0, 10, 1.0, method="base") for s in range(3)],
        # A setting missing a seed does not compete.
        _row("joint", 0, "none", 1.0, 1, 0.0),
    ]
    chosen, candidates = choose_setting(rows, "fid", ["joint", "refit", "ratio"])
    assert candidates[0].setting == Setting("joint", "beta", 1.0, 160)
    assert chosen == Setting("refit", "isotonic", 0.5, 40)
    ties = {c.setting for c in candidates if c.ties}
    assert ties == {Setting("joint", "beta", 1.0, 160), Setting("joint", "platt", 1.0, 40),
                    Setting("refit", "isotonic", 0.5, 40)}
    assert {c.setting.chain_length for c in candidates} == {10, 40, 160}


def test_the_selection_rule_then_prefers_b_1_then_the_first_listed_discriminator():
    same = [10.0, 12.0]
    rows = [*[_row("ratio", s, "platt", 1.0, 40, v) for s, v in enumerate(same)],
            *[_row("joint", s, "platt", 0.5, 40, v) for s, v in enumerate(same)],
            *[_row("refit", s, "platt", 1.0, 40, v) for s, v in enumerate(same)]]
    chosen, _ = choose_setting(rows, "fid", ["joint", "refit", "ratio"])
    assert chosen == Setting("refit", "platt", 1.0, 40)
    chosen, _ = choose_setting(rows, "fid", ["ratio", "refit", "joint"])
    assert chosen == Setting("ratio", "platt", 1.0, 40)


def test_paired_differences_pair_by_seed():
    rows = [_row("joint", 0, "platt", 1.0, 40, 10.0), _row("joint", 1, "platt", 1.0, 40, 14.0),
            _row("joint", 1, "none", 1.0, 40, 11.0, method="base"), _row("joint", 0, "none", 1.0, 40, 9.0,
                                                                          method="base")]
    mean, sd, seeds = paired_differences(rows, {"method": "mh"}, {"method": "base"}, "fid")
    assert (mean, seeds) == (2.0, 2)
    assert sd == pytest.approx(np.std([1.0, 3.0], ddof=1))


def test_the_results_log_keeps_finished_rows_and_drops_a_last_line_cut_short(tmp_path):
    path = tmp_path / "results.jsonl"
    log = ResultsLog(path)
    first = {"key": row_key("joint", 0, "mh", "platt", 0.5, 40, 100), "fid": 1.0}
    second = {"key": row_key("joint", 1, "mh", "platt", 0.5, 40, 100), "fid": 2.0}
    log.append(first)
    log.append(second)
    with open(path, "a") as f:
        f.write('{"key": "joint|2|mh|pla')  # a crash mid-write
    again = ResultsLog(path)
    assert list(again.rows) == [first["key"], second["key"]]
    assert path.read_text().endswith("\n")
    again.append({"key": "x", "fid": 3.0})
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == [first["key"], second["key"], "x"]


def _image_rows():
    rng = np.random.default_rng(0)
    rows = []
    for d in ("joint", "ratio"):
        for seed in (0, 1):
            for method, cal, b, k in [("base", "none", 1.0, 10), ("base", "none", 1.0, 40),
                                      ("drs", "isotonic", 1.0, 40), ("drs", "platt", 0.5, 40),
                                      ("mh", "platt", 0.5, 10), ("mh", "platt", 0.5, 40), ("mh", "beta", 1.0, 40)]:
                shares = rng.dirichlet(np.ones(10))
                rows.append({"d": d, "seed": seed, "method": method, "calibration": cal, "odds_power": b,
                             "chain_length": k, "fid": float(rng.uniform(10, 20)),
                             **{m: float(rng.uniform()) for m in ("inception_score", "precision", "recall", "density",
                                                                  "coverage", "class_js_bits", "acceptance_rate",
                                                                  "restart_rate")},
                             "shares": shares.tolist()})
    return rows


def test_the_tables_and_figures_of_an_image_study():
    from mhgan_dist.studies.calibrator import (confirmation_markdown, metric_against_k_png, precision_recall_png,
                                         screening_markdown)

    rows = _image_rows()
    chosen, _ = choose_setting(rows, "fid", ["joint", "ratio"])
    classes = [f"c{i}" for i in range(10)]
    table = screening_markdown(rows, "fashion", ["joint", "ratio"], classes, chosen)
    lines = table.splitlines()
    assert lines[0].startswith("| D | method | calibration | b | K | seeds | FID |")
    assert sum("**(chosen)**" in line for line in lines) == 1
    assert sum(line.startswith("| joint |") for line in lines) == 2 * 7  # the metrics and the class mix
    assert "| joint | base | – | – | 10 | 0,1 |" in table
    confirmed = [r for r in rows if r["d"] == "joint" and r["chain_length"] == 40]
    setting = Setting("joint", "platt", 0.5, 40)
    text = confirmation_markdown(confirmed, "fashion", setting, classes)
    mh = [r["fid"] for r in confirmed if r["method"] == "mh" and r["calibration"] == "platt"]
    base = [r["fid"] for r in confirmed if r["method"] == "base"]
    diffs = np.subtract(mh, base)
    assert f"| MH − base | 2 | {diffs.mean():+.2f} ± {diffs.std(ddof=1):.2f} |" in text
    assert "MH − DRS isotonic, b=1" in text and "MH − DRS platt, b=0.5" in text
    assert "precision: MH above base: " in text
    for png in (metric_against_k_png(rows, "fid", "t", ["joint", "ratio"]),
                precision_recall_png(rows, ["joint", "ratio"], chosen)):
        assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_classifier_quality_without_bootstrap_gives_the_same_figures():
    from mhgan_dist.quality.scores import classifier_quality

    rng = np.random.default_rng(1)
    reference = rng.normal(size=(400, 8))
    features = rng.normal(0.2, 1.1, size=(300, 8))
    probs = rng.dirichlet(np.ones(4), size=300)
    mean, cov = reference.mean(axis=0), np.cov(reference, rowvar=False)
    full = classifier_quality(probs, features, reference, mean, cov, rounds=10)
    quick = classifier_quality(probs, features, reference, mean, cov, rounds=0)
    assert quick["spreads"] == {} and quick["bootstrap_rounds"] == 0
    assert {k: v for k, v in quick.items() if k not in ("spreads", "bootstrap_rounds")} == \
        {k: v for k, v in full.items() if k not in ("spreads", "bootstrap_rounds")}


# ------------------------------------------------------------------ with Ray


def test_in_process_picks_equal_the_pipelines_re_picks_of_the_same_run(ray_session, tmp_path):
    from mhgan_dist.pipeline.local_repick import PickSetting, StoredRun
    from mhgan_dist.studies.runs import ensure_run, run_config

    said = []
    source = tmp_path / "source"
    ensure_run(run_config("grid2d", source, picker="mh", seed=3, num_samples=64, chain_length=8, num_actors=1),
               said.append)
    stored = StoredRun.open(str(source))
    worker = stored.worker("grid2d", threads=1)
    pilot = stored.pilot_max_raw(worker)
    settings = [
        # Non-default: platt, tempered, K below the run's (chains re-cut from the same proposals).
        (PickSetting("mh", "platt", 4, odds_power=0.5), 96),
        (PickSetting("drs", "beta", 8, odds_power=0.25), 64),  # the DRS pilot scored in this process
        (PickSetting("mh", "isotonic-capped", 2), 128),
        (PickSetting("base", "none", 8), 64),
    ]
    for setting, n in settings:
        target = tmp_path / f"{setting.picker}-{setting.calibration}-{setting.chain_length}"
        ensure_run(run_config("grid2d", target, picker=setting.picker, seed=3, num_samples=n,
                              chain_length=setting.chain_length, calibration=setting.calibration, num_actors=1,
                              odds_power=setting.odds_power), said.append, source=source)
        pipeline = read_samples(target)
        local = stored.pick(setting, n, pilot if setting.picker == "drs" else None)
        np.testing.assert_array_equal(local.proposal_index, pipeline["proposal_index"], err_msg=str(setting))
        np.testing.assert_array_equal(local.result.accepts, pipeline["accepts"], err_msg=str(setting))
        np.testing.assert_array_equal(local.result.restarted, pipeline["restarted"], err_msg=str(setting))
        np.testing.assert_array_equal(worker.generate(local.proposal_index), pipeline["sample"], err_msg=str(setting))
        manifest = json.loads((target / "manifest.json").read_text())
        assert local.acceptance_rate == pytest.approx(manifest["stats"]["acceptance_rate"])
        assert local.restart_rate == pytest.approx(manifest["stats"]["restart_rate"])
    # The run's own picks (isotonic, b = 1, its K) too.
    np.testing.assert_array_equal(stored.pick(PickSetting("mh", "isotonic", 8), 64).proposal_index,
                                  read_samples(source)["proposal_index"])


def test_the_study_resumes_without_recomputing_finished_rows_and_confirms(ray_session, tmp_path):
    from jobs import reproduce

    work = tmp_path / "study"
    argv = ["calibrator-study", "--work", str(work), "--model", "grid2d", "--calibrations", "none,platt",
            "--odds-powers", "1,0.5", "--lengths", "2,4", "--seeds", "0,1", "--num-samples", "32",
            "--num-actors", "1", "--torch-threads", "1", "--quiet"]
    assert reproduce.main(argv) == 0
    path = work / "results.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 2 * 2 * (1 + 2 + 4)  # seeds x K x (base, drs per calibrator, mh per calibrator and b)
    assert {r["method"] for r in rows} == {"base", "drs", "mh"}
    assert all(r["js_nats"] >= 0 and 0 <= r["acceptance_rate"] <= 1 for r in rows)
    assert len({r["source"] for r in rows}) == 2  # one proposal run per seed
    selection = json.loads((work / "selection.json").read_text())
    text = (work / "results.md").read_text()
    assert "Chosen: D=joint" in text and "Selection rule" in text and (work / "js_nats-against-k.png").exists()
    assert (work / "calibration.png").stat().st_size > 10_000 and "(calibration.png)" in text

    # A finished row is not recomputed (its tampered value survives); a missing one is, identically.
    tampered, removed = rows[5], rows[9]
    kept = [dict(r, js_nats=123.0) if r["key"] == tampered["key"] else r for r in rows if r["key"] != removed["key"]]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    assert reproduce.main(argv) == 0
    again = {json.loads(line)["key"]: json.loads(line) for line in path.read_text().splitlines()}
    assert len(again) == len(rows)
    assert again[tampered["key"]]["js_nats"] == 123.0
    redone = again[removed["key"]]
    for name in ("js_nats", "hq_share", "counts", "acceptance_rate", "restart_rate", "picked_head"):
        assert redone[name] == removed[name], name

    # Confirmation of the setting the rule chose, on another seed.
    confirm = ["calibrator-study", "--work", str(work), "--model", "grid2d", "--confirm", "auto", "--seeds", "2",
               "--num-samples", "32", "--num-actors", "1", "--torch-threads", "1", "--quiet"]
    assert reproduce.main(confirm) == 0
    chosen = selection["chosen"]
    confirmed = [json.loads(line) for line in (work / "confirm" / "results.jsonl").read_text().splitlines()]
    mh = [r for r in confirmed if r["method"] == "mh"]
    assert [(r["calibration"], r["odds_power"], r["chain_length"]) for r in mh] == \
        [(chosen["calibration"], chosen["odds_power"], chosen["chain_length"])]
    assert {r["method"] for r in confirmed} == {"base", "mh", "drs"} and {r["seed"] for r in confirmed} == {2}
    assert "MH − base" in (work / "confirm" / "results.md").read_text()
    assert (work / "confirm" / "samples.png").exists()

"""Scoring networks, `jobs.evaluate` on real runs, and MH-GAN against the baselines on the shipped grid2d."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from jobs import evaluate, generate, repick
from mhgan_dist import data, metrics
from mhgan_dist.errors import ModelError
from mhgan_dist.scoring_models import load_digit_classifier, load_inception
from tests.conftest import read_samples

# ------------------------------------------------------------------ scorers


def test_inception_loader_refuses_a_missing_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_inception(tmp_path / "missing.pth")


def test_inception_loader_refuses_a_file_that_needs_unpickling(tmp_path):
    path = tmp_path / "module.pth"
    torch.save({"weights": torch.nn.Linear(2, 2)}, path)  # a pickled module, not plain tensors
    with pytest.raises(ModelError, match="weights_only"):
        load_inception(path)


def test_inception_loader_refuses_weights_of_another_architecture(tmp_path):
    path = tmp_path / "linear.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(ModelError, match="inception_v3"):
        load_inception(path)


def test_inception_loads_a_random_state_dict_and_scores_images(tmp_path):
    from torchvision.models import Inception3

    # init_weights=False skips torchvision's slow truncated-normal initialisation; any weights do here.
    state = Inception3(aux_logits=False, init_weights=False).state_dict()
    path = tmp_path / "inception.pth"
    torch.save(state, path)
    scorer = load_inception(path, batch_size=2)
    images = np.random.default_rng(0).uniform(-1, 1, size=(3, 1, 16, 16)).astype(np.float32)  # grey, small
    probs, features = scorer.score(images)
    assert probs.shape == (3, 1000) and features.shape == (3, 2048)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-9)
    assert scorer.comparable_to_inception and len(scorer.info["weights_sha256"]) == 64


def test_shipped_digit_classifier_recognises_the_real_digits():
    from sklearn.datasets import load_digits

    scorer = load_digit_classifier()
    images, labels = data.digits(), load_digits().target
    probs, features = scorer.score(images)
    accuracy = float((probs.argmax(axis=1) == labels).mean())
    recorded = scorer.info["test_accuracy"]
    # Most digits were trained on; the recorded held-out accuracy bounds the rest from below.
    assert recorded >= 0.97 and accuracy >= recorded - 0.01
    assert features.shape == (1797, 64) and not scorer.comparable_to_inception
    score, _ = metrics.inception_score(probs)
    assert 9.0 < score <= 10.0  # 10 balanced classes, confidently classified


def test_digit_classifier_refuses_altered_files(tmp_path):
    import shutil

    from mhgan_dist.models import checkpoints_dir

    copy = tmp_path / "classifier"
    shutil.copytree(checkpoints_dir() / "digits-classifier", copy)
    blob = bytearray((copy / "classifier.pt2").read_bytes())
    blob[-100] ^= 0xFF
    (copy / "classifier.pt2").write_bytes(bytes(blob))
    with pytest.raises(ModelError, match="sha256"):
        load_digit_classifier(copy)


# ------------------------------------------------------------ jobs.evaluate

SMALL = ["--num-samples", "400", "--chain-length", "64", "--seed", "3", "--quiet"]


@pytest.fixture(scope="module")
def grid_runs(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    runs = {picker: root / picker for picker in ("mh", "base", "drs")}
    assert generate.main(["--model", "grid2d", "--output", str(runs["mh"]), *SMALL]) == 0
    for picker in ("base", "drs"):
        assert repick.main(["--from", str(runs["mh"]), "--picker", picker, "--output", str(runs[picker]), "--quiet"]) == 0
    return runs


def test_evaluate_writes_one_report_for_several_runs(grid_runs, tmp_path, capsys):
    out = tmp_path / "report"
    runs = [str(grid_runs[p]) for p in ("base", "drs", "mh")]
    assert evaluate.main([*runs, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.html'}" in printed and "JS" in printed
    report = json.loads((out / "report.json").read_text())
    assert [r["label"] for r in report["runs"]] == ["base", "drs", "mh"]
    assert report["kind"] == "grid2d" and report["real"]["num_samples"] > 0
    for run in report["runs"]:
        assert run["num_samples"] == 400
        assert set(run["quality"]) >= {"js_nats", "js_bits", "hq_share", "modes_recovered"}
        assert run["calibration"]["before"]["dawid_z"] is not None
    names = {f["file"] for f in report["figures"]}
    assert "samples.png" in names and {n for n in names if n.startswith("chains-")} == {
        "chains-01-drs.png", "chains-02-mh.png"}
    assert all((out / n).is_file() for n in names)


def test_the_reliability_diagram_uses_the_reports_out_of_fold_fit(grid_runs):
    from mhgan_dist import calibration
    from mhgan_dist.report.build import out_of_fold_probabilities
    from mhgan_dist.report.runs import load_run

    run = load_run(str(grid_runs["mh"]))
    after = out_of_fold_probabilities(run)
    recorded = run.calibration_report["diagnostics"]["after"]
    measured = calibration.calibration_metrics(after, run.calibration_labels.astype(float))
    assert measured.dawid_z == pytest.approx(recorded["dawid_z"], rel=1e-9, abs=1e-12)
    assert measured.ece == pytest.approx(recorded["ece"], rel=1e-9, abs=1e-12)


def test_evaluate_default_output_is_the_first_runs_report_folder(grid_runs, capsys):
    assert evaluate.main([str(grid_runs["mh"]), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == f"report: {grid_runs['mh'] / 'report' / 'report.html'}"
    assert (grid_runs["mh"] / "report" / "samples.png").is_file()


def test_evaluate_rejects_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert evaluate.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "not a complete mhgan-dist run" in err[0]


def test_evaluate_of_a_digits_run_uses_the_classifier_and_says_it_is_not_inception(ray_session, tmp_path):
    out = tmp_path / "digits"
    assert generate.main(["--model", "digits", "--output", str(out), "--num-samples", "64", "--chain-length", "8",
                          "--quiet"]) == 0
    assert evaluate.main([str(out), "--quiet"]) == 0
    report = json.loads((out / "report" / "report.json").read_text())
    quality = report["runs"][0]["quality"]
    assert 1.0 <= quality["inception_score"] <= 10.0 and quality["fid"] >= 0.0
    assert report["scorer"]["comparable_to_inception"] is False
    assert any("not comparable" in note for note in report["notes"])
    assert (out / "report" / "samples-mh.png").is_file() and (out / "report" / "samples-real.png").is_file()


# --------------------------------------- MH-GAN vs the baselines on grid2d

# JS bound: for n iid samples from p, 8 n JS(p_hat, p) is asymptotically chi-square with
# (bins - 1) degrees of freedom (JS ~ chi^2 / 8n to second order). sqrt(JS) is a metric,
# so |sqrt(JS(p_hat, u)) - sqrt(JS(p, u))| <= sqrt(JS(p_hat, p)) <= RADIUS with
# probability 1 - ALPHA per sample set. Two sets are ordered for certain when their
# estimates differ by more than 2 RADIUS.
N_PAIRED = 2000
K_PAIRED = 640
ALPHA = 1e-6
RADIUS = math.sqrt(stats.chi2.ppf(1 - ALPHA, 25) / (8 * N_PAIRED))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_calibrated_mh_beats_base_and_drs_on_the_shipped_grid(ray_session, tmp_path, seed):
    common = ["--model", "grid2d", "--num-samples", str(N_PAIRED), "--chain-length", str(K_PAIRED),
              "--seed", str(seed), "--quiet"]
    source = tmp_path / "mh"
    assert generate.main([*common, "--picker", "mh", "--output", str(source)]) == 0
    for picker in ("base", "drs"):  # the same proposals, re-picked
        assert repick.main(["--from", str(source), "--picker", picker, "--output", str(tmp_path / picker),
                            "--quiet"]) == 0
    quality = {p: metrics.grid_metrics(read_samples(tmp_path / p)["sample"]) for p in ("mh", "base", "drs")}
    mh = quality["mh"]
    for other in ("base", "drs"):
        gap = math.sqrt(quality[other].js_nats) - math.sqrt(mh.js_nats)
        assert gap > 2 * RADIUS, (other, quality[other].js_nats, mh.js_nats, RADIUS)
        assert mh.modes_recovered >= quality[other].modes_recovered

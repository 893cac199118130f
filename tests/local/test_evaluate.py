"""Scoring networks, `jobs.evaluate` on real runs, and MH-GAN against the baselines on the shipped grid2d."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from jobs import evaluate, generate, repick
from mhgan_dist.training import datasets
from mhgan_dist.quality import metrics
from mhgan_dist.errors import ModelError
from mhgan_dist.quality.networks import load_digit_classifier, load_inception
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
    images, labels = datasets.digits(), load_digits().target
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


def test_one_dispatch_picks_each_model_kinds_network_and_real_reference():
    from mhgan_dist.errors import ConfigError
    from mhgan_dist.models import load_real_samples, resolve_model
    from mhgan_dist.quality.scores import NO_INCEPTION_NOTE, inception_splits, model_kind, scorer_for, toy_quality

    points = np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32)
    toy = scorer_for(*model_kind(resolve_model("grid2d")))
    assert toy.kind == "grid2d" and toy.network is None and toy(points) == toy_quality("grid2d", points)

    files = resolve_model("digits")
    real = load_real_samples(files.real, (1, 8, 8))
    kind, dataset = model_kind(files)
    digits = scorer_for(kind, dataset, real=real)
    assert (kind, dataset) == ("image", "digits") and digits.network.name == load_digit_classifier().name
    probs, features = digits.network.score(real[:100])
    _, real_features = digits.network.score(real)
    report = digits(real[:100])  # IS, and FID against all the real digits: the report's numbers
    assert report["fid"] == metrics.fid(features, real_features) and "precision" not in report
    splits = inception_splits(len(real))
    assert digits.real_quality()["inception_score"] == metrics.inception_score(digits.network.score(real)[0], splits)[0]
    study = scorer_for(kind, dataset, real=real, classifier_scores=True, rounds=0)(real[:100])
    assert study["fid"] == pytest.approx(report["fid"]) and 0 <= study["precision"] <= 1 and study["spreads"] == {}
    with pytest.raises(ConfigError, match="no held-out real samples"):
        scorer_for(kind, dataset, classifier_scores=True)

    fashion = scorer_for("fashion", "fashion", rounds=0)
    assert fashion.classifier_scores and fashion.reference.features.shape[0] == 10_000
    images = np.zeros((4, 3, 32, 32), np.float32)
    for other in (scorer_for("image", "cifar10", real=images), scorer_for("other", None, real=images)):
        assert other.network is None and other(images) is None and other.real_quality() is None
    assert scorer_for("image", "cifar10").note == NO_INCEPTION_NOTE and scorer_for("other", None).note is None


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
    assert [r["name"] for r in report["runs"]] == ["base", "drs", "mh"]  # the folders', not their temporary paths
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
    from mhgan_dist.core import calibrators
    from mhgan_dist.report.build import out_of_fold_probabilities
    from mhgan_dist.report.runs import load_run

    run = load_run(str(grid_runs["mh"]))
    after = out_of_fold_probabilities(run)
    recorded = run.calibration_report["diagnostics"]["after"]
    measured = calibrators.calibration_metrics(after, run.calibration_labels.astype(float))
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


# ------------------------------------------- the Fashion-MNIST classifier and scores

def test_shipped_fashion_classifier_and_its_reference_features_agree():
    from mhgan_dist.quality.networks import load_fashion_classifier, load_reference_features

    scorer = load_fashion_classifier()
    reference = load_reference_features()
    assert not scorer.comparable_to_inception and scorer.num_classes == 10 and scorer.feature_dim == 128
    assert scorer.info["test_accuracy"] > 0.85 and scorer.info["num_train"] == 60_000
    record = json.loads((Path(scorer.info["directory"]) / "classifier.json").read_text())
    # the shipped features are the classifier's on the test images: their argmax accuracy is the recorded one
    assert record["reference"]["accuracy_of_saved_features"] == pytest.approx(record["test_accuracy"], abs=1e-4)
    assert reference.mean.shape == (128,) and reference.cov.shape == (128, 128)
    assert np.bincount(reference.labels, minlength=10).tolist() == [1000] * 10


def test_fashion_classifier_on_the_real_test_split_reproduces_the_shipped_features():
    from mhgan_dist.quality.networks import load_fashion_classifier, load_reference_features

    if not (Path(datasets.FASHION_DEFAULT_ROOT) / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST is not installed in {datasets.FASHION_DEFAULT_ROOT} "
                    "(Debian: apt-get install dataset-fashion-mnist)")
    images, labels = datasets.fashion_mnist(split="test")
    scorer, reference = load_fashion_classifier(), load_reference_features()
    probs, features = scorer.score(images[:2000])
    np.testing.assert_array_equal(reference.labels[:2000], labels[:2000])
    # float16 storage: relative rounding 2^-11, plus float32 noise of a re-run
    np.testing.assert_allclose(features, reference.features[:2000], rtol=2e-3, atol=2e-3)
    accuracy = float((probs.argmax(1) == labels[:2000]).mean())
    # 2,000 of the 10,000: within 5 binomial standard errors of the recorded accuracy
    p = scorer.info["test_accuracy"]
    assert abs(accuracy - p) <= 5 * math.sqrt(p * (1 - p) / 2000)


def test_fashion_classifier_refuses_images_of_another_size():
    from mhgan_dist.errors import InputError
    from mhgan_dist.quality.networks import load_fashion_classifier

    with pytest.raises(InputError, match="28, 28"):
        load_fashion_classifier().score(np.zeros((2, 1, 8, 8), np.float32))


@pytest.fixture(scope="module")
def tiny_fashion_model(tmp_path_factory):
    """An untrained, narrow 28x28 DCGAN labelled as the fashion dataset: exercises the fashion report fast."""
    from mhgan_dist.models import save_model_dir
    from mhgan_dist.models.architectures import DCGAN28Discriminator, DCGAN28Generator

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("models") / "tiny-fashion"
    real = np.random.default_rng(0).uniform(-1, 1, size=(300, 1, 28, 28)).astype(np.float32)
    save_model_dir(directory, DCGAN28Generator(latent_dim=8, width=4), DCGAN28Discriminator(width=4), latent_dim=8,
                   sample_shape=(1, 28, 28), real=real, metadata={"dataset": "fashion", "note": "untrained"})
    return directory


def test_evaluate_of_fashion_runs_gives_every_classifier_score_with_spreads_and_a_seed_table(
        ray_session, tiny_fashion_model, tmp_path):
    from mhgan_dist.quality.scores import CLASSIFIER_METRICS

    runs = []
    for seed in (0, 1):
        mh = tmp_path / f"mh-{seed}"
        assert generate.main(["--model", str(tiny_fashion_model), "--output", str(mh), "--num-samples", "120",
                              "--chain-length", "4", "--seed", str(seed), "--quiet"]) == 0
        base = tmp_path / f"base-{seed}"
        assert repick.main(["--from", str(mh), "--picker", "base", "--output", str(base), "--quiet"]) == 0
        runs += [str(base), str(mh)]
    out = tmp_path / "report"
    assert evaluate.main([*runs, "--output", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "fashion" and report["scorer"]["comparable_to_inception"] is False
    assert any("not comparable with Inception" in note for note in report["notes"])
    assert report["class_names"][0] == datasets.FASHION_CLASSES[0]
    for run in report["runs"] + [report["real"]]:
        quality = run["quality"]
        assert quality["knn_k"] == 5 and quality["knn_n"] == min(quality["n"], 10_000)
        assert sum(quality["class_counts"]) == quality["n"]
        for key, _ in CLASSIFIER_METRICS:
            spread = quality["spreads"][key]
            assert spread["value"] == pytest.approx(quality[key]) and spread["std"] >= 0, key
        assert 0 <= quality["precision"] <= 1 and 0 <= quality["coverage"] <= 1 and quality["fid"] > 0
    summary = {row["label"]: row for row in report["seed_summary"]}
    assert set(summary) == {"base", "mh"} and summary["mh"]["seeds"] == [0, 1]
    fids = [r["quality"]["fid"] for r in report["runs"] if r["picker"] == "mh"]
    assert summary["mh"]["metrics"]["fid"]["value"] == pytest.approx(np.mean(fids))
    assert summary["mh"]["metrics"]["fid"]["std"] == pytest.approx(np.std(fids, ddof=1))
    names = {f["file"] for f in report["figures"]}
    assert {"samples.png", "classes.png"} <= names and len([n for n in names if n.startswith("d-extremes-")]) == 4
    assert all((out / n).is_file() for n in names)
    table = (out / "summary.md").read_text()
    assert "| mh | 2 | 120 |" in table and "Class mix" in table and datasets.FASHION_CLASSES[9] in table
    assert "Over seeds" in (out / "report.html").read_text()

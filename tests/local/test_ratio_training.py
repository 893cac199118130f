"""Ratio classifier for a frozen G: diagnostics, the fit job on a shipped G, early stopping, determinism, bad input."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jobs import fit_ratio as fit_job
from mhgan_dist.training import datasets
from mhgan_dist.models import load_pair, resolve_model
from mhgan_dist.models.artifacts import checkpoints_dir, sha256_file
from mhgan_dist.training.ratio import (
    VALIDATION_FAKES,
    auc,
    fit_ratio_classifier,
    generated_samples,
    make_ratio_config,
    score_diagnostics,
    validation_split,
)

# Short but real: 700 steps of 256 real + 256 fresh G samples on the shipped 1-D mixture G.
MIXTURE_FIT = ["--steps-per-round", "100", "--max-rounds", "7", "--batch-size", "256", "--lr", "5e-3", "--width", "64"]


def _run_job(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = fit_job.main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def mixture_fit(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("ratio") / "mixture1d-ratio"
    code, stdout, stderr = _run_job(["--model", "mixture1d", "--dataset", "mixture1d", "--output", str(out), *MIXTURE_FIT])
    assert code == 0, stderr
    return out, stdout


def _per_sample_losses(discriminator: torch.nn.Module, real: np.ndarray, fakes: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        real_logits = discriminator(torch.from_numpy(real)).double()
        fake_logits = discriminator(fakes).double()
    return torch.cat([F.softplus(-real_logits), F.softplus(fake_logits)]).numpy()


# ------------------------------------------------------------ diagnostics


def test_score_diagnostics_of_the_exact_ratio() -> None:
    # real ~ N(1, 1), generated ~ N(0, 1): the exact log-ratio is x - 1/2.
    rng = np.random.default_rng(0)
    n = 20_000
    real, fake = rng.normal(1.0, 1.0, n) - 0.5, rng.normal(0.0, 1.0, n) - 0.5
    d = score_diagnostics(real, fake)
    # AUC = Phi(1 / sqrt 2); its sd is below 0.5 / sqrt(n) (Hanley-McNeil bound), 4 of them allowed.
    expected_auc = 0.5 * (1 + math.erf(0.5))
    assert abs(d["auc"] - expected_auc) < 4 * 0.5 / math.sqrt(n)
    # E_G[exp(x - 1/2)] = 1 with variance e - 1; 4 standard errors allowed.
    assert abs(d["fake_odds_mean"] - 1.0) < 4 * math.sqrt(math.e - 1) / math.sqrt(n)
    assert abs(d["real_inverse_odds_mean"] - 1.0) < 4 * math.sqrt(math.e - 1) / math.sqrt(n)
    # The exact ratio is calibrated: Dawid's Z is standard normal.
    assert abs(d["dawid_z"]) < 4
    assert d["n_real"] == d["n_fake"] == n
    # An over-confident D (logits x 3) keeps the AUC but loses on log loss and on the odds mean.
    worse = score_diagnostics(3 * real, 3 * fake)
    assert worse["auc"] == pytest.approx(d["auc"])
    assert worse["log_loss"] > d["log_loss"] + 0.05
    assert worse["fake_odds_mean"] > 10


def test_auc_counts_ties_as_half() -> None:
    assert auc(np.array([1.0, 2.0]), np.array([0.0, -1.0])) == 1.0
    assert auc(np.array([0.0, -1.0]), np.array([1.0, 2.0])) == 0.0
    assert auc(np.zeros(5), np.zeros(7)) == 0.5
    assert score_diagnostics(np.zeros(3), np.zeros(3))["log_loss"] == pytest.approx(math.log(2))


# ------------------------------------------------------ the job, 1-D mixture


def test_fit_beats_the_joint_discriminator_on_held_out_log_loss(mixture_fit) -> None:
    out, _ = mixture_fit
    real = np.load(out / "real.npy")
    new = load_pair(resolve_model(out))
    joint = load_pair(resolve_model(None, generator=out / "generator.pt2", discriminator=out / "discriminator-joint.pt2"))
    fakes = generated_samples(new.generator, len(real), latent_dim=new.latent_dim, seed=0)
    ours = _per_sample_losses(new.discriminator, real, fakes)
    theirs = _per_sample_losses(joint.discriminator, real, fakes)
    diff = ours - theirs
    # Paired comparison on the same 6,400 + 6,400 held-out samples: lower by more than 2 standard errors.
    assert diff.mean() < -2 * diff.std(ddof=1) / math.sqrt(diff.size), (ours.mean(), theirs.mean())
    # And clearly informative: below log 2 by more than 4 standard errors of the mean loss.
    assert ours.mean() < math.log(2) - 4 * ours.std(ddof=1) / math.sqrt(ours.size)

    recorded = json.loads((out / "model.json").read_text())["discriminators"]
    assert recorded["discriminator.pt2"]["heldout"]["log_loss"] == pytest.approx(ours.mean(), abs=1e-6)
    assert recorded["discriminator-joint.pt2"]["heldout"]["log_loss"] == pytest.approx(theirs.mean(), abs=1e-6)


def test_fitted_directory_loads_keeps_g_and_the_joint_d(mixture_fit) -> None:
    out, _ = mixture_fit
    shipped = checkpoints_dir() / "mixture1d"
    assert sha256_file(out / "generator.pt2") == sha256_file(shipped / "generator.pt2")
    assert sha256_file(out / "discriminator-joint.pt2") == sha256_file(shipped / "discriminator.pt2")
    assert sha256_file(out / "discriminator.pt2") != sha256_file(shipped / "discriminator.pt2")
    np.testing.assert_array_equal(np.load(out / "real.npy"), np.load(shipped / "real.npy"))
    pair = load_pair(resolve_model(out))  # the pipeline's loader: checks hashes, batches of 1 and 3
    assert pair.sample_shape == (1,)
    for batch in (1, 5):
        with torch.inference_mode():
            logits = pair.discriminator(torch.linspace(-1, 4, batch).reshape(batch, 1))
        assert logits.shape == (batch,) and torch.isfinite(logits).all()


def test_model_json_records_both_discriminators_and_the_curve(mixture_fit) -> None:
    out, stdout = mixture_fit
    doc = json.loads((out / "model.json").read_text())
    assert set(doc["files"]) == {"generator.pt2", "discriminator.pt2", "discriminator-joint.pt2", "real.npy"}
    for name in ("discriminator.pt2", "discriminator-joint.pt2"):
        held = doc["discriminators"][name]["heldout"]
        assert {"auc", "log_loss", "dawid_z", "ece", "brier", "fake_odds_mean"} <= set(held)
        assert held["n_real"] == held["n_fake"] == 6400
    # The GAN's own D keeps its description (the shipped mixture1d D was itself refit after training).
    source = json.loads((checkpoints_dir() / "mixture1d" / "model.json").read_text())
    assert doc["discriminators"]["discriminator-joint.pt2"]["kind"] == source["training"]["discriminator"]
    fit = doc["ratio_fit"]
    assert fit["kind"] == "ratio" and fit["config"]["init"] == "fresh"
    curve = fit["curve"]
    assert [r["step"] for r in curve] == [100 * i for i in range(len(curve))]
    best = min(range(len(curve)), key=lambda i: curve[i]["val_log_loss"])
    assert fit["best_round"] == best and fit["best_val_log_loss"] == curve[best]["val_log_loss"]
    assert fit["real_training_data"]["dataset"] == "mixture1d"
    assert doc["source_model"]["name"] == "mixture1d"
    # The job prints the curve, one line per round, and both D's diagnostics.
    assert len([line for line in stdout.splitlines() if line.strip()[:1].isdigit()]) == len(curve)
    assert "discriminator-joint.pt2" in stdout


def test_refitting_a_fitted_model_keeps_the_original_joint_d(mixture_fit, tmp_path: Path) -> None:
    out, _ = mixture_fit
    again = tmp_path / "again"
    code, _, stderr = _run_job(
        ["--model", str(out), "--dataset", "mixture1d", "--output", str(again), "--steps-per-round", "5", "--max-rounds", "1"]
    )
    assert code == 0, stderr
    shipped = checkpoints_dir() / "mixture1d" / "discriminator.pt2"
    assert sha256_file(again / "discriminator-joint.pt2") == sha256_file(shipped)
    doc = json.loads((again / "model.json").read_text())
    source = json.loads((checkpoints_dir() / "mixture1d" / "model.json").read_text())
    assert doc["discriminators"]["discriminator-joint.pt2"]["kind"] == source["training"]["discriminator"]


def test_users_own_training_data_from_a_file(tmp_path: Path) -> None:
    train = tmp_path / "train.npy"
    np.save(train, datasets.mixture1d(3000, np.random.default_rng(5)))
    out = tmp_path / "own"
    code, _, stderr = _run_job(
        ["--model", "mixture1d", "--real-train", str(train), "--output", str(out), "--steps-per-round", "5", "--max-rounds", "1",
         "--eval-fakes", "100"]
    )
    assert code == 0, stderr
    doc = json.loads((out / "model.json").read_text())
    for entry in doc["discriminators"].values():  # balanced classes, as the classifier was trained
        assert entry["heldout"]["n_real"] == entry["heldout"]["n_fake"] == 100
    fit = doc["ratio_fit"]
    assert fit["real_training_data"] == {"real_train": str(train)}
    assert fit["fit_size"] + fit["val_size"] == 3000 and fit["val_size"] == 300


# --------------------------------------------- early stopping, determinism


@pytest.fixture(scope="module")
def digits_g():
    return load_pair(resolve_model("digits"))


def test_early_stopping_keeps_the_round_of_least_validation_log_loss(digits_g) -> None:
    # 50 real images to fit, no dropout or weight decay: the classifier memorises them, so the
    # validation log loss turns up while the training loss keeps falling.
    real = datasets.digits()[:100]
    cfg = make_ratio_config(
        digits_g.sample_shape, val_size=50, batch_size=25, dropout=0.0, weight_decay=0.0, lr=1e-3,
        steps_per_round=10, patience=2, max_rounds=40,
    )
    fit = fit_ratio_classifier(digits_g.generator, real, cfg, latent_dim=digits_g.latent_dim, sample_shape=digits_g.sample_shape)
    losses = [r.val_log_loss for r in fit.curve]
    assert fit.stopped == "patience"
    assert 0 < fit.best_round < len(losses) - 1
    assert fit.best_round == int(np.argmin(losses))
    assert len(losses) - 1 - fit.best_round == cfg.patience
    assert losses[-1] > losses[fit.best_round]

    # The returned weights are the best round's: recompute the validation loss independently.
    val_idx, _ = validation_split(len(real), 50, cfg.seed)
    fakes = generated_samples(digits_g.generator, 50, latent_dim=digits_g.latent_dim, seed=cfg.seed, purpose=VALIDATION_FAKES)
    with torch.no_grad():
        logits = fit.classifier(torch.cat([torch.from_numpy(real[val_idx]), fakes]))
    labels = torch.cat([torch.ones(50), torch.zeros(50)])
    loss = float(F.binary_cross_entropy_with_logits(logits, labels))
    assert loss == pytest.approx(losses[fit.best_round], abs=1e-5)
    assert abs(loss - losses[-1]) > 1e-3


def test_a_fit_is_deterministic_for_its_seed(digits_g) -> None:
    real = datasets.digits()[:300]

    def weights(seed: int) -> list[torch.Tensor]:
        cfg = make_ratio_config(digits_g.sample_shape, val_size=50, batch_size=32, steps_per_round=5, max_rounds=2, seed=seed)
        fit = fit_ratio_classifier(digits_g.generator, real, cfg, latent_dim=digits_g.latent_dim, sample_shape=digits_g.sample_shape)
        return [t.clone() for t in fit.classifier.state_dict().values()]

    a, b, c = weights(0), weights(0), weights(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


# --------------------------------------------------------------- bad input


def _model_without_generator(tmp_path: Path) -> str:
    directory = tmp_path / "no-g"
    directory.mkdir()
    shutil.copyfile(checkpoints_dir() / "mixture1d" / "discriminator.pt2", directory / "discriminator.pt2")
    return str(directory)


def _model_without_architecture(tmp_path: Path) -> str:
    directory = tmp_path / "no-architecture"
    shutil.copytree(checkpoints_dir() / "mixture1d", directory)
    doc = json.loads((directory / "model.json").read_text())
    del doc["training"]
    (directory / "model.json").write_text(json.dumps(doc))
    return str(directory)


@pytest.mark.parametrize(
    "make_args, pattern",
    [
        (lambda t: ["--model", "mixture1d", "--real-train", str(t / "missing.npy")], "real samples file .*missing.npy not found"),
        (lambda t: ["--model", _model_without_generator(t), "--dataset", "mixture1d"], "has no generator.pt2 or generator.pt file"),
        (lambda t: ["--model", "mixture1d"], "either as --dataset NAME or as --real-train PATH"),
        (lambda t: ["--model", "mixture1d", "--dataset", "mixture1d", "--real-train", "x.npy"], "not both or neither"),
        (lambda t: ["--model", "mixture1d", "--dataset", "grid2d"], "trained on mixture1d, not on grid2d"),
        (lambda t: ["--model", "mixture1d", "--dataset", "mixture1d", "--lr", "-1"], "--lr must be a positive number"),
        (lambda t: ["--model", str(t / "nowhere"), "--dataset", "mixture1d"], "neither a shipped model"),
        (lambda t: ["--model", "mixture1d", "--dataset", "mixture1d", "--init", "joint", "--width", "8"],
         "--width does not apply to --init joint"),
        (lambda t: ["--model", "mixture1d", "--dataset", "mixture1d", "--init", "joint", "--dropout", "0.1"],
         "--dropout does not apply to --init joint"),
        (lambda t: ["--model", _model_without_architecture(t), "--dataset", "mixture1d", "--init", "joint"],
         "does not record a reference GAN architecture"),
        (lambda t: ["--model", "mixture1d", "--dataset", "mixture1d", "--max-seconds", "0"], "--max-seconds must be a positive"),
    ],
)
def test_bad_input_is_one_sentence_and_writes_nothing(tmp_path: Path, make_args, pattern: str) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = _run_job([*make_args(tmp_path), "--output", str(out)])
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in stderr and stdout == ""
    assert not out.exists()


def test_refuses_to_write_into_the_source_or_a_used_directory(tmp_path: Path) -> None:
    source = tmp_path / "m"
    shutil.copytree(checkpoints_dir() / "mixture1d", source)
    code, _, stderr = _run_job(["--model", str(source), "--dataset", "mixture1d", "--output", str(source)])
    assert code == 2 and "the source model's own directory" in stderr
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("keep me")
    code, _, stderr = _run_job(["--model", "mixture1d", "--dataset", "mixture1d", "--output", str(used)])
    assert code == 2 and "is not empty; pass --overwrite" in stderr
    assert [p.name for p in used.iterdir()] == ["notes.txt"]


# ------------------------------------------------- jobs.train --refit-epochs


def test_refit_epochs_keep_the_joint_d_and_record_both_diagnostics(tmp_path: Path) -> None:
    from mhgan_dist.training.gan import train_and_save
    from mhgan_dist.training.setup import make_config

    cfg = make_config("grid2d", train_size=2000, epochs=2, batch_size=64, lr=1e-3, refit_epochs=1)
    out = train_and_save(cfg, tmp_path / "m")
    doc = json.loads((out / "model.json").read_text())
    assert {"discriminator.pt2", "discriminator-joint.pt2"} <= set(doc["files"])
    for name in ("discriminator.pt2", "discriminator-joint.pt2"):
        held = doc["discriminators"][name]["heldout"]
        assert held["n_real"] == held["n_fake"] == 200  # the 10% hold-out of 2,000 points
        assert 0 <= held["auc"] <= 1 and math.isfinite(held["log_loss"])
    refit = load_pair(resolve_model(out))
    joint = load_pair(resolve_model(None, generator=out / "generator.pt2", discriminator=out / "discriminator-joint.pt2"))
    real = np.load(out / "real.npy")
    fakes = generated_samples(refit.generator, len(real), latent_dim=2, seed=cfg.seed)
    # The recorded numbers are those of the files written (refit as D, the joint one kept).
    for pair, name in ((refit, "discriminator.pt2"), (joint, "discriminator-joint.pt2")):
        losses = _per_sample_losses(pair.discriminator, real, fakes)
        assert doc["discriminators"][name]["heldout"]["log_loss"] == pytest.approx(losses.mean(), abs=1e-5)
    assert sha256_file(out / "discriminator.pt2") != sha256_file(out / "discriminator-joint.pt2")


# ------------------------------------------- --init joint: refit the GAN's D


def _val_log_loss(discriminator: torch.nn.Module, generator: torch.nn.Module, real: np.ndarray, val_size: int,
                  latent_dim: int, seed: int = 0) -> float:
    """The fit's validation log loss of ``discriminator``, recomputed from the documented split and seed streams."""
    val_idx, _ = validation_split(len(real), val_size, seed)
    fakes = generated_samples(generator, val_size, latent_dim=latent_dim, seed=seed, purpose=VALIDATION_FAKES)
    with torch.inference_mode():
        logits = discriminator(torch.cat([torch.from_numpy(real[val_idx]), fakes]))
    labels = torch.cat([torch.ones(val_size), torch.zeros(val_size)])
    return float(F.binary_cross_entropy_with_logits(logits.float(), labels))


def test_refit_starts_from_the_joint_d_and_lowers_its_validation_log_loss(digits_g) -> None:
    from mhgan_dist.models.architectures import DCGANDiscriminator
    from mhgan_dist.models.artifacts import gan_discriminator

    initial = gan_discriminator(resolve_model("digits"))
    before = {k: v.clone() for k, v in initial.state_dict().items()}
    real = datasets.digits()[:600]
    cfg = make_ratio_config(digits_g.sample_shape, init="joint", val_size=150, steps_per_round=50, max_rounds=4)
    assert (cfg.kind, cfg.dropout, cfg.lr, cfg.batch_size) == ("gan", 0.0, 2e-4, 64)
    fit = fit_ratio_classifier(
        digits_g.generator, real, cfg, latent_dim=digits_g.latent_dim, sample_shape=digits_g.sample_shape, initial=initial
    )
    # Round 0 is the shipped (exported) D itself, on the same validation samples.
    joint = _val_log_loss(digits_g.discriminator, digits_g.generator, real, 150, digits_g.latent_dim)
    assert fit.curve[0].val_log_loss == pytest.approx(joint, abs=1e-5)
    # Training with G frozen lowers it, and the kept weights are the best round's.
    assert fit.best_round > 0 and fit.curve[fit.best_round].val_log_loss < fit.curve[0].val_log_loss - 0.01
    kept = _val_log_loss(fit.classifier, digits_g.generator, real, 150, digits_g.latent_dim)
    assert kept == pytest.approx(fit.curve[fit.best_round].val_log_loss, abs=1e-5)
    assert isinstance(fit.classifier, DCGANDiscriminator)
    assert all(torch.equal(before[k], v) for k, v in initial.state_dict().items())  # the caller's D is untouched
    assert fit.summary(cfg)["kind"] == "refit"


def _tiny_dcgan28(tmp_path: Path) -> Path:
    """A width-4 28x28 DCGAN model directory whose D's batch-norm statistics are far from their initial 0 / 1."""
    from mhgan_dist.models import build_pair, save_model_dir

    torch.manual_seed(3)
    generator, discriminator = build_pair("dcgan", (1, 28, 28), latent_dim=8, width=4)
    discriminator.train()
    with torch.no_grad():
        for _ in range(20):
            discriminator(3 * torch.randn(32, 1, 28, 28) + 1)
    rng = np.random.default_rng(0)
    directory = tmp_path / "tiny28"
    save_model_dir(
        directory, generator, discriminator, latent_dim=8, sample_shape=(1, 28, 28),
        real=np.tanh(rng.normal(size=(200, 1, 28, 28))).astype(np.float32),
        metadata={"dataset": "fashion", "training": {"config": {"architecture": "dcgan", "width": 4, "latent_dim": 8}}},
    )
    return directory


def test_refit_keeps_batch_norm_statistics_frozen(tmp_path: Path) -> None:
    from mhgan_dist.models.artifacts import gan_discriminator

    directory = _tiny_dcgan28(tmp_path)
    pair = load_pair(resolve_model(directory))
    initial = gan_discriminator(resolve_model(directory))
    norm = initial.net[3]
    assert not torch.allclose(norm.running_var, torch.ones_like(norm.running_var))  # loaded, not rebuilt fresh
    real = np.tanh(np.random.default_rng(1).normal(0.3, 1.0, size=(300, 1, 28, 28))).astype(np.float32)
    cfg = make_ratio_config(pair.sample_shape, init="joint", val_size=100, batch_size=32, steps_per_round=5, max_rounds=2, lr=2e-3)
    fit = fit_ratio_classifier(pair.generator, real, cfg, latent_dim=8, sample_shape=pair.sample_shape, initial=initial)
    assert fit.curve[0].val_log_loss == pytest.approx(_val_log_loss(pair.discriminator, pair.generator, real, 100, 8), abs=1e-5)
    trained = fit.classifier.state_dict()
    for name in ("net.3.running_mean", "net.3.running_var", "net.3.num_batches_tracked"):
        assert torch.equal(trained[name], initial.state_dict()[name]), name
    assert fit.best_round > 0 and not torch.equal(trained["net.0.weight"], initial.state_dict()["net.0.weight"])


@pytest.fixture(scope="module")
def digits_refit(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("refit") / "digits-refit"
    code, stdout, stderr = _run_job(
        ["--model", "digits", "--dataset", "digits", "--init", "joint", "--output", str(out),
         "--steps-per-round", "25", "--max-rounds", "4"]
    )
    assert code == 0, stderr
    return out, stdout


def test_refit_job_records_the_kind_and_both_discriminators(digits_refit) -> None:
    out, stdout = digits_refit
    shipped = checkpoints_dir() / "digits"
    assert sha256_file(out / "discriminator-joint.pt2") == sha256_file(shipped / "discriminator.pt2")
    assert sha256_file(out / "generator.pt2") == sha256_file(shipped / "generator.pt2")
    doc = json.loads((out / "model.json").read_text())
    fit = doc["ratio_fit"]
    assert fit["kind"] == "refit" and fit["config"]["kind"] == "gan" and fit["config"]["init"] == "joint"
    assert "refit" in doc["discriminators"]["discriminator.pt2"]["kind"]
    assert "refit" in doc["training"]["discriminator"]
    curve = [r["val_log_loss"] for r in fit["curve"]]
    assert fit["best_round"] == int(np.argmin(curve))
    held = {name: entry["heldout"] for name, entry in doc["discriminators"].items()}
    if fit["best_round"] == 0:
        # The shipped digits D was itself refit for 100 epochs after GAN training, and 100 more steps
        # do not lower its validation loss: early stopping then keeps the joint weights unchanged.
        assert held["discriminator.pt2"] == held["discriminator-joint.pt2"]
    new = load_pair(resolve_model(out))
    real = np.load(out / "real.npy")
    fakes = generated_samples(new.generator, len(real), latent_dim=new.latent_dim, seed=0)
    assert held["discriminator.pt2"]["log_loss"] == pytest.approx(
        _per_sample_losses(new.discriminator, real, fakes).mean(), abs=1e-5
    )
    assert stdout.count("refit: kept round") == 1


def test_refitting_a_refit_starts_from_the_original_joint_d(digits_refit, tmp_path: Path) -> None:
    # A directory written by fit_ratio keeps the joint D; a second refit starts from it, not from the first refit.
    out, _ = digits_refit
    again = tmp_path / "again"
    code, _, stderr = _run_job(
        ["--model", str(out), "--dataset", "digits", "--init", "joint", "--output", str(again), "--steps-per-round", "2",
         "--max-rounds", "1"]
    )
    assert code == 0, stderr
    first, second = (json.loads((d / "model.json").read_text())["ratio_fit"]["curve"][0] for d in (out, again))
    assert second["val_log_loss"] == pytest.approx(first["val_log_loss"], abs=1e-6)
    assert sha256_file(again / "discriminator-joint.pt2") == sha256_file(checkpoints_dir() / "digits" / "discriminator.pt2")


def test_a_time_budget_stops_the_fit_after_the_round_that_spends_it(digits_g) -> None:
    real = datasets.digits()[:300]
    cfg = make_ratio_config(digits_g.sample_shape, val_size=50, batch_size=32, steps_per_round=2, max_rounds=50,
                            max_seconds=1e-6)
    fit = fit_ratio_classifier(digits_g.generator, real, cfg, latent_dim=digits_g.latent_dim, sample_shape=digits_g.sample_shape)
    assert fit.stopped == "time" and len(fit.curve) == 2


def test_refit_refuses_weights_that_do_not_fit_the_recorded_architecture(tmp_path: Path) -> None:
    from mhgan_dist.errors import ModelError
    from mhgan_dist.models.artifacts import gan_discriminator

    directory = tmp_path / "wrong-width"
    shutil.copytree(checkpoints_dir() / "mixture1d", directory)
    doc = json.loads((directory / "model.json").read_text())
    doc["training"]["config"]["width"] = 50
    (directory / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="does not hold the weights of the mlp discriminator"):
        gan_discriminator(resolve_model(directory))

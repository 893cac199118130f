"""Training: config checks, a tiny run that lowers D's loss, model directories, the job's CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from jobs import train as train_job
from mhgan_dist.training import datasets as datasets
from mhgan_dist.errors import ConfigError, InputError, OutputError
from mhgan_dist.models import build_pair, load_pair, load_real_samples, resolve_model
from mhgan_dist.training.gan import discriminator_loss, train_and_save, train_gan
from mhgan_dist.training.setup import deterministic, load_test_data, load_training_data, make_config

REPO = Path(__file__).resolve().parents[2]
TINY_GRID = dict(train_size=2000, epochs=3, batch_size=64, lr=1e-3)
FASHION_ROOT = Path(datasets.FASHION_DEFAULT_ROOT)
needs_fashion = pytest.mark.skipif(
    not all(
        (FASHION_ROOT / f"{split}-{kind}.gz").is_file()
        for split in ("train", "t10k")
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
    ),
    reason=f"Fashion-MNIST files not in {FASHION_ROOT}: apt-get install dataset-fashion-mnist (Debian package)",
)
TINY_FASHION = dict(train_size=256, holdout_limit=40, epochs=1, batch_size=64, width=4)


def test_defaults() -> None:
    cfg = make_config("grid2d")
    assert (cfg.architecture, cfg.latent_dim, cfg.epochs, cfg.holdout_fraction) == ("mlp", 2, 150, 0.1)
    assert make_config("digits").architecture == "dcgan"
    assert make_config("cifar10", data_root="/x").image_size == 32
    fashion = make_config("fashion")  # no --data-root needed: Debian's folder is the default
    assert (fashion.architecture, fashion.latent_dim, fashion.batch_size, fashion.lr, fashion.beta1) == (
        "dcgan", 100, 64, 2e-4, 0.5
    )
    assert (fashion.image_size, fashion.epochs, fashion.data_root) == (28, 10, None)


@pytest.mark.parametrize(
    "dataset, options, pattern",
    [
        ("mnist", {}, "unknown dataset 'mnist'"),
        ("grid2d", {"epochs": 0}, "--epochs must be a positive integer"),
        ("grid2d", {"lr": -1.0}, "--lr must be a positive number"),
        ("grid2d", {"epochs": 5, "save_epochs": [3, 9]}, r"--save-epochs 9 is outside 1\.\.5"),
        ("cifar10", {}, "needs --data-root"),
        ("digits", {"image_size": 32}, "digits dataset is 8x8"),
        ("fashion", {"image_size": 32}, "fashion dataset is 28x28"),
        ("grid2d", {"device": "nonsense"}, "is not a torch device"),
        ("grid2d", {"colour": "red"}, "unknown training option 'colour'"),
    ],
)
def test_bad_config(dataset: str, options: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        make_config(dataset, **options)


def test_holdout_is_disjoint_and_seeded() -> None:
    cfg = make_config("grid2d", train_size=1000, batch_size=32)
    a, b = load_training_data(cfg), load_training_data(cfg)
    assert a.train.shape == (900, 2) and a.holdout.shape == (100, 2)
    assert np.array_equal(a.holdout, b.holdout)
    rows = {tuple(r) for r in a.train.tolist()}
    assert not any(tuple(r) in rows for r in a.holdout.tolist())
    assert a.info["holdout_size"] == 100 and a.info["train_size"] == 900


def test_grid_test_set_is_separate_and_seeded() -> None:
    cfg = make_config("grid2d")
    test = load_test_data(cfg)
    assert test.shape == (10_000, 2) and test.dtype == np.float32
    assert np.array_equal(test, load_test_data(cfg))
    assert not np.array_equal(test, load_test_data(make_config("grid2d", seed=1)))
    # Its own stream: no point of it is among the 64,000 that training draws (57,600 + 6,400 held out).
    split = load_training_data(cfg)
    assert (len(split.train), len(split.holdout)) == (57_600, 6_400)
    drawn = {tuple(r) for r in np.concatenate([split.train, split.holdout]).tolist()}
    assert not any(tuple(r) in drawn for r in test.tolist())
    with pytest.raises(ConfigError, match="only grid2d and fashion have a separate test set"):
        load_test_data(make_config("mixture1d"))


def test_digits_data() -> None:
    d = load_training_data(make_config("digits"))
    assert d.sample_shape == (1, 8, 8) and len(d.train) + len(d.holdout) == 1797
    assert len(d.holdout) == 180


def test_missing_image_root_before_training(tmp_path: Path) -> None:
    cfg = make_config("image-folder", data_root=tmp_path / "none")
    with pytest.raises(InputError, match="not found; downloads are disabled"):
        train_and_save(cfg, tmp_path / "out")
    assert not (tmp_path / "out" / "model.json").exists()


def test_short_training_lowers_discriminator_loss() -> None:
    cfg = make_config("grid2d", seed=0, **TINY_GRID)
    with deterministic(cfg.seed, 1, torch.device("cpu")):
        data = load_training_data(cfg)
        g, d = build_pair("mlp", data.sample_shape, latent_dim=cfg.latent_dim)
        real = torch.from_numpy(data.holdout)
        z = torch.randn(len(real), cfg.latent_dim, generator=torch.Generator().manual_seed(1))
        before = discriminator_loss(g, d, real, z)
        history = train_gan(cfg, g, d, data.train)
        after = discriminator_loss(g, d, real, z)
    assert abs(before - math.log(4)) < 0.02  # an untrained D is at chance
    assert after < before - 0.1  # on held-out real and fixed latents (1.39 -> 1.07 with this seed)
    assert all(s.d_loss < math.log(4) for s in history)  # D beats chance throughout
    assert [s.epoch for s in history] == [1, 2, 3]


def test_run_writes_loadable_directories_and_is_reproducible(tmp_path: Path) -> None:
    cfg = make_config("grid2d", seed=3, save_epochs=[1], **TINY_GRID)
    out = train_and_save(cfg, tmp_path / "a")
    assert (out / "epoch-001" / "generator.pt2").exists()
    meta = json.loads((out / "model.json").read_text())
    assert meta["dataset"] == "grid2d" and meta["epochs"] == 3 and meta["seed"] == 3
    assert meta["architecture"] == "mlp-4x100-relu" and meta["latent_dim"] == 2
    assert meta["data"]["holdout_size"] == 200 and meta["training"]["config"]["lr"] == 1e-3
    assert json.loads((out / "epoch-001" / "model.json").read_text())["epochs"] == 1

    loaded = load_pair(resolve_model(out))
    assert loaded.sample_shape == (2,) and loaded.latent_dim == 2
    assert load_real_samples(out / "real.npy", (2,)).shape == (200, 2)

    again = load_pair(resolve_model(train_and_save(cfg, tmp_path / "b")))
    z = torch.randn(50, 2)
    with torch.inference_mode():
        assert torch.equal(loaded.generator(z), again.generator(z))
        assert torch.equal(loaded.discriminator(z), again.discriminator(z))
    # An intermediate epoch equals a run stopped there: saving draws nothing from the training RNG.
    short = load_pair(resolve_model(train_and_save(make_config("grid2d", seed=3, **{**TINY_GRID, "epochs": 1}), tmp_path / "c")))
    early = load_pair(resolve_model(out / "epoch-001"))
    with torch.inference_mode():
        assert torch.equal(short.generator(z), early.generator(z))

    with pytest.raises(OutputError, match="already holds a model"):
        train_and_save(cfg, out)


def test_dcgan_digits_run(tmp_path: Path) -> None:
    cfg = make_config("digits", train_size=200, epochs=1, batch_size=32, width=8, latent_dim=8)
    loaded = load_pair(resolve_model(train_and_save(cfg, tmp_path)))
    assert loaded.sample_shape == (1, 8, 8) and loaded.latent_dim == 8
    with torch.inference_mode():
        x = loaded.generator(torch.randn(4, 8))
    assert x.abs().max() <= 1.0


def test_image_folder_run(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(images / f"{i}.png")
    cfg = make_config("image-folder", data_root=images, image_size=8, epochs=1, batch_size=4, width=4, latent_dim=4)
    out = train_and_save(cfg, tmp_path / "model")
    assert load_real_samples(out / "real.npy", (3, 8, 8)).shape == (1, 3, 8, 8)
    assert load_pair(resolve_model(out)).sample_shape == (3, 8, 8)


def test_main_reports_one_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = train_job.main(["--dataset", "cifar10", "--data-root", str(tmp_path / "nope"), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().count("\n") == 0 and "nope not found; downloads are disabled" in err
    assert "Traceback" not in err
    code = train_job.main(["--dataset", "grid2d", "--epochs", "2", "--save-epochs", "5", "--output", str(tmp_path), "--debug"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" in err and "--save-epochs 5 is outside 1..2" in err


def test_main_refuses_a_relative_output_under_job_submission(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # what Ray sets for a submitted entrypoint
    monkeypatch.chdir(tmp_path)
    code = train_job.main(["--dataset", "mixture1d", "--epochs", "1", "--output", "relative/dir"])
    err = capsys.readouterr().err
    assert code == 2 and "--output 'relative/dir' is relative" in err and "Traceback" not in err
    assert not (tmp_path / "relative").exists()


def test_job_runs_as_a_module(tmp_path: Path) -> None:
    args = ["--dataset", "mixture1d", "--train-size", "640", "--epochs", "2", "--batch-size", "64", "--save-epochs", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "jobs.train", *args, "--output", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "epoch 2/2" in done.stderr and "wrote" in done.stderr  # plain log lines: stderr is not a terminal
    assert load_pair(resolve_model(tmp_path)).sample_shape == (1,)
    assert (tmp_path / "epoch-001" / "model.json").exists()


def test_job_submit_trains_on_the_cluster(ray_head, tmp_path: Path) -> None:
    url, env = ray_head
    out = tmp_path / "submitted"
    args = ["--dataset", "mixture1d", "--train-size", "200", "--epochs", "1", "--batch-size", "32", "--width", "8"]
    done = subprocess.run(
        ["ray", "job", "submit", "--address", url, "--working-dir", ".", "--",
         "python", "-m", "jobs.train", *args, "--output", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert {p.name for p in out.iterdir()} >= {"generator.pt2", "discriminator.pt2", "real.npy", "model.json"}
    files = resolve_model(out)
    assert files.metadata["dataset"] == "mixture1d" and files.metadata["epochs"] == 1
    assert load_pair(files).sample_shape == (1,)
    assert load_real_samples(out / "real.npy", (1,)).shape == (20, 1)


# ------------------------------------------------------------------ fashion


@needs_fashion
def test_fashion_training_data_takes_the_fixed_roles() -> None:
    d = load_training_data(make_config("fashion", train_size=300, holdout_limit=50))
    images, _ = datasets.fashion_mnist(split="train")
    roles = datasets.fashion_split_indices()
    assert d.sample_shape == (1, 28, 28)
    assert d.train.shape == (300, 1, 28, 28) and d.holdout.shape == (50, 1, 28, 28)
    assert np.array_equal(d.train, images[roles["gan"][:300]])
    assert np.array_equal(d.holdout, images[roles["heldout"][:50]])
    assert (d.info["train_size"], d.info["holdout_size"]) == (300, 50)
    # The roles ignore the seed: another seed's held-out reals are the same images.
    other = load_training_data(make_config("fashion", seed=7, train_size=300, holdout_limit=50))
    assert np.array_equal(other.holdout, d.holdout)
    full = load_training_data(make_config("fashion"))
    assert (len(full.train), len(full.holdout)) == (54_000, 6_000)


@needs_fashion
def test_fashion_test_set() -> None:
    test = load_test_data(make_config("fashion"))
    assert test.shape == (10_000, 1, 28, 28) and test.dtype == np.float32
    assert np.array_equal(test, datasets.fashion_mnist(split="test")[0])


@needs_fashion
def test_fashion_short_run_writes_a_loadable_model(tmp_path: Path) -> None:
    out = train_and_save(make_config("fashion", save_epochs=[1], **TINY_FASHION), tmp_path / "m")
    files = resolve_model(out)
    meta = files.metadata
    assert meta["dataset"] == "fashion" and meta["architecture"] == "dcgan-28x28-w4" and meta["latent_dim"] == 100
    assert meta["data"]["train_size"] == 256 and meta["real_samples"] == 40
    pair = load_pair(files)
    assert pair.sample_shape == (1, 28, 28)
    real = load_real_samples(files.real, pair.sample_shape)
    assert np.array_equal(real, datasets.fashion_mnist(split="train")[0][datasets.fashion_split_indices()["heldout"][:40]])
    with torch.inference_mode():
        x = pair.generator(torch.randn(8, 100))
        assert x.shape == (8, 1, 28, 28) and x.abs().max() <= 1.0
        assert pair.discriminator(x).shape == (8,)
    assert (out / "epoch-001" / "model.json").exists() and (out / "train-state.pt").exists()


def test_fashion_missing_files_stop_the_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = train_job.main(["--dataset", "fashion", "--data-root", str(tmp_path / "none"), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.strip().count("\n") == 0
    assert "apt-get install dataset-fashion-mnist" in err and "--data-root" in err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------- resume


def _outputs(directory: Path) -> tuple[torch.Tensor, torch.Tensor]:
    pair = load_pair(resolve_model(directory))
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        x = pair.generator(z)
        return x, pair.discriminator(x)


def test_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    whole = train_and_save(make_config("grid2d", seed=4, save_epochs=[1], **TINY_GRID), tmp_path / "whole")
    # "Interrupted" after epoch 1: a run of 1 epoch leaves the same train-state.pt as a killed run would.
    part = train_and_save(make_config("grid2d", seed=4, **{**TINY_GRID, "epochs": 1}), tmp_path / "part")
    assert (part / "train-state.pt").exists()
    lines: list[str] = []
    train_and_save(make_config("grid2d", seed=4, save_epochs=[1], **TINY_GRID), part, resume=True, log=lines.append)
    assert any("resuming after epoch 1" in line for line in lines)
    for a, b in zip(_outputs(whole), _outputs(part)):
        assert torch.equal(a, b)
    meta = json.loads((part / "model.json").read_text())
    assert meta["epochs"] == 3
    # epoch-001/ was not rewritten by the resumed run (it only trained epochs 2 and 3).
    assert not (part / "epoch-001").exists()


def test_resume_checks(tmp_path: Path) -> None:
    cfg = make_config("grid2d", seed=4, **{**TINY_GRID, "epochs": 1})
    with pytest.raises(OutputError, match="holds no train-state.pt to resume from"):
        train_and_save(cfg, tmp_path / "empty", resume=True)
    out = train_and_save(cfg, tmp_path / "r")
    with pytest.raises(OutputError, match="already trained to epoch 1; pass a larger --epochs"):
        train_and_save(cfg, out, resume=True)
    with pytest.raises(ConfigError, match=r"lr is 0\.002 here and 0\.001 in"):
        train_and_save(make_config("grid2d", seed=4, **{**TINY_GRID, "epochs": 2, "lr": 2e-3}), out, resume=True)
    with pytest.raises(ConfigError, match="contradict"):
        train_and_save(cfg, out, resume=True, overwrite=True)
    with pytest.raises(OutputError, match="already holds a model .*or --resume with a larger --epochs"):
        train_and_save(cfg, out)
    # A run killed before its first save: only the state is there.
    for name in ("generator.pt2", "discriminator.pt2", "real.npy", "model.json"):
        (out / name).unlink()
    with pytest.raises(OutputError, match="unfinished training run .*pass --resume"):
        train_and_save(cfg, out)
    (out / "train-state.pt").write_bytes(b"not a torch file")
    with pytest.raises(OutputError, match="train-state.pt cannot be read"):
        train_and_save(make_config("grid2d", seed=4, **TINY_GRID), out, resume=True)

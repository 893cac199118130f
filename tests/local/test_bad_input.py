"""Bad input: one sentence on stderr, exit 2, no traceback, nothing that looks complete."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from jobs import generate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(argv, capsys):
    code = generate.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def assert_one_clear_error(code, err, *fragments, out=None):
    assert code == 2
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1, err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert not any("Traceback" in line for line in err)
    if out is not None:
        assert not (out / "_SUCCESS").exists()
        assert not list(out.glob("samples/*.parquet"))


class _Gen(torch.nn.Module):
    def __init__(self, width=2):
        super().__init__()
        self.width = width

    def forward(self, z):
        return z[:, :1].repeat(1, self.width)


class _NaNAbove(torch.nn.Module):
    """D that is NaN on part of the sample space."""

    def forward(self, x):
        s = x.sum(dim=1)
        return torch.where(s > 1.5, torch.full_like(s, float("nan")), s)


def _export(module, example, path):
    batch = torch.export.Dim("batch", min=1)
    torch.export.save(torch.export.export(module, (example,), dynamic_shapes=({0: batch},)), str(path))


@pytest.fixture
def tmp(tmp_path):
    return tmp_path


def test_flags_below_one_are_refused(tmp, capsys):
    code, err = run_main(["--num-samples", "0", "--output", str(tmp / "o")], capsys)
    assert_one_clear_error(code, err, "--num-samples must be at least 1", out=tmp / "o")
    code, err = run_main(["--chain-length", "0", "--output", str(tmp / "o")], capsys)
    assert_one_clear_error(code, err, "--chain-length must be at least 1", out=tmp / "o")
    assert not (tmp / "o").exists()


def test_config_file_with_an_unknown_key_or_a_python_tag_is_refused(tmp, capsys):
    (tmp / "bad.yaml").write_text("num_samples: 10\nchain_lenght: 5\n")
    code, err = run_main(["--config", str(tmp / "bad.yaml"), "--output", str(tmp / "o")], capsys)
    assert_one_clear_error(code, err, "unknown option 'chain_lenght'", str(tmp / "bad.yaml"))
    (tmp / "evil.yaml").write_text("num_samples: !!python/object/apply:os.system ['touch /tmp/pwned-by-yaml']\n")
    code, err = run_main(["--config", str(tmp / "evil.yaml"), "--output", str(tmp / "o")], capsys)
    assert_one_clear_error(code, err, "cannot be parsed")
    assert not os.path.exists("/tmp/pwned-by-yaml")
    (tmp / "ok.toml").write_text("num_samples = 10\nchain-length = 4\n")
    config, _ = generate.parse_job_config(["--config", str(tmp / "ok.toml"), "--output", "x", "--num-samples", "3"])
    assert config.sampling.num_samples == 3 and config.sampling.chain_length == 4  # flags win


def test_missing_or_unreadable_model_files(ray_session, tmp, capsys):
    code, err = run_main(["--generator", str(tmp / "nope.pt2"), "--discriminator", str(tmp / "nope.pt2"),
                          "--output", str(tmp / "o")], capsys)
    assert_one_clear_error(code, err, "nope.pt2", out=tmp / "o")
    (tmp / "junk.pt2").write_bytes(os.urandom(256))
    _export(_NaNAbove(), torch.zeros(3, 2), tmp / "d.pt2")
    np.save(tmp / "real.npy", np.zeros((10, 2), np.float32))
    # The actors find the junk as they load the pair: still one sentence, without their tracebacks.
    code, err = run_main(["--generator", str(tmp / "junk.pt2"), "--discriminator", str(tmp / "d.pt2"),
                          "--latent-dim", "2", "--real", str(tmp / "real.npy"), "--output", str(tmp / "o2")], capsys)
    assert_one_clear_error(code, err, "junk.pt2", out=tmp / "o2")


def test_a_model_file_the_actors_cannot_load_prints_one_sentence_and_no_actor_traceback(ray_session, tmp):
    # The driver leaves loading G and D to the actors; as a user runs it, Ray forwards the actors'
    # output to this stderr, where an actor that died in __init__ would print its traceback.
    (tmp / "junk.pt2").write_bytes(os.urandom(256))
    _export(_NaNAbove(), torch.zeros(3, 2), tmp / "d.pt2")
    np.save(tmp / "real.npy", np.zeros((10, 2), np.float32))
    command = [sys.executable, "-m", "jobs.generate", "--generator", str(tmp / "junk.pt2"), "--discriminator",
               str(tmp / "d.pt2"), "--latent-dim", "2", "--real", str(tmp / "real.npy"), "--output", str(tmp / "o"),
               "--ray-address", ray_session.get_runtime_context().gcs_address]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    err = done.stderr.strip().splitlines()
    assert_one_clear_error(done.returncode, err, "junk.pt2", out=tmp / "o")
    assert not any(line.lstrip().startswith('File "') or "SIGABRT" in line or "Unhandled error" in line
                   for line in err), done.stderr


def test_torchscript_pair_whose_shapes_do_not_connect(ray_session, tmp, capsys):
    g = torch.jit.script(_Gen(width=3))
    g.save(str(tmp / "g.pt"))
    torch.jit.script(_NaNAbove()).save(str(tmp / "d.pt"))
    np.save(tmp / "real.npy", np.zeros((10, 2), np.float32))
    # G makes [B, 3]; D sums any width, so make D demand width 2 with a linear layer.
    torch.jit.script(torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.Flatten(0))).save(str(tmp / "d.pt"))
    code, err = run_main(["--generator", str(tmp / "g.pt"), "--discriminator", str(tmp / "d.pt"),
                          "--latent-dim", "2", "--real", str(tmp / "real.npy"), "--output", str(tmp / "o")], capsys)
    assert_one_clear_error(code, err, "d.pt", out=tmp / "o")


def test_real_samples_of_the_wrong_shape(ray_session, tiny_model, tmp, capsys):
    np.save(tmp / "real.npy", np.zeros((50, 3), np.float32))
    code, err = run_main(["--model", str(tiny_model), "--real", str(tmp / "real.npy"), "--output", str(tmp / "o")], capsys)
    assert_one_clear_error(code, err, "real.npy", "[3]", out=tmp / "o")


def test_pickled_real_samples_are_refused(ray_session, tiny_model, tmp, capsys):
    np.save(tmp / "real.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    code, err = run_main(["--model", str(tiny_model), "--real", str(tmp / "real.npy"), "--output", str(tmp / "o")], capsys)
    assert_one_clear_error(code, err, "real.npy", "pickle", out=tmp / "o")


def test_discriminator_with_nan_on_the_loaders_check_batch_is_refused_at_load(ray_session, tmp, capsys):
    _export(_Gen(), torch.zeros(3, 2), tmp / "g.pt2")
    _export(_NaNAbove(), torch.zeros(3, 2), tmp / "d.pt2")
    np.save(tmp / "real.npy", np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32) * 0.1)
    out = tmp / "o"
    code, err = run_main(["--generator", str(tmp / "g.pt2"), "--discriminator", str(tmp / "d.pt2"),
                          "--real", str(tmp / "real.npy"), "--num-samples", "100", "--chain-length", "20",
                          "--quiet", "--output", str(out)], capsys)
    assert_one_clear_error(code, err, "non-finite score", str(tmp / "d.pt2"), out=out)


class _BadAbove(torch.nn.Module):
    """D that gives ``bad`` (NaN or an infinity) where a sample's first coordinate exceeds ``threshold``."""

    def __init__(self, threshold: float, bad: float):
        super().__init__()
        self.threshold = threshold
        self.bad = bad

    def forward(self, x):
        s = x.sum(dim=1)
        return torch.where(x[:, 0] > self.threshold, torch.full_like(s, self.bad), s)


# 100 chains of 20 proposals in 4 shards of 500, on one actor: shards are scored in order.
_SHARD_PROPOSALS, _REAL_ROWS = 500, 300


def _pair_bad_on_some_proposals(tmp, seed, bad, torchscript=False):
    """G and a D finite on the loader's check batch, the real samples and the calibration draws, but
    ``bad`` on some proposals: (argv, D's path, index of the first bad shard, bad scores in it)."""
    from mhgan_dist.core import streams
    from mhgan_dist.models import load_pair, resolve_model

    # G copies a latent's first coordinate, so D sees it: above every calibration draw's, D is bad.
    threshold = float(streams.latents(seed, streams.Stream.CALIBRATION, 0, _REAL_ROWS, 2)[:, 0].max())
    first = streams.latents(seed, streams.Stream.PROPOSALS, 0, 4 * _SHARD_PROPOSALS, 2)[:, 0]
    bad_rows = np.flatnonzero(first > threshold)
    assert bad_rows.size, "the seed gives no proposal beyond the calibration draws"
    shard = int(bad_rows[0] // _SHARD_PROPOSALS)
    count = int(np.sum(bad_rows // _SHARD_PROPOSALS == shard))
    if torchscript:
        g, d = tmp / "g.pt", tmp / "d.pt"
        torch.jit.script(_Gen()).save(str(g))
        torch.jit.script(_BadAbove(threshold, bad)).save(str(d))
    else:
        g, d = tmp / "g.pt2", tmp / "d.pt2"
        _export(_Gen(), torch.zeros(3, 2), g)
        _export(_BadAbove(threshold, bad), torch.zeros(3, 2), d)
    real = np.random.default_rng(0).normal(size=(_REAL_ROWS, 2)).astype(np.float32) * 0.1
    np.save(tmp / "real.npy", real)
    load_pair(resolve_model(None, generator=str(g), discriminator=str(d), latent_dim=2,
                            real=str(tmp / "real.npy")))  # the loader's check passes: the job gets going
    argv = ["--generator", str(g), "--discriminator", str(d), "--latent-dim", "2", "--real", str(tmp / "real.npy"),
            "--num-samples", "100", "--chain-length", "20", "--shard-chains", str(_SHARD_PROPOSALS // 20),
            "--num-actors", "1", "--batch-size", "256", "--seed", str(seed), "--quiet", "--output", str(tmp / "o")]
    return argv, d, shard, count


def _assert_stopped_and_counted(tmp, code, err, d, shard, count, kind):
    import json

    assert_one_clear_error(code, err, f"discriminator {d} gave {count} non-finite score(s)",
                           f"on proposal shard {shard} ", "the run stops")
    out = tmp / "o"
    assert not (out / "_SUCCESS").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False
    recorded = manifest["nonfinite_scores"]
    assert (recorded["count"], recorded[kind], recorded["shard"], recorded["policy"]) == (count, count, shard, "stop")
    assert f"proposals/shard-{shard:06d}.parquet" not in manifest["files"]
    assert not (out / "proposals" / f"shard-{shard:06d}.parquet").exists()
    assert all(f"proposals/shard-{i:06d}.parquet" in manifest["files"] for i in range(shard))


def test_discriminator_with_nan_on_some_proposals_stops_and_counts_them(ray_session, tmp, capsys):
    argv, d, shard, count = _pair_bad_on_some_proposals(tmp, seed=0, bad=float("nan"))
    code, err = run_main(argv, capsys)
    _assert_stopped_and_counted(tmp, code, err, d, shard, count, "nan")
    # Resuming the same command scores the same proposals and refuses the same way.
    code, err = run_main(argv, capsys)
    _assert_stopped_and_counted(tmp, code, err, d, shard, count, "nan")


def test_discriminator_with_inf_on_some_proposals_stops_and_counts_them(ray_session, tmp):
    argv, d, shard, count = _pair_bad_on_some_proposals(tmp, seed=3, bad=float("inf"), torchscript=True)
    # As a user runs it: Ray's own logging of the job's abandoned calls reaches this stderr too.
    command = [sys.executable, "-m", "jobs.generate", *argv,
               "--ray-address", ray_session.get_runtime_context().gcs_address]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    err = done.stderr.strip().splitlines()
    _assert_stopped_and_counted(tmp, done.returncode, err, d, shard, count, "posinf")
    assert not any("Unhandled error" in line or line.lstrip().startswith('File "') for line in err), done.stderr


def test_output_that_is_not_writable(ray_session, tiny_model, tmp, capsys):
    (tmp / "a-file").write_text("x")
    code, err = run_main(["--model", str(tiny_model), "--num-samples", "5", "--output", str(tmp / "a-file" / "run")], capsys)
    assert_one_clear_error(code, err, "not writable", str(tmp / "a-file" / "run"))


def test_a_manifest_naming_paths_outside_the_run_is_refused(ray_session, tiny_model, tmp, capsys):
    out = tmp / "run"
    argv = ["--model", str(tiny_model), "--num-samples", "20", "--chain-length", "5", "--quiet", "--output", str(out)]
    assert generate.main(argv) == 0
    (out / "_SUCCESS").unlink()
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"]["../../escape.parquet"] = {"path": "../../escape.parquet", "rows": 1, "bytes": 1, "sha256": "0"}
    (out / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    code, err = run_main(argv, capsys)
    assert_one_clear_error(code, err, "escapes the run directory")


def test_the_command_line_exit_code_and_debug_traceback(tmp):
    command = [sys.executable, "-m", "jobs.generate", "--num-samples", "-4", "--output", str(tmp / "o")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: --num-samples must be at least 1, got -4"]
    debug = subprocess.run([*command, "--debug"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert debug.returncode == 2 and "Traceback" in debug.stderr

"""A model directory's recommended sampling settings (model.json "sampling_defaults")."""

from __future__ import annotations

import json
import shutil

import pytest

from jobs import generate
from mhgan_dist.errors import ModelError
from mhgan_dist.run.recommendations import model_recommendation, read_recommendation
from tests.conftest import assert_same_rows

RECOMMENDED = {"settings": {"calibration": "platt", "odds_power": 0.5, "chain_length": 12},
               "reason": "the model's own study chose them"}


def _with_recommendation(tiny_model, tmp_path, block=RECOMMENDED):
    directory = tmp_path / "recommending"
    shutil.copytree(tiny_model, directory)
    metadata = json.loads((directory / "model.json").read_text())
    metadata["sampling_defaults"] = block
    (directory / "model.json").write_text(json.dumps(metadata))
    return directory


def test_unset_options_take_the_models_recommendation_and_flags_win(tiny_model, tmp_path):
    model = _with_recommendation(tiny_model, tmp_path)
    config, runtime = generate.parse_job_config(["--model", str(model), "--output", "x"])
    assert (config.sampling.calibration, config.sampling.odds_power, config.sampling.chain_length) == ("platt", 0.5, 12)
    assert runtime["recommended"]["used"] == RECOMMENDED["settings"]
    assert "the model's own study chose them" in runtime["recommended"]["line"]

    config, runtime = generate.parse_job_config(["--model", str(model), "--odds-power", "1", "--output", "x"])
    assert config.sampling.odds_power == 1.0 and config.sampling.calibration == "platt"
    assert runtime["recommended"]["overridden"] == ["odds_power"]
    assert "--odds-power kept" in runtime["recommended"]["line"]

    # The base picker runs no chain: the tempering it cannot take is not filled in (the config would refuse it).
    config, _ = generate.parse_job_config(["--model", str(model), "--picker", "base", "--output", "x"])
    assert config.sampling.odds_power == 1.0 and config.sampling.chain_length == 12


def test_a_model_without_a_recommendation_keeps_the_job_defaults(tiny_model):
    config, runtime = generate.parse_job_config(["--model", str(tiny_model), "--output", "x"])
    assert runtime["recommended"] is None
    assert (config.sampling.calibration, config.sampling.odds_power, config.sampling.chain_length) == (
        "isotonic", 1.0, 640)


@pytest.mark.parametrize("block, words", [
    ({"settings": {"odds_power": 0.5}}, "without a 'reason'"),
    ({"settings": {"seed": 3}, "reason": "r"}, "may only recommend"),
    ({"settings": {"odds_power": 2.0}, "reason": "r"}, "--odds-power must be in (0, 1]"),
    ({"settings": {"odds_power": "half"}, "reason": "r"}, "not a number"),
    ({"settings": {"chain_length": 1.5}, "reason": "r"}, "not a whole number"),
    ({"settings": {"calibration": "cal.json"}, "reason": "r"}, "must name a calibration method"),
    ({"settings": {"calibration": "magic"}, "reason": "r"}, "--calibration must be one of"),
    ({"settings": {}, "reason": "r"}, "no settings"),
    ([1, 2], "not an object"),
])
def test_a_malformed_recommendation_is_refused_naming_the_file(block, words):
    with pytest.raises(ModelError) as raised:
        read_recommendation({"sampling_defaults": block}, "m/model.json")
    assert "m/model.json" in str(raised.value) and words in str(raised.value)


def test_the_cli_refuses_a_malformed_recommendation_in_one_sentence(tiny_model, tmp_path, capsys):
    model = _with_recommendation(tiny_model, tmp_path, {"settings": {"odds_power": 0}, "reason": "r"})
    assert generate.main(["--model", str(model), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "sampling_defaults" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_shipped_models_recommendations_are_valid():
    from mhgan_dist.models import SHIPPED_MODELS

    for name in SHIPPED_MODELS:
        model_recommendation(name)  # raises on a malformed block
    fashion = model_recommendation("fashion")
    assert fashion is not None and fashion.settings == {"calibration": "none", "odds_power": 0.25, "chain_length": 10}
    assert model_recommendation("grid2d") is None  # grid2d runs at the job-wide defaults


def test_reading_a_recommendation_imports_neither_torch_nor_ray():
    # The job reads it while parsing flags, before it decides whether to start anything.
    import subprocess
    import sys

    code = ("import sys; from mhgan_dist.run.recommendations import model_recommendation; "
            "assert model_recommendation('fashion') is not None; "
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_recommended_run_records_it_and_matches_the_same_flags_given(ray_session, tiny_model, tmp_path, capsys):
    import json as json_

    model = _with_recommendation(tiny_model, tmp_path)
    small = ["--num-samples", "40", "--seed", "2", "--quiet"]
    assert generate.main(["--model", str(model), *small, "--output", str(tmp_path / "rec")]) == 0
    assert "the model recommends --calibration platt --odds-power 0.5 --chain-length 12" in capsys.readouterr().err
    manifest = json_.loads((tmp_path / "rec" / "manifest.json").read_text())
    assert manifest["model_recommendation"]["used"] == RECOMMENDED["settings"]
    explicit = ["--calibration", "platt", "--odds-power", "0.5", "--chain-length", "12"]
    assert generate.main(["--model", str(model), *small, *explicit, "--output", str(tmp_path / "flags")]) == 0
    assert_same_rows(tmp_path / "rec", tmp_path / "flags")
    flags_manifest = json_.loads((tmp_path / "flags" / "manifest.json").read_text())
    assert flags_manifest["run_id"] == manifest["run_id"] and "model_recommendation" not in flags_manifest

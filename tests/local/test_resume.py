"""Determinism, re-runs, resume, re-picking and faults, on a real local Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from jobs import generate, repick
from mhgan_dist.errors import OutputError, StageError
from mhgan_dist.run.faults import FaultPlan
from mhgan_dist.pipeline.driver import run_job
from tests.conftest import assert_same_rows, read_samples

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def args(model, out, *extra):
    return ["--model", str(model), "--num-samples", "240", "--chain-length", "20", "--shard-chains", "50",
            "--seed", "7", "--batch-size", "256", "--quiet", "--output", str(out), *extra]


def run(argv, faults: str | None = None, state=None):
    config, _ = generate.parse_job_config(argv)
    plan = FaultPlan.parse(faults, str(state)) if faults else FaultPlan()
    return run_job(config, faults=plan, show_progress=False, log=lambda m: None)


@pytest.fixture(scope="module")
def reference(ray_session, tiny_model, tmp_path_factory):
    """An uninterrupted run with one actor: what every other run must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "run"
    summary = run(args(tiny_model, out, "--num-actors", "1"))
    assert summary.status == "complete" and summary.num_samples == 240
    return out


def test_same_rows_from_one_and_two_actors(reference, tiny_model, tmp_path):
    summary = run(args(tiny_model, tmp_path / "two", "--num-actors", "2"))
    assert summary.status == "complete"
    assert_same_rows(reference, tmp_path / "two")


def test_finished_run_is_a_no_op(reference, tiny_model):
    before = {p: p.stat().st_mtime_ns for p in reference.rglob("*") if p.is_file()}
    summary = run(args(tiny_model, reference, "--num-actors", "2"))  # resources are not the config
    assert summary.status == "already complete" and summary.num_samples == 240
    assert {p: p.stat().st_mtime_ns for p in reference.rglob("*") if p.is_file()} == before


def test_another_config_is_refused_naming_the_options(reference, tiny_model):
    with pytest.raises(OutputError, match=r"--chain-length, --num-samples"):
        run([*args(tiny_model, reference)[:2], "--num-samples", "100", "--chain-length", "21",
             *args(tiny_model, reference)[6:]])
    assert generate.main([*args(tiny_model, reference), "--picker", "drs"]) == 2


def test_repick_with_another_k_and_picker_equals_a_fresh_run(reference, tiny_model, tmp_path):
    assert repick.main(["--from", str(reference), "--output", str(tmp_path / "re"), "--chain-length", "12",
                        "--num-samples", "400", "--picker", "drs", "--quiet"]) == 0
    fresh = args(tiny_model, tmp_path / "fresh", "--picker", "drs")
    fresh[3], fresh[5] = "400", "12"
    run(fresh)
    assert_same_rows(tmp_path / "re", tmp_path / "fresh")
    assert not (tmp_path / "re" / "proposals").exists()  # no proposal was made again
    # Asking for more proposals than the shards hold is refused.
    assert repick.main(["--from", str(reference), "--output", str(tmp_path / "big"), "--chain-length", "12",
                        "--num-samples", "401", "--quiet"]) == 2


def test_actor_killed_mid_shard_is_replaced_and_the_shard_redone(reference, tiny_model, tmp_path):
    summary = run(args(tiny_model, tmp_path / "run", "--num-actors", "1"), "shard:2:1:exit", tmp_path / "f")
    assert summary.status == "complete"
    assert (tmp_path / "f" / "shard-2").read_text() == "1"  # the fault did fire
    assert_same_rows(reference, tmp_path / "run")
    recovery = json.loads((tmp_path / "run" / "manifest.json").read_text())["recovery"]
    assert recovery["actors_lost"] == recovery["actors_replaced"] == 1
    # The dead actor's first unfinished call of each of its threads is charged: in G and D's thread the
    # shard, or the call before it when that one's reply was still on its way as the process died; in the
    # "chains" thread a chain part when one happened to be pending (timing decides which).
    charged = [failure["unit"] for failure in recovery["failures"]]
    assert len(charged) == len(set(charged)) <= 2, charged
    assert sum(not unit.startswith("chain part ") for unit in charged) == 1, charged
    assert all(unit.startswith(("proposal shard ", "samples part ", "chain part ")) for unit in charged), charged
    assert recovery["retries"] >= 1
    assert summary.lines()[2].startswith(f"recovered: {recovery['retries']} unit(s) run again, 1 proposal actor(s) "
                                         "lost, 1 replaced")


def test_chain_task_that_dies_is_retried(reference, tiny_model, tmp_path):
    run(args(tiny_model, tmp_path / "run"), "chains:1:2:exit", tmp_path / "f")
    assert (tmp_path / "f" / "chains-1").read_text() == "2"
    assert_same_rows(reference, tmp_path / "run")


def test_repeated_failure_stops_naming_the_shard_and_resumes_once_fixed(reference, tiny_model, tmp_path):
    # The actor survives a raised error, and a retry goes to another actor only when one is free
    # at that moment, so the shard fails on one or both of the two actors.
    with pytest.raises(StageError, match=r"proposal shard 3 failed 3 times, on [12] different proposal actors? "
                                         r"and is not tried again \(the last time: injected fault at shard 3\)"):
        run(args(tiny_model, tmp_path / "run", "--num-actors", "2"), "shard:3:always:raise", tmp_path / "f")
    assert not (tmp_path / "run" / "_SUCCESS").exists()
    assert run(args(tiny_model, tmp_path / "run")).status == "complete"
    assert_same_rows(reference, tmp_path / "run")


def test_corrupt_or_truncated_files_are_redone_on_resume(reference, tiny_model, tmp_path):
    out = tmp_path / "run"
    run(args(tiny_model, out))
    (out / "_SUCCESS").unlink()  # as if the driver died before the end
    shard = out / "proposals" / "shard-000001.parquet"
    shard.write_bytes(shard.read_bytes()[:-40])  # truncated
    for path in (out / "samples" / "part-000002.parquet", out / "proposals" / "shard-000003.parquet"):
        data = bytearray(path.read_bytes())
        data[100] ^= 0xFF  # same size, wrong checksum
        path.write_bytes(bytes(data))
    # A re-pick refuses the corrupt source rather than read it.
    assert repick.main(["--from", str(out), "--output", str(tmp_path / "re"), "--quiet"]) == 2
    assert run(args(tiny_model, out)).status == "complete"
    assert_same_rows(reference, out)
    manifest = json.loads((out / "manifest.json").read_text())
    # Shards 1 and 3 were made again; part 2's samples were rebuilt from its intact shard.
    assert manifest["stats"]["proposals_made_this_attempt"] == 2 * 50 * 20
    for index in (1, 3):
        assert pq.read_table(shard.parent / f"shard-00000{index}.parquet").equals(
            pq.read_table(reference / "proposals" / f"shard-00000{index}.parquet"))


@pytest.mark.parametrize("after_files", [2, 7])
def test_driver_killed_then_rerun_finishes_with_the_same_rows(reference, tiny_model, tmp_path, after_files):
    import ray

    out = tmp_path / "run"
    env = {**os.environ, "MHGAN_FAULTS": f"driver:{after_files}:1:exit", "MHGAN_FAULTS_STATE": str(tmp_path / "f")}
    command = [sys.executable, "-m", "jobs.generate", *args(tiny_model, out),
               "--ray-address", ray.get_runtime_context().gcs_address]
    killed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (out / "_SUCCESS").exists()
    rerun = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "complete: 240 samples" in rerun.stdout
    rows = read_samples(out)
    assert np.array_equal(rows["sample_id"], np.arange(240))
    assert_same_rows(reference, out)


def _cli_with_faults(argv, faults, state, monkeypatch, capsys):
    """``python -m jobs.generate`` in process, with MHGAN_FAULTS set as a user would: (exit code, stderr lines)."""
    monkeypatch.setenv("MHGAN_FAULTS", faults)
    monkeypatch.setenv("MHGAN_FAULTS_STATE", str(state))
    capsys.readouterr()
    code = generate.main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


def _assert_stopped_with_one_sentence(code, err, out, *fragments):
    assert code == 2
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1, err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert errors[0].endswith("fix the cause and re-run the same command to resume"), errors[0]
    assert not any("Traceback" in line for line in err), err
    assert not (out / "_SUCCESS").exists()
    assert json.loads((out / "manifest.json").read_text())["complete"] is False


def _assert_poison_unit_stopped_after_three_charges(out, tries_file, unit):
    """The invariants of a unit that kills every actor it runs on, whatever the timing; returns the other
    units charged. Deaths first charged to a neighbour (its reply lost with the process) add tries."""
    tries = int(tries_file.read_text())  # each try on a new actor
    recovery = json.loads((out / "manifest.json").read_text())["recovery"]
    charged = [f["unit"] for f in recovery["failures"]]
    assert charged.count(unit) == 3, charged
    others = [u for u in charged if u != unit]
    assert len(others) == len(set(others)), charged  # no innocent unit is charged twice
    # Only the poison unit kills actors: one per try; the last loss stopped the run, unreplaced.
    assert tries >= 3 and recovery["actors_lost"] == tries and recovery["actors_replaced"] == tries - 1
    return others


def test_actor_dying_on_every_try_of_a_shard_stops_the_command(ray_session, tiny_model, tmp_path, monkeypatch,
                                                                capsys):
    """A poison shard: each actor it runs on dies; after its third charged death the run stops, naming it.

    Of the calls pending on a dying actor, the first unfinished one of each thread is charged (the scheduler
    cannot tell which the process died in): a chain part in the other thread, or, if the previous shard's
    reply was still on its way, that shard instead of this one. A charged unit runs alone from then on, so
    an innocent one is charged once and then succeeds, and the shard's later tries are charged to it alone.
    """
    out = tmp_path / "run"
    code, err = _cli_with_faults(args(tiny_model, out, "--num-actors", "2"), "shard:1:always:exit",
                                 tmp_path / "f", monkeypatch, capsys)
    _assert_stopped_with_one_sentence(code, err, out, "proposal shard 1 failed 3 times, on 3 different proposal actors")
    others = _assert_poison_unit_stopped_after_three_charges(out, tmp_path / "f" / "shard-1", "proposal shard 1")
    assert all(unit.startswith(("chain part ", "proposal shard ")) for unit in others), others


def test_chain_task_failing_on_every_try_stops_the_command(ray_session, tiny_model, tmp_path, monkeypatch, capsys):
    """Chains are picked on the proposal actors: each try kills the actor it ran on.

    As with a poison shard, a death is charged to the first unfinished call of each of the actor's threads:
    when the reply of the chain part picked before it was still on its way as the process died, that part
    takes the charge in the chains thread (then runs alone and succeeds) and part 1 runs once more than it
    is charged.
    """
    out = tmp_path / "run"
    code, err = _cli_with_faults(args(tiny_model, out), "chains:1:always:exit", tmp_path / "f", monkeypatch, capsys)
    _assert_stopped_with_one_sentence(code, err, out, "chain part 1 failed 3 times, on 3 different proposal actors")
    _assert_poison_unit_stopped_after_three_charges(out, tmp_path / "f" / "chains-1", "chain part 1")


def test_more_actors_than_a_job_started_ray_holds_are_refused_at_once(ray_session, tiny_model, tmp_path, capsys):
    from tests.conftest import RAY_CPUS

    out = tmp_path / "run"
    capsys.readouterr()
    assert generate.main(args(tiny_model, out, "--num-actors", str(RAY_CPUS + 1))) == 2
    (error,) = capsys.readouterr().err.strip().splitlines()
    assert error == (
        f"error: --num-actors {RAY_CPUS + 1} x 1 CPU and 0 GPU each need {RAY_CPUS + 1} CPUs and 0 GPUs, but the "
        f"Ray this job started has {RAY_CPUS} CPUs and 0 GPUs and nothing will add more; ask for fewer (--num-actors, --cpus-per-actor, --gpus-per-actor) or join a "
        "cluster with --ray-address")
    assert not (out / "samples").exists()


# ------------------------------------------------------ what the identity covers


def test_real_samples_are_compared_by_content_and_a_changed_file_is_refused(reference, tiny_model, tmp_path):
    real = np.load(tiny_model / "real.npy")
    np.save(tmp_path / "real.npy", real)  # another path, the same samples: the same run
    assert run(args(tiny_model, reference, "--real", str(tmp_path / "real.npy"))).status == "already complete"
    real[0] += 0.5
    np.save(tmp_path / "real.npy", real)
    with pytest.raises(OutputError, match=r"differs in --real\)"):
        run(args(tiny_model, reference, "--real", str(tmp_path / "real.npy")))


def test_a_saved_calibration_reproduces_its_run_and_a_changed_file_is_refused(reference, tiny_model, tmp_path):
    saved = tmp_path / "calibration.json"
    saved.write_bytes((reference / "calibration" / "isotonic.json").read_bytes())
    out = tmp_path / "run"
    assert run(args(tiny_model, out, "--calibration", str(saved))).status == "complete"
    assert_same_rows(reference, out)
    body = json.loads(saved.read_text())
    body["num_fit"] += 1  # still a usable calibration, with other clip bounds
    saved.write_text(json.dumps(body))
    with pytest.raises(OutputError, match=r"differs in --calibration\)"):
        run(args(tiny_model, out, "--calibration", str(saved)))


def test_a_run_of_another_device_type_is_refused(reference, tiny_model, tmp_path):
    import shutil

    out = tmp_path / "gpu-run"
    shutil.copytree(reference, out)
    recorded = json.loads((out / "run.json").read_text())
    assert recorded["identity"]["resources.device"] == "cpu"
    recorded["identity"]["resources.device"] = "cuda"  # as if made on a GPU
    (out / "run.json").write_text(json.dumps(recorded))
    with pytest.raises(OutputError, match=r"differs in --device\)"):
        run(args(tiny_model, out, "--device", "cpu"))
    # Interrupted: with --device auto the actors come up on the CPU, and resuming there is refused.
    (out / "_SUCCESS").unlink()
    with pytest.raises(OutputError, match=r"differs in --device\)"):
        run(args(tiny_model, out))
    assert not (out / "_SUCCESS").exists()


def test_stored_proposal_samples_leave_the_rows_unchanged(reference, tiny_model, tmp_path):
    import pyarrow as pa

    out = tmp_path / "run"
    assert run(args(tiny_model, out, "--store-proposal-samples")).status == "complete"
    shard = pq.read_table(out / "proposals" / "shard-000000.parquet")
    assert isinstance(shard.schema.field("sample").type, pa.FixedShapeTensorType)
    assert shard.schema.field("sample").type.shape == [2] and shard.num_rows == 50 * 20
    assert_same_rows(reference, out)


def test_repick_takes_the_run_lease(reference, tmp_path, capsys):
    from mhgan_dist.run.lease import RunLease

    with RunLease(str(tmp_path / "re"), say=lambda _: None):
        assert repick.main(["--from", str(reference), "--output", str(tmp_path / "re"), "--quiet"]) == 2
    assert "is being written by another run" in capsys.readouterr().err
    assert not (tmp_path / "re" / "run.json").exists()

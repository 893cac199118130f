"""What a run tells its user: progress, warnings and the end summary (issue 4, item 4).

Also that the stages overlap in a finished run, and that `jobs.reproduce` runs
end to end at its smallest settings. Runs join the session's Ray: in-process
through `main`, as a user would through `python -m ...` with RAY_ADDRESS set.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from jobs import generate
from mhgan_dist.pipeline import progress as progress_module
from mhgan_dist.pipeline.driver import ACCEPT_RATE_WARNING, RESTART_RATE_WARNING
from mhgan_dist.pipeline.progress import Progress

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM = r"[\d,]+"
PROGRESS_LINE = re.compile(
    rf"progress: ({NUM})/({NUM}) proposals \(({NUM})/s\), ({NUM})/({NUM}) samples written, ({NUM}) s")


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def _python(ray_session, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """`python ARGS` in a fresh process, joined to the session's Ray (as under `ray job submit`); must exit 0."""
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    done = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _python_m(ray_session, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """`python -m ARGS` as a user runs it, joined to the session's Ray."""
    return _python(ray_session, "-m", *args, timeout=timeout)


# ------------------------------------------------------ the progress class


class _Stream(io.StringIO):
    """A text stream that is, or is not, a terminal."""

    def __init__(self, terminal: bool) -> None:
        super().__init__()
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


class _Clock:
    """Progress's view of `time`: a monotonic clock the test moves."""

    def __init__(self, now: float) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


def test_progress_off_a_terminal_is_plain_periodic_lines(monkeypatch):
    clock = _Clock(0.0)  # a clock just started: the first update still prints
    monkeypatch.setattr(progress_module, "time", clock)
    stream = _Stream(terminal=False)
    bar = Progress(1_000, 100, stream=stream, interval_s=10.0)
    assert bar.bar is None
    said = []
    for _ in range(30):  # 30 s of updates, one a second
        clock.now += 1.0
        bar.advance(proposals=30, samples=3)
        said.append(stream.getvalue().count("\n"))
    bar.close()
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text and "\b" not in text
    lines = text.splitlines()
    # The first update, then one line every 10 s (t = 11, 21), and one at the end.
    assert [said[i] - said[i - 1] for i in range(1, 30) if said[i] != said[i - 1]] == [1, 1]
    assert len(lines) == 4
    for line in lines:
        assert PROGRESS_LINE.fullmatch(line), line
    last = PROGRESS_LINE.fullmatch(lines[-1]).groups()
    assert [_int(g) for g in last[:2]] == [900, 1_000] and [_int(g) for g in last[3:5]] == [90, 100]
    assert _int(last[2]) == 900 // 30 and _int(last[5]) == 30  # proposals/s and elapsed seconds


def test_progress_on_a_terminal_is_a_bar_with_rate_and_samples():
    stream = _Stream(terminal=True)
    bar = Progress(1_000, 100, stream=stream, interval_s=0.0)
    assert bar.bar is not None
    bar.advance(proposals=600, samples=40)
    bar.advance(proposals=400, samples=60)
    bar.close()
    text = stream.getvalue()
    assert "\r" in text  # redrawn in place
    assert "progress:" not in text
    final = text.split("\r")[-1]
    assert "proposals: 100%" in final and "1.00k/1.00k" in final
    assert "proposal/s" in final and "samples 100/100" in final


def test_progress_disabled_writes_nothing():
    for terminal in (False, True):
        stream = _Stream(terminal)
        bar = Progress(10, 10, stream=stream, enabled=False)
        bar.advance(proposals=10, samples=10)
        bar.close()
        assert stream.getvalue() == "" and (bar.proposals, bar.samples) == (10, 10)


# ----------------------------------- a tiny grid2d run, as a user runs it

K_SMALL, N_SMALL = 2, 300


@pytest.fixture(scope="module")
def small_k_run(ray_session, tmp_path_factory):
    """`python -m jobs.generate` on grid2d with K=2, its stdout and stderr piped (not a terminal)."""
    out = tmp_path_factory.mktemp("output") / "k2"
    done = _python_m(ray_session, "jobs.generate", "--model", "grid2d", "--chain-length", str(K_SMALL),
                     "--num-samples", str(N_SMALL), "--num-actors", "1", "--output", str(out))
    manifest = json.loads((out / "manifest.json").read_text())
    table = pq.read_table(out / "samples").sort_by("sample_id")
    return out, done.stdout, done.stderr, manifest, table


def test_the_job_process_never_imports_torch_or_scikit_learn(ray_session, tmp_path):
    # Only the actors run G and D: torch in the driver costs every run about 2.5 s of CPU
    # before Ray starts (the actors' replies, too, must unpickle without it). The calibration
    # fit runs in the driver on numpy alone: scikit-learn and SciPy would cost about 2 s more.
    script = ("import sys\nfrom jobs.generate import main\ncode = main(sys.argv[1:])\n"
              "print('imported:', sorted({'torch', 'sklearn', 'scipy'} & set(sys.modules)))\nsys.exit(code)")
    done = _python(ray_session, "-c", script, "--model", "grid2d", "--chain-length", "4", "--num-samples", "40",
                   "--num-actors", "1", "--output", str(tmp_path / "out"))
    assert (tmp_path / "out" / "_SUCCESS").is_file()
    assert "imported: []" in done.stdout.splitlines(), done.stdout


def test_peak_memory_is_the_process_own_not_its_parents():
    # The manifest's driver_peak_rss: a job started by a big process (a benchmark, a notebook)
    # must not report its parent's peak, which Linux's ru_maxrss keeps across fork and exec.
    ballast = np.ones(64 << 20)  # 512 MiB, touched
    probe = "from mhgan_dist.pipeline.reports import peak_rss_bytes; print(peak_rss_bytes())"
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    del ballast
    assert done.returncode == 0, done.stderr
    assert 10 << 20 < int(done.stdout) < 256 << 20


def test_the_summary_agrees_with_the_manifest_and_the_samples(small_k_run):
    out, stdout, _, manifest, table = small_k_run
    stats, timings = manifest["stats"], manifest["timings"]
    lines = stdout.splitlines()
    head = re.fullmatch(rf"complete: ({NUM}) samples \(mh, K=(\d+)\) in (.+)", lines[0])
    assert head, lines
    assert _int(head[1]) == stats["num_samples"] == table.num_rows == N_SMALL
    assert int(head[2]) == K_SMALL and head[3] == str(out)
    rates = re.fullmatch(
        rf"acceptance rate ([\d.]+), restart rate ([\d.]+), calibration Z ([+-][\d.]+) -> ([+-][\d.]+), "
        rf"throughput ({NUM}) proposals/s, ([\d.]+) s", lines[1])
    assert rates, lines
    accepts = table.column("accepts").to_numpy()
    restarted = table.column("restarted").to_numpy(zero_copy_only=False)
    # Acceptance: accepted steps over all proposals; restarts: the share of chains (one sample each).
    assert stats["acceptance_rate"] == pytest.approx(accepts.sum() / (N_SMALL * K_SMALL))
    assert stats["restart_rate"] == pytest.approx(restarted.mean())
    assert rates[1] == f"{stats['acceptance_rate']:.3f}" and rates[2] == f"{stats['restart_rate']:.3f}"
    diagnostics = manifest["calibration"]["diagnostics"]
    before, after = diagnostics["before"]["dawid_z"], diagnostics["after"]["dawid_z"]
    assert (stats["calibration_z_before"], stats["calibration_z_after"]) == (before, after)
    assert (rates[3], rates[4]) == (f"{before:+.2f}", f"{after:+.2f}")
    assert abs(after) < abs(before)  # calibration helps on the shipped model
    assert stats["proposals_made_this_attempt"] == N_SMALL * K_SMALL
    assert timings["proposals_per_s"] == pytest.approx(N_SMALL * K_SMALL / timings["pipeline_s"])
    assert _int(rates[5]) == round(timings["proposals_per_s"])
    assert float(rates[6]) == pytest.approx(timings["total_s"], abs=5.0)


def test_progress_in_a_pipe_is_plain_periodic_lines(small_k_run):
    _, stdout, stderr, _, _ = small_k_run
    assert "\r" not in stderr and "\r" not in stdout
    lines = [line for line in stderr.splitlines() if line.startswith("progress:")]
    assert len(lines) >= 2, stderr  # at the start, then periodically, and at the end
    for line in lines:
        assert PROGRESS_LINE.fullmatch(line), line
    counts = [[_int(g) for g in PROGRESS_LINE.fullmatch(line).groups()] for line in lines]
    assert counts[-1][:2] == [N_SMALL * K_SMALL] * 2 and counts[-1][3:5] == [N_SMALL] * 2
    assert all(a[0] <= b[0] and a[3] <= b[3] for a, b in zip(counts, counts[1:]))
    assert "progress:" not in stdout  # the summary alone goes to stdout


def test_a_tiny_chain_length_warns_about_restarts_naming_k(small_k_run):
    _, stdout, _, manifest, _ = small_k_run
    stats = manifest["stats"]
    # At K=2 about half the chains accept neither proposal: the restart rule fires.
    assert stats["restart_rate"] > RESTART_RATE_WARNING
    assert stats["acceptance_rate"] >= ACCEPT_RATE_WARNING  # so only the restart warning
    warnings = [line for line in stdout.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and warnings == [f"warning: {w}" for w in stats["warnings"]]
    assert f"{stats['restart_rate']:.1%} of chains accepted nothing" in warnings[0]
    assert f"K={K_SMALL} may be too small" in warnings[0]


def test_stages_overlap_samples_are_written_before_the_last_proposal_shard(small_k_run):
    out, _, _, manifest, _ = small_k_run
    # The manifest's file records have no times, so completion is each file's
    # mtime: a file appears by an atomic rename after it is fully written.
    files = manifest["files"]
    shards = [name for name in files if name.startswith("proposals/")]
    parts = [name for name in files if name.startswith("samples/")]
    assert len(shards) == len(parts) >= 10
    done_at = {name: os.stat(out / name).st_mtime for name in shards + parts}
    last_shard = max(done_at[name] for name in shards)
    early = [name for name in parts if done_at[name] < last_shard]
    assert early, "every samples part was written after the last proposal shard"
    timings = manifest["timings"]
    assert timings["first_shard_started_at"] <= min(done_at[name] for name in early) < timings["last_shard_finished_at"]


# --------------------------------------------- a saturated discriminator


class _Identity(torch.nn.Module):
    def forward(self, z):
        return z  # G: the standard normal


class _Saturated(torch.nn.Module):
    def forward(self, x):
        # Data N(1, 1) against G's N(0, 1), told apart with enormous confidence: a
        # chain only moves to a proposal above its state, so it accepts about log K times.
        return 1000.0 * (x - 0.5)[:, 0]


def _export(module, path):
    batch = torch.export.Dim("batch", min=1)
    torch.export.save(torch.export.export(module, (torch.zeros(4, 1),), dynamic_shapes=({0: batch},)), str(path))


def test_a_saturated_discriminator_warns_about_the_acceptance_rate(ray_session, tmp_path, capsys):
    _export(_Identity(), tmp_path / "g.pt2")
    _export(_Saturated(), tmp_path / "d.pt2")
    np.save(tmp_path / "real.npy", np.random.default_rng(0).normal(1.0, 1.0, size=(2000, 1)).astype(np.float32))
    out = tmp_path / "run"
    code = generate.main([
        "--generator", str(tmp_path / "g.pt2"), "--discriminator", str(tmp_path / "d.pt2"),
        "--real", str(tmp_path / "real.npy"), "--calibration", "none", "--num-samples", "200",
        "--chain-length", "1000", "--shard-chains", "50", "--num-actors", "1", "--quiet", "--output", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    stats = json.loads((out / "manifest.json").read_text())["stats"]
    assert stats["acceptance_rate"] < ACCEPT_RATE_WARNING
    assert stats["restart_rate"] <= RESTART_RATE_WARNING  # chains start at real samples and still move
    warnings = [line for line in printed.splitlines() if line.startswith("warning: ")]
    assert warnings == [f"warning: the MH acceptance rate is {stats['acceptance_rate']:.2%}: D separates real "
                        "from generated almost perfectly (saturated); calibration or a longer chain may help"]


# ------------------------------------------------------ jobs.reproduce


def test_reproduce_runs_at_its_smallest_settings(ray_session, tmp_path):
    work = tmp_path / "k"
    done = _python_m(ray_session, "jobs.reproduce", "chain-length", "--work", str(work), "--lengths", "4",
                     "--seeds", "0", "--num-samples", "16", "--num-actors", "1", "--quiet")
    results = json.loads((work / "results.json").read_text())
    assert results["settings"]["lengths"] == [4] and results["settings"]["num_samples"] == 16
    rows = results["rows"]
    assert sorted(row["method"] for row in rows) == ["base", "drs", "drs-gamma0", "mh", "mh-raw"]
    columns = {"seed", "chain_length", "method", "run", "n", "js_nats", "js_bits", "hq_share", "modes_recovered",
               "acceptance_rate", "restart_rate", "no_accept_share"}
    for row in rows:
        assert columns <= row.keys(), row.keys()
        assert row["n"] == 16 and row["chain_length"] == 4 and row["seed"] == 0
        assert 0.0 <= row["hq_share"] <= 1.0 and row["js_nats"] >= 0.0
    mh = next(row for row in rows if row["method"] == "mh")
    assert 0.0 < mh["acceptance_rate"] <= 1.0 and 0.0 <= mh["restart_rate"] <= 1.0
    table = [line for line in (work / "results.md").read_text().splitlines() if line.startswith("|")]
    assert table[0] == "| K | method | JS nats | JS bits | HQ share | modes recovered | acceptance | restarts |"
    assert len(table) == 2 + 5 and all(line.startswith("| 4 | ") for line in table[2:])
    assert table[0] in done.stdout and f"results: {work / 'results.md'}" in done.stdout

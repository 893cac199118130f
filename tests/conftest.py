"""Shared fixtures: one real local Ray per test session, and helpers to run jobs."""

from __future__ import annotations

import os
import socket

import numpy as np
import pyarrow.parquet as pq
import pytest

# Tests never report usage stats, and never join a head someone left running.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

RAY_CPUS = 4  # logical, on a 2-core machine: the default layout runs 4 proposal actors


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    yield ray
    ray.shutdown()


def read_samples(run_dir) -> dict[str, np.ndarray]:
    """All output rows of a run, sorted by sample_id, as numpy columns (sample as [n, *shape])."""
    table = pq.read_table(os.path.join(run_dir, "samples")).sort_by("sample_id")
    out = {name: table.column(name).to_numpy() for name in table.column_names if name != "sample"}
    out["sample"] = table.column("sample").combine_chunks().to_numpy_ndarray()
    return out


def assert_same_rows(a_dir, b_dir) -> None:
    a, b = read_samples(a_dir), read_samples(b_dir)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A small untrained MLP pair on the 2-D grid: a model directory."""
    import torch

    from mhgan_dist.training import datasets
    from mhgan_dist.models import save_model_dir
    from mhgan_dist.models.architectures import MLPDiscriminator, MLPGenerator

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("models") / "tiny"
    save_model_dir(
        directory, MLPGenerator(hidden=16), MLPDiscriminator(hidden=16), latent_dim=2, sample_shape=(2,),
        real=datasets.grid2d(600, np.random.default_rng(0)), metadata={"dataset": "grid2d", "note": "untrained"},
    )
    return directory


def _auth_mode() -> str:
    """Token mode when a token is at hand, as `ray start --head` decides it."""
    import pathlib

    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return "token"
    token = pathlib.Path.home() / ".ray" / "auth_token"
    return "token" if token.is_file() and token.stat().st_size else "disabled"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_base():
    """A moto S3 server on loopback with bucket mhgan-test: yields (URI prefix, URI query)."""
    import shutil
    import socket
    import subprocess
    import sys
    import time

    pytest.importorskip("moto", reason="the S3 tests need moto[server] (pip install -e '.[test]')")
    import pyarrow.fs as pafs

    executable = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or shutil.which("moto_server")
    if executable is None:
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    port = _free_port()
    server = subprocess.Popen([executable, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.2)
        fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", access_key="testing",
                               secret_key="testing", region="us-east-1", allow_bucket_creation=True)
        fs.create_dir("mhgan-test")
        yield "s3://testing:testing@mhgan-test", f"endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    """A Ray head that accepts `ray job submit`: the one .ci/run started, else one of our own.

    Yields (dashboard URL, environment for Ray clients). Our own head runs
    under `ray start --block`, so stopping it stops only it, not the session's
    local Ray.
    """
    import signal
    import subprocess
    import sys
    import time

    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    def wait_until_jobs_accepted(url: str, head=None) -> None:
        # The dashboard answers before its job agent is ready to take submissions.
        deadline = time.monotonic() + 180
        while True:
            probe = subprocess.run([os.path.join(bin_dir, "ray"), "job", "list", "--address", url],
                                   env=env, capture_output=True, text=True)
            if probe.returncode == 0:
                return
            if (head is not None and head.poll() is not None) or time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head at {url} does not take jobs: {probe.stderr[-1500:]}")
            time.sleep(2)

    if os.environ.get("MHGAN_CI_DASHBOARD"):
        env["RAY_AUTH_MODE"] = os.environ.get("RAY_AUTH_MODE", _auth_mode())
        wait_until_jobs_accepted(os.environ["MHGAN_CI_DASHBOARD"])
        yield os.environ["MHGAN_CI_DASHBOARD"], env
        return
    env["RAY_AUTH_MODE"] = _auth_mode()
    port, dashboard = _free_port(), _free_port()
    # Every fixed default port moves too: a second Ray on the machine (the
    # session's local one, a developer's) would hold it, and the job agent
    # that `ray job submit` needs would fail to bind.
    own_ports = [f"--{name}={_free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "ray-client-server-port", "node-manager-port", "object-manager-port")]
    import shutil
    import tempfile

    temp = tempfile.mkdtemp(prefix="mhgan-rh-", dir="/tmp")  # Ray's socket paths must stay short
    log = open(os.path.join(temp, "head.log"), "w")
    head = subprocess.Popen(
        [os.path.join(bin_dir, "ray"), "start", "--head", "--block", f"--port={port}",
         f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1", "--num-cpus=2",
         "--include-dashboard=true", "--disable-usage-stats", f"--temp-dir={temp}", *own_ports],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{dashboard}"
    try:
        wait_until_jobs_accepted(url, head)
        yield url, env
    finally:
        # SIGTERM to `ray start` alone: it drains the node through its GCS, then stops its
        # processes. Signalled together, the GCS dies first and the drain waits 30 s for it.
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 15
        try:
            while time.monotonic() < deadline:
                os.killpg(head.pid, 0)  # raises once the group has no process left
                time.sleep(0.5)
            os.killpg(head.pid, signal.SIGKILL)  # whatever outlived the grace period
        except ProcessLookupError:
            pass
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any network connection fails the test: data loaders read local files only."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the dataset loader tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)

"""Device, precision and batch-size choice, exercised on CPU (CI has no GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mhgan_dist.errors import ConfigError
from mhgan_dist.models import resolve_model
from mhgan_dist.pipeline import devices
from mhgan_dist.pipeline.proposals import ProposalWorker
from mhgan_dist.core.streams import Stream

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


def test_select_device():
    assert devices.select_device("auto", [], cuda_available=True) == CPU  # no GPU granted by Ray
    assert devices.select_device("auto", [0], cuda_available=False) == CPU  # granted but unusable
    assert devices.select_device("auto", [0], cuda_available=True) == CUDA
    assert devices.select_device("cpu", [0], cuda_available=True) == CPU
    with pytest.raises(ConfigError, match="granted this actor no GPU"):
        devices.select_device("cuda", [], cuda_available=True)
    with pytest.raises(ConfigError, match="cannot use CUDA"):
        devices.select_device("cuda", [0], cuda_available=False)


def test_choose_precision_falls_back_when_reduced_precision_disagrees():
    asked = []

    def gap(value):
        def disagreement(precision):
            asked.append(precision)
            return value

        return disagreement

    assert devices.choose_precision("auto", CPU, gap(0.0)) == "fp32" and asked == []
    assert devices.choose_precision("fp32", CUDA, gap(1.0)) == "fp32"
    if torch.cuda.is_available():  # only a CUDA machine can answer is_bf16_supported
        assert devices.choose_precision("auto", CUDA, gap(0.5)) == "fp32"
    assert devices.choose_precision("bf16", CPU, gap(0.001)) == "bf16"
    with pytest.raises(ConfigError, match="changes D's probabilities by up to 0.5"):
        devices.choose_precision("bf16", CPU, gap(0.5))
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        devices.choose_precision("fp16", CPU, gap(0.0))


def test_default_batch_size_is_bounded_by_memory():
    assert devices.default_batch_size(CPU, 2) == devices.CPU_BATCH_PROPOSALS
    assert devices.default_batch_size(CUDA, 2) == devices.GPU_BATCH_PROPOSALS
    assert devices.default_batch_size(CUDA, 3 * 256 * 256) == (64 << 20) // (4 * 3 * 256 * 256)


def test_cpu_batch_is_a_power_of_two_within_the_cache_budget_and_never_tiny():
    assert devices.default_batch_size(CPU, 64) == 4096  # 8x8 digits: 1 MiB holds 4,096 of them
    assert devices.default_batch_size(CPU, 1 * 28 * 28) == 256  # 334 fit in 1 MiB -> 256
    assert devices.default_batch_size(CPU, 3 * 32 * 32) == 256  # 85 fit -> the floor
    assert devices.default_batch_size(CPU, 3 * 256 * 256) == 256


@pytest.mark.parametrize("available, per_proposal", [(80e9, 12_345.0), (139 * 2**30, 3_000.0), (2**30, 700.0),
                                                     (16 * 2**30, 98_304.0)])
def test_gpu_batch_is_the_largest_power_of_two_that_fits(available, per_proposal):
    batch = devices.batch_size_for_memory(int(available), per_proposal, maximum=1 << 30)
    budget = devices.GPU_MEMORY_FRACTION * available
    assert batch & (batch - 1) == 0
    assert batch * per_proposal <= budget < 2 * batch * per_proposal


def test_gpu_batch_respects_its_bounds():
    # An H200's free memory and a grid2d-sized proposal would allow ~10^8 rows: capped.
    assert devices.batch_size_for_memory(139 * 2**30, 40.0) == devices.GPU_MAX_BATCH_PROPOSALS
    assert devices.batch_size_for_memory(139 * 2**30, 40.0, maximum=5000) == 4096
    # Nearly no free memory: the minimum, so CUDA reports the out-of-memory itself.
    assert devices.batch_size_for_memory(10_000, 1e6, minimum=256) == 256
    assert devices.batch_size_for_memory(0, 1.0, minimum=8) == 8
    with pytest.raises(ValueError, match="peak_bytes_per_proposal"):
        devices.batch_size_for_memory(2**30, 0.0)
    with pytest.raises(ValueError, match="minimum <= maximum"):
        devices.batch_size_for_memory(2**30, 1.0, minimum=64, maximum=32)


def test_cpu_worker_keeps_the_cpu_batch(tiny_model):
    # The memory probe is CUDA only; on CPU the batch is the per-device default.
    worker = ProposalWorker(resolve_model(str(tiny_model)), seed=0, device="cpu", precision="fp32")
    assert worker.info().batch_size == devices.default_batch_size(CPU, int(np.prod(worker.info().sample_shape)))


def test_bf16_autocast_scores_agree_with_fp32_on_cpu(tiny_model):
    model = resolve_model(str(tiny_model))
    exact = ProposalWorker(model, seed=1, device="cpu", precision="fp32")
    reduced = ProposalWorker(model, seed=1, device="cpu", precision="bf16")
    assert exact.info().precision == "fp32" and reduced.info().precision == "bf16"
    a, b = exact.score_stream(int(Stream.CALIBRATION), 0, 2000), reduced.score_stream(int(Stream.CALIBRATION), 0, 2000)
    sig = lambda x: 1 / (1 + np.exp(-x.astype(np.float64)))  # noqa: E731
    assert np.max(np.abs(sig(a) - sig(b))) <= devices.PRECISION_TOLERANCE
    assert not np.array_equal(a, b)  # it did run in reduced precision


def test_worker_threads_follow_configuration(tiny_model):
    worker = ProposalWorker(resolve_model(str(tiny_model)), seed=0, device="cpu", torch_threads=2)
    assert worker.info().threads == 2 and torch.get_num_threads() == 2

"""What the job asks Ray for: the actor layout that fills the cluster it is given, and the check that it fits.

Defaults (every value comes from :class:`~mhgan_dist.run.config.ResourceConfig`):
on a cluster with GPUs, one actor per GPU; else one actor per CPU core of each
node, asking 1 CPU and running one torch thread, so that a node of N cores runs
N actors. The job asks Ray for nothing else: chain picking (about 1% of the
CPU time) runs in a thread of the actors, the calibration fit in the driver.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import ray

from mhgan_dist.run.config import ResourceConfig
from mhgan_dist.errors import ConfigError

__all__ = ["ClusterView", "ActorLayout", "plan_layout", "check_fits", "ray_started_here", "default_batch_size"]

_EPS = 1e-9


def ray_started_here() -> bool:
    """True when this process started the Ray it is connected to (a local Ray: no autoscaler will add nodes).

    Such a Ray's GCS server is a child process of this one; a head started by
    ``ray start`` or a cluster joined by address is not.
    """
    import psutil

    try:
        return any(child.name() == "gcs_server" for child in psutil.Process().children())
    except psutil.Error:  # a child that exited while being listed
        return False


CPU_BATCH_PROPOSALS = 4096
CPU_MIN_BATCH_PROPOSALS = 256
GPU_BATCH_PROPOSALS = 65_536
# A CPU batch's generated samples stay within about this many bytes, and the
# batch is at least CPU_MIN_BATCH_PROPOSALS: an image model's activations are
# many times its samples, so their working set, not the samples', sets the
# best batch. Measured with two one-thread processes on 2 cores: the 1x28x28
# DCGAN did 2,891 proposals/s at batch 256 and 2,151/s at 1,024; the 3x32x32
# DCGAN was fastest at 256 and slower at 4,096 (BENCHMARKS.md).
CPU_BATCH_BYTES = 1 << 20


def default_batch_size(device: Any, sample_numel: int) -> int:
    """Proposals per forward pass an actor on ``device`` (a device type, "cpu" or
    "cuda", or a ``torch.device``) starts from, for samples of ``sample_numel``
    floats: large for small samples, bounded by ~64 MiB of samples on CUDA; on
    CPU the largest power of two within CPU_BATCH_BYTES of samples, clamped to
    [CPU_MIN_BATCH_PROPOSALS, CPU_BATCH_PROPOSALS]. Torch-free, so that the
    driver resolves a CPU run's batch size before any actor starts."""
    if getattr(device, "type", device) == "cuda":
        return int(min(GPU_BATCH_PROPOSALS, max(1, (64 << 20) // (4 * max(1, sample_numel)))))
    by_cache = max(1, CPU_BATCH_BYTES // (4 * max(1, sample_numel)))
    return int(min(CPU_BATCH_PROPOSALS, max(CPU_MIN_BATCH_PROPOSALS, 1 << (by_cache.bit_length() - 1))))


@dataclass(frozen=True)
class ClusterView:
    """(CPUs, GPUs) of each live node, and whether this process started the Ray."""

    nodes: tuple[tuple[float, float], ...]
    started_here: bool

    @staticmethod
    def current() -> "ClusterView":
        nodes = tuple((float(n["Resources"].get("CPU", 0.0)), float(n["Resources"].get("GPU", 0.0)))
                      for n in ray.nodes() if n.get("Alive"))
        return ClusterView(nodes, ray_started_here())

    @property
    def cpus(self) -> float:
        return sum(c for c, _ in self.nodes)

    @property
    def gpus(self) -> float:
        return sum(g for _, g in self.nodes)


@dataclass(frozen=True)
class ActorLayout:
    """How many proposal actors, what each asks of Ray, and the torch threads each runs."""

    count: int
    cpus: float
    gpus: float
    threads: int | None  # None: the actor's CPU share

    def request(self) -> str:
        return f"{self.cpus:g} CPU and {self.gpus:g} GPU"


def plan_layout(res: ResourceConfig, view: ClusterView) -> ActorLayout:
    """The actor layout for ``res`` on ``view``: explicit values as given, the rest filling the cluster."""
    gpus = res.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if view.gpus > 0 and res.device != "cpu" else 0.0
    cpus = res.actor_cpus
    if res.num_actors is not None:
        count = res.num_actors
    elif gpus > 0:
        count = sum(math.floor(g / gpus + _EPS) for _, g in view.nodes)
    else:
        count = sum(math.floor(c / cpus + _EPS) for c, _ in view.nodes)  # by default one per core
    return ActorLayout(max(1, count), cpus, gpus, res.torch_threads)


def check_fits(layout: ActorLayout, view: ClusterView, res: ResourceConfig) -> None:
    """On a Ray this process started (one node; nothing will add more), refuses a layout that cannot run.

    A joined cluster may grow (an autoscaler) or shrink: there the run waits,
    and the scheduler's watch reports and times out instead.
    """
    if not view.started_here:
        return
    need_cpus = layout.count * layout.cpus
    need_gpus = layout.count * layout.gpus
    if need_cpus <= view.cpus + _EPS and need_gpus <= view.gpus + _EPS:
        return
    asked = [f"--num-actors {res.num_actors}" if res.num_actors is not None else f"{layout.count} actor(s)"]
    raise ConfigError(
        f"{' '.join(asked)} x {layout.cpus:g} CPU and {layout.gpus:g} GPU each need {need_cpus:g} CPUs and "
        f"{need_gpus:g} GPUs, but the Ray this job started has "
        f"{view.cpus:g} CPUs and {view.gpus:g} GPUs and nothing will add more; ask for fewer (--num-actors, "
        "--cpus-per-actor, --gpus-per-actor) or join a cluster with --ray-address"
    )

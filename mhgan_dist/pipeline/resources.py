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

import ray

from mhgan_dist.run.config import ResourceConfig
from mhgan_dist.errors import ConfigError

__all__ = ["ClusterView", "ActorLayout", "plan_layout", "check_fits", "ray_started_here"]

_EPS = 1e-9


def ray_started_here() -> bool:
    """True when this process started the Ray it is connected to (a local Ray: no autoscaler will add nodes)."""
    node = getattr(ray._private.worker, "_global_node", None)
    return bool(node is not None and getattr(node, "head", False))


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

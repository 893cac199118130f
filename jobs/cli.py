"""What every job's main() shares: error reporting, config files, Ray start-up.

Library code raises :class:`~mhgan_dist.errors.MhganError`; a job prints its
one sentence on stderr and exits 2 (a traceback only with ``--debug``).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from mhgan_dist.errors import ConfigError, MhganError, OutputError, first_line

__all__ = ["run_main", "add_common_flags", "add_picker_flags", "init_ray", "under_job_submission",
           "check_output_location", "CALIBRATION_HELP"]

EXIT_USER_ERROR = 2
_JOB_SUBMISSION_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray for a `ray job submit` entrypoint


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", default=False,
                        help="show Python tracebacks for errors")
    parser.add_argument("--ray-address", default=argparse.SUPPRESS,
                        help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray; "
                             "'local' always starts a new local one)")
    parser.add_argument("--num-cpus", type=int, default=argparse.SUPPRESS,
                        help="CPUs of a Ray started locally (default: all)")


CALIBRATION_HELP = ("isotonic (default; the paper's), isotonic-capped (no odds above those generated draws reach), "
                    "platt (a fitted temperature and shift of D's logit), beta (beta calibration), none, "
                    "or a saved calibration .json")


def add_picker_flags(group: "argparse._ArgumentGroup | argparse.ArgumentParser") -> None:
    """Tempering and clipping of the chains' odds (jobs.generate, jobs.repick); unset flags are absent."""
    group.add_argument("--odds-power", type=float, default=argparse.SUPPRESS, metavar="B",
                       help="temper the chains' target to p_G x odds^B, B in (0, 1]; 1 (default) is the paper's, "
                            "smaller moves the output toward the plain generator (mh and drs)")
    group.add_argument("--odds-cap-quantile", type=float, default=argparse.SUPPRESS, metavar="Q",
                       help="cap the chains' odds at the Q-quantile, Q in (0, 1], of the generated calibration "
                            "draws' calibrated odds (default: no cap; mh and drs)")


def run_main(body: Callable[[list[str]], int], argv: list[str] | None) -> int:
    """Runs a job body, turning user errors into one line on stderr and exit 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        return body(argv)
    except MhganError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


def under_job_submission() -> bool:
    return _JOB_SUBMISSION_ENV in os.environ


def check_output_location(output: str) -> None:
    """Refuses a relative local output path under ``ray job submit``, whose
    working directory is a temporary copy that disappears with the job."""
    if "://" in output:
        return
    if under_job_submission() and not os.path.isabs(os.path.expanduser(output)):
        raise ConfigError(
            f"--output {output!r} is relative, but under `ray job submit` the working directory is temporary; "
            "give an absolute path or a URI on storage every node reaches"
        )


def init_ray(options: dict[str, Any]) -> bool:
    """Starts or joins Ray unless it is already initialised; returns True if this call did.

    With RAY_ADDRESS set (as under ``ray job submit``) or ``--ray-address``,
    joins that cluster. Otherwise ``ray.init()`` joins a head that ``ray
    start`` left on this machine, else starts a local Ray without the
    dashboard and without metrics collection: it lives only as long as the
    job, which prints its own progress, and on a laptop its processes take
    CPU from G and D (about 0.03 of a core, and 1.4 s of start-up).
    ``ray start --head`` first gives a dashboard; the job then joins that head.
    """
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"log_to_driver": True, "configure_logging": False}
    address = options.get("ray_address")
    if address is not None:
        kwargs["address"] = address
    if options.get("num_cpus") is not None:
        kwargs["num_cpus"] = options["num_cpus"]
    if address is None and not os.environ.get("RAY_ADDRESS"):
        kwargs["include_dashboard"] = False  # ignored by ray.init when it joins a running head
        # Nothing reads the metrics of a Ray that lives as long as the job; without them its
        # raylet does not wait for the metrics exporter as it starts (about 0.9 s on 2 cores).
        os.environ.setdefault("RAY_enable_metrics_collection", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        target = address or os.environ.get("RAY_ADDRESS") or "a local Ray"
        raise OutputError(f"cannot start or join Ray at {target}: {first_line(exc)}") from None
    return True

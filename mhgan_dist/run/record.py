"""The run record: ``run.json``, ``manifest.json`` and ``_SUCCESS``, read and written here only.

A run directory's record, at its top:

- ``run.json``: ``{"format": "mhgan-dist run", "version": 1, "identity": {...},
  "config": {...}}``, written once, when the run is first opened. The identity
  (:class:`RunIdentity`) is the flat map of everything that defines the run's
  rows; a re-run must match it, and its hash is the ``run_id`` in every samples
  file. The config is the resolved job config with credentials removed from
  the output URI.
- ``manifest.json``: the identity and config again, ``run_id``, ``files`` (every
  finished file's :class:`~mhgan_dist.run.store.FileRecord`), ``complete``, and
  the sections the stages add as they learn them: ``layout`` (the chain layout,
  :class:`RecordedLayout`), ``calibration``, ``timings``, ``recovery``,
  ``stats``, ``thinning``, ``model_recommendation``, ``nonfinite_scores``,
  ``proposals_deleted`` (a nightly run that dropped its shards). Rewritten at
  most every :data:`MANIFEST_INTERVAL_S` seconds while a run goes, and once more
  at its end.
- ``_SUCCESS``: empty, written last; readers use the run only once it exists.

Readers get typed values: :func:`read_run` (any run), :func:`read_source_run`
(a run to re-pick from, with its proposal shards checked). The one writer is
:class:`ManifestWriter`, opened by :func:`open_run`. No torch, no Ray.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mhgan_dist.errors import InputError, OutputError
from mhgan_dist.run.config import JobConfig, config_differences
from mhgan_dist.run.store import FileRecord, RunStore, redact_uri, shard_path

__all__ = [
    "MANIFEST",
    "MANIFEST_INTERVAL_S",
    "RUN_CONFIG",
    "RUN_FORMAT",
    "RUN_FORMAT_VERSION",
    "SUCCESS",
    "ManifestWriter",
    "RecordedLayout",
    "RecordedRun",
    "ResolvedResources",
    "RunIdentity",
    "SourceRun",
    "check_run",
    "forget_proposals",
    "open_run",
    "read_manifest",
    "read_run",
    "read_source_run",
]

RUN_CONFIG = "run.json"
MANIFEST = "manifest.json"
SUCCESS = "_SUCCESS"
RUN_FORMAT = "mhgan-dist run"
RUN_FORMAT_VERSION = 1
MANIFEST_INTERVAL_S = 2.0

# Identity keys that are not options themselves -> what a user changes to change them.
_IDENTITY_NAMES = {"model_fingerprint": "the model files", "real_sha256": "--real",
                   "calibration_sha256": "--calibration"}


def _option_name(identity_key: str) -> str:
    name = identity_key.split(".", 1)[-1]
    return _IDENTITY_NAMES.get(name, "--" + name.replace("_", "-"))


@dataclass(frozen=True)
class ResolvedResources:
    """The resources that change a run's rows: proposals per forward pass, the
    precision G and D run in ("fp32", "bf16", "fp16") and the device type
    ("cpu", "cuda"). None: not known yet (the actors decide it)."""

    batch_size: int | None = None
    precision: str | None = None
    device: str | None = None

    @property
    def complete(self) -> bool:
        return None not in (self.batch_size, self.precision, self.device)


@dataclass(frozen=True)
class RunIdentity:
    """Everything that defines a run's rows, as the flat map ``run.json`` records.

    Keys are ``section.option`` (``sampling.seed``, ``resources.batch_size``, ...)
    plus ``model_fingerprint`` and ``source_run``; options at a default that runs
    recorded before the option existed did not have are absent (see
    :meth:`JobConfig.run_identity`).
    """

    values: Mapping[str, Any]

    @staticmethod
    def of(config: JobConfig, resources: ResolvedResources, *, model_fingerprint: str, real_sha256: str,
           calibration_sha256: str | None, source_run: str | None) -> "RunIdentity":
        assert resources.complete, resources
        values = config.run_identity(batch_size=resources.batch_size, precision=resources.precision,
                                     device=resources.device, model_fingerprint=model_fingerprint,
                                     real_sha256=real_sha256, calibration_sha256=calibration_sha256)
        values["source_run"] = None if source_run is None else redact_uri(source_run)
        return RunIdentity(values)

    @property
    def run_id(self) -> str:
        """16 hex digits of the sha256 of the identity's sorted JSON."""
        return hashlib.sha256(json.dumps(dict(self.values), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def seed(self) -> int:
        return int(self.values["sampling.seed"])

    @property
    def model_fingerprint(self) -> str:
        return str(self.values["model_fingerprint"])

    @property
    def source_run(self) -> str | None:
        return self.values.get("source_run")

    @property
    def resources(self) -> ResolvedResources:
        """The recorded resources; ``device`` (and ``precision``) None where the record lacks them."""
        return ResolvedResources(int(self.values["resources.batch_size"]), self.values.get("resources.precision"),
                                 self.values.get("resources.device"))

    def differing_options(self, other: "RunIdentity") -> list[str]:
        """The options (as a user names them: ``--seed``, ``the model files``) that differ, without repeats."""
        return list(dict.fromkeys(_option_name(k) for k in config_differences(dict(self.values), dict(other.values))))

    def to_json(self) -> dict[str, Any]:
        return dict(self.values)


@dataclass(frozen=True)
class RecordedLayout:
    """How a run's chains map onto its proposals: S chains a shard, L proposals a chain."""

    shard_chains: int
    chain_proposals: int
    num_chains: int
    thin: int | None = None

    @property
    def shard_proposals(self) -> int:
        return self.shard_chains * self.chain_proposals

    @property
    def num_proposals(self) -> int:
        return self.num_chains * self.chain_proposals

    @property
    def num_shards(self) -> int:
        return math.ceil(self.num_chains / self.shard_chains)

    @staticmethod
    def of(manifest: Mapping[str, Any], identity: RunIdentity) -> "RecordedLayout | None":
        """The manifest's ``layout`` section; for runs recorded before it (independent chains
        only), what the identity implies; None when neither says (a thinned run that never
        chose its T)."""
        layout = manifest.get("layout")
        if layout is not None:
            return RecordedLayout(int(layout["shard_chains"]), int(layout["chain_proposals"]),
                                  int(layout["num_chains"]), layout.get("thin"))
        values = identity.values
        if values.get("output.shard_chains") is None:
            return None
        return RecordedLayout(int(values["output.shard_chains"]), int(values["sampling.chain_length"]),
                              int(values["sampling.num_samples"]))


@dataclass(frozen=True)
class RecordedRun:
    """What a run directory's record says: its identity and config (``run.json``), its
    manifest as last written (empty when none was), and whether ``_SUCCESS`` exists."""

    store: RunStore
    identity: RunIdentity
    config: dict[str, Any]
    manifest: dict[str, Any]
    complete: bool

    @property
    def files(self) -> dict[str, FileRecord]:
        return {path: FileRecord(**entry) for path, entry in self.manifest.get("files", {}).items()}

    @property
    def layout(self) -> RecordedLayout | None:
        return RecordedLayout.of(self.manifest, self.identity)

    @property
    def stats(self) -> dict[str, Any]:
        """What the run measured (``num_samples``, ``acceptance_rate``, ...); empty until it finished."""
        return self.manifest.get("stats", {})

    @property
    def timings(self) -> dict[str, Any]:
        """Seconds and rates of the run's stages (``total_s``, ``pipeline_s``, ...)."""
        return self.manifest.get("timings", {})

    @property
    def proposals_deleted(self) -> int:
        """How many proposal shards a nightly run deleted when it finished (0: none)."""
        return int(self.manifest.get("proposals_deleted") or 0)


def _read_run_json(store: RunStore) -> dict[str, Any] | None:
    """run.json's body, None when there is none; OutputError when it is not an mhgan-dist run's."""
    if not store.exists(RUN_CONFIG):
        return None
    body = store.read_json(RUN_CONFIG)
    if not isinstance(body, dict) or body.get("format") != RUN_FORMAT or not isinstance(body.get("identity"), dict):
        raise OutputError(f"output directory {store.display} holds a {RUN_CONFIG} that is not an mhgan-dist run")
    return body


def read_run(uri: str | RunStore, *, complete: bool = False) -> RecordedRun:
    """Reads a run's record. InputError when ``uri`` holds no run (no ``run.json``), or,
    with ``complete``, no finished one (``_SUCCESS`` or ``manifest.json`` missing)."""
    store = uri if isinstance(uri, RunStore) else RunStore(uri)
    done = store.exists(SUCCESS)
    if complete and not (done and store.exists(MANIFEST)):
        raise InputError(f"{store.display} is not a complete mhgan-dist run directory (no {SUCCESS} or {MANIFEST})")
    try:
        body = _read_run_json(store)
    except OutputError as exc:
        raise InputError(str(exc)) from None
    if body is None:
        raise InputError(f"{store.display} is not an mhgan-dist run directory (no {RUN_CONFIG})")
    return RecordedRun(store, RunIdentity(body["identity"]), body.get("config", {}), read_manifest(store), done)


def read_manifest(store: RunStore) -> dict[str, Any]:
    """``manifest.json``'s content as last written; empty when there is none or it is not a manifest."""
    manifest = store.read_json(MANIFEST) if store.exists(MANIFEST) else {}
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files", {}), dict):
        return {}
    return manifest


@dataclass(frozen=True)
class SourceRun:
    """A run whose proposals a re-pick reads: every proposal shard recorded and verified."""

    uri: str
    display: str
    identity: RunIdentity
    config: dict[str, Any]
    layout: RecordedLayout
    files: dict[str, FileRecord]

    @property
    def seed(self) -> int:
        return self.identity.seed

    @property
    def resources(self) -> ResolvedResources:
        return self.identity.resources

    @property
    def num_proposals(self) -> int:
        return self.layout.num_proposals

    @property
    def shard_proposals(self) -> int:
        return self.layout.shard_proposals


def read_source_run(uri: str) -> SourceRun:
    """Reads and checks a run to re-pick from; InputError naming what is wrong (not a run,
    itself a re-pick, its shards deleted or missing or corrupt, no recorded layout)."""
    run = read_run(uri)
    display = run.store.display
    if run.proposals_deleted:
        raise InputError(f"{display} no longer holds its proposal shards: they were deleted when its nightly run "
                         "finished (--keep-proposals keeps them), and re-picking reads them")
    layout = run.layout
    if layout is None:
        raise InputError(f"{display} has no record of its chain layout; re-run that run's command to finish it")
    files = run.files
    for i in range(layout.num_shards):
        record = files.get(shard_path(i))
        if record is None or not run.store.verify(record):
            raise InputError(
                f"{display} has a missing or corrupt proposal shard {shard_path(i)}; re-run that run's command to repair it"
            )
    if run.identity.source_run:
        raise InputError(f"{display} is itself a re-pick; re-pick from the run that made the proposals")
    return SourceRun(uri=uri, display=display, identity=run.identity, config=run.config, layout=layout, files=files)


def _recorded_config(config: JobConfig) -> dict[str, Any]:
    """The config as run.json and the manifest record it: the output location
    without the credentials a URI may carry."""
    body = config.to_json()
    body["output"]["output"] = redact_uri(body["output"]["output"])
    return body


def recorded_identity(store: RunStore) -> RunIdentity | None:
    """The identity an earlier attempt recorded in ``store``, None when there is none or it
    cannot be read (a later :func:`open_run` then says what is wrong)."""
    try:
        body = _read_run_json(store)
        return None if body is None else RunIdentity(body["identity"])
    except (OutputError, InputError, KeyError, TypeError, ValueError):
        return None


def check_run(store: RunStore, identity: RunIdentity) -> bool:
    """Whether ``store`` holds a finished run of ``identity`` (True) or nothing of another
    config (False). Reads only; OutputError for another config's run or a foreign
    ``run.json``."""
    body = _read_run_json(store)
    return body is not None and _finished_run_of(store, body, identity)


def _finished_run_of(store: RunStore, run_json: dict[str, Any], identity: RunIdentity) -> bool:
    """Whether the run ``run_json`` records is ``identity``'s and finished; OutputError for another config's."""
    differences = RunIdentity(run_json["identity"]).differing_options(identity)
    if differences:
        raise OutputError(
            f"output directory {store.display} holds a run of another config (differs in {', '.join(differences)}); "
            "use another --output or the same options"
        )
    return store.exists(SUCCESS)


@dataclass
class ManifestWriter:
    """The manifest of a run in progress: ``body`` is ``manifest.json``'s content.

    :meth:`record` adds a finished file; :meth:`flush` rewrites the file at most
    every :data:`MANIFEST_INTERVAL_S` seconds unless forced; :meth:`finish`
    marks the run complete, writes the manifest and then ``_SUCCESS``.
    """

    store: RunStore
    body: dict[str, Any]
    last_write: float = field(default=0.0)

    @property
    def run_id(self) -> str:
        return str(self.body["run_id"])

    def record(self, record: FileRecord, force: bool = False) -> None:
        self.body["files"][record.path] = record.to_json()
        self.flush(force)

    def forget(self, path: str) -> None:
        """Drops a file's record (it is missing or corrupt and will be written again)."""
        self.body["files"].pop(path, None)

    def trusted(self, path: str) -> FileRecord | None:
        entry = self.body["files"].get(path)
        return None if entry is None else FileRecord(**entry)

    def flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_write >= MANIFEST_INTERVAL_S:
            self.store.write_json(MANIFEST, self.body)
            self.last_write = now

    def finish(self) -> None:
        self.body["complete"] = True
        self.flush(force=True)
        self.store.write_bytes(SUCCESS, b"")


def _new_manifest(identity: RunIdentity, config: JobConfig) -> dict[str, Any]:
    return {"format": RUN_FORMAT, "version": RUN_FORMAT_VERSION, "run_id": identity.run_id,
            "identity": identity.to_json(), "config": _recorded_config(config), "files": {}, "complete": False}


def open_run(store: RunStore, identity: RunIdentity, config: JobConfig) -> tuple[str, ManifestWriter | None]:
    """Opens the output directory for a run of ``identity``.

    Returns ("complete", None) for a finished run of the same identity,
    ("resume", writer) for an unfinished one (its manifest as last written),
    ("new", writer) for an empty directory, after writing ``run.json``.
    Raises OutputError for a run of another config, a foreign ``run.json``,
    run files without a ``run.json``, or a manifest naming paths outside the run.
    """
    store.ensure_writable()
    recorded = _read_run_json(store)
    if recorded is None:
        leftovers = store.list("samples") + store.list("proposals")
        if leftovers or store.exists(SUCCESS):
            raise OutputError(
                f"output directory {store.display} holds files but no {RUN_CONFIG}; choose an empty directory"
            )
        store.write_json(RUN_CONFIG, {"format": RUN_FORMAT, "version": RUN_FORMAT_VERSION,
                                      "identity": identity.to_json(), "config": _recorded_config(config)})
        return "new", ManifestWriter(store, _new_manifest(identity, config))
    if _finished_run_of(store, recorded, identity):
        return "complete", None
    body = read_manifest(store)
    if not isinstance(body.get("files"), dict):
        body = _new_manifest(identity, config)
    body["config"] = _recorded_config(config)
    body.pop("nonfinite_scores", None)  # an earlier attempt's; this attempt records its own
    for path in list(body["files"]):
        store.path(path)  # refuses a manifest naming paths outside the run
    return "resume", ManifestWriter(store, body)


def forget_proposals(store: RunStore) -> int:
    """Drops a finished run's proposal shards from its manifest, recording how many as
    ``proposals_deleted`` (re-picks then refuse the run); returns how many it dropped, 0 when the
    manifest listed none (a re-run of a finished nightly date)."""
    body = read_manifest(store)
    files = body.get("files", {})
    kept = {path: entry for path, entry in files.items() if not path.startswith("proposals/")}
    if len(kept) < len(files):
        store.write_json(MANIFEST, {**body, "files": kept, "proposals_deleted": len(files) - len(kept)})
    return len(files) - len(kept)

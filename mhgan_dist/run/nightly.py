"""Nightly dated runs: what the ``--nightly`` options mean, ``latest.json`` and retention.

With ``--nightly`` the job's ``--output`` is a *nightly root*; each date is a
complete run directory of its own (the layout of :mod:`mhgan_dist.run.store`)::

    latest.json              the newest complete date: {"date", "path", "run_id", ...}
    date=YYYY-MM-DD/         one run: run.json, samples/, manifest.json, _SUCCESS (last)

A date's seed is a pure function of the base seed and the date
(:func:`date_seed`) unless ``--seed`` is given, so a re-run of a date has the
same run identity: a finished date is a no-op, an unfinished one resumes.
After a date completes, :func:`finish_date` deletes its proposal shards
(unless kept), rewrites ``latest.json`` to name the newest complete date and,
with ``--keep N``, removes complete dates older than the newest N. All three
steps are idempotent and run again on every invocation, so a run killed
between them is finished by the next one.

Who may write a date while it runs is :mod:`mhgan_dist.run.guard`'s concern.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from mhgan_dist.errors import ConfigError, OutputError, first_line
from mhgan_dist.run.config import JobConfig
from mhgan_dist.run.record import RUN_CONFIG, SUCCESS, forget_proposals, read_manifest
from mhgan_dist.run.store import RunStore, redact_uri

__all__ = [
    "LATEST",
    "NightlyOptions",
    "NightlyRoot",
    "check_single_run_output",
    "child_uri",
    "date_dir_name",
    "date_seed",
    "dated_config",
    "dated_run",
    "delete_proposals",
    "finish_date",
    "parse_date",
    "today_utc",
]

LATEST = "latest.json"
LATEST_FORMAT = "mhgan-dist nightly latest"
DATE_PREFIX = "date="
DELETING = "_DELETING"

_DATE_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATE_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


# ------------------------------------------------------------------ dates


def parse_date(text: str) -> dt.date:
    """A calendar date from exactly ``YYYY-MM-DD``; ConfigError otherwise."""
    if not isinstance(text, str) or not _DATE_TEXT.match(text):
        raise ConfigError(f"--date must be a date as YYYY-MM-DD, got {text!r}")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--date {text} is not a calendar date") from None


def today_utc() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


def date_seed(base_seed: int, day: dt.date) -> int:
    """The run seed of ``day``: sha256 of (base seed, ISO date) mod 2**63, in [0, 2**63)."""
    digest = hashlib.sha256(f"mhgan-dist nightly\0{base_seed}\0{day.isoformat()}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 2**63


def date_dir_name(day: dt.date) -> str:
    return f"{DATE_PREFIX}{day.isoformat()}"


def child_uri(root: str, name: str) -> str:
    """``root`` (a local path or a filesystem URI, query kept) joined with one path segment."""
    if "://" not in root:
        return os.path.join(root, name)
    parts = urllib.parse.urlsplit(root)
    return urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + name))


@dataclass(frozen=True)
class NightlyOptions:
    """The nightly flags: which date, how many complete dates to keep, whether shards stay.

    seed_given: --seed was given (flag or config file); then the date's seed is
    that seed, else :func:`date_seed` of the configured seed and the date.
    """

    date: dt.date
    keep: int | None = None
    keep_proposals: bool = False
    seed_given: bool = False

    def __post_init__(self) -> None:
        if self.keep is not None and (isinstance(self.keep, bool) or self.keep < 1):
            raise ConfigError(f"--keep must be at least 1, got {self.keep}")

    @staticmethod
    def from_flags(
        flags: Mapping[str, Any], *, seed_given: bool, today: dt.date | None = None
    ) -> NightlyOptions | None:
        """Options from parsed flags (keys ``nightly``, ``date``, ``keep``, ``keep_proposals``).

        None when ``nightly`` is not set; ConfigError when a nightly-only flag
        comes without it or a value is malformed.
        """
        if not flags.get("nightly"):
            stray = [f"--{k.replace('_', '-')}" for k in ("date", "keep", "keep_proposals")
                     if flags.get(k) not in (None, False)]
            if stray:
                raise ConfigError(f"{', '.join(stray)} only apply with --nightly")
            return None
        day = parse_date(flags["date"]) if flags.get("date") is not None else (today or today_utc())
        return NightlyOptions(date=day, keep=flags.get("keep"), keep_proposals=bool(flags.get("keep_proposals")),
                              seed_given=seed_given)


def dated_config(config: JobConfig, options: NightlyOptions) -> JobConfig:
    """``config`` moved to ``OUTPUT/date=YYYY-MM-DD`` with the date's seed."""
    seed = config.sampling.seed if options.seed_given else date_seed(config.sampling.seed, options.date)
    return dataclasses.replace(
        config,
        sampling=dataclasses.replace(config.sampling, seed=seed),
        output=dataclasses.replace(config.output, output=child_uri(config.output.output, date_dir_name(options.date))),
    ).validate()


def dated_run(config: JobConfig, options: NightlyOptions) -> tuple[NightlyRoot, JobConfig]:
    """The nightly root of ``config`` and the config of the date ``options`` name.

    OutputError when the root holds a single run; ConfigError when ``--keep``
    would remove the date as soon as it completed.
    """
    root = NightlyRoot(config.output.output)
    root.check_layout()
    keep = options.keep
    if keep is not None and not root.is_complete(options.date) and root.doomed_by_keep(options.date, keep):
        raise ConfigError(
            f"--date {options.date} is older than the newest {keep} complete date(s), so --keep "
            f"{keep} would remove it at once; raise --keep or leave that date out"
        )
    return root, dated_config(config, options)


def check_single_run_output(uri: str) -> None:
    """OutputError when ``uri``, the output of a run without ``--nightly``, holds nightly runs."""
    output = RunStore(uri)
    if output.exists(LATEST):
        raise OutputError(f"{output.display} holds nightly runs ({LATEST}); add --nightly or choose another --output")


# ------------------------------------------------------------ nightly root


class NightlyRoot:
    """The dated runs under one nightly root, ``latest.json`` and retention."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.store = RunStore(uri)

    def run_store(self, day: dt.date) -> RunStore:
        return RunStore(child_uri(self.uri, date_dir_name(day)))

    def dates(self) -> list[dt.date]:
        """Every ``date=YYYY-MM-DD`` folder, complete or not, oldest first."""
        selector = pafs.FileSelector(self.store.root, allow_not_found=True)
        found = []
        try:
            infos = self.store.fs.get_file_info(selector)
        except (OSError, pa.ArrowException) as exc:
            raise OutputError(f"nightly root {self.store.display} cannot be listed: {first_line(exc)}") from None
        for info in infos:
            match = _DATE_DIR.match(info.base_name)
            if match and info.type == pafs.FileType.Directory:
                try:
                    found.append(dt.date.fromisoformat(match.group(1)))
                except ValueError:
                    continue
        return sorted(found)

    def is_complete(self, day: dt.date) -> bool:
        name = date_dir_name(day)
        return self.store.exists(f"{name}/{SUCCESS}") and not self.store.exists(f"{name}/{DELETING}")

    def complete_dates(self) -> list[dt.date]:
        """Dates whose run wrote ``_SUCCESS`` and is not being removed, oldest first."""
        return [d for d in self.dates() if self.is_complete(d)]

    def check_layout(self) -> None:
        """OutputError when the root holds a single (non-nightly) run."""
        if self.store.exists(RUN_CONFIG) or self.store.exists(SUCCESS):
            raise OutputError(
                f"{self.store.display} holds a single run, not dated runs; give --nightly an output directory of its own"
            )

    def read_latest(self) -> dt.date | None:
        if not self.store.exists(LATEST):
            return None
        body = self.store.read_json(LATEST)
        try:
            return dt.date.fromisoformat(body["date"])
        except (KeyError, TypeError, ValueError):
            return None

    def update_latest(self) -> dt.date | None:
        """Points ``latest.json`` at the newest complete date (rewritten only when it changes)."""
        complete = self.complete_dates()
        if not complete:
            return None
        newest = complete[-1]
        if self.read_latest() == newest:
            return newest
        name = date_dir_name(newest)
        manifest = read_manifest(RunStore(child_uri(self.uri, name)))
        self.store.write_json(LATEST, {
            "format": LATEST_FORMAT,
            "version": 1,
            "date": newest.isoformat(),
            "path": name,
            "uri": redact_uri(child_uri(self.uri, name)),
            "run_id": manifest.get("run_id"),
            "num_samples": manifest.get("stats", {}).get("num_samples"),
            "updated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        })
        return newest

    def doomed_by_keep(self, day: dt.date, keep: int) -> bool:
        """True when ``--keep keep`` would remove ``day`` as soon as it completed."""
        return len([d for d in self.complete_dates() if d > day]) >= keep

    def prune(self, keep: int) -> list[dt.date]:
        """Removes complete dates older than the newest ``keep``, and any left half-removed.

        ``_DELETING`` is written first and ``_SUCCESS`` removed next, so a
        date interrupted while being removed never reads as complete and is
        finished by the next prune. Unfinished dates are never touched.
        """
        if keep < 1:
            raise ConfigError(f"--keep must be at least 1, got {keep}")
        complete = self.complete_dates()
        doomed = set(complete[:-keep])
        doomed |= {d for d in self.dates() if self.store.exists(f"{date_dir_name(d)}/{DELETING}")}
        for day in sorted(doomed):
            name = date_dir_name(day)
            self.store.write_bytes(f"{name}/{DELETING}", b"")
            _delete_file(self.store, f"{name}/{SUCCESS}")
            _delete_dir(self.store, name)
        return sorted(doomed)

    def unfinished_before(self, day: dt.date) -> list[dt.date]:
        """Unfinished dates older than ``day`` (failed nights nobody resumed)."""
        return [d for d in self.dates() if d < day and not self.is_complete(d)]


def delete_proposals(store: RunStore) -> int:
    """Deletes a complete run's ``proposals/`` folder; returns how many shards it held.

    The manifest drops the shards' entries and records ``proposals_deleted``
    first, so it never lists a file that is gone (an interruption in between
    leaves shards the manifest no longer names, which only costs space).
    """
    count = len(store.list("proposals"))
    forget_proposals(store)
    _delete_dir(store, "proposals")
    return count


def _delete_file(store: RunStore, relative: str) -> None:
    try:
        store.fs.delete_file(store.path(relative))
    except FileNotFoundError:
        pass
    except (OSError, pa.ArrowException) as exc:
        if store.exists(relative):
            raise OutputError(f"cannot delete {store.path(relative)}: {first_line(exc)}") from None


def _delete_dir(store: RunStore, relative: str) -> None:
    path = store.path(relative)
    try:
        if store.fs.get_file_info(path).type == pafs.FileType.NotFound:
            return
        store.fs.delete_dir(path)
    except FileNotFoundError:
        pass
    except (OSError, pa.ArrowException) as exc:
        if store.fs.get_file_info(path).type != pafs.FileType.NotFound:
            raise OutputError(f"cannot delete {path}: {first_line(exc)}") from None


def finish_date(root: NightlyRoot, nightly: NightlyOptions) -> list[str]:
    """The steps after a date's run, as printable notes: shards, ``latest.json``, retention.

    Each is idempotent and touches only complete dates, so it runs on every
    invocation (a finished date's re-run too) and finishes what a run killed
    between them left undone. Nothing changes while the date is unfinished.
    """
    day = nightly.date
    notes = []
    if not root.is_complete(day):
        return [f"nightly: {date_dir_name(day)} is not complete; {LATEST} unchanged"]
    if not nightly.keep_proposals:
        shards = delete_proposals(root.run_store(day))
        if shards:
            notes.append(f"nightly: deleted {shards} proposal shard(s) of {date_dir_name(day)} "
                         "(--keep-proposals keeps them for re-picking)")
    newest = root.update_latest()
    notes.append(f"nightly: {LATEST} -> {date_dir_name(newest) if newest else 'none'}")
    if nightly.keep is not None:
        removed = root.prune(nightly.keep)
        if removed:
            notes.append(f"nightly: removed {', '.join(date_dir_name(d) for d in removed)} (--keep {nightly.keep})")
    unfinished = root.unfinished_before(day)
    if unfinished:
        notes.append(f"nightly: unfinished older date(s) {', '.join(d.isoformat() for d in unfinished)}: "
                     "re-run them with --date to finish them, or remove them")
    return notes

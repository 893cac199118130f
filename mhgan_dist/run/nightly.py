"""Nightly dated runs, their retention, and the lease that keeps one writer per run.

With ``--nightly`` the job's ``--output`` is a *nightly root*; each date is a
complete run directory of its own (the layout of :mod:`mhgan_dist.run.store`)::

    latest.json              the newest complete date: {"date", "path", "run_id", ...}
    date=YYYY-MM-DD/         one run: run.json, samples/, manifest.json, _SUCCESS (last)
        _LEASE               the lease of the run writing it (local filesystems only)
        _LEASE.lock          guards changes to _LEASE (flock); removed with it

A date's seed is a pure function of the base seed and the date
(:func:`date_seed`) unless ``--seed`` is given, so a re-run of a date has the
same run identity: a finished date is a no-op, an unfinished one resumes.
After a date completes, its proposal shards are deleted (unless kept),
``latest.json`` is rewritten to name the newest complete date, and with
``--keep N`` complete dates older than the newest N are removed. All three
steps are idempotent and run again on every invocation, so a run killed
between them is finished by the next one.

The lease (:class:`RunLease`) stops two runs writing one run directory at
once. It is a file created with ``O_CREAT | O_EXCL`` holding the holder
(host, pid, pid namespace, a random token) and a heartbeat that a daemon
thread renews every :data:`HEARTBEAT_S` seconds; it expires
:data:`LEASE_TTL_S` seconds after the last renewal. A run that finds it
refuses to start while the heartbeat is recent, waits while it is stale
(the holder has stopped renewing), and takes it over once it has expired or
at once when the holder's pid is gone on the same host. So a SIGKILLed run
never leaves it held for more than :data:`LEASE_TTL_S` seconds, and for no
time at all when re-run on the same machine. Object stores (S3, GCS) offer
no exclusive create through pyarrow, so there is no lease there: the
scheduler's concurrency policy must keep one run per date (cluster/README.md).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs

from mhgan_dist.run.config import JobConfig
from mhgan_dist.errors import ConfigError, OutputError
from mhgan_dist.run.store import MANIFEST, RUN_CONFIG, SUCCESS, RunStore, redact_uri

__all__ = [
    "LATEST",
    "LEASE_FILE",
    "LEASE_TTL_S",
    "HEARTBEAT_S",
    "NightlyOptions",
    "NightlyRoot",
    "GuardedOutcome",
    "LeaseHolder",
    "LeaseRecord",
    "RunLease",
    "child_uri",
    "date_dir_name",
    "date_seed",
    "dated_config",
    "delete_proposals",
    "lease_directory",
    "lease_state",
    "parse_date",
    "run_guarded",
    "today_utc",
]

LATEST = "latest.json"
LATEST_FORMAT = "mhgan-dist nightly latest"
DATE_PREFIX = "date="
DELETING = "_DELETING"
LEASE_FILE = "_LEASE"
LEASE_FORMAT = "mhgan-dist lease"
# A killed holder blocks its run directory for at most LEASE_TTL_S (0 s on the
# same host). The heartbeat is a sixth of it, so a live holder misses five
# renewals (a stalled filesystem, a paused VM) before anyone may take over.
LEASE_TTL_S = 30.0
HEARTBEAT_S = 5.0
# A heartbeat older than this means the holder has most likely died on another
# host: a new run waits out the rest of the expiry instead of refusing.
STALE_AFTER_HEARTBEATS = 3

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
            raise OutputError(f"nightly root {self.store.display} cannot be listed: {_reason(exc)}") from None
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
        manifest: dict[str, Any] = {}
        if self.store.exists(f"{name}/{MANIFEST}"):
            manifest = self.store.read_json(f"{name}/{MANIFEST}")
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
    body = store.read_json(MANIFEST) if store.exists(MANIFEST) else {}
    files = body.get("files", {})
    kept = {path: entry for path, entry in files.items() if not path.startswith("proposals/")}
    if len(kept) < len(files):  # a re-run of a finished date finds nothing left to drop
        store.write_json(MANIFEST, {**body, "files": kept, "proposals_deleted": len(files) - len(kept)})
    _delete_dir(store, "proposals")
    return count


def _delete_file(store: RunStore, relative: str) -> None:
    try:
        store.fs.delete_file(store.path(relative))
    except FileNotFoundError:
        pass
    except (OSError, pa.ArrowException) as exc:
        if store.exists(relative):
            raise OutputError(f"cannot delete {store.path(relative)}: {_reason(exc)}") from None


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
            raise OutputError(f"cannot delete {path}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -------------------------------------------------------------------- lease


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs here; a zombie (killed, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state != b"Z"
    except (OSError, IndexError):
        return True


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds a lease: host name, pid, pid namespace (``/proc/self/ns/pid``) and a random token."""

    host: str
    pid: int
    pid_namespace: str
    token: str

    @staticmethod
    def this_process() -> LeaseHolder:
        return LeaseHolder(socket.gethostname(), os.getpid(), _pid_namespace(), uuid.uuid4().hex)

    def pid_visible_to(self, other: LeaseHolder) -> bool:
        """True when ``other`` can tell from its own process table whether this pid lives."""
        return self.host == other.host and self.pid_namespace == other.pid_namespace


@dataclass(frozen=True)
class LeaseRecord:
    """The lease file's contents; times are seconds since the epoch (UTC)."""

    holder: LeaseHolder
    acquired_at: float
    heartbeat_at: float
    ttl_s: float
    heartbeat_s: float

    @property
    def expires_at(self) -> float:
        return self.heartbeat_at + self.ttl_s

    def to_json(self) -> dict[str, Any]:
        return {"format": LEASE_FORMAT, "version": 1, "holder": dataclasses.asdict(self.holder),
                "acquired_at": self.acquired_at, "heartbeat_at": self.heartbeat_at,
                "expires_at": self.expires_at, "ttl_s": self.ttl_s, "heartbeat_s": self.heartbeat_s}

    @staticmethod
    def from_json(body: Any) -> LeaseRecord | None:
        try:
            h = body["holder"]
            return LeaseRecord(LeaseHolder(str(h["host"]), int(h["pid"]), str(h["pid_namespace"]), str(h["token"])),
                               float(body["acquired_at"]), float(body["heartbeat_at"]), float(body["ttl_s"]),
                               float(body["heartbeat_s"]))
        except (KeyError, TypeError, ValueError):
            return None


def lease_state(record: LeaseRecord, now: float, me: LeaseHolder) -> str:
    """What a run ``me`` may do about an existing lease at time ``now``.

    ``"expired"``: no renewal for ttl_s, take it over. ``"dead"``: the holder's
    pid is gone on this host, take it over. ``"live"``: renewed within
    STALE_AFTER_HEARTBEATS heartbeats, refuse. ``"stale"``: not renewed for
    longer, wait until it is renewed (then refuse) or expires.
    """
    if record.expires_at <= now:
        return "expired"
    holder = record.holder
    if holder.pid_visible_to(me) and holder.pid != me.pid and not _pid_alive(holder.pid):
        return "dead"
    if now - record.heartbeat_at <= STALE_AFTER_HEARTBEATS * record.heartbeat_s:
        return "live"
    return "stale"


class RunLease:
    """Exclusive, expiring right to write one run directory on a local (POSIX) filesystem.

    Use as a context manager around the run. ``acquire`` raises OutputError
    when a live run holds the directory, waits (at most ``ttl_s``) when the
    holder stopped renewing, and takes over an expired lease or one whose
    holder process is gone on this host. While held, a daemon thread renews
    the heartbeat every ``heartbeat_s`` (:meth:`renew`); if the lease is found
    taken over (this process was stalled past the expiry), ``lost`` becomes
    True and ``on_lost`` is called once (the job interrupts its main thread).

    Every lease file is written only by the run that created it: renewals go
    in place through the descriptor kept from the ``O_EXCL`` create, and a
    takeover unlinks the file and creates a new one. So a renewal can never
    overwrite another run's lease, even when that run takes it over between
    the renewal's check and its write (possible where there is no flock).
    """

    def __init__(
        self,
        directory: str,
        *,
        ttl_s: float = LEASE_TTL_S,
        heartbeat_s: float = HEARTBEAT_S,
        say: Callable[[str], None] | None = None,
        on_lost: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < heartbeat_s < ttl_s:
            raise ConfigError(f"a lease needs 0 < heartbeat ({heartbeat_s} s) < expiry ({ttl_s} s)")
        self.directory = directory
        self.path = os.path.join(directory, LEASE_FILE)
        self.ttl_s = ttl_s
        self.heartbeat_s = heartbeat_s
        self.holder = LeaseHolder.this_process()
        self.took_over: LeaseRecord | None = None
        self.lost_reason: str | None = None
        self._say = say or (lambda message: print(message, file=sys.stderr, flush=True))
        self._on_lost = on_lost
        self._clock = clock
        self._acquired_at = 0.0
        self._renewed_at = 0.0
        self._fd: int | None = None  # the lease file this run created, open until release
        self._size = 0  # bytes written to it so far; records are padded, never truncated
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unguarded_noted = False

    @property
    def lost(self) -> bool:
        return self.lost_reason is not None

    def __enter__(self) -> RunLease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -------------------------------------------------------------- protocol

    def acquire(self) -> None:
        try:
            self._acquire()
        except OSError as exc:
            raise OutputError(f"output directory {self.directory} is not writable: {_reason(exc)}") from None

    def _acquire(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        waiting_noted = False
        while True:
            with self._guard():
                record, raw_age, _ = self._read()
                now = self._clock()
                if record is None and raw_age is None:
                    state = "free"
                elif record is None:  # unreadable: its writer died mid-write; trust the file's age
                    state = "expired" if raw_age is not None and raw_age >= self.ttl_s else "stale"
                else:
                    state = lease_state(record, now, self.holder)
                if state in ("free", "expired", "dead"):
                    if state != "free":
                        self._unlink()
                    if self._create(now):
                        self.took_over = record if state != "free" else None
                        if record is not None:
                            why = "its holder's process is gone" if state == "dead" else "it expired"
                            self._say(f"took over the lease on {self.directory} from host {record.holder.host} "
                                      f"pid {record.holder.pid} ({why})")
                        self._start_heartbeat()
                        return
                    continue
                if state == "live":
                    assert record is not None
                    raise OutputError(
                        f"{self.directory} is being written by another run (host {record.holder.host}, pid "
                        f"{record.holder.pid}, lease renewed {max(0.0, now - record.heartbeat_at):.0f} s ago, expiring "
                        f"{self.ttl_s:.0f} s after its last renewal); wait for that run or re-run this one later"
                    )
                remaining = (record.expires_at - now) if record is not None else self.ttl_s - (raw_age or 0.0)
            if not waiting_noted:
                who = f"host {record.holder.host} pid {record.holder.pid}" if record is not None else "an unknown run"
                self._say(f"waiting up to {max(remaining, 0):.0f} s for the lease on {self.directory}: "
                          f"{who} stopped renewing it")
                waiting_noted = True
            time.sleep(max(0.05, min(remaining, self.heartbeat_s)))

    def release(self) -> None:
        """Stops the heartbeat and removes the lease if this run still holds it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl_s)
            self._thread = None
        try:
            with self._guard() as guard:
                record, _, identity = self._read()
                if self._is_mine(record, identity):
                    self._unlink()
                    guard.remove_lock = True
        except OSError as exc:
            # The lease expires on its own; failing the run over it would hide the run's outcome.
            self._say(f"could not release the lease {self.path} ({_reason(exc)}); it expires in {self.ttl_s:.0f} s")
        finally:
            self._close()

    def renew(self) -> bool:
        """One heartbeat: True when the lease is still this run's and its heartbeat is now renewed.

        False when another run has taken it over or it was removed: then
        ``lost`` is True and ``on_lost`` has been called. OSError when the
        lease cannot be read or written (the heartbeat thread retries until
        the expiry). The time is read after the check, just before the write.
        """
        with self._guard():
            record, _, identity = self._read()
            if not self._is_mine(record, identity):
                who = ("removed" if record is None
                       else f"taken over by host {record.holder.host} pid {record.holder.pid}")
                self._lose(f"the lease on {self.directory} was {who} while this run held it")
                return False
            now = self._clock()
            # In place, through this run's own descriptor: should another run take the
            # lease over between the check above and this write, the write lands in the
            # file that run unlinked, never in its new lease.
            self._write(now)
            self._renewed_at = now
            return True

    # ------------------------------------------------------------- internals

    def _record(self, now: float) -> LeaseRecord:
        return LeaseRecord(self.holder, self._acquired_at or now, now, self.ttl_s, self.heartbeat_s)

    def _create(self, now: float) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            return False
        self._fd, self._size = fd, 0
        self._acquired_at = self._renewed_at = now
        try:
            self._write(now)
            os.fsync(fd)
        except BaseException:
            self._close()
            raise
        return True

    def _write(self, now: float) -> None:
        """Writes this run's record at ``now`` into the lease file it created."""
        assert self._fd is not None
        body = json.dumps(self._record(now).to_json()).encode()
        # Padded (JSON allows trailing blanks) to no less than any earlier record, so
        # one write replaces the whole record and the file is never truncated.
        self._size = max(self._size, len(body))
        if os.pwrite(self._fd, body.ljust(self._size), 0) != self._size:
            raise OSError(errno.EIO, "short write")

    def _read(self) -> tuple[LeaseRecord | None, float | None, tuple[int, int] | None]:
        """(record, age, identity) of the file at the lease path.

        record: None when absent or unreadable; age in s: only for an
        unreadable file; identity: (st_dev, st_ino), None when absent.
        """
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
                stat = os.fstat(f.fileno())
        except FileNotFoundError:
            return None, None, None
        identity = (stat.st_dev, stat.st_ino)
        try:
            record = LeaseRecord.from_json(json.loads(raw))
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = None
        if record is not None:
            return record, None, identity
        return None, max(0.0, self._clock() - stat.st_mtime), identity

    def _is_mine(self, record: LeaseRecord | None, identity: tuple[int, int] | None) -> bool:
        """Whether the file read is the one this run created, holding this run's record."""
        if self._fd is None or record is None or record.holder.token != self.holder.token:
            return False
        mine = os.fstat(self._fd)
        return identity == (mine.st_dev, mine.st_ino)

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _unlink(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    @contextmanager
    def _guard(self) -> Iterator[_Guard]:
        """Serialises read-check-write of the lease file between processes (flock on a sidecar file).

        A releasing holder removes the sidecar (``remove_lock``), so a locker
        checks that the file it locked is still the one at the path.
        """
        lock_path = f"{self.path}.lock"
        while True:
            fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
            locked = self._flock(fd)
            if not locked:
                break
            try:
                mine, current = os.fstat(fd), os.stat(lock_path)
                if (mine.st_dev, mine.st_ino) == (current.st_dev, current.st_ino):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        guard = _Guard()
        try:
            yield guard
            if guard.remove_lock and locked:
                os.unlink(lock_path)
        finally:
            os.close(fd)

    def _flock(self, fd: int) -> bool:
        """Locks ``fd`` exclusively; False where the filesystem has no flock."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return True
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
        if not self._unguarded_noted:
            # O_EXCL still makes creation exclusive; only two takeovers racing are not.
            self._say(f"note: the filesystem of {self.directory} has no flock; lease takeovers are unguarded")
            self._unguarded_noted = True
        return False

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="mhgan-lease-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                if not self.renew():
                    return
            except OSError as exc:
                if self._clock() - self._renewed_at > self.ttl_s:
                    self._lose(f"the lease on {self.directory} could not be renewed for {self.ttl_s:.0f} s "
                               f"({_reason(exc)})")
                    return

    def _lose(self, reason: str) -> None:
        self.lost_reason = reason
        if self._on_lost is not None:
            self._on_lost()


@dataclass
class _Guard:
    remove_lock: bool = False


def lease_directory(uri: str) -> str | None:
    """The local directory a lease can live in for run directory ``uri``; None on object stores."""
    store = RunStore(uri)
    return store.root if store.is_local else None


# ------------------------------------------------------------------- runner


class _Summary(Protocol):
    def lines(self) -> list[str]: ...


S = TypeVar("S", bound=_Summary)


@dataclass
class GuardedOutcome(Generic[S]):
    """The run's summary and what the nightly steps did, as printable lines."""

    summary: S
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [*self.summary.lines(), *self.notes]


def run_guarded(
    config: JobConfig,
    run: Callable[[JobConfig], S],
    *,
    nightly: NightlyOptions | None = None,
    say: Callable[[str], None] | None = None,
    lease_ttl_s: float = LEASE_TTL_S,
    heartbeat_s: float = HEARTBEAT_S,
) -> GuardedOutcome[S]:
    """Runs ``run`` on ``config`` (or on its dated form) under the run lease.

    Without ``nightly``: refuses a nightly root, then runs under a lease on
    the output directory (local filesystems). With ``nightly``: refuses a
    root that holds a single run and a date that ``--keep`` would remove at
    once, runs ``OUTPUT/date=YYYY-MM-DD`` with the date's seed under a
    lease, then (also when the date was already complete) deletes the
    date's proposal shards unless kept, points ``latest.json`` at the newest
    complete date and applies ``--keep``. A complete run directory is handed
    to ``run`` without a lease: ``run`` only recognises it. ``run`` must be
    idempotent (``run_job`` is) and raise MhganError for user errors.
    """
    say = say or (lambda message: print(message, file=sys.stderr, flush=True))
    root: NightlyRoot | None = None
    if nightly is None:
        output = RunStore(config.output.output)
        if output.exists(LATEST):
            raise OutputError(
                f"{output.display} holds nightly runs ({LATEST}); add --nightly or choose another --output"
            )
        job = config
    else:
        root = NightlyRoot(config.output.output)
        root.check_layout()
        job = dated_config(config, nightly)
        keep = nightly.keep
        if keep is not None and not root.is_complete(nightly.date) and root.doomed_by_keep(nightly.date, keep):
            raise ConfigError(
                f"--date {nightly.date} is older than the newest {nightly.keep} complete date(s), so --keep "
                f"{nightly.keep} would remove it at once; raise --keep or leave that date out"
            )

    directory = lease_directory(job.output.output)
    if RunStore(job.output.output).exists(SUCCESS):
        summary = run(job)
    elif directory is None:
        if nightly is not None:
            say(f"note: no lease on {redact_uri(job.output.output)}: object stores have no exclusive create through pyarrow, "
                "so the scheduler must not start two runs of one date (see cluster/README.md)")
        summary = run(job)
    else:
        with RunLease(directory, ttl_s=lease_ttl_s, heartbeat_s=heartbeat_s, say=say,
                      on_lost=_interrupt_main_thread) as lease:
            try:
                with _lease_loss_interrupts(lease):
                    summary = run(job)
            except KeyboardInterrupt:
                if lease.lost_reason is None:
                    raise
                raise OutputError(f"{lease.lost_reason}; re-run the same command to check and finish it") from None
            if lease.lost_reason is not None:
                raise OutputError(f"{lease.lost_reason}; re-run the same command to check and finish it")
    # Outside the lease: these steps touch only complete dates and are idempotent.
    notes = _after_date(root, nightly) if root is not None and nightly is not None else []
    return GuardedOutcome(summary, notes)


def _interrupt_main_thread() -> None:
    # A real signal, unlike _thread.interrupt_main, also cuts short a blocking call.
    main = threading.main_thread().ident
    if main is not None:
        signal.pthread_kill(main, signal.SIGINT)


@contextmanager
def _lease_loss_interrupts(lease: RunLease) -> Iterator[None]:
    """While open, the SIGINT sent on losing ``lease`` raises KeyboardInterrupt in the main thread.

    A process started with SIGINT ignored (any background job of a
    non-interactive shell, such as ``job &`` in a script) keeps it
    ignored, so that signal alone would do nothing and a run that lost its
    lease would go on writing. Any other SIGINT meets what the process had:
    ignored stays ignored, a handler is called, SIG_DFL raises
    KeyboardInterrupt (where it would have killed the process).
    Outside the main thread, or when SIGINT's handler was not set from
    Python, nothing changes.
    """
    previous = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    if previous is None:
        yield
        return

    def on_sigint(signum: int, frame: Any) -> None:
        if lease.lost or previous == signal.SIG_DFL:
            raise KeyboardInterrupt
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _after_date(root: NightlyRoot, nightly: NightlyOptions) -> list[str]:
    """The idempotent steps after a date completed: shards, latest.json, retention."""
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

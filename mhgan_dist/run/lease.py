"""The run lease: one writer at a time per run directory on a POSIX filesystem.

A run holds an exclusive ``fcntl.flock`` on ``DIRECTORY/_LEASE`` through one
file descriptor that it keeps open for its whole life. The lock belongs to
that descriptor, so it ends when the descriptor closes, which the kernel does
however the process ends (exit, exception, SIGKILL); on NFS the server holds
it and frees it when the client closes it or, after the client's machine is
lost, when that client's NFS lease lapses (NFSv4: 90 s by default). Hence:

* one holder at a time: :meth:`RunLease.acquire` never waits; a rival finds
  the lock held and gets OutputError naming the holder (host, pid);
* a holder that is killed never blocks a re-run: its lock is gone with it,
  and the next run takes the file over at once;
* a holder that is alive keeps the lock however long it stalls (no clock,
  no renewal, no thread): a rival is refused until it ends.

The file holds the holder's record (JSON: host, pid, acquired_at) for the
refusal message only; the lock, not the file, is what excludes. A holder
removes the file on release, before closing the descriptor, and a run that
locks a file checks that it is still the one at the path (else it locked a
file its holder had just removed, and tries again), so the only lock that
counts is the one on the file at the path.

The descriptor is closed in forked children and on exec, so no process the
run starts keeps its lock after the run has died, and a forked child never
releases its parent's lease.

Across hosts on NFS the lock works where the mount passes flock to the
server (NFSv4; NFSv3 with lockd; not mounted with ``nolock`` or
``local_lock=flock|all``). Where flock is refused outright (ENOLCK and the
like), :meth:`RunLease.acquire` returns False and holds nothing: the caller
says what guards the run instead.

Standard library only: no Ray, no pyarrow.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mhgan_dist.errors import OutputError, first_line

__all__ = ["LEASE_FILE", "LeaseHolder", "RunLease"]

LEASE_FILE = "_LEASE"
LEASE_FORMAT = "mhgan-dist lease"
LEASE_VERSION = 2
_NO_FLOCK = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})
_RECORD_LIMIT = 64 * 1024  # bytes of a lease file read for its record; a record is about 100

_HELD: set[int] = set()  # descriptors of the leases this process holds


def _close_held_in_child() -> None:
    # A forked child shares the parent's lock; were it to outlive a killed parent,
    # it would keep the run directory locked.
    for fd in _HELD:
        os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds a lease: host name, process id, and when it took the lease (s since the epoch, UTC)."""

    host: str
    pid: int
    acquired_at: float

    @staticmethod
    def this_process() -> LeaseHolder:
        return LeaseHolder(socket.gethostname(), os.getpid(), time.time())

    def to_json(self) -> dict[str, Any]:
        return {"format": LEASE_FORMAT, "version": LEASE_VERSION, "holder": {"host": self.host, "pid": self.pid},
                "acquired_at": self.acquired_at}

    @staticmethod
    def from_json(body: Any) -> LeaseHolder | None:
        """The holder a lease record names; None when ``body`` names no host and pid."""
        holder = body.get("holder") if isinstance(body, dict) else None
        if not isinstance(holder, dict):
            return None
        host, pid, acquired_at = holder.get("host"), holder.get("pid"), body.get("acquired_at", 0.0)
        if not (isinstance(host, str) and isinstance(pid, int) and not isinstance(pid, bool)
                and isinstance(acquired_at, (int, float))):
            return None
        return LeaseHolder(host, pid, float(acquired_at))


class RunLease:
    """The exclusive right to write one run directory, held from :meth:`acquire` to :meth:`release`.

    Use as a context manager around the run. ``acquire`` raises OutputError
    when another open descriptor (this process or another, this host or,
    over NFS, another) holds the lock, or when the directory cannot be
    created or written; it returns False where the filesystem refuses flock.
    ``took_over`` names the holder of a file left by a run that ended without
    removing it (killed, or its machine lost), None otherwise.
    """

    def __init__(self, directory: str, *, say: Callable[[str], None] | None = None) -> None:
        self.directory = directory
        self.path = os.path.join(directory, LEASE_FILE)
        self.holder: LeaseHolder | None = None
        self.took_over: LeaseHolder | None = None
        self.unsupported: str | None = None  # why flock was refused, where it was
        self._say = say or (lambda message: print(message, file=sys.stderr, flush=True))
        self._fd: int | None = None
        self._pid = 0  # the process that took the lease

    @property
    def held(self) -> bool:
        return self._fd is not None and self._pid == os.getpid()

    def __enter__(self) -> RunLease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> bool:
        """Takes the lease without waiting: True when held, False where flock is refused (nothing held)."""
        if self.held:
            return True
        try:
            return self._acquire()
        except OSError as exc:
            raise OutputError(f"output directory {self.directory} is not writable: {first_line(exc)}") from None

    def release(self) -> None:
        """Removes the lease file and closes its descriptor, which ends the lock; a no-op when not held."""
        fd, self._fd = self._fd, None
        if fd is None or self._pid != os.getpid():
            return
        try:
            # Removed while still locked: a rival that opened this file before then
            # gets the lock only once it is off the path, and so tries again.
            if self._at_path(fd):
                os.unlink(self.path)
        except OSError as exc:
            self._say(f"could not remove the lease file {self.path} ({first_line(exc)}); the next run takes it over")
        finally:
            _HELD.discard(fd)
            os.close(fd)

    # ------------------------------------------------------------- internals

    def _acquire(self) -> bool:
        os.makedirs(self.directory, exist_ok=True)
        while True:
            fd, created = self._open()
            if fd is None:
                continue
            try:
                taken = self._take(fd, created)
            except BaseException:
                os.close(fd)
                raise
            if not taken:
                os.close(fd)
                if taken is None:
                    continue
                return False
            self._fd, self._pid = fd, os.getpid()
            _HELD.add(fd)
            if self.took_over is not None:
                self._say(f"took over the lease on {self.directory} from host {self.took_over.host} "
                          f"pid {self.took_over.pid} (its holder's process is gone)")
            return True

    def _take(self, fd: int, created: bool) -> bool | None:
        """Locks ``fd`` and writes this run's record into it.

        True when held; None when ``fd`` is no longer the file at the path
        (its holder removed it on release: try again); False where flock is
        refused; OutputError when another descriptor holds the lock.
        """
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not self._at_path(fd):
                return None
            holder = _read_holder(fd)
            who = f" (host {holder.host}, pid {holder.pid})" if holder is not None else ""
            raise OutputError(f"{self.directory} is being written by another run{who}; "
                              "wait for that run or re-run this one later") from None
        except OSError as exc:
            if exc.errno not in _NO_FLOCK:
                raise
            self.unsupported = first_line(exc)
            if created:
                os.unlink(self.path)
            return False
        if not self._at_path(fd):
            return None
        self.took_over = _read_holder(fd)
        self.holder = LeaseHolder.this_process()
        _write_record(fd, self.holder)
        return True

    def _open(self) -> tuple[int | None, bool]:
        """(descriptor of the file at the path, whether this call created it); None when it vanished."""
        try:
            return os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o644), True
        except FileExistsError:
            pass
        try:
            return os.open(self.path, os.O_RDWR | os.O_CLOEXEC), False
        except FileNotFoundError:
            return None, False

    def _at_path(self, fd: int) -> bool:
        """Whether ``fd`` is the file now at the lease path."""
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino)


def _read_holder(fd: int) -> LeaseHolder | None:
    """The holder named by the lease file open at ``fd``; None when it is empty or unreadable."""
    raw = os.pread(fd, _RECORD_LIMIT, 0)
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return LeaseHolder.from_json(body)


def _write_record(fd: int, holder: LeaseHolder) -> None:
    body = json.dumps(holder.to_json()).encode()
    os.ftruncate(fd, 0)
    if os.pwrite(fd, body, 0) != len(body):
        raise OSError(errno.EIO, "short write")
    os.fsync(fd)

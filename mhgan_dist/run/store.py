"""The run directory on any pyarrow filesystem: paths, atomic writes, checksums.

A run directory (``--output``) is a local path or a filesystem URI that
pyarrow understands (``file://``, ``s3://``, ``gs://``, ...). Layout::

    run.json                      the resolved config; written first (run.json, manifest.json and
                                  _SUCCESS are read and written by mhgan_dist.run.record only)
    proposals/shard-NNNNNN.parquet  raw D score per proposal (row = proposal index - shard start)
    calibration/isotonic.json     the fitted calibrator (JSON thresholds)
    calibration/report.json       diagnostics before/after, DRS pilot maximum
    calibration/scores.parquet    held-out real and generated calibration scores
    chains/part-NNNNNN.parquet    the pick of every chain
    samples/part-NNNNNN.parquet   the output dataset
    manifest.json                 every finished file with rows and sha256, stats
    _SUCCESS                      written last, only when the run is complete

Every file is written whole or not at all: on a local filesystem to a
temporary name in the same folder, then renamed into place (atomic on POSIX);
on an object store (no rename) straight to its final name, since one PUT is
all-or-nothing there. File names are a deterministic function of the stage and
index. Relative paths from configs or manifests never escape the root.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import urllib.parse
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mhgan_dist.errors import OutputError

__all__ = ["FileRecord", "RunStore", "redact_uri", "shard_path", "part_path"]


# Query parameters of filesystem URIs that carry credentials (pyarrow's S3 and GCS
# options access_key, secret_key, session_token, ...; any *password*, *token*).
_SECRET_QUERY_KEY = re.compile(r"key|secret|token|password|credential|signature", re.IGNORECASE)


def redact_uri(uri: str) -> str:
    """``uri`` with the credentials it may carry replaced by ``***``: the
    user-info part of the authority and the values of secret-looking query
    parameters. Local paths and URIs without secrets come back unchanged. Used
    for everything printed, logged or written into the run directory."""
    if "://" not in uri:
        return uri
    parts = urllib.parse.urlsplit(uri)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        query = "&".join(f"{k}={'***' if _SECRET_QUERY_KEY.search(k) else v}" for k, v in pairs)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def shard_path(index: int) -> str:
    return f"proposals/shard-{index:06d}.parquet"


def part_path(stage: str, index: int) -> str:
    return f"{stage}/part-{index:06d}.parquet"


@dataclass(frozen=True)
class FileRecord:
    """A finished file: its path relative to the run root, rows, size and sha256."""

    path: str
    rows: int
    bytes: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RunStore:
    """Reads and writes one run directory; every path argument is relative to it."""

    def __init__(self, uri: str) -> None:
        if not uri:
            raise OutputError("the output location is empty")
        try:
            fs, root = pafs.FileSystem.from_uri(uri)
        except (pa.ArrowInvalid, ValueError):
            fs, root = pafs.LocalFileSystem(), os.path.abspath(uri)
        except (pa.ArrowException, OSError) as exc:
            raise OutputError(f"output location {redact_uri(uri)} cannot be opened: "
                              f"{str(exc).replace(uri, redact_uri(uri))}") from None
        self.uri = uri
        self.fs = fs
        self.root = root.rstrip("/") or "/"
        self.is_local = isinstance(fs, pafs.LocalFileSystem)

    def __reduce__(self):
        return (RunStore, (self.uri,))

    @property
    def display(self) -> str:
        """The location with its credentials redacted, for messages and files."""
        return redact_uri(self.uri)

    # ------------------------------------------------------------------ paths

    def path(self, relative: str) -> str:
        """Absolute path of ``relative`` inside the root; refuses paths that escape it."""
        if not relative or relative.startswith("/") or "\\" in relative:
            raise OutputError(f"path {relative!r} must be relative to the run directory")
        normal = posixpath.normpath(relative)
        if normal == ".." or normal.startswith("../") or normal == ".":
            raise OutputError(f"path {relative!r} escapes the run directory")
        return f"{self.root}/{normal}"

    def _info(self, relative: str) -> pafs.FileInfo | None:
        try:
            return self.fs.get_file_info(self.path(relative))
        except (NotADirectoryError, PermissionError):
            return None

    def exists(self, relative: str) -> bool:
        info = self._info(relative)
        return info is not None and info.type == pafs.FileType.File

    def size(self, relative: str) -> int | None:
        info = self._info(relative)
        return info.size if info is not None and info.type == pafs.FileType.File else None

    def list(self, folder: str) -> list[str]:
        selector = pafs.FileSelector(self.path(folder), allow_not_found=True)
        base = self.root + "/"
        return sorted(
            info.path[len(base):] for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.File
        )

    def ensure_writable(self) -> None:
        """Creates the root and proves it writable with a probe file; OutputError otherwise."""
        probe = self.path(f".write-probe-{uuid.uuid4().hex}")
        try:
            self.fs.create_dir(self.root, recursive=True)
            with self.fs.open_output_stream(probe) as f:
                f.write(b"ok")
            self.fs.delete_file(probe)
        except (OSError, pa.ArrowException) as exc:
            raise OutputError(f"output directory {self.display} is not writable: {_reason(exc)}") from None

    # ----------------------------------------------------------------- writes

    def write_bytes(self, relative: str, payload: bytes) -> str:
        """Writes ``payload`` whole to ``relative``; returns its sha256 hex."""
        final = self.path(relative)
        self.fs.create_dir(posixpath.dirname(final), recursive=True)
        if self.is_local:
            temporary = f"{posixpath.dirname(final)}/.tmp-{uuid.uuid4().hex}-{posixpath.basename(final)}"
            with open(temporary, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, final)
        else:
            with self.fs.open_output_stream(final) as f:
                f.write(payload)
        return hashlib.sha256(payload).hexdigest()

    def write_json(self, relative: str, obj: Any) -> str:
        return self.write_bytes(relative, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())

    def write_table(self, relative: str, table: pa.Table, compression: str = "zstd", **options: Any) -> FileRecord:
        """Writes a Parquet file atomically and returns its record; ``options`` go to ``pq.write_table``."""
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression=compression, **options)
        payload = sink.getvalue().to_pybytes()
        digest = self.write_bytes(relative, payload)
        return FileRecord(relative, table.num_rows, len(payload), digest)

    def delete(self, relative: str) -> None:
        if self.exists(relative):
            self.fs.delete_file(self.path(relative))

    def delete_folder(self, folder: str) -> None:
        info = self.fs.get_file_info(self.path(folder))
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path(folder))

    # ------------------------------------------------------------------ reads

    def read_bytes(self, relative: str) -> bytes:
        with self.fs.open_input_stream(self.path(relative)) as f:
            return f.read()

    def read_json(self, relative: str) -> Any:
        try:
            return json.loads(self.read_bytes(relative))
        except json.JSONDecodeError as exc:
            raise OutputError(f"{self.path(relative)} is not valid JSON: {exc.msg}") from None

    def read_table(self, relative: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.path(relative), columns=columns, filesystem=self.fs)

    def verify(self, record: FileRecord) -> bool:
        """True when the file exists with the recorded size and sha256."""
        if self.size(record.path) != record.bytes:
            return False
        return hashlib.sha256(self.read_bytes(record.path)).hexdigest() == record.sha256


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

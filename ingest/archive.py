"""Recording archives: frames taken off Kafka, stored so that they can be replayed byte for byte.

Layout (a directory, or the same members in an uncompressed ``.tar``)::

    ARCHIVE/
      manifest.jsonl          one JSON object per frame, in replay order (see ArchiveEntry)
      frames/000000000.jpg    the record value, byte for byte; the suffix follows the ``encoding``
      frames/000000001.png    header (jpg, png, raw; bin when there is none), the number is the
      ...                     frame's index in the manifest
      archive.json            written last: format name and version, source topic and range,
                              frame count, byte count, ``"complete": true``

Each manifest line holds the index, file name, ``sha256`` and size of the value, the source
topic/partition/offset, the record timestamp (ms) and timestamp type, the key and every header in
order. Keys and header values are stored as ``{"v": text}`` when they are UTF-8 and as
``{"b64": ...}`` otherwise, so any record survives. The reader refuses an archive without
``archive.json`` (an interrupted recording), a file name outside ``frames/``, and a value whose
checksum differs (:class:`~ingest.errors.ArchiveError`).

The reader also opens ``.tar.gz`` / ``.tar.bz2`` / ``.tar.xz`` (someone compressed a recording)
and trusts no archive: before any member is read whole, every member is checked as its header
comes off the stream — its name (only ``archive.json``, ``manifest.jsonl`` and
``frames/NNNNNNNNN.ext``: no absolute path, no ``..``, no duplicates), its type (regular files
only: no links, devices or directories other than ``frames/``), its size against
:class:`ArchiveLimits` (a frame at most the broker's frame limit, the manifest and info bounded),
and the running total of sizes and the member count — so a decompression bomb or a tar full of
traps is refused with an :class:`~ingest.errors.ArchiveError` naming the member, before its bytes
are inflated into memory. A directory archive gets the same size and type checks per file (a
symlink leading outside the directory is refused).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import stat
import tarfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ingest.errors import ArchiveError
from ingest.topics import MAX_MESSAGE_BYTES

FORMAT = "grdline-archive"
FORMAT_VERSION = 1
MANIFEST = "manifest.jsonl"
INFO = "archive.json"
_SUFFIX = {"jpeg": "jpg", "png": "png", "raw": "raw"}
_FILE_RE = re.compile(r"^frames/[0-9]{9}\.(jpg|png|raw|bin)$")


class ArchiveLimits(BaseModel):
    """What a reader accepts from an archive, checked before anything is read whole."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: One frame file: a record value is at most the broker's frame limit.
    max_frame_bytes: int = Field(default=MAX_MESSAGE_BYTES, ge=1)
    #: ``manifest.jsonl`` (about 1 KiB per frame).
    max_manifest_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    #: ``archive.json``.
    max_info_bytes: int = Field(default=1024 * 1024, ge=1)
    #: Sum of every member's size (what reading the whole archive would inflate to).
    max_total_bytes: int = Field(default=64 * 1024**3, ge=1)
    #: Members (frames + 2).
    max_members: int = Field(default=1_000_000, ge=1)

    def for_member(self, name: str) -> int | None:
        """The size limit of member ``name``, or None when no archive may hold such a member."""
        if name == INFO:
            return self.max_info_bytes
        if name == MANIFEST:
            return self.max_manifest_bytes
        if _FILE_RE.match(name):
            return self.max_frame_bytes
        return None


def _pack(b: bytes | None) -> dict[str, str] | None:
    if b is None:
        return None
    try:
        return {"v": b.decode("utf-8")}
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(b).decode("ascii")}


def _unpack(d: dict[str, str] | None) -> bytes | None:
    if d is None:
        return None
    if "v" in d:
        return d["v"].encode("utf-8")
    return base64.b64decode(d["b64"], validate=True)


class ArchiveEntry(BaseModel):
    """One recorded frame (one manifest line)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=0)
    file: str = Field(pattern=_FILE_RE.pattern)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    timestamp_type: int
    key: bytes | None
    headers: list[tuple[str, bytes]]

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode("utf-8", errors="replace")
        return None

    def to_json(self) -> str:
        d: dict[str, Any] = self.model_dump(exclude={"key", "headers"})
        d["key"] = _pack(self.key)
        d["headers"] = [{"k": k, **_pack(v)} for k, v in self.headers]
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> ArchiveEntry:
        d = json.loads(line)
        d["key"] = _unpack(d.get("key"))
        d["headers"] = [(h["k"], _unpack({k: v for k, v in h.items() if k != "k"})) for h in d["headers"]]
        return cls.model_validate(d)


class ArchiveWriter:
    """Writes an archive directory (or ``.tar`` when the path ends so). Use as a context manager;
    ``archive.json`` is written only by a clean :meth:`close`."""

    def __init__(self, path: str | Path, *, topic: str, source: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.topic = topic
        self.source = source or {}
        self.count = 0
        self.nbytes = 0
        self._tar: tarfile.TarFile | None = None
        self._manifest: io.StringIO | Any = None

    @property
    def is_tar(self) -> bool:
        return self.path.suffix == ".tar"

    def open(self) -> ArchiveWriter:
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise ArchiveError(f"{self.path}: exists and is not an empty directory; refusing to overwrite")
        if self.is_tar:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tar = tarfile.open(self.path, "w")
            self._manifest = io.StringIO()
        else:
            (self.path / "frames").mkdir(parents=True, exist_ok=True)
            self._manifest = open(self.path / MANIFEST, "w", encoding="utf-8")
        return self

    def __enter__(self) -> ArchiveWriter:
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(complete=exc_type is None)

    def _put(self, name: str, data: bytes) -> None:
        if self._tar is not None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = int(time.time())
            self._tar.addfile(info, io.BytesIO(data))
        else:
            (self.path / name).write_bytes(data)

    def add(self, *, value: bytes | None, key: bytes | None, headers, topic: str, partition: int,
            offset: int, timestamp_ms: int, timestamp_type: int = 0) -> ArchiveEntry:
        """Store one record; returns its manifest entry."""
        value = value or b""
        hdrs = [(str(k), bytes(v) if v is not None else b"") for k, v in headers or ()]
        enc = next((v.decode("utf-8", "replace") for k, v in hdrs if k == "encoding"), "")
        name = f"frames/{self.count:09d}.{_SUFFIX.get(enc, 'bin')}"
        entry = ArchiveEntry(
            index=self.count, file=name, sha256=hashlib.sha256(value).hexdigest(), size=len(value),
            topic=topic, partition=partition, offset=offset, timestamp_ms=timestamp_ms,
            timestamp_type=timestamp_type, key=key, headers=hdrs,
        )
        self._put(name, value)
        self._manifest.write(entry.to_json() + "\n")
        self.count += 1
        self.nbytes += len(value)
        return entry

    def close(self, complete: bool = True) -> None:
        if self._manifest is None:
            return
        info = {
            "format": FORMAT, "version": FORMAT_VERSION, "topic": self.topic, "source": self.source,
            "created_at": datetime.now(UTC).isoformat(), "frames": self.count, "bytes": self.nbytes,
            "complete": complete,
        }
        if self._tar is not None:
            self._put(MANIFEST, self._manifest.getvalue().encode("utf-8"))
            if complete:
                self._put(INFO, json.dumps(info, indent=2).encode("utf-8"))
            self._tar.close()
        else:
            self._manifest.close()
            if complete:
                (self.path / INFO).write_text(json.dumps(info, indent=2))
        self._manifest = None
        self._tar = None


class ArchiveReader:
    """Reads an archive written by :class:`ArchiveWriter` (or a compressed copy of a ``.tar``) and
    verifies every value's checksum; members are checked against ``limits`` first."""

    def __init__(self, path: str | Path, limits: ArchiveLimits | None = None) -> None:
        self.path = Path(path)
        self.limits = limits or ArchiveLimits()
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] = {}
        if self.path.is_file():
            try:
                is_tar = tarfile.is_tarfile(self.path)
            except (OSError, EOFError, tarfile.TarError) as exc:
                raise ArchiveError(f"{self.path}: not a readable tar archive: {exc}") from exc
            if not is_tar:
                raise ArchiveError(f"{self.path}: a file that is not a tar archive (plain or compressed)")
            try:
                self._tar = tarfile.open(self.path, "r")
                self._scan_tar()
            except (OSError, EOFError, tarfile.TarError) as exc:
                self.close()
                raise ArchiveError(f"{self.path}: corrupt or truncated tar archive: {exc}") from exc
            except ArchiveError:
                self.close()
                raise
        elif not self.path.is_dir():
            raise ArchiveError(f"{self.path}: no such archive (directory or .tar)")
        try:
            self.info = json.loads(self._get(INFO))
        except ArchiveError as exc:
            raise ArchiveError(f"{self.path}: no {INFO}; the recording did not finish cleanly") from exc
        if self.info.get("format") != FORMAT or self.info.get("version") != FORMAT_VERSION:
            raise ArchiveError(f"{self.path}: not a {FORMAT} v{FORMAT_VERSION} archive: {self.info!r:.200}")
        self._entries: list[ArchiveEntry] | None = None

    def _scan_tar(self) -> None:
        """Check every member header as it comes off the (possibly compressed) stream, before any
        member's data is read: names, types, sizes, total, count. Data is skipped, not kept."""
        assert self._tar is not None
        total = 0
        while (info := self._tar.next()) is not None:
            name = info.name
            if len(self._members) >= self.limits.max_members:
                raise ArchiveError(f"{self.path}: more than {self.limits.max_members} members")
            if name.startswith("/") or ".." in Path(name).parts or "\\" in name:
                raise ArchiveError(f"{self.path}: member {name!r} has an unsafe path (absolute or '..')")
            if info.isdir() and name.rstrip("/") == "frames":
                continue
            limit = self.limits.for_member(name)
            if limit is None:
                raise ArchiveError(f"{self.path}: unexpected member {name!r} (only {INFO}, {MANIFEST} "
                                   "and frames/NNNNNNNNN.ext belong in an archive)")
            if not info.isreg():
                raise ArchiveError(f"{self.path}: member {name!r} is not a regular file (link or device)")
            if name in self._members:
                raise ArchiveError(f"{self.path}: member {name!r} appears twice")
            if info.size > limit:
                raise ArchiveError(f"{self.path}: member {name!r} is {info.size} B, over the {limit} B limit")
            total += info.size
            if total > self.limits.max_total_bytes:
                raise ArchiveError(f"{self.path}: members add up to more than {self.limits.max_total_bytes} B "
                                   f"(at {name!r}); refusing to inflate it")
            self._members[name] = info

    def _get(self, name: str) -> bytes:
        limit = self.limits.for_member(name)
        if limit is None:  # pragma: no cover - names come from constants or the validated manifest
            raise ArchiveError(f"{self.path}: {name!r} is not an archive member name")
        if self._tar is not None:
            info = self._members.get(name)
            if info is None:
                raise ArchiveError(f"{self.path}: member {name} missing")
            member = self._tar.extractfile(info)
            if member is None:  # pragma: no cover - only regular files pass the scan
                raise ArchiveError(f"{self.path}: member {name} is not a file")
            data = member.read(limit + 1)
            if len(data) > limit:  # pragma: no cover - the header's size was checked
                raise ArchiveError(f"{self.path}: member {name!r} is larger than its {limit} B limit")
            return data
        file = self.path / name
        try:
            if file.is_symlink() and not file.resolve().is_relative_to(self.path.resolve()):
                raise ArchiveError(f"{self.path}: {name} is a link leading outside the archive")
            st = file.stat()
        except FileNotFoundError as exc:
            raise ArchiveError(f"{self.path}: file {name} missing") from exc
        if not stat.S_ISREG(st.st_mode):
            raise ArchiveError(f"{self.path}: {name} is not a regular file")
        if st.st_size > limit:
            raise ArchiveError(f"{self.path}: {name} is {st.st_size} B, over the {limit} B limit")
        with open(file, "rb") as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:  # grew after the check
            raise ArchiveError(f"{self.path}: {name} is larger than its {limit} B limit")
        return data

    def entries(self) -> list[ArchiveEntry]:
        if self._entries is None:
            out = []
            for n, line in enumerate(self._get(MANIFEST).decode("utf-8").splitlines(), 1):
                try:
                    out.append(ArchiveEntry.from_json(line))
                except (ValueError, KeyError, TypeError) as exc:
                    raise ArchiveError(f"{self.path}: {MANIFEST} line {n} is malformed: {exc}") from exc
            if len(out) != self.info.get("frames"):
                raise ArchiveError(f"{self.path}: manifest has {len(out)} frames, {INFO} says {self.info.get('frames')}")
            self._entries = out
        return self._entries

    def read(self, entry: ArchiveEntry) -> bytes:
        data = self._get(entry.file)
        if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
            raise ArchiveError(f"{self.path}: {entry.file} (offset {entry.offset}) fails its sha256 check")
        return data

    def __iter__(self) -> Iterator[tuple[ArchiveEntry, bytes]]:
        for entry in self.entries():
            yield entry, self.read(entry)

    def __len__(self) -> int:
        return len(self.entries())

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None

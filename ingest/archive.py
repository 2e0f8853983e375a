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
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import tarfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ingest.errors import ArchiveError

FORMAT = "grdline-archive"
FORMAT_VERSION = 1
MANIFEST = "manifest.jsonl"
INFO = "archive.json"
_SUFFIX = {"jpeg": "jpg", "png": "png", "raw": "raw"}
_FILE_RE = re.compile(r"^frames/[0-9]{9}\.(jpg|png|raw|bin)$")


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
    """Reads an archive written by :class:`ArchiveWriter` and verifies every value's checksum."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._tar: tarfile.TarFile | None = None
        if self.path.is_file() and tarfile.is_tarfile(self.path):
            self._tar = tarfile.open(self.path, "r")
        elif not self.path.is_dir():
            raise ArchiveError(f"{self.path}: no such archive (directory or .tar)")
        try:
            self.info = json.loads(self._get(INFO))
        except ArchiveError as exc:
            raise ArchiveError(f"{self.path}: no {INFO}; the recording did not finish cleanly") from exc
        if self.info.get("format") != FORMAT or self.info.get("version") != FORMAT_VERSION:
            raise ArchiveError(f"{self.path}: not a {FORMAT} v{FORMAT_VERSION} archive: {self.info!r:.200}")
        self._entries: list[ArchiveEntry] | None = None

    def _get(self, name: str) -> bytes:
        if self._tar is not None:
            try:
                member = self._tar.extractfile(name)
            except KeyError as exc:
                raise ArchiveError(f"{self.path}: member {name} missing") from exc
            if member is None:
                raise ArchiveError(f"{self.path}: member {name} is not a file")
            return member.read()
        try:
            return (self.path / name).read_bytes()
        except FileNotFoundError as exc:
            raise ArchiveError(f"{self.path}: file {name} missing") from exc

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

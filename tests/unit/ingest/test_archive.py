"""Archive format: lossless for any record, checksums enforced, unsafe or unfinished archives refused."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pytest

from ingest.archive import INFO, MANIFEST, ArchiveEntry, ArchiveLimits, ArchiveReader, ArchiveWriter
from ingest.errors import ArchiveError

RECORDS = [
    dict(value=b"\xff\xd8jpegbytes\xff\xd9", key=b"cam0", headers=[("encoding", b"jpeg"), ("frame_id", b"f0")],
         partition=0, offset=10, timestamp_ms=1000),
    dict(value=b"\x89PNG...", key=None, headers=[("encoding", b"png"), ("bin", b"\xff\x00\xfe")],
         partition=1, offset=3, timestamp_ms=1040),
    dict(value=None, key=b"\x80\x81", headers=[], partition=0, offset=11, timestamp_ms=1100),
    dict(value=b"raw", key=b"cam1", headers=[("encoding", b"raw"), ("encoding", b"dup")],
         partition=1, offset=4, timestamp_ms=1200),
]


def write(path):
    with ArchiveWriter(path, topic="frames", source={"ranges": []}) as w:
        for r in RECORDS:
            w.add(topic="frames", **r)
    return path


@pytest.mark.parametrize("name", ["rec", "rec.tar"])
def test_round_trip_is_lossless(tmp_path, name):
    reader = ArchiveReader(write(tmp_path / name))
    assert reader.info["complete"] and reader.info["frames"] == 4 and reader.info["topic"] == "frames"
    got = list(reader)
    assert len(got) == len(reader) == 4
    for (entry, value), r in zip(got, RECORDS, strict=True):
        assert value == (r["value"] or b"")
        assert entry.key == r["key"] and entry.headers == r["headers"]
        assert (entry.partition, entry.offset, entry.timestamp_ms) == (r["partition"], r["offset"], r["timestamp_ms"])
    assert [e.file for e, _ in got] == ["frames/000000000.jpg", "frames/000000001.png",
                                        "frames/000000002.bin", "frames/000000003.raw"]
    reader.close()


def test_manifest_is_readable_json(tmp_path):
    path = write(tmp_path / "rec")
    lines = (path / MANIFEST).read_text().splitlines()
    first = json.loads(lines[0])
    assert first["key"] == {"v": "cam0"} and first["headers"][1] == {"k": "frame_id", "v": "f0"}
    assert json.loads(lines[1])["headers"][1] == {"k": "bin", "b64": "/wD+"}
    assert ArchiveEntry.from_json(lines[1]).headers[1] == ("bin", b"\xff\x00\xfe")


def test_tampered_file_fails_checksum(tmp_path):
    path = write(tmp_path / "rec")
    (path / "frames" / "000000001.png").write_bytes(b"\x89PNG..!")
    reader = ArchiveReader(path)
    with pytest.raises(ArchiveError, match="sha256"):
        list(reader)


def test_interrupted_recording_is_refused(tmp_path):
    path = tmp_path / "rec"
    with pytest.raises(RuntimeError), ArchiveWriter(path, topic="frames") as w:
        w.add(topic="frames", **RECORDS[0])
        raise RuntimeError("consumer died")
    assert not (path / INFO).exists()
    with pytest.raises(ArchiveError, match="did not finish"):
        ArchiveReader(path)


def test_refuses_to_overwrite(tmp_path):
    path = write(tmp_path / "rec")
    with pytest.raises(ArchiveError, match="refusing"):
        ArchiveWriter(path, topic="frames").open()


def test_path_traversal_in_manifest_is_refused(tmp_path):
    path = write(tmp_path / "rec")
    text = (path / MANIFEST).read_text().replace("frames/000000000.jpg", "../../etc/passwd")
    (path / MANIFEST).write_text(text)
    with pytest.raises(ArchiveError, match="line 1"):
        ArchiveReader(path).entries()


def test_missing_archive(tmp_path):
    with pytest.raises(ArchiveError, match="no such archive"):
        ArchiveReader(tmp_path / "nope")


def test_manifest_count_must_match(tmp_path):
    path = write(tmp_path / "rec")
    lines = (path / MANIFEST).read_text().splitlines()
    (path / MANIFEST).write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ArchiveError, match="manifest has 3"):
        ArchiveReader(path).entries()


# ------------------------------------------------------------------ untrusted (compressed) archives
def _tar_with(path, members, mode="w:gz"):
    """A tar (gzip by default) whose members are ``(name, data | TarInfo-editor)`` pairs."""
    with tarfile.open(path, mode) as tar:
        for name, data, edit in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            if edit:
                edit(info)
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def _valid_members(tmp_path):
    src = write(tmp_path / "src")
    out = [(INFO, (src / INFO).read_bytes(), None), (MANIFEST, (src / MANIFEST).read_bytes(), None)]
    for f in sorted((src / "frames").iterdir()):
        out.append((f"frames/{f.name}", f.read_bytes(), None))
    return out


@pytest.mark.parametrize("mode,suffix", [("w:gz", ".tar.gz"), ("w:bz2", ".tar.bz2"), ("w:xz", ".tar.xz")])
def test_compressed_copy_of_an_archive_reads(tmp_path, mode, suffix):
    path = _tar_with(tmp_path / f"rec{suffix}", _valid_members(tmp_path), mode)
    reader = ArchiveReader(path)
    assert [v for _, v in reader] == [r["value"] or b"" for r in RECORDS]
    reader.close()


@pytest.mark.parametrize("name,edit,match", [
    ("../evil", None, "unsafe path"),
    ("/etc/evil", None, "unsafe path"),
    ("frames/../../evil", None, "unsafe path"),
    ("notes.txt", None, "unexpected member"),
    ("frames/000000009.png", lambda i: setattr(i, "type", tarfile.SYMTYPE) or setattr(i, "linkname", "/etc/passwd"),
     "not a regular file"),
    ("frames/000000009.png", lambda i: setattr(i, "type", tarfile.LNKTYPE) or setattr(i, "linkname", INFO),
     "not a regular file"),
    ("frames/000000009.png", lambda i: setattr(i, "type", tarfile.CHRTYPE), "not a regular file"),
    (MANIFEST, None, "appears twice"),
])
def test_unsafe_members_are_refused_before_reading(tmp_path, name, edit, match):
    members = _valid_members(tmp_path) + [(name, b"" if edit else b"x", edit)]
    with pytest.raises(ArchiveError, match=match):
        ArchiveReader(_tar_with(tmp_path / "bad.tar.gz", members))


def test_decompression_bomb_member_is_refused_from_its_header(tmp_path):
    """9 MiB of zeros compress to a few KiB; the member header's size is refused before inflating."""
    members = _valid_members(tmp_path)
    members.insert(2, ("frames/000000007.raw", bytes(9 * 1024 * 1024), None))
    path = _tar_with(tmp_path / "bomb.tar.gz", members)
    assert os.path.getsize(path) < 64 * 1024
    with pytest.raises(ArchiveError, match=r"frames/000000007.raw.*over the 8388608 B limit"):
        ArchiveReader(path)


def test_total_size_and_member_count_limits(tmp_path):
    path = _tar_with(tmp_path / "rec.tar.gz", _valid_members(tmp_path))
    with pytest.raises(ArchiveError, match="add up to more than 100 B"):
        ArchiveReader(path, ArchiveLimits(max_total_bytes=100))
    with pytest.raises(ArchiveError, match="more than 3 members"):
        ArchiveReader(path, ArchiveLimits(max_members=3))
    with pytest.raises(ArchiveError, match="manifest.jsonl.*over the 10 B limit"):
        ArchiveReader(path, ArchiveLimits(max_manifest_bytes=10))


def test_corrupt_compressed_archive_is_an_archive_error(tmp_path):
    path = _tar_with(tmp_path / "rec.tar.gz", _valid_members(tmp_path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError):
        ArchiveReader(path)
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ArchiveError, match="not a tar archive"):
        ArchiveReader(tmp_path / "junk.tar")


def test_directory_archive_file_checks(tmp_path):
    path = write(tmp_path / "rec")
    secret = tmp_path / "secret"
    secret.write_bytes(b"outside")
    target = path / "frames" / "000000000.jpg"
    target.unlink()
    target.symlink_to(secret)
    with pytest.raises(ArchiveError, match="link leading outside"):
        list(ArchiveReader(path))
    path2 = write(tmp_path / "rec2")
    (path2 / "frames" / "000000001.png").write_bytes(bytes(64))
    with pytest.raises(ArchiveError, match="over the 32 B limit"):
        list(ArchiveReader(path2, ArchiveLimits(max_frame_bytes=32)))

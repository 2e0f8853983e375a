"""Archive format: lossless for any record, checksums enforced, unsafe or unfinished archives refused."""

from __future__ import annotations

import json

import pytest

from ingest.archive import INFO, MANIFEST, ArchiveEntry, ArchiveReader, ArchiveWriter
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

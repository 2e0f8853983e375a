"""Topic administration against the real broker, and the camera / dlq commands end to end."""

from __future__ import annotations

import urllib.request
import uuid

import cv2
import numpy as np

from ingest.admin import ensure_topics
from ingest.contract import decode_frame
from ingest.dlq import to_dead_letter
from ingest.producer import FramePublisher
from ingest.topics import TopicSpec


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ensure_topics_creates_checks_and_reports_mismatch(kafka_settings):
    from kafka import KafkaAdminClient

    tag = uuid.uuid4().hex[:8]
    specs = [TopicSpec(name=f"adm-frames-{tag}", partitions=3),
             TopicSpec(name=f"adm-dlq-{tag}", partitions=1, retention_ms=3600_000)]
    try:
        first = ensure_topics(kafka_settings, specs)
        assert sorted(first.created) == sorted(s.name for s in specs) and not first.mismatches
        again = ensure_topics(kafka_settings, specs)
        assert again.created == [] and sorted(again.existing) == sorted(s.name for s in specs)
        assert again.mismatches == []
        wider = ensure_topics(kafka_settings, [specs[0].model_copy(update={"partitions": 6})])
        assert wider.mismatches == [f"{specs[0].name}: 3 partitions, spec wants 6"]
        admin = KafkaAdminClient(**kafka_settings.client_kwargs())
        try:
            described = {d["name"]: len(d["partitions"]) for d in admin.describe_topics([s.name for s in specs])}
        finally:
            admin.close()
        assert described == {specs[0].name: 3, specs[1].name: 1}
    finally:
        admin = KafkaAdminClient(**kafka_settings.client_kwargs())
        admin.delete_topics([s.name for s in specs])
        admin.close()


def test_camera_command_folder_source_with_metrics(kafka_settings, topic_factory, read_topic, tmp_path):
    from inference.cli import main

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(6):
        img = np.full((24, 40, 3), i * 40, np.uint8)
        img[..., 2] = 200  # red channel in OpenCV's BGR
        cv2.imwrite(str(folder / f"{i:03d}.png"), img)
    topic = topic_factory(partitions=2)
    port = _free_port()
    rc = main(["camera", "--source", "folder", "--path", str(folder), "--camera", "camA", "--camera", "camB",
               "--fps", "max", "--encoding", "jpeg", "--channels", "3", "--topic", topic,
               "--metrics-port", str(port), "--spread-partitions"])
    assert rc == 0
    records = read_topic(topic, 12)
    assert len(records) == 12
    assert {(r.key, r.partition) for r in records} == {(b"camA", 0), (b"camB", 1)}
    for rec in records:
        meta, image = decode_frame(rec.value, rec.headers)
        assert meta.camera_id in ("camA", "camB") and image.shape == (24, 40, 3)
        assert image[..., 0].mean() > 180  # red arrives as R in RGB
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'grdline_ingest_frames_published_total{camera="camA",line="L1"} 6.0' in body
    assert 'grdline_ingest_frames_published_total{camera="camB",line="L1"} 6.0' in body


def test_camera_command_reports_oversize_with_exit_code(kafka_settings, topic_factory, tmp_path, caplog):
    from inference.cli import main

    folder = tmp_path / "big"
    folder.mkdir()
    cv2.imwrite(str(folder / "000.png"), np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8))
    topic = topic_factory(partitions=1, **{"max.message.bytes": "16384"})
    rc = main(["camera", "--source", "folder", "--path", str(folder), "--fps", "max", "--encoding", "raw",
               "--topic", topic, "--metrics-port", "0"])
    assert rc == 1
    assert "not published: frame cam0-" in caplog.text and "TooLarge" in caplog.text


def test_dlq_command_lists_dead_letters(kafka_settings, topic_factory, capsys):
    from inference.cli import main

    dlq = topic_factory(partitions=1, suffix="dlq")
    with FramePublisher(kafka_settings, dlq) as pub:
        for i in range(3):
            value, headers = to_dead_letter(b"x" * i, [("frame_id", f"f{i}".encode())], f"bad {i}", "decode",
                                            "frames", 0, i)
            pub.send(value, headers, key=b"cam0", frame_id=f"f{i}", line_id="L1", camera_id="cam0")
    assert main(["dlq", "--topic", dlq]) == 0
    out = capsys.readouterr().out
    assert "3 dead letter(s)" in out and "frame=f2" in out and "bad 1" in out


def test_camera_command_stops_gracefully_on_sigterm(kafka_settings, topic_factory, tmp_path):
    """SIGTERM: the cameras stop, the producer flushes, and every frame the command counts as
    acknowledged is on the topic."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from kafka import KafkaConsumer, TopicPartition

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((16, 16), i * 50, np.uint8))
    topic = topic_factory(partitions=1)
    repo = Path(__file__).resolve().parents[3]
    proc = subprocess.Popen(
        [sys.executable, "-m", "inference.cli", "camera", "--source", "folder", "--path", str(folder), "--loop",
         "--fps", "100", "--encoding", "png", "--topic", topic, "--metrics-port", "0"],
        cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )
    consumer = KafkaConsumer(**kafka_settings.client_kwargs(), group_id=None, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    try:
        deadline = time.monotonic() + 60
        while consumer.end_offsets([tp])[tp] < 50:  # publishing is under way
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "camera command published nothing"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        m = re.search(r"published (\d+) frames .* \((\d+) acknowledged, (\d+) failed\)", out)
        assert m, out
        published, acked, failed = map(int, m.groups())
        assert published == acked and failed == 0 and acked >= 50
        assert consumer.end_offsets([tp])[tp] == acked  # everything flushed, nothing extra
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        consumer.close()

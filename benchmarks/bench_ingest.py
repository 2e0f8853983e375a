"""Benchmark the ingest path against Kafka's own Java clients on the same broker, in the same run.

For 256x256 JPEG and raw (uint8, one channel) frames it measures, from one process each:

* ``encode+publish`` — the camera path: :func:`ingest.camera.run_cameras` with four cameras at
  full speed (JPEG/raw encoding, header building, idempotent ``acks=all`` producer, every send's
  result checked), until the last frame is acknowledged;
* ``publish`` — the same :class:`ingest.producer.FramePublisher` sending pre-encoded frames;
* ``consume`` / ``consume+decode`` — one group-less ``KafkaConsumer`` reading the frames back,
  without and with :func:`ingest.contract.decode_frame`;

and, as the baseline, ``org.apache.kafka.tools.ProducerPerformance`` (idempotent, ``acks=all``,
the same ``linger.ms``/``batch.size``) and ``ConsumerPerformance`` from the broker's kafka-tools
jar, with the mean payload size of the frames. Ratios (ours / Java) are what to compare across
machines; absolute rates drift on a shared host. Java's records carry no headers; ours carry the
~250 B of frame headers, counted in neither MB/s figure (MB/s = value bytes only).

    python benchmarks/bench_ingest.py [--frames 5000] [--partitions 4] [--encodings jpeg raw]
                                      [--short] [--results-dir DIR]

Needs the local stack (``grdline stack up``; started here, and stopped again, if it is not up).
Prints a table and writes ``benchmarks/results/bench_ingest.json`` (``--out``, ``--results-dir``).
``--short`` (``make test``): 200 JPEG frames on 2 partitions, both Java tools included.
"""

from __future__ import annotations

import argparse
import platform
import re
import subprocess
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from _common import add_common_args, apply_short, write_json

from inference.stack_cli import load_stack
from ingest.camera import run_cameras
from ingest.contract import Encoding, FrameMeta, decode_frame, encode_frame
from ingest.producer import PRODUCER_DEFAULTS, FramePublisher
from ingest.recorder import range_consumer
from ingest.settings import KafkaSettings
from ingest.source import CapturedFrame
from ingest.topics import MAX_MESSAGE_BYTES

SIZE = 256
POOL = 32  # distinct images cycled through (rendering is not what is measured)


def _images(n: int) -> list[np.ndarray]:
    """Realistic frames from the simulator when it is there, smooth noise otherwise."""
    try:
        from ingest.simulator import SimulatedCamera

        cam = SimulatedCamera(fps=None, size=SIZE, channels=1, n_frames=n, seed=0)
        return [f.image for f in cam]
    except ImportError:
        import cv2

        rng = np.random.default_rng(0)
        return [cv2.GaussianBlur(rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8), (9, 9), 3) for _ in range(n)]


def _spread_cameras(n: int, partitions: int) -> list[str]:
    from kafka.partitioner.default import murmur2

    chosen: dict[int, str] = {}
    k = 0
    while len(chosen) < min(n, partitions):
        chosen.setdefault((murmur2(f"cam{k}".encode()) & 0x7FFFFFFF) % partitions, f"cam{k}")
        k += 1
    return list(chosen.values()) + [f"camx{i}" for i in range(n - len(chosen))]


class PoolSource:
    """A FrameSource cycling through pre-rendered images."""

    def __init__(self, camera_id: str, images: list[np.ndarray], n: int) -> None:
        self.camera_id, self.images, self.n = camera_id, images, n

    def __iter__(self):
        for i in range(self.n):
            yield CapturedFrame(self.images[i % len(self.images)], "B1", self.camera_id,
                                f"{self.camera_id}-{uuid.uuid4().hex[:6]}-{i}", f"it-{i}",
                                datetime.now(UTC), "vials")

    def close(self) -> None:
        pass


def _row(name: str, frames: int, nbytes: int, seconds: float) -> dict:
    return {"what": name, "frames": frames, "seconds": round(seconds, 3),
            "frames_per_s": round(frames / seconds, 1), "mb_per_s": round(nbytes / seconds / 1e6, 2)}


def bench_ours(settings: KafkaSettings, topic_cam: str, topic_pub: str, encoding: str,
               images: list[np.ndarray], n: int, cameras: list[str]) -> tuple[list[dict], int]:
    rows = []
    per_cam = n // len(cameras)
    with FramePublisher(settings, topic_cam) as pub:
        t = time.perf_counter()
        run_cameras([PoolSource(c, images, per_cam) for c in cameras], pub, encoding=encoding, fps=None,
                    stop=threading.Event())
        pub.flush()
        seconds = time.perf_counter() - t
    assert pub.failed == 0 and pub.acked == per_cam * len(cameras), (pub.failed, pub.acked)
    # payload sizes, from an encode of the pool
    encoded = []
    for i, img in enumerate(images):
        meta = FrameMeta(line_id="B1", camera_id=cameras[i % len(cameras)], frame_id=f"p-{i}", item_id=f"it-{i}",
                         captured_at=datetime.now(UTC), encoding=encoding, width=SIZE, height=SIZE, channels=1,
                         recipe="vials", dtype="uint8" if encoding == "raw" else None)
        encoded.append((meta, *encode_frame(img, meta)))
    mean_size = int(np.mean([len(v) for _, v, _ in encoded]))
    rows.append(_row("ours encode+publish", per_cam * len(cameras), per_cam * len(cameras) * mean_size, seconds))

    with FramePublisher(settings, topic_pub) as pub:
        t = time.perf_counter()
        nbytes = 0
        for i in range(n):
            meta, value, headers = encoded[i % len(encoded)]
            pub.send(value, headers, key=meta.camera_id.encode(), frame_id=meta.frame_id,
                     line_id="B1", camera_id=meta.camera_id)
            nbytes += len(value)
        pub.flush()
        seconds = time.perf_counter() - t
    assert pub.failed == 0 and pub.acked == n
    rows.append(_row("ours publish (pre-encoded)", n, nbytes, seconds))

    from kafka import TopicPartition

    from ingest.kafka_range import resolve_range

    for decode in (False, True):
        consumer = range_consumer(settings)
        ranges = resolve_range(consumer, topic_pub)
        t = time.perf_counter()
        count = nbytes = 0
        consumer.assign([TopicPartition(topic_pub, r.partition) for r in ranges])
        consumer.seek_to_beginning()
        total = sum(r.size for r in ranges)
        while count < total:
            for recs in consumer.poll(timeout_ms=500).values():
                for rec in recs:
                    if decode:
                        decode_frame(rec.value, rec.headers)
                    count += 1
                    nbytes += len(rec.value)
        seconds = time.perf_counter() - t
        consumer.close()
        rows.append(_row("ours consume+decode" if decode else "ours consume", count, nbytes, seconds))
    return rows, mean_size


def bench_java(lib: Path, topic: str, n: int, record_size: int) -> list[dict]:
    cp = f"{lib}/*"
    bootstrap = KafkaSettings().bootstrap_servers
    props = [f"bootstrap.servers={bootstrap}", "acks=all", "enable.idempotence=true",
             f"linger.ms={PRODUCER_DEFAULTS['linger_ms']}", f"batch.size={PRODUCER_DEFAULTS['batch_size']}",
             f"max.request.size={MAX_MESSAGE_BYTES}"]
    out = subprocess.run(
        ["java", "-Xmx512m", "-cp", cp, "org.apache.kafka.tools.ProducerPerformance", "--topic", topic,
         "--num-records", str(n), "--record-size", str(record_size), "--throughput", "-1",
         "--producer-props", *props],
        capture_output=True, text=True, timeout=600, check=True,
    ).stdout
    m = re.search(r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\)", out)
    if m is None:
        raise RuntimeError(f"cannot read ProducerPerformance output:\n{out[-2000:]}")
    frames, rate = int(m.group(1)), float(m.group(2))
    rows = [{"what": "Java ProducerPerformance", "frames": frames, "seconds": round(frames / rate, 3),
             "frames_per_s": rate, "mb_per_s": round(rate * record_size / 1e6, 2)}]
    out = subprocess.run(
        ["java", "-Xmx512m", "-cp", cp, "org.apache.kafka.tools.ConsumerPerformance", "--bootstrap-server",
         bootstrap, "--topic", topic, "--messages", str(n), "--timeout", "60000",
         "--group", f"bench-{uuid.uuid4().hex[:8]}"],
        capture_output=True, text=True, timeout=600, check=True,
    ).stdout
    lines = [ln for ln in out.splitlines() if ln.strip()]
    header = [h.strip() for h in lines[-2].split(",")]
    values = [v.strip() for v in lines[-1].split(",")]
    stats = dict(zip(header, values, strict=False))
    rate = float(stats["fetch.nMsg.sec"])
    count = int(stats["data.consumed.in.nMsg"])
    rows.append({"what": "Java ConsumerPerformance (fetch)", "frames": count, "seconds": round(count / rate, 3),
                 "frames_per_s": rate, "mb_per_s": round(rate * record_size / 1e6, 2)})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=5000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--encodings", nargs="+", default=[Encoding.JPEG.value, Encoding.RAW.value],
                    choices=[Encoding.JPEG.value, Encoding.RAW.value])
    ap.add_argument("--out", type=Path, default=None, help="JSON file (default: bench_ingest.json "
                    "in the results folder)")
    add_common_args(ap, "200 JPEG frames, 2 partitions")
    args = ap.parse_args()
    apply_short(ap, args, frames=200, partitions=2, encodings=[Encoding.JPEG.value])

    stack = load_stack()
    started = stack.up(["kafka"])
    settings = KafkaSettings()
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(**settings.client_kwargs())
    tag = uuid.uuid4().hex[:8]
    topics: list[str] = []
    images = _images(POOL)
    cameras = _spread_cameras(4, args.partitions)
    results: dict[str, object] = {
        "when": datetime.now(UTC).isoformat(), "host": platform.node(), "python": platform.python_version(),
        "kafka": stack.kafka_version(), "frames": args.frames, "partitions": args.partitions, "cases": {},
    }
    try:
        for encoding in args.encodings:
            names = [f"bench-{encoding}-{k}-{tag}" for k in ("cam", "pub", "java")]
            admin.create_topics([NewTopic(t, args.partitions, 1, topic_configs={"max.message.bytes": str(MAX_MESSAGE_BYTES)})
                                 for t in names])
            topics += names
            rows, mean_size = bench_ours(settings, names[0], names[1], encoding, images, args.frames, cameras)
            java = bench_java(stack.kafka_lib_dir(), names[2], args.frames, mean_size)
            rows += java
            java_p, java_c = java[0]["frames_per_s"], java[1]["frames_per_s"]
            for r in rows:
                base = java_c if "consume" in r["what"].lower() else java_p
                r["ratio_to_java"] = round(r["frames_per_s"] / base, 3)
            results["cases"][encoding] = {"payload_bytes": mean_size, "rows": rows}
    finally:
        if topics:
            admin.delete_topics(topics)
        admin.close()
        stack.down(started)

    print(f"\ningest benchmark: {args.frames} frames of {SIZE}x{SIZE} per case, {args.partitions} partitions, "
          f"Kafka {results['kafka']} on loopback; ratio = ours / Java (producer rows vs ProducerPerformance, "
          "consumer rows vs ConsumerPerformance)")
    print(f"{'case':<6} {'payload':>8} {'what':<34} {'frames/s':>10} {'MB/s':>8} {'ratio':>7}")
    for enc, case in results["cases"].items():
        for r in case["rows"]:
            print(f"{enc:<6} {case['payload_bytes']:>8} {r['what']:<34} {r['frames_per_s']:>10.1f} "
                  f"{r['mb_per_s']:>8.2f} {r['ratio_to_java']:>7.3f}")
    print(f"\nwritten {write_json(args, 'bench_ingest.json', results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``grdline`` sub-commands of the ingest package: camera, record, replay, topics, dlq.

Heavy imports (kafka, cv2, the simulator) happen inside the handlers so that ``grdline --help``
stays instant. Every command takes ``--kafka-config YAML`` (a :class:`KafkaSettings` file) and
``--bootstrap HOST:PORT`` (override); the environment (``GRDLINE_KAFKA_*``) applies too.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

from ingest.settings import INGEST_METRICS_PORT, KafkaSettings, load_settings
from ingest.topics import DLQ, FRAMES, FRAMES_REPLAY

log = logging.getLogger(__name__)


def _settings(args: argparse.Namespace) -> KafkaSettings:
    overrides = {"bootstrap_servers": args.bootstrap} if args.bootstrap else {}
    return load_settings(KafkaSettings, args.kafka_config, **overrides)


def _kafka_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kafka-config", metavar="YAML", help="KafkaSettings YAML file")
    p.add_argument("--bootstrap", metavar="HOST:PORT", help="override bootstrap_servers")


def _rate(text: str) -> float | None:
    """``max`` -> None (as fast as possible), else a positive float."""
    if text == "max":
        return None
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive or 'max'")
    return value


@contextmanager
def _stop_on_signals():
    """An Event set by SIGINT/SIGTERM (a second SIGINT still interrupts)."""
    stop = threading.Event()
    previous = {}

    def handler(signum, frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.info("signal %s: stopping after the current frames, then flushing", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


def _report_failures(publisher) -> int:
    if publisher.failed:
        for f in list(publisher.failures)[:20]:
            log.error("not published: frame %s (camera %s): %s", f.frame_id, f.camera_id, f.reason)
        log.error("%d frame(s) were not published", publisher.failed)
        return 1
    return 0


# ------------------------------------------------------------------------------------ handlers
def camera_cmd(args: argparse.Namespace) -> int:
    from ingest import metrics
    from ingest.camera import run_cameras
    from ingest.producer import FramePublisher
    from ingest.sources import make_source

    cameras = list(args.camera or []) or [f"cam{i}" for i in range(args.cameras)]
    paths = list(args.path or [])
    if args.source != "simulator" and not paths:
        raise SystemExit(f"--source {args.source} needs --path")
    if len(paths) not in (0, 1, len(cameras)):
        raise SystemExit(f"give one --path for all cameras or one per camera ({len(cameras)})")
    import uuid

    run_id = uuid.uuid4().hex[:8]
    sources = [
        make_source(args.source, line_id=args.line, camera_id=cam, recipe=args.recipe,
                    channels=args.channels, path=(paths[i] if len(paths) > 1 else (paths or [None])[0]),
                    loop=args.loop, size=args.size, defect_rate=args.defect_rate, seed=args.seed,
                    run_id=run_id)
        for i, cam in enumerate(cameras)
    ]
    if args.metrics_port:
        from ingest.settings import IngestMetricsSettings

        host = str(IngestMetricsSettings().host)
        metrics.serve(args.metrics_port, host)
        log.info("metrics on http://%s:%d/metrics", host, args.metrics_port)
    on_frame = None
    truth = None
    if args.truth_out:
        from ingest.simulator.camera import TruthStore

        truth, truth_lock = TruthStore(), threading.Lock()

        def on_frame(frame) -> None:
            if frame.truth is not None:
                with truth_lock:
                    truth.record(frame)

    with _stop_on_signals() as stop:
        publisher = FramePublisher(_settings(args), args.topic).start()
        if args.spread_partitions:
            log.info("camera -> partition: %s", publisher.spread(cameras))
        try:
            stats = run_cameras(sources, publisher, encoding=args.encoding, fps=args.fps,
                                max_frames=args.frames, stop=stop, jpeg_quality=args.jpeg_quality,
                                deadline_ms=args.deadline_ms, on_frame=on_frame)
        finally:
            publisher.close()
            if truth is not None:
                truth.dump_jsonl(args.truth_out)
                log.info("ground truth of %d frames written to %s", len(truth), args.truth_out)
    log.info("published %d frames from %d camera(s) in %.1fs (%d acknowledged, %d failed)",
             stats.total, len(cameras), stats.seconds, publisher.acked, publisher.failed)
    return _report_failures(publisher)


def record_cmd(args: argparse.Namespace) -> int:
    from ingest.kafka_range import parse_offsets, parse_time
    from ingest.recorder import record

    summary = record(
        args.topic, args.out, settings=_settings(args),
        start_time=parse_time(args.start) if args.start else None,
        end_time=parse_time(args.end) if args.end else None,
        start_offsets=parse_offsets(args.start_offset), end_offsets=parse_offsets(args.end_offset),
        progress=not args.no_progress,
    )
    print(f"recorded {summary.frames} frames ({summary.bytes} bytes) into {summary.path}")
    return 0


def replay_cmd(args: argparse.Namespace) -> int:
    from ingest.kafka_range import parse_offsets, parse_time
    from ingest.producer import FramePublisher
    from ingest.replay import archive_items, replay, topic_items

    settings = _settings(args)
    if (args.archive is None) == (args.from_topic is None):
        raise SystemExit("give either ARCHIVE or --from-topic")
    if args.topic == FRAMES and not args.to_live:
        raise SystemExit(f"refusing to replay onto the live topic {FRAMES!r} without --to-live "
                         f"(the default destination is {FRAMES_REPLAY!r})")
    if args.keep_deadline and not args.retime:
        log.warning("--keep-deadline without --retime: replayed frames keep deadlines that passed "
                    "when they were captured")
    if args.archive is not None:
        items = archive_items(args.archive)
    else:
        items = topic_items(
            settings, args.from_topic,
            start_time=parse_time(args.start) if args.start else None,
            end_time=parse_time(args.end) if args.end else None,
            start_offsets=parse_offsets(args.start_offset), end_offsets=parse_offsets(args.end_offset),
        )
    with _stop_on_signals() as stop:
        publisher = FramePublisher(settings, args.topic).start()
        try:
            stats = replay(items, publisher, speed=args.speed, loop=args.loop, stop=stop, retime=args.retime,
                           keep_deadline=args.keep_deadline)
        finally:
            publisher.close()
    print(f"replayed {stats.frames} frames ({stats.invalid} verbatim: invalid headers) "
          f"in {stats.loops} pass(es), {stats.seconds:.1f}s; {publisher.acked} acknowledged")
    return _report_failures(publisher)


def topics_cmd(args: argparse.Namespace) -> int:
    from ingest.admin import ensure_topics
    from ingest.topics import DEFAULT_TOPICS

    specs = [s.model_copy(update={"partitions": args.frames_partitions})
             if s.name in (FRAMES, FRAMES_REPLAY) and args.frames_partitions else s for s in DEFAULT_TOPICS]
    report = ensure_topics(_settings(args), specs)
    print(f"created: {', '.join(report.created) or '-'}; existing: {', '.join(report.existing) or '-'}")
    for m in report.mismatches:
        print(f"MISMATCH {m}")
    return 1 if report.mismatches else 0


def dlq_cmd(args: argparse.Namespace) -> int:
    from ingest.dlq import read_dead_letters
    from ingest.kafka_range import parse_time

    n = 0
    for dl in read_dead_letters(_settings(args), args.topic, max_records=args.max,
                                since=parse_time(args.since) if args.since else None):
        n += 1
        print(f"[{dl.dlq_partition}:{dl.dlq_offset}] {dl.failed_at.isoformat()} stage={dl.stage} "
              f"from {dl.topic}[{dl.partition}]@{dl.offset} frame={dl.frame_id or '-'} "
              f"{dl.error_type or 'error'}: {dl.reason} ({len(dl.value)} B, {len(dl.headers)} headers)")
    print(f"{n} dead letter(s) on {args.topic}")
    return 0


def _range_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="start", metavar="T1", help="start time: ISO 8601, now, epoch ms, or relative as --from=-10m")
    p.add_argument("--to", dest="end", metavar="T2", help="end time (exclusive); default: current end")
    p.add_argument("--from-offset", dest="start_offset", metavar="N|P:N,..", help="start offset(s)")
    p.add_argument("--to-offset", dest="end_offset", metavar="N|P:N,..", help="end offset(s), exclusive")


def register(subparsers) -> None:
    p = subparsers.add_parser("camera", help="publish camera frames to Kafka")
    p.add_argument("--source", choices=["simulator", "folder", "video"], default="simulator")
    p.add_argument("--path", action="append", help="folder or video file (once, or once per camera)")
    p.add_argument("--camera", action="append", metavar="ID", help="camera id (repeat for several)")
    p.add_argument("--cameras", type=int, default=1, help="number of cameras cam0..camN-1 (no --camera)")
    p.add_argument("--line", default="L1")
    p.add_argument("--recipe", default="vials")
    p.add_argument("--fps", type=_rate, default=30.0, help="per camera, or 'max'")
    p.add_argument("--frames", type=int, default=None, help="frames per camera (default: until stopped)")
    p.add_argument("--encoding", choices=["jpeg", "png", "raw"], default="jpeg")
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--channels", type=int, choices=[1, 3], default=1)
    p.add_argument("--size", type=int, default=256, help="simulator image size")
    p.add_argument("--defect-rate", type=float, default=0.1, help="simulator defect rate")
    p.add_argument("--seed", type=int, default=0, help="simulator seed (shared: the cameras see the same items)")
    p.add_argument("--loop", action="store_true", help="folder/video: start again at the end")
    p.add_argument("--truth-out", type=Path, default=None,
                   help="simulator: write each frame's ground truth (JSONL, by frame id) here")
    p.add_argument("--deadline-ms", type=int, default=None)
    p.add_argument("--topic", default=FRAMES)
    p.add_argument("--spread-partitions", action="store_true",
                   help="camera i -> partition i mod P instead of the key hash (which can put several "
                        "cameras on one partition); keep the camera list stable to keep each camera's order")
    p.add_argument("--metrics-port", type=int, default=INGEST_METRICS_PORT, help="0: no /metrics")
    _kafka_args(p)
    p.set_defaults(func=camera_cmd)

    p = subparsers.add_parser("record", help="record a range of a topic into an archive")
    p.add_argument("--topic", default=FRAMES)
    _range_args(p)
    p.add_argument("--out", required=True, metavar="ARCHIVE", help="directory, or a path ending in .tar")
    p.add_argument("--no-progress", action="store_true")
    _kafka_args(p)
    p.set_defaults(func=record_cmd)

    p = subparsers.add_parser("replay", help="republish an archive or a topic range with original timing")
    p.add_argument("archive", nargs="?", metavar="ARCHIVE")
    p.add_argument("--topic", default=FRAMES_REPLAY,
                   help=f"destination topic (default {FRAMES_REPLAY}; the live {FRAMES} needs --to-live)")
    p.add_argument("--to-live", action="store_true",
                   help=f"allow --topic {FRAMES}: replayed frames go onto the live line's topic, where they "
                        "are LIVE frames (the topic decides, not replay_of): deadlines apply and rejects are sent")
    p.add_argument("--from-topic", metavar="TOPIC", help="replay a range of this topic (no archive)")
    _range_args(p)
    p.add_argument("--speed", type=_rate, default=1.0, help="time scale, or 'max'")
    p.add_argument("--loop", action="store_true")
    p.add_argument("--retime", action="store_true", help="stamp captured_at with the replay time")
    p.add_argument("--keep-deadline", action="store_true",
                   help="keep deadline_ms (dropped by default: an old capture time makes it late); "
                        "with --retime the deadline is rebased onto the replay time")
    _kafka_args(p)
    p.set_defaults(func=replay_cmd)

    p = subparsers.add_parser("topics", help="create the frames, frames.replay, rejects and DLQ topics")
    p.add_argument("--frames-partitions", type=int, default=None,
                   help=f"partitions of {FRAMES} and {FRAMES_REPLAY}")
    _kafka_args(p)
    p.set_defaults(func=topics_cmd)

    p = subparsers.add_parser("dlq", help="read the dead-letter topic")
    p.add_argument("--topic", default=DLQ)
    p.add_argument("--since", metavar="T", help="only dead letters since T (ISO 8601, -1h, ...)")
    p.add_argument("--max", type=int, default=None)
    _kafka_args(p)
    p.set_defaults(func=dlq_cmd)

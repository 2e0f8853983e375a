"""Pipeline efficiency and latency of the GRD-Line Serve app against the local stack.

    PYTHONPATH=. python benchmarks/bench_pipeline.py [--frames 240] [--batch 16] [--size 64]

Needs the local stack (``grdline stack up``). Starts its own local Ray. Measures, in one run:

1. **baseline** — the bare ``Predictor`` on the same decoded frames in batches of ``--batch``:
   frames/s and one batch's model time;
2. **efficiency** — a burst of ``--frames`` frames produced to a fresh topic while the app runs:
   end-to-end frames/s (Kafka → Serve → Redis results + acked rejects, first → last result; the
   fill before the first result is reported too) / baseline frames/s. Goal >= 0.9;
3. **latency** — frames paced at ``--load`` (0.7) x the pipeline's measured throughput, stamped at
   send time; p50/p99 of capture → decision (the results' ``timings_ms.total``). Goal:
   p99 <= 2 x one batch's model time + 50 ms.

Prints a table and writes ``benchmarks/results/pipeline-<time>.json``. Ratios, not absolute times,
are what compare across machines (a shared CPU drifts).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------------------- helpers
def make_frames(n: int, size: int, cameras: int = 2, seed: int = 0) -> list:
    from ingest.simulator import SimulatedCamera

    per = -(-n // cameras)
    out = []
    for c in range(cameras):
        cam = SimulatedCamera(camera_id=f"cam{c}", fps=None, defect_rate=0.2, seed=seed, size=size,
                              n_frames=per, run_id=uuid.uuid4().hex[:6])
        out.extend(cam)
    return out[:n]


def encode(frame, deadline_ms: int | None = None) -> tuple[bytes, bytes, list]:
    from ingest.contract import FrameMeta, encode_frame

    meta = FrameMeta.from_captured(frame, "png", deadline_ms=deadline_ms)
    value, headers = encode_frame(frame.image, meta)
    return frame.camera_id.encode(), value, headers


class Stack:
    """Fresh topics and a Redis prefix on the local stack; removed by :meth:`close`."""

    def __init__(self, partitions: int):
        import redis
        from kafka import KafkaAdminClient, KafkaProducer
        from kafka.admin import NewTopic

        from inference.settings import RedisSettings
        from ingest.settings import KafkaSettings
        from ingest.topics import MAX_MESSAGE_BYTES

        self.kafka = KafkaSettings()
        self.redis_settings = RedisSettings()
        uid = uuid.uuid4().hex[:8]
        self.prefix = f"bench-{uid}"
        self.topics = {"frames": f"bench-frames-{uid}", "rejects": f"bench-rejects-{uid}",
                       "dlq": f"bench-dlq-{uid}"}
        self.admin = KafkaAdminClient(**self.kafka.client_kwargs())
        self.admin.create_topics([
            NewTopic(self.topics["frames"], partitions, 1, topic_configs={"max.message.bytes": str(MAX_MESSAGE_BYTES)}),
            NewTopic(self.topics["rejects"], 1, 1), NewTopic(self.topics["dlq"], 1, 1),
        ])
        self.redis = redis.Redis(**self.redis_settings.client_kwargs())
        self.producer = KafkaProducer(**self.kafka.client_kwargs(), acks="all", linger_ms=2,
                                      max_request_size=MAX_MESSAGE_BYTES)

    def send(self, records: list, rate_hz: float | None = None) -> None:
        """Send and wait for acks; paced at ``rate_hz`` (re-stamping capture time) when given."""
        futures = []
        t0 = time.perf_counter()
        for i, rec in enumerate(records):
            if rate_hz is not None:
                due = t0 + i / rate_hz
                while (now := time.perf_counter()) < due:
                    time.sleep(min(due - now, 0.002))
                frame, deadline = rec
                rec = encode(dataclasses.replace(frame, captured_at=datetime.now(UTC)), deadline)
            k, v, h = rec
            futures.append(self.producer.send(self.topics["frames"], key=k, value=v, headers=h))
        for f in futures:
            f.get(timeout=60)

    def results(self) -> int:
        return sum(1 for _ in self.redis.scan_iter(match=f"{self.prefix}:result:*", count=2000))

    def latencies_ms(self, frame_ids: list[str]) -> np.ndarray:
        pipe = self.redis.pipeline(transaction=False)
        for fid in frame_ids:
            pipe.hget(f"{self.prefix}:result:{fid}", "timings_ms")
        return np.array([json.loads(v)["total"] for v in pipe.execute() if v])

    def wait_results(self, n: int, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.results() >= n:
                return time.perf_counter()
            time.sleep(0.05)
        raise TimeoutError(f"only {self.results()} of {n} results after {timeout_s}s")

    def close(self) -> None:
        keys = list(self.redis.scan_iter(match=f"{self.prefix}*", count=2000))
        if keys:
            self.redis.delete(*keys)
        self.producer.close()
        self.admin.delete_topics(list(self.topics.values()))
        self.admin.close()


def app_config(stack: Stack, **over: Any):
    from inference.config import ServeAppConfig

    uid = uuid.uuid4().hex[:6]
    data: dict[str, Any] = {
        "app_name": f"bench-{uid}", "route_prefix": f"/bench-{uid}", "topics": stack.topics,
        "redis": {"key_prefix": stack.prefix},
    }
    data.update(over)
    data.setdefault("ingress", {})
    data["ingress"] = {"group_id": f"bench-{uid}", **data["ingress"]}
    return ServeAppConfig(**data)


def start_ray() -> None:
    import ray
    from ray import serve

    ray.init(num_cpus=8, include_dashboard=False, configure_logging=False, log_to_driver=False)
    serve.start(proxy_location="Disabled")


def wait_ready(handle: Any, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        s = handle.stats.remote().result()
        if s["partitions"]:
            return
        time.sleep(0.25)
    raise TimeoutError("ingress never got partitions")


def write_json(kind: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{kind}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(data, indent=2))
    return path


# ------------------------------------------------------------------------------------ benchmark
def baseline(model_dir: Path, frames: list, batch: int, seconds: float, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from ingest.simulator import roi_mask_for_recipe
    from model.predictor import Predictor

    p = Predictor.load(model_dir)
    roi = roi_mask_for_recipe("vials", frames[0].image.shape[0])
    imgs = [f.image for f in frames]
    p.predict(imgs[:batch], [roi] * batch)  # warm-up
    n = 0
    t0 = time.perf_counter()
    i = 0
    while time.perf_counter() - t0 < seconds:
        chunk = [imgs[(i + j) % len(imgs)] for j in range(batch)]
        p.predict(chunk, [roi] * batch)
        n += batch
        i += batch
    dt = time.perf_counter() - t0
    return {"fps": n / dt, "batch_ms": dt / (n / batch) * 1000, "device": str(p.device),
            "torch_threads": torch.get_num_threads()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="artefact dir (default: an untrained 'line' model)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--frames", type=int, default=480)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--baseline-s", type=float, default=10.0)
    ap.add_argument("--load", type=float, default=0.7)
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--group", type=int, default=4, help="frames per handle call (ingress request_group)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads, baseline and model replica alike")
    args = ap.parse_args()

    from ray import serve

    from inference.app import run

    model_dir = args.model
    if model_dir is None:
        from model.artefact import save_untrained

        model_dir = save_untrained(Path(tempfile.mkdtemp()) / "m", image_size=args.size, channels=1)
    frames = make_frames(args.frames, args.size)
    # the baseline runs before and after the pipeline (a shared machine drifts); the better one counts
    base_before = baseline(model_dir, frames, args.batch, args.baseline_s, args.threads)
    print(f"baseline: {base_before['fps']:.1f} frames/s, {base_before['batch_ms']:.1f} ms per batch of {args.batch}")

    start_ray()
    stack = Stack(args.partitions)
    try:
        cfg = app_config(
            stack, model_dir=model_dir, model={"torch_threads": args.threads, "num_cpus": args.threads},
            tuning={"max_batch_size": args.batch, "batch_wait_timeout_s": 0.01},
            ingress={"inflight_window": 4 * args.batch, "request_group": args.group},
        )
        handle = run(cfg)
        wait_ready(handle)
        records = [encode(f) for f in frames]
        t0 = time.perf_counter()
        threading.Thread(target=stack.send, args=(records,), daemon=True).start()
        first = stack.wait_results(1, timeout_s=600)
        t1 = stack.wait_results(len(frames), timeout_s=600)
        burst_fps = len(frames) / (t1 - t0)  # includes the fill (poll, first batch)
        e2e_fps = (len(frames) - 1) / (t1 - first)  # steady state: first → last result

        # latency at args.load x the measured throughput, fresh frames stamped at send time
        lat_frames = make_frames(args.frames, args.size, seed=1)
        rate = args.load * e2e_fps
        before = stack.results()
        t2 = time.perf_counter()
        stack.send([(f, None) for f in lat_frames], rate_hz=rate)
        stack.wait_results(before + len(lat_frames), timeout_s=600)
        lat = stack.latencies_ms([f.frame_id for f in lat_frames])
        paced_s = time.perf_counter() - t2
        serve.delete(cfg.app_name)
    finally:
        stack.close()
    import ray

    ray.shutdown()
    base_after = baseline(model_dir, frames, args.batch, args.baseline_s, args.threads)
    base = max(base_before, base_after, key=lambda b: b["fps"])
    p50, p99 = (float(np.percentile(lat, q)) for q in (50, 99))
    goal_p99 = 2 * base["batch_ms"] + 50
    out = {
        "frames": args.frames, "batch": args.batch, "size": args.size, "threads": args.threads,
        "group": args.group,
        "baseline": base, "baseline_before": base_before, "baseline_after": base_after,
        "pipeline_fps": e2e_fps, "efficiency": e2e_fps / base["fps"],
        "pipeline_fps_with_fill": burst_fps, "efficiency_with_fill": burst_fps / base["fps"],
        "latency": {"load": args.load, "rate_hz": rate, "p50_ms": p50, "p99_ms": p99, "n": int(lat.size),
                    "goal_p99_ms": goal_p99, "paced_s": paced_s},
    }
    rows = [
        ("bare Predictor", f"{base['fps']:.1f} frames/s",
         f"batch {args.batch}: {base['batch_ms']:.0f} ms (before {base_before['fps']:.1f}, after {base_after['fps']:.1f})"),
        ("pipeline (Kafka→Serve→Redis)", f"{e2e_fps:.1f} frames/s",
         f"efficiency {out['efficiency']:.2f} (goal ≥ 0.9); {out['efficiency_with_fill']:.2f} counting the fill"),
        (f"latency @ {args.load:.0%} load", f"p50 {p50:.0f} ms", f"p99 {p99:.0f} ms (goal ≤ {goal_p99:.0f} ms)"),
    ]
    w = max(len(r[0]) for r in rows)
    for r in rows:
        print(f"{r[0]:<{w}}  {r[1]:>18}  {r[2]}")
    print(f"→ {write_json('pipeline', out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

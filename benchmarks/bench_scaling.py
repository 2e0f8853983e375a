"""Throughput with 1, 2 and 4 model replicas of a no-compute stand-in model.

    python benchmarks/bench_scaling.py [--latency-ms 200] [--batch 16] [--frames 640]
                                       [--short] [--results-dir DIR]

Each batch of the stand-in (``inference.standin``) takes a fixed ``--latency-ms`` whatever its
size, so one replica tops out at ``batch / latency`` frames/s and the serving path (Kafka, ingress,
handle routing, batching, sinks) decides how close N replicas get to N times that. For each replica
count a fresh app consumes a burst of ``--frames`` frames; throughput = frames / (first decision →
last decision, the results' ``decided_at``; the fill time before the first decision is latency,
reported apart). Goal: >= 3.6x at 4 replicas. Needs the local stack; starts its own Ray
(:func:`bench_pipeline.start_ray`). ``--short`` (``make test``): 1 and 2 replicas, 24 frames,
batch 4, 50 ms per batch.

Prints a table and writes ``benchmarks/results/scaling-<time>.json`` (``--results-dir``).
"""

from __future__ import annotations

import argparse
import threading
import uuid
from datetime import UTC, datetime

from _common import add_common_args, apply_short, write_json
from bench_pipeline import Frames, Stack, app_config, start_ray, wait_ready


def measure(replicas: int, args: argparse.Namespace, frames: Frames) -> dict:
    from ray import serve

    from inference.app import run

    stack = Stack(args.partitions)
    try:
        cfg = app_config(
            stack, standin={"batch_latency_ms": args.latency_ms, "image_size": args.size},
            tuning={"max_batch_size": args.batch, "batch_wait_timeout_s": 0.02},
            model={"num_replicas": replicas, "num_cpus": 0.1},
            ingress={"num_replicas": args.ingress, "num_cpus": 0.1,
                     "inflight_window": max(64, 4 * args.batch * replicas // args.ingress),
                     "resume_fraction": 0.75},
        )
        handle = run(cfg)
        wait_ready(handle)
        tag = f"scaling{replicas}-{uuid.uuid4().hex[:6]}"
        ids = [f"{tag}-{i}" for i in range(args.frames)]  # Frames.record's ids
        t0 = datetime.now(UTC).timestamp()
        sender = threading.Thread(target=stack.send, args=(frames, args.frames, tag, None), daemon=True)
        sender.start()
        _, first, last = stack.timings(ids, timeout_s=600)
        sender.join(60)
        serve.delete(cfg.app_name)
    finally:
        stack.close()
    # throughput between the first and the last decision: the pipeline's fill time (poll, first
    # batch) is latency, not throughput, and would dominate a short burst
    return {"replicas": replicas, "fps": (args.frames - 1) / max(1e-9, last - first), "seconds": last - t0,
            "first_result_s": first - t0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latency-ms", type=float, default=200.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=640)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--ingress", type=int, default=1, help="ingress replicas")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    add_common_args(ap, "1 and 2 replicas, 24 frames, batch 4, 50 ms per batch")
    args = ap.parse_args()
    apply_short(ap, args, latency_ms=50.0, batch=4, frames=24, partitions=2, replicas=[1, 2])

    frames = Frames(args.size)
    start_ray()
    try:
        rows = [measure(n, args, frames) for n in args.replicas]
    finally:
        import ray

        ray.shutdown()
    base = rows[0]["fps"]
    ideal = args.batch / (args.latency_ms / 1000)
    print(f"stand-in: {args.latency_ms:.0f} ms per batch of {args.batch} → {ideal:.0f} frames/s per replica at best")
    print(f"{'replicas':>8}  {'frames/s':>9}  {'speed-up':>8}  {'of ideal':>8}")
    for r in rows:
        r["speedup"] = r["fps"] / base
        r["of_ideal"] = r["fps"] / (ideal * r["replicas"])
        print(f"{r['replicas']:>8}  {r['fps']:>9.1f}  {r['speedup']:>7.2f}x  {r['of_ideal']:>8.0%}")
    print("goal: ≥ 3.6x at 4 replicas")
    data = {"args": vars(args),
            "per_replica_ideal_fps": ideal, "rows": rows}
    print(f"→ {write_json(args, 'scaling-{time}.json', data)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Throughput with 1, 2 and 4 model replicas of a no-compute stand-in model.

    PYTHONPATH=. python benchmarks/bench_scaling.py [--latency-ms 200] [--batch 16] [--frames 640]

Each batch of the stand-in (``inference.standin``) takes a fixed ``--latency-ms`` whatever its
size, so one replica tops out at ``batch / latency`` frames/s and the serving path (Kafka, ingress,
handle routing, batching, sinks) decides how close N replicas get to N times that. For each replica
count a fresh app consumes a burst of ``--frames`` frames; throughput = frames / (first result →
last result in Redis; the fill time before the first result is latency, reported apart). Goal: >= 3.6x at 4 replicas. Needs the local stack; starts its own Ray.
Prints a table and writes ``benchmarks/results/scaling-<time>.json``.
"""

from __future__ import annotations

import argparse
import threading
import time

from bench_pipeline import Stack, app_config, encode, make_frames, start_ray, wait_ready, write_json


def measure(replicas: int, args: argparse.Namespace, records: list) -> dict:
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
        t0 = time.perf_counter()
        threading.Thread(target=stack.send, args=(records,), daemon=True).start()
        first = stack.wait_results(1, timeout_s=600)
        t1 = stack.wait_results(len(records), timeout_s=600)
        serve.delete(cfg.app_name)
    finally:
        stack.close()
    # throughput between the first and the last result: the pipeline's fill time (poll, first
    # batch) is latency, not throughput, and would dominate a short burst
    return {"replicas": replicas, "fps": (len(records) - 1) / (t1 - first), "seconds": t1 - t0,
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
    args = ap.parse_args()

    records = [encode(f) for f in make_frames(args.frames, args.size)]
    start_ray()
    rows = [measure(n, args, records) for n in args.replicas]
    base = rows[0]["fps"]
    ideal = args.batch / (args.latency_ms / 1000)
    print(f"stand-in: {args.latency_ms:.0f} ms per batch of {args.batch} → {ideal:.0f} frames/s per replica at best")
    print(f"{'replicas':>8}  {'frames/s':>9}  {'speed-up':>8}  {'of ideal':>8}")
    for r in rows:
        r["speedup"] = r["fps"] / base
        r["of_ideal"] = r["fps"] / (ideal * r["replicas"])
        print(f"{r['replicas']:>8}  {r['fps']:>9.1f}  {r['speedup']:>7.2f}x  {r['of_ideal']:>8.0%}")
    print("goal: ≥ 3.6x at 4 replicas")
    print(f"→ {write_json('scaling', {'args': vars(args), 'per_replica_ideal_fps': ideal, 'rows': rows})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

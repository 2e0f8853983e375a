"""Soak: the line at 70 % of the bare model's rate for a long time; memory stays flat, every frame
is decided. A program (``make soak``), not a test.

    PYTHONPATH=. python benchmarks/soak.py [--minutes 30] [--load 0.7] [--size 64] [--model DIR]

Needs the local stack (``grdline stack up``). Starts its own local Ray. In one run:

1. **baseline** — the bare ``Predictor``'s frames/s on the soak's frames (batch ``--batch``);
2. **soak** — cameras (``--cameras``, interleaved) paced at ``--load`` x that rate for ``--minutes``,
   each frame a fresh id stamped at send time, through Kafka → Serve (ingress + model replicas) →
   Redis results and reject commands. Results expire after ``--result-ttl-s`` so Redis can reach a
   steady state (the default one-day TTL would make Redis grow by design);
3. **memory** — every ``--sample-s`` the RSS of each process: this driver, the Serve ingress and
   model replicas (found by their ``ray::ServeReplica:<app>:<deployment>`` process title among
   this run's Ray processes), the other Ray processes of this run, the Kafka broker and Redis (by
   the stack's PID files). Growth = mean RSS over the last tenth of the run / mean over the second
   tenth (the first is warm-up) - 1; the goal is < ``--growth-limit`` (5 %) for every process;
4. **decided** — after the last frame, the run waits ``--drain-s`` for every frame's result; the
   goal is all of them (no frame lost), and no dead letters.

Prints a table and writes ``benchmarks/results/soak-<time>.json``. Exit status 1 when a goal is
missed. A short run (a few minutes) says little about slow leaks: the JSON records the duration.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pipeline import (  # noqa: E402
    Stack,
    app_config,
    baseline,
    encode,
    make_frames,
    start_ray,
    wait_ready,
    write_json,
)


# ------------------------------------------------------------------------------------- processes
def stack_pids() -> dict[str, int]:
    """Kafka and Redis of the local stack (by the stack's PID files)."""
    from inference.stack_cli import load_stack

    stack = load_stack()
    out = {}
    for name in ("kafka", "redis"):
        pid = stack._read_pid(name)
        if pid is not None:
            out[name] = pid
    return out


def ray_processes(app_name: str) -> dict[str, list[int]]:
    """This run's Ray processes (descendants of this driver), grouped: ``ingress``, ``model``,
    ``ray-other`` (GCS, raylet, controller, idle workers)."""
    import psutil

    groups: dict[str, list[int]] = {"ingress": [], "model": [], "ray-other": []}
    for p in psutil.Process(os.getpid()).children(recursive=True):
        try:
            title = " ".join(p.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if f"ServeReplica:{app_name}:LineIngress" in title:
            groups["ingress"].append(p.pid)
        elif f"ServeReplica:{app_name}:GRDNetModel" in title:
            groups["model"].append(p.pid)
        else:
            groups["ray-other"].append(p.pid)
    return groups


def rss(pids: list[int]) -> int | None:
    import psutil

    total, seen = 0, False
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
            seen = True
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total if seen else None


class MemorySampler(threading.Thread):
    """RSS per process group every ``interval_s`` (groups re-resolved each time: a replaced
    replica is followed, and its restart shows as a jump)."""

    def __init__(self, app_name: str, interval_s: float) -> None:
        super().__init__(daemon=True, name="soak-memory")
        self.app_name, self.interval_s = app_name, interval_s
        self.samples: list[dict[str, Any]] = []
        self.pids_seen: dict[str, set[int]] = {}
        self._stop_event = threading.Event()

    def sample(self) -> None:
        groups = {"driver": [os.getpid()], **ray_processes(self.app_name),
                  **{k: [v] for k, v in stack_pids().items()}}
        row: dict[str, Any] = {"t": time.monotonic()}
        for name, pids in groups.items():
            row[name] = rss(pids)
            self.pids_seen.setdefault(name, set()).update(pids)
        self.samples.append(row)

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(30)


def growth(samples: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """Mean RSS of the second tenth vs the last tenth of the samples."""
    vals = [(s["t"], s.get(name)) for s in samples if s.get(name) is not None]
    if len(vals) < 10:
        return {"start_mb": None, "end_mb": None, "growth": None, "samples": len(vals)}
    n = len(vals)
    tenth = max(1, n // 10)
    start = np.mean([v for _, v in vals[tenth:2 * tenth]])
    end = np.mean([v for _, v in vals[n - tenth:]])
    return {"start_mb": start / 2**20, "end_mb": end / 2**20, "growth": float(end / start - 1),
            "max_mb": max(v for _, v in vals) / 2**20, "samples": n}


# ----------------------------------------------------------------------------------------- soak
def paced_stream(stack: Stack, pool: list, rate_hz: float, seconds: float, sent: list[str],
                 stop: threading.Event) -> None:
    """Cycle through ``pool``, each send a fresh frame (id, item, capture time), at ``rate_hz``."""
    from kafka.errors import KafkaError

    run = uuid.uuid4().hex[:6]
    futures = []
    t0 = time.perf_counter()
    i = 0
    while not stop.is_set():
        due = t0 + i / rate_hz
        if due - t0 > seconds:
            break
        while (now := time.perf_counter()) < due:
            time.sleep(min(due - now, 0.002))
        base = pool[i % len(pool)]
        frame = dataclasses.replace(base, frame_id=f"soak-{run}-{i:08d}", item_id=f"soak-{run}-{base.camera_id}-item-{i // 3:08d}",
                                    captured_at=datetime.now(UTC))
        k, v, h = encode(frame)
        futures.append(stack.producer.send(stack.topics["frames"], key=k, value=v, headers=h))
        sent.append(frame.frame_id)
        i += 1
        if len(futures) >= 1000:
            for f in futures:
                f.get(timeout=120)
            futures.clear()
    for f in futures:
        try:
            f.get(timeout=120)
        except KafkaError as exc:  # reported as undecided frames
            print(f"send failed: {exc}", file=sys.stderr)


def topic_size(stack: Stack, topic: str) -> int:
    """Records on ``topic`` (end offsets; the topics are fresh)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**stack.kafka.client_kwargs(), group_id=None, enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return int(sum(ends.values()))
    finally:
        consumer.close()


def undecided(stack: Stack, frame_ids: list[str]) -> tuple[list[str], int]:
    """``(ids without a result yet, how many have one)``."""
    left: list[str] = []
    for s in range(0, len(frame_ids), 2000):
        chunk = frame_ids[s:s + 2000]
        pipe = stack.redis.pipeline(transaction=False)
        for fid in chunk:
            pipe.exists(f"{stack.prefix}:result:{fid}")
        left.extend(fid for fid, there in zip(chunk, pipe.execute(), strict=True) if not there)
    return left, len(frame_ids) - len(left)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--load", type=float, default=0.7, help="fraction of the bare model's rate")
    ap.add_argument("--model", type=Path, help="artefact dir (default: an untrained 'line' model)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--cameras", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch threads, baseline and model replica alike")
    ap.add_argument("--baseline-s", type=float, default=10.0)
    ap.add_argument("--sample-s", type=float, default=5.0)
    ap.add_argument("--result-ttl-s", type=int, default=120)
    ap.add_argument("--drain-s", type=float, default=120.0)
    ap.add_argument("--growth-limit", type=float, default=0.05)
    args = ap.parse_args()

    from ray import serve

    from inference.app import run

    model_dir = args.model
    if model_dir is None:
        from model.artefact import save_untrained

        model_dir = save_untrained(Path(tempfile.mkdtemp()) / "m", image_size=args.size, channels=1)
    pool = make_frames(60 * args.cameras, args.size, cameras=args.cameras)
    pool = [f for group in zip(*[pool[c::args.cameras] for c in range(args.cameras)], strict=False) for f in group]
    base = baseline(model_dir, pool, args.batch, args.baseline_s, args.threads)
    rate = args.load * base["fps"]
    seconds = args.minutes * 60
    print(f"baseline: {base['fps']:.1f} frames/s; soak at {rate:.1f} frames/s for {args.minutes:g} min", flush=True)

    start_ray()
    stack = Stack(args.partitions)
    sent: list[str] = []
    sampler = None
    try:
        cfg = app_config(
            stack, model_dir=model_dir, model={"torch_threads": args.threads, "num_cpus": args.threads},
            tuning={"max_batch_size": args.batch, "batch_wait_timeout_s": 0.01},
            ingress={"inflight_window": 4 * args.batch}, sink={"result_ttl_s": args.result_ttl_s},
        )
        handle = run(cfg)
        wait_ready(handle)
        sampler = MemorySampler(cfg.app_name, args.sample_s)
        sampler.start()
        stop = threading.Event()
        t0 = time.monotonic()
        sender = threading.Thread(target=paced_stream, args=(stack, pool, rate, seconds, sent, stop), daemon=True)
        sender.start()
        # results expire after the TTL, so frames are confirmed as decided while the soak runs
        pending: list[str] = []
        n_decided, checked, last_print = 0, 0, t0
        while sender.is_alive():
            sender.join(5.0)
            pending.extend(sent[checked:len(sent)])
            checked = len(pending) + n_decided
            pending, found = undecided(stack, pending)
            n_decided += found
            if time.monotonic() - last_print >= 60:
                last_print = time.monotonic()
                print(f"  {last_print - t0:6.0f} s: {len(sent)} sent, {n_decided} decided", flush=True)
        stream_s = time.monotonic() - t0
        pending.extend(sent[checked:])
        deadline = time.monotonic() + args.drain_s
        while pending and time.monotonic() < deadline:
            time.sleep(1.0)
            pending, found = undecided(stack, pending)
            n_decided += found
        sampler.stop()
        stats = handle.stats.remote().result()
        dead_letters = topic_size(stack, stack.topics["dlq"])
        serve.delete(cfg.app_name)
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        stack.close()
    import ray

    ray.shutdown()
    samples = sampler.samples if sampler else []
    names = [k for k in (samples[0] if samples else {}) if k != "t"]
    mem = {name: growth(samples, name) for name in names}
    worst = max((m["growth"] for m in mem.values() if m["growth"] is not None), default=None)
    ok_mem = worst is not None and worst < args.growth_limit
    ok_decided = n_decided == len(sent) and dead_letters == 0
    out = {
        "minutes": args.minutes, "stream_s": stream_s, "load": args.load, "rate_hz": rate, "baseline": base,
        "sent": len(sent), "decided": n_decided, "dead_letters": dead_letters, "result_ttl_s": args.result_ttl_s,
        "ingress_stats": {k: v for k, v in stats.items() if isinstance(v, int | float | str)},
        "memory": mem, "growth_limit": args.growth_limit, "worst_growth": worst,
        "pass": bool(ok_mem and ok_decided), "short_run": args.minutes < 30,
        "samples": [{k: v for k, v in s.items()} for s in samples],
    }
    print(f"\nsoak: {len(sent)} frames in {stream_s:.0f} s at {rate:.1f}/s ({args.load:.0%} of {base['fps']:.1f}); "
          f"decided {n_decided} ({'all' if n_decided == len(sent) else 'NOT all'}), {dead_letters} dead letters")
    print(f"{'process':<12} {'start MB':>10} {'end MB':>10} {'max MB':>10} {'growth':>8}  samples")
    for name, m in mem.items():
        if m["growth"] is None:
            print(f"{name:<12} {'-':>10} {'-':>10} {'-':>10} {'-':>8}  {m['samples']}")
            continue
        flag = "" if m["growth"] < args.growth_limit else "  > limit"
        print(f"{name:<12} {m['start_mb']:>10.1f} {m['end_mb']:>10.1f} {m['max_mb']:>10.1f} {m['growth']:>+8.1%}  "
              f"{m['samples']}{flag}")
    print(f"→ {write_json('soak', out)}")
    return 0 if out["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

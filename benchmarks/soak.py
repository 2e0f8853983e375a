"""Soak: the line at 70 % of the bare model's rate for a long time at the production result TTL;
memory stays flat, every frame is decided. A program (``make soak``), not a test.

    python benchmarks/soak.py [--minutes 30] [--load 0.7] [--size 64] [--model DIR]
                              [--result-ttl-s N] [--short] [--results-dir DIR]

Needs the local stack (``grdline stack up``). Starts its own local Ray
(:func:`bench_pipeline.start_ray`). In one run:

1. **baseline** — the bare ``Predictor``'s frames/s on the soak's frames (batch ``--batch``,
   :func:`bench_pipeline.bare_model`);
2. **soak** — cameras (``--cameras``) paced at ``--load`` x that rate for ``--minutes``, each frame
   a fresh id stamped at send time, through Kafka → Serve (ingress + model replicas) → Redis
   results and reject commands. Results expire after ``--result-ttl-s``, by default the production
   TTL (``RedisSinkSettings.result_ttl_s``, one day): within 30 minutes none expires, so Redis holds
   every result of the run, as a line's Redis does in its first day;
3. **memory** — every ``--sample-s`` the RSS of each process: this driver, the Serve ingress and
   model replicas (found by their ``ray::ServeReplica:<app>:<deployment>`` process title among
   this run's Ray processes), the other Ray processes of this run, the Kafka broker and Redis (by
   the stack's PID files); and Redis' own account: ``INFO memory`` ``used_memory`` and the number
   of this run's result keys. Growth = mean over the last tenth of the run / mean over the second
   tenth (the first is warm-up) - 1. The goal, < ``--growth-limit`` (5 %), holds for the RSS of
   every process of the line (driver, ingress, model, other Ray processes, Kafka) and for Redis'
   **bytes per result key** (``used_memory`` above its value before the run / result keys): at a
   TTL longer than the run Redis grows with the results it holds by design, so what must stay flat
   is what each result costs; the Redis server's RSS and ``used_memory`` are reported beside it,
   with the memory the results take at steady state (rate x TTL x bytes per result) against
   Redis' ``maxmemory``;
4. **decided** — after the last frame, the run waits ``--drain-s`` for every frame's result; the
   goal is all of them (no frame lost), and no dead letters.

Prints a table and writes ``benchmarks/results/soak-<time>.json`` (``--results-dir``). Exit status
1 when a goal is missed. ``--short`` (``make test``): 20 s, 2 cameras, batch 4, samples every second; its
memory figures are reported, not judged (20 s say nothing about leaks), the decided goal is.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_common_args, apply_short, write_json  # noqa: E402
from bench_pipeline import Frames, Stack, app_config, bare_model, start_ray, wait_ready  # noqa: E402


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
    replica is followed, and its restart shows as a jump), and Redis' ``used_memory``, this run's
    result keys (``<prefix>:result:*``) and the bytes per result key above ``used_memory`` before
    the run."""

    def __init__(self, app_name: str, interval_s: float, redis_client: Any, prefix: str) -> None:
        super().__init__(daemon=True, name="soak-memory")
        self.app_name, self.interval_s = app_name, interval_s
        self.redis, self.prefix = redis_client, prefix
        self.used_memory_before = int(redis_client.info("memory")["used_memory"])
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
        used = int(self.redis.info("memory")["used_memory"])
        keys = sum(1 for _ in self.redis.scan_iter(match=f"{self.prefix}:result:*", count=5000))
        row["redis_used_memory"], row["redis_result_keys"] = used, keys
        row["redis_bytes_per_result"] = (used - self.used_memory_before) / keys if keys else None
        self.samples.append(row)

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(30)


def unit_of(name: str) -> tuple[str, float]:
    """How a sample column is shown: RSS and ``used_memory`` in MiB, the rest as they are."""
    if name == "redis_result_keys":
        return "keys", 1.0
    if name == "redis_bytes_per_result":
        return "bytes", 1.0
    return "MiB", float(2**20)


def growth(samples: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """Mean of the second tenth vs the last tenth of the samples (the first tenth is warm-up)."""
    unit, scale = unit_of(name)
    vals = [s[name] for s in samples if s.get(name) is not None]
    if len(vals) < 10:
        return {"unit": unit, "start": None, "end": None, "max": None, "growth": None, "samples": len(vals)}
    n = len(vals)
    tenth = max(1, n // 10)
    start = float(np.mean(vals[tenth:2 * tenth]))
    end = float(np.mean(vals[n - tenth:]))
    return {"unit": unit, "start": start / scale, "end": end / scale, "max": max(vals) / scale,
            "growth": end / start - 1 if start else None, "samples": n}


# ----------------------------------------------------------------------------------------- soak
def paced_stream(stack: Stack, frames: Frames, rate_hz: float, seconds: float, sent: list[str],
                 stop: threading.Event) -> None:
    """Cycle through ``frames``' pool, each send a fresh frame (id, item, capture time), at
    ``rate_hz``; unlike :meth:`Stack.send` it keeps no more than 1000 sends unconfirmed."""
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
        k, v, h, frame_id = frames.record(i, f"soak-{run}")
        futures.append(stack.producer.send(stack.topics["frames"], key=k, value=v, headers=h))
        sent.append(frame_id)
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


#: series that grow with the results Redis holds, by design at a TTL longer than the run: reported,
#: not judged (what each result costs, ``redis_bytes_per_result``, is)
GROWS_BY_DESIGN = ("redis", "redis_used_memory", "redis_result_keys")


def redis_maxmemory(client: Any) -> int | None:
    """Redis' ``maxmemory`` (None: unlimited or not readable)."""
    try:
        value = int(client.config_get("maxmemory").get("maxmemory", 0))
    except Exception as exc:  # noqa: BLE001 - a managed Redis may refuse CONFIG: reported, not judged
        print(f"maxmemory not readable: {exc!r}", file=sys.stderr)
        return None
    return value or None


def main() -> int:
    from inference.config import RedisSinkSettings

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
    ap.add_argument("--result-ttl-s", type=int, default=RedisSinkSettings.model_fields["result_ttl_s"].default,
                    help="result TTL of the app (default: the production one, sink.result_ttl_s)")
    ap.add_argument("--drain-s", type=float, default=120.0)
    ap.add_argument("--growth-limit", type=float, default=0.05)
    add_common_args(ap, "20 s, 2 cameras, batch 4, a sample a second; memory not judged")
    args = ap.parse_args()
    apply_short(ap, args, minutes=20 / 60, cameras=2, partitions=2, batch=4, baseline_s=1.0,
                sample_s=1.0, drain_s=60.0)

    from ray import serve

    from inference.app import run

    model_dir = args.model
    if model_dir is None:
        from model.artefact import save_untrained

        model_dir = save_untrained(Path(tempfile.mkdtemp()) / "m", image_size=args.size, channels=1)
    frames = Frames(args.size, n=max(64, 20 * args.cameras), cameras=args.cameras)
    (base,) = bare_model(model_dir, frames, [args.batch], args.baseline_s, args.threads, "cpu")
    rate = args.load * base["fps"]
    seconds = args.minutes * 60
    print(f"baseline: {base['fps']:.1f} frames/s; soak at {rate:.1f} frames/s for {args.minutes:g} min, "
          f"result TTL {args.result_ttl_s} s", flush=True)

    start_ray()
    stack = Stack(args.partitions)
    sent: list[str] = []
    sampler = None
    try:
        cfg = app_config(
            stack, model_dir=model_dir,
            model={"torch_threads": args.threads, "num_cpus": args.threads, "device": "cpu"},
            tuning={"max_batch_size": args.batch, "batch_wait_timeout_s": 0.01},
            ingress={"inflight_window": 4 * args.batch}, sink={"result_ttl_s": args.result_ttl_s},
        )
        maxmemory = redis_maxmemory(stack.redis)
        handle = run(cfg)
        wait_ready(handle)
        sampler = MemorySampler(cfg.app_name, args.sample_s, stack.redis, stack.prefix)
        sampler.start()
        stop = threading.Event()
        t0 = time.monotonic()
        sender = threading.Thread(target=paced_stream, args=(stack, frames, rate, seconds, sent, stop), daemon=True)
        sender.start()
        # frames are confirmed as decided while the soak runs (a short TTL may expire them)
        pending: list[str] = []
        n_decided, checked, last_print = 0, 0, t0
        while sender.is_alive():
            sender.join(5.0 if not args.short else 1.0)
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
    judged = {name: m for name, m in mem.items()
              if name not in GROWS_BY_DESIGN}
    worst = max((m["growth"] for m in judged.values() if m["growth"] is not None), default=None)
    missing = sorted(name for name, m in judged.items() if m["growth"] is None)
    ok_mem = None if args.short else (worst is not None and worst < args.growth_limit and not missing)
    ok_decided = n_decided == len(sent) and dead_letters == 0
    per_result = (mem.get("redis_bytes_per_result") or {}).get("end")
    steady = None
    if per_result is not None:
        steady = {"bytes_per_result": per_result, "rate_hz": rate, "result_ttl_s": args.result_ttl_s,
                  "bytes": per_result * rate * args.result_ttl_s, "maxmemory": maxmemory}
        steady["fits"] = None if maxmemory is None else steady["bytes"] <= maxmemory
    out = {
        "minutes": args.minutes, "stream_s": stream_s, "load": args.load, "rate_hz": rate, "baseline": base,
        "sent": len(sent), "decided": n_decided, "dead_letters": dead_letters, "result_ttl_s": args.result_ttl_s,
        "ingress_stats": {k: v for k, v in stats.items() if isinstance(v, int | float | str)},
        "memory": mem, "judged": sorted(judged), "growth_limit": args.growth_limit, "worst_growth": worst,
        "redis": {"maxmemory": maxmemory, "steady_state": steady,
                  "used_memory_before": sampler.used_memory_before if sampler else None},
        "goals": {"all_decided": ok_decided, "memory_flat": ok_mem},
        "pass": bool(ok_decided and ok_mem is not False), "short_run": args.minutes < 30,
        "samples": samples,
    }
    print(f"\nsoak: {len(sent)} frames in {stream_s:.0f} s at {rate:.1f}/s ({args.load:.0%} of {base['fps']:.1f}); "
          f"decided {n_decided} ({'all' if n_decided == len(sent) else 'NOT all'}), {dead_letters} dead letters; "
          f"result TTL {args.result_ttl_s} s")
    print(f"{'series':<24} {'unit':>6} {'start':>10} {'end':>10} {'max':>10} {'growth':>8}  samples")
    for name, m in mem.items():
        if m["growth"] is None:
            print(f"{name:<24} {m['unit']:>6} {'-':>10} {'-':>10} {'-':>10} {'-':>8}  {m['samples']}")
            continue
        flag = "" if name not in judged or m["growth"] < args.growth_limit else "  > limit"
        flag += "" if name in judged else "  (not judged: grows with the results held)"
        print(f"{name:<24} {m['unit']:>6} {m['start']:>10.1f} {m['end']:>10.1f} {m['max']:>10.1f} "
              f"{m['growth']:>+8.1%}  {m['samples']}{flag}")
    if steady is not None:
        limit = "no maxmemory" if maxmemory is None else f"maxmemory {maxmemory / 2**20:.0f} MiB"
        print(f"Redis at steady state: {steady['bytes_per_result']:.0f} B/result x {rate:.1f}/s x "
              f"{args.result_ttl_s} s = {steady['bytes'] / 2**20:.0f} MiB ({limit})")
    if args.short:
        print("short run: memory growth reported, not judged")
    print(f"→ {write_json(args, 'soak-{time}.json', out)}")
    return 0 if out["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Where a frame's time and the line's CPU go: the GRD-Line Serve app against the local stack.

    python benchmarks/bench_pipeline.py [--model DIR] [--size 128] [--batch 16] [--threads 2]
                                        [--loads 0.3 0.7 1.0] [--seconds 20] [--label NAME]
                                        [--short] [--results-dir DIR]

Needs the local stack (``grdline stack up``; ``make bench`` brings it up). Starts its own local Ray
(metrics on a free port, scraped directly). One run measures:

1. **bare model** — the ``Predictor`` alone on the same frames, batches 1…``--batch``: frames/s,
   one batch's time and **CPU-seconds per frame** (process CPU times). Its full-batch rate is the
   reference ("100 %"), measured before and after the pipeline (the better counts).
2. **the line at 30 / 70 / 100 %** of that rate — frames paced into a fresh topic, stamped at send,
   through Kafka → ``LineIngress`` → ``GRDNetModel`` → Redis/rejects → commit. Per stage of
   :class:`~inference.contracts.Timings` (from the results) plus ``sinks`` and ``commit`` (from the
   replicas' own histograms, bucket resolution): p50/p95/p99; the mean batch size (model replica
   counters); and **CPU-seconds per frame outside the model**: the CPU times of every Ray process
   (ingress and model replicas, Serve controller, Ray's own daemons) over the phase, less the bare
   model's CPU per frame at the batch size the line ran (interpolated). Kafka broker and Redis server
   CPU are shown apart (servers, not the line's clients).
3. **saturation** — a backlog of frames sent at once: end-to-end frames/s (first → last result)
   against the bare model.

Goals (issue 11): p99 capture→decision ≤ 2 × one full batch's model time + 50 ms at 70 %; non-model
CPU per frame ≤ 10 % of the model's; saturation rate ≥ 0.9 × bare. A missed goal names the stage
with the largest p99 (latency) or the process with the most CPU (cost).

Prints the tables and writes ``benchmarks/results/pipeline-<label>-<time>.json`` (``--results-dir``).
On a GPU machine ``--device auto`` gives the model replica the GPU (CPU-time goals then compare host
CPU only). ``--short`` (``make test``): 64 px, batch 4, the 70 % load for 2 s and a 12-frame backlog.

The helpers soak.py and bench_scaling.py build on live here: :class:`Frames`, :class:`Stack`,
:func:`bare_model`, :func:`start_ray`, :func:`app_config`, :func:`wait_ready`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the serving replicas run (inference.config)

import numpy as np  # noqa: E402
from _common import add_common_args, apply_short, results_dir, write_json  # noqa: E402

STAGE_ORDER = ("produce", "kafka", "poll", "decode", "group", "wait", "model", "post", "reply")
QUANTILES = (50, 95, 99)


# --------------------------------------------------------------------------------------- frames
class Frames:
    """A pool of simulated vials images, PNG-encoded once; each send gets fresh ids and stamps."""

    def __init__(self, size: int, n: int = 64, cameras: int = 2):
        from ingest.contract import FrameMeta, encode_frame
        from ingest.simulator import SimulatedCamera

        self.pool = []
        for c in range(cameras):
            cam = SimulatedCamera(camera_id=f"cam{c}", fps=None, defect_rate=0.2, seed=c, size=size,
                                  n_frames=n // cameras, run_id=uuid.uuid4().hex[:6])
            for frame in cam:
                meta = FrameMeta.from_captured(frame, "png")
                value, _ = encode_frame(frame.image, meta)
                self.pool.append((frame, meta, value))
        self.images = [f.image for f, _, _ in self.pool]

    def record(self, i: int, tag: str) -> tuple[bytes, bytes, list, str]:
        from ingest.contract import meta_to_headers

        frame, meta, value = self.pool[i % len(self.pool)]
        fid = f"{tag}-{i}"
        m = meta.model_copy(update={"frame_id": fid, "item_id": fid, "captured_at": datetime.now(UTC)})
        return frame.camera_id.encode(), value, meta_to_headers(m), fid


# ---------------------------------------------------------------------------------------- stack
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
        uid = uuid.uuid4().hex[:8]
        self.prefix = f"bench-{uid}"
        self.topics = {"frames": f"bench-frames-{uid}", "rejects": f"bench-rejects-{uid}",
                       "dlq": f"bench-dlq-{uid}"}
        self.admin = KafkaAdminClient(**self.kafka.client_kwargs())
        self.admin.create_topics([
            NewTopic(self.topics["frames"], partitions, 1, topic_configs={"max.message.bytes": str(MAX_MESSAGE_BYTES)}),
            NewTopic(self.topics["rejects"], 1, 1), NewTopic(self.topics["dlq"], 1, 1),
        ])
        self.redis = redis.Redis(**RedisSettings().client_kwargs())
        self.producer = KafkaProducer(**self.kafka.client_kwargs(), acks="all", linger_ms=1,
                                      max_request_size=MAX_MESSAGE_BYTES)

    def send(self, frames: Frames, n: int, tag: str, rate_hz: float | None) -> list[str]:
        """``n`` frames, paced at ``rate_hz`` (None = all at once); returns their ids once acked."""
        futures, ids = [], []
        t0 = time.perf_counter()
        for i in range(n):
            if rate_hz is not None:
                due = t0 + i / rate_hz
                while (now := time.perf_counter()) < due:
                    time.sleep(min(due - now, 0.002))
            key, value, headers, fid = frames.record(i, tag)
            futures.append(self.producer.send(self.topics["frames"], key=key, value=value, headers=headers))
            ids.append(fid)
        self.producer.flush()
        for f in futures:
            f.get(timeout=60)
        return ids

    def timings(self, ids: list[str], timeout_s: float) -> tuple[list[dict], float, float]:
        """Every frame's ``timings_ms`` once all results are in, and the first/last decision times."""
        deadline = time.monotonic() + timeout_s
        while True:
            pipe = self.redis.pipeline(transaction=False)
            for fid in ids:
                pipe.hmget(f"{self.prefix}:result:{fid}", "timings_ms", "decided_at", "failsafe")
            rows = pipe.execute()
            if all(r[0] for r in rows):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{sum(1 for r in rows if r[0])} of {len(ids)} results after {timeout_s}s")
            time.sleep(0.2)
        decided = [datetime.fromisoformat(r[1].decode()).timestamp() for r in rows]
        failsafe = sum(1 for r in rows if r[2])
        out = [json.loads(r[0]) for r in rows]
        if failsafe:
            print(f"  ! {failsafe} fail-safe results (late/timeout/model failure)")
        return out, min(decided), max(decided)

    def close(self) -> None:
        keys = list(self.redis.scan_iter(match=f"{self.prefix}*", count=2000))
        if keys:
            self.redis.delete(*keys)
        self.producer.close()
        self.admin.delete_topics(list(self.topics.values()))
        self.admin.close()


# ------------------------------------------------------------------------------------------ CPU
def cpu_of(pid: int) -> float:
    import psutil

    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system + t.children_user + t.children_system
    except psutil.Error:
        return 0.0


def ray_processes(roles: dict[int, str]) -> dict[int, str]:
    """Every process this driver's Ray started, by role: the given replica pids, the Serve
    controller, and Ray's daemons and idle workers ("ray core")."""
    import psutil

    out = {}
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        out[p.pid] = roles.get(p.pid) or ("serve controller" if "ServeController" in cmd else "ray core")
    return out


def server_pids() -> dict[int, str]:
    """The Kafka broker and Redis server of the local stack (found by command line)."""
    import psutil

    out = {}
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "kafka.Kafka" in cmd:
            out[p.pid] = "kafka broker"
        elif "redis-server" in cmd:
            out[p.pid] = "redis server"
    return out


def cpu_snapshot(pids: dict[int, str]) -> dict[int, float]:
    """CPU seconds of each process, of this driver (the cameras' producer and the result reader:
    pid 0) and of the whole machine (busy, every core: pid -1)."""
    import psutil

    out = {pid: cpu_of(pid) for pid in pids}
    me = psutil.Process().cpu_times()
    out[0] = me.user + me.system
    t = psutil.cpu_times()
    out[-1] = sum(t) - t.idle - getattr(t, "iowait", 0.0)
    return out


THREAD_KINDS = (  # (name fragment, what the thread does) — first match wins
    ("grdline-consumer", "kafka consumer: poll, decode, lookup"), ("kafka-io", "kafka client I/O"),
    ("_run_router_event_loop", "serve router: handle calls"), ("_run_user_code_event_loop", "event loop: decide, dispatch"),
    ("grdline-sinks", "sinks: Redis, rejects"), ("grdline-metrics", "metrics"),
    ("grdnet-predict", "predict thread: model + masks"), ("MainThread", "ray worker"), ("AsyncIO Thread", "ray worker"),
)


def thread_cpu(pid: int) -> dict[int, float]:
    import psutil

    try:
        return {t.id: t.user_time + t.system_time for t in psutil.Process(pid).threads()}
    except psutil.Error:
        return {}


def cpu_by_thread(names: dict[int, str], before: dict[int, float], after: dict[int, float]) -> dict[str, float]:
    """CPU seconds per kind of thread (THREAD_KINDS); threads Python does not know (OpenMP
    workers, Ray's C++ threads) are ``native threads``."""
    out: dict[str, float] = {}
    for tid, t1 in after.items():
        name = names.get(tid, "")
        kind = next((k for frag, k in THREAD_KINDS if frag in name), "other python threads" if name else "native threads")
        out[kind] = out.get(kind, 0.0) + max(0.0, t1 - before.get(tid, 0.0))
    return out


def cpu_by_role(pids: dict[int, str], before: dict[int, float], after: dict[int, float]) -> dict[str, float]:
    """CPU seconds per role over a phase, plus ``cameras (benchmark driver)`` and ``other load
    on the machine`` (busy time no process above accounts for: other jobs sharing the cores)."""
    out: dict[str, float] = {}
    for pid, role in pids.items():
        out[role] = out.get(role, 0.0) + max(0.0, after.get(pid, 0.0) - before.get(pid, 0.0))
    if 0 in before and 0 in after:
        out["cameras (benchmark driver)"] = after[0] - before[0]
    if -1 in before and -1 in after:
        out["other load on the machine"] = max(0.0, after[-1] - before[-1] - sum(out.values()))
    return out


# ---------------------------------------------------------------------------------- bare model
def bare_model(model_dir: Path, frames: Frames, batches: list[int], seconds: float, threads: int,
               device: str) -> list[dict]:
    import psutil
    import torch

    from ingest.simulator import roi_mask_for_recipe
    from model.predictor import Predictor

    torch.set_num_threads(threads)
    p = Predictor.load(model_dir, device=device)
    roi = roi_mask_for_recipe("vials", frames.images[0].shape[0])
    me = psutil.Process()
    rows = []
    for b in batches:
        imgs = [frames.images[j % len(frames.images)] for j in range(b)]
        p.predict(imgs, [roi] * b)  # warm-up at this shape
        n, c0, t0 = 0, me.cpu_times(), time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            p.predict(imgs, [roi] * b)
            n += b
        dt, c1 = time.perf_counter() - t0, me.cpu_times()
        cpu = (c1.user - c0.user) + (c1.system - c0.system)
        rows.append({"batch": b, "fps": n / dt, "batch_ms": dt / (n / b) * 1000, "cpu_ms_per_frame": cpu / n * 1000})
    return rows


def model_cpu_per_frame(bare: list[dict], batch: float) -> float:
    """The bare model's CPU-seconds per frame at a (mean) batch size, interpolated on log2(batch)."""
    xs = np.log2([r["batch"] for r in bare])
    ys = [r["cpu_ms_per_frame"] / 1000 for r in bare]
    return float(np.interp(np.log2(max(batch, 1.0)), xs, ys))


# ------------------------------------------------------------------------------------ profiles
def start_profiles(roles: dict[int, str], args, phase: str) -> list[tuple[str, Path, Path, subprocess.Popen]]:
    """py-spy (sampling, non-blocking) on each replica for the phase: an SVG and a raw dump each."""
    import shutil
    import sys

    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = []
    for pid, role in roles.items():
        stem = results_dir(args) / f"pipeline-{args.label}-{role.split()[0]}"
        svg, raw = stem.with_suffix(".svg"), stem.with_suffix(".folded")
        secs = str(int(args.seconds))
        # the ingress' work is Python: samples holding the GIL approximate its CPU time
        cmd = [spy, "record", "--pid", str(pid), "--duration", secs, "--rate", "100", "--nonblocking",
               "--threads", *(["--gil"] if role == "ingress replica" else [])]
        procs = [subprocess.Popen([*cmd, "-f", "flamegraph", "-o", str(svg)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL),
                 subprocess.Popen([*cmd, "-f", "raw", "-o", str(raw)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)]
        out.append((role, svg, raw, procs))
    return out


def finish_profiles(spies: list) -> dict[str, Any]:
    """Top functions by share of the busy (non-idle) samples, per replica."""
    out = {}
    for role, svg, raw, procs in spies:
        for p in procs:
            p.wait(timeout=120)
        out[role] = {"flamegraph": str(svg), "top": top_functions(raw)}
    return out


def top_functions(raw: Path, k: int = 10) -> list[tuple[str, float]]:
    """Share of the samples per function where the sample was taken (self time), from a folded
    py-spy dump; frames that only wait (select, locks, Ray's main loop) left out."""
    if not raw.exists():
        return []
    idle = ("select (", "wait (", "main_loop (", "sleep (", "acquire (", "Thread.run (", "_worker (")
    busy, counts = 0, {}
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        leaf = stack.split(";")[-1]
        if any(w in leaf for w in idle):
            continue
        fn = leaf.split(" (")[0] + " (" + leaf.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")"
        busy += int(n)
        counts[fn] = counts.get(fn, 0) + int(n)
    return sorted(((fn, c / busy) for fn, c in counts.items()), key=lambda x: -x[1])[:k] if busy else []


# ------------------------------------------------------------------------------------- metrics
def scrape_stage(port: int, stages: tuple[str, ...]) -> dict[str, dict[float, float]]:
    """Cumulative bucket counts of grdline_stage_latency_seconds per stage (every label summed)."""
    from prometheus_client.parser import text_string_to_metric_families

    from inference.metrics import STAGE_LATENCY, prometheus_name

    name = prometheus_name(STAGE_LATENCY)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, dict[float, float]] = {s: {} for s in stages}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == f"{name}_bucket" and s.labels.get("stage") in out:
                le = float(s.labels["le"])
                out[s.labels["stage"]][le] = out[s.labels["stage"]].get(le, 0.0) + s.value
    return out


def bucket_quantiles(before: dict[float, float], after: dict[float, float]) -> dict[str, float] | None:
    """p50/p95/p99 (ms, upper bucket bound) of the observations between two scrapes."""
    les = sorted(after)
    counts = [after[le] - before.get(le, 0.0) for le in les]
    total = counts[-1] if counts else 0
    if total <= 0:
        return None
    out = {}
    for q in QUANTILES:
        rank = q / 100 * total
        le = next(le for le, c in zip(les, counts, strict=True) if c >= rank)
        out[f"p{q}"] = le * 1000
    out["n"] = total
    return out


# ----------------------------------------------------------------------------------------- run
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ray(num_cpus: int = 8) -> int:
    """A local Ray of this program's own, with Serve (no HTTP proxy); returns its metrics port.

    ``address="local"`` starts a new instance even where one runs already (a test session's, found
    through ``RAY_ADDRESS`` or Ray's temp folder), and the metrics go to a free port, never
    ``RAY_METRICS_PORT`` (18080), which the test session's Ray exports on and Prometheus scrapes:
    a benchmark started from a test leaves that session's Ray alone."""
    import ray
    from ray import serve

    port = free_port()
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, configure_logging=False,
             log_to_driver=False, _metrics_export_port=port)
    serve.start(proxy_location="Disabled")
    return port


def app_config(stack: Stack, override: dict[str, Any] | None = None, **fields: Any) -> Any:
    """A ``ServeAppConfig`` on ``stack``'s topics and Redis prefix with a fresh app name, route and
    consumer group; ``fields`` set top-level fields, then ``override`` is merged section by section
    (``--override``)."""
    from inference.config import ServeAppConfig

    uid = uuid.uuid4().hex[:6]
    data: dict[str, Any] = {
        "app_name": f"bench-{uid}", "route_prefix": f"/bench-{uid}", "topics": stack.topics,
        "redis": {"key_prefix": stack.prefix}, **fields,
    }
    data["ingress"] = {"group_id": f"bench-{uid}", **data.get("ingress", {})}
    for key, value in (override or {}).items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    return ServeAppConfig(**data)


def wait_ready(handle: Any, timeout_s: float = 180.0) -> None:
    """Until the app's ingress holds partitions (it consumes)."""
    deadline = time.monotonic() + timeout_s
    while not handle.stats.remote().result()["partitions"]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the ingress got no partitions in {timeout_s:.0f} s")
        time.sleep(0.25)


def percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {f"p{q}": float(np.percentile(a, q)) for q in QUANTILES}


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except Exception:  # noqa: BLE001 - a tarball without git
        return "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="artefact dir (default: an untrained 'line' model at --size)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16, help="max_batch_size of the model deployment")
    ap.add_argument("--threads", type=int, default=2, help="torch threads, bare model and replica alike")
    ap.add_argument("--replica-threads", type=int, default=None,
                    help="torch threads of the model replica (default --threads): fewer than the cores "
                         "leaves one to the ingress, Kafka and Redis instead of OpenMP threads waiting at barriers")
    ap.add_argument("--loads", type=float, nargs="+", default=[0.3, 0.7, 1.0])
    ap.add_argument("--seconds", type=float, default=20.0, help="per load")
    ap.add_argument("--bare-s", type=float, default=4.0, help="per bare-model batch size")
    ap.add_argument("--saturation", type=int, default=0, help="frames of the backlog (0 = 15 s at the bare rate)")
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--label", default="run")
    ap.add_argument("--override", type=json.loads, default={},
                    help='JSON merged into the app config, e.g. \'{"ingress": {"env_vars": {}}}\'')
    ap.add_argument("--markdown", nargs="+", type=Path, metavar="JSON",
                    help="print Markdown tables of earlier runs' JSON files (e.g. before and after) and exit")
    ap.add_argument("--profile", action="store_true",
                    help="py-spy the ingress and model replicas during the 70%% phase: flame graphs "
                         "(SVG) beside the JSON and the top functions in the table")
    add_common_args(ap, "64 px, batch 4, 1 thread, 70%% for 2 s, a 12-frame backlog")
    args = ap.parse_args()
    apply_short(ap, args, size=64, batch=4, threads=1, loads=[0.7], seconds=2.0, bare_s=0.2,
                saturation=12, partitions=1)
    if args.markdown:
        print(markdown([json.loads(p.read_text()) for p in args.markdown]))
        return 0

    import ray
    from ray import serve

    from inference.app import run
    from inference.model_deployment import resolve_device

    device = resolve_device(args.device)
    model_dir = args.model
    if model_dir is None:
        from model.artefact import save_untrained

        model_dir = save_untrained(Path(tempfile.mkdtemp()) / "m", image_size=args.size, channels=1)
    frames = Frames(args.size)
    batches = sorted({1, 2, 4, 8, args.batch} | {b for b in (16, 32) if b <= args.batch})
    print(f"bare model ({device}, {args.threads} threads), batches {batches} ...", flush=True)
    bare_before = bare_model(model_dir, frames, batches, args.bare_s, args.threads, device)
    load_start = os.getloadavg()[0]

    port = start_ray()
    stack = Stack(args.partitions)
    uid = uuid.uuid4().hex[:6]
    cfg = app_config(stack, args.override, model_dir=model_dir,
                     model={"torch_threads": args.replica_threads or args.threads, "device": args.device},
                     tuning={"max_batch_size": args.batch})
    phases: list[dict[str, Any]] = []
    try:
        handle = run(cfg)
        model_handle = serve.get_deployment_handle("GRDNetModel", cfg.app_name)
        wait_ready(handle)
        roles = {handle.stats.remote().result()["pid"]: "ingress replica",
                 model_handle.stats.remote().result()["pid"]: "model replica"}
        pids = {**ray_processes(roles), **server_pids()}
        ids = stack.send(frames, 2 * args.batch, f"warm-{uid}", None)
        stack.timings(ids, 120)
        bare_full = max(r["fps"] for r in bare_before if r["batch"] == args.batch)

        plan = [(f"{load:.0%}", load * bare_full, max(3 * args.batch, int(load * bare_full * args.seconds)))
                for load in args.loads]
        sat_n = args.saturation or int(15 * bare_full)
        plan.append(("saturation", None, sat_n))
        while plan:
            name, rate, n = plan.pop(0)
            print(f"{name}: {n} frames" + (f" at {rate:.1f}/s" if rate else " at once"), flush=True)
            m0, s0 = model_handle.stats.remote().result(), scrape_stage(port, ("sinks", "commit"))
            spies = start_profiles(roles, args, name) if args.profile and name == "70%" else []
            replicas = {"ingress replica": handle, "model replica": model_handle}
            th0 = {role: thread_cpu(pid) for pid, role in roles.items()}
            c0, t0 = cpu_snapshot(pids), time.perf_counter()
            ids = stack.send(frames, n, f"{name.replace('%', 'pct').replace(' ', '-')}-{uid}", rate)
            timings, first, last = stack.timings(ids, 120 + 4 * n / bare_full)
            elapsed = time.perf_counter() - t0
            c1, m1 = cpu_snapshot(pids), model_handle.stats.remote().result()
            th1 = {role: thread_cpu(pid) for pid, role in roles.items()}
            threads = {role: cpu_by_thread(replicas[role].stats.remote().result().get("threads", {}), th0[role], th1[role])
                       for role in th1}
            time.sleep(0.5)  # the last commit
            waited = time.monotonic() + 30  # Ray exports the replicas' histograms every few seconds
            while True:
                s1 = scrape_stage(port, ("sinks", "commit"))
                q_commit = bucket_quantiles(s0["commit"], s1["commit"])
                if (q_commit and q_commit["n"] >= n) or time.monotonic() > waited:
                    break
                time.sleep(1.0)
            profiles = finish_profiles(spies)
            mean_batch = (m1["frames"] - m0["frames"]) / max(1, m1["batches"] - m0["batches"])
            cpu = cpu_by_role(pids, c0, c1)
            model_cpu = model_cpu_per_frame(bare_before, mean_batch) * n
            stages = {s: percentiles([t.get(s, np.nan) for t in timings]) for s in (*STAGE_ORDER, "total")}
            for s in ("sinks", "commit"):
                stages[s] = bucket_quantiles(s0[s], s1[s])
            client_roles = ("ingress replica", "model replica", "serve controller")
            client_cpu = sum(cpu.get(r, 0.0) for r in client_roles) - model_cpu
            phases.append({
                "phase": name, "offered_fps": rate, "frames": n, "seconds": elapsed,
                "decided_fps": (n - 1) / max(1e-9, last - first), "mean_batch": mean_batch,
                "stages_ms": stages, "cpu_s": cpu, "model_cpu_s_estimated": model_cpu,
                "model_cpu_ms_per_frame": model_cpu / n * 1000,
                "nonmodel_cpu_ms_per_frame": client_cpu / n * 1000,
                "ray_core_cpu_ms_per_frame": cpu.get("ray core", 0.0) / n * 1000,
                "profiles": profiles, "thread_cpu_s": threads,
                "cores_busy": (c1.get(-1, 0.0) - c0.get(-1, 0.0)) / elapsed,
                "model_replica_cores": cpu.get("model replica", 0.0) / elapsed,
            })
            if name == "saturation":  # the latency goal where the line itself is not overloaded
                line_rate = 0.7 * phases[-1]["decided_fps"]
                plan.append(("70% of line", line_rate, max(3 * args.batch, int(line_rate * args.seconds))))
        serve.delete(cfg.app_name)
    finally:
        stack.close()
        ray.shutdown()
    bare_after = bare_model(model_dir, frames, [args.batch], args.bare_s, args.threads, device)
    bare_full = max(bare_full, bare_after[0]["fps"])
    full = next(r for r in bare_before if r["batch"] == args.batch)
    out = report(args, device, bare_before, bare_after, bare_full, full, phases, load_start)
    print(f"→ {write_json(args, f'pipeline-{args.label}-{{time}}.json', out)}")
    return 0


def report(args, device, bare_before, bare_after, bare_full, full, phases, load_start) -> dict[str, Any]:
    goal_p99 = 2 * full["batch_ms"] + 50
    print(f"\nbare model on {device}, {args.threads} threads, {args.size}px (load avg {load_start:.1f} → "
          f"{os.getloadavg()[0]:.1f})")
    print(f"{'batch':>5} {'frames/s':>9} {'ms/batch':>9} {'CPU ms/frame':>13}")
    for r in bare_before:
        print(f"{r['batch']:>5} {r['fps']:>9.1f} {r['batch_ms']:>9.1f} {r['cpu_ms_per_frame']:>13.2f}")
    print(f"reference rate (batch {args.batch}, best of before/after): {bare_full:.1f} frames/s "
          f"(after: {bare_after[0]['fps']:.1f})")
    cols = [*STAGE_ORDER, "total", "sinks", "commit"]
    for ph in phases:
        print(f"\n{ph['phase']}: {ph['frames']} frames, offered {ph['offered_fps'] or float('nan'):.1f}/s, "
              f"decided {ph['decided_fps']:.1f}/s, mean batch {ph['mean_batch']:.1f}")
        print(f"{'ms':>5} " + " ".join(f"{c:>8}" for c in cols))
        for q in QUANTILES:
            vals = [ph["stages_ms"][c][f"p{q}"] if ph["stages_ms"].get(c) else float("nan") for c in cols]
            print(f"{'p' + str(q):>5} " + " ".join(f"{v:>8.1f}" for v in vals))
        cpu = ", ".join(f"{k} {v:.1f}s" for k, v in sorted(ph["cpu_s"].items()))
        print(f"CPU: {cpu}; model (bare, batch {ph['mean_batch']:.1f}) {ph['model_cpu_s_estimated']:.1f}s")
        for role, kinds in ph["thread_cpu_s"].items():
            print(f"  {role} by thread, ms/frame: " + "; ".join(
                f"{k} {v / ph['frames'] * 1000:.2f}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])))
        for role, prof in (ph.get("profiles") or {}).items():
            print(f"  {role} busy samples (self): " + "; ".join(f"{fn} {share:.0%}" for fn, share in prof["top"]))
            print(f"  flame graph: {prof['flamegraph']}")
    by = {p["phase"]: p for p in phases}
    goals = []
    mid = by.get("70%")
    if mid:
        p99 = mid["stages_ms"]["total"]["p99"]
        worst = max(STAGE_ORDER, key=lambda s: mid["stages_ms"][s]["p99"])
        goals.append(("p99 capture→decision @70%", f"{p99:.0f} ms", f"≤ {goal_p99:.0f} ms", p99 <= goal_p99,
                      f"largest stage p99: {worst} {mid['stages_ms'][worst]['p99']:.0f} ms"))
        ratio = mid["nonmodel_cpu_ms_per_frame"] / mid["model_cpu_ms_per_frame"]
        heavy = max(("ingress replica", "model replica", "serve controller"), key=lambda r: mid["cpu_s"].get(r, 0))
        goals.append(("non-model CPU / model CPU @70%", f"{ratio:.2f}", "≤ 0.10", ratio <= 0.10,
                      f"{mid['nonmodel_cpu_ms_per_frame']:.2f} vs {mid['model_cpu_ms_per_frame']:.2f} ms/frame; "
                      f"most CPU: {heavy}; Ray core {mid['ray_core_cpu_ms_per_frame']:.2f} ms/frame apart"))
    line70 = by.get("70% of line")
    if line70:
        p99 = line70["stages_ms"]["total"]["p99"]
        goals.append(("p99 @70% of the line's own rate", f"{p99:.0f} ms", f"≤ {goal_p99:.0f} ms", p99 <= goal_p99,
                      f"{line70['offered_fps']:.1f} frames/s offered, mean batch {line70['mean_batch']:.1f}"))
    sat = by.get("saturation")
    if sat:
        m_cpu = sat["model_cpu_ms_per_frame"] / 1000
        bound = sat["model_replica_cores"] / m_cpu if m_cpu else float("nan")
        goals.append(("saturation: model's CPU share", f"{sat['model_replica_cores']:.2f} cores",
                      "diagnostic", None,
                      f"machine busy {sat['cores_busy']:.2f} cores; at {m_cpu * 1000:.1f} CPU-ms/frame that share "
                      f"allows {bound:.1f} frames/s; the rest went to: " + ", ".join(
                          f"{k} {v / sat['seconds']:.2f}" for k, v in sorted(sat['cpu_s'].items(), key=lambda kv: -kv[1])
                          if k != "model replica")))
        eff = sat["decided_fps"] / bare_full
        goals.append(("saturation rate / bare", f"{eff:.2f}", "≥ 0.90", eff >= 0.9,
                      f"{sat['decided_fps']:.1f} vs {bare_full:.1f} frames/s, mean batch {sat['mean_batch']:.1f}"))
    print("\ngoal                              measured   goal      met  note")
    for g in goals:
        met = "—" if g[3] is None else "yes" if g[3] else "NO"
        print(f"{g[0]:<33} {g[1]:>8}   {g[2]:<9} {met:<4} {g[4]}")
    return {
        "benchmark": "bench_pipeline", "label": args.label, "commit": git_commit(), "device": device,
        "override": args.override,
        "size": args.size, "batch": args.batch, "threads": args.threads,
        "replica_threads": args.replica_threads or args.threads, "cores": os.cpu_count(),
        "loadavg_start_end": [load_start, os.getloadavg()[0]],
        "bare": bare_before, "bare_after": bare_after, "bare_reference_fps": bare_full,
        "goal_p99_ms": goal_p99, "phases": phases,
        "goals": [{"goal": g[0], "measured": g[1], "target": g[2], "met": g[3], "note": g[4]} for g in goals],
    }


def markdown(runs: list[dict[str, Any]]) -> str:
    """Tables of one or more runs side by side: latency per stage, batch, CPU, goals."""
    lines = ["| run | phase | offered /s | decided /s | mean batch | " + " | ".join(f"{s} p50/p99" for s in
             ("kafka", "poll", "group", "wait", "model", "post", "reply", "total")) +
             " | sinks p99 | commit p99 | non-model CPU ms/frame | model CPU ms/frame |",
             "|" + "---|" * 17]
    for r in runs:
        for ph in r["phases"]:
            st = ph["stages_ms"]

            def pq(s: str, st=st) -> str:
                v = st.get(s)
                return "–" if not v or v["p50"] != v["p50"] else f"{v['p50']:.0f} / {v['p99']:.0f}"
            offered = f"{ph['offered_fps']:.1f}" if ph["offered_fps"] else "backlog"
            lines.append(
                f"| {r['label']} ({r['commit']}) | {ph['phase']} | {offered} | {ph['decided_fps']:.1f} | "
                f"{ph['mean_batch']:.1f} | " + " | ".join(pq(s) for s in
                ("kafka", "poll", "group", "wait", "model", "post", "reply", "total")) +
                f" | {(st.get('sinks') or {}).get('p99', float('nan')):.0f} | "
                f"{(st.get('commit') or {}).get('p99', float('nan')):.0f} | "
                f"{ph['nonmodel_cpu_ms_per_frame']:.1f} | {ph['model_cpu_ms_per_frame']:.1f} |")
    lines += ["", "| run | bare model (batch, frames/s) | load avg start → end | goal | measured | target | met | note |",
              "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        for g in r["goals"]:
            lines.append(f"| {r['label']} | {r['batch']}, {r['bare_reference_fps']:.1f} | "
                         f"{r['loadavg_start_end'][0]:.1f} → {r['loadavg_start_end'][1]:.1f} | {g['goal']} | "
                         f"{g['measured']} | {g['target']} | {'—' if g['met'] is None else 'yes' if g['met'] else 'no'} | {g['note']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

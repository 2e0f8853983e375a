"""Fault drills (issue 9): the line under faults, with real Kafka, Redis and Ray Serve.

Each drill streams simulated frames from several cameras at a camera-like pace (a producer
thread), injects one fault, and checks the line's promise:

* frames in = results out (or dead letters with the right reason);
* exactly one reject command per defective item, none for a good item (truth: the stand-in
  model's deterministic score against a threshold in the widest gap of the scores);
* the line recovers by itself within a stated bound; the measured time is printed in the test
  log's "fault drills" section (and in the assertion message when it fails).

The stand-in model (no compute) keeps the CPU free for Kafka, Redis and Ray on 2 cores. Drills that
restart or pause the shared broker or Redis use the stack module's own functions and restore the
service before they end, whatever happens.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from inference.contracts import RejectCommand, Result, result_key
from ingest.settings import KafkaSettings

from ..inference.conftest import (  # noqa: F401 - fixtures re-exported for the drills
    FRAME_SIZE,
    app_config,
    count_results,
    encoded,
    produce,
    read_all,
    running,
    serve_instance,
    split_threshold,
    standin_scores,
    wait_assigned,
    wait_for,
)

_REPORT: list[str] = []


def pytest_terminal_summary(terminalreporter) -> None:
    if _REPORT:
        terminalreporter.section("fault drills")
        for line in _REPORT:
            terminalreporter.write_line(line)


def report(drill: str, **figures: Any) -> None:
    """One line in the test log's "fault drills" section (and on stdout)."""
    text = f"{drill}: " + ", ".join(
        f"{k}={v:.1f}s" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )
    _REPORT.append(text)
    print(text, flush=True)


# ------------------------------------------------------------------------------------- the frames
@dataclass
class Workload:
    """Simulated frames of several cameras (interleaved as the cameras would send them) and the
    truth the line must reproduce."""

    frames: list
    threshold: float
    defective_items: set[str]
    records: list[tuple[bytes, bytes, list]]

    @property
    def ids(self) -> list[str]:
        return [f.frame_id for f in self.frames]

    @property
    def items(self) -> set[str]:
        return {f.item_id for f in self.frames}

    def expected(self) -> dict[str, bool]:
        """Frame id -> the decision the stand-in must reach (score >= threshold)."""
        scores = standin_scores(self.frames)
        return {f.frame_id: bool(s >= self.threshold) for f, s in zip(self.frames, scores, strict=True)}


def workload(cameras: int = 3, per_camera: int = 40, seed: int = 0, defect_rate: float = 0.4,
             deadline_ms: int | None = None) -> Workload:
    from ingest.simulator import SimulatedCamera

    run_id = uuid.uuid4().hex[:6]
    per_cam = []
    for c in range(cameras):
        cam = SimulatedCamera(line_id="L1", camera_id=f"cam{c}", fps=None, defect_rate=defect_rate, seed=seed,
                              size=FRAME_SIZE, n_frames=per_camera, run_id=run_id)
        per_cam.append(list(cam))
        cam.close()
    frames = [f for group in zip(*per_cam, strict=True) for f in group]  # cam0 #0, cam1 #0, ...
    scores = standin_scores(frames)
    threshold = split_threshold(scores)
    defective = {f.item_id for f, s in zip(frames, scores, strict=True) if s >= threshold}
    good = {f.item_id for f in frames} - defective
    assert defective and good, "the workload needs defective and good items"
    return Workload(frames, threshold, defective, [encoded(f, deadline_ms=deadline_ms) for f in frames])


# ------------------------------------------------------------------------------- a paced producer
class Streamer(threading.Thread):
    """Sends the workload's frames to ``topic`` at ``rate_hz`` frames/s (all cameras together),
    like cameras would: each frame is stamped (``captured_at``) and encoded when it is sent. Its
    producer rides out a broker restart (retries within a 2-minute delivery timeout, reconnecting
    at most 0.5 s after the broker is back, so the line's own recovery is what a drill measures)."""

    def __init__(self, settings: KafkaSettings, topic: str, w: Workload, rate_hz: float,
                 deadline_ms: int | None = None) -> None:
        super().__init__(daemon=True, name="drill-streamer")
        from kafka import KafkaProducer

        from ingest.topics import MAX_MESSAGE_BYTES

        self.topic, self.frames, self.rate_hz, self.deadline_ms = topic, w.frames, rate_hz, deadline_ms
        self.producer = KafkaProducer(**settings.client_kwargs(), acks="all", linger_ms=5,
                                      max_request_size=MAX_MESSAGE_BYTES, delivery_timeout_ms=120_000,
                                      request_timeout_ms=20_000, retries=2**31 - 1,
                                      reconnect_backoff_ms=50, reconnect_backoff_max_ms=500)
        self.futures: list = []
        self.sent_at: list[float] = []  # time.monotonic() of each send, in record order
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        t0 = time.monotonic()
        try:
            for i, frame in enumerate(self.frames):
                delay = t0 + i / self.rate_hz - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                k, v, h = encoded(dataclasses.replace(frame, captured_at=datetime.now(UTC)),
                                  deadline_ms=self.deadline_ms)
                self.futures.append(self.producer.send(self.topic, key=k, value=v, headers=h))
                self.sent_at.append(time.monotonic())
                self.sent += 1
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc

    def finish(self, timeout_s: float = 180.0) -> int:
        """Wait until every record is acknowledged; returns how many were sent."""
        self.join(timeout_s)
        assert not self.is_alive(), "the streamer did not finish"
        assert self.error is None, f"the streamer failed: {self.error!r}"
        for f in self.futures:
            f.get(timeout=timeout_s)
        self.producer.close()
        return self.sent


# ---------------------------------------------------------------------------- decisions over time
class DecisionWatch(threading.Thread):
    """Samples how many results exist under a prefix every ``interval_s``, so a drill can say
    when decisions stopped and when they resumed. Redis being down is recorded, not fatal."""

    def __init__(self, redis_settings: Any, prefix: str, interval_s: float = 0.25) -> None:
        super().__init__(daemon=True, name="drill-watch")
        import redis

        self._client = redis.Redis(**redis_settings.client_kwargs(), socket_timeout=2, socket_connect_timeout=1)
        self.prefix, self.interval_s = prefix, interval_s
        self.samples: list[tuple[float, int | None]] = []
        self._stop_event = threading.Event()

    def count(self) -> int | None:
        try:
            return count_results(self._client, self.prefix)
        except Exception:  # noqa: BLE001 - Redis down during a drill: no sample
            return None

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append((time.monotonic(), self.count()))
            self._stop_event.wait(self.interval_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)
        self._client.close()

    def last(self) -> int:
        for _, n in reversed(self.samples):
            if n is not None:
                return n
        return 0

    def first_decision_after(self, t: float, timeout_s: float = 180.0) -> float:
        """Seconds from ``t`` until the result count first rises above its last value before ``t``.
        Waits up to ``timeout_s`` (long: a drill measures first, then asserts its own bound)."""
        before = [n for ts, n in list(self.samples) if ts <= t and n is not None]
        base = before[-1] if before else 0
        deadline = t + timeout_s
        while True:
            for ts, n in list(self.samples):
                if ts > t and n is not None and n > base:
                    return ts - t
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no new decision within {timeout_s:.0f}s after the fault (count stayed {base})")
            time.sleep(self.interval_s)

    def recovery(self, t_fault: float, until: float) -> tuple[float, float]:
        """``(longest stall, recovered after)``: the longest time without a new decision inside
        ``[t_fault, until]``, and how long after ``t_fault`` that stall ended — the line's own
        recovery time (decisions already under way when the fault hit do not hide it)."""
        rises = [t_fault]
        prev = None
        for ts, n in list(self.samples):
            if n is None or ts > until:
                continue
            if prev is not None and n > prev and ts > t_fault:
                rises.append(ts)
            prev = n
        if len(rises) == 1:
            return until - t_fault, until - t_fault
        gaps = [(b - a, b) for a, b in zip(rises, rises[1:], strict=False)]
        stall, end = max(gaps)
        return stall, end - t_fault

    def longest_stall(self, since: float, until: float) -> float:
        """Longest time between two successive rises of the count inside ``[since, until]``."""
        rises = [since]
        prev = None
        for ts, n in self.samples:
            if n is None or ts < since or ts > until:
                continue
            if prev is not None and n > prev:
                rises.append(ts)
            prev = n
        rises.append(until)
        return max(b - a for a, b in zip(rises, rises[1:], strict=False))


@pytest.fixture
def watch(redis_settings, redis_prefix) -> Iterator[Callable[[], DecisionWatch]]:
    started: list[DecisionWatch] = []

    def make() -> DecisionWatch:
        w = DecisionWatch(redis_settings, redis_prefix)
        w.start()
        started.append(w)
        return w

    yield make
    for w in started:
        w.stop()


# ------------------------------------------------------------------------------ the line's promise
@dataclass
class Outcome:
    results: dict[str, Result]
    rejects: list[RejectCommand]
    failsafe: dict[str, str] = field(default_factory=dict)


def read_results(redis_client, prefix: str, frame_ids) -> dict[str, Result]:
    pipe = redis_client.pipeline(transaction=False)
    ids = list(frame_ids)
    for fid in ids:
        pipe.hgetall(result_key(prefix, fid))
    return {fid: Result.from_redis(h) for fid, h in zip(ids, pipe.execute(), strict=True) if h}


def read_reject_commands(kafka_settings, topic: str, expected: int, settle_s: float = 3.0) -> list[RejectCommand]:
    return [RejectCommand.from_kafka(r.value) for r in read_all(kafka_settings, topic, expected, settle_s=settle_s)]


def wait_all_decided(redis_client, prefix: str, ids: list[str], timeout_s: float, state=None) -> float:
    """Seconds until every frame of ``ids`` has a result."""
    t0 = time.monotonic()
    wait_for(lambda: len(read_results(redis_client, prefix, ids)) == len(ids), timeout_s,
             f"all {len(ids)} frames decided",
             state=state or (lambda: {"decided": len(read_results(redis_client, prefix, ids))}))
    return time.monotonic() - t0


def assert_line_promise(w: Workload, redis_client, prefix: str, kafka_settings, rejects_topic: str,
                        allow_failsafe: bool = False, extra_rejects: frozenset[str] = frozenset()) -> Outcome:
    """Frames in = results out; every model verdict equals the truth; exactly one reject command
    per defective item and none for a good one. With ``allow_failsafe`` a frame the model could
    not judge may be a fail-safe reject (marked, never a pass); its item is then rejected once.
    ``extra_rejects``: items outside the workload that must be rejected once too (records the line
    could not judge)."""
    got = read_results(redis_client, prefix, w.ids)
    missing = sorted(set(w.ids) - set(got))
    assert not missing, f"{len(missing)} of {len(w.ids)} frames have no result: {missing[:10]}"
    expected = w.expected()
    failsafe = {fid: r.failsafe for fid, r in got.items() if getattr(r, "failsafe", None) or r.late}
    if not allow_failsafe:
        assert not failsafe, f"frames decided without a model verdict: {dict(list(failsafe.items())[:10])}"
    wrong = []
    for fid, r in got.items():
        if fid in failsafe:
            assert r.decision is True, f"{fid}: no model verdict, yet passed ({r.failsafe}, late={r.late})"
            continue
        assert r.score is not None and np.isfinite(r.score), f"{fid}: a pass/reject without a finite score"
        if r.decision != expected[fid]:
            wrong.append((fid, r.score, r.decision))
    assert not wrong, f"decisions differ from the model's scores: {wrong[:10]}"
    by_frame = {f.frame_id: f for f in w.frames}
    rejected_items = {by_frame[fid].item_id for fid, r in got.items() if r.decision}
    must_reject = set(w.defective_items) | rejected_items if allow_failsafe else set(w.defective_items)
    must_reject |= set(extra_rejects)
    cmds = read_reject_commands(kafka_settings, rejects_topic, expected=len(must_reject))
    items = [c.item_id for c in cmds]
    dups = sorted({i for i in items if items.count(i) > 1})
    assert not dups, f"items rejected more than once: {dups}"
    assert set(items) - must_reject == set(), f"good items rejected: {sorted(set(items) - must_reject)}"
    assert must_reject - set(items) == set(), f"defective items not rejected: {sorted(must_reject - set(items))}"
    return Outcome(got, cmds, {k: str(v) for k, v in failsafe.items()})


def line_config(make_config, w: Workload, partitions: int = 3, **over: Any):
    """The drills' app: the stand-in scoring against the workload's threshold, small batches."""
    standin = {"batch_latency_ms": 40, "threshold": w.threshold, **over.pop("standin", {})}
    tuning = {"max_batch_size": 8, "batch_wait_timeout_s": 0.02, **over.pop("tuning", {})}
    ingress = {"inflight_window": 32, "commit_interval_ms": 100, **over.pop("ingress", {})}
    return make_config(partitions=partitions, standin=standin, tuning=tuning, ingress=ingress, **over)


@contextmanager
def restored(stack: Any, service: str) -> Iterator[None]:
    """Whatever happens inside, ``service`` (kafka or redis) answers again afterwards: resumed if
    paused, started (same data) if down. Other tests share the broker and Redis."""
    try:
        yield
    finally:
        pid = stack._read_pid(service)
        if service == "kafka" and pid is not None:
            import os
            import signal

            os.killpg(pid, signal.SIGCONT)  # a no-op unless a drill left it paused
        ready = stack.kafka_ready if service == "kafka" else stack.redis_ready
        if not ready():
            (stack.start_kafka if service == "kafka" else stack.start_redis)()
        wait_for(ready, 120, f"{service} answering again")


def redis_answers(redis_client, timeout_s: float = 30.0) -> None:
    """Until Redis answers this client again (redis-py reconnects on the next command)."""

    def ping() -> bool:
        try:
            return bool(redis_client.ping())
        except Exception:  # noqa: BLE001 - still restarting
            return False

    wait_for(ping, timeout_s, "redis answering")


def wait_decided_count(w: DecisionWatch, n: int, timeout_s: float) -> None:
    wait_for(lambda: w.last() >= n, timeout_s, f"{n} frames decided", state=lambda: {"decided": w.last()})

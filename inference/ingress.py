"""``LineIngress``: Kafka → model → sinks → offset commit, one consumer per replica.

Run N replicas in one consumer group (partitions are spread over them). Per replica:

* a :class:`~inference.consumer.FrameConsumer` thread polls, decodes/validates and applies the
  in-flight window (pause/resume); every polled offset is registered in an
  :class:`~inference.offsets.OffsetTracker`;
* on the event loop, each frame gets its recipe's ROI and its deadline; the frames of one poll and
  partition go to the model in groups of up to ``request_group`` per ``GRDNetModel.infer`` handle
  call — concurrent calls from the in-flight window form the model's batches, and grouping
  amortises Serve's per-request cost (about 1 ms of CPU on each side, measured) over several frames
  (``request_group: 1`` = one call per frame). A partial group waits at most ``group_linger_ms``
  for more frames of its partition (a paced camera delivers one frame per poll). Frames with a
  deadline wait for the model within the tightest budget among them (consecutive frames of one
  camera); frames without one are never made late by it. Each frame becomes a
  :class:`~inference.contracts.Result`. Bad frames are dead-lettered (``decode``/``validate``
  at the consumer, ``model`` when the model fails on that frame); a model that does not answer
  within the frame's deadline triggers the late policy (:mod:`inference.deadline`);
* one sink task groups finished frames (``sink_flush_max`` / ``sink_flush_interval_ms``) and writes
  them on a worker thread: Redis results, then reject commands (acked), then dead letters (acked);
  only then are their offsets marked complete, and the consumer thread commits the contiguous
  watermark. A sink outage is retried with backoff (the window fills, the consumer pauses); one
  lasting longer than ``_UNHEALTHY_AFTER_S`` fails the health check so Serve replaces the replica.

Redelivery (replica restart, rebalance) is safe: result hashes are overwritten, reject commands
are claimed per item in Redis (:mod:`inference.sinks`) — which also covers a revoked owner still
flushing a frame the new owner re-reads.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ray import serve

from inference import metrics as M
from inference.config import ServeAppConfig
from inference.consumer import FrameConsumer, PolledFrame
from inference.contracts import RejectCommand, Result, Timings, utcnow
from inference.deadline import budget_s, deadline_at, late_decision
from inference.logs import configure_replica_logging
from inference.model_deployment import ModelFailure, ModelReply, ModelRequest
from inference.offsets import OffsetTracker
from inference.roi import RoiError, RoiProvider
from inference.sinks import (
    ClaimBusy,
    DeadLetterIn,
    DeadLetterSink,
    RedisResultSink,
    RejectSink,
    SinkError,
)
from ingest.dlq import STAGE_DECODE, STAGE_INFERENCE, STAGE_VALIDATE

log = logging.getLogger(__name__)

_MODEL_ATTEMPTS = 3
_UNHEALTHY_AFTER_S = 60.0
_TAG_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,63}$")


@dataclass
class Outcome:
    """A frame ready for the sinks: a result, or a dead letter."""

    frame: PolledFrame
    line: str
    camera: str
    result: Result | None = None
    dead: DeadLetterIn | None = None
    inspected: bool = False


@dataclass
class _Prepared:
    """A valid frame waiting for the model: its request, ROI id and deadline."""

    out: Outcome
    request: ModelRequest
    roi_id: str
    deadline: datetime | None


def _header_tag(headers: list[tuple[str, bytes]], name: str) -> str:
    for k, v in headers:
        if k == name:
            text = v.decode("utf-8", errors="replace")
            return text if _TAG_OK.match(text) else "unknown"
    return "unknown"


class _SinkSet:
    """The three sinks plus their shared producer; used from the sink worker thread only."""

    def __init__(self, cfg: ServeAppConfig):
        import redis
        from kafka import KafkaProducer

        from ingest.topics import MAX_MESSAGE_BYTES

        def redis_factory() -> Any:
            return redis.Redis(**cfg.redis.client_kwargs())

        self.producer = KafkaProducer(
            **cfg.kafka.client_kwargs(), acks="all", linger_ms=1, max_request_size=MAX_MESSAGE_BYTES
        )
        p = cfg.redis.key_prefix
        self.results = RedisResultSink(redis_factory, p, cfg.sink.result_ttl_s, cfg.sink.stream_maxlen)
        self.rejects = RejectSink(redis_factory, self.producer, cfg.topics.rejects, p, cfg.sink.reject_claim_ttl_s)
        self.dlq = DeadLetterSink(self.producer, cfg.topics.dlq)
        for s in (self.results, self.rejects, self.dlq):
            s.setup()

    def close(self) -> None:
        for s in (self.results, self.rejects, self.dlq):
            s.close()
        self.producer.close(timeout=10)


@serve.deployment(name="LineIngress")
class LineIngress:
    """See the module docstring. ``model`` is the ``GRDNetModel`` deployment handle."""

    def __init__(self, cfg: ServeAppConfig, model: Any):
        configure_replica_logging(cfg.log_level)
        self._cfg = cfg
        self._model = model
        self._loop = asyncio.get_running_loop()
        self._tracker = OffsetTracker()
        self._rois = RoiProvider(cfg)
        self._metrics = M.Recorders(M.INGRESS_METRICS)
        self._stats: Counter[str] = Counter()
        self._outq: asyncio.Queue[Outcome] = asyncio.Queue()
        self._tasks: set[asyncio.Task] = set()
        self._sink_exec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grdline-sinks")
        self._sinks = _SinkSet(cfg)
        self._sink_failing_since: float | None = None
        self._sink_error: BaseException | None = None
        self._task_crash: BaseException | None = None
        self._stopping = False
        self._last_threshold: float | None = None
        self._last_version = ""
        self._grouping: dict[int, list[_Prepared]] = {}
        self._linger: asyncio.TimerHandle | None = None
        self._flusher = self._loop.create_task(self._flush_loop())
        self._consumer = FrameConsumer(cfg, self._tracker, self._deliver, self._lag)
        self._consumer.start()

    # --- consumer thread → loop -----------------------------------------------------------------
    def _deliver(self, frames: list[PolledFrame]) -> None:
        self._loop.call_soon_threadsafe(self._accept, frames)

    def _lag(self, lag: dict[int, int]) -> None:
        self._loop.call_soon_threadsafe(self._set_lag, lag)

    def _set_lag(self, lag: dict[int, int]) -> None:
        for partition, value in lag.items():
            self._metrics.set(M.CONSUMER_LAG, value, topic=self._cfg.topics.frames, partition=str(partition))
        self._stats["lag"] = sum(lag.values())

    def _accept(self, frames: list[PolledFrame]) -> None:
        """Validate each polled frame; good ones go to the model in groups of up to
        ``request_group`` frames of one partition (one handle call per group). A partial group
        waits at most ``group_linger_ms`` for more frames of its partition."""
        size = self._cfg.ingress.request_group
        for f in frames:
            if f.meta is not None:
                line, camera = f.meta.line_id, f.meta.camera_id
            else:
                line, camera = _header_tag(f.headers, "line_id"), _header_tag(f.headers, "camera_id")
            self._metrics.inc(M.FRAMES_CONSUMED, line=line, camera=camera)
            prepared = self._prepare(Outcome(frame=f, line=line, camera=camera))
            if prepared is None:
                continue
            pending = self._grouping.setdefault(f.partition, [])
            pending.append(prepared)
            if len(pending) >= size:
                self._dispatch(f.partition)
        if self._grouping and self._linger is None:
            self._linger = self._loop.call_later(self._cfg.ingress.group_linger_ms / 1000.0, self._dispatch_all)
        self._stats["consumed"] += len(frames)
        self._metrics.set(M.INFLIGHT_FRAMES, self._tracker.in_flight())

    def _dispatch(self, partition: int) -> None:
        group = self._grouping.pop(partition, None)
        if group:
            task = self._loop.create_task(self._decide(group))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _dispatch_all(self) -> None:
        self._linger = None
        for partition in list(self._grouping):
            self._dispatch(partition)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # _decide turns every per-frame failure into an outcome; reaching here is a bug and
            # the frame's offset would block the watermark forever: fail the replica loudly.
            self._task_crash = task.exception()
            log.error("frame task crashed", exc_info=task.exception())

    # --- per frame --------------------------------------------------------------------------------
    def _dead(self, f: PolledFrame, reason: str, stage: str, error: BaseException | None) -> DeadLetterIn:
        return DeadLetterIn(
            key=f.key, value=f.value, headers=f.headers, reason=reason, stage=stage,
            topic=f.topic, partition=f.partition, offset=f.offset, error=error,
        )

    async def _call_model(
        self, reqs: list[ModelRequest], budget: float | None
    ) -> list[ModelReply | ModelFailure] | None:
        """The model's replies (same order); None when the budget ran out (late)."""
        t_end = None if budget is None else time.monotonic() + budget
        for attempt in range(1, _MODEL_ATTEMPTS + 1):
            remaining = None if t_end is None else t_end - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            resp = self._model.infer.remote(reqs)
            try:
                return await asyncio.wait_for(resp, remaining) if remaining is not None else await resp
            except TimeoutError:
                resp.cancel()
                return None
            except Exception as exc:  # noqa: BLE001 - replica died/restarting: retried, then DLQ
                if attempt == _MODEL_ATTEMPTS:
                    reason = f"model call failed {attempt}x: {exc!r}"
                    return [ModelFailure(r.frame_id, reason, type(exc).__name__) for r in reqs]
                log.warning("model call for %d frame(s) failed (%r); retry %d", len(reqs), exc, attempt)
                await asyncio.sleep(0.2 * attempt)
        raise AssertionError("unreachable")

    def _prepare(self, out: Outcome) -> _Prepared | None:
        """Dead-letter a frame that cannot be inspected; otherwise its ROI and deadline."""

        f = out.frame
        if f.error is not None:
            out.dead = self._dead(f, str(f.error), STAGE_DECODE, f.error)
            self._outq.put_nowait(out)
            return None
        meta = f.meta
        try:
            roi, roi_id = self._rois.get(meta.recipe, meta.height, meta.width)
        except RoiError as exc:
            out.dead = self._dead(f, str(exc), STAGE_VALIDATE, exc)
            self._outq.put_nowait(out)
            return None
        recipe = self._cfg.recipe(meta.recipe)
        dl = deadline_at(meta.captured_at, meta.deadline_ms, recipe.deadline_ms, self._cfg.deadline.default_deadline_ms)
        return _Prepared(out, ModelRequest(meta.frame_id, f.image, roi), roi_id, dl)

    async def _decide(self, group: list[_Prepared]) -> None:
        """Frames already past their budget are late without asking the model; the others go in
        one model call per kind — those with a deadline within the tightest budget among them,
        those without one unbounded (a deadline never makes a deadline-less frame late)."""
        now = utcnow()
        margin = self._cfg.deadline.sink_margin_ms
        timed: list[tuple[_Prepared, float]] = []
        untimed: list[_Prepared] = []
        for p in group:
            b = budget_s(p.deadline, now, margin)
            if b is None:
                untimed.append(p)
            elif b <= 0:
                self._finish(p, None, now, 0.0)
            else:
                timed.append((p, b))
        calls = []
        if timed:
            calls.append(self._ask([p for p, _ in timed], min(b for _, b in timed)))
        if untimed:
            calls.append(self._ask(untimed, None))
        await asyncio.gather(*calls)

    async def _ask(self, frames: list[_Prepared], budget: float | None) -> None:
        sent = time.time()
        replies = await self._call_model([p.request for p in frames], budget)
        decided = utcnow()
        for i, p in enumerate(frames):
            self._finish(p, None if replies is None else replies[i], decided, sent)

    def _finish(self, p: _Prepared, reply: ModelReply | ModelFailure | None, decided: datetime, sent: float) -> None:
        out, f, meta, dl = p.out, p.out.frame, p.out.frame.meta, p.deadline
        if isinstance(reply, ModelFailure):
            out.dead = self._dead(f, reply.reason, STAGE_INFERENCE, None)
            self._outq.put_nowait(out)
            return
        late = reply is None or (dl is not None and decided > dl)
        timings = Timings(
            queue=max(0.0, (f.received_at - meta.captured_at.timestamp()) * 1000),
            decode=f.decode_s * 1000,
            wait=max(0.0, (reply.batch_started - sent) * 1000) if reply else 0.0,
            model=reply.model_s * 1000 if reply else 0.0,
            total=(decided - meta.captured_at).total_seconds() * 1000,
        )
        if reply is not None:
            self._last_threshold, self._last_version = reply.threshold, reply.model_version
        decision = reply.decision if reply is not None else False
        policy = None
        if late:
            ld = late_decision(self._cfg.deadline.late_policy)
            decision, policy = ld.decision, ld.policy
        out.inspected = reply is not None and not late
        out.result = Result(
            frame_id=meta.frame_id, item_id=meta.item_id, line_id=meta.line_id, camera_id=meta.camera_id,
            recipe=meta.recipe, captured_at=meta.captured_at, decided_at=decided, deadline_at=dl,
            score=reply.score if reply is not None else None, decision=decision, late=late,
            late_policy=policy,
            threshold=reply.threshold if reply is not None else self._last_threshold,
            model_version=reply.model_version if reply is not None else self._last_version,
            roi_id=p.roi_id, defect_area=reply.defect_area if reply else 0,
            boxes=reply.boxes if reply else [], timings_ms=timings,
            mask_png=reply.mask_png if reply else b"",
            topic=f.topic, partition=f.partition, offset=f.offset,
        )
        self._outq.put_nowait(out)

    # --- sinks ------------------------------------------------------------------------------------
    async def _flush_loop(self) -> None:
        c = self._cfg.ingress
        while True:
            batch = [await self._outq.get()]
            if self._outq.qsize() < c.sink_flush_max - 1 and c.sink_flush_interval_ms > 0:
                await asyncio.sleep(c.sink_flush_interval_ms / 1000.0)
            while len(batch) < c.sink_flush_max and not self._outq.empty():
                batch.append(self._outq.get_nowait())
            t0 = time.perf_counter()
            sent = await self._loop.run_in_executor(self._sink_exec, self._write, batch)
            self._account(batch, sent, time.perf_counter() - t0)

    def _write(self, batch: list[Outcome]) -> list[RejectCommand]:
        """Sink worker thread: buffer, then flush with retries until confirmed."""
        import redis
        from kafka.errors import KafkaError

        s = self._sinks
        for o in batch:
            if o.result is not None:
                s.results.add(o.result)
                s.rejects.add(o.result)  # also for a revoked partition: the claim dedupes
            if o.dead is not None:
                s.dlq.add(o.dead)
        delay = 0.1
        while True:
            try:
                s.results.flush()
                cmds = s.rejects.flush()
                s.dlq.flush()
                self._sink_failing_since = None
                return cmds
            except (SinkError, redis.RedisError, KafkaError, OSError) as exc:
                if self._sink_failing_since is None:
                    self._sink_failing_since = time.monotonic()
                self._sink_error = exc
                level = logging.INFO if isinstance(exc, ClaimBusy) else logging.ERROR
                log.log(level, "sink flush of %d frame(s) not confirmed, retrying in %.1fs: %r", len(batch), delay, exc)
                if self._stopping:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _account(self, batch: list[Outcome], sent: list[RejectCommand], sink_s: float) -> None:
        m = self._metrics
        for o in batch:
            self._tracker.complete(o.frame.ticket)
            tags = {"line": o.line, "camera": o.camera}
            if o.dead is not None:
                m.inc(M.FRAMES_DEAD_LETTERED, stage=o.dead.stage, **tags)
                self._stats["dead_lettered"] += 1
                continue
            r = o.result
            t = r.timings_ms
            m.observe(M.E2E_LATENCY, t.total / 1000, **tags)
            m.observe(M.STAGE_LATENCY, t.queue / 1000, stage="queue", **tags)
            m.observe(M.STAGE_LATENCY, t.decode / 1000, stage="decode", **tags)
            m.observe(M.STAGE_LATENCY, sink_s, stage="sinks", **tags)
            if o.inspected:
                m.inc(M.FRAMES_INSPECTED, **tags)
                m.observe(M.STAGE_LATENCY, t.wait / 1000, stage="wait", **tags)
                m.observe(M.STAGE_LATENCY, t.model / 1000, stage="model", **tags)
                self._stats["inspected"] += 1
                if r.decision:
                    m.inc(M.FRAMES_DEFECTIVE, **tags)
                    self._stats["defective"] += 1
            if r.late:
                m.inc(M.FRAMES_LATE, **tags)
                self._stats["late"] += 1
            self._stats["results"] += 1
        for cmd in sent:
            m.inc(M.ITEMS_REJECTED, line=cmd.line_id, camera=cmd.camera_id)
        self._stats["rejects_sent"] += len(sent)
        self._stats["completed"] += len(batch)
        m.set(M.INFLIGHT_FRAMES, self._tracker.in_flight())

    # --- Serve hooks ------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters of this replica (tests, benchmarks, ``GET {route_prefix}``)."""
        import os

        import ray

        return {
            "pid": os.getpid(),
            "actor_name": ray.get_runtime_context().get_actor_name(),
            **self._stats,
            "inflight": self._tracker.in_flight(),
            "paused": self._consumer.paused,
            "commits": self._consumer.commits,
            "rebalances": self._consumer.rebalances,
            "partitions": sorted(tp.partition for tp in self._tracker.partitions()),
            "rejects_suppressed": self._sinks.rejects.suppressed,
            "stale_completions": self._tracker.stale_completions,
            "consumer_ready": self._consumer.ready.is_set(),
            "at": datetime.now(UTC).isoformat(),
        }

    async def __call__(self, request: Any) -> dict[str, Any]:
        return self.stats()

    def check_health(self) -> None:
        if self._consumer.error is not None:
            raise RuntimeError(f"consumer thread failed: {self._consumer.error!r}") from self._consumer.error
        if not self._stopping and self._consumer.ready.is_set() and not self._consumer.is_alive():
            raise RuntimeError("consumer thread exited")
        if self._flusher.done():
            exc = self._flusher.exception() if not self._flusher.cancelled() else None
            raise RuntimeError(f"sink task ended: {exc!r}") from exc
        since = self._sink_failing_since
        if since is not None and time.monotonic() - since > _UNHEALTHY_AFTER_S:
            raise RuntimeError(f"sinks failing for {time.monotonic() - since:.0f}s: {self._sink_error!r}")
        if self._task_crash is not None:
            raise RuntimeError(f"frame task crashed: {self._task_crash!r}") from self._task_crash

    async def __del__(self) -> None:
        """Graceful shutdown: stop polling, let in-flight frames reach the sinks, commit, close."""
        await asyncio.to_thread(self._consumer.stop, self._cfg.ingress.revoke_drain_timeout_s + 15)
        self._stopping = True
        self._flusher.cancel()
        await asyncio.to_thread(self._sinks.close)

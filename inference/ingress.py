"""``LineIngress``: the Serve deployment that wires Kafka → decision core → model → checkpoint.

Per replica (N replicas share one consumer group):

* a :class:`~inference.consumer.FrameConsumer` thread polls, decodes, looks up frames already
  decided, applies the in-flight window (frames and bytes) and commits the contiguous watermark;
* on the event loop, :func:`~inference.decision.prepare` turns each record into a model request or
  an outcome (dead letter, already decided); the :class:`~inference.dispatch.ModelDispatcher` sends
  requests to ``GRDNetModel`` in per-partition groups and turns the reply, failure or silence into
  a result (:func:`~inference.decision.decide`);
* one sink task hands finished outcomes to the :class:`~inference.checkpoint.Checkpoint` on a worker
  thread (results → rejects and dead letters acked → offsets complete);
* :meth:`LineIngress.check_health` (:func:`inference.health.check_ingress`) is red when Kafka
  stayed unreachable past the start-up grace, the consumer thread died or stalled, the replica
  held no partition of an existing (or of a missing) frames topic for a bound, the sinks have
  failed for ``sink.unhealthy_after_s``, or the oldest in-flight frame is older than
  ``ingress.max_inflight_age_s`` — Serve then replaces the replica.
* ``__init__`` reaches no server: the consumer thread creates its client and retries with backoff,
  the checkpoint's producer is created on first use (warmed on the sink thread) and redis-py
  connects on the first command — so the app deploys in any order with Kafka and Redis.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from ray import serve

from inference import metrics as M
from inference.checkpoint import FlushReport, ResultLookup, open_checkpoint
from inference.config import ServeAppConfig
from inference.consumer import FrameConsumer, PolledFrame
from inference.decision import Outcome, dead_letter, prefix_for, prepare
from inference.dispatch import ModelDispatcher
from inference.health import IngressState, check_ingress
from inference.logs import configure_replica_logging
from inference.offsets import OffsetTracker
from inference.redis_memory import RedisMemory, sample_memory
from inference.roi import RoiProvider
from ingest.dlq import STAGE_VALIDATE

log = logging.getLogger(__name__)


@serve.deployment(name="LineIngress")
class LineIngress:
    """See the module docstring. ``model`` is the ``GRDNetModel`` deployment handle."""

    def __init__(self, cfg: ServeAppConfig, model: Any):
        configure_replica_logging(cfg.log_level)
        self._cfg, self._model = cfg, model
        self._loop = asyncio.get_running_loop()
        self._tracker = OffsetTracker()
        self._rois = RoiProvider(cfg)
        self._labels = M.LabelCap(cfg.limits.metric_label_values)
        self._metrics = M.Recorders(M.INGRESS_METRICS)
        M.hold_expected_cameras(self._metrics, self._labels, cfg)
        self._stats: Counter[str] = Counter()
        self._outq: asyncio.Queue[Outcome] = asyncio.Queue()
        self._dispatcher = ModelDispatcher(cfg, model, self._loop, self._outq.put_nowait)
        self._stopping = False
        self._sink_exec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grdline-sinks")
        self._checkpoint = open_checkpoint(cfg, self._tracker.complete)
        self._sink_exec.submit(self._checkpoint.warm)  # the producer, off __init__; never raises
        self._flusher = self._loop.create_task(self._flush_loop())
        self._memory_task = self._loop.create_task(sample_memory(
            self._checkpoint.redis_factory, self._record_memory, cfg.sink.memory_sample_s))
        lookup = ResultLookup(self._checkpoint.redis_factory)
        self._consumer = FrameConsumer(
            cfg, self._tracker, lambda fs: self._loop.call_soon_threadsafe(self._accept, fs),
            lambda lag: self._loop.call_soon_threadsafe(self._set_lag, lag),
            lookup=lookup, prefix_of=lambda topic: prefix_for(topic, cfg),
            on_commit=lambda waits: self._loop.call_soon_threadsafe(M.account_commit, self._metrics, self._labels, waits),
        )
        self._consumer.start()

    def _record_memory(self, mem: RedisMemory) -> None:
        """Redis fill into the gauges ``GrdlineRedisMemoryHigh`` reads."""
        self._metrics.set(M.REDIS_USED_MEMORY, mem.used)
        self._metrics.set(M.REDIS_MAXMEMORY, mem.maxmemory)

    def _set_lag(self, lag: dict[int, int]) -> None:
        for partition, value in lag.items():
            self._metrics.set(M.CONSUMER_LAG, value, topic=self._cfg.topics.frames, partition=str(partition))
        self._stats["lag"] = sum(lag.values())

    def _accept(self, frames: list[PolledFrame]) -> None:
        """Each polled record becomes an outcome now, or joins its partition's model group."""
        accepted = time.time()
        for f in frames:
            f.accepted_at = accepted
            try:
                p = prepare(f, self._cfg, self._rois, f.existing)
                out = p if isinstance(p, Outcome) else p.out
                self._metrics.inc(M.FRAMES_CONSUMED, **self._labels.tags(out.line, out.camera))
                if isinstance(p, Outcome):
                    if p.dead is not None:
                        log.warning("dead-lettering %s[%d]@%d (%s): %s", f.topic, f.partition, f.offset,
                                    p.dead.stage, p.dead.reason)
                    self._outq.put_nowait(p)
                    continue
                self._dispatcher.add(f.partition, p)
            except Exception as exc:  # noqa: BLE001 - never lose a record on the loop
                log.exception("record %s[%d]@%d could not be accepted", f.topic, f.partition, f.offset)
                self._outq.put_nowait(Outcome(frame=f, line="unknown", camera="unknown",
                                              dead=dead_letter(f, f"accept failed: {exc!r}", STAGE_VALIDATE, exc)))
        self._dispatcher.flush()
        self._stats["consumed"] += len(frames)
        self._metrics.set(M.INFLIGHT_FRAMES, self._tracker.in_flight())

    async def _flush_loop(self) -> None:
        c = self._cfg.ingress
        while True:
            batch = [await self._outq.get()]
            if self._outq.qsize() < c.sink_flush_max - 1 and c.sink_flush_interval_ms > 0:
                await asyncio.sleep(c.sink_flush_interval_ms / 1000.0)
            while len(batch) < c.sink_flush_max and not self._outq.empty():
                batch.append(self._outq.get_nowait())
            report = await self._loop.run_in_executor(self._sink_exec, self._write, batch)
            M.account(self._metrics, self._labels, self._stats, report, time.time())
            self._metrics.set(M.INFLIGHT_FRAMES, self._tracker.in_flight())

    def _write(self, batch: list[Outcome]) -> FlushReport:
        """Sink worker thread: hand the batch to the checkpoint and confirm it (retried)."""
        for o in batch:
            self._checkpoint.add(o)
        return self._checkpoint.flush_until_confirmed(lambda: self._stopping)

    def stats(self) -> dict[str, Any]:
        """Counters of this replica (tests, benchmarks, ``GET {route_prefix}``)."""
        import ray

        c, rejects = self._consumer, self._checkpoint.rejects
        return {
            "pid": os.getpid(), "actor_name": ray.get_runtime_context().get_actor_name(), **self._stats,
            "inflight": self._tracker.in_flight(), "inflight_bytes": self._tracker.in_flight_bytes(),
            "oldest_inflight_s": self._tracker.oldest_age_s(), "paused": c.paused, "commits": c.commits,
            "commit_errors": c.commit_errors, "poll_errors": c.poll_errors, "skipped_unreadable": c.skipped,
            "rebalances": c.rebalances, "partitions": sorted(tp.partition for tp in self._tracker.partitions()),
            "rejects_suppressed": rejects.suppressed, "rejects_resent": rejects.resent,
            "rejects_found_delivered": rejects.found_delivered, "rejects_lookup_failures": rejects.lookup_failures,
            "stale_completions": self._tracker.stale_completions, "consumer_ready": c.ready.is_set(),
            "connect_attempts": c.connect_attempts, "connect_error": repr(c.connect_error) if c.connect_error else None,
            "topic_partitions": c.topic_partitions,
            "sinks_failing_s": self._checkpoint.failing_for_s(), "at": datetime.now(UTC).isoformat(),
            "threads": M.thread_names(),
        }

    async def __call__(self, request: Any) -> dict[str, Any]:
        return self.stats()

    def check_health(self) -> None:
        """Serve's health check: :func:`inference.health.check_ingress` on this replica's state."""
        f = self._flusher
        ended = f.done()
        check_ingress(IngressState(
            consumer=self._consumer, sinks_failing_s=self._checkpoint.failing_for_s(),
            sinks_error=self._checkpoint.last_error, sink_task_ended=ended,
            sink_task_error=f.exception() if ended and not f.cancelled() else None,
            oldest_inflight_s=self._tracker.oldest_age_s(), stopping=self._stopping,
        ), self._cfg, time.monotonic())

    async def __del__(self) -> None:
        """Graceful shutdown: stop polling, let in-flight frames reach the sinks, commit, close."""
        await asyncio.to_thread(self._consumer.stop, self._cfg.ingress.revoke_drain_timeout_s + 15)
        self._stopping = True
        self._flusher.cancel()
        self._memory_task.cancel()
        await asyncio.to_thread(self._checkpoint.close)

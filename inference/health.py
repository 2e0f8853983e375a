"""What Serve's health checks decide, as pure functions of the replicas' state (unit-testable).

A red check raises :class:`Unhealthy` naming the cause; Serve marks the replica unhealthy after
three failed checks in a row (one every 10 s), replaces it and shows the deployment (and the
application) ``UNHEALTHY`` — which the "Serve application not RUNNING" alert reads.

**Ingress** (:func:`check_ingress`), in this order:

1. *Kafka not reachable at start-up*: the consumer thread creates its client lazily and retries
   with backoff (a cold start in any order: ``__init__`` never fails because the broker is not up
   yet, so Serve never gives up with ``DEPLOY_FAILED``). Green for ``ingress.connect_grace_s``, then
   red naming the last error: the line cannot decide without its broker, and a replica that stays
   green forever would hide that.
2. The consumer thread died, its loop stalled, or every poll failed for ``consumer_stall_s``.
3. *No partition held* for ``ingress.unassigned_unhealthy_s``, and either the frames topic has no
   partitions in the cluster's metadata (misnamed or deleted: the consumer would otherwise poll
   nothing for ever, with no lag series for an alert to read), or it has at least
   ``ingress.num_replicas`` partitions (every replica of the group must own one once the group is
   stable: range and round-robin assignment give each member a partition while members ≤
   partitions, so holding none for longer than a rebalance can take is a stalled join). A replica
   that holds none because the group has more replicas than the topic has partitions
   (``num_replicas`` > partitions) is a legitimate idle standby and stays green — the consumer
   logs it. A rebalance legitimately leaves a member without partitions for at most the rebalance
   timeout (``max_poll_interval_ms``), so the config requires the bound to exceed it. The
   expected group size is the configured ``num_replicas`` rather than the group's live member
   count: reading that needs an admin client (another connection that can fail), and members
   beyond ``num_replicas`` exist only during a rolling update, which ends within the bound.
4. The sink task ended; the sinks failed for ``sink.unhealthy_after_s``; the oldest in-flight
   frame is older than ``ingress.max_inflight_age_s``.

**Model** (:func:`check_model`): red after ``unhealthy_after_failures`` consecutive bad batches;
when the oldest queued request has waited longer than the queue-age bound; or when requests wait
and no batch has finished for the stall bound (a hung predict: a stuck executor, a CUDA deadlock —
until now only *finished* bad batches were counted, so a predict that never returns kept the
replica green). Both bounds default to twice ``deadline.default_bound_ms`` (see
:meth:`~inference.config.ServeAppConfig.model_queue_age_bound_s`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from inference.config import ServeAppConfig


class Unhealthy(RuntimeError):
    """A red health check; the message names the cause."""


class ConsumerState(Protocol):
    """What :func:`check_ingress` reads of the consumer thread (:class:`~inference.consumer.FrameConsumer`)."""

    error: BaseException | None
    last_loop: float
    last_poll_ok: float
    #: monotonic time the thread started trying to reach Kafka; None before it started
    connecting_since: float | None
    #: the last error creating the Kafka client (None once connected)
    connect_error: BaseException | None
    #: monotonic time since which this replica holds no partition (None while it holds some)
    unassigned_since: float | None
    #: partitions of the frames topic in the last metadata the thread read (None: not read yet)
    topic_partitions: int | None

    def is_connected(self) -> bool: ...

    def is_alive(self) -> bool: ...


@dataclass
class IngressState:
    """Everything the ingress health check reads, gathered by ``LineIngress.check_health``."""

    consumer: ConsumerState
    #: seconds the sinks have failed (``Checkpoint.failing_for_s``) and their last error
    sinks_failing_s: float
    sinks_error: BaseException | None
    #: the sink task: None while it runs, else why it ended (an exception, or None when cancelled)
    sink_task_ended: bool
    sink_task_error: BaseException | None
    #: age of the oldest in-flight frame (``OffsetTracker.oldest_age_s``)
    oldest_inflight_s: float
    stopping: bool = False


def check_ingress(s: IngressState, cfg: ServeAppConfig, now: float) -> None:
    """Raise :class:`Unhealthy` naming the first cause found (module docstring); ``now`` is
    ``time.monotonic()``."""
    c, ing = s.consumer, cfg.ingress
    if c.error is not None:
        raise Unhealthy(f"consumer thread failed: {c.error!r}") from c.error
    if not c.is_connected():
        since = c.connecting_since
        if since is not None and now - since > ing.connect_grace_s:
            raise Unhealthy(
                f"Kafka not reachable for {now - since:.0f}s (bound ingress.connect_grace_s "
                f"{ing.connect_grace_s:.0f}s): consumer client not created: {c.connect_error!r}"
            ) from c.connect_error
        return  # start-up grace: nothing below applies before the consumer is connected
    if not s.stopping and not c.is_alive():
        raise Unhealthy("consumer thread exited")
    if now - c.last_loop > ing.consumer_stall_s:
        raise Unhealthy(f"consumer loop stalled for {now - c.last_loop:.0f}s")
    if now - c.last_poll_ok > ing.consumer_stall_s:
        raise Unhealthy(f"every poll failed for {now - c.last_poll_ok:.0f}s")
    _check_assignment(c, cfg, now)
    if s.sink_task_ended:
        raise Unhealthy(f"sink task ended: {s.sink_task_error!r}") from s.sink_task_error
    if s.sinks_failing_s > cfg.sink.unhealthy_after_s:
        raise Unhealthy(f"sinks failing for {s.sinks_failing_s:.0f}s: {s.sinks_error!r}")
    if s.oldest_inflight_s > ing.max_inflight_age_s:
        raise Unhealthy(f"oldest in-flight frame polled {s.oldest_inflight_s:.0f}s ago "
                        f"(bound ingress.max_inflight_age_s {ing.max_inflight_age_s}s)")


def _check_assignment(c: ConsumerState, cfg: ServeAppConfig, now: float) -> None:
    ing, topic = cfg.ingress, cfg.topics.frames
    if c.unassigned_since is None or now - c.unassigned_since <= ing.unassigned_unhealthy_s:
        return
    held_none = f"no partition of {topic!r} held for {now - c.unassigned_since:.0f}s " \
                f"(bound ingress.unassigned_unhealthy_s {ing.unassigned_unhealthy_s:.0f}s)"
    parts = c.topic_partitions
    if parts == 0:
        raise Unhealthy(f"{held_none}: the topic does not exist or has no partitions "
                        "(misnamed or deleted frames topic?)")
    if parts is not None and parts >= ing.num_replicas:
        raise Unhealthy(f"{held_none} though the topic has {parts} partition(s) for "
                        f"ingress.num_replicas {ing.num_replicas}: a stalled group join")
    # parts is None (metadata not read yet) or fewer partitions than replicas: a legitimate standby


@dataclass
class ModelState:
    """What the model health check reads, gathered by ``GRDNetModel.check_health``."""

    bad_batches: int
    last_problem: str
    #: requests queued and not yet in a batch, and the monotonic time the oldest joined
    queued: int
    oldest_queued_at: float | None
    #: frames of the batch running now (0: none)
    running: int
    #: monotonic time of the last progress: a batch finished, or work arrived at an idle replica
    last_progress: float


def check_model(s: ModelState, cfg: ServeAppConfig, now: float) -> None:
    """Raise :class:`Unhealthy` naming the first cause found (module docstring)."""
    if s.bad_batches >= cfg.model.unhealthy_after_failures:
        raise Unhealthy(f"{s.bad_batches} consecutive bad batches (bound model.unhealthy_after_failures "
                        f"{cfg.model.unhealthy_after_failures}); last: {s.last_problem}")
    stall = cfg.model_stall_bound_s()
    waiting = s.queued + s.running
    if waiting and now - s.last_progress > stall:
        raise Unhealthy(
            f"no batch finished for {now - s.last_progress:.1f}s while {waiting} request(s) wait "
            f"({s.running} in the running batch; bound model.max_batch_stall_s {stall:g}s): a hung predict?")
    bound = cfg.model_queue_age_bound_s()
    if s.oldest_queued_at is not None and now - s.oldest_queued_at > bound:
        raise Unhealthy(f"oldest queued request waited {now - s.oldest_queued_at:.1f}s "
                        f"(bound model.max_queue_age_s {bound:g}s; {s.queued} queued)")

"""The frame publisher: an idempotent Kafka producer whose every send result is checked.

:class:`FramePublisher` wraps one ``KafkaProducer`` (``enable_idempotence=True``, ``acks="all"``,
``max_request_size=MAX_MESSAGE_BYTES``) shared by all cameras of a process (it is thread-safe).
Each send gets a callback and an errback: an acknowledged frame is counted, a failed one
(oversize, timeout, broker error; raised at ``send()`` or reported later by the future) is logged
with its frame id, counted in ``grdline_ingest_publish_failures_total`` and kept in
:attr:`FramePublisher.failures` (the most recent :data:`MAX_FAILURES_KEPT`), and handed to the
optional ``on_failure`` callback. Nothing is dropped silently. :meth:`FramePublisher.close`
flushes before closing; :meth:`FramePublisher.raise_for_failures` turns failures into an error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ingest import metrics
from ingest.contract import FrameMeta, encode_frame
from ingest.errors import PublishError
from ingest.settings import KafkaSettings
from ingest.topics import FRAMES, MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

MAX_FAILURES_KEPT = 1000
#: kafka-python 3 has no ``buffer_memory`` bound: the publisher blocks ``send`` while more than
#: this many encoded bytes are unacknowledged, so a fast source cannot exhaust memory.
MAX_PENDING_BYTES = 256 * 1024 * 1024

#: Producer defaults for image-sized records: big batches (a 256x256 JPEG is ~20-60 KB, far over
#: kafka-python's 16 KB default batch), a short linger, no compression (images are compressed).
PRODUCER_DEFAULTS: dict[str, Any] = {
    "linger_ms": 5,
    "batch_size": 1024 * 1024,
    "max_in_flight_requests_per_connection": 5,
    "delivery_timeout_ms": 120_000,
}


@dataclass(frozen=True)
class PublishFailure:
    frame_id: str
    camera_id: str
    topic: str
    reason: str


@dataclass(frozen=True)
class Delivery:
    """Where an acknowledged frame landed."""

    frame_id: str
    partition: int
    offset: int
    timestamp_ms: int


class FramePublisher:
    """Publishes frames keyed by camera id and checks every send's outcome."""

    def __init__(
        self,
        settings: KafkaSettings | None = None,
        topic: str = FRAMES,
        *,
        on_failure: Callable[[PublishFailure], None] | None = None,
        on_delivery: Callable[[Delivery], None] | None = None,
        producer_kwargs: dict[str, Any] | None = None,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        camera_partitions: dict[str, int] | None = None,
    ) -> None:
        self.settings = settings or KafkaSettings()
        self.topic = topic
        self.on_failure = on_failure
        self.on_delivery = on_delivery
        self.producer_kwargs = {**PRODUCER_DEFAULTS, **(producer_kwargs or {})}
        self.failures: deque[PublishFailure] = deque(maxlen=MAX_FAILURES_KEPT)
        self.sent = 0
        self.acked = 0
        self.failed = 0
        self.max_pending_bytes = max_pending_bytes
        #: Explicit camera -> partition map (else Kafka's murmur2 of the key, which can put several
        #: cameras on one partition: cam0, cam1, cam3 all hash to partition 3 of 4).
        self.camera_partitions = dict(camera_partitions or {})
        self._pending_bytes = 0
        self._lock = threading.Condition()
        self._recover_lock = threading.Lock()
        self._producer = None
        self.max_record_bytes = MAX_MESSAGE_BYTES
        self.recoveries = 0

    # ------------------------------------------------------------------------------- life cycle
    def start(self) -> FramePublisher:
        """Look up the topic's size limit, create the producer and fetch the topic's metadata."""
        if self._producer is None:
            self.max_record_bytes = self._topic_limit()
            self._producer = self._new_producer()
            self._warm_up()
        return self

    def _new_producer(self):
        from kafka import KafkaProducer

        kwargs = dict(self.producer_kwargs)
        # A multi-record batch must fit the topic's limit too, or the broker refuses the batch.
        kwargs["batch_size"] = min(kwargs.get("batch_size", 16384), self.max_record_bytes)
        return KafkaProducer(
            **self.settings.client_kwargs(),
            enable_idempotence=True,
            acks="all",
            max_request_size=MAX_MESSAGE_BYTES,
            **kwargs,
        )

    def _topic_limit(self) -> int:
        """``min(MAX_MESSAGE_BYTES, the topic's max.message.bytes)``.

        Oversize records are refused here, at send, rather than by the broker: kafka-python 3's
        idempotent producer treats a broker-side MessageSizeTooLarge as fatal and aborts every
        other pending frame as well (each is reported and the producer is replaced, but those
        frames do not reach the topic).
        """
        from kafka import KafkaAdminClient
        from kafka.admin import ConfigResource, ConfigResourceType
        from kafka.errors import KafkaError

        from ingest.admin import _topic_configs

        try:
            admin = KafkaAdminClient(**self.settings.client_kwargs())
        except KafkaError as exc:
            raise PublishError("-", self.topic, f"cannot reach the broker: {exc}") from exc
        try:
            configs = _topic_configs(admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, self.topic)]))
        except KafkaError as exc:
            log.warning("cannot read %s's max.message.bytes (%s); assuming %d", self.topic, exc, MAX_MESSAGE_BYTES)
            configs = {}
        finally:
            admin.close()
        value = configs.get(self.topic, {}).get("max.message.bytes")
        return min(MAX_MESSAGE_BYTES, int(value)) if value else MAX_MESSAGE_BYTES

    def spread(self, cameras: list[str]) -> dict[str, int]:
        """Map ``cameras`` round-robin onto the topic's partitions (camera *i* -> partition
        *i* mod P). Stable as long as the camera list and partition count are: each camera keeps
        one partition, so its order is kept."""
        if self._producer is None:
            raise PublishError("-", self.topic, "publisher not started")
        parts = sorted(self._producer.partitions_for(self.topic))
        self.camera_partitions = {cam: parts[i % len(parts)] for i, cam in enumerate(cameras)}
        return self.camera_partitions

    def _warm_up(self) -> None:
        """Fetch the topic's metadata now, so that the first frame is not delayed by it (that
        would distort the timing of a paced camera or a replay) and a missing topic fails here."""
        from kafka.errors import KafkaError

        try:
            parts = self._producer.partitions_for(self.topic)
        except KafkaError as exc:
            self._producer.close(timeout=5)
            self._producer = None
            raise PublishError("-", self.topic, f"topic metadata unavailable: {exc}") from exc
        log.debug("publisher ready: %s has %d partitions", self.topic, len(parts or ()))

    def _recover_if_fatal(self) -> None:
        """Replace a producer that kafka-python has put in a fatal state.

        After a fatal error (e.g. a non-retriable broker error on an idempotent producer) every
        later send would fail; its pending frames are failed (and so reported) by kafka-python, and a
        fresh producer (new producer id) carries on. Uses kafka-python's transaction manager, the
        only place that state is visible.
        """
        tm = getattr(self._producer, "_transaction_manager", None)
        if tm is None or not tm.has_fatal_error():
            return
        with self._recover_lock:
            if self._producer is None or self._producer._transaction_manager is not tm:
                return  # another camera thread replaced it already
            log.error("producer for %s hit a fatal error (%s); replacing it", self.topic, tm.last_error)
            old, self._producer = self._producer, self._new_producer()
            self.recoveries += 1
        old.close(timeout=5)

    def __enter__(self) -> FramePublisher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self, timeout: float | None = None) -> None:
        """Block until every frame sent so far is acknowledged or failed."""
        if self._producer is not None:
            self._producer.flush(timeout=timeout)

    def close(self, timeout: float = 60.0) -> None:
        """Flush, then close the producer."""
        if self._producer is None:
            return
        try:
            self.flush(timeout)
        finally:
            self._producer.close(timeout=timeout)
            self._producer = None

    @property
    def pending(self) -> int:
        with self._lock:
            return self.sent - self.acked - self.failed

    def raise_for_failures(self) -> None:
        """Raise :class:`PublishError` for the first failure, if any frame failed."""
        if self.failures:
            first = self.failures[0]
            raise PublishError(first.frame_id, first.topic, f"{first.reason} (and {self.failed - 1} more)")

    # ------------------------------------------------------------------------------------- send
    def publish(self, image: np.ndarray, meta: FrameMeta, *, jpeg_quality: int = 90) -> None:
        """Encode and send one frame (key = camera id)."""
        value, headers = encode_frame(image, meta, jpeg_quality=jpeg_quality)
        self.send(value, headers, key=meta.camera_id.encode(), frame_id=meta.frame_id,
                  line_id=meta.line_id, camera_id=meta.camera_id,
                  partition=self.camera_partitions.get(meta.camera_id))

    def send(
        self,
        value: bytes,
        headers: Sequence[tuple[str, bytes]],
        *,
        key: bytes | None,
        frame_id: str,
        line_id: str,
        camera_id: str,
        topic: str | None = None,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None:
        """Send an already encoded record; its outcome arrives in the callbacks, never lost.

        ``partition`` None: by key (murmur2, as every Kafka client), else that partition.
        """
        from kafka.errors import KafkaError, MessageSizeTooLargeError

        if self._producer is None:
            raise PublishError(frame_id, topic or self.topic, "publisher not started")
        self._recover_if_fatal()
        topic = topic or self.topic
        labels = (line_id, camera_id)
        with self._lock:
            while self._pending_bytes > self.max_pending_bytes and self._producer is not None:
                self._lock.wait(0.1)  # woken by the callbacks as acknowledgements arrive
            self.sent += 1
            self._pending_bytes += len(value)
        started = time.perf_counter()
        size = _record_size(key, value, headers)
        if topic == self.topic and size > self.max_record_bytes:
            exc = MessageSizeTooLargeError(
                f"record of {size} B exceeds {topic}'s limit of {self.max_record_bytes} B")
            self._failed(frame_id, camera_id, topic, labels, len(value), exc)
            return
        try:
            future = self._producer.send(
                topic, value=value, key=key, headers=list(headers), timestamp_ms=timestamp_ms,
                partition=partition,
            )
        except (KafkaError, ValueError) as exc:  # oversize (checked at send), buffer full past
            # max_block_ms, a partition the topic does not have (ValueError)...
            self._failed(frame_id, camera_id, topic, labels, len(value), exc)
            return
        future.add_callback(self._acked, frame_id, len(value), labels, started)
        future.add_errback(self._failed, frame_id, camera_id, topic, labels, len(value))

    # ---------------------------------------------------------------------------------- outcome
    def _acked(self, frame_id: str, nbytes: int, labels: tuple[str, str], started: float, md) -> None:
        with self._lock:
            self.acked += 1
            self._pending_bytes -= nbytes
            self._lock.notify_all()
        metrics.FRAMES_PUBLISHED.labels(*labels).inc()
        metrics.BYTES_PUBLISHED.labels(*labels).inc(nbytes)
        metrics.PUBLISH_LATENCY.labels(*labels).observe(time.perf_counter() - started)
        if self.on_delivery is not None:
            self.on_delivery(Delivery(frame_id, md.partition, md.offset, md.timestamp))

    def _failed(self, frame_id: str, camera_id: str, topic: str, labels: tuple[str, str],
                nbytes: int, exc: BaseException) -> None:
        failure = PublishFailure(frame_id, camera_id, topic, f"{type(exc).__name__}: {exc}")
        with self._lock:
            self.failed += 1
            self._pending_bytes -= nbytes
            self._lock.notify_all()
            self.failures.append(failure)
        metrics.PUBLISH_FAILURES.labels(*labels).inc()
        log.error("frame %s (camera %s) not published to %s: %s", frame_id, camera_id, topic, failure.reason)
        if self.on_failure is not None:
            self.on_failure(failure)


def _record_size(key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]]) -> int:
    """Upper estimate of a record's size in a v2 batch of its own (61 B batch header, <=21 B of
    record varints, each header's key and value plus 10 B of varints)."""
    return 61 + 21 + len(key or b"") + len(value) + sum(len(k) + len(v) + 10 for k, v in headers)

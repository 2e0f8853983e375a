"""A Kafka producer created on first use, so a replica starts while the broker is down.

kafka-python's ``KafkaProducer`` bootstraps in its constructor and raises after
``bootstrap_timeout_ms`` when no broker answers. Built in ``LineIngress.__init__`` that failed the
replica's construction; after ``min(20, 3 × replicas)`` failed constructions Serve marks the app
``DEPLOY_FAILED`` and stops retrying — a line started before its broker never ran. A
:class:`LazyProducer` creates the producer on the first ``send`` (or :meth:`LazyProducer.warm`,
which the ingress runs on its sink thread right after start-up): when that fails, ``send`` raises,
the sink keeps the record and the checkpoint retries the flush with backoff (its failure time is
what the health check reads), and the next ``send`` tries to create the producer again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class ProducerUnavailable(RuntimeError):
    """The producer could not be created (the broker is unreachable); the cause is chained."""


class LazyProducer:
    """``send`` / ``flush`` / ``close`` of the producer ``factory()`` returns, created on first use."""

    def __init__(self, factory: Callable[[], Any], name: str = "producer"):
        self._factory = factory
        self._name = name
        self._producer: Any = None
        self._closed = False
        self._lock = threading.Lock()
        self.attempts = 0
        self.last_error: BaseException | None = None

    @property
    def created(self) -> bool:
        return self._producer is not None

    def _get(self) -> Any:
        with self._lock:
            if self._closed:
                raise ProducerUnavailable(f"{self._name} is closed")
            if self._producer is None:
                self.attempts += 1
                try:
                    self._producer = self._factory()
                except Exception as exc:
                    self.last_error = exc
                    log.warning("%s not created (attempt %d; Kafka unreachable?): %r; tried again at the next send",
                                self._name, self.attempts, exc)
                    raise ProducerUnavailable(f"{self._name} not created: {exc!r}") from exc
                self.last_error = None
                log.info("%s created (attempt %d)", self._name, self.attempts)
            return self._producer

    def warm(self) -> bool:
        """Create the producer now if it can be; False (logged) when the broker is unreachable."""
        try:
            self._get()
            return True
        except ProducerUnavailable:
            return False

    def send(self, *args: Any, **kwargs: Any) -> Any:
        return self._get().send(*args, **kwargs)

    def flush(self, timeout: float | None = None) -> None:
        if self._producer is not None:
            self._producer.flush(timeout=timeout)

    def close(self, timeout: float | None = None) -> None:
        with self._lock:
            self._closed = True
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=timeout)

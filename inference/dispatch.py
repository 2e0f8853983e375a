"""Asking the model: prepared frames grouped per partition, one ``GRDNetModel.infer`` handle call
per group, every frame ending as an :class:`~inference.decision.Outcome` (on the event loop).

The frames of one poll go to the model right away, one handle call per partition and up to
``request_group`` frames per call: a call carries what Kafka already delivered together (Serve's
per-call cost is paid once for them), it never waits for more — batches are formed only in the
model replica (:mod:`inference.model_deployment`). A group is waited for until the tightest ``wait_until`` among its
frames (deadline - margin, or the default bound for frames without a deadline); frames with and
without a deadline are never in one call, so neither makes the other late. A failed call is retried
(``model_attempts``) within that time; then every frame goes to :func:`~inference.decision.decide`,
which applies the fail-safe policy to failures and silence. Nothing here raises past a frame.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from inference.config import ServeAppConfig
from inference.contracts import utcnow
from inference.decision import Outcome, Prepared, decide, wait_budget_s
from inference.messages import ModelFailure, ModelReply

log = logging.getLogger(__name__)


class ModelDispatcher:
    """See the module docstring. ``emit`` receives every finished outcome."""

    def __init__(self, cfg: ServeAppConfig, model: Any, loop: asyncio.AbstractEventLoop,
                 emit: Callable[[Outcome], None]):
        self._cfg, self._model, self._loop, self._emit = cfg, model, loop, emit
        self._grouping: dict[int, list[Prepared]] = {}
        self._tasks: set[asyncio.Task] = set()
        #: (threshold, model version) of the last verdict: fills results the model gave none on
        self.last: tuple[float | None, str] = (None, "")

    def add(self, partition: int, p: Prepared) -> None:
        group = self._grouping.setdefault(partition, [])
        group.append(p)
        if len(group) >= self._cfg.ingress.request_group:
            self._dispatch(partition)

    def flush(self) -> None:
        """After a poll's frames were added: every partial group leaves now."""
        for partition in list(self._grouping):
            self._dispatch(partition)

    def _dispatch(self, partition: int) -> None:
        group = self._grouping.pop(partition, None)
        if not group:
            return
        now = utcnow()
        rest = []
        for p in group:  # already past its deadline or bound: decided without asking the model
            if wait_budget_s([p], now) <= 0:
                self._emit(decide(p, None, now, time.time(), self._cfg, self.last))
            else:
                rest.append(p)
        for kind in ([p for p in rest if p.deadline is not None], [p for p in rest if p.deadline is None]):
            if kind:
                task = self._loop.create_task(self._ask(kind))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _ask(self, frames: list[Prepared]) -> None:
        sent = time.time()
        try:
            replies = await self._call_model(frames)
        except Exception as exc:  # noqa: BLE001 - an unexpected error still decides every frame (fail-safe)
            log.exception("model call for %d frame(s) failed unexpectedly", len(frames))
            replies = [ModelFailure(p.request.frame_id, repr(exc), type(exc).__name__) for p in frames]
        decided = utcnow()
        if replies is not None and len(replies) != len(frames):  # which reply is whose is unknown
            log.error("model returned %d replies for %d frames: all of them fail-safe", len(replies), len(frames))
            replies = [ModelFailure(p.request.frame_id, f"model returned {len(replies)} replies for {len(frames)} "
                                    "frames", "ReplyCountMismatch") for p in frames]
        for i, p in enumerate(frames):
            reply = None if replies is None else replies[i]
            if isinstance(reply, ModelReply):
                self.last = (reply.threshold, reply.model_version)
            self._emit(decide(p, reply, decided, sent, self._cfg, self.last))

    async def _call_model(self, frames: list[Prepared]) -> list[ModelReply | ModelFailure] | None:
        """The model's replies (same order); None when ``wait_until`` passed (retries included)."""
        reqs = [p.request for p in frames]
        attempts = self._cfg.ingress.model_attempts
        for attempt in range(1, attempts + 1):
            remaining = wait_budget_s(frames, utcnow())
            if remaining <= 0:
                return None
            resp = self._model.infer.remote(reqs)
            try:
                return await asyncio.wait_for(resp, remaining)
            except TimeoutError:
                resp.cancel()
                return None
            except Exception as exc:  # noqa: BLE001 - replica died/restarting: retried, then fail-safe
                if attempt == attempts:
                    return [ModelFailure(r.frame_id, f"model call failed {attempt}x: {exc!r}", type(exc).__name__)
                            for r in reqs]
                log.warning("model call for %d frame(s) failed (%r); retry %d", len(reqs), exc, attempt)
                await asyncio.sleep(0.2 * attempt)
        return None

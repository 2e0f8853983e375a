"""The model dispatcher with a fake handle: groups, bounds, retries, every frame decided."""

from __future__ import annotations

import asyncio
import time

from inference.config import ServeAppConfig
from inference.consumer import PolledFrame
from inference.decision import prepare
from inference.dispatch import ModelDispatcher
from inference.messages import ModelReply
from inference.roi import RoiProvider

from .test_decision import polled


class Response:
    def __init__(self, coro):
        self._task = asyncio.ensure_future(coro)

    def __await__(self):
        return self._task.__await__()

    def cancel(self):
        self._task.cancel()


class Handle:
    """``handle.infer.remote(reqs)``: ``behaviour`` per call: ``ok``, ``raise``, ``hang``."""

    def __init__(self, *behaviour: str):
        self.behaviour = list(behaviour)
        self.calls: list[list[str]] = []
        self.infer = self

    def remote(self, reqs):
        self.calls.append([r.frame_id for r in reqs])
        how = self.behaviour.pop(0) if self.behaviour else "ok"

        async def run():
            if how == "raise":
                raise ConnectionError("replica died")
            if how == "hang":
                await asyncio.sleep(3600)
            return [ModelReply(score=0.1, decision=False, threshold=0.5, model_version="v1", mask_png=b"",
                               defect_area=0, batch_started=time.time()) for _ in reqs]

        return Response(run())


def run(handle: Handle, frames: list[PolledFrame], bound_ms: int = 300, **ingress) -> list:
    cfg = ServeAppConfig(standin={}, default_recipe={"roi": "none"},
                         ingress={"request_group": 2, **ingress},
                         deadline={"default_bound_ms": bound_ms})
    rois = RoiProvider(cfg)
    out: list = []

    async def go():
        d = ModelDispatcher(cfg, handle, asyncio.get_running_loop(), out.append)
        for f in frames:
            d.add(f.partition, prepare(f, cfg, rois))
        d.flush()
        t_end = time.monotonic() + 5
        while len(out) < len(frames) and time.monotonic() < t_end:
            await asyncio.sleep(0.01)

    asyncio.run(go())
    return out


def test_a_poll_leaves_at_once_in_calls_of_at_most_request_group_frames():
    h = Handle()
    out = run(h, [polled(offset=o) for o in range(5)])
    assert sorted(len(c) for c in h.calls) == [1, 2, 2]
    assert len(out) == 5 and all(o.inspected and o.result.failsafe is None for o in out)


def test_failed_calls_are_retried_then_fail_safe():
    h = Handle("raise", "ok")
    out = run(h, [polled(offset=1)], bound_ms=10_000, request_group=1)
    assert len(h.calls) == 2 and out[0].inspected
    h = Handle("raise", "raise", "raise")
    out = run(h, [polled(offset=1)], bound_ms=10_000, request_group=1)
    r = out[0].result
    assert r.failsafe == "model_failure" and r.decision and out[0].dead is None


def test_a_hanging_model_ends_in_a_timeout_failsafe_within_the_bound():
    t0 = time.monotonic()
    out = run(Handle("hang"), [polled(offset=1)], request_group=1)
    assert out and out[0].result.failsafe == "timeout" and out[0].result.decision
    assert time.monotonic() - t0 < 4  # the 300 ms bound, with margin for a busy machine


def test_frames_with_and_without_a_deadline_are_never_in_one_call():
    h = Handle()
    run(h, [polled(offset=1, deadline_ms=60_000), polled(offset=2)])
    assert sorted(h.calls) == [["f1"], ["f2"]]




class ShortHandle(Handle):
    """Answers a call of n frames with n - 1 replies (a broken model deployment)."""

    def remote(self, reqs):
        self.calls.append([r.frame_id for r in reqs])

        async def run():
            return [ModelReply(score=0.1, decision=False, threshold=0.5, model_version="v1", mask_png=b"",
                               defect_area=0, batch_started=time.time()) for _ in reqs[1:]]

        return Response(run())


def test_a_reply_list_of_the_wrong_length_decides_every_frame_fail_safe():
    out = run(ShortHandle(), [polled(offset=o) for o in range(2)], bound_ms=10_000)
    assert len(out) == 2  # none left stuck
    assert all(o.result.failsafe == "model_failure" and o.result.decision for o in out)

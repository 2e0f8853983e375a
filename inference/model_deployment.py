"""``GRDNetModel``: the batched model deployment.

* Loads the artefact once per replica, in ``__init__`` (``Predictor.load``; or the no-compute
  :class:`~inference.standin.StandInPredictor`), on the device chosen by config (``auto``: CUDA
  when the replica was given a GPU, else CPU), then warms up with full batches.
* :meth:`GRDNetModel.infer` takes a group of :class:`ModelRequest` (the frames of one poll of one
  partition) and queues them; one batcher task forms every batch, once, when the model is free:
  all queued frames up to ``max_batch_size``, a partial batch waiting at most
  ``batch_wait_timeout_s`` after its oldest frame arrived (dynamic batching, as Triton's
  ``max_queue_delay``). ``max_batch_size``, ``batch_wait_timeout_s`` and the thresholds are the
  deployment's ``user_config`` (:class:`~inference.config.ModelTuning`); :meth:`reconfigure`
  applies them live. This is the only batching layer: Serve's ``@serve.batch`` forms its next batch
  while the previous one still runs and freezes it at whatever arrived within its timeout, which
  under a steady stream means many small batches queued behind a busy model —
  ``benchmarks/bench_pipeline.py`` measured both (docs/evaluations/pipeline.md) and this one won.
* The predict call and the mask post-processing (PNG, connected regions) run on a one-thread
  executor, never on the replica's event loop, so requests keep being accepted while a batch runs.
  ``max_ongoing_requests`` (config) admits a running batch plus ``queue_batches`` more.
* One bad item never fails a batch: when a batch raises, its items are retried one by one and only
  the failing ones come back as :class:`ModelFailure`; the ingress decides them by the fail-safe
  policy (a reject, marked ``failsafe=model_failure``), never as a pass.
* A non-finite score (NaN/inf: an fp16 overflow, corrupt weights) is a :class:`ModelFailure`, never
  a verdict. :meth:`GRDNetModel.check_health` (:func:`inference.health.check_model`) fails after
  ``unhealthy_after_failures`` consecutive batches that raised or scored non-finite, when the
  oldest queued request is older than the queue-age bound, or when requests wait and no batch
  finished for the stall bound (a hung predict), so Serve replaces the replica.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from ray import serve

from inference.config import ModelTuning, ServeAppConfig
from inference.contracts import encode_mask, mask_regions
from inference.health import ModelState, check_model
from inference.logs import configure_replica_logging
from inference.messages import ModelFailure, ModelReply, ModelRequest
from inference.metrics import BATCH_SIZE, MODEL_LATENCY, MODEL_METRICS, Recorders, thread_names

__all__ = ["GRDNetModel", "ModelFailure", "ModelReply", "ModelRequest", "load_predictor", "resolve_device"]

log = logging.getLogger(__name__)

def load_predictor(cfg: ServeAppConfig, device: str) -> Any:
    """The stand-in, or the artefact's Predictor on ``device`` (resolved) with the serving config's
    ``model.backend`` / ``model.precision`` (None = the artefact's); a combination the device
    cannot run fails here, naming the field, before anything is loaded."""
    if cfg.standin is not None:
        from inference.standin import StandInPredictor

        return StandInPredictor(cfg.standin)
    from model.predictor import Predictor

    cfg.model.check_runtime(device)
    p = Predictor.load(cfg.model_dir, device=device, backend=cfg.model.backend,
                       precision=cfg.model.precision)
    log.info("model runtime: backend %s, precision %s on %s", p.backend, p.precision, device)
    return p


def resolve_device(requested: str) -> str:
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@serve.deployment(name="GRDNetModel")
class GRDNetModel:
    """Batched GRD-Net (or stand-in) inference; see the module docstring."""

    def __init__(self, cfg: ServeAppConfig):
        configure_replica_logging(cfg.log_level)
        self._cfg = cfg
        if cfg.model.torch_threads is not None:
            import torch

            torch.set_num_threads(cfg.model.torch_threads)
        self.device = resolve_device(cfg.model.device)
        self._predictor = load_predictor(cfg, self.device)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grdnet-predict")
        self._metrics = Recorders(MODEL_METRICS)
        self._batches = 0
        self._frames = 0
        self._tuning = ModelTuning()
        self._warm = False
        #: (request, its future, monotonic time it joined) in arrival order
        self._queue: deque[tuple[ModelRequest, asyncio.Future, float]] = deque()
        self._wake: asyncio.Event | None = None
        self._runner: asyncio.Task | None = None
        self._bad_batches = 0  # consecutive batches that failed or scored non-finite
        self._full_batch_s: float | None = None  # one full batch's predict, timed at warm-up
        self._last_problem = ""
        self._running = 0  # frames of the batch on the predict thread now
        #: monotonic time of the last progress: a batch finished, or work reached an idle replica
        self._last_progress = time.monotonic()
        self._apply(cfg.tuning)
        log.info("GRDNetModel loaded: version %s on %s", self._predictor.version, self.device)

    def _apply(self, tuning: ModelTuning) -> None:
        self._predictor.set_thresholds(image=tuning.threshold, pixel=tuning.pixel_threshold)
        if tuning.fault is not None and not hasattr(self._predictor, "fault"):
            raise ValueError("tuning.fault is for the stand-in model only")
        if hasattr(self._predictor, "fault"):
            self._predictor.fault = tuning.fault
        self._tuning = tuning

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live change of batching and thresholds (Serve ``user_config``); no restart.

        Serve calls it right after ``__init__`` too, so the first call warms up with the real
        batch size before the replica is marked ready."""
        self._apply(ModelTuning.model_validate(user_config))
        if not self._warm:
            self._warm_up(self._cfg.model.warmup_batches)
            self._warm = True
        log.info("GRDNetModel configured: %s", self._tuning.model_dump())

    def _warm_up(self, n: int) -> None:
        p = self._predictor
        shape = (p.image_size, p.image_size) if p.channels == 1 else (p.image_size, p.image_size, 3)
        imgs = [np.zeros(shape, np.uint8) for _ in range(self._tuning.max_batch_size)]
        fault = getattr(p, "fault", None)
        if fault is not None:
            p.fault = None  # an injected fault applies to traffic, not to the warm-up
        try:
            for _ in range(n):
                t0 = time.perf_counter()
                p.predict(imgs)
                self._full_batch_s = time.perf_counter() - t0
        finally:
            if fault is not None:
                p.fault = fault
        self._check_deadlines()

    def _check_deadlines(self) -> None:
        """Warn when a configured deadline is tighter than what a full batch allows here: a frame
        that arrives as a full batch starts waits for it and then for its own, so capture →
        decision reaches about 2 × one full batch (+ the way there and back) under load."""
        if self._full_batch_s is None:
            return
        need_ms = 2 * self._full_batch_s * 1000 + 50
        d = self._cfg.deadline
        tight = {name: r.deadline_ms for name, r in self._cfg.recipes.items() if r.deadline_ms is not None}
        if d.default_deadline_ms is not None:
            tight["(default)"] = d.default_deadline_ms
        short = {k: v for k, v in tight.items() if v < need_ms}
        if short:
            log.warning(
                "a full batch of %d takes %.0f ms on %s: under load capture→decision reaches ~%.0f ms, "
                "beyond the deadline of recipe(s) %s — late frames are decided by late_policy (%s); "
                "lower tuning.max_batch_size, add replicas, or raise the deadline",
                self._tuning.max_batch_size, self._full_batch_s * 1000, self.device, need_ms,
                ", ".join(f"{k} {v} ms" for k, v in sorted(short.items())), d.late_policy,
            )

    def _predict_batch(self, reqs: list[ModelRequest]) -> list[ModelReply | ModelFailure]:
        started = time.time()
        t0 = time.perf_counter()
        try:
            out = self._predictor.predict([r.image for r in reqs], [r.roi for r in reqs])
        except Exception as exc:  # noqa: BLE001 - isolate the bad item(s), see module doc
            if len(reqs) == 1:
                return [ModelFailure(reqs[0].frame_id, f"{type(exc).__name__}: {exc}", type(exc).__name__)]
            log.warning("batch of %d failed (%r); retrying its items one by one", len(reqs), exc)
            return [self._predict_batch([r])[0] for r in reqs]
        model_s = time.perf_counter() - t0
        threshold = float(self._predictor.threshold)
        version = str(self._predictor.version)
        replies: list[ModelReply | ModelFailure] = []
        for i in range(len(reqs)):
            score = float(out.scores[i])
            if not np.isfinite(score):
                replies.append(ModelFailure(reqs[i].frame_id, f"non-finite score {score}", "NonFiniteScore"))
                continue
            mask = out.masks[i]
            area, boxes = mask_regions(mask)
            replies.append(
                ModelReply(
                    score=score,
                    decision=bool(out.decisions[i]),
                    threshold=threshold,
                    model_version=version,
                    mask_png=encode_mask(mask),  # b"" when no pixel: nothing to encode or store
                    defect_area=area,
                    boxes=boxes,
                    batch_size=len(reqs),
                    batch_started=started,
                    model_s=model_s,
                )
            )
        done = time.time()
        for r in replies:
            if isinstance(r, ModelReply):
                r.batch_done = done
        return replies

    async def infer(self, group: list[ModelRequest]) -> list[ModelReply | ModelFailure]:
        """One call = a group of frames (one poll's frames of one partition); replies in order.

        The frames join the replica's queue; the batcher (:meth:`_run`) answers them."""
        loop = asyncio.get_running_loop()
        if self._runner is None or self._runner.done():
            self._wake = asyncio.Event()
            self._runner = loop.create_task(self._run())
        now = time.monotonic()
        if not self._queue and not self._running:
            self._last_progress = now  # idle until now: the stall clock starts with this work
        futures = [loop.create_future() for _ in group]
        self._queue.extend((r, f, now) for r, f in zip(group, futures, strict=True))
        self._wake.set()
        return list(await asyncio.gather(*futures))

    async def _next_batch(self) -> list[tuple[ModelRequest, asyncio.Future]]:
        """Called when the model is free: up to ``max_batch_size`` queued frames. A partial batch
        waits for more until ``batch_wait_timeout_s`` after its oldest frame joined the queue — so
        frames that queued behind a running batch leave at once, and a lone frame at low load
        waits at most that long."""
        while not self._queue:
            self._wake.clear()
            await self._wake.wait()
        t = self._tuning
        leave_at = self._queue[0][2] + t.batch_wait_timeout_s
        while len(self._queue) < t.max_batch_size and (left := leave_at - time.monotonic()) > 0:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except TimeoutError:
                break
        take = min(len(self._queue), t.max_batch_size)
        items = [self._queue.popleft() for _ in range(take)]
        return [(r, f) for r, f, _ in items if not f.cancelled()]

    async def _run(self) -> None:
        """The batcher: one batch at a time on the predict thread, the next formed when it is free."""
        loop = asyncio.get_running_loop()
        while True:
            live = await self._next_batch()
            if not live:
                continue
            t0 = time.perf_counter()
            self._running = len(live)
            try:
                replies = await loop.run_in_executor(self._executor, self._predict_batch, [r for r, _ in live])
            except Exception as exc:  # noqa: BLE001 - a bug, not a bad item: fail these callers, keep serving
                log.exception("model batcher failed on a batch of %d", len(live))
                self._bad_batches += 1
                self._last_problem = repr(exc)
                for _, f in live:
                    if not f.done():
                        f.set_exception(exc)
                continue
            finally:
                self._running = 0
                self._last_progress = time.monotonic()
            self._metrics.observe(MODEL_LATENCY, time.perf_counter() - t0)
            self._metrics.observe(BATCH_SIZE, len(live))
            self._batches += 1
            self._frames += len(live)
            failures = [r for r in replies if isinstance(r, ModelFailure)]
            if failures and len(failures) == len(replies):
                self._bad_batches += 1
                self._last_problem = failures[0].reason
            elif any(r.error_type == "NonFiniteScore" for r in failures):
                self._bad_batches += 1
                self._last_problem = "non-finite scores"
            else:
                self._bad_batches = 0
            for (_, f), reply in zip(live, replies, strict=True):
                if not f.done():
                    f.set_result(reply)

    def check_health(self) -> None:
        """Serve's health check: :func:`inference.health.check_model` on this replica's state."""
        q = self._queue
        check_model(ModelState(
            bad_batches=self._bad_batches, last_problem=self._last_problem, queued=len(q),
            oldest_queued_at=q[0][2] if q else None, running=self._running, last_progress=self._last_progress,
        ), self._cfg, time.monotonic())

    def stats(self) -> dict[str, Any]:
        """Counters of this replica (tests and benchmarks)."""
        import os

        return {
            "pid": os.getpid(),
            "batches": self._batches,
            "frames": self._frames,
            "device": self.device,
            "tuning": self._tuning.model_dump(),
            "threshold": float(self._predictor.threshold),
            "version": str(self._predictor.version),
            "bad_batches": self._bad_batches,
            "full_batch_ms": None if self._full_batch_s is None else self._full_batch_s * 1000,
            "threads": thread_names(),
        }

    async def __call__(self, request: Any) -> dict[str, Any]:
        return self.stats()

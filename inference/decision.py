"""The decision core: pure functions from a polled record to a model request or an outcome, and
from the model's reply (or failure, or silence) to a :class:`~inference.contracts.Result`.

No I/O, no Ray, no Kafka: the ingress feeds these functions and the checkpoint
(:mod:`inference.checkpoint`) writes what they return. Guarantees written here:

* :func:`prepare` never raises: any error while reading, validating or preparing one record makes
  that record a dead letter with its reason (stage ``decode`` for the contract, ``validate`` for
  what the line cannot apply: unknown recipe/ROI, a deadline out of range, anything unexpected),
  and, when its line and item can be read, a REJECT result with ``failsafe="invalid_input"``
  (:func:`unjudged`): a part the line could not judge is never passed.
* A frame that already has a result (redelivery after a restart or rebalance) is not decided again:
  its stored result is re-offered to the reject sink only (the claim makes that a no-op when its
  command went out), never rewritten and never turned into a late reject because it is old.
* Whether a frame may actuate is decided by the topic it was consumed from, never by a header
  (:func:`is_replay`): a frame consumed from the replay topic (``topics.replay``) is decided into
  the replay namespace, has no deadline and never actuates, whatever its headers say; a frame
  consumed from any other topic (the live frames topic) is live — its deadline applies, its result
  goes to the live namespace, and it actuates — even when it carries a ``replay_of`` header. That
  header is written by whoever writes the frame, so on the live topic it is ignored: it can neither
  turn actuation off (suppress a reject) nor exempt a frame from its deadline or age bound.
* :func:`decide` turns a model failure, a non-finite score, a reply of any other type or no answer
  into a fail-safe result
  (``failsafe`` = ``model_failure`` / ``timeout`` / ``late``) decided by the configured policy —
  never a silent pass, never a dead letter.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from inference.config import ServeAppConfig
from inference.contracts import Result, Timings, results_prefix, utcnow
from inference.deadline import budget_s, deadline_at, late_decision
from inference.messages import ModelFailure, ModelReply, ModelRequest
from inference.sinks import DeadLetterIn
from ingest.dlq import STAGE_DECODE, STAGE_INFERENCE, STAGE_VALIDATE

if TYPE_CHECKING:
    from inference.consumer import PolledFrame
    from inference.roi import RoiProvider

_TAG_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,63}$")


@dataclass
class Outcome:
    """A frame ready for the checkpoint: a result to write (``write_result``) and maybe actuate, or
    a dead letter. ``prefix`` is where the result goes (live or replay namespace)."""

    frame: PolledFrame
    line: str
    camera: str
    prefix: str = ""
    result: Result | None = None
    dead: DeadLetterIn | None = None
    write_result: bool = True
    actuate: bool = True
    inspected: bool = False


@dataclass
class Prepared:
    """A valid frame waiting for the model: its request, ROI id, decision deadline (None = none)
    and ``wait_until``: when waiting for the model stops (deadline - margin, or the default bound)."""

    out: Outcome
    request: ModelRequest
    roi_id: str
    deadline: datetime | None
    wait_until: datetime


def header_id(headers: list[tuple[str, bytes]], name: str) -> str | None:
    """A header's value when it is a plain id (the contract's id pattern), else None."""
    for k, v in headers:
        if k == name:
            text = v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v)
            return text if _TAG_OK.match(text) else None
    return None


def header_tag(headers: list[tuple[str, bytes]], name: str) -> str:
    """A header's value as a label/log tag, ``unknown`` when absent or not a plain id."""
    return header_id(headers, name) or "unknown"


def unjudged(out: Outcome, reason: str, stage: str, error: BaseException | None) -> Outcome:
    """A record the line cannot judge: always a dead letter (the record, with ``reason``), and
    when its line and item can be read — from the decoded metadata or, failing that, the raw
    headers — also a REJECT result with ``failsafe="invalid_input"``: no verdict, no pass. Only a
    record without a readable line or item is a dead letter alone."""
    f = out.frame
    out.dead = dead_letter(f, reason, stage, error)
    meta = f.meta
    if meta is not None:
        line, item, frame_id = meta.line_id, meta.item_id, meta.frame_id
        recipe, captured = meta.recipe, meta.captured_at
    else:
        line, item = header_id(f.headers, "line_id"), header_id(f.headers, "item_id")
        frame_id = header_id(f.headers, "frame_id") or f"{f.topic}:{f.partition}:{f.offset}"
        recipe, captured = header_tag(f.headers, "recipe"), datetime.fromtimestamp(f.received_at, UTC)
    if line is None or item is None:
        return out
    try:
        out.result = Result(
            frame_id=frame_id, item_id=item, line_id=line, camera_id=out.camera, recipe=recipe,
            captured_at=captured, decided_at=utcnow(), score=None, decision=True, late_policy="reject",
            failsafe="invalid_input", roi_id="", topic=f.topic, partition=f.partition, offset=f.offset,
        )
    except Exception as exc:  # noqa: BLE001 - cannot happen for plain ids; the dead letter stays
        out.dead = dead_letter(f, f"{reason}; and no reject could be built: {exc!r}", stage, error)
    return out


def dead_letter(f: PolledFrame, reason: str, stage: str, error: BaseException | None) -> DeadLetterIn:
    return DeadLetterIn(
        key=f.key, value=f.value, headers=f.headers, reason=reason, stage=stage,
        topic=f.topic, partition=f.partition, offset=f.offset, error=error,
    )


def is_replay(topic: str, cfg: ServeAppConfig) -> bool:
    """Whether a record consumed from ``topic`` is a replay: the topic decides, never a header."""
    return topic == cfg.topics.replay


def prefix_for(topic: str, cfg: ServeAppConfig) -> str:
    """Where the result of a frame consumed from ``topic`` goes: live prefix or replay namespace."""
    return results_prefix(cfg.redis.key_prefix, cfg.replay.namespace if is_replay(topic, cfg) else None)


def _outcome(f: PolledFrame, cfg: ServeAppConfig) -> Outcome:
    meta = f.meta
    if meta is not None:
        line, camera = meta.line_id, meta.camera_id
    else:
        line, camera = header_tag(f.headers, "line_id"), header_tag(f.headers, "camera_id")
    return Outcome(frame=f, line=line, camera=camera, prefix=prefix_for(f.topic, cfg),
                   actuate=not is_replay(f.topic, cfg))


def prepare(
    f: PolledFrame, cfg: ServeAppConfig, rois: RoiProvider, existing: Result | None = None
) -> Prepared | Outcome:
    """A :class:`Prepared` request for the model, or a finished :class:`Outcome` (a dead letter, or
    a frame that already has a result). Never raises."""
    try:
        out = _outcome(f, cfg)
    except Exception as exc:  # noqa: BLE001 - a record must end as a result or a dead letter
        out = Outcome(frame=f, line="unknown", camera="unknown")
        out.dead = dead_letter(f, f"unreadable record: {exc!r}", STAGE_VALIDATE, exc)
        return out
    try:
        if f.error is not None:
            return unjudged(out, str(f.error) or repr(f.error), STAGE_DECODE, f.error)
        meta = f.meta
        if existing is not None:
            out.result, out.write_result = existing, False
            return out
        roi, roi_id = rois.get(meta.recipe, meta.height, meta.width)
        recipe = cfg.recipe(meta.recipe)
        deadline = None
        if not is_replay(f.topic, cfg):
            deadline = deadline_at(meta.captured_at, meta.deadline_ms, recipe.deadline_ms, cfg.deadline.default_deadline_ms)
        received = datetime.fromtimestamp(f.received_at, UTC)
        if deadline is not None:
            wait_until = deadline - timedelta(milliseconds=cfg.deadline.sink_margin_ms)
        else:
            wait_until = received + timedelta(milliseconds=cfg.deadline.default_bound_ms)
        return Prepared(out, ModelRequest(meta.frame_id, f.image, roi), roi_id, deadline, wait_until)
    except Exception as exc:  # noqa: BLE001 - RoiError, DeadlineError, anything else: rejected
        return unjudged(out, f"{type(exc).__name__}: {exc}", STAGE_VALIDATE, exc)


def wait_budget_s(frames: list[Prepared], now: datetime) -> float:
    """Seconds the model may take for ``frames`` (the tightest among them); <= 0: already due."""
    return min(budget_s(p.wait_until, now, 0.0) for p in frames)


def decide(
    p: Prepared,
    reply: ModelReply | ModelFailure | None,
    decided: datetime,
    sent_at: float,
    cfg: ServeAppConfig,
    last: tuple[float | None, str] = (None, ""),
) -> Outcome:
    """The frame's :class:`Outcome` given the model's ``reply`` (None = no answer in time).

    ``last`` (threshold, model version) fills a result the model gave no verdict on."""
    out, f = p.out, p.out.frame
    meta = f.meta
    try:
        failsafe = None
        if isinstance(reply, ModelFailure):
            failsafe = "model_failure"
        elif isinstance(reply, ModelReply) and not math.isfinite(reply.score):
            failsafe, reply = "model_failure", None
        elif reply is None:
            failsafe = "late" if p.deadline is not None else "timeout"
        elif not isinstance(reply, ModelReply):  # anything else is no verdict: never a pass
            failsafe, reply = "model_failure", None
        elif p.deadline is not None and decided > p.deadline:
            failsafe = "late"
        verdict = reply if isinstance(reply, ModelReply) and failsafe is None else None
        decision = bool(verdict.decision) if verdict is not None else False
        policy = None
        if failsafe is not None:
            chosen = cfg.deadline.late_policy if failsafe == "late" else cfg.deadline.failsafe_policy
            ld = late_decision(chosen)
            decision, policy = ld.decision, ld.policy
        answered = reply if isinstance(reply, ModelReply) else None
        timings = stage_timings(f, answered, sent_at, decided)
        out.inspected = verdict is not None
        out.result = Result(
            frame_id=meta.frame_id, item_id=meta.item_id, line_id=meta.line_id, camera_id=meta.camera_id,
            recipe=meta.recipe, captured_at=meta.captured_at, decided_at=decided, deadline_at=p.deadline,
            score=answered.score if answered else None, decision=decision, late=failsafe == "late",
            late_policy=policy, failsafe=failsafe,
            replay_of=(meta.replay_of or meta.frame_id) if is_replay(f.topic, cfg) else None,
            threshold=answered.threshold if answered else last[0],
            model_version=answered.model_version if answered else last[1],
            roi_id=p.roi_id, defect_area=answered.defect_area if verdict else 0,
            boxes=answered.boxes if verdict else [], timings_ms=timings,
            mask_png=answered.mask_png if verdict else b"",
            topic=f.topic, partition=f.partition, offset=f.offset,
        )
    except Exception as exc:  # noqa: BLE001 - a bug building the result: the record is not lost
        out.result = None
        return unjudged(out, f"result could not be built: {type(exc).__name__}: {exc}", STAGE_INFERENCE, exc)
    return out


def stage_timings(f: PolledFrame, answered: ModelReply | None, sent_at: float, decided: datetime) -> Timings:
    """The frame's :class:`~inference.contracts.Timings` from the stamps along its way (ms)."""
    captured = f.meta.captured_at.timestamp()

    def ms(a: float, b: float) -> float:
        return max(0.0, (b - a) * 1000) if a and b else 0.0

    kafka_ts = f.record_ts if f.record_ts is not None else captured
    accepted = f.accepted_at or f.received_at
    t = {
        "produce": ms(captured, kafka_ts), "kafka": ms(kafka_ts, f.received_at),
        "poll": max(0.0, ms(f.received_at, accepted) - f.decode_s * 1000), "decode": f.decode_s * 1000,
        "group": ms(accepted, sent_at),
    }
    if answered is not None:
        model_end = answered.batch_started + answered.model_s
        done = answered.batch_done or model_end
        t.update(wait=ms(sent_at, answered.batch_started), model=answered.model_s * 1000,
                 post=ms(model_end, done), reply=ms(done, decided.timestamp()))
    return Timings(**t, total=_ms_between(f.meta.captured_at, decided))


def _ms_between(a: datetime, b: datetime) -> float:
    try:
        return (b - a).total_seconds() * 1000
    except (OverflowError, ValueError):
        return math.inf


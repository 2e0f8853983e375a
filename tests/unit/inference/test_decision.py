"""The decision core without services: records → requests or outcomes, replies → results."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from inference.config import ServeAppConfig
from inference.consumer import PolledFrame
from inference.decision import Outcome, Prepared, decide, prepare, wait_budget_s
from inference.messages import ModelFailure, ModelReply
from inference.offsets import Ticket
from inference.roi import RoiProvider
from ingest.contract import FrameMeta, encode_frame

from .test_contracts import make_result

NOW = datetime.now(UTC)  # for times hours in the past only: frames default to capture 'now'


def config(**over) -> ServeAppConfig:
    base = {"standin": {}, "default_recipe": {"roi": "none"}, "redis": {"key_prefix": "p"},
            "recipes": {"broken": {"roi": "/no/such/roi.png"}}}
    base.update(over)
    return ServeAppConfig(**base)


def polled(offset: int = 7, captured_at: datetime | None = None, recipe: str = "vials", deadline_ms=None,
           replay_of=None, error: BaseException | None = None, headers=None, topic: str = "frames") -> PolledFrame:
    img = np.full((8, 8), 100, np.uint8)
    meta = FrameMeta(line_id="L1", camera_id="cam0", frame_id=f"f{offset}", item_id=f"i{offset}",
                     captured_at=captured_at or datetime.now(UTC), encoding="png", width=8, height=8, channels=1,
                     recipe=recipe, deadline_ms=deadline_ms, replay_of=replay_of)
    value, hdrs = encode_frame(img, meta)
    # meta as decoded, built directly: the core must hold even for what the contract would refuse
    m, image = (meta, img) if error is None else (None, None)
    return PolledFrame(ticket=Ticket((topic, 0), offset, 1), topic=topic, partition=0, offset=offset,
                       key=b"cam0", value=value, headers=headers if headers is not None else hdrs,
                       received_at=time.time(), decode_s=0.001, meta=m, image=image, error=error)


def reply(score: float = 0.9, decision: bool = True) -> ModelReply:
    return ModelReply(score=score, decision=decision, threshold=0.5, model_version="v1", mask_png=b"png",
                      defect_area=3, batch_started=time.time(), model_s=0.01)


@pytest.fixture
def cfg():
    return config()


@pytest.fixture
def rois(cfg):
    return RoiProvider(cfg)


def test_a_good_frame_becomes_a_request_with_a_default_bound(cfg, rois):
    p = prepare(polled(), cfg, rois)
    assert isinstance(p, Prepared)
    assert p.request.frame_id == "f7" and p.roi_id == "none" and p.deadline is None
    assert 29 < wait_budget_s([p], datetime.now(UTC)) <= 30  # deadline-less frames are bounded too
    assert p.out.prefix == "p" and p.out.actuate


def test_decode_errors_are_dead_letters_with_their_reason(cfg, rois):
    from ingest.errors import MissingHeaderError

    no_item = [("line_id", b"L1"), ("camera_id", b"cam0"), ("frame_id", b"f7")]
    out = prepare(polled(error=MissingHeaderError("item_id", "missing"), headers=no_item), cfg, rois)
    assert isinstance(out, Outcome) and out.result is None  # no readable item: a dead letter alone
    assert out.dead.stage == "decode" and "item_id" in out.dead.reason and out.dead.offset == 7


def test_an_undecodable_record_whose_line_and_item_can_be_read_is_rejected_and_dead_lettered(cfg, rois):
    from ingest.errors import SizeLimitError

    out = prepare(polled(error=SizeLimitError("width", "size out of range [32, 2048]")), cfg, rois)
    assert out.dead.stage == "decode" and "out of range" in out.dead.reason
    r = out.result
    assert r is not None and r.decision and r.failsafe == "invalid_input" and r.late_policy == "reject"
    assert (r.line_id, r.item_id, r.frame_id, r.offset) == ("L1", "i7", "f7", 7) and r.score is None
    assert out.actuate and out.write_result


@pytest.mark.parametrize("kind", ["unknown_recipe", "missing_roi", "exploding_roi"])
def test_a_frame_the_line_cannot_judge_is_a_reject_with_its_reason_and_a_dead_letter(kind):
    class Exploding:
        def get(self, *a):
            raise ZeroDivisionError("boom")

    # roi: recipe knows only the recipes it has a fixed ROI for: another one cannot be judged
    cfg = config(default_recipe={"roi": "recipe"})
    f = {"unknown_recipe": lambda: polled(recipe="no-such-recipe"),
         "missing_roi": lambda: polled(recipe="broken"),
         "exploding_roi": lambda: polled()}[kind]()
    out = prepare(f, cfg, Exploding() if kind == "exploding_roi" else RoiProvider(cfg))
    assert isinstance(out, Outcome), kind
    assert out.dead is not None and out.dead.stage == "validate"
    assert out.result is not None and out.result.decision and out.result.failsafe == "invalid_input"
    assert out.result.item_id == "i7" and out.result.line_id == "L1"


def test_a_reply_of_an_unexpected_type_is_a_failsafe_reject_never_a_pass(cfg, rois):
    p = prepare(polled(), cfg, rois)
    for odd in ({"score": 0.0, "decision": False}, "ok", 0):
        out = decide(p, odd, datetime.now(UTC), time.time(), cfg)
        assert out.result.decision and out.result.failsafe == "model_failure", odd
        assert not out.inspected


def test_anything_unexpected_while_preparing_is_a_dead_letter_not_an_exception(cfg):
    class Exploding:
        def get(self, *a):
            raise ZeroDivisionError("boom")

    out = prepare(polled(), cfg, Exploding())
    assert isinstance(out, Outcome) and out.dead.stage == "validate" and "boom" in out.dead.reason
    assert out.result.failsafe == "invalid_input" and out.result.decision
    bad_roi = prepare(polled(recipe="broken"), cfg, RoiProvider(cfg))
    assert bad_roi.dead.stage == "validate" and "broken" in bad_roi.dead.reason
    assert bad_roi.result.failsafe == "invalid_input" and bad_roi.result.decision


def test_labels_of_an_undecodable_record_are_bounded_tags(cfg, rois):
    out = prepare(polled(error=ValueError("x"), headers=[("line_id", b"L1"), ("camera_id", b"\xff\xfe bad")]),
                  cfg, rois)
    assert (out.line, out.camera) == ("L1", "unknown")


@pytest.mark.parametrize("captured_at", [datetime(9999, 12, 31, 23, 59, 59, 900000, tzinfo=UTC),
                                         datetime(1, 1, 1, tzinfo=UTC)])
def test_deadline_at_the_edge_of_the_calendar_never_raises(cfg, rois, captured_at):
    f = polled(captured_at=captured_at, deadline_ms=3_600_000)
    out = prepare(f, cfg, rois)
    if captured_at.year == 9999:  # deadline unrepresentable: invalid, deterministically
        assert isinstance(out, Outcome) and out.dead.stage == "validate" and "out of range" in out.dead.reason
    else:  # long past: late without asking the model
        assert isinstance(out, Prepared) and wait_budget_s([out], datetime.now(UTC)) <= 0
        r = decide(out, None, datetime.now(UTC), time.time(), cfg).result
        assert r.late and r.decision and r.failsafe == "late"


def test_a_frame_that_already_has_a_result_is_not_decided_again(cfg, rois):
    old = make_result(frame_id="f7", decision=True, late=False)
    f = polled(captured_at=NOW - timedelta(hours=3), deadline_ms=100)  # would be late now
    out = prepare(f, cfg, rois, existing=old)
    assert isinstance(out, Outcome) and out.result is old
    assert not out.write_result and out.actuate  # its reject is re-offered (the claim dedupes)


def test_frames_from_the_replay_topic_go_to_their_namespace_ignore_deadlines_and_never_actuate(cfg, rois):
    f = polled(captured_at=NOW - timedelta(hours=2), deadline_ms=100, replay_of="orig1", topic="frames.replay")
    p = prepare(f, cfg, rois)
    assert isinstance(p, Prepared) and p.deadline is None  # not turned into a late reject
    assert p.out.prefix == "p:replay" and not p.out.actuate
    o = decide(p, reply(), datetime.now(UTC), time.time(), cfg)
    assert o.result.replay_of == "orig1" and not o.result.late and o.result.decision and not o.actuate
    # the switch that let replays actuate is gone: a config asking for it fails at start-up
    with pytest.raises(ValueError, match="actuate"):
        config(replay={"actuate": True})


def test_the_topic_decides_a_replay_not_the_header(cfg, rois):
    # no replay_of header, consumed from the replay topic: still a replay, still never actuates
    p = prepare(polled(topic="frames.replay"), cfg, rois)
    assert p.out.prefix == "p:replay" and not p.out.actuate and p.deadline is None
    r = decide(p, reply(0.9, True), datetime.now(UTC), time.time(), cfg).result
    assert r.replay_of == "f7"  # marked as a replay of itself: its results say where it came from
    # a renamed replay topic is what the line reads as the replay topic
    renamed = config(topics={"replay": "L1.replays"})
    assert not prepare(polled(topic="L1.replays"), renamed, rois).out.actuate
    assert prepare(polled(topic="frames.replay"), renamed, rois).out.actuate


@pytest.mark.parametrize("decision", [True, False])
def test_a_live_frame_with_a_replay_of_header_is_a_live_frame(cfg, rois, decision):
    """The header is the writer's word: on the live topic it neither turns actuation off nor
    moves the result to the replay namespace nor drops the deadline."""
    f = polled(deadline_ms=60_000, replay_of="forged")
    p = prepare(f, cfg, rois)
    assert isinstance(p, Prepared) and p.out.actuate and p.out.prefix == "p"
    assert p.deadline is not None  # its deadline applies like any live frame's
    o = decide(p, reply(0.9 if decision else 0.1, decision), datetime.now(UTC), time.time(), cfg)
    assert o.actuate and o.result.decision is decision and o.result.replay_of is None and o.inspected


def test_a_live_frame_with_a_replay_of_header_keeps_its_deadline_and_goes_late(cfg, rois):
    f = polled(captured_at=NOW - timedelta(hours=2), deadline_ms=100, replay_of="forged")
    p = prepare(f, cfg, rois)
    assert isinstance(p, Prepared) and p.out.actuate and wait_budget_s([p], datetime.now(UTC)) <= 0
    o = decide(p, None, datetime.now(UTC), time.time(), cfg)
    assert o.actuate and o.result.late and o.result.decision and o.result.failsafe == "late"


def test_a_model_verdict_becomes_the_result(cfg, rois):
    p = prepare(polled(deadline_ms=60_000), cfg, rois)
    o = decide(p, reply(0.9, True), datetime.now(UTC), time.time(), cfg)
    r = o.result
    assert o.inspected and r.decision and r.score == pytest.approx(0.9) and r.failsafe is None
    assert r.threshold == 0.5 and r.model_version == "v1" and r.mask_png == b"png" and not r.late


@pytest.mark.parametrize("bad", [ModelFailure("f7", "CUDA error", "RuntimeError"), reply(math.nan, False),
                                 reply(math.inf, False)])
def test_model_failure_or_non_finite_score_is_a_failsafe_reject_never_a_pass(cfg, rois, bad):
    p = prepare(polled(), cfg, rois)
    o = decide(p, bad, datetime.now(UTC), time.time(), cfg, last=(0.4, "v0"))
    r = o.result
    assert o.dead is None and not o.inspected
    assert r.decision is True and r.failsafe == "model_failure" and r.late_policy == "reject"
    assert r.score is None and r.threshold == 0.4 and r.model_version == "v0"


def test_no_answer_within_the_bound_is_a_timeout_or_late(cfg, rois):
    untimed = prepare(polled(offset=1), cfg, rois)
    timed = prepare(polled(offset=2, deadline_ms=50), cfg, rois)
    now = datetime.now(UTC)
    assert decide(untimed, None, now, time.time(), cfg).result.failsafe == "timeout"
    r = decide(timed, None, now, time.time(), cfg).result
    assert r.failsafe == "late" and r.late


def test_failsafe_and_late_policies_are_separate(rois):
    c = config(deadline={"late_policy": "pass", "failsafe_policy": "reject"})
    p = prepare(polled(deadline_ms=50), c, rois)
    assert decide(p, None, datetime.now(UTC), time.time(), c).result.decision is False  # late: pass
    q = prepare(polled(), c, rois)
    assert decide(q, ModelFailure("f7", "x", "E"), datetime.now(UTC), time.time(), c).result.decision is True


def test_a_verdict_after_the_deadline_is_late(cfg, rois):
    p = prepare(polled(deadline_ms=10), cfg, rois)
    r = decide(p, reply(0.1, False), datetime.now(UTC) + timedelta(seconds=1), time.time(), cfg).result
    assert r.late and r.decision and r.failsafe == "late"


def test_stage_timings_follow_the_stamps_and_sum_to_the_total(cfg, rois):
    t0 = time.time() - 1.0
    f = polled(captured_at=datetime.fromtimestamp(t0, UTC))
    f.record_ts, f.received_at, f.decode_s, f.accepted_at = t0 + 0.010, t0 + 0.030, 0.002, t0 + 0.035
    p = prepare(f, cfg, rois)
    sent = t0 + 0.040
    r = ModelReply(score=0.9, decision=True, threshold=0.5, model_version="v1", mask_png=b"png", defect_area=3,
                   batch_started=t0 + 0.060, model_s=0.100, batch_done=t0 + 0.170)
    t = decide(p, r, datetime.fromtimestamp(t0 + 0.180, UTC), sent, cfg).result.timings_ms
    expected = {"produce": 10, "kafka": 20, "poll": 3, "decode": 2, "group": 5, "wait": 20, "model": 100,
                "post": 10, "reply": 10, "total": 180}
    assert {k: round(v, 3) for k, v in t.model_dump().items()} == pytest.approx(expected, abs=0.01)
    stages = sum(v for k, v in t.model_dump().items() if k != "total")
    assert stages == pytest.approx(t.total, abs=0.01)


def test_a_frame_without_an_answer_has_no_model_stages(cfg, rois):
    f = polled()
    p = prepare(f, cfg, rois)
    t = decide(p, None, datetime.now(UTC), time.time(), cfg).result.timings_ms
    assert t.wait == t.model == t.post == t.reply == 0.0 and t.total >= 0.0

"""Result / RejectCommand: Redis and Kafka round trips, masks as PNG, defect regions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pydantic import ValidationError

from inference.contracts import (
    SCHEMA_VERSION,
    RejectCommand,
    Result,
    Timings,
    mask_regions,
    mask_to_png,
    png_to_mask,
    reject_claim_key,
    result_key,
    stream_key,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def make_result(**kw) -> Result:
    mask = np.zeros((16, 20), bool)
    mask[2:5, 3:7] = True
    area, boxes = mask_regions(mask)
    base = dict(
        frame_id="f1", item_id="i1", line_id="L1", camera_id="cam0", recipe="vials",
        captured_at=T0, decided_at=T0 + timedelta(milliseconds=30),
        deadline_at=T0 + timedelta(milliseconds=100), score=0.73, decision=True,
        threshold=0.5, model_version="v1", roi_id="recipe:vials", defect_area=area, boxes=boxes,
        timings_ms=Timings(produce=0.5, kafka=1.0, decode=0.2, wait=3.0, model=12.0, post=0.4, total=30.0),
        mask_png=mask_to_png(mask), topic="frames", partition=2, offset=41,
    )
    base.update(kw)
    return Result(**base)


def test_keys_follow_the_interface():
    assert result_key("p", "f") == "p:result:f"
    assert stream_key("p", "L1") == "p:stream:L1"
    assert reject_claim_key("p", "L1", "i") == "p:rejected:L1:i"


def test_result_redis_round_trip_including_mask():
    r = make_result()
    flat = r.to_redis()
    assert flat["decision"] == "1" and flat["late"] == "0"
    assert isinstance(flat["mask_png"], bytes) and flat["mask_png"].startswith(b"\x89PNG")
    stored = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in flat.items()}
    back = Result.from_redis(stored)
    assert back == r
    assert back.schema_version == SCHEMA_VERSION


def test_late_result_without_score_round_trips():
    r = make_result(score=None, decision=True, late=True, late_policy="reject", threshold=None,
                    model_version="", mask_png=b"", boxes=[], defect_area=0)
    flat = r.to_redis()
    assert flat["score"] == "" and flat["late_policy"] == "reject"
    assert Result.from_redis(flat) == r


def test_stream_entry_has_no_mask():
    assert "mask_png" not in make_result().to_redis(with_mask=False)


def test_result_forbids_unknown_fields():
    with pytest.raises(ValidationError):
        make_result(colour="red")


def test_mask_png_round_trip_and_regions():
    mask = np.zeros((32, 32), bool)
    mask[1:3, 1:3] = True  # area 4
    mask[10:20, 5:8] = True  # area 30
    back = png_to_mask(mask_to_png(mask))
    assert back.dtype == bool and np.array_equal(back, mask)
    area, boxes = mask_regions(mask)
    assert area == 34
    assert [(b.x, b.y, b.w, b.h, b.area) for b in boxes] == [(5, 10, 3, 10, 30), (1, 1, 2, 2, 4)]
    assert mask_regions(np.zeros((4, 4), bool)) == (0, [])


def test_reject_command_from_result_and_kafka_round_trip():
    r = make_result()
    cmd = RejectCommand.from_result(r)
    assert cmd.reason == "defect" and cmd.item_id == "i1" and cmd.frame_id == "f1"
    key, value = cmd.to_kafka()
    assert key == b"i1"
    assert RejectCommand.from_kafka(value) == cmd
    assert RejectCommand.from_result(make_result(late=True, score=None)).reason == "late"

"""Drill 6: a flood of malformed records mixed with good frames. Every malformed record ends in the
dead-letter topic with the right reason (100 %); every one whose line and item can be read is also
rejected (reason ``invalid_input``: no verdict, no pass); the line never stops, good frames are
unaffected.

Kinds: capture times out of range (year 1 with an offset, year 9999 with a deadline, an hour in
the future, 1970), a header key that is not UTF-8 (kafka-python raises inside poll()), missing and
duplicate headers, no headers, oversize (declared dimensions, a header value, a value within a few
hundred bytes of the topic limit whose dead letter is larger than a frame may be), wrong codec
(unknown encoding, PNG bytes declared as JPEG), unknown recipe, wrong schema version, no value.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

from ingest.dlq import parse_dead_letter
from ingest.topics import DLQ_MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES

from .conftest import (
    assert_line_promise,
    line_config,
    read_all,
    read_results,
    report,
    running,
    wait_all_decided,
    workload,
)


class RawKey(str):
    """A header key whose wire bytes are not UTF-8: kafka-python writes ``key.encode("utf-8")``."""

    def __new__(cls, raw: bytes) -> RawKey:
        obj = super().__new__(cls, raw.decode("latin-1"))
        obj.raw = raw
        return obj

    def encode(self, *args, **kwargs) -> bytes:  # noqa: ARG002
        return self.raw


def _set(headers, name, value):
    return [(k, value if k == name else v) for k, v in headers]


def _drop(headers, *names):
    return [(k, v) for k, v in headers if k not in names]


#: Malformed kinds whose item cannot be read: a dead letter alone (every other kind is also rejected).
UNREADABLE_ITEM = frozenset({"missing-item", "no-headers"})


def malformed(good_records) -> dict[str, tuple[tuple, str | None, str]]:
    """kind -> ((key, value, headers), expected field or None, text the reason must contain)."""
    tag = uuid.uuid4().hex[:6]
    out = {}

    def base(i: int, kind: str):  # an item of its own: its reject is told apart from the good items'
        k, v, h = good_records[i % len(good_records)]
        return k, v, _set(_set(h, "frame_id", f"bad-{kind}-{tag}".encode()), "item_id", f"bad-{kind}-{tag}".encode())

    def add(kind, i, edit, field, text):
        k, v, h = base(i, kind)
        out[kind] = (edit(k, v, h), field, text)

    now = datetime.now(UTC)
    add("ts-year1-offset", 0, lambda k, v, h: (k, v, _set(h, "captured_at", b"0001-01-01T00:00:00+05:00")),
        "captured_at", "captured_at")
    add("ts-9999-deadline", 1, lambda k, v, h: (k, v, _set(h, "captured_at", b"9999-12-31T23:59:59.9+00:00")
                                                + [("deadline_ms", b"500")]), "captured_at", "captured_at")
    add("ts-future", 2, lambda k, v, h: (k, v, _set(h, "captured_at", (now + timedelta(hours=1)).isoformat().encode())),
        "captured_at", "ahead")
    add("ts-1970", 3, lambda k, v, h: (k, v, _set(h, "captured_at", b"1970-01-01T00:00:00+00:00")),
        "captured_at", "older")
    add("key-not-utf8", 4, lambda k, v, h: (k, v, h + [(RawKey(b"\xff\xfetrace"), b"x")]), None, "utf")
    add("missing-item", 5, lambda k, v, h: (k, v, _drop(h, "item_id")), "item_id", "item_id")
    add("duplicate-camera", 6, lambda k, v, h: (k, v, h + [("camera_id", b"cam9")]), "camera_id", "repeated")
    add("no-headers", 7, lambda k, v, h: (k, v, []), "schema_version", "schema_version")
    add("oversize-dims", 8, lambda k, v, h: (k, v, _set(h, "width", b"99999")), "width", "limit")
    add("oversize-header", 9, lambda k, v, h: (k, v, _set(h, "recipe", b"r" * 2000)), "recipe", "exceeds")
    add("wrong-codec", 10, lambda k, v, h: (k, v, _set(h, "encoding", b"webp")), "encoding", "webp")
    add("png-as-jpeg", 11, lambda k, v, h: (k, v, _set(h, "encoding", b"jpeg")), "value", "JPEG")
    add("unknown-recipe", 12, lambda k, v, h: (k, v, _set(h, "recipe", b"no-such-recipe")), None, "no-such-recipe")
    add("schema-v2", 13, lambda k, v, h: (k, v, _set(h, "schema_version", b"2")), "schema_version", "version")
    add("no-value", 14, lambda k, v, h: (k, None, h), "value", "no image")

    def near_limit(k, v, h):
        header_bytes = sum(len(a) + len(b) for a, b in h)
        big = v + b"\x00" * (MAX_MESSAGE_BYTES - header_bytes - 256 - len(v))  # a PNG with trailing junk
        return k, big, h

    add("oversize-value", 15, near_limit, "value", "")
    return out


def test_malformed_flood_is_dead_lettered_with_reasons_and_good_frames_flow(
    app_config, topic_factory, kafka_settings, redis_client, redis_prefix, serve_instance
):
    from kafka import KafkaProducer

    w = workload(cameras=3, per_camera=20, seed=6)
    bad = malformed(w.records)
    dlq = topic_factory(1, "dlq", **{"max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES)})
    cfg = line_config(app_config, w, topics={"frames": topic_factory(3, "frames"),
                                             "rejects": topic_factory(1, "rejects"), "dlq": dlq})
    # interleave: a bad record after every third good one
    sequence: list[tuple[str | None, tuple]] = []
    bad_items = list(bad.items())
    for i, rec in enumerate(w.records):
        sequence.append((None, rec))
        if i % 3 == 2 and bad_items:
            kind, (brec, _, _) = bad_items.pop(0)
            sequence.append((kind, brec))
    sequence.extend((kind, brec) for kind, (brec, _, _) in bad_items)

    producer = KafkaProducer(**kafka_settings.client_kwargs(), acks="all", linger_ms=5,
                             max_request_size=MAX_MESSAGE_BYTES)
    where: dict[tuple[int, int], str] = {}
    try:
        futures = [(kind, producer.send(cfg.topics.frames, key=k, value=v, headers=h)) for kind, (k, v, h) in sequence]
        for kind, f in futures:
            md = f.get(timeout=60)
            if kind is not None:
                where[(md.partition, md.offset)] = kind
    finally:
        producer.close()
    assert len(where) == len(bad)

    t0 = time.monotonic()
    with running(cfg):
        deployed_s = time.monotonic() - t0
        decided_s = wait_all_decided(redis_client, redis_prefix, w.ids, 120)
        records = read_all(kafka_settings, dlq, expected=len(bad), timeout_s=60, settle_s=3.0)
    letters = [parse_dead_letter(r.value, r.headers, key=r.key) for r in records]
    report("drill 6 malformed flood", good=len(w.ids), malformed=len(bad), dead_letters=len(letters),
           deploy=deployed_s, all_good_decided_after_deploy=decided_s)

    seen: dict[str, object] = {}
    for dl in letters:
        assert dl.topic == cfg.topics.frames, dl
        kind = where.get((dl.partition, dl.offset))
        assert kind is not None, f"a dead letter for a record that was not malformed: {dl.partition}@{dl.offset} {dl.reason}"
        assert kind not in seen, f"{kind} dead-lettered twice"
        seen[kind] = dl
    missing = sorted(set(bad) - set(seen))
    assert not missing, f"malformed records not in the dead-letter topic: {missing}"
    for kind, (rec, field, text) in bad.items():
        dl = seen[kind]
        if field is not None:
            assert dl.field == field, f"{kind}: field {dl.field!r}, expected {field!r} ({dl.reason})"
        assert text.lower() in dl.reason.lower(), f"{kind}: reason {dl.reason!r} does not say {text!r}"
        if kind != "key-not-utf8":
            assert dl.value == (rec[1] or b""), f"{kind}: the original bytes are not in the dead letter"
    assert seen["unknown-recipe"].stage == "validate"
    assert len(seen["oversize-value"].value) > MAX_MESSAGE_BYTES - 4096  # the near-limit frame made it
    # a malformed record whose line and item can be read is a REJECT result; the others have none
    judgeable_item = {k for k in bad if k not in UNREADABLE_ITEM}
    stored = {k.decode().rsplit(":result:", 1)[1] for k in redis_client.scan_iter(match=f"{redis_prefix}:result:bad-*")}
    assert stored == {dict(bad[k][0][2])["frame_id"].decode() for k in judgeable_item}, sorted(stored)
    for fid, r in read_results(redis_client, redis_prefix, stored).items():
        assert r.decision and r.failsafe == "invalid_input" and r.score is None, (fid, r)
    # good frames exactly as the model decides; each readable bad item rejected once
    outcome = assert_line_promise(w, redis_client, redis_prefix, kafka_settings, cfg.topics.rejects,
                                  extra_rejects=frozenset(stored))
    reasons = {c.item_id: c.reason for c in outcome.rejects if c.item_id in stored}
    assert set(reasons.values()) == {"invalid_input"}, reasons

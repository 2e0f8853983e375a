"""The real broker carries frame-sized records with headers, and a consumer group resumes exactly
at its committed offsets: nothing lost, nothing repeated beyond the uncommitted tail."""

from __future__ import annotations

import hashlib
import os
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

N_MESSAGES = 2000
PAYLOAD_BYTES = 200 * 1024
PARTITIONS = 3


def _consumer(settings, topic: str, group: str) -> KafkaConsumer:
    consumer = KafkaConsumer(
        **settings.client_kwargs(),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=16 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    consumer.subscribe([topic])
    return consumer


def _drain(consumer: KafkaConsumer, want: int, timeout_s: float = 120.0):
    """Poll until ``want`` records arrived (or fail after ``timeout_s``)."""
    records = []
    deadline = time.monotonic() + timeout_s
    while len(records) < want:
        assert time.monotonic() < deadline, f"only {len(records)}/{want} records within {timeout_s}s"
        for batch in consumer.poll(timeout_ms=500, max_records=want - len(records)).values():
            records.extend(batch)
    return records


def test_large_records_resume_at_committed_offset(kafka_settings, topic_factory):
    topic = topic_factory(partitions=PARTITIONS)
    producer = KafkaProducer(
        **kafka_settings.client_kwargs(), acks="all", enable_idempotence=True,
        max_request_size=1024 * 1024, linger_ms=5,
    )
    block = os.urandom(PAYLOAD_BYTES)
    futures = []
    for i in range(N_MESSAGES):
        value = i.to_bytes(4, "big") + block[4:]
        headers = [("seq", str(i).encode()), ("sha256", hashlib.sha256(value).hexdigest().encode())]
        futures.append(producer.send(topic, key=str(i % 7).encode(), value=value, headers=headers))
    producer.flush(timeout=120)
    for f in futures:
        f.get(timeout=30)  # every send acknowledged by the broker
    producer.close()

    group = f"{topic}-group"
    first = _consumer(kafka_settings, topic, group)
    half = _drain(first, N_MESSAGES // 2)
    # Commit all but the last 40 records seen on each partition: that tail stays uncommitted.
    by_partition: dict[int, list] = {}
    for r in half:
        by_partition.setdefault(r.partition, []).append(r)
    committed: dict[int, int] = {}
    for p, recs in by_partition.items():
        keep = recs[:-40] if len(recs) > 40 else []
        if keep:
            committed[p] = keep[-1].offset + 1
    first.commit({TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in committed.items()})
    first.close(autocommit=False)

    uncommitted_tail = {
        (r.partition, r.offset) for r in half if r.offset >= committed.get(r.partition, 0)
    }
    assert uncommitted_tail, "the test needs an uncommitted tail"

    second = _consumer(kafka_settings, topic, group)
    expected_rest = N_MESSAGES - len(half) + len(uncommitted_tail)
    rest = _drain(second, expected_rest)
    # Nothing more is waiting: the second consumer saw exactly the rest.
    assert not any(second.poll(timeout_ms=1000).values())
    second.close(autocommit=False)

    for p in range(PARTITIONS):
        first_offsets = [r.offset for r in rest if r.partition == p]
        if first_offsets:
            assert min(first_offsets) == committed.get(p, 0), f"partition {p} did not resume at its commit"

    seen_first = {(r.partition, r.offset) for r in half}
    seen_second = {(r.partition, r.offset) for r in rest}
    assert seen_first & seen_second == uncommitted_tail  # repeated: only the uncommitted tail
    seqs = {int(dict(r.headers)["seq"]) for r in half + rest}
    assert seqs == set(range(N_MESSAGES))  # nothing lost
    for r in half + rest:  # bytes and headers intact
        headers = dict(r.headers)
        assert len(r.value) == PAYLOAD_BYTES
        assert hashlib.sha256(r.value).hexdigest().encode() == headers["sha256"]
        assert int.from_bytes(r.value[:4], "big") == int(headers["seq"])

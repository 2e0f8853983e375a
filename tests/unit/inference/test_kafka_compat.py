"""A kafka-python patch that does not apply stops the replica with an error naming the versions and
the patch (:mod:`inference.kafka_compat`); the installed kafka-python is the one they were written for."""

from __future__ import annotations

import pytest

from inference import kafka_compat
from inference.kafka_compat import WRITTEN_FOR, KafkaPatchError


def test_the_installed_kafka_python_is_the_one_the_patches_were_written_for():
    assert kafka_compat.installed_version() == WRITTEN_FOR
    kafka_compat.apply_patches()  # both apply: no error
    assert kafka_compat.tolerate_non_utf8_header_keys() and kafka_compat.keep_rejoin_pending()


def test_a_source_without_the_patched_text_raises_naming_versions_and_patch():
    from kafka.record import default_records

    changed = 'def _read_msg(self):\n    return key.decode("utf-8", errors="strict")\n'
    with pytest.raises(KafkaPatchError) as err:
        kafka_compat._rewrite(default_records.DefaultRecordBatch, "_read_msg", default_records,
                              '.decode("utf-8")', '.decode("utf-8", "surrogateescape")',
                              "tolerate_non_utf8_header_keys", src=changed)
    msg = str(err.value)
    assert f"kafka-python {kafka_compat.installed_version()} is installed" in msg
    assert f"written for kafka-python {WRITTEN_FOR}" in msg
    assert "tolerate_non_utf8_header_keys" in msg and "DefaultRecordBatch._read_msg" in msg
    assert err.value.found == kafka_compat.installed_version() and err.value.expected == WRITTEN_FOR


def test_a_text_found_twice_raises_too():
    from kafka.record import default_records

    twice = 'def _read_msg(self):\n    a.decode("utf-8")\n    b.decode("utf-8")\n'
    with pytest.raises(KafkaPatchError, match="occurs 2 times"):
        kafka_compat._rewrite(default_records.DefaultRecordBatch, "_read_msg", default_records,
                              '.decode("utf-8")', '.decode("utf-8", "surrogateescape")', "p", src=twice)


def test_a_method_without_source_raises():
    from kafka.record import default_records

    with pytest.raises(KafkaPatchError, match="no source of"):
        kafka_compat._rewrite(default_records.DefaultRecordBatch, "no_such_method", default_records,
                              "x", "y", "p")


def test_a_matching_source_is_rewritten():
    from kafka.record import default_records

    src = 'def _read_msg(self, key):\n    return key.decode("utf-8")\n'
    fn = kafka_compat._rewrite(default_records.DefaultRecordBatch, "_read_msg", default_records,
                               '.decode("utf-8")', '.decode("utf-8", "surrogateescape")', "p", src=src)
    assert fn(None, b"\xffa") == "\udcffa"


def test_a_coordinator_without_request_rejoin_raises_and_is_left_alone():
    class OldCoordinator:
        def need_rejoin(self):
            return True

    before = OldCoordinator.need_rejoin
    with pytest.raises(KafkaPatchError, match="keep_rejoin_pending.*no request_rejoin"):
        kafka_compat._wrap_need_rejoin(OldCoordinator)
    assert OldCoordinator.need_rejoin is before


def test_the_ingress_consumer_constructor_raises_when_a_patch_does_not_apply(monkeypatch):
    """The error surfaces in the replica's constructor (start-up), not on the poll thread."""
    from inference.config import ServeAppConfig
    from inference.consumer import FrameConsumer
    from inference.offsets import OffsetTracker

    def broken() -> bool:
        raise KafkaPatchError("tolerate_non_utf8_header_keys", "text not found")

    monkeypatch.setattr(kafka_compat, "tolerate_non_utf8_header_keys", broken)
    with pytest.raises(KafkaPatchError, match=f"written for kafka-python {WRITTEN_FOR}"):
        FrameConsumer(ServeAppConfig(standin={}), OffsetTracker(), lambda frames: None)

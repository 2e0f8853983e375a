"""Topic creation with the Kafka admin client, from the :class:`~ingest.topics.TopicSpec` defaults.

``ensure_topics`` creates what is missing and checks what exists: an existing topic with fewer
partitions than its spec, or a smaller ``max.message.bytes``, is reported as a mismatch (never
silently accepted, never altered: changing partitions re-keys cameras, so that is an operator
decision).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from ingest.errors import IngestError
from ingest.settings import KafkaSettings
from ingest.topics import DEFAULT_TOPICS, TopicSpec

log = logging.getLogger(__name__)


@dataclass
class TopicReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)


def ensure_topics(
    settings: KafkaSettings | None = None,
    specs: Iterable[TopicSpec] = DEFAULT_TOPICS,
    *,
    timeout_ms: int = 30_000,
) -> TopicReport:
    """Create the topics of ``specs`` that do not exist; report existing ones that differ."""
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    settings = settings or KafkaSettings()
    specs = list(specs)
    report = TopicReport()
    admin = KafkaAdminClient(**settings.client_kwargs(), request_timeout_ms=timeout_ms)
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=s.configs())
            for s in specs if s.name not in existing
        ]
        for topic in new:
            try:
                admin.create_topics([topic], timeout_ms=timeout_ms)
                report.created.append(topic.name)
                log.info("created topic %s (%d partitions)", topic.name, topic.num_partitions)
            except TopicAlreadyExistsError:  # created concurrently by another process: check it below
                existing.add(topic.name)
        check = [s for s in specs if s.name in existing]
        if check:
            described = {d["name"]: d for d in admin.describe_topics([s.name for s in check])}
            resources = [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in check]
            configs = _topic_configs(admin.describe_configs(resources))
            for s in check:
                report.existing.append(s.name)
                parts = len(described.get(s.name, {}).get("partitions", []))
                if parts < s.partitions:
                    report.mismatches.append(f"{s.name}: {parts} partitions, spec wants {s.partitions}")
                mmb = configs.get(s.name, {}).get("max.message.bytes")
                if mmb is not None and int(mmb) < s.max_message_bytes:
                    report.mismatches.append(
                        f"{s.name}: max.message.bytes={mmb}, spec wants {s.max_message_bytes}"
                    )
    except KafkaError as exc:
        raise IngestError(f"topic administration on {settings.bootstrap_servers} failed: {exc}") from exc
    finally:
        admin.close()
    return report


def _topic_configs(response: dict) -> dict[str, dict[str, str]]:
    """``{topic: {config: value}}`` from kafka-python 3's DescribeConfigs result.

    The result is ``{"topic": {name: {config: {"value": ..., ...}}}}``; configs left at the
    broker default may be absent, in which case nothing is compared.
    """
    topics = response.get("topic", {}) if isinstance(response, dict) else {}
    return {name: {k: v.get("value") for k, v in entries.items()} for name, entries in topics.items()}

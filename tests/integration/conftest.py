"""Integration fixtures: the real local Kafka, Redis, Prometheus and Ray, started by the session.

The ``stack`` fixture brings the local stack up if it is not running (and takes down, at the end,
only what it started); every test gets unique Kafka topics and its own Redis key prefix.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest

from inference.settings import RAY_METRICS_PORT, RedisSettings
from inference.stack_cli import load_stack
from ingest.settings import KafkaSettings
from ingest.topics import MAX_MESSAGE_BYTES


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


_STACK_REPORT: list[str] = []


def pytest_terminal_summary(terminalreporter) -> None:
    """Say in the test log which broker (version) and services this session ran against."""
    if _STACK_REPORT:
        terminalreporter.section("local stack")
        for line in _STACK_REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Iterator[ModuleType]:
    """The local stack module, with Kafka, Redis and Prometheus answering on loopback."""
    module = load_stack()
    started = module.up()
    _STACK_REPORT.append(
        f"Apache Kafka {module.kafka_version()} (KRaft) at {KafkaSettings().bootstrap_servers}, "
        "Redis, Prometheus; "
        f"started by this session: {', '.join(started) or 'none (already up)'}"
    )
    yield module
    module.down(started)
    for name in started:  # `down` must leave no process behind
        assert module._read_pid(name) is None, f"{name} still running after stack down"


def read_topic_records(
    settings: KafkaSettings, topic: str, expected: int, timeout_s: float = 60.0,
    settle_s: float = 1.0,
) -> list:
    """Every record of ``topic`` (group-less, from the beginning), waiting until ``expected`` arrived
    or ``timeout_s`` passed; then polls ``settle_s`` more to catch any extra (duplicate) record."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        **settings.client_kwargs(), group_id=None, enable_auto_commit=False,
        max_partition_fetch_bytes=16 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
    )
    try:
        parts = consumer.partitions_for_topic(topic)
        assert parts, f"topic {topic} has no partitions"
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records = []
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=250).values():
                records.extend(batch)
        settle = time.monotonic() + settle_s
        while time.monotonic() < settle:
            for batch in consumer.poll(timeout_ms=100).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


@pytest.fixture(scope="session")
def kafka_settings(stack: ModuleType) -> KafkaSettings:
    return KafkaSettings()


def _unique(request: pytest.FixtureRequest, prefix: str) -> str:
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:40].strip("-")
    return f"{prefix}-{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def topic_factory(
    request: pytest.FixtureRequest, kafka_settings: KafkaSettings
) -> Iterator[Callable[..., str]]:
    """Create unique topics for one test: ``topic_factory(partitions=4) -> name``; deleted after."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(**kafka_settings.client_kwargs())
    created: list[str] = []

    def make(partitions: int = 1, suffix: str = "t", **configs: str) -> str:
        name = _unique(request, suffix)
        topic_configs = {"max.message.bytes": str(MAX_MESSAGE_BYTES), **configs}
        admin.create_topics([NewTopic(name, partitions, 1, topic_configs=topic_configs)])
        created.append(name)
        return name

    yield make
    admin.close()
    if created:
        delete_topics(kafka_settings, created)


def delete_topics(settings: KafkaSettings, names: list[str], timeout_s: float = 60.0) -> None:
    """Delete ``names`` with a fresh admin client, retrying retriable errors for ``timeout_s``: a
    test that restarted the broker leaves clients in reconnect backoff (``NodeNotReadyError``).
    Topics already gone are not an error; anything else, or running out of time, is raised."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    while True:
        admin = None
        try:
            admin = KafkaAdminClient(**settings.client_kwargs())
            left = sorted(set(names) & set(admin.list_topics()))
            if left:
                admin.delete_topics(left)
            return
        except KafkaError as exc:
            if not exc.retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
        finally:
            if admin is not None:
                admin.close()


@pytest.fixture(scope="session")
def redis_settings(stack: ModuleType) -> RedisSettings:
    return RedisSettings()


@pytest.fixture
def redis_prefix(request: pytest.FixtureRequest) -> str:
    return _unique(request, "test")


@pytest.fixture
def redis_client(redis_settings: RedisSettings, redis_prefix: str) -> Iterator[object]:
    """A client on the real Redis; every key under this test's prefix is deleted afterwards."""
    import redis

    client = redis.Redis(**redis_settings.client_kwargs())
    yield client
    keys = list(client.scan_iter(match=f"{redis_prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="session")
def prometheus_url(stack: ModuleType) -> str:
    from dashboards.settings import PrometheusSettings

    return PrometheusSettings().url


@pytest.fixture(scope="session")
def ray_session(stack: ModuleType) -> Iterator[None]:
    """One local Ray for the whole session (dashboard off), exporting metrics to Prometheus."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=8,  # logical slots for Serve replicas; the machine has 2 cores
            include_dashboard=False,
            _metrics_export_port=RAY_METRICS_PORT,
            configure_logging=False,
            log_to_driver=False,
        )
    yield
    from ray import serve

    serve.shutdown()
    ray.shutdown()

"""Kafka connection settings: defaults point at the local stack on loopback.

Loaded from the environment (prefix ``GRDLINE_KAFKA_``) or a YAML file through
:func:`load_settings`. Secrets are ``SecretStr`` so they never appear in a repr or a log line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, Field, IPvAnyAddress, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from ingest.topics import FRAMES_RETENTION_MS

#: Local stack ports (deploy/local). One home: the stack and every client default read these.
KAFKA_PORT = 19092
KAFKA_CONTROLLER_PORT = 19093
#: Port on which an ingest process (camera, replay) serves its own Prometheus ``/metrics``.
INGEST_METRICS_PORT = 18081


class KafkaSettings(BaseSettings):
    """Where the Kafka cluster is and how to authenticate (PLAINTEXT, SASL and/or TLS)."""

    model_config = SettingsConfigDict(env_prefix="GRDLINE_KAFKA_", extra="forbid")

    bootstrap_servers: str = f"127.0.0.1:{KAFKA_PORT}"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    client_id: str = "grdline"

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments shared by kafka-python's producer, consumer and admin client."""
        kw: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
        }
        if self.sasl_mechanism:
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_username
            kw["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            value = getattr(self, name)
            if value is not None:
                kw[name] = str(value)
        return kw


class IngestMetricsSettings(BaseSettings):
    """Where an ingest process (camera) serves its Prometheus ``/metrics`` (its port: the
    ``--metrics-port`` option, default :data:`INGEST_METRICS_PORT`). Environment prefix
    ``GRDLINE_INGEST_METRICS_``.

    ``host`` is loopback by default (the local stack's Prometheus runs beside the camera); compose
    and Kubernetes set ``GRDLINE_INGEST_METRICS_HOST=0.0.0.0`` so their Prometheus can scrape the
    camera container — else ``GrdlineCameraPublishFailing`` has nothing to read.
    """

    model_config = SettingsConfigDict(env_prefix="GRDLINE_INGEST_METRICS_", extra="forbid")

    host: IPvAnyAddress = Field(default="127.0.0.1")


class ClockSettings(BaseSettings):
    """How far a frame's ``captured_at`` (camera clock) may be from the line's clock.

    :func:`ingest.contract.decode_frame` refuses a frame outside these bounds with
    :class:`~ingest.errors.ClockSkewError` (the consumer dead-letters it with that reason); nothing
    is clamped. Environment prefix ``GRDLINE_CLOCK_``.

    * ``max_future_ms`` — a capture time later than *now* by more than this is refused. Cameras on
      NTP/PTP are within milliseconds of the line; 2 s absorbs a badly synced one while still
      catching a wrong clock before its stamp turns into nonsense latencies and deadlines.
    * ``max_age_s`` — a capture time older than this is refused: the default is the frames
      topic's retention (:data:`ingest.topics.FRAMES_RETENTION_MS`), so a frame that can really
      still be on the topic (a backlog after an outage) is decided, and a camera whose clock fell
      back to 1970 or year 1 is not. Replayed frames (``replay_of`` set) are exempt from this
      bound only: a recording is old by nature.
    """

    model_config = SettingsConfigDict(env_prefix="GRDLINE_CLOCK_", extra="forbid")

    max_future_ms: int = Field(default=2_000, ge=0)
    max_age_s: float = Field(default=FRAMES_RETENTION_MS / 1000.0, gt=0)


S = TypeVar("S", bound=BaseModel)


def load_settings(cls: type[S], path: str | Path | None = None, **overrides: Any) -> S:
    """Build settings ``cls`` from an optional YAML file, then the environment, then overrides.

    A wrong field fails here, at start-up, with pydantic's message naming the field.
    """
    data: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: settings file must hold a mapping, got {type(loaded).__name__}")
        data.update(loaded)
    data.update(overrides)
    return cls(**data)

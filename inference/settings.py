"""Redis and Ray settings for the inference service; defaults point at the local stack."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Local stack Redis port (deploy/local).
REDIS_PORT = 16379
#: Port on which the local Ray node exports every replica's metrics
#: (``ray.init(_metrics_export_port=RAY_METRICS_PORT)``); Prometheus scrapes it.
RAY_METRICS_PORT = 18080


class RedisSettings(BaseSettings):
    """Where results go. The password comes only from the environment (GRDLINE_REDIS_PASSWORD)."""

    model_config = SettingsConfigDict(env_prefix="GRDLINE_REDIS_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = REDIS_PORT
    db: int = 0
    username: str | None = None
    password: SecretStr | None = None
    ssl: bool = False
    key_prefix: str = "grdline"

    def client_kwargs(self) -> dict:
        kw = {"host": self.host, "port": self.port, "db": self.db, "ssl": self.ssl}
        if self.username:
            kw["username"] = self.username
        if self.password is not None:
            kw["password"] = self.password.get_secret_value()
        return kw

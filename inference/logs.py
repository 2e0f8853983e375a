"""Logging inside Serve replicas.

Ray sets up its own ``ray`` loggers only; records of this project's loggers (``inference.*``,
``ingest.*``, ``model.*``) would reach Python's last-resort handler, which drops everything below
WARNING — consumer joins, partition assignments and revocations would never show. Each replica
calls :func:`configure_replica_logging` once: a stderr handler on the project's loggers (Ray
writes a worker's stderr to ``/tmp/ray/session_latest/logs/worker-*.err`` and echoes it on the
driver), at the level of ``ServeAppConfig.log_level``; kafka-python stays at WARNING.
"""

from __future__ import annotations

import logging
import sys

PROJECT_LOGGERS = ("inference", "ingest", "model")
FORMAT = "%(asctime)s %(levelname)s %(name)s [%(threadName)s]: %(message)s"
_MARK = "_grdline_replica_handler"


def configure_replica_logging(level: str) -> None:
    """Idempotent: one handler per project logger, whatever the number of deployments per process."""
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not any(getattr(h, _MARK, False) for h in logger.handlers):
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(FORMAT))
            setattr(handler, _MARK, True)
            logger.addHandler(handler)
            logger.propagate = False
    logging.getLogger("kafka").setLevel(logging.WARNING)

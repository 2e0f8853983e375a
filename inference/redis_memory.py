"""Redis memory: how big the results store must be (sizing), how Redis is told (config lines), and
how its fill is seen (the ``INFO memory`` gauges behind ``GrdlineRedisMemoryHigh``).

Why: results are kept for ``sink.result_ttl_s`` (24 h), so Redis holds *rate × TTL* result hashes.
Without ``maxmemory`` a Redis grows until the kernel (or the pod's memory limit) kills it, and it then
crash-loops reloading its own AOF. With ``maxmemory`` and ``maxmemory-policy noeviction`` a full
Redis refuses writes (``OOM command not allowed``): the result sink raises, the checkpoint commits
nothing of that batch, the frames are retried and nothing is lost (tests/integration/inference/
test_redis_memory.py), and the alert says why the line stopped deciding.

The formula (deploy/README.md "Redis memory" has the worked numbers)::

    results  = frames/s × result_ttl_s × bytes per result
    streams  = lines × 2 namespaces (live, replay) × (stream_maxlen + one node of slack) × bytes per entry
    claims   = frames/s × reject share × reject_claim_ttl_s × bytes per claim
    maxmemory = (results + streams + claims + base) × headroom
    pod limit = maxmemory × (fragmentation + fork copy-on-write share) + process base

The bytes are ``used_memory`` growth per key measured on Redis 7 with this module's config (key,
value, TTL entry and dict buckets included; a little above ``MEMORY USAGE``) for simulator frames at
the line profile's 128 px, pinned by the integration test. ``headroom`` keeps the steady state
below the alert threshold (:data:`ALERT_FILL_RATIO`), so the alert means "grows past its sizing".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from inference.config import RedisSinkSettings

MIB = 1024 * 1024

# --- bytes per key (used_memory growth, Redis 7.0, listpack hashes; measured, see module doc) ------
#: A result hash of a frame without defect pixels (no mask stored). Before issue 18: 2351
#: (hashtable encoding, timings to 1e-15 ms).
RESULT_BYTES_GOOD = 1000
#: A result hash of a defective frame (1-bit PNG mask of a 128 px frame). Before: 2574.
RESULT_BYTES_DEFECT = 1100
#: One entry of a line's capped stream (the hash's fields without the mask).
STREAM_ENTRY_BYTES = 600
#: One reject claim (``frame|sent``, with its TTL).
CLAIM_BYTES = 290
#: Redis' own start-up memory and client buffers.
BASE_BYTES = 16 * MIB

#: Hashes stay listpack-encoded (one compact buffer instead of a dict of objects: ~2.2 KB → ~1 KB a
#: result) while each field is at most this long; a bigger mask only makes its own hash bigger.
HASH_MAX_LISTPACK_VALUE = 1024
#: ``GrdlineRedisMemoryHigh`` fires above this share of ``maxmemory``.
ALERT_FILL_RATIO = 0.9
#: maxmemory over the steady state: the steady state sits at 1/1.25 = 80 % (< the alert's 90 %).
HEADROOM = 1.25
#: jemalloc fragmentation (RSS / used_memory) and the share of pages an AOF rewrite's fork may
#: copy on write while the parent keeps writing (the child counts against the same cgroup).
FRAGMENTATION = 1.2
FORK_COW_SHARE = 0.3
PROCESS_BASE_BYTES = 128 * MIB


@dataclass(frozen=True)
class RedisSizing:
    """Inputs of the formula; defaults: the shipped deployment (20 frames/s on one line, the sink's
    default TTLs, rejects at the defect-rate alert's 20 %)."""

    frames_per_s: float = 20.0
    lines: int = 1
    #: share of frames that claim a reject (the ``GrdlineDefectRateHigh`` threshold: above it an
    #: alert fires anyway)
    reject_share: float = 0.2
    result_ttl_s: int = RedisSinkSettings.model_fields["result_ttl_s"].default
    stream_maxlen: int = RedisSinkSettings.model_fields["stream_maxlen"].default
    reject_claim_ttl_s: int = RedisSinkSettings.model_fields["reject_claim_ttl_s"].default
    #: every result sized as a defective one (the larger): a conservative bound
    result_bytes: int = RESULT_BYTES_DEFECT

    def results_bytes(self) -> float:
        return self.frames_per_s * self.result_ttl_s * self.result_bytes

    def streams_bytes(self) -> float:
        return self.lines * 2 * (self.stream_maxlen + 100) * STREAM_ENTRY_BYTES  # 100: stream node

    def claims_bytes(self) -> float:
        return self.frames_per_s * self.reject_share * self.reject_claim_ttl_s * CLAIM_BYTES

    def steady_bytes(self) -> float:
        return self.results_bytes() + self.streams_bytes() + self.claims_bytes() + BASE_BYTES

    def maxmemory_mb(self) -> int:
        """``maxmemory`` in MiB (Redis reads ``mb`` as MiB)."""
        return math.ceil(self.steady_bytes() * HEADROOM / MIB)

    def limit_mi(self) -> int:
        """The container memory limit in Mi, rounded up to 256 Mi."""
        need = self.maxmemory_mb() * MIB * (FRAGMENTATION + FORK_COW_SHARE) + PROCESS_BASE_BYTES
        return math.ceil(need / MIB / 256) * 256


#: What every shipped Redis (local, clustered, compose, Kubernetes) is sized for.
DEPLOY_SIZING = RedisSizing()


def memory_config(maxmemory_mb: int | None = None) -> list[str]:
    """The ``redis.conf`` lines on memory (the deploy files carry the same, tests/unit/deploy checks)."""
    mb = DEPLOY_SIZING.maxmemory_mb() if maxmemory_mb is None else maxmemory_mb
    return [f"maxmemory {mb}mb", "maxmemory-policy noeviction",
            f"hash-max-listpack-value {HASH_MAX_LISTPACK_VALUE}"]


@dataclass(frozen=True)
class RedisMemory:
    """``INFO memory``: bytes in use and the ``maxmemory`` bound (0 = none set)."""

    used: int
    maxmemory: int

    @property
    def fill(self) -> float:
        """Share of ``maxmemory`` in use; ``inf`` when no bound is set (the alert then fires too)."""
        return self.used / self.maxmemory if self.maxmemory else math.inf


def read_memory(client: Any) -> RedisMemory:
    """One ``INFO memory`` (allowed on a full Redis: it is not a write)."""
    info = client.info("memory")
    return RedisMemory(used=int(info["used_memory"]), maxmemory=int(info["maxmemory"]))


async def sample_memory(redis_factory: Any, record: Any, interval_s: float) -> None:
    """Every ``interval_s``: :func:`read_memory` (on a worker thread) → ``record(memory)``; runs until
    cancelled. A failed read is logged and retried with a fresh client: the sinks report Redis
    being down; this loop only must not stop the gauges for good."""
    import asyncio
    import logging

    log = logging.getLogger(__name__)
    client = None
    while True:
        try:
            if client is None:
                client = redis_factory()
            record(await asyncio.to_thread(read_memory, client))
        except Exception as exc:  # noqa: BLE001 - logged; the sink's own errors carry the outage
            log.warning("Redis INFO memory failed (retried in %.0fs): %r", interval_s, exc)
            client = None
        await asyncio.sleep(interval_s)

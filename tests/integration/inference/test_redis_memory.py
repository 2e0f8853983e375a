"""Redis memory against a real Redis of its own (a separate ``redis-server`` on a free loopback port,
never the shared one): what a result hash costs, and what a full Redis does to the line.

* the bytes per result that the sizing formula (:mod:`inference.redis_memory`) uses are what Redis
  really spends (``used_memory`` growth and ``MEMORY USAGE``), for good and defective simulator
  frames at the line profile's 128 px, and the stored mask decodes to the mask that was written;
* a Redis at its ``maxmemory`` (noeviction) refuses the result transaction (OOM), the checkpoint
  marks none of that batch's offsets complete and writes nothing partial, and once memory is
  freed — ``maxmemory`` raised, or the results' TTL expired — the retried flush writes every result
  that was refused: nothing is lost;
* ``GrdlineRedisMemoryHigh`` fires: a Prometheus of its own evaluates the production rule (its
  ``for:`` shortened) on the gauges that :func:`inference.redis_memory.sample_memory` — the
  ingress' sampler — fills from the full Redis.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import redis
import yaml

from dashboards.alerts import alert_rules
from inference import metrics as im
from inference import redis_memory as rm
from inference.checkpoint import Checkpoint
from inference.consumer import PolledFrame
from inference.contracts import Result, Timings, encode_mask, mask_regions, result_key
from inference.decision import Outcome
from inference.offsets import OffsetTracker
from inference.sinks import RedisResultSink

from .conftest import wait_for

P0 = ("frames", 0)
LINE_PROFILE_PX = 128
SMALL_MAXMEMORY = "3mb"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_redis(tmp: Path, maxmemory: str) -> tuple[subprocess.Popen, redis.Redis]:
    port = _free_port()
    conf = ["bind 127.0.0.1", f"port {port}", 'save ""', "appendonly no", f"dir {tmp}",
            *rm.memory_config(), f"maxmemory {maxmemory}"]  # the last maxmemory line wins
    (tmp / "redis.conf").write_text("\n".join(conf) + "\n")
    proc = subprocess.Popen(["redis-server", str(tmp / "redis.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    wait_for(up, 20, f"redis-server on 127.0.0.1:{port}", interval_s=0.05)
    return proc, client


@pytest.fixture
def own_redis(tmp_path) -> Iterator[redis.Redis]:
    """A Redis of this test with the deployments' memory config and a small ``maxmemory``."""
    proc, client = _start_redis(tmp_path, SMALL_MAXMEMORY)
    try:
        yield client
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=20)


def simulated_results(n: int, seed: int = 7) -> list[Result]:
    """Results as the line builds them for simulator frames at the line profile's size: the
    defect mask (ROI-filtered) as the model's mask, realistic timings and ids."""
    from ingest.simulator import SimulatedCamera

    cam = SimulatedCamera(fps=None, defect_rate=0.5, size=LINE_PROFILE_PX, n_frames=n, seed=seed,
                          run_id=f"mem{seed}")
    rng = np.random.default_rng(seed)
    out = []
    try:
        for k, f in enumerate(cam):
            dm = f.truth["defect_mask"]
            mask = (dm > 0) & (f.truth["roi"] > 0) if dm is not None else np.zeros(f.image.shape[:2], bool)
            bad = bool(mask.any())
            area, boxes = mask_regions(mask)
            now = datetime.now(UTC)
            out.append(Result(
                frame_id=f.frame_id, item_id=f.item_id, line_id=f.line_id, camera_id=f.camera_id,
                recipe=f.recipe, captured_at=now, decided_at=now + timedelta(milliseconds=80),
                deadline_at=now + timedelta(milliseconds=300), score=float(rng.random()), decision=bad,
                threshold=0.5123456, model_version="grdnet-line-2026-11-30.3", roi_id="recipe:vials",
                defect_area=area, boxes=boxes, mask_png=encode_mask(mask) if bad else b"",
                timings_ms=Timings(**{s: float(rng.random() * 30) for s in Timings.model_fields}),
                topic="frames", partition=0, offset=k))
    finally:
        cam.close()
    return out


def test_result_bytes_match_the_sizing(tmp_path):
    proc, client = _start_redis(tmp_path, "256mb")
    try:
        results = simulated_results(80)
        good = [r for r in results if not r.decision]
        bad = [r for r in results if r.decision]
        assert len(good) > 10 and len(bad) > 10
        sink = RedisResultSink(lambda: client, ttl_s=3600, stream_maxlen=100_000, stream_ttl_s=3600)
        sink.setup()
        sink.add(results[0], "warm")  # loads the sink's write script: its cache is not a result's memory
        sink.flush()
        n, measured = 2000, {}
        for name, group in (("good", good), ("defect", bad)):
            before = client.info("memory")["used_memory"]
            stream_before = client.memory_usage(f"{name}:stream:L1", samples=0) or 0
            for i in range(n):
                r = group[i % len(group)]
                sink.add(r.model_copy(update={"frame_id": f"{r.frame_id}.{i}"}), name)
            sink.flush()
            stream = client.memory_usage(f"{name}:stream:L1", samples=0) - stream_before
            grown = client.info("memory")["used_memory"] - before
            key = result_key(name, f"{group[0].frame_id}.0")
            assert client.object("encoding", key) == b"listpack", "result hashes must stay listpack"
            measured[name] = {"used_memory_per_result": round((grown - stream) / n),
                              "memory_usage": client.memory_usage(key, samples=0),
                              "stream_entry": round(stream / n)}
        print("bytes per result:", json.dumps(measured))
        # the sizing's constants cover what Redis really spends, and are not loose by much
        for name, bound in (("good", rm.RESULT_BYTES_GOOD), ("defect", rm.RESULT_BYTES_DEFECT)):
            got = measured[name]["used_memory_per_result"]
            assert 0.8 * bound <= got <= bound, (name, got, bound)
            assert measured[name]["memory_usage"] <= bound
            assert measured[name]["stream_entry"] <= rm.STREAM_ENTRY_BYTES
        # the contract holds: the stored mask is the mask that was written
        for name, group in (("defect", bad), ("good", good)):
            for j, r in enumerate(group[:5]):  # written as frame_id.j (j < len(group))
                back = Result.from_redis(client.hgetall(result_key(name, f"{r.frame_id}.{j}")))
                assert back.frame_id == f"{r.frame_id}.{j}"
                if r.decision:
                    assert np.array_equal(back.mask(), r.mask()) and back.mask().any()
                else:
                    assert back.mask() is None and back.mask_png == b""
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=20)


class _Confirmed:
    """Reject / dead-letter stand-in: nothing to confirm (every outcome here has actuate False)."""

    def setup(self) -> None: ...
    def add(self, *a) -> None: raise AssertionError("no reject or dead letter in this test")
    def flush(self) -> list: return []
    def close(self) -> None: ...


def _checkpoint(client: redis.Redis, ttl_s: int) -> tuple[Checkpoint, OffsetTracker]:
    tracker = OffsetTracker()
    tracker.assign([P0])
    results = RedisResultSink(lambda: client, ttl_s=ttl_s, stream_maxlen=200, stream_ttl_s=3600)
    cp = Checkpoint(results, _Confirmed(), _Confirmed(), complete=tracker.complete, backoff_max_s=0.5)
    cp.setup()
    return cp, tracker


def _outcomes(tracker: OffsetTracker, results: list[Result], start: int, prefix: str) -> list[Outcome]:
    out = []
    for k, r in enumerate(results):
        offset = start + k
        frame = PolledFrame(ticket=tracker.add(P0, offset), topic="frames", partition=0, offset=offset,
                            key=None, value=b"", headers=[], received_at=time.time(), decode_s=0.0)
        r = r.model_copy(update={"frame_id": f"{r.frame_id}.{offset}", "offset": offset})
        out.append(Outcome(frame=frame, line=r.line_id, camera=r.camera_id, prefix=prefix, result=r,
                           actuate=False))
    return out


def _fill_until_refused(cp: Checkpoint, tracker: OffsetTracker, client: redis.Redis, prefix: str,
                        results: list[Result]) -> tuple[int, list[Outcome], BaseException]:
    """Flush batches of 50 until Redis refuses one; returns the frames confirmed, the refused batch
    and the error."""
    confirmed = 0
    for _ in range(400):
        batch = _outcomes(tracker, results, confirmed, prefix)
        for o in batch:
            cp.add(o)
        try:
            cp.flush()
        except redis.RedisError as exc:
            return confirmed, batch, exc
        confirmed += len(batch)
        assert tracker.committable() == {P0: confirmed}
    raise AssertionError(f"Redis (maxmemory {SMALL_MAXMEMORY}) never refused a write")


def _assert_refused_batch_left_no_trace(cp, tracker, client, prefix, confirmed, batch, exc) -> None:
    assert isinstance(exc, redis.exceptions.OutOfMemoryError), exc  # noeviction: refused, not evicted
    assert "maxmemory" in str(exc)
    assert tracker.committable() == {P0: confirmed}, "offsets of refused results must not be committable"
    assert tracker.in_flight() == len(batch)
    assert not any(client.exists(result_key(prefix, o.result.frame_id)) for o in batch), \
        "a refused transaction leaves no partial result"
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        cp.flush_until_confirmed(stopping=lambda: True)  # still refused; the health clock runs
    assert cp.failing_for_s() > 0


def test_full_redis_refuses_commits_nothing_loses_nothing(own_redis):
    client, prefix = own_redis, "mem"
    results = simulated_results(50, seed=3)
    cp, tracker = _checkpoint(client, ttl_s=3600)
    confirmed, batch, exc = _fill_until_refused(cp, tracker, client, prefix, results)
    assert confirmed > 0
    _assert_refused_batch_left_no_trace(cp, tracker, client, prefix, confirmed, batch, exc)
    assert rm.read_memory(client).fill >= rm.ALERT_FILL_RATIO

    client.config_set("maxmemory", "64mb")  # the operator resizes (or keys expire: next test)
    cp.flush_until_confirmed()
    assert tracker.committable() == {P0: confirmed + len(batch)} and tracker.in_flight() == 0
    for o in batch:
        back = Result.from_redis(client.hgetall(result_key(prefix, o.result.frame_id)))
        assert back.frame_id == o.result.frame_id and back.decision == o.result.decision
        assert (back.mask() is None and o.result.mask() is None) or np.array_equal(back.mask(), o.result.mask())
    stored = sum(1 for _ in client.scan_iter(f"{prefix}:result:*", count=1000))
    assert stored == confirmed + len(batch), "every result confirmed is in Redis"


def test_full_redis_recovers_when_results_expire(own_redis):
    """At the sized steady state old results expire as new ones come: a refused flush, retried,
    goes through once the TTL freed the memory, without anyone raising maxmemory."""
    client, prefix, ttl_s = own_redis, "exp", 3
    cp, tracker = _checkpoint(client, ttl_s=ttl_s)
    confirmed, batch, exc = _fill_until_refused(cp, tracker, client, prefix, simulated_results(50, seed=4))
    _assert_refused_batch_left_no_trace(cp, tracker, client, prefix, confirmed, batch, exc)
    t0 = time.monotonic()
    cp.flush_until_confirmed()  # retried with backoff until the expired results made room
    assert time.monotonic() - t0 < 60
    assert tracker.committable() == {P0: confirmed + len(batch)} and tracker.in_flight() == 0
    assert all(client.exists(result_key(prefix, o.result.frame_id)) for o in batch)


def _prometheus_alerts(url: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/api/v1/alerts", timeout=5) as r:
        return json.load(r)["data"]["alerts"]


@pytest.fixture
def own_prometheus(tmp_path) -> Iterator[tuple[str, object]]:
    """A Prometheus of this test (1 s scrape and evaluation) with the production
    ``GrdlineRedisMemoryHigh`` rule (``for:`` 1 s), scraping a registry this test serves."""
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    registry = CollectorRegistry()
    gauges = {name: Gauge(im.prometheus_name(name), "test", registry=registry)
              for name in (im.REDIS_USED_MEMORY, im.REDIS_MAXMEMORY)}
    target_port = _free_port()
    server, thread = start_http_server(target_port, addr="127.0.0.1", registry=registry)
    rules = alert_rules(hold="1s")
    rules["groups"][0]["rules"] = [r for r in rules["groups"][0]["rules"] if r["alert"] == "GrdlineRedisMemoryHigh"]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "scrape_configs": [{"job_name": "ingress", "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}],
    }))
    port = _free_port()
    proc = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"))
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_for(ready, 60, "the test's Prometheus ready")
        yield url, gauges
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        server.shutdown()
        thread.join(timeout=5)


def test_memory_alert_fires_when_redis_fills(own_redis, own_prometheus):
    import asyncio

    client, prefix = own_redis, "alert"
    url, gauges = own_prometheus

    def record(mem: rm.RedisMemory) -> None:  # what LineIngress._record_memory does, into this registry
        gauges[im.REDIS_USED_MEMORY].set(mem.used)
        gauges[im.REDIS_MAXMEMORY].set(mem.maxmemory)

    loop = asyncio.new_event_loop()
    sampler = loop.create_task(rm.sample_memory(lambda: client, record, 0.5))
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    try:
        # healthy (nearly empty Redis): scraped, evaluated, not firing
        wait_for(lambda: _query(url, f"max({im.prometheus_name(im.REDIS_MAXMEMORY)})") > 0, 30,
                 "the gauges scraped")
        time.sleep(3)  # three evaluations on the healthy series
        assert not _prometheus_alerts(url)

        cp, tracker = _checkpoint(client, ttl_s=3600)
        confirmed, batch, exc = _fill_until_refused(cp, tracker, client, prefix, simulated_results(50, seed=5))
        refused_at = time.monotonic()
        assert isinstance(exc, redis.exceptions.OutOfMemoryError)
        firing = wait_for(lambda: [a for a in _prometheus_alerts(url) if a["state"] == "firing"], 60,
                          "GrdlineRedisMemoryHigh firing")
        took = time.monotonic() - refused_at
        assert firing[0]["labels"]["alertname"] == "GrdlineRedisMemoryHigh"
        assert float(firing[0]["value"]) >= rm.ALERT_FILL_RATIO
        print(f"GrdlineRedisMemoryHigh firing {took:.1f}s after the first refused write "
              f"(sample 0.5 s, scrape and evaluation 1 s, for: 1 s)")
        assert took < 30
    finally:
        loop.call_soon_threadsafe(sampler.cancel)
        loop.call_soon_threadsafe(loop.stop)
        runner.join(timeout=10)


def _query(url: str, expr: str) -> float:
    with urllib.request.urlopen(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}), timeout=5) as r:
        result = json.load(r)["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0

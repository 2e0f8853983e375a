"""Fault drills on the clustered local stack (real processes): while frames stream through the
line, (1) SIGKILL the broker that leads every frames partition, (2) SIGKILL a Ray worker node (its
raylet and the model and ingress replicas on it). Each time: every frame sent has exactly its
result in Redis, no dead letter, every item rejected, at most one reject command per item, and the
line recovers by itself; the test prints how long that took. A second reject record for an item
(once seen after a Ray-node kill: a sender killed between the broker's ack and its ``sent`` mark,
closed by the topic lookup before a takeover in inference/sinks.py) fails the test, naming the
records, after every other check has passed.

Every frame is judged defective (live ``user_config`` threshold -1): each item, seen by four
cameras, must give exactly one reject command, through redeliveries and rebalances.

Sized for 2 shared cores: 64-px frames, a tiny untrained model, 4 cameras x 15 fps, ~1,200 frames
per drill. Run: ``flock /tmp/grdline-it.lock .venv/bin/python -m pytest tests/integration/deploy -s``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import pytest

from .conftest import FRAME_SIZE, load_cluster, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

CAMERAS = 4
FPS = 15            # per camera
FRAMES_PER_CAMERA = 300
KILL_AFTER_S = 6.0  # into the stream


@dataclass
class Stream:
    """Frames published at a steady pace from a thread; when each frame's result appeared."""

    frame_ids: list[str]
    item_ids: set[str]
    sent_at: dict[str, float] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


def _frames(run_id: str):
    from ingest.contract import FrameMeta
    from ingest.simulator import SimulatedCamera

    out = []
    for c in range(CAMERAS):
        cam = SimulatedCamera(line_id="L1", camera_id=f"cam{c}", fps=None, defect_rate=0.4, seed=7,
                              size=FRAME_SIZE, n_frames=FRAMES_PER_CAMERA, run_id=run_id)
        out.extend((f, FrameMeta.from_captured(f, "png")) for f in cam)
        cam.close()
    # interleave the cameras as they would arrive
    return sorted(out, key=lambda fm: (int(fm[1].frame_id.rsplit(".", 1)[1]), fm[1].camera_id))


def _publish(stream: Stream, frames, publisher) -> None:
    try:
        t0 = time.monotonic()
        for i, (frame, meta) in enumerate(frames):
            delay = t0 + i / (CAMERAS * FPS) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            publisher.publish(frame.image, meta)
            stream.sent_at[meta.frame_id] = time.monotonic()
        publisher.flush(timeout=120)
    except BaseException as exc:  # noqa: BLE001 - reported by the test thread
        stream.error = exc
    finally:
        stream.done.set()


def _done_ids(client, frame_ids) -> set[str]:
    from inference.contracts import result_key

    pipe = client.pipeline(transaction=False)
    for fid in frame_ids:
        pipe.exists(result_key("grdline", fid))
    return {fid for fid, ok in zip(frame_ids, pipe.execute(), strict=True) if ok}


def _topic_records(cluster, topic: str) -> list:
    """Every record of ``topic`` up to its current end (read as the admin principal)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**cluster.admin_kwargs(), group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        values = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                values.extend(batch)
        return values
    finally:
        consumer.close()


def _drill(cluster, fault, name: str) -> dict[str, float]:
    """Stream, inject ``fault()`` KILL_AFTER_S in, wait for every result; check and time it."""
    from inference.contracts import RejectCommand
    from ingest import acl
    from ingest.producer import FramePublisher

    settings = cluster.kafka_settings(acl.CAMERA)  # the cameras' principal: frames only
    client = cluster.redis_client()
    run_id = f"{name}-{uuid.uuid4().hex[:6]}"
    frames = _frames(run_id)
    ids = [m.frame_id for _, m in frames]
    stream = Stream(ids, {m.item_id for _, m in frames})
    publisher = FramePublisher(settings, camera_partitions={f"cam{i}": i for i in range(CAMERAS)}).start()
    thread = threading.Thread(target=_publish, args=(stream, frames, publisher), daemon=True)
    t_start = time.monotonic()
    thread.start()
    time.sleep(KILL_AFTER_S)
    sent_before = [fid for fid in ids if fid in stream.sent_at]
    t_kill = time.monotonic()
    fault()
    # poll results: when the frames sent before the kill are all done, the longest pause in
    # completions after the kill, when everything is done
    done: set[str] = set()
    last_progress, longest_gap, before_done_at = t_kill, 0.0, None
    deadline = t_kill + 300
    while len(done) < len(ids) and time.monotonic() < deadline:
        time.sleep(0.5)
        pending = [fid for fid in ids if fid not in done and fid in stream.sent_at]
        new = _done_ids(client, pending) if pending else set()
        now = time.monotonic()
        if new:
            done |= new
            last_progress = now
        elif pending:
            longest_gap = max(longest_gap, now - last_progress)
        if before_done_at is None and all(fid in done for fid in sent_before):
            before_done_at = now
    t_all = time.monotonic()
    thread.join(timeout=60)
    publisher.close()
    assert stream.error is None, f"publishing failed: {stream.error!r}"
    assert publisher.failed == 0, f"{publisher.failed} frames not acknowledged: {list(publisher.failures)[:3]}"
    missing = [fid for fid in ids if fid not in done]
    assert not missing, f"{len(missing)} of {len(ids)} frames have no result, e.g. {missing[:3]}"
    # every frame is defective in the drill (threshold -1), so every item must be rejected, once
    records = [(r, RejectCommand.from_kafka(r.value)) for r in _topic_records(cluster, "rejects")]
    mine = [(r, cmd) for r, cmd in records if cmd.item_id in stream.item_ids]
    per_item = Counter(cmd.item_id for _, cmd in mine)
    never = stream.item_ids - set(per_item)
    assert not never, f"{len(never)} items never rejected, e.g. {sorted(never)[:3]}"
    twice = sorted(k for k, v in per_item.items() if v > 1)
    duplicates = [
        f"{cmd.item_id}: command_id={cmd.command_id} frame={cmd.frame_id} decided_at={cmd.decided_at.isoformat()} "
        f"rejects[{r.partition}]@{r.offset}"
        for r, cmd in mine if cmd.item_id in twice]
    for line in duplicates:
        print(f"[{name}] DUPLICATE REJECT {line}")
    dead = _topic_records(cluster, "frames.dlq")
    assert not dead, f"{len(dead)} dead letters during the drill"
    client.close()
    times = {
        "frames": len(ids), "sent_before_kill": len(sent_before),
        "stream_s": max(stream.sent_at.values()) - t_start,
        "before_kill_done_s": (before_done_at or t_all) - t_kill,
        "longest_stall_s": longest_gap, "all_done_after_kill_s": t_all - t_kill,
        "items_rejected": len(per_item), "items_rejected_twice": len(twice),
    }
    print(f"\n[{name}] " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                  for k, v in times.items()))
    times["duplicates"] = duplicates
    return times


def _at_most_one_reject_per_item(times: dict) -> None:
    """Checked last, after the recovery was measured: at most one reject command per item on the
    topic. A sender killed between the broker's ack and marking its Redis claim ``sent`` leaves a
    stale pending claim; the sender that takes it over looks the command up on the rejects topic
    first (``inference.sinks.DeliveredLookup``) and marks it ``sent`` instead of sending again."""
    assert not times["duplicates"], (
        "reject sent more than once for an item after a kill: " + "; ".join(times["duplicates"]))


def test_every_project_topic_is_replicated_three_times(cluster):
    from ingest.topics import DEFAULT_TOPICS

    for spec in DEFAULT_TOPICS:
        isr = cluster.in_sync(spec.name)
        assert len(isr) == spec.partitions and all(len(r) == 3 for r in isr.values()), (spec.name, isr)
        assert cluster.topic_config(spec.name).get("min.insync.replicas") == "2", spec.name


def test_only_the_line_decides(cluster):
    """SASL/SCRAM and ACLs on the brokers, a password on Redis, a token on Ray: a camera cannot
    write a verdict, a dead letter or a replay; the station cannot write a verdict; a client
    without credentials (or with a wrong password) gets nothing from Kafka, Redis or the Ray
    dashboard. That the ingress principal can do its job is what the drills below show (the
    replicas run as grdline-ingress, the publisher as grdline-camera)."""
    import urllib.error
    import urllib.request

    import redis
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.errors import KafkaError, TopicAuthorizationFailedError
    from pydantic import SecretStr

    from ingest import acl
    from ingest.topics import DLQ, FRAMES, FRAMES_REPLAY, REJECTS

    c = load_cluster()

    def refused(principal_kwargs: dict, topic: str) -> None:
        producer = KafkaProducer(**principal_kwargs, max_block_ms=15_000, retries=0)
        try:
            with pytest.raises(TopicAuthorizationFailedError):
                producer.send(topic, key=b"item-1", value=b"forged verdict").get(timeout=30)
        finally:
            producer.close(timeout=5)

    camera = cluster.kafka_settings(acl.CAMERA).client_kwargs()
    for topic in (REJECTS, DLQ, FRAMES_REPLAY):
        refused(camera, topic)
    refused(cluster.kafka_settings(acl.STATION).client_kwargs(), REJECTS)
    # the camera cannot even see the verdicts: the broker leaves topics it may not describe out of
    # its metadata (and it has no Read anywhere)
    consumer = KafkaConsumer(**camera, group_id=None, enable_auto_commit=False)
    try:
        visible = consumer.topics()
        assert FRAMES in visible and not visible & {REJECTS, DLQ, FRAMES_REPLAY}, visible
    finally:
        consumer.close()

    # no credentials / a wrong password: no connection that gets anything done
    outsider = cluster.kafka_settings(None).client_kwargs()
    wrong = cluster.kafka_settings(acl.CAMERA).model_copy(update={"sasl_password": SecretStr("wrong")})
    for kwargs in (outsider, wrong.client_kwargs()):
        with pytest.raises(KafkaError):
            producer = KafkaProducer(**kwargs, max_block_ms=10_000, retries=0)
            try:
                producer.send(FRAMES, key=b"cam0", value=b"not a frame").get(timeout=20)
            finally:
                producer.close(timeout=5)
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=c.HOST, port=c.REDIS_PORT, socket_timeout=5).set("grdline:forged", "1")
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"http://{c.HOST}:{c.RAY_DASHBOARD_PORT}/api/serve/applications/", timeout=10)
    assert denied.value.code in (401, 403)


def test_kill_the_frames_leader_broker(cluster):
    c = load_cluster()
    leaders = cluster.leaders("frames")
    victim = Counter(leaders.values()).most_common(1)[0][0]
    assert victim == 1 and set(leaders.values()) == {1}, leaders  # preferred leader of every partition
    failover = {}

    def fault() -> None:
        t = time.monotonic()
        cluster.kill_broker(victim)
        wait_for(lambda: all(v not in (victim, -1) for v in cluster.leaders("frames").values()), 60,
                 "new leaders for every frames partition")
        failover["leaders_moved_s"] = time.monotonic() - t

    times = _drill(cluster, fault, "broker")
    print(f"[broker] kafka-{victim} killed; frames leaders moved after {failover['leaders_moved_s']:.1f}s "
          f"to {cluster.leaders('frames')}")
    # bring it back (a replaced host) for the next drill: it catches up and rejoins every ISR
    t = time.monotonic()
    cluster.start_broker(victim)
    wait_for(lambda: all(len(isr) == len(c.BROKERS) for isr in cluster.in_sync("frames").values()),
             180, "the restarted broker back in every frames partition's ISR", state=lambda: cluster.in_sync("frames"))
    print(f"[broker] kafka-{victim} restarted; back in every frames ISR after {time.monotonic() - t:.1f}s")
    assert times["all_done_after_kill_s"] < 300
    _at_most_one_reject_per_item(times)


def test_kill_a_ray_worker_node(cluster):
    victim = "w2"
    assert cluster.replica_nodes() == {"GRDNetModel": ["w1", "w2"], "LineIngress": ["w1", "w2"]}
    killed: list[int] = []

    def fault() -> None:
        killed.extend(cluster.kill_ray_node(victim))

    times = _drill(cluster, fault, "ray-node")
    print(f"[ray-node] {victim}: {len(killed)} processes killed (raylet, agents, replicas); "
          f"the line ran on w1 meanwhile: {cluster.replica_nodes()}")
    # a new host joins (what the autoscaler does on a real cluster): Serve places the replicas
    t = time.monotonic()
    cluster.start_ray_node(victim)
    wait_for(lambda: cluster.replica_nodes() == {"GRDNetModel": ["w1", "w2"], "LineIngress": ["w1", "w2"]},
             300, "replicas back on both workers", state=cluster.replica_nodes)
    print(f"[ray-node] {victim} rejoined; replicas spread again after {time.monotonic() - t:.1f}s")
    assert times["all_done_after_kill_s"] < 300
    _at_most_one_reject_per_item(times)


def test_no_password_in_any_log(cluster):
    """Secrets are never logged: after the drills, no log of this cluster (brokers, Redis, every Ray
    process and replica) holds any password; only the 0600 config files do."""
    from ingest import acl

    c = load_cluster()
    secrets = {u: cluster.password(u) for u in (*(p.name for p in acl.principals()), c.CONTROLLER_USER, "redis")}
    logs = [p for p in cluster.state.rglob("*") if p.is_file() and (p.suffix in (".log", ".out", ".err") or "log" in p.name)]
    logs += [p for p in (cluster.ray_temp / "session_latest" / "logs").rglob("*") if p.is_file()]
    assert len(logs) > 10, logs  # brokers, Redis, Ray's own logs were found
    leaked = [(str(p), u) for p in logs for u, pw in secrets.items() if pw.encode() in p.read_bytes()]
    assert not leaked, f"passwords in logs: {leaked[:5]}"
    for name in ("kafka-1/server.properties", "redis/redis.conf", "secret"):
        path = cluster.state / name
        assert not path.exists() or path.stat().st_mode & 0o077 == 0, name

"""Drill 7: already-decided frames delivered again, and a recorded batch replayed: zero new reject
commands. The frames carry a deadline that has long passed when they come back, so a line that
re-decided them (or treated them as late) would fail-safe reject every one.

1. the line decides a stream (exactly one reject per defective item);
2. redelivery: a second deployment in a *new* consumer group reads the whole topic again — every
   frame already has a result: none is decided again, no reject command is sent;
3. replay: the frames topic is recorded into an archive and replayed with ``grdline replay``'s
   logic (``replay_of`` set, deadline dropped) onto a replay topic, decided by its own app and
   group: the frames are decided into the replay namespace because of the topic they came from
   (never because of a header), live results stay untouched, and no reject command is sent.
"""

from __future__ import annotations

import time

from inference.contracts import results_prefix
from ingest.dlq import parse_dead_letter
from ingest.producer import FramePublisher
from ingest.recorder import record
from ingest.replay import archive_items, replay

from .conftest import (
    Streamer,
    assert_line_promise,
    line_config,
    read_all,
    read_reject_commands,
    read_results,
    report,
    running,
    wait_all_decided,
    wait_for,
    workload,
)

DEADLINE_MS = 5000


def test_redelivered_and_replayed_frames_send_no_new_rejects(
    app_config, kafka_settings, redis_client, redis_prefix, serve_instance, tmp_path, topic_factory
):
    w = workload(cameras=3, per_camera=20, seed=7)
    cfg = line_config(app_config, w)
    with running(cfg):
        Streamer(kafka_settings, cfg.topics.frames, w, rate_hz=30, deadline_ms=DEADLINE_MS).start()
        wait_all_decided(redis_client, redis_prefix, w.ids, 120)
    first = assert_line_promise(w, redis_client, redis_prefix, kafka_settings, cfg.topics.rejects)
    n_rejects = len(first.rejects)
    decided_at = {fid: r.decided_at for fid, r in first.results.items()}
    time.sleep(DEADLINE_MS / 1000 + 0.5)  # every frame's deadline has passed now

    # 2. redelivery: a new group reads everything again
    again = cfg.model_copy(update={"ingress": cfg.ingress.model_copy(update={"group_id": cfg.ingress.group_id + "-again"}),
                                   "app_name": cfg.app_name + "-again", "route_prefix": cfg.route_prefix + "-again"})
    t0 = time.monotonic()
    with running(again) as ingress:
        wait_for(lambda: ingress.stats.remote().result().get("consumed", 0) >= len(w.ids), 120,
                 "the whole topic consumed again", state=lambda: ingress.stats.remote().result())
        time.sleep(2.0)  # anything it would (wrongly) write or send has time to show
    redelivery_s = time.monotonic() - t0
    after = read_results(redis_client, redis_prefix, w.ids)
    redecided = sorted(fid for fid, r in after.items() if r.decided_at != decided_at[fid])
    assert not redecided, f"{len(redecided)} already-decided frames were decided again: {redecided[:5]}"
    cmds = read_reject_commands(kafka_settings, cfg.topics.rejects, expected=n_rejects, settle_s=3.0)  # settling catches any extra
    assert len(cmds) == n_rejects, f"redelivery sent {len(cmds) - n_rejects} new reject command(s)"

    # 3. replay of a recorded batch onto a replay topic, decided by the line's replay app
    archive = tmp_path / "batch"
    summary = record(cfg.topics.frames, archive, settings=kafka_settings, start_offsets=0, progress=False)
    assert summary.frames == len(w.ids)
    replay_topic = topic_factory(3, "replay")
    replay_cfg = cfg.model_copy(update={
        "app_name": cfg.app_name + "-replay", "route_prefix": cfg.route_prefix + "-replay",
        "topics": cfg.topics.model_copy(update={"frames": replay_topic, "replay": replay_topic}),
        "ingress": cfg.ingress.model_copy(update={"group_id": cfg.ingress.group_id + "-replay"})})
    t0 = time.monotonic()
    with running(replay_cfg) as ingress:
        with FramePublisher(kafka_settings, replay_topic) as pub:
            stats = replay(archive_items(archive), pub, speed=None, run="drill7")
        assert stats.frames == len(w.ids) and stats.invalid == 0 and pub.failed == 0
        replay_ids = [f"{fid}@drill7.0" for fid in w.ids]
        replay_prefix = results_prefix(redis_prefix, cfg.replay.namespace)

        def state():
            dead = [parse_dead_letter(r.value, r.headers, key=r.key)
                    for r in read_all(kafka_settings, cfg.topics.dlq, expected=1, timeout_s=2, settle_s=0.5)]
            return {"decided": len(read_results(redis_client, replay_prefix, replay_ids)),
                    "ingress": ingress.stats.remote().result(),
                    "dead_letters": [(d.frame_id, d.stage, d.reason) for d in dead[:3]]}

        wait_all_decided(redis_client, replay_prefix, replay_ids, 120, state=state)
    replay_s = time.monotonic() - t0
    replayed = read_results(redis_client, replay_prefix, replay_ids)
    assert all(r.replay_of for r in replayed.values())
    assert not read_results(redis_client, redis_prefix, replay_ids), "replayed frames landed in the live namespace"
    assert {fid: r.decided_at for fid, r in read_results(redis_client, redis_prefix, w.ids).items()} == decided_at
    cmds = read_reject_commands(kafka_settings, cfg.topics.rejects, expected=n_rejects, settle_s=3.0)  # settling catches any extra
    report("drill 7 redelivery and replay", frames=len(w.ids), rejects_first_pass=n_rejects,
           rejects_after=len(cmds), redelivery_pass=redelivery_s, replay_pass=replay_s)
    assert len(cmds) == n_rejects, f"the replay sent {len(cmds) - n_rejects} new reject command(s)"

"""``grdline serve`` and ``grdline results tail``.

* ``grdline serve --model DIR`` starts a local Ray (metrics on ``RAY_METRICS_PORT`` so the local
  Prometheus scrapes every replica), Serve, and the app against the local stack; Ctrl-C shuts it
  down. Ray's node address and the Serve HTTP proxy bind to ``--bind`` (default ``127.0.0.1``,
  loopback: nothing is reachable from the network unless configured). ``--config YAML`` gives a full :class:`~inference.config.ServeAppConfig`.
* ``grdline results tail --line L`` prints the last decisions of a line from its Redis stream and
  then follows it (``--no-follow`` to stop after the backlog).
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("serve", help="run the GRD-Line Serve app on a local Ray")
    p.add_argument("--model", help="model artefact directory (or use --standin-ms / --config)")
    p.add_argument("--standin-ms", type=float, help="no-compute stand-in model with this batch latency")
    p.add_argument("--config", help="ServeAppConfig YAML")
    p.add_argument("--ingress-replicas", type=int)
    p.add_argument("--model-replicas", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--expect", action="append", default=[], metavar="LINE/CAMERA",
                   help="a camera this app's frames topic must carry (repeatable): GrdlineNoFramesConsumed "
                        "fires when it delivers nothing (config field expected_cameras)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    p.add_argument("--bind", default="127.0.0.1",
                   help="address Ray and the HTTP proxy bind to (default loopback)")
    p.add_argument("--http-port", type=int, default=None,
                   help="also serve the app's HTTP stats route on 127.0.0.1:PORT (default: no "
                        "HTTP proxy; frames come from Kafka, metrics go to Prometheus)")
    p.set_defaults(func=_serve)

    r = subparsers.add_parser("results", help="read inspection results from Redis")
    rs = r.add_subparsers(dest="results_command", required=True, metavar="ACTION")
    t = rs.add_parser("tail", help="show live decisions of one line")
    t.add_argument("--line", required=True)
    t.add_argument("--count", type=int, default=10, help="backlog entries shown first")
    t.add_argument("--no-follow", action="store_true")
    t.add_argument("--prefix", help="Redis key prefix (default from GRDLINE_REDIS_KEY_PREFIX)")
    t.set_defaults(func=_tail)


def _expected(text: str) -> dict[str, str]:
    line, sep, camera = text.partition("/")
    if not (sep and line and camera):
        raise SystemExit(f"--expect takes LINE/CAMERA, not {text!r}")
    return {"line": line, "camera": camera}


def _config(args: argparse.Namespace) -> Any:
    from inference.app import AppArgs, config_from_args

    over: dict[str, Any] = {}
    if args.standin_ms is not None:
        over["standin"] = {"batch_latency_ms": args.standin_ms}
    if args.ingress_replicas:
        over["ingress"] = {"num_replicas": args.ingress_replicas}
    if args.model_replicas:
        over["model"] = {"num_replicas": args.model_replicas}
    if args.batch_size:
        over["tuning"] = {"max_batch_size": args.batch_size}
    if args.expect:
        over["expected_cameras"] = [_expected(e) for e in args.expect]
    return config_from_args(AppArgs(config_file=args.config, model_dir=args.model, config=over))


def _serve(args: argparse.Namespace) -> int:
    import ray
    from ray import serve

    from inference.app import run
    from inference.settings import RAY_METRICS_PORT

    cfg = _config(args)
    ray.init(
        num_cpus=args.num_cpus, include_dashboard=False, _metrics_export_port=RAY_METRICS_PORT,
        _node_ip_address=args.bind,
    )
    if args.http_port is None:
        serve.start(proxy_location="Disabled")
    else:
        serve.start(http_options={"host": args.bind, "port": args.http_port})
    run(cfg)
    log.info("app %s running (route %s); Ctrl-C to stop", cfg.app_name, cfg.route_prefix)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


def format_entry(fields: dict[bytes, bytes]) -> str:
    f = {k.decode(): v.decode() for k, v in fields.items()}
    decision = "REJECT" if f.get("decision") == "1" else "pass  "
    late = " LATE" if f.get("late") == "1" else ""
    if f.get("failsafe") and f.get("failsafe") != "late":
        late += f" FAILSAFE:{f['failsafe']}"
    score = f.get("score") or "-"
    return (
        f"{f.get('decided_at', '?')}  {decision}{late}  score={score:<10.8} "
        f"line={f.get('line_id')} cam={f.get('camera_id')} item={f.get('item_id')} "
        f"frame={f.get('frame_id')} roi={f.get('roi_id')} area={f.get('defect_area')}"
    )


def _tail(args: argparse.Namespace) -> int:
    import redis

    from inference.contracts import stream_key
    from inference.settings import RedisSettings

    settings = RedisSettings()
    client = redis.Redis(**settings.client_kwargs())
    key = stream_key(args.prefix or settings.key_prefix, args.line)
    backlog = client.xrevrange(key, count=args.count)
    last: bytes | str = "0-0"  # no stream yet: everything that arrives is new
    if not backlog and client.exists(key):
        last = client.xinfo_stream(key)["last-generated-id"]
    for entry_id, fields in reversed(backlog):
        print(format_entry(fields), flush=True)
        last = entry_id
    if args.no_follow:
        return 0
    try:
        while True:
            got = client.xread({key: last}, block=1000, count=100)
            for _, entries in got:
                for entry_id, fields in entries:
                    print(format_entry(fields), flush=True)
                    last = entry_id
    except KeyboardInterrupt:
        return 0

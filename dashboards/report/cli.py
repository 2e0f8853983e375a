"""``grdline report --line L --since T --until T --out DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="HTML run report of a line (or a replay) from Prometheus, Redis and Kafka")
    p.add_argument("--line", required=True)
    p.add_argument("--since", required=True,
                   help="start: ISO 8601 (naive = UTC), 'now', -10m / -2h, or epoch ms")
    p.add_argument("--until", default="now", help="end (same forms; default now)")
    p.add_argument("--out", type=Path, required=True, help="folder for index.html and its PNGs")
    p.add_argument("--prefix", default=None,
                   help="Redis key prefix of the results (a replay's namespace; default: "
                        "GRDLINE_REDIS_KEY_PREFIX or grdline)")
    p.add_argument("--truth", type=Path, default=None,
                   help="ground truth JSON lines (grdline camera --truth-out)")
    p.add_argument("--gallery", type=int, default=12, help="worst defects shown (default 12)")
    p.add_argument("--no-frames", action="store_true",
                   help="do not read the gallery's frames back from Kafka (masks only)")
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from dashboards.report.build import make_report
    from ingest.kafka_range import parse_time

    now = datetime.now(UTC)
    since, until = parse_time(args.since, now), parse_time(args.until, now)
    if until <= since:
        print(f"report: --until ({until}) must be after --since ({since})")
        return 2
    page = make_report(args.line, since, until, args.out, prefix=args.prefix,
                       truth_path=args.truth, gallery_size=args.gallery,
                       frames_from_kafka=not args.no_frames)
    print(f"wrote {page}")
    return 0

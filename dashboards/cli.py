"""``grdline dashboards export|publish|rules`` and ``grdline report``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("dashboards", help="Grafana dashboards and alert rules as code")
    sub = p.add_subparsers(dest="dashboards_command", required=True)
    e = sub.add_parser("export", help="write the Grafana provisioning files: datasource and "
                       "dashboard provider YAML, one JSON per dashboard")
    e.add_argument("--out", type=Path, default=None,
                   help="folder (default: dashboards/provisioning in the package)")
    e.add_argument("--datasource-uid", default="prometheus")
    e.set_defaults(func=_export)
    pub = sub.add_parser("publish", help="create/overwrite the dashboards via Grafana's HTTP API "
                         "(GRDLINE_GRAFANA_URL, GRDLINE_GRAFANA_TOKEN)")
    pub.add_argument("--datasource-uid", default="prometheus")
    pub.set_defaults(func=_publish)
    r = sub.add_parser("rules", help="write the Prometheus alert rules YAML")
    r.add_argument("--out", type=Path, default=Path("dashboards/generated/grdline-rules.yml"))
    r.set_defaults(func=_rules)

    from dashboards.report.cli import register as register_report

    register_report(subparsers)


def _export(args: argparse.Namespace) -> int:
    from dashboards.provision import PROVISIONING_DIR, write_provisioning

    for path in write_provisioning(args.out or PROVISIONING_DIR, args.datasource_uid):
        print(f"wrote {path}")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from dashboards.publish import publish_dashboards

    for answer in publish_dashboards(datasource_uid=args.datasource_uid):
        print(f"published: {answer.get('url', answer)}")
    return 0


def _rules(args: argparse.Namespace) -> int:
    from dashboards.alerts import render_alert_rules

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render_alert_rules())
    print(f"wrote {args.out}")
    return 0

"""``grdline stack up|down|status|restart-kafka``: the local stack (code in deploy/local/stack.py).

The stack lives with the deployment files, not in a package; this loads it from the checkout.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

STACK_FILE = Path(__file__).resolve().parents[1] / "deploy" / "local" / "stack.py"
CLUSTER_FILE = STACK_FILE.with_name("cluster.py")


def load_stack() -> ModuleType:
    """Import deploy/local/stack.py from this checkout (it is not part of an installed wheel)."""
    if not STACK_FILE.exists():
        raise FileNotFoundError(
            f"{STACK_FILE} not found: `grdline stack` needs a source checkout of GRD-Line"
        )
    name = "grdline_local_stack"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, STACK_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("stack", help="start, stop or check the local Kafka/Redis/Prometheus")
    p.add_argument("action", choices=["up", "down", "status", "restart-kafka"])
    p.add_argument("services", nargs="*", help="any of kafka, redis, prometheus (default: all)")
    p.add_argument("--cluster", action="store_true",
                   help="up|down|status of the clustered local stack instead (deploy/local/cluster.py)")
    p.add_argument("--model", help="with up --cluster: also `serve deploy` the app with this model")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.cluster:
        spec = importlib.util.spec_from_file_location("grdline_local_cluster", CLUSTER_FILE)
        assert spec is not None and spec.loader is not None
        cluster = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = cluster
        spec.loader.exec_module(cluster)
        return cluster.run(args.action, args.model)
    stack = load_stack()
    unknown = set(args.services) - set(stack.SERVICES)
    if unknown:
        raise SystemExit(f"grdline stack: unknown service(s) {sorted(unknown)}; choose from {stack.SERVICES}")
    return stack.run(args.action, args.services or list(stack.SERVICES))

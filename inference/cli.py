"""The ``grdline`` command: one entry point, sub-commands registered by each package.

Each package module listed in :data:`COMMAND_MODULES` exposes ``register(subparsers)``, which adds
its sub-commands with ``set_defaults(func=handler)``; a handler takes the parsed namespace and
returns an exit code. Heavy imports (torch, ray) happen inside handlers so ``grdline --help`` is
instant. Modules are imported by name so that this file does not import ``dashboards`` statically
(dashboards depends on inference, not the other way round).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

COMMAND_MODULES: tuple[str, ...] = (
    "inference.stack_cli",
    "model.cli",
    "ingest.cli",
    "ingest.simulator.cli",
    "inference.serve_cli",
    "dashboards.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grdline", description="GRD-Line: streaming visual inspection with GRD-Net."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if not (name == missing or name.startswith(missing + ".")):
                raise  # the module exists but one of its own imports is missing: a real bug
            continue  # that package has no commands (yet)
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # kafka-python narrates every connection at INFO
        logging.getLogger("kafka").setLevel(logging.WARNING)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

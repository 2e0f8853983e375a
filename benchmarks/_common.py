"""What every program in ``benchmarks/`` shares: the ``--short`` and ``--results-dir`` options and
where the JSON goes.

``--short`` runs a program's real code path at tiny sizes for seconds (``make test`` runs every
program that way: tests/unit/benchmarks, tests/integration/benchmarks); its numbers mean nothing.
The JSON goes to ``--results-dir``, else ``$GRDLINE_BENCH_RESULTS``, else ``benchmarks/results``
(so a test writes into its own temporary folder, never into the committed results). A short run's
JSON says ``"short": true``.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: the environment variable naming the folder the JSON goes to (``--results-dir`` wins over it)
RESULTS_ENV = "GRDLINE_BENCH_RESULTS"
DEFAULT_RESULTS = Path(__file__).resolve().parent / "results"


def add_common_args(ap: argparse.ArgumentParser, short_help: str) -> None:
    """``--short`` (what it does in this program: ``short_help``) and ``--results-dir``."""
    ap.add_argument("--short", action="store_true",
                    help=f"seconds, tiny sizes: the real code path, numbers that mean nothing ({short_help})")
    ap.add_argument("--results-dir", type=Path, default=None,
                    help=f"folder of the JSON (default ${RESULTS_ENV}, else benchmarks/results)")


def results_dir(args: argparse.Namespace | None = None) -> Path:
    """The folder this run's JSON goes to (created)."""
    chosen = getattr(args, "results_dir", None) or os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS
    path = Path(chosen)
    path.mkdir(parents=True, exist_ok=True)
    return path


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def out_path(args: argparse.Namespace | None, name: str) -> Path:
    """The program's ``--out`` file where it has one and it was given, else ``<results dir>/<name>``
    (``name`` may hold ``{time}``)."""
    explicit = getattr(args, "out", None)
    if explicit:
        path = Path(explicit)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
    return results_dir(args) / name.format(time=timestamp())


def write_json(args: argparse.Namespace | None, name: str, data: dict[str, Any]) -> Path:
    """``data`` (plus ``"short"``) as JSON at :func:`out_path`; returns the path."""
    path = out_path(args, name)
    out = {**data, "short": bool(getattr(args, "short", False))}
    path.write_text(json.dumps(out, indent=2, default=str) + "\n")  # default: Paths
    return path


def apply_short(ap: argparse.ArgumentParser, args: argparse.Namespace, **values: Any) -> None:
    """With ``--short``: each of ``values`` replaces its option's default (an option given on the
    command line keeps its value)."""
    if not args.short:
        return
    for name, value in values.items():
        if getattr(args, name) == ap.get_default(name):
            setattr(args, name, value)

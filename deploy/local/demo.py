"""The demo: runs every stage of the line that exists, on the local stack. See demo.sh."""

from __future__ import annotations

import sys

from inference.cli import main as grdline


def run(*argv: str) -> None:
    print(f"\n$ grdline {' '.join(argv)}", flush=True)
    code = grdline(list(argv))
    if code:
        raise SystemExit(f"demo: `grdline {' '.join(argv)}` failed with exit code {code}")


def main() -> int:
    run("stack", "up")
    run("stack", "status")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Settings for every test: quiet, reproducible, sized for a 2-core machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Ray: no usage reporting, no dashboard; set before anything imports ray.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


# --------------------------------------------------------------- benchmarks' short modes
# (tests/unit/benchmarks, tests/integration/benchmarks)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_short(tmp_path: Path):
    """``run_short("bench_x.py", timeout_s) -> (JSON dict, seconds)``: the program's ``--short`` mode
    as a subprocess writing into this test's tmp folder; fails unless it exits 0 and writes exactly
    one JSON file there (its output is in the failure message)."""

    def run(program: str, timeout_s: float, *extra: str) -> tuple[dict, float]:
        out = tmp_path / "results"
        t0 = time.monotonic()
        # its own process group: on a time-out the program and every process it started (a Ray of
        # its own) are killed, nothing else
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "benchmarks" / program), "--short", "--results-dir", str(out), *extra],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            stdout, stderr = proc.communicate()
            pytest.fail(f"{program} --short still running after {timeout_s:.0f} s\n--- stdout\n"
                        f"{stdout[-4000:]}\n--- stderr\n{stderr[-4000:]}")
        seconds = time.monotonic() - t0
        tail = f"\n--- stdout\n{stdout[-4000:]}\n--- stderr\n{stderr[-4000:]}"
        assert proc.returncode == 0, f"{program} --short exited {proc.returncode} after {seconds:.0f} s{tail}"
        files = sorted(out.glob("*.json"))
        assert len(files) == 1, f"{program} --short wrote {[f.name for f in files]} into {out}{tail}"
        print(f"{program} --short: {seconds:.1f} s")
        return json.loads(files[0].read_text()), seconds

    return run

"""Every benchmark that needs no service runs in its ``--short`` mode and writes its JSON: the
programs cannot rot unnoticed (issue 18). Numbers are not asserted (a shared CPU), only that the
program ran its real code path to the end and wrote the JSON with its top-level keys."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_bench_gpu_short(run_short):
    """Without CUDA the no-GPU path: a JSON that says so; with CUDA a few eager/CUDA-graph rows."""
    import torch

    out, _ = run_short("bench_gpu.py", 300)
    assert {"benchmark", "gpu", "torch", "short"} <= out.keys()
    assert out["gpu"] is torch.cuda.is_available() and out["short"] is True
    if out["gpu"]:
        assert {"rows", "skipped"} <= out.keys()
    else:
        assert "reason" in out


def test_bench_model_short(run_short):
    out, _ = run_short("bench_model.py", 300)
    assert {"device", "torch", "threads", "rows", "conv_rate", "best", "short"} <= out.keys()


def test_bench_runtimes_short(run_short):
    out, _ = run_short("bench_runtimes.py", 300)
    assert {"benchmark", "model", "kinds", "recommendation", "seconds", "short"} <= out.keys()


def test_bench_simulator_short(run_short):
    out, _ = run_short("bench_simulator.py", 120)
    assert {"meta", "results", "short"} <= out.keys()


def test_bench_quality_short_trains_on_a_tiny_simulated_set(run_short):
    """A few steps on simulated vials in a temporary folder: never the shared datasets."""
    out, _ = run_short("bench_quality.py", 300)
    assert {"argv", "steps", "split", "threads", "rows", "short"} <= out.keys()
    assert [r["dataset"] for r in out["rows"]] == ["vials"]

"""`grdline serve` / `grdline results tail`: registered, parsed, entries formatted."""

from __future__ import annotations

import argparse

import pytest

from inference.serve_cli import _config, format_entry, register

from .test_contracts import make_result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="command", required=True))
    return p


def test_serve_and_results_tail_parse(tmp_path):
    args = parser().parse_args(["serve", "--model", str(tmp_path), "--ingress-replicas", "2", "--batch-size", "8"])
    cfg = _config(args)
    assert cfg.model_dir == tmp_path and cfg.ingress.num_replicas == 2 and cfg.tuning.max_batch_size == 8
    assert args.bind == "127.0.0.1"  # Ray and the HTTP proxy stay on loopback unless configured
    args = parser().parse_args(["results", "tail", "--line", "L1", "--no-follow"])
    assert args.line == "L1" and args.no_follow and args.func.__name__ == "_tail"


def test_standin_serve_config():
    cfg = _config(parser().parse_args(["serve", "--standin-ms", "5"]))
    assert cfg.standin is not None and cfg.standin.batch_latency_ms == 5


def test_format_entry_shows_decision_and_ids():
    r = make_result()
    fields = {k.encode(): (v if isinstance(v, bytes) else v.encode()) for k, v in r.to_redis(with_mask=False).items()}
    line = format_entry(fields)
    assert "REJECT" in line and "item=i1" in line and "frame=f1" in line and "cam=cam0" in line
    late = make_result(late=True, decision=False, score=None, late_policy="pass")
    fields = {k.encode(): (v if isinstance(v, bytes) else v.encode()) for k, v in late.to_redis(with_mask=False).items()}
    assert "pass" in format_entry(fields) and "LATE" in format_entry(fields)


def test_format_entry_marks_failsafe_decisions():
    r = make_result(score=None, failsafe="model_failure", late_policy="reject")
    fields = {k.encode(): (v if isinstance(v, bytes) else v.encode()) for k, v in r.to_redis(with_mask=False).items()}
    assert "FAILSAFE:model_failure" in format_entry(fields)


def test_expected_cameras_from_the_command_line():
    cfg = _config(parser().parse_args(["serve", "--standin-ms", "5", "--expect", "L1/cam0", "--expect", "L1/cam1"]))
    assert [(e.line, e.camera) for e in cfg.expected_cameras] == [("L1", "cam0"), ("L1", "cam1")]
    with pytest.raises(SystemExit, match="LINE/CAMERA"):
        _config(parser().parse_args(["serve", "--standin-ms", "5", "--expect", "cam0"]))

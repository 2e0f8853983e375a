"""The local stack's pure parts: broker settings fit for frames, clear errors, the scrape config."""

from __future__ import annotations

import socket

import pytest
import yaml

from dashboards.prometheus import render_prometheus_config
from inference.settings import RAY_METRICS_PORT
from inference.stack_cli import load_stack
from ingest.topics import MAX_MESSAGE_BYTES

stack = load_stack()


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_kafka_config_is_kraft_combined_and_fits_frames(tmp_path):
    props = _props(stack._kafka_config(tmp_path))
    assert props["process.roles"] == "broker,controller"
    assert props["auto.create.topics.enable"] == "false"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert int(props["message.max.bytes"]) >= MAX_MESSAGE_BYTES >= 8 * 1024 * 1024
    for key in ("listeners", "advertised.listeners", "controller.quorum.voters"):
        assert "127.0.0.1" in props[key], key  # loopback only


def test_taken_port_is_named_in_the_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(stack.StackError, match=f"port 127.0.0.1:{port} is taken"):
            stack._check_port_free("redis", port)


def test_missing_binary_gives_an_install_hint():
    with pytest.raises(stack.StackError, match="not found on PATH: install it"):
        stack._require("grdline-no-such-binary", "install it")


def test_prometheus_config_scrapes_ray_and_ingest():
    config = yaml.safe_load(render_prometheus_config())
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert jobs["ray"] == [f"127.0.0.1:{RAY_METRICS_PORT}"]
    assert "grdline-ingest" in jobs


def test_redis_runs_with_aof_everysec_and_noeviction(tmp_path):
    conf = dict(line.split(" ", 1) for line in stack._redis_config(tmp_path).splitlines())
    assert conf["appendonly"] == "yes" and conf["appendfsync"] == "everysec"
    assert conf["maxmemory-policy"] == "noeviction"
    assert conf["bind"] == "127.0.0.1" and conf["dir"] == str(tmp_path)
    assert "requirepass" not in conf
    assert stack._redis_config(tmp_path, "s3cret").splitlines()[-1] == "requirepass s3cret"
    assert stack.REDIS_FSYNC_WINDOW_S == 1.0


def test_restart_redis_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="shutdown, nosave or kill"):
        stack.restart_redis("reboot")

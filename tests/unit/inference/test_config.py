from __future__ import annotations

import pytest
from pydantic import ValidationError

from inference.app import AppArgs, config_from_args, model_options
from inference.config import ServeAppConfig, load_config


def test_defaults_point_at_the_local_stack(tmp_path):
    cfg = ServeAppConfig(model_dir=tmp_path)
    assert cfg.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert cfg.redis.port == 16379
    # even single-frame calls can fill the running batch and the queued ones
    assert cfg.max_ongoing_requests() == cfg.tuning.max_batch_size * (1 + cfg.model.queue_batches)


def test_exactly_one_model_source(tmp_path):
    with pytest.raises(ValidationError, match="exactly one"):
        ServeAppConfig()
    with pytest.raises(ValidationError, match="exactly one"):
        ServeAppConfig(model_dir=tmp_path, standin={})


def test_unknown_keys_are_refused_at_every_level(tmp_path):
    with pytest.raises(ValidationError):
        ServeAppConfig(model_dir=tmp_path, batch=3)
    with pytest.raises(ValidationError):
        ServeAppConfig(model_dir=tmp_path, tuning={"max_batch": 3})
    with pytest.raises(ValidationError):
        ServeAppConfig(model_dir=tmp_path, redis={"hots": "x"})


def test_yaml_file_and_environment_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("GRDLINE_REDIS_PASSWORD", "s3cret")
    monkeypatch.setenv("GRDLINE_KAFKA_SASL_PASSWORD", "k-secret")
    f = tmp_path / "app.yaml"
    f.write_text(
        "standin: {batch_latency_ms: 5}\n"
        "tuning: {max_batch_size: 8, batch_wait_timeout_s: 0.02}\n"
        "redis: {host: redis.internal}\n"
        "kafka: {security_protocol: SASL_SSL, sasl_mechanism: SCRAM-SHA-512, sasl_username: u}\n"
        "recipes: {vials: {roi: none, deadline_ms: 250}}\n"
    )
    cfg = load_config(f)
    assert cfg.tuning.max_batch_size == 8
    assert cfg.redis.host == "redis.internal"
    assert cfg.redis.client_kwargs()["password"] == "s3cret"  # env still applies to nested settings
    assert cfg.kafka.client_kwargs()["sasl_plain_password"] == "k-secret"
    assert "s3cret" not in repr(cfg) and "k-secret" not in repr(cfg)
    assert cfg.recipe("vials").deadline_ms == 250
    assert cfg.recipe("other").roi == "recipe"


def test_app_args_merge_over_file(tmp_path):
    f = tmp_path / "app.yaml"
    f.write_text("standin: {batch_latency_ms: 5}\ntuning: {max_batch_size: 8}\n")
    cfg = config_from_args(AppArgs(config_file=str(f), config={"tuning": {"batch_wait_timeout_s": 0.5}}))
    assert cfg.tuning.max_batch_size == 8 and cfg.tuning.batch_wait_timeout_s == 0.5


def test_model_options_sizes_admission_and_autoscaling(tmp_path):
    cfg = ServeAppConfig(
        standin={}, tuning={"max_batch_size": 32},
        model={"autoscaling": {"min_replicas": 1, "max_replicas": 4}},
    )
    opts = model_options(cfg)
    group = cfg.ingress.request_group
    assert opts["max_ongoing_requests"] >= 2 * 32  # a running and a queued batch fit
    assert opts["autoscaling_config"]["max_replicas"] == 4
    assert opts["autoscaling_config"]["target_ongoing_requests"] * group == 64
    assert "num_replicas" not in opts
    assert "num_gpus" not in opts["ray_actor_options"]  # stand-in never asks for a GPU
    assert opts["user_config"]["max_batch_size"] == 32
    # OpenMP threads of the model replicas sleep between batches instead of spinning on the cores
    assert opts["ray_actor_options"]["runtime_env"]["env_vars"]["OMP_WAIT_POLICY"] == "PASSIVE"
    bare = model_options(cfg.model_copy(update={"model": cfg.model.model_copy(update={"env_vars": {}})}))
    assert "runtime_env" not in bare["ray_actor_options"]


def test_rebalance_timeout_must_cover_the_revoke_drain(tmp_path):
    with pytest.raises(ValidationError, match="max_poll_interval_ms"):
        ServeAppConfig(model_dir=tmp_path, ingress={"max_poll_interval_ms": 12_000, "revoke_drain_timeout_s": 10})
    ok = ServeAppConfig(model_dir=tmp_path, ingress={"max_poll_interval_ms": 15_000, "revoke_drain_timeout_s": 10})
    assert ok.ingress.max_poll_interval_ms == 15_000


@pytest.fixture
def pristine_loggers():
    """Restore the project's loggers after a test that configures them."""
    import logging

    from inference.logs import PROJECT_LOGGERS

    saved = {n: (lg.level, list(lg.handlers), lg.propagate)
             for n in (*PROJECT_LOGGERS, "kafka") for lg in [logging.getLogger(n)]}
    yield
    for n, (level, handlers, propagate) in saved.items():
        lg = logging.getLogger(n)
        lg.setLevel(level)
        lg.handlers[:] = handlers
        lg.propagate = propagate


def test_replica_logging_shows_project_info_once(capsys, pristine_loggers):
    import logging

    from inference.logs import configure_replica_logging

    configure_replica_logging("INFO")
    configure_replica_logging("INFO")  # a second deployment in the same process adds no handler
    logging.getLogger("inference.consumer").info("partitions assigned: [0]")
    logging.getLogger("inference.consumer").debug("not shown")
    err = capsys.readouterr().err
    assert err.count("partitions assigned: [0]") == 1
    assert "not shown" not in err
    assert logging.getLogger("kafka").level == logging.WARNING


def test_reject_takeover_must_outlast_the_delivery_timeout_and_faults_are_standin_only(tmp_path):
    with pytest.raises(ValidationError, match="reject_takeover_s"):
        ServeAppConfig(standin={}, sink={"delivery_timeout_ms": 30_000, "reject_takeover_s": 20})
    with pytest.raises(ValidationError, match="stand-in"):
        ServeAppConfig(model_dir=tmp_path, tuning={"fault": "nan"})
    with pytest.raises(ValidationError, match="max_inflight_age_s"):
        ServeAppConfig(standin={}, ingress={"max_inflight_age_s": 0})
    cfg = ServeAppConfig(standin={})
    assert cfg.replay.namespace == "replay" and cfg.topics.replay == "frames.replay"
    assert cfg.deadline.failsafe_policy == "reject" and cfg.deadline.default_bound_ms == 30_000

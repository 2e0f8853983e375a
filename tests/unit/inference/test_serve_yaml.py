"""The shipped Serve config is a valid Serve config whose args build a valid app config."""

from __future__ import annotations

from pathlib import Path

import yaml

from inference.app import AppArgs, config_from_args, model_options
from inference.config import ModelTuning

YAML = Path(__file__).resolve().parents[3] / "deploy" / "serve" / "grdline.yaml"


def test_serve_yaml_validates_and_builds():
    from ray.serve.schema import ServeDeploySchema

    data = yaml.safe_load(YAML.read_text())
    schema = ServeDeploySchema.model_validate(data)
    (app,) = schema.applications
    assert app.import_path == "inference.app:build_app"
    cfg = config_from_args(AppArgs.model_validate(app.args))
    deployments = {d.name: d for d in app.deployments}
    tuning = ModelTuning.model_validate(deployments["GRDNetModel"].user_config)
    assert deployments["GRDNetModel"].max_ongoing_requests >= 2 * tuning.max_batch_size
    assert deployments["LineIngress"].num_replicas == cfg.ingress.num_replicas
    opts = model_options(cfg.model_copy(update={"model": cfg.model.model_copy(update={"device": "cpu"})}))
    assert opts["autoscaling_config"]["max_replicas"] == 4

"""The Serve application builder: ``serve run inference.app:build_app model_dir=DIR``.

:func:`build_app` takes typed :class:`AppArgs` (Serve validates the ``args:`` of a Serve config
YAML, or ``key=value`` pairs of ``serve run``, into it): an optional ServeAppConfig YAML
(``config_file``), a nested ``config`` mapping merged over it, and ``model_dir`` as a shortcut.
:func:`app_from_config` turns a :class:`~inference.config.ServeAppConfig` into the bound graph
``LineIngress(cfg, GRDNetModel(cfg))`` with Serve options derived from it:

* model: ``max_ongoing_requests`` = room for ``(1 + queue_batches)`` full batches, counted in handle
  calls of ``request_group`` frames, so a replica always has a full batch queued behind the
  running one; ``user_config`` = the live :class:`ModelTuning`;
  fractional ``num_gpus`` when the cluster has GPUs (device ``auto``), CPU otherwise; a fixed
  replica count or an autoscaling config on ongoing requests (default target: one running and one
  queued batch per replica);
* ingress: ``num_replicas`` consumers in one group (keep it ≤ the frames topic's partitions).

A Serve config YAML (``deploy/serve/grdline.yaml``) may override the deployment options; its
``user_config`` for ``GRDNetModel`` is applied live by ``serve deploy``.
"""

# No ``from __future__ import annotations`` here: Serve validates the builders args only when the
# parameter annotation is a real class (inspect.signature without eval_str).

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application

from inference.config import ModelTuning, ServeAppConfig, load_config
from inference.ingress import LineIngress
from inference.model_deployment import GRDNetModel


class AppArgs(BaseModel):
    """Arguments of :func:`build_app`."""

    model_config = ConfigDict(extra="forbid")

    config_file: str | None = None
    model_dir: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config_from_args(args: AppArgs) -> ServeAppConfig:
    import yaml

    data: dict[str, Any] = {}
    if args.config_file:
        loaded = yaml.safe_load(Path(args.config_file).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.config_file}: must hold a mapping")
        data = loaded
    data = _merge(data, args.config)
    if args.model_dir is not None:
        data["model_dir"] = args.model_dir
    return load_config(None, **data)


def gpu_available(cfg: ServeAppConfig) -> bool:
    """Whether model replicas get a GPU share: device ``cuda``, or ``auto`` and the cluster has one."""
    if cfg.model.device == "cpu" or cfg.standin is not None:
        return False
    if cfg.model.device == "cuda":
        return True
    import ray

    if ray.is_initialized():
        return ray.cluster_resources().get("GPU", 0) > 0
    import torch

    return torch.cuda.is_available()


def model_options(cfg: ServeAppConfig) -> dict[str, Any]:
    actor: dict[str, Any] = {"num_cpus": cfg.model.num_cpus}
    if cfg.model.env_vars:
        actor["runtime_env"] = {"env_vars": dict(cfg.model.env_vars)}
    if gpu_available(cfg):
        actor["num_gpus"] = cfg.model.num_gpus
    opts: dict[str, Any] = {
        "max_ongoing_requests": cfg.max_ongoing_requests(),
        "user_config": cfg.tuning.model_dump(),
        "ray_actor_options": actor,
    }
    a = cfg.model.autoscaling
    if a is not None:
        opts["autoscaling_config"] = {
            "min_replicas": a.min_replicas,
            "max_replicas": a.max_replicas,
            "initial_replicas": max(a.min_replicas, 1),
            "target_ongoing_requests": cfg.target_ongoing_requests(),
            "upscale_delay_s": a.upscale_delay_s,
            "downscale_delay_s": a.downscale_delay_s,
        }
    else:
        opts["num_replicas"] = cfg.model.num_replicas
    return opts


def app_from_config(cfg: ServeAppConfig) -> Application:
    # The live knobs travel only as user_config: constructor args without them mean a change of
    # batching or thresholds redeploys as a reconfigure, not a replica restart.
    static = cfg.model_copy(update={"tuning": ModelTuning()})
    model = GRDNetModel.options(**model_options(cfg)).bind(static)
    ingress_actor: dict[str, Any] = {"num_cpus": cfg.ingress.num_cpus}
    if cfg.ingress.env_vars:
        ingress_actor["runtime_env"] = {"env_vars": dict(cfg.ingress.env_vars)}
    return LineIngress.options(
        num_replicas=cfg.ingress.num_replicas,
        ray_actor_options=ingress_actor,
        graceful_shutdown_timeout_s=cfg.ingress.revoke_drain_timeout_s + 20,
    ).bind(static, model)


def build_app(args: AppArgs) -> Application:
    """``serve run inference.app:build_app [config_file=...] [model_dir=...]``."""
    return app_from_config(config_from_args(args))


def run(cfg: ServeAppConfig, blocking: bool = False) -> Any:
    """Deploy ``cfg`` on the running Ray/Serve (tests, CLI). Returns the ingress handle."""
    return serve.run(app_from_config(cfg), name=cfg.app_name, route_prefix=cfg.route_prefix, blocking=blocking)

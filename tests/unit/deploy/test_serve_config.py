"""(a) Ray's own schema accepts the Serve config, and the KubeRay RayService embeds the same document.

deploy/serve/grdline.yaml is the one source: `serve deploy` reads it, deploy/render.py embeds it
verbatim as the RayService's serveConfigV2 (and the clustered local stack derives its config from it).
"""

from __future__ import annotations

import re

import yaml

from inference.app import AppArgs, config_from_args

from ._render import DEPLOY, load_render

render = load_render()


def _rayservice() -> dict:
    return yaml.safe_load((DEPLOY / "k8s" / "base" / "ray" / "rayservice.yaml").read_text())


def test_ray_serve_schema_accepts_the_serve_config():
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(render.serve_config())
    (app,) = schema.applications
    config_from_args(AppArgs.model_validate(app.args))  # the app's own typed config accepts the args


def test_rayservice_embeds_the_same_document():
    from ray.serve.schema import ServeDeploySchema

    embedded = _rayservice()["spec"]["serveConfigV2"]
    source = render.SERVE_CONFIG.read_text()
    assert embedded == source  # verbatim, comments included
    assert yaml.safe_load(embedded) == render.serve_config()
    ServeDeploySchema.model_validate(yaml.safe_load(embedded))


def test_every_derived_file_is_fresh():
    assert render.stale() == [], "run `python deploy/render.py` and commit the result"


def test_frames_partitions_follow_the_ingress_replicas():
    replicas = render.ingress_replicas()
    topics = {d["spec"]["topicName"]: d for d in yaml.safe_load_all(
        (DEPLOY / "k8s" / "base" / "kafka" / "topics.yaml").read_text())}
    frames = topics["frames"]["spec"]["partitions"]
    assert frames >= replicas and frames % replicas == 0
    assert render.frames_partitions(3, 4) == 6 and render.frames_partitions(8, 4) == 8
    for d in topics.values():
        assert d["spec"]["replicas"] == 3 and d["spec"]["config"]["min.insync.replicas"] == "2"


def test_image_ray_version_matches_the_rayservice():
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    (pinned,) = re.findall(r"^ARG RAY_VERSION=(\S+)$", dockerfile, flags=re.M)
    assert _rayservice()["spec"]["rayClusterConfig"]["rayVersion"] == pinned


def test_dockerfile_runs_as_non_root_with_a_health_check_and_no_secret():
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)$", text, flags=re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK ", text, flags=re.M)
    assert re.search(r"^ARG BASE_IMAGE=\S*cuda", text, flags=re.M)  # CUDA default, CPU via build arg
    for line in text.splitlines():
        if line.startswith(("ENV", "ARG")) or line.startswith(" "):
            assert not re.search(r"PASSWORD|TOKEN|SECRET|SASL", line, flags=re.I), line

"""Model artefact: one directory per model, safe to load.

Layout::

    <dir>/weights.safetensors   all tensors of GRDNet (generator, discriminator, segmenter)
    <dir>/model.json            {"format", "format_version", "version", "created", "config",
                                 "thresholds": {"image", "pixel"}, "calibration", "sha256"}

Loading never unpickles: weights are read with safetensors, metadata with ``json``. A file that
is a pickle / torch zip archive, truncated, or whose tensors do not match the config raises
:class:`~model.errors.ArtefactError` naming the file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from model.config import GRDConfig, make_config
from model.errors import ArtefactError
from model.networks import GRDNet

FORMAT = "grdline-model"
FORMAT_VERSION = 1
WEIGHTS = "weights.safetensors"
META = "model.json"


class Thresholds(BaseModel):
    """Image threshold τ on η and pixel threshold τ_px on M̂."""

    model_config = ConfigDict(extra="forbid")
    image: float
    pixel: float


class ModelMeta(BaseModel):
    """Contents of ``model.json``."""

    model_config = ConfigDict(extra="forbid")
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    version: str
    created: str
    config: GRDConfig
    thresholds: Thresholds
    calibration: dict[str, Any] = Field(default_factory=dict)
    sha256: str = ""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(
    net: GRDNet,
    out_dir: str | Path,
    *,
    version: str,
    thresholds: Thresholds,
    calibration: dict[str, Any] | None = None,
) -> Path:
    """Write ``net`` (weights + config + thresholds + version) to ``out_dir``; returns the dir."""
    from safetensors.torch import save_file

    for name, val in (("image", thresholds.image), ("pixel", thresholds.pixel)):
        if not math.isfinite(val):
            raise ArtefactError(f"{name} threshold must be finite, got {val}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in net.state_dict().items()}
    weights = out / WEIGHTS
    save_file(tensors, str(weights), metadata={"format": FORMAT, "version": version})
    meta = ModelMeta(
        version=version,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        config=net.cfg,
        thresholds=thresholds,
        calibration=calibration or {},
        sha256=_sha256(weights),
    )
    (out / META).write_text(meta.model_dump_json(indent=2) + "\n")
    return out


def read_meta(model_dir: str | Path) -> ModelMeta:
    """Read and validate ``model.json`` of an artefact directory."""
    path = Path(model_dir) / META
    if not Path(model_dir).is_dir():
        raise ArtefactError(f"model directory {model_dir} does not exist")
    if not path.is_file():
        raise ArtefactError(f"{path} is missing (not a GRD-Line model directory?)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtefactError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ArtefactError(f"{path}: format is not {FORMAT!r}")
    if data.get("format_version") != FORMAT_VERSION:
        raise ArtefactError(
            f"{path}: format_version {data.get('format_version')!r} is not supported "
            f"(this code reads {FORMAT_VERSION})"
        )
    try:
        return ModelMeta.model_validate(data)
    except ValueError as exc:
        raise ArtefactError(f"{path}: invalid model metadata: {exc}") from exc


_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol >= 2, zip (torch.save archive)


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file into CPU tensors; refuses pickles and corrupt files."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    refuse_pickle(p)
    try:
        return load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ArtefactError(f"{p} is not a valid safetensors file: {exc}") from exc


def refuse_pickle(p: Path) -> None:
    """Raise :class:`ArtefactError` if ``p`` is missing or looks like a pickle / zip archive."""
    if not p.is_file():
        raise ArtefactError(f"{p} is missing")
    with p.open("rb") as f:
        head = f.read(8)
    if any(head.startswith(m) for m in _PICKLE_MAGIC):
        raise ArtefactError(
            f"{p} is a pickle / torch.save archive; refusing to load it (pickles can execute "
            "code). Weights must be safetensors."
        )


def load(model_dir: str | Path, *, verify_hash: bool = True) -> tuple[GRDNet, ModelMeta]:
    """Load an artefact into a CPU :class:`GRDNet` in eval mode, plus its metadata."""
    meta = read_meta(model_dir)
    weights = Path(model_dir) / WEIGHTS
    refuse_pickle(weights)
    if verify_hash and meta.sha256 and _sha256(weights) != meta.sha256:
        raise ArtefactError(f"{weights}: sha256 does not match model.json (file changed?)")
    state = load_state(weights)
    net = GRDNet(meta.config)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ArtefactError(
            f"{weights} does not match its config: missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}"
        )
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ArtefactError(
                f"{weights}: tensor {k} has shape {tuple(state[k].shape)}, config expects "
                f"{tuple(v.shape)}"
            )
    net.load_state_dict(state, strict=True)
    net.eval()
    return net, meta


def save_untrained(
    out_dir: str | Path,
    profile: str = "line",
    image_size: int = 64,
    channels: int = 1,
    seed: int = 0,
    threshold: float = 0.5,
    pixel_threshold: float = 0.5,
    **overrides: Any,
) -> Path:
    """Create an untrained but valid artefact quickly (for tests of the serving side)."""
    cfg = make_config(profile, image_size=image_size, channels=channels, **overrides)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        net = GRDNet(cfg).eval()
    return save(
        net,
        out_dir,
        version=f"untrained-{profile}-{image_size}px-c{channels}-seed{seed}",
        thresholds=Thresholds(image=threshold, pixel=pixel_threshold),
    )

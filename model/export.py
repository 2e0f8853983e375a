"""ONNX export of the serving path (``grdline export``) and the ONNX Runtime backend's runner.

What is exported is exactly what the :class:`~model.predictor.Predictor` runs in torch:
:class:`~model.networks.InferenceNet` (E1 → decoder → segmenter) with BatchNorm folded into the
convs (when ``inference.fuse_norm``), in fp32, with a dynamic batch axis::

    x       float32 (B, C, S, S) in [0, 1]   (uint8 / 255, NCHW)
    x_hat   float32 (B, C, S, S)             reconstruction
    logits  float32 (B, 1, S, S)             segmenter logits; M̂ = sigmoid(logits)

The post-processing (sigmoid, ROI, η = max of a k×k mean filter) stays in torch in the Predictor
for both backends, so scoring is the same code whichever runtime produced the logits.

Files, next to the artefact by default::

    <dir>/model.onnx        the graph and weights (protobuf; loading it executes no code)
    <dir>/model.onnx.json   :class:`OnnxMeta`: inputs/outputs, opset, sha256 of the source
                            weights and of the .onnx, fp32 thresholds, post-processing

TorchScript is not exported (decision, measured by ``benchmarks/bench_runtimes.py`` on trained
``line`` models, 2 shared cores; ``docs/evaluations/runtimes.md``): a traced and frozen module was
never the fastest variant — 1.03–1.16× eager fp32 over batches 1–32 where native bf16 was
1.63–1.78× and ONNX Runtime 1.18–1.33×, and on torch's AVX2 path at best level with ONNX Runtime —
``torch.jit`` is deprecated, and a TorchScript archive is a zip of pickles, which the artefact
rules refuse to load.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from model.artefact import ModelMeta, Thresholds, load
from model.blocks import fuse_norms
from model.errors import ArtefactError, ModelError
from model.networks import GRDNet, InferenceNet

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
OPSET = 18
INPUT = "x"
OUTPUTS = ("x_hat", "logits")
ONNX_FORMAT = "grdline-onnx"


class TensorSpec(BaseModel):
    """One graph input or output: ``shape`` uses ``"batch"`` for the dynamic axis."""

    model_config = ConfigDict(extra="forbid")
    name: str
    dtype: Literal["float32"] = "float32"
    shape: list[str | int]
    description: str


class OnnxMeta(BaseModel):
    """Contents of ``model.onnx.json`` (the sidecar of an exported graph)."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["grdline-onnx"] = ONNX_FORMAT
    schema_version: Literal[1] = 1
    model_version: str
    weights_sha256: str  # sha256 of the artefact's weights.safetensors (model.json "sha256")
    onnx_sha256: str
    opset: int
    precision: Literal["fp32"] = "fp32"
    fuse_norm: bool
    image_size: int
    #: how a frame maps into the square input (model.geometry); sidecars written before it: squash
    geometry: Literal["letterbox", "squash"] = "squash"
    channels: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    pool_kernel: int
    postprocess: str
    thresholds_fp32: Thresholds
    exported_with: dict[str, str]
    created: str
    max_abs_logit_diff: float | None = None  # ORT vs eager torch on a random batch at export


def sidecar_path(onnx_path: str | Path) -> Path:
    """``model.onnx`` → ``model.onnx.json`` (never ``model.json``, the artefact's own file)."""
    p = Path(onnx_path)
    return p.with_name(p.name + ".json")


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fp32_thresholds(meta: ModelMeta) -> Thresholds:
    """τ and τ_px calibrated in fp32 (training records them per precision), else the main pair."""
    th = meta.calibration.get("thresholds_by_precision", {}).get("fp32")
    return Thresholds.model_validate(th) if th else meta.thresholds


def inference_module(net: GRDNet, fuse_norm: bool = True) -> InferenceNet:
    """A CPU fp32 copy of the serving path, eval mode, norms folded when ``fuse_norm``."""
    inet = InferenceNet(copy.deepcopy(net).cpu().float()).eval()
    return fuse_norms(inet) if fuse_norm else inet


def onnx_bytes(net: GRDNet, fuse_norm: bool = True) -> bytes:
    """Export the serving path of ``net`` to an ONNX model (bytes); batch axis dynamic.

    Uses the ``torch.export``-based exporter (``dynamo=True``; the TorchScript-based one is
    deprecated). The example batch is 2 so the batch axis is not specialised to 1.
    """
    cfg = net.cfg
    inet = inference_module(net, fuse_norm)
    x = torch.rand(2, cfg.channels, cfg.image_size, cfg.image_size)
    batch = torch.export.Dim("batch", min=1, max=65536)
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    try:
        prog = torch.onnx.export(
            inet, (x,), None, input_names=[INPUT], output_names=list(OUTPUTS),
            opset_version=OPSET, dynamo=True, dynamic_shapes={"x": {0: batch}}, verbose=False,
        )
    except Exception as exc:  # the exporter raises many unrelated types; give them context
        raise ModelError(f"ONNX export of the {cfg.profile} inference path failed: {exc}") from exc
    return prog.model_proto.SerializeToString()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def export_onnx(model_dir: str | Path, out: str | Path | None = None,
                check: bool = True) -> tuple[Path, OnnxMeta]:
    """Export the artefact in ``model_dir`` to ``out`` (default ``<dir>/model.onnx``) + sidecar.

    With ``check`` (and onnxruntime installed) the graph is run once on a random batch of 3 and
    compared with eager fp32 torch; a difference above 1e-4 in the logits is an error.
    """
    try:
        import onnx
    except ImportError as exc:
        raise ModelError("grdline export needs onnx and onnxscript "
                         "(pip install 'grdline[onnx]')") from exc

    net, meta = load(model_dir)
    cfg = meta.config
    data = onnx_bytes(net, cfg.inference.fuse_norm)
    try:
        onnx.checker.check_model(onnx.load_from_string(data))
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"ONNX export of {model_dir} is not a valid ONNX model: {exc}") from exc
    diff = None
    if check:
        diff = _check_against_eager(net, cfg.inference.fuse_norm, data)
        if diff is not None and diff > 1e-4:
            raise ModelError(f"ONNX export of {model_dir} differs from eager torch by {diff:.2e} "
                             "in the logits (limit 1e-4); not written")
    path = Path(out) if out is not None else Path(model_dir) / ONNX_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    S, C, B = cfg.image_size, cfg.channels, "batch"
    info = OnnxMeta(
        model_version=meta.version, weights_sha256=meta.sha256, onnx_sha256=_sha256_bytes(data),
        opset=OPSET, fuse_norm=cfg.inference.fuse_norm, image_size=S, geometry=cfg.geometry, channels=C,
        inputs=[TensorSpec(name=INPUT, shape=[B, C, S, S],
                           description=f"image / 255 in [0, 1], NCHW (grey: C=1, colour: RGB), placed by "
                                       f"{cfg.geometry} (letterbox: longer side to {S}, centred, edge-replicated "
                                       "padding that roi zeroes)")],
        outputs=[TensorSpec(name=OUTPUTS[0], shape=[B, C, S, S], description="reconstruction x̂"),
                 TensorSpec(name=OUTPUTS[1], shape=[B, 1, S, S],
                            description="segmenter logits; anomaly map M̂ = sigmoid(logits)")],
        pool_kernel=cfg.pool_kernel,
        postprocess=(f"heat = sigmoid(logits) * roi; score = max over the map of "
                     f"avg_pool2d(heat, {cfg.pool_kernel}, stride=1, "
                     f"padding={cfg.pool_kernel // 2}, count_include_pad=True); "
                     "reject if score >= thresholds_fp32.image; mask = heat >= "
                     "thresholds_fp32.pixel"),
        thresholds_fp32=fp32_thresholds(meta),
        exported_with=_versions(),
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        max_abs_logit_diff=diff,
    )
    try:
        _write_atomic(path, data)
        _write_atomic(sidecar_path(path), (info.model_dump_json(indent=2) + "\n").encode())
    except OSError as exc:
        raise ArtefactError(f"cannot write the ONNX export to {path}: {exc}") from exc
    return path, info


def _versions() -> dict[str, str]:
    import onnx

    out = {"torch": torch.__version__, "onnx": onnx.__version__}
    try:
        import onnxscript

        out["onnxscript"] = onnxscript.__version__
    except ImportError:
        pass
    return out


def _check_against_eager(net: GRDNet, fuse_norm: bool, data: bytes) -> float | None:
    try:
        runner = OrtRunner(data, threads=torch.get_num_threads())
    except ModelError as exc:
        log.warning("export not checked against eager torch: %s", exc)
        return None
    cfg = net.cfg
    x = torch.rand(3, cfg.channels, cfg.image_size, cfg.image_size,
                   generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = inference_module(net, fuse_norm)(x)[1]
    return float((runner(x) - ref).abs().max())


def find_export(model_dir: str | Path, meta: ModelMeta) -> Path | None:
    """``<dir>/model.onnx`` if it was exported from exactly these weights, else None.

    A missing or unreadable sidecar, other weights (sha256), another image size or channel count,
    or a .onnx whose own sha256 changed make it stale: the caller exports in memory instead.
    """
    path = Path(model_dir) / ONNX_FILE
    side = sidecar_path(path)
    if not path.is_file():
        return None
    try:
        info = OnnxMeta.model_validate_json(side.read_text())
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: sidecar %s unreadable (%s)", path, side, exc)
        return None
    cfg = meta.config
    why = None
    if not meta.sha256 or info.weights_sha256 != meta.sha256:
        why = "exported from other weights"
    elif (info.image_size, info.channels) != (cfg.image_size, cfg.channels):
        why = "exported for another input shape"
    elif info.fuse_norm != cfg.inference.fuse_norm:
        why = "exported with another fuse_norm"
    elif _sha256_bytes(path.read_bytes()) != info.onnx_sha256:
        why = "the file changed after export (sha256)"
    if why:
        log.warning("ignoring %s: %s; exporting in memory instead", path, why)
        return None
    return path


def import_onnxruntime() -> Any:
    """``onnxruntime``, or a :class:`ModelError` naming the config field that asked for it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ModelError(
            "inference.backend is 'onnxruntime' but onnxruntime is not installed "
            "(pip install 'grdline[onnx]', or set inference.backend: torch)"
        ) from exc
    return onnxruntime


class OrtRunner:
    """Logits of an exported graph through ONNX Runtime on the CPU (fp32).

    ``threads`` intra-op threads (the Predictor passes torch's count, so one knob sets both) and no
    spinning between runs: a serving replica shares its cores with ingress, Serve and the sinks.
    """

    def __init__(self, model: bytes | str | Path, threads: int) -> None:
        ort = import_onnxruntime()
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, int(threads))
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        src = model if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            where = "in-memory export" if isinstance(model, bytes) else str(model)
            raise ArtefactError(f"ONNX Runtime cannot load {where}: {exc}") from exc
        self.threads = so.intra_op_num_threads

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` float32 (B, C, S, S) on CPU → logits float32 (B, 1, S, S)."""
        arr = np.ascontiguousarray(x.detach().numpy(), dtype=np.float32)
        (logits,) = self.session.run([OUTPUTS[1]], {INPUT: arr})
        return torch.from_numpy(logits)


def ort_forward(net: GRDNet, meta: ModelMeta, onnx_model: bytes | str | Path | None,
                threads: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The Predictor's ``onnxruntime`` forward: a given export, else one made in memory now."""
    import_onnxruntime()  # fail before a long export when the runtime is missing
    if onnx_model is None:
        log.info("exporting %s to ONNX in memory (run `grdline export` to skip this at start-up)",
                 meta.version)
        onnx_model = onnx_bytes(net, meta.config.inference.fuse_norm)
    return OrtRunner(onnx_model, threads)

"""``grdline train`` and ``grdline eval`` (command-line contract of issue 3; keep it stable).

    grdline train --data ROOT --category NAME --profile {line,paper} --out DIR
                  [--epochs N | --steps N] [--image-size N|auto] [--roi PATH] [--seed N] [--device D]
    grdline eval  --model DIR --data ROOT --category NAME --out DIR   # writes DIR/metrics.json
    grdline export --model DIR --format onnx [--out FILE]   # DIR/model.onnx + model.onnx.json
    grdline calibrate --model DIR --good FOLDER [--target-frr X] [--roi PNG] [--defective FOLDER] [--out DIR]

torch is imported inside the handlers so ``grdline --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a GRD-Net model on an MVTec-layout folder")
    p.add_argument("--data", required=True, help="dataset root (MVTec AD layout)")
    p.add_argument("--category", required=True)
    p.add_argument("--profile", choices=["line", "paper"], default="line")
    p.add_argument("--out", required=True, help="model directory to write")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int)
    g.add_argument("--steps", type=int)
    p.add_argument("--image-size", type=_image_size,
                   help="model input size in px, or 'auto': from the product's images (model.data.pick_image_size)")
    p.add_argument("--roi", help="category ROI image (default: <data>/<cat>/roi/default.png)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda if available)")
    p.add_argument("--channels", choices=["auto", "1", "3"], default="auto")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--bottleneck", choices=["crae", "drae"])
    p.add_argument("--roi-mode", choices=["target", "prediction"])
    p.add_argument("--texture-dir", help="folder of defect textures (e.g. DTD)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--preset", help="product preset of config overrides (model.config.PRESETS), e.g. vials")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config field by dotted path, value in YAML, e.g. "
                        "--set anomaly.geo_rotation_deg=5 --set anomaly.vflip=false "
                        "--set scoring.pool_kernel=5 (repeatable)")
    p.set_defaults(func=_train)

    e = subparsers.add_parser("eval", help="evaluate a model directory on a test set")
    e.add_argument("--model", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--category", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--device")
    e.add_argument("--roi", help="category ROI image (default: the dataset's roi/default.png)")
    e.add_argument("--no-roi", action="store_true", help="do not apply ROIs at inference")
    e.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    e.set_defaults(func=_eval)

    c = subparsers.add_parser(
        "calibrate", help="re-fit a model's thresholds on good images collected later (no retraining)")
    c.add_argument("--model", required=True, help="model directory")
    c.add_argument("--good", required=True, help="folder of good images (searched recursively)")
    c.add_argument("--target-frr", type=float, help="false-reject target (default: the model's)")
    c.add_argument("--roi", help="ROI image at the good images' size (default: none)")
    c.add_argument("--defective", help="folder of defective images: escape rate at the new τ (not used to fit it)")
    c.add_argument("--out", help="write the recalibrated artefact here (default: rewrite --model's model.json)")
    c.add_argument("--device")
    c.set_defaults(func=_calibrate)

    x = subparsers.add_parser("export", help="export a model's serving path (ONNX, fp32)")
    x.add_argument("--model", required=True, help="model directory")
    x.add_argument("--format", choices=["onnx"], default="onnx",
                   help="onnx only (TorchScript was never the fastest runtime in "
                        "benchmarks/bench_runtimes.py, and its files are pickles)")
    x.add_argument("--out", help="file to write (default: <model>/model.onnx); the JSON "
                                 "description goes next to it as <file>.json")
    x.add_argument("--no-check", action="store_true",
                   help="skip the ONNX Runtime vs eager torch comparison")
    x.set_defaults(func=_export)


def _image_size(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--image-size takes a number of pixels or 'auto', not {text!r}") from None


def _set_dotted(overrides: dict, item: str) -> None:
    """Apply one ``a.b.c=value`` (value parsed as YAML) to the nested override dict."""
    import yaml

    from model.errors import ConfigError

    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. scoring.pool_kernel=5")
    *parents, leaf = key.strip().split(".")
    node = overrides
    for name in parents:
        node = node.setdefault(name, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {item!r}: {name} is not a section")
    node[leaf] = yaml.safe_load(raw)


def _train(args: argparse.Namespace) -> int:
    from model import data
    from model.config import make_config
    from model.errors import ModelError
    from model.pipeline import train_from_folder

    try:
        over: dict = {"train": {"seed": args.seed}}
        if args.image_size == "auto":
            over["image_size"] = data.pick_image_size(data.list_train(args.data, args.category))
            log.info("input size %d px, picked from the training images", over["image_size"])
        elif args.image_size:
            over["image_size"] = args.image_size
        if args.channels == "auto":
            over["channels"] = data.detect_channels(data.list_train(args.data, args.category))
        else:
            over["channels"] = int(args.channels)
        if args.batch_size:
            over["train"]["batch_size"] = args.batch_size
        if args.bottleneck:
            over["generator"] = {"bottleneck": args.bottleneck}
        if args.roi_mode:
            over["loss"] = {"roi_mode": args.roi_mode}
        if args.texture_dir:
            over["anomaly"] = {"texture_dir": args.texture_dir}
        for item in args.set:
            _set_dotted(over, item)
        cfg = make_config(args.profile, preset=args.preset, **over)
        out, report = train_from_folder(
            cfg, args.data, args.category, args.out, epochs=args.epochs, steps=args.steps,
            roi_path=args.roi, device=args.device, resume=args.resume,
            progress=not args.no_progress,
        )
    except ModelError as exc:
        log.error("%s", exc)
        return 2
    print(json.dumps({"model": str(out), **report["thresholds"], "version": report["version"]}))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from model.errors import ModelError
    from model.evaluate import evaluate

    try:
        m = evaluate(args.model, args.data, args.category, args.out, device=args.device,
                     roi_path=args.roi, use_roi=not args.no_roi, precision=args.precision)
    except ModelError as exc:
        log.error("%s", exc)
        return 2
    keys = ("escape_rate", "false_reject_rate", "image_auroc", "pixel_auroc", "aupro", "f1_max")  # at τ first
    print(json.dumps({k: m[k] for k in keys}))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from model.errors import ModelError
    from model.recalibrate import recalibrate, summary, to_json

    try:
        r = recalibrate(args.model, args.good, args.out, target_false_reject=args.target_frr, roi=args.roi,
                        defective=args.defective, device=args.device)
    except ModelError as exc:
        log.error("%s", exc)
        return 2
    print(summary(r), file=sys.stderr)
    print(to_json(r))
    return 0


def _export(args: argparse.Namespace) -> int:
    from model.errors import ModelError
    from model.export import export_onnx, sidecar_path

    try:
        path, info = export_onnx(args.model, args.out, check=not args.no_check)
    except ModelError as exc:
        log.error("%s", exc)
        return 2
    print(json.dumps({"onnx": str(path), "description": str(sidecar_path(path)),
                      "opset": info.opset, "weights_sha256": info.weights_sha256,
                      "max_abs_logit_diff": info.max_abs_logit_diff}))
    return 0

"""Benchmark of the GRD-Net inference path (a program, not a test).

For each profile and batch size on the current device: images/s of the serving path (E1 →
decoder → segmenter, BatchNorm folded, channels_last, the Predictor's numeric mode), FLOPs per
image (``torch.utils.flop_counter.FlopCounterMode``), achieved GFLOP/s, and that rate as a share
of the device's convolution FLOP rate measured in the same run (a big 3×3 conv). Optionally the
image AUROC of bf16 vs fp32 on a small synthetic set with a briefly trained model.

    python benchmarks/bench_model.py [--profiles line paper] [--threads 2] [--accuracy]
                                     [--out benchmarks/results/bench_model.json]
                                     [--short] [--results-dir DIR]

Prints a table and writes JSON (``--out``, else ``bench_model.json`` in ``--results-dir``).
``--short`` (``make test``): the line profile at 64 px, batches 1 and 2, one short repeat. Absolute times on a shared machine drift by ±30 %; compare the
ratios (share of the conv rate) measured in one run.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import add_common_args, apply_short, write_json  # noqa: E402

from model.blocks import fuse_norms  # noqa: E402
from model.config import make_config  # noqa: E402
from model.networks import GRDNet, InferenceNet  # noqa: E402
from model.predictor import cpu_has_native_bf16, resolve_precision  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn, device: torch.device, min_time: float, repeats: int) -> float:
    """Median seconds per call after warm-up; each sample runs ≥ ``min_time``/repeats."""
    fn()
    fn()
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    one = max(time.perf_counter() - t0, 1e-6)
    inner = max(1, int(min_time / repeats / one))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        _sync(device)
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def conv_rate(device: torch.device, precision: str, min_time: float, repeats: int) -> dict:
    """GFLOP/s of big 3×3 convolutions (channels_last) in the mode the model runs in."""
    if device.type == "cuda":
        shapes = [(8 * 32, 256, 64), (8 * 32, 128, 128)]
    else:
        shapes = [(8, 64, 128), (8, 128, 64)]
    out = {}
    for b, c, s in shapes:
        conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(device).eval()
        x = torch.rand(b, c, s, s, device=device)
        conv = conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        if device.type == "cpu" or precision == "fp32":
            conv, x = conv.to(DTYPES[precision]), x.to(DTYPES[precision])

        def run(conv=conv, x=x):
            with torch.inference_mode():
                if device.type == "cuda" and precision != "fp32":
                    with torch.autocast("cuda", dtype=DTYPES[precision]):
                        conv(x)
                else:
                    conv(x)

        sec = timeit(run, device, min_time, repeats)
        out[f"{c}ch_{s}px_b{b}"] = 2 * b * s * s * c * c * 9 / sec / 1e9
    return out


def serving_net(cfg, device: torch.device, precision: str) -> torch.nn.Module:
    net = GRDNet(cfg)
    net.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics before folding
        x = torch.rand(4, cfg.channels, cfg.image_size, cfg.image_size)
        net.segmenter(x, net.generator.reconstruct(x))
    inet = fuse_norms(InferenceNet(net).eval()).to(device)
    if device.type == "cpu" or precision == "fp32":
        inet = inet.to(DTYPES[precision])
    return inet.to(memory_format=torch.channels_last)


def bench_profile(name: str, batches: list[int], device: torch.device, precision: str,
                  min_time: float, repeats: int, size: int | None) -> list[dict]:
    over = {"image_size": size} if size else {}
    cfg = make_config(name, **over)
    inet = serving_net(cfg, device, precision)
    S, C = cfg.image_size, cfg.channels
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        inet(torch.rand(1, C, S, S, device=device, dtype=next(inet.parameters()).dtype))
    flops = fc.get_total_flops()
    rows = []
    for b in batches:
        x8 = torch.randint(0, 256, (b, S, S, C), dtype=torch.uint8, device=device)

        def run(x8=x8):
            with torch.inference_mode():
                x = x8.permute(0, 3, 1, 2)
                if device.type == "cuda" and precision != "fp32":
                    with torch.autocast("cuda", dtype=DTYPES[precision]):
                        _, logits = inet(x.float() / 255.0)
                else:
                    _, logits = inet(x.to(DTYPES[precision]) / 255.0)
                torch.sigmoid(logits.float())

        try:
            sec = timeit(run, device, min_time, repeats)
        except torch.OutOfMemoryError:
            break
        rows.append({"profile": name, "image_size": S, "channels": C, "batch": b,
                     "precision": precision, "images_per_s": b / sec,
                     "gflop_per_image": flops / 1e9, "gflop_per_s": flops * b / sec / 1e9})
    return rows


def accuracy(precisions: list[str], device: torch.device, steps: int) -> dict:
    """Image AUROC per numeric mode of one briefly trained 64-px line model (synthetic data)."""
    import numpy as np

    from model import data
    from model.metrics import auroc
    from model.networks import image_score
    from model.testing import make_dataset
    from model.trainer import Trainer

    root = tempfile.mkdtemp(prefix="grd_bench_")
    make_dataset(root, n_train=32, n_test_good=16, n_test_defect=12, size=64)
    cfg = make_config("line", image_size=64, channels=1, train={"val_every_steps": 1000})
    tr = Trainer(cfg, data.load_images(data.list_train(root, "synth"), 64, 1), device=device,
                 progress=False)
    tr.fit(steps=steps)
    te = data.list_test(root, "synth")
    x = torch.from_numpy(data.load_images(te, 64, 1)).permute(0, 3, 1, 2).float() / 255
    y = np.array([s.is_anomalous for s in te])
    out = {"steps": steps, "n_test": int(len(y))}
    ref = None
    for p in precisions:
        inet = serving_net(cfg, device, p)
        inet.load_state_dict(fuse_norms(InferenceNet(copy.deepcopy(tr.net)).eval()).state_dict())
        with torch.inference_mode():
            xx = x.to(device)
            if device.type == "cuda" and p != "fp32":
                with torch.autocast("cuda", dtype=DTYPES[p]):
                    _, lg = inet(xx)
            else:
                _, lg = inet(xx.to(DTYPES[p]))
            sc = image_score(torch.sigmoid(lg.float()), cfg.pool_kernel).cpu().numpy()
        out[f"auroc_{p}"] = auroc(y, sc)
        if ref is None:
            ref = sc
        else:
            out[f"max_abs_score_diff_{p}"] = float(np.abs(sc - ref).max())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profiles", nargs="+", default=["line", "paper"])
    ap.add_argument("--batches", nargs="+", type=int, help="batch sizes (default per device)")
    ap.add_argument("--threads", type=int, help="torch threads (CPU)")
    ap.add_argument("--device")
    ap.add_argument("--precision", help="fp32, bf16, fp16 (default: the Predictor's choice)")
    ap.add_argument("--also-bf16", action="store_true", help="CPU: also time bf16")
    ap.add_argument("--min-time", type=float, default=2.0, help="seconds per measurement")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--accuracy", action="store_true", help="bf16 vs fp32 AUROC (trains ~40 s)")
    ap.add_argument("--accuracy-steps", type=int, default=120)
    ap.add_argument("--image-size", type=int, default=None, help="image size (default: the profile's)")
    ap.add_argument("--out", default=None, help="JSON file (default: bench_model.json in the results folder)")
    add_common_args(ap, "line at 64 px, batches 1 and 2, one 0.05 s repeat")
    args = ap.parse_args(argv)
    apply_short(ap, args, profiles=["line"], batches=[1, 2], image_size=64, min_time=0.05, repeats=1)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg_inf = make_config("line").inference
    precision = args.precision or resolve_precision(cfg_inf, device, None)
    precisions = [precision]
    if args.also_bf16 and "bf16" not in precisions:
        precisions.append("bf16")
    gpu = device.type == "cuda"
    default_b = {"line": [1, 16, 64, 256] if gpu else [1, 8, 32],
                 "paper": [1, 8, 32, 64] if gpu else [1, 2]}
    result = {
        "device": torch.cuda.get_device_name(device) if gpu else platform.processor() or "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "native_cpu_bf16": cpu_has_native_bf16(), "rows": [], "conv_rate": {},
    }
    for p in precisions:
        rates = conv_rate(device, p, args.min_time, args.repeats)
        result["conv_rate"][p] = rates
        peak = max(rates.values())
        for prof in args.profiles:
            rows = bench_profile(prof, args.batches or default_b[prof], device, p,
                                 args.min_time, args.repeats, args.image_size)
            for r in rows:
                r["share_of_conv_rate"] = r["gflop_per_s"] / peak
            result["rows"].extend(rows)
    if args.accuracy:
        accs = ["fp32"] + [p for p in ("bf16",) + (("fp16",) if gpu else ()) if p != "fp32"]
        result["accuracy"] = accuracy(accs, device, args.accuracy_steps)

    print(f"device: {result['device']}  torch {result['torch']}  threads {result['threads']}  "
          f"native bf16 (CPU): {result['native_cpu_bf16']}")
    for p, rates in result["conv_rate"].items():
        print(f"conv rate {p}: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in rates.items()))
    print(f"{'profile':8} {'px':>4} {'prec':5} {'batch':>5} {'img/s':>9} {'GFLOP/img':>10} "
          f"{'GFLOP/s':>9} {'of conv':>8}")
    for r in result["rows"]:
        print(f"{r['profile']:8} {r['image_size']:>4} {r['precision']:5} {r['batch']:>5} "
              f"{r['images_per_s']:>9.1f} {r['gflop_per_image']:>10.3f} {r['gflop_per_s']:>9.1f} "
              f"{100 * r['share_of_conv_rate']:>7.0f}%")
    for prof in args.profiles:
        rows = [r for r in result["rows"] if r["profile"] == prof]
        if rows:
            best = max(rows, key=lambda r: r["images_per_s"])
            result.setdefault("best", {})[f"{prof}/{best['precision']}"] = best
    if "accuracy" in result:
        print("accuracy:", json.dumps(result["accuracy"]))
    print(f"wrote {write_json(args, 'bench_model.json', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

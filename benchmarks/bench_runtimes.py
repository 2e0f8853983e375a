"""CPU runtimes of the serving path: eager torch fp32, native bf16, ONNX Runtime fp32, TorchScript.

    python benchmarks/bench_runtimes.py [--model DIR] [--batches 1 8 32] [--threads N]
                                        [--seconds 0.4] [--repeats 5] [--no-torchscript]
                                        [--out benchmarks/results/bench_runtimes.json]

Each variant is a :class:`~model.predictor.Predictor` of the same weights (default: an untrained
``line`` model, 128 px RGB, with non-trivial BatchNorm statistics; ``--model`` for a trained
artefact, whose accuracy numbers mean more), timed on the same uint8 batches through the
Predictor's tensor path (uint8 → float, network, sigmoid, ROI, η; per-image resizing and mask
extraction are the same for every variant and left out). ``torchscript`` (trace + freeze of the
fused fp32 module) is measured only to decide whether it earns a place; it is not a serving option.

Variants are timed round-robin within each repeat, so a neighbour's load hits them alike; the
table gives the median images/s, the **ratio to eager fp32 at the same batch** (the number to
compare: the CPU is shared, absolute rates drift by ±30 %), process CPU ms per image and its ratio
to eager fp32 (steadier than wall time when neighbours take the cores), and the
accuracy against eager fp32 on the same images (max |Δη| and max |Δ heat map|).

On an oversubscribed CPU the result depends on ``OMP_WAIT_POLICY`` (read when torch starts, so
set it in the environment): with the default, torch's OpenMP threads spin at barriers and lose to
their neighbours (2–3× the CPU per image at 2 threads on 2 busy cores); ``PASSIVE`` avoids that.
ONNX Runtime runs with spinning off either way. The JSON records the policy and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.artefact import load, save_untrained  # noqa: E402
from model.predictor import Predictor, cpu_has_native_bf16  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FP32_TOL = 1e-4  # parity limit of an fp32 runtime against eager fp32 (tests/unit/model)


def make_model(tmp: Path) -> Path:
    """An untrained ``line`` artefact with non-trivial BatchNorm statistics and heat maps spread
    around 0.5 (zero output bias), where rounding moves η most."""
    d = save_untrained(tmp / "m", profile="line", image_size=128, channels=3, seed=0)
    net, meta = load(d)
    net.train()
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        x = torch.rand(8, 3, 128, 128, generator=g)
        net.segmenter(x, net.generator.reconstruct(x))
        # logits around 0 instead of the "all normal" prior, so precision changes show in η
        net.segmenter.out.bias.zero_()
    net.eval()
    from model.artefact import save

    return save(net, tmp / "m2", version=meta.version + "-bnstats", thresholds=meta.thresholds)


def make_inputs(n: int, size: int, channels: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random images (low-frequency field + noise), uint8 (n, S, S, C), and full ROIs."""
    import cv2

    rng = np.random.default_rng(seed)
    xs = []
    for _ in range(n):
        low = rng.random((8, 8, channels)).astype(np.float32)
        im = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC).reshape(size, size, -1)
        im = np.clip(im * 200 + rng.normal(0, 8, im.shape) + 20, 0, 255).astype(np.uint8)
        xs.append(im)
    return np.stack(xs), np.ones((n, size, size), np.float32)


def torchscript_predictor(model_dir: Path) -> Predictor:
    """An fp32 Predictor whose network is traced and frozen (measured, not offered)."""
    p = Predictor.load(model_dir, device="cpu", precision="fp32")
    S, C = p.image_size, p.channels
    x = torch.rand(2, C, S, S).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated; that is part of the verdict
        p.net = torch.jit.freeze(torch.jit.trace(p.net, x, check_trace=False))
    return p


def build_variants(model_dir: Path, torchscript: bool) -> tuple[dict, dict]:
    """name → Predictor, and name → why it was skipped."""
    variants: dict[str, Predictor] = {
        "torch fp32": Predictor.load(model_dir, device="cpu", precision="fp32")}
    skipped: dict[str, str] = {}
    if cpu_has_native_bf16():
        variants["torch bf16"] = Predictor.load(model_dir, device="cpu", precision="bf16")
    else:
        skipped["torch bf16"] = "no native bf16 on this CPU (emulated bf16 is ~10x slower)"
    try:
        variants["onnxruntime fp32"] = Predictor.load(model_dir, device="cpu",
                                                      backend="onnxruntime")
    except Exception as exc:  # a benchmark reports what it could not run and goes on
        skipped["onnxruntime fp32"] = f"{type(exc).__name__}: {exc}"
    if torchscript:
        try:
            variants["torchscript fp32"] = torchscript_predictor(model_dir)
        except Exception as exc:
            skipped["torchscript fp32"] = f"{type(exc).__name__}: {exc}"
    return variants, skipped


def time_batch(variants: dict, xs: np.ndarray, rs: np.ndarray, seconds: float,
               repeats: int) -> dict:
    """Median images/s and process CPU ms/image per variant, timed round-robin."""
    b = len(xs)
    inner = {}
    for name, p in variants.items():
        p._forward(xs, rs)  # warm-up (allocations, ORT arena, oneDNN primitives)
        t0 = time.perf_counter()
        p._forward(xs, rs)
        inner[name] = max(1, int(seconds / max(time.perf_counter() - t0, 1e-6)))
    wall: dict[str, list[float]] = {n: [] for n in variants}
    cpu: dict[str, list[float]] = {n: [] for n in variants}
    for _ in range(repeats):
        for name, p in variants.items():
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(inner[name]):
                p._forward(xs, rs)
            wall[name].append((time.perf_counter() - t0) / inner[name])
            cpu[name].append((time.process_time() - c0) / inner[name])
    return {n: {"images_per_s": b / statistics.median(wall[n]),
                "cpu_ms_per_image": 1000 * statistics.median(cpu[n]) / b} for n in variants}


def accuracy(variants: dict, xs: np.ndarray, rs: np.ndarray) -> dict:
    """max |Δη| and max |Δ heat| of each variant against eager fp32 on the same images."""
    ref_h, ref_s = variants["torch fp32"]._forward(xs, rs)
    out = {}
    for name, p in variants.items():
        h, s = p._forward(xs, rs)
        out[name] = {"max_abs_score_diff": float((s - ref_s).abs().max()),
                     "max_abs_heat_diff": float((h - ref_h).abs().max())}
    return out


def recommend(rows: list[dict], acc: dict, bf16_tol: float) -> dict:
    """Fastest variant per batch among those accurate enough to serve (torchscript excluded)."""
    ok = {n for n, a in acc.items()
          if n != "torchscript fp32" and a["max_abs_score_diff"]
          <= (bf16_tol if "bf16" in n else FP32_TOL)}
    best = {}
    for b in sorted({r["batch"] for r in rows}):
        cands = [r for r in rows if r["batch"] == b and r["variant"] in ok]
        if cands:
            top = max(cands, key=lambda r: r["images_per_s"])
            best[str(b)] = {"variant": top["variant"], "ratio_to_fp32": top["ratio_to_fp32"]}
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="artefact dir (default: untrained line, 128 px)")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    ap.add_argument("--threads", type=int, help="torch (and ONNX Runtime) threads")
    ap.add_argument("--seconds", type=float, default=0.4, help="per timed sample")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-torchscript", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_runtimes.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="grd_rt_") as tmp:
        model_dir = args.model or make_model(Path(tmp))
        if args.model is None:  # the export a deployment would ship (grdline export)
            from model.export import export_onnx

            export_onnx(model_dir)
        variants, skipped = build_variants(model_dir, not args.no_torchscript)
        ref = variants["torch fp32"]
        S, C = ref.image_size, ref.channels
        xs, rs = make_inputs(max(args.batches), S, C)
        acc = accuracy(variants, xs, rs)
        rows = []
        for b in args.batches:
            res = time_batch(variants, xs[:b], rs[:b], args.seconds, args.repeats)
            base = res["torch fp32"]
            for name, r in res.items():
                rows.append({"variant": name, "batch": b, **r,
                             "ratio_to_fp32": r["images_per_s"] / base["images_per_s"],
                             "cpu_ratio_to_fp32": r["cpu_ms_per_image"]
                             / base["cpu_ms_per_image"], **acc[name]})
        bf16_tol = ref.meta.config.inference.bf16_max_score_diff
        version = ref.version
    load1 = os.getloadavg()
    result = {
        "benchmark": "bench_runtimes", "model": version, "profile": ref.meta.config.profile,
        "image_size": S, "channels": C, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "native_cpu_bf16": cpu_has_native_bf16(),
        "loadavg_1min_start_end": [load0[0], load1[0]],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "shared_cpu_note": ("the CPU was shared with other jobs (load average above the core "
                            "count): compare ratio_to_fp32, not images_per_s"
                            if max(load0[0], load1[0]) > (os.cpu_count() or 1) else
                            "load average below the core count during the run"),
        "rows": rows, "skipped": skipped, "seconds": time.perf_counter() - t_start,
    }
    result["recommended"] = recommend(rows, acc, bf16_tol)
    try:
        import onnxruntime

        result["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass

    print(f"runtimes of {version} ({S} px, {C} ch) on {result['cpu']}, {result['cores']} cores, "
          f"{result['threads']} threads, native bf16: {result['native_cpu_bf16']}, "
          f"OMP_WAIT_POLICY {result['omp_wait_policy']}")
    print(f"load average {load0[0]:.1f} → {load1[0]:.1f}: {result['shared_cpu_note']}")
    print(f"{'variant':18} {'batch':>5} {'img/s':>8} {'× fp32':>7} {'CPU ms/img':>10} "
          f"{'CPU × fp32':>10} {'max|Δη|':>9} {'max|Δheat|':>10}")
    for r in rows:
        print(f"{r['variant']:18} {r['batch']:>5} {r['images_per_s']:>8.1f} "
              f"{r['ratio_to_fp32']:>7.2f} {r['cpu_ms_per_image']:>10.2f} "
              f"{r['cpu_ratio_to_fp32']:>10.2f} "
              f"{r['max_abs_score_diff']:>9.1e} {r['max_abs_heat_diff']:>10.1e}")
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    best = result["recommended"].items()
    print("fastest accurate variant per batch: " + ", ".join(
        f"b{b} {v['variant']} ({v['ratio_to_fp32']:.2f}×)" for b, v in best))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

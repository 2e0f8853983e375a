"""CPU runtimes of the serving path (eager torch fp32 and bf16, ONNX Runtime fp32, TorchScript) and
which one the Predictor should default to on each kind of device.

    python benchmarks/bench_runtimes.py [--model DIR] [--batches 1 8 16 32] [--threads N]
                                        [--seconds 0.4] [--repeats 5] [--no-torchscript]
                                        [--no-avx2] [--out benchmarks/results/bench_runtimes.json]
                                        [--short] [--results-dir DIR]

Each variant is a :class:`~model.predictor.Predictor` of the same weights (default: an untrained
``line`` model, 128 px RGB, with non-trivial BatchNorm statistics; ``--model`` for a trained
artefact, whose accuracy numbers mean more), timed on the same uint8 batches through the
Predictor's tensor path (uint8 → float, network, sigmoid, ROI, η; per-image resizing and mask
extraction are the same for every variant and left out). ``torchscript`` (trace + freeze of the
fused fp32 module) is measured only to decide whether it earns a place; it is not a serving option.

Kinds of device: on a CPU with native bf16 (AVX512-BF16 / AMX) the run measures that kind in
process, then the *CPU without native bf16* kind in a subprocess whose torch is held to AVX2
kernels (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``; onnxruntime has no such switch, so
its row there is an upper bound). On a CPU without native bf16 only that kind is measured. CUDA
comes from ``bench_gpu.py``'s JSON when a GPU run left one. A variant more than ``--drop-slower``
times slower than fp32 in wall and in CPU time (emulated bf16) is not timed at larger batches.

Variants are timed round-robin within each repeat, so a neighbour's load hits them alike; the
table gives the median images/s, the **ratio to eager fp32 at the same batch** (the number to
compare: the CPU is shared, absolute rates drift by ±30 %), process CPU ms per image and its ratio
to eager fp32 (steadier than wall time when neighbours take the cores), and the
accuracy against eager fp32 on the same images (max |Δη| and max |Δ heat map|).

The output ends with the **recommendation**, computed from those rows: per kind, the servable
variant (fp32 runtimes within 1e-4 of eager fp32, bf16 within ``inference.bf16_max_score_diff``)
with the best geometric mean over the batches of its ratio to eager fp32 — it replaces the
Predictor's current default there only when ``WIN_MARGIN`` better — the same among fp32 variants
(served where bf16 is not calibrated), and TorchScript against the best servable variant. CUDA:
the fastest row within the η budget at the serving batch (``ModelTuning.max_batch_size``).

On an oversubscribed CPU the result depends on ``OMP_WAIT_POLICY`` (read when torch loads): with
the default, torch's OpenMP threads spin at barriers and lose to their neighbours (2–3× the CPU per
image at 2 threads on 2 busy cores). The benchmark sets ``PASSIVE``, as the serving replicas run
(``model.env_vars``), unless the environment sets it; ONNX Runtime runs with spinning off either
way. The JSON records the policy and the load average.

``--short`` (``make test``): a 64 px model, batches 1 and 2, one 0.05 s repeat, no TorchScript,
no AVX2 subprocess; the JSON goes to ``--out``, else ``bench_runtimes.json`` in ``--results-dir``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the serving replicas run (inference.config)

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import DEFAULT_RESULTS, add_common_args, apply_short, write_json  # noqa: E402

from inference.config import ModelTuning  # noqa: E402
from model.artefact import load, save_untrained  # noqa: E402
from model.predictor import Predictor, cpu_has_native_bf16  # noqa: E402

RESULTS = DEFAULT_RESULTS
FP32_TOL = 1e-4  # parity limit of an fp32 runtime against eager fp32 (tests/unit/model)
FP32, TS = "torch fp32", "torchscript fp32"
CPU_BF16, CPU_NO_BF16 = "cpu_native_bf16", "cpu_no_native_bf16"
#: torch on the AVX2 code path (ATen and oneDNN), as tests/unit/model/test_learning.py forces it
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
SERVING_BATCH = ModelTuning().max_batch_size  # the CUDA pick: full batches under load
WIN_MARGIN = 1.10  # a variant replaces the default only when this much faster (noise ±5-10 %)


def make_model(tmp: Path, size: int = 128) -> Path:
    """An untrained ``line`` artefact with non-trivial BatchNorm statistics and heat maps spread
    around 0.5 (zero output bias), where rounding moves η most."""
    d = save_untrained(tmp / "m", profile="line", image_size=size, channels=3, seed=0)
    net, meta = load(d)
    net.train()
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        x = torch.rand(8, 3, size, size, generator=g)
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
    """name → Predictor, and name → why it was skipped. bf16 is measured on every CPU: where it
    is emulated, its first batch shows how much slower it is (and the larger ones are dropped)."""
    variants: dict[str, Predictor] = {
        FP32: Predictor.load(model_dir, device="cpu", precision="fp32"),
        "torch bf16": Predictor.load(model_dir, device="cpu", precision="bf16")}
    skipped: dict[str, str] = {}
    try:
        variants["onnxruntime fp32"] = Predictor.load(model_dir, device="cpu",
                                                      backend="onnxruntime")
    except Exception as exc:  # a benchmark reports what it could not run and goes on
        skipped["onnxruntime fp32"] = f"{type(exc).__name__}: {exc}"
    if torchscript:
        try:
            variants[TS] = torchscript_predictor(model_dir)
        except Exception as exc:
            skipped[TS] = f"{type(exc).__name__}: {exc}"
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
    ref_h, ref_s = variants[FP32]._forward(xs, rs)
    out = {}
    for name, p in variants.items():
        h, s = p._forward(xs, rs)
        out[name] = {"max_abs_score_diff": float((s - ref_s).abs().max()),
                     "max_abs_heat_diff": float((h - ref_h).abs().max())}
    return out


def measure_kind(model_dir: Path, args: argparse.Namespace) -> dict:
    """Every variant at every batch on this process' CPU code path; one kind's result."""
    variants, skipped = build_variants(model_dir, not args.no_torchscript)
    ref = variants[FP32]
    xs, rs = make_inputs(max(args.batches), ref.image_size, ref.channels)
    acc = accuracy(variants, xs, rs)
    rows = []
    for b in sorted(args.batches):
        res = time_batch(variants, xs[:b], rs[:b], args.seconds, args.repeats)
        base = res[FP32]
        for name, r in res.items():
            ratio = r["images_per_s"] / base["images_per_s"]
            rows.append({"variant": name, "batch": b, **r, "ratio_to_fp32": ratio,
                         "cpu_ratio_to_fp32": r["cpu_ms_per_image"] / base["cpu_ms_per_image"],
                         **acc[name]})
            # slower in wall time *and* CPU time: a neighbour stealing the cores inflates the
            # first, not the second
            cpu_ratio = rows[-1]["cpu_ratio_to_fp32"]
            if ratio < 1 / args.drop_slower and cpu_ratio > args.drop_slower and name != FP32:
                del variants[name]
                skipped[name] = (f"batches above {b} not timed: {1 / ratio:.1f}x the time and "
                                 f"{cpu_ratio:.1f}x the CPU of eager fp32 at batch {b} "
                                 f"(--drop-slower {args.drop_slower})")
    return {"isa": torch.backends.cpu.get_cpu_capability(), "rows": rows, "skipped": skipped,
            "bf16_tol": ref.meta.config.inference.bf16_max_score_diff, "model": ref.version,
            "profile": ref.meta.config.profile, "image_size": ref.image_size,
            "channels": ref.channels}


def measure_without_native_bf16(model_dir: Path, args: argparse.Namespace) -> dict:
    """The same measurement in a subprocess whose torch runs AVX2 kernels (ATen and oneDNN; the
    switches are read when torch loads, as in tests/unit/model/test_learning.py)."""
    with tempfile.TemporaryDirectory(prefix="grd_rt_avx2_") as tmp:
        out = Path(tmp) / "avx2.json"
        cmd = [sys.executable, __file__, "--model", str(model_dir), "--child", "--out", str(out),
               "--seconds", str(args.seconds), "--repeats", str(args.child_repeats),
               "--drop-slower", str(args.drop_slower),
               "--threads", str(torch.get_num_threads()), "--batches", *map(str, args.batches)]
        cmd += ["--no-torchscript"] if args.no_torchscript else []
        proc = subprocess.run(cmd, env={**os.environ, **AVX2_ENV}, capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            return {"measured": False, "why": f"subprocess failed (rc {proc.returncode}): "
                                              f"{proc.stderr.strip()[-500:]}"}
        kind = json.loads(out.read_text())["kind"]
    if kind["isa"] not in ("AVX2", "DEFAULT"):
        return {"measured": False, "why": f"the forced path was not taken (ISA {kind['isa']})"}
    kind["forced_by"] = AVX2_ENV
    kind["caveat"] = ("torch ran AVX2 kernels; onnxruntime's MLAS picks its ISA by cpuid and has "
                      "no switch, so its row still ran AVX-512 (an upper bound for an AVX2 CPU)")
    return kind


def fastest(rows: list[dict], batch: int, names: set[str]) -> dict | None:
    cands = [r for r in rows if r["batch"] == batch and r["variant"] in names]
    return max(cands, key=lambda r: r["images_per_s"]) if cands else None


def overall(rows: list[dict]) -> dict[str, float]:
    """Geometric mean over the batches of each variant's ratio to eager fp32; only variants timed
    at every batch (one dropped as too slow is out). One number per variant that no single noisy
    batch decides, and serving sees every batch size between 1 and the maximum."""
    batches = {r["batch"] for r in rows}
    out = {}
    for name in {r["variant"] for r in rows}:
        ratios = [r["ratio_to_fp32"] for r in rows if r["variant"] == name]
        if len(ratios) == len(batches):
            out[name] = math.exp(sum(map(math.log, ratios)) / len(ratios))
    return out


def pick(score: dict[str, float], names: set[str], current: str) -> tuple[str, str]:
    """The best of ``names`` by ``score``, kept as ``current`` unless ``WIN_MARGIN`` better."""
    cands = {n: v for n, v in score.items() if n in names}
    best = max(cands, key=cands.get)
    if current not in cands:
        return best, f"{current} not timed at every batch or not accurate enough"
    gain = cands[best] / cands[current]
    if gain > WIN_MARGIN:
        return best, f"{gain:.2f}x {current}"
    if best == current:
        return current, "the fastest"
    return current, f"{best} only {gain:.2f}x of it"


def choose(kind: dict, current: str) -> dict:
    """What a Predictor should run on this kind of device, from the kind's rows.

    The servable variant (accurate enough; not TorchScript) with the best geometric-mean ratio to
    eager fp32 over the batches (:func:`overall`), which replaces ``current`` (the Predictor's
    default there) only when ``WIN_MARGIN`` better; the same among fp32 variants (what is served
    where bf16 is not calibrated); the fastest per batch; and whether TorchScript beat the best
    servable variant by ``WIN_MARGIN``. A winner whose row the kind's caveat covers (onnxruntime
    in the forced-AVX2 run) is ``provisional``.
    """
    rows = kind["rows"]
    acc = {r["variant"]: r["max_abs_score_diff"] for r in rows}
    servable = {n for n, d in acc.items()
                if n != TS and d <= (kind["bf16_tol"] if "bf16" in n else FP32_TOL)}
    score = overall(rows)
    per_batch = {}
    for b in sorted({r["batch"] for r in rows}):
        top = fastest(rows, b, servable)
        per_batch[str(b)] = {"variant": top["variant"], "ratio_to_fp32": top["ratio_to_fp32"]}
    default, why = pick(score, servable, current)
    fp32, fp32_why = pick(score, {n for n in servable if n.endswith("fp32")}, FP32)
    best = max((v for n, v in score.items() if n in servable), default=1.0)
    out = {"measured": True, "variant": default, "why": why, "current_default": current,
           "differs_from_default": default != current, "if_fp32": {"variant": fp32,
                                                                   "why": fp32_why},
           "geomean_ratio_to_fp32": score, "fastest_per_batch": per_batch,
           "torchscript_beats_best_by": score[TS] / best if TS in score else None}
    if "caveat" in kind:
        out["caveat"] = kind["caveat"]
        out["provisional"] = default.startswith("onnxruntime")
    return out


def choose_cuda(path: Path) -> dict:
    """The CUDA recommendation from ``bench_gpu.py``'s JSON, when a GPU run left one."""
    if not path.exists():
        return {"measured": False, "why": f"no {path.name} (run benchmarks/bench_gpu.py on a GPU)"}
    gpu = json.loads(path.read_text())
    best = gpu.get("fastest_within_score_budget") or {}
    if not gpu.get("gpu") or not best:
        return {"measured": False, "why": gpu.get("reason", f"{path.name} holds no rows")}
    pick = {k: v for k, v in best.items() if k.endswith(f"/b{SERVING_BATCH}")} or best
    return {"measured": True, "device": gpu.get("device"), "serving_batch": SERVING_BATCH,
            "fastest": pick}


def print_kind(name: str, kind: dict) -> None:
    print(f"\n{name}: ISA {kind['isa']}" + (f"  ({kind['caveat']})" if "caveat" in kind else ""))
    print(f"{'variant':18} {'batch':>5} {'img/s':>8} {'× fp32':>7} {'CPU ms/img':>10} "
          f"{'CPU × fp32':>10} {'max|Δη|':>9} {'max|Δheat|':>10}")
    for r in kind["rows"]:
        print(f"{r['variant']:18} {r['batch']:>5} {r['images_per_s']:>8.1f} "
              f"{r['ratio_to_fp32']:>7.2f} {r['cpu_ms_per_image']:>10.2f} "
              f"{r['cpu_ratio_to_fp32']:>10.2f} "
              f"{r['max_abs_score_diff']:>9.1e} {r['max_abs_heat_diff']:>10.1e}")
    for v, why in kind["skipped"].items():
        print(f"skipped {v}: {why}")


def print_recommendation(rec: dict) -> None:
    print("\nrecommendation (computed from the rows above: geometric mean over the batches of the "
          f"ratio to eager fp32; a variant replaces the default only when {WIN_MARGIN:.2f}x "
          "better):")
    for name, r in rec.items():
        if name == "torchscript":
            print(f"  torchscript: {r['verdict']}")
        elif not r["measured"]:
            print(f"  {name}: not measured: {r['why']}")
        elif name == "cuda":
            print(f"  cuda ({r['device']}): " + "; ".join(
                f"{k} {v['precision']} {v['format']} {v['mode']}" for k, v in r["fastest"].items()))
        else:
            per = ", ".join(f"b{b} {v['variant']} {v['ratio_to_fp32']:.2f}x"
                            for b, v in r["fastest_per_batch"].items())
            verb = "differs from" if r["differs_from_default"] else "keeps"
            print(f"  {name}: {r['variant']} ({verb} the default {r['current_default']}: "
                  f"{r['why']}){' PROVISIONAL: ' + r['caveat'] if r.get('provisional') else ''}")
            print("    geometric mean over the batches, × eager fp32: " + ", ".join(
                f"{n} {v:.2f}" for n, v in sorted(r["geomean_ratio_to_fp32"].items())))
            if not r["variant"].endswith("fp32"):
                print(f"    where fp32 is served (bf16 not calibrated): {r['if_fp32']['variant']} "
                      f"({r['if_fp32']['why']})")
            print(f"    fastest per batch: {per}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="artefact dir (default: untrained line, 128 px)")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8, 16, 32])
    ap.add_argument("--threads", type=int, help="torch (and ONNX Runtime) threads")
    ap.add_argument("--seconds", type=float, default=0.4, help="per timed sample")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--child-repeats", type=int, default=3, help="repeats of the AVX2 run")
    ap.add_argument("--drop-slower", type=float, default=3.0,
                    help="stop timing a variant this many times slower than fp32")
    ap.add_argument("--no-torchscript", action="store_true")
    ap.add_argument("--no-avx2", action="store_true", help="skip the CPU-without-bf16 run")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--gpu-json", type=Path, default=RESULTS / "bench_gpu.json")
    ap.add_argument("--image-size", type=int, default=128, help="of the default untrained model")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON file (default: bench_runtimes.json in the results folder)")
    add_common_args(ap, "64 px, batches 1 2, one 0.05 s repeat, no TorchScript, no AVX2 run")
    args = ap.parse_args(argv)
    apply_short(ap, args, image_size=64, batches=[1, 2], seconds=0.05, repeats=1, child_repeats=1,
                no_torchscript=True, no_avx2=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        args.out.write_text(json.dumps({"kind": measure_kind(args.model, args)}))
        return 0
    load0 = os.getloadavg()
    t_start = time.perf_counter()
    native = cpu_has_native_bf16()
    kinds: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="grd_rt_") as tmp:
        model_dir = args.model or make_model(Path(tmp), args.image_size)
        if args.model is None:  # the export a deployment would ship (grdline export)
            from model.export import export_onnx

            export_onnx(model_dir)
        here = measure_kind(model_dir, args)
        if native:
            kinds[CPU_BF16] = here
            kinds[CPU_NO_BF16] = ({"measured": False, "why": "--no-avx2"} if args.no_avx2
                                  else measure_without_native_bf16(model_dir, args))
        else:
            kinds[CPU_BF16] = {"measured": False, "why": "this CPU has no native bf16"}
            kinds[CPU_NO_BF16] = here
    load1 = os.getloadavg()
    # the Predictor's defaults (model.predictor.resolve_precision, backend torch)
    rec = {name: choose(k, "torch bf16" if name == CPU_BF16 else FP32)
           if "rows" in k else k for name, k in kinds.items()}
    rec["cuda"] = choose_cuda(args.gpu_json)
    ts = {n: r["torchscript_beats_best_by"] for n, r in rec.items()
          if r.get("torchscript_beats_best_by") is not None}
    wins = {n: v for n, v in ts.items() if v > WIN_MARGIN}
    rec["torchscript"] = {"vs_best_servable": ts, "verdict": "not measured" if not ts else (
        f"> {WIN_MARGIN:.2f}x the best servable variant on {sorted(wins)} in this run; one run on "
        "a shared CPU is not a verdict: re-measure (docs/evaluations/runtimes.md)" if wins else
        "below the best servable variant everywhere in this run (" + ", ".join(
            f"{n} {v:.2f}x" for n, v in ts.items()) + ")")}
    result = {
        "benchmark": "bench_runtimes", "model": here["model"], "profile": here["profile"],
        "image_size": here["image_size"], "channels": here["channels"], "torch": torch.__version__,
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "native_cpu_bf16": native,
        "loadavg_1min_start_end": [load0[0], load1[0]],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "shared_cpu_note": ("the CPU was shared with other jobs (load average above the core "
                            "count): compare ratio_to_fp32, not images_per_s"
                            if max(load0[0], load1[0]) > (os.cpu_count() or 1) else
                            "load average below the core count during the run"),
        "kinds": kinds, "recommendation": rec, "seconds": time.perf_counter() - t_start,
    }
    try:
        import onnxruntime

        result["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    print(f"runtimes of {here['model']} ({here['image_size']} px, {here['channels']} ch) on "
          f"{result['cpu']}, {result['cores']} cores, {result['threads']} threads, native bf16: "
          f"{native}, OMP_WAIT_POLICY {result['omp_wait_policy']}")
    print(f"load average {load0[0]:.1f} → {load1[0]:.1f}: {result['shared_cpu_note']}")
    for name, k in kinds.items():
        if "rows" in k:
            print_kind(name, k)
    print_recommendation(rec)
    print(f"wrote {write_json(args, 'bench_runtimes.json', result)} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GRD-Net serving path on CUDA: precisions, memory formats, torch.compile and CUDA graphs.

    python benchmarks/bench_gpu.py [--profiles line paper] [--batches 1 2 4 8 16 32 64]
                                   [--precisions fp32 bf16 fp16] [--budget-s 480]
                                   [--out benchmarks/results/bench_gpu.json]
                                   [--short] [--results-dir DIR]

Without CUDA it prints that no GPU is present, writes a JSON saying so and exits 0 (``make bench``
and ``make test`` run it everywhere). ``--short`` (``make test``): the line profile, batches 1 and
2, fp32, eager and CUDA graphs, 0.05 s per row, no torch.compile; the JSON goes to ``--out``, else
``bench_gpu.json`` in ``--results-dir``. With CUDA, for each profile (untrained weights with non-trivial BatchNorm
statistics, norms folded as in the Predictor) it times the Predictor's device-side path — uint8
(B, S, S, C) on the GPU → float / 255 → network → sigmoid → ROI → η — host copies excluded:

* precision ``fp32`` (cuDNN's default TF32 convolutions, as the Predictor runs), ``bf16`` and
  ``fp16`` (autocast, as the Predictor runs them);
* memory format ``channels_last`` (the Predictor's) and ``contiguous``;
* mode ``eager``; ``cudagraph`` (the eager step captured once per batch size with
  ``torch.cuda.graph``); ``compile`` (``torch.compile``, inductor) and ``compile+cg``
  (``mode="reduce-overhead"``: inductor + CUDA graphs) — compiled modes in channels_last only.

Cheap rows (eager, CUDA graphs) run first; the compiled ones follow while ``--budget-s`` lasts
(each compile costs tens of seconds), the rest are listed as skipped. The JSON is rewritten after
every row, so an interrupted run keeps what it measured. Per row: images/s, ms per batch, the
ratio to eager fp32 channels_last at the same profile and batch, achieved TFLOP/s against a big
3×3 convolution timed in the same run, and max |Δη| against a true-fp32 reference (TF32 off) on
the same images (bf16/fp16 are served only where training calibrated them; budget 0.01).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import DEFAULT_RESULTS, add_common_args, apply_short, out_path  # noqa: E402

from model.blocks import fuse_norms  # noqa: E402
from model.config import make_config  # noqa: E402
from model.networks import GRDNet, InferenceNet, image_score  # noqa: E402

RESULTS = DEFAULT_RESULTS
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SCORE_BUDGET = 0.01  # inference.bf16_max_score_diff: what a low precision may move η


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def no_gpu(out: Path, short: bool = False) -> int:
    why = (f"torch {torch.__version__} built without CUDA" if torch.version.cuda is None
           else "torch.cuda.is_available() is False (no GPU or no driver)")
    print(f"bench_gpu: no GPU present ({why}); nothing measured")
    write(out, {"benchmark": "bench_gpu", "gpu": False, "reason": why,
                "torch": torch.__version__, "host": platform.node(), "short": short})
    print(f"wrote {out}")
    return 0


@contextlib.contextmanager
def true_fp32():
    """cuDNN convolutions and matmuls in IEEE fp32 (no TF32) inside the block."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        old = (conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision)
        conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        try:
            yield
        finally:
            conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = old
    else:
        old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def tf32_settings() -> dict:
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return {"cudnn_conv_fp32_precision": conv.fp32_precision,
                "matmul_fp32_precision": torch.backends.cuda.matmul.fp32_precision}
    return {"cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}


def serving_net(profile: str, device: torch.device) -> tuple[torch.nn.Module, object]:
    """Fused fp32 inference path of an untrained ``profile`` model with non-trivial BN stats
    and a zero output bias (heat maps spread around 0.5, where rounding moves η most)."""
    cfg = make_config(profile)
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = GRDNet(cfg)
    net.train()
    with torch.no_grad():
        x = torch.rand(4, cfg.channels, cfg.image_size, cfg.image_size, generator=gen)
        net.segmenter(x, net.generator.reconstruct(x))
        # logits around 0 instead of the "all normal" prior, so precision changes show in η
        net.segmenter.out.bias.zero_()
    inet = fuse_norms(InferenceNet(net).eval()).to(device)
    return inet, cfg


def make_step(net: torch.nn.Module, precision: str, channels_last: bool,
              pool: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The Predictor's device-side path: ``uint8 (B, S, S, C), roi (B, S, S) → η (B,)``."""
    autocast = precision != "fp32"

    def step(x8: torch.Tensor, roi: torch.Tensor) -> torch.Tensor:
        x = x8.permute(0, 3, 1, 2)
        if not channels_last:
            x = x.contiguous()
        x = x.float() / 255.0
        with torch.autocast("cuda", dtype=DTYPES[precision], enabled=autocast,
                            cache_enabled=False):
            _, logits = net(x)
        heat = torch.sigmoid(logits.float()) * roi[:, None]
        return image_score(heat, pool)

    return step


def graphed(step, x8: torch.Tensor, roi: torch.Tensor) -> Callable[[], torch.Tensor]:
    """Capture ``step`` on static copies of the inputs in a CUDA graph; returns ``replay``."""
    sx, sr = x8.clone(), roi.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step(sx, sr)
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = step(sx, sr)

    def replay() -> torch.Tensor:
        sx.copy_(x8, non_blocking=True)  # in serving the new batch lands in the static buffer
        g.replay()
        return out

    return replay


def timeit(fn: Callable[[], object], seconds: float, repeats: int) -> float:
    """Median seconds per call (CUDA-synchronised) after warm-up."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    inner = max(1, int(seconds / repeats / max(time.perf_counter() - t0, 1e-6)))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def conv_rate(device: torch.device, precision: str, seconds: float) -> float:
    """TFLOP/s of a 256→256 3×3 conv at 64×64, batch 64, channels_last, in ``precision``."""
    b, c, s = 64, 256, 64
    conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(device)
    conv = conv.to(memory_format=torch.channels_last).eval()
    x = torch.rand(b, c, s, s, device=device).contiguous(memory_format=torch.channels_last)

    def run():
        with torch.inference_mode(), torch.autocast("cuda", dtype=DTYPES[precision],
                                                    enabled=precision != "fp32"):
            conv(x)

    return 2 * b * s * s * c * c * 9 / timeit(run, seconds, 3) / 1e12


def flops_per_image(net: torch.nn.Module, cfg, device: torch.device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, cfg.channels, cfg.image_size, cfg.image_size, device=device)
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        net(x)
    return float(fc.get_total_flops())


def inputs(n: int, cfg, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random uint8 images (B, S, S, C) and full ROIs (B, S, S) on ``device``."""
    g = torch.Generator().manual_seed(1)
    S, C = cfg.image_size, cfg.channels
    low = torch.rand(n, C, 8, 8, generator=g)
    im = torch.nn.functional.interpolate(low, size=(S, S), mode="bicubic", align_corners=False)
    im = (im * 200 + 20 + 8 * torch.randn(n, C, S, S, generator=g)).clamp(0, 255)
    x8 = im.to(torch.uint8).permute(0, 2, 3, 1).contiguous().to(device)
    return x8, torch.ones(n, S, S, device=device)


def reset_dynamo() -> None:
    torch._dynamo.reset()
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)


class ContextLost(RuntimeError):
    """The CUDA context is broken (sticky error): nothing more can be measured in this process."""


class Bench:
    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args, self.device = args, device
        self.t0 = time.perf_counter()
        self.result: dict = {
            "benchmark": "bench_gpu", "gpu": True, "short": args.short, "device": torch.cuda.get_device_name(device),
            "capability": list(torch.cuda.get_device_capability(device)),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "tf32": tf32_settings(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark, "host": platform.node(),
            "budget_s": args.budget_s, "conv_tflops": {}, "profiles": {}, "rows": [],
            "skipped": [], "note": "device-side path; host↔device copies excluded",
        }

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def save(self) -> None:
        self.result["seconds"] = self.elapsed()
        write(self.args.out, self.result)

    def skip(self, what: dict, why: str) -> None:
        self.result["skipped"].append({**what, "why": why})
        print(f"  skipped {what}: {why}", flush=True)
        self.save()

    def add(self, row: dict) -> None:
        self.result["rows"].append(row)
        base = next((r for r in self.result["rows"] if r["profile"] == row["profile"]
                     and r["batch"] == row["batch"] and r["precision"] == "fp32"
                     and r["format"] == "channels_last" and r["mode"] == "eager"), None)
        row["ratio_to_eager_fp32"] = row["images_per_s"] / base["images_per_s"] if base else None
        peak = self.result["conv_tflops"].get(row["precision"])
        flops = self.result["profiles"][row["profile"]]["gflop_per_image"] * 1e9
        row["tflops"] = flops * row["images_per_s"] / 1e12
        row["share_of_conv_rate"] = row["tflops"] / peak if peak else None
        r = row["ratio_to_eager_fp32"]
        print(f"  {row['profile']:5} {row['precision']:4} {row['format']:14} {row['mode']:10} "
              f"b{row['batch']:<3} {row['images_per_s']:9.0f} img/s "
              f"{'' if r is None else f'{r:5.2f}×'} Δη {row['max_abs_score_diff']:.1e}",
              flush=True)
        self.save()

    def measure(self, profile: str, precision: str, fmt: str, mode: str, fn_for_batch,
                ref: torch.Tensor, x8: torch.Tensor, roi: torch.Tensor) -> None:
        """Time ``fn_for_batch(b)() → η`` for every batch size; one row each. A failed row is
        recorded as skipped with the larger batches of the same series (an OOM or a compile
        error would repeat there), and the run goes on with the next series."""
        batches = self.args.batches
        for i, b in enumerate(batches):
            what = {"profile": profile, "precision": precision, "format": fmt, "mode": mode,
                    "batch": b}
            try:
                t = time.perf_counter()
                fn = fn_for_batch(x8[:b], roi[:b])
                score = fn().float().clone()
                torch.cuda.synchronize()
                first = time.perf_counter() - t
                sec = timeit(fn, self.args.seconds, self.args.repeats)
            except Exception as exc:  # a benchmark reports what failed and goes on
                oom = isinstance(exc, torch.OutOfMemoryError)
                if not oom:
                    traceback.print_exc()
                fn = None
                torch.cuda.empty_cache()
                rest = f"; batches {batches[i + 1:]} not tried" if batches[i + 1:] else ""
                why = "out of GPU memory" if oom else f"{type(exc).__name__}: {str(exc)[:300]}"
                self.skip(what, why + rest)
                self.check_context()
                return
            diff = float((score - ref[:b]).abs().max())
            self.add({**what, "images_per_s": b / sec, "ms_per_batch": 1000 * sec,
                      "first_call_s": first, "max_abs_score_diff": diff})

    def check_context(self) -> None:
        """After a failed row: a sticky CUDA error (illegal access, a broken graph capture) makes
        every later row fail, so stop the run there and keep what was measured."""
        try:
            torch.cuda.synchronize()
            torch.zeros(1, device=self.device).add_(1).item()
        except Exception as exc:
            raise ContextLost(f"CUDA context unusable after a failed row: {exc}") from exc

    def run(self) -> None:
        args, dev = self.args, self.device
        precisions = [p for p in args.precisions
                      if p != "bf16" or torch.cuda.is_bf16_supported()]
        for p in set(args.precisions) - set(precisions):
            self.skip({"precision": p}, "not supported by this GPU")
        for p in precisions:
            try:
                self.result["conv_tflops"][p] = conv_rate(dev, p, args.seconds)
            except Exception as exc:  # only the share-of-peak column is lost
                self.skip({"conv_rate": p}, f"{type(exc).__name__}: {str(exc)[:300]}")
                self.check_context()
        print("conv rate (TFLOP/s): " + ", ".join(
            f"{p} {v:.0f}" for p, v in self.result["conv_tflops"].items()), flush=True)
        nets = {}
        for prof in args.profiles:
            try:
                nets[prof] = self.setup_profile(prof)
            except Exception as exc:  # the other profile still runs
                traceback.print_exc()
                torch.cuda.empty_cache()
                self.skip({"profile": prof}, f"set-up failed: {type(exc).__name__}: "
                                             f"{str(exc)[:300]}")
                self.check_context()
        # 1. eager and CUDA graphs, both memory formats (cheap)
        for prof, (net, cfg, x8, roi, ref) in nets.items():
            for p in precisions:
                for fmt in ("channels_last", "contiguous"):
                    if self.elapsed() > args.budget_s:
                        self.skip({"profile": prof, "precision": p, "format": fmt,
                                   "mode": "eager/cudagraph"},
                                  f"--budget-s {args.budget_s:.0f} s spent")
                        continue
                    mf = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
                    step = make_step(net.to(memory_format=mf), p, fmt == "channels_last",
                                     cfg.pool_kernel)
                    with torch.inference_mode():
                        self.measure(prof, p, fmt, "eager",
                                     lambda xb, rb, step=step: (lambda: step(xb, rb)),
                                     ref, x8, roi)
                        if "cudagraph" in args.modes:
                            self.measure(prof, p, fmt, "cudagraph",
                                         lambda xb, rb, step=step: graphed(step, xb, rb),
                                         ref, x8, roi)
        # 2. torch.compile, channels_last, while the budget lasts: the likely serving choices
        # first (with CUDA graphs, low precision), each for every profile
        last_compile = 0.0
        order = [(m, c, p) for m, c in (("compile+cg", "reduce-overhead"), ("compile", None))
                 for p in ("bf16", "fp16", "fp32") if p in precisions and m in args.modes]
        for mode, compile_mode, p in order:
            for prof, (net, cfg, x8, roi, ref) in nets.items():
                what = {"profile": prof, "precision": p, "format": "channels_last", "mode": mode}
                if self.elapsed() + 2 * last_compile > args.budget_s:
                    self.skip(what, f"--budget-s {args.budget_s:.0f} s spent")
                    continue
                t = time.perf_counter()
                try:
                    self.compiled(prof, p, mode, compile_mode,
                                  net.to(memory_format=torch.channels_last), cfg, x8, roi, ref)
                except ContextLost:
                    raise
                except Exception as exc:  # a benchmark reports what failed and goes on
                    traceback.print_exc()
                    self.skip(what, f"{type(exc).__name__}: {str(exc)[:300]}")
                    self.check_context()
                last_compile = time.perf_counter() - t

    def setup_profile(self, prof: str) -> tuple:
        """The profile's fused net, inputs at the largest batch, true-fp32 reference η (in
        chunks of 8, so the reference fits where the largest batch might not) and FLOPs."""
        dev = self.device
        net, cfg = serving_net(prof, dev)
        x8, roi = inputs(max(self.args.batches), cfg, dev)
        ref_step = make_step(net.to(memory_format=torch.channels_last), "fp32", True,
                             cfg.pool_kernel)
        with torch.inference_mode(), true_fp32():
            ref = torch.cat([ref_step(x8[i:i + 8], roi[i:i + 8]).float()
                             for i in range(0, len(x8), 8)])
        self.result["profiles"][prof] = {
            "image_size": cfg.image_size, "channels": cfg.channels,
            "pool_kernel": cfg.pool_kernel,
            "gflop_per_image": flops_per_image(net, cfg, dev) / 1e9}
        return net, cfg, x8, roi, ref

    def compiled(self, prof, p, mode, compile_mode, net, cfg, x8, roi, ref) -> None:
        reset_dynamo()
        step = torch.compile(make_step(net, p, True, cfg.pool_kernel), mode=compile_mode)
        cg = compile_mode == "reduce-overhead"

        def for_batch(xb, rb):
            def call():
                if cg:
                    torch.compiler.cudagraph_mark_step_begin()
                return step(xb, rb)
            return call

        with torch.inference_mode():
            self.measure(prof, p, "channels_last", mode, for_batch, ref, x8, roi)

    def summary(self) -> None:
        rows = self.result["rows"]
        print(f"\n{self.result['device']}  torch {self.result['torch']}  CUDA "
              f"{self.result['cuda']}  {self.elapsed():.0f} s")
        print(f"{'profile':7} {'prec':4} {'format':14} {'mode':10} {'batch':>5} {'img/s':>9} "
              f"{'ms/batch':>9} {'× eager fp32':>12} {'TFLOP/s':>8} {'max|Δη|':>8}")
        for r in rows:
            ratio = r["ratio_to_eager_fp32"]
            print(f"{r['profile']:7} {r['precision']:4} {r['format']:14} {r['mode']:10} "
                  f"{r['batch']:>5} {r['images_per_s']:>9.0f} {r['ms_per_batch']:>9.2f} "
                  f"{'' if ratio is None else f'{ratio:.2f}':>12} {r['tflops']:>8.1f} "
                  f"{r['max_abs_score_diff']:>8.1e}")
        best = {}
        for prof in self.result["profiles"]:
            for b in self.args.batches:
                ok = [r for r in rows if r["profile"] == prof and r["batch"] == b
                      and r["max_abs_score_diff"] <= SCORE_BUDGET]
                if ok:
                    top = max(ok, key=lambda r: r["images_per_s"])
                    best[f"{prof}/b{b}"] = {k: top[k] for k in (
                        "precision", "format", "mode", "images_per_s", "ratio_to_eager_fp32")}
        self.result["fastest_within_score_budget"] = best
        print("fastest within |Δη| <= 0.01: " + "; ".join(
            f"{k} {v['precision']} {v['format']} {v['mode']}" for k, v in best.items()))
        for s in self.result["skipped"]:
            print(f"skipped: {s}")
        self.save()
        print(f"wrote {self.args.out}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profiles", nargs="+", default=["line", "paper"],
                    choices=["line", "paper"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"],
                    choices=list(DTYPES))
    ap.add_argument("--modes", nargs="+", default=["eager", "cudagraph", "compile", "compile+cg"],
                    choices=["eager", "cudagraph", "compile", "compile+cg"],
                    help="eager always runs (it is the baseline)")
    ap.add_argument("--seconds", type=float, default=0.3, help="timed seconds per row")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget-s", type=float, default=480.0,
                    help="no new torch.compile after this many seconds")
    ap.add_argument("--cudnn-benchmark", action="store_true",
                    help="torch.backends.cudnn.benchmark = True (the Predictor leaves it off)")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON file (default: bench_gpu.json in the results folder)")
    add_common_args(ap, "line, batches 1 2, fp32, eager + CUDA graphs, 0.05 s per row")
    args = ap.parse_args(argv)
    apply_short(ap, args, profiles=["line"], batches=[1, 2], precisions=["fp32"],
                modes=["eager", "cudagraph"], seconds=0.05, repeats=1, budget_s=0.0)
    args.out = out_path(args, "bench_gpu.json")
    args.batches = sorted(set(args.batches))
    if not torch.cuda.is_available():
        return no_gpu(args.out, args.short)
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    bench = Bench(args, device)
    try:
        bench.run()
    except ContextLost as exc:  # rows measured so far stand; say why the rest are missing
        print(f"bench_gpu: stopped early: {exc}", flush=True)
        bench.result["stopped_early"] = str(exc)
    finally:
        bench.summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())

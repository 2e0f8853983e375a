"""Benchmark the production-line simulator: frames per second on one core.

Measures, per size and channel count, the rate of rendering good parts, defective parts (every
in-ROI type in turn, defect sampling included) and a camera stream at 10 % defects, against a
baseline measured in the same run: the cost of the minimum any synthetic camera pays per frame
(one ``cv2.GaussianBlur`` + Gaussian noise + uint8 conversion of a float32 frame of that size).
Ratios to the baseline are what to compare across machines; absolute rates drift on a shared host.

    OMP_NUM_THREADS=1 python benchmarks/bench_simulator.py [--seconds 1.0] [--sizes 128 256 512]
                                                           [--short] [--results-dir DIR]

Prints a table and writes ``benchmarks/results/bench_simulator.json`` (``--out``, ``--results-dir``);
``--short`` (``make test``): 64 px grayscale, 0.1 s per measurement. The target of issue 4 is
>= 200 frames/s for 256x256 (grayscale camera stream) on one core.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np
from _common import add_common_args, apply_short, write_json

from ingest.simulator import DEFECT_TYPES, SimulatedCamera
from ingest.simulator.render import get_renderer


def _rate(fn, seconds: float) -> float:
    fn()  # warm-up (templates, caches)
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        fn()
        n += 1
    return n / elapsed


def _baseline(size: int, channels: int):
    rng = np.random.default_rng(0)
    shape = (size, size) if channels == 1 else (size, size, channels)
    frame = np.full(shape, 200.0, np.float32)

    def step():
        img = cv2.GaussianBlur(frame, (5, 5), 1.0)
        img += rng.standard_normal(shape, dtype=np.float32) * 2.0
        np.clip(img, 0, 255, out=img)
        return img.astype(np.uint8)

    return step


def _measure(size: int, ch: int, seconds: float) -> dict:
    """Rates for one size and channel count (frames/s) and their ratios to the baseline."""
    r = get_renderer("vials", size, ch, 0)
    rng = np.random.default_rng(1)
    good = r.sample_item(rng, "good")
    defects = [r.sample_item(rng, t) for t in DEFECT_TYPES]
    k = {"i": 0}

    def render_good():
        r.render(good, r.sample_view(rng))

    def render_defect():
        k["i"] += 1
        r.render(defects[k["i"] % len(defects)], r.sample_view(rng))

    def sample_and_render_defect():
        k["i"] += 1
        t = DEFECT_TYPES[k["i"] % len(DEFECT_TYPES)]
        r.render(r.sample_item(rng, t), r.sample_view(rng))

    cam_iter = iter(
        SimulatedCamera("B", "c0", fps=None, defect_rate=0.1, seed=0, size=size, channels=ch)
    )
    base = _rate(_baseline(size, ch), seconds)
    res = {
        "size": size,
        "channels": ch,
        "baseline_fps": base,
        "good_fps": _rate(render_good, seconds),
        "defect_render_fps": _rate(render_defect, seconds),
        "defect_sample_render_fps": _rate(sample_and_render_defect, seconds),
        "camera_10pct_fps": _rate(lambda: next(cam_iter), seconds),
    }
    res["camera_vs_baseline"] = res["camera_10pct_fps"] / base
    res["defect_vs_good"] = res["defect_render_fps"] / res["good_fps"]
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--channels", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--out", type=Path, default=None, help="JSON file (default: bench_simulator.json "
                    "in the results folder)")
    add_common_args(ap, "128 px grayscale, 0.1 s per measurement")
    args = ap.parse_args()
    # 128 px, the smallest size the simulator is built for: at 64 px a bubble sometimes finds no place
    apply_short(ap, args, seconds=0.1, sizes=[128], channels=[1])
    cv2.setNumThreads(1)
    rows = [_measure(size, ch, args.seconds) for size in args.sizes for ch in args.channels]
    head = (
        f"{'size':>5} {'ch':>3} {'baseline':>9} {'good':>8} {'defect':>8} "
        f"{'def+samp':>9} {'camera':>8} {'cam/base':>9} {'def/good':>9}"
    )
    print("frames/s, one core (OpenCV single-threaded)")
    print(head)
    for x in rows:
        print(
            f"{x['size']:>5} {x['channels']:>3} {x['baseline_fps']:>9.0f} {x['good_fps']:>8.0f} "
            f"{x['defect_render_fps']:>8.0f} {x['defect_sample_render_fps']:>9.0f} "
            f"{x['camera_10pct_fps']:>8.0f} {x['camera_vs_baseline']:>9.3f} "
            f"{x['defect_vs_good']:>9.3f}"
        )
    meta = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "machine": platform.machine(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "seconds": args.seconds,
    }
    print(f"wrote {write_json(args, 'bench_simulator.json', {'meta': meta, 'results': rows})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

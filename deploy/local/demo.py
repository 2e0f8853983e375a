"""`make demo`: the whole line on the local stack, end to end, on this machine (see demo.sh).

1. local stack up (Kafka 4 KRaft, Redis, Prometheus) and the line's topics;
2. simulate a BFS-vials dataset and a contact sheet, train a `line` GRD-Net (short CPU budget),
   evaluate it: metrics, ROC curves and defect overlays under ``runs/demo/eval``;
3. serve the model with Ray Serve against the frames topic, stream simulated cameras into Kafka,
   then score the decisions in Redis against the simulator's ground truth, count the reject
   commands, and read throughput, latency and defect rate back from Prometheus;
4. write the run report (``grdline report``: HTML + PNGs under ``runs/demo/report``).

Knobs (environment): DEMO_STEPS (training steps), DEMO_FRAMES (frames per camera), DEMO_FPS,
DEMO_RETRAIN=1 (ignore a model trained by an earlier run).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNS = REPO / "runs" / "demo"
GRDLINE = [sys.executable, "-m", "inference.cli"]
LINE = "L1"
CAMERAS = 2
SIZE = 128


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def grdline(*argv: str) -> None:
    print(f"$ grdline {' '.join(argv)}", flush=True)
    code = subprocess.call([*GRDLINE, *argv], cwd=REPO)
    if code:
        raise SystemExit(f"demo: `grdline {' '.join(argv)}` failed with exit code {code}")


def prometheus(expr: str) -> float | None:
    from dashboards.settings import PrometheusSettings

    url = f"{PrometheusSettings().url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        result = json.load(r)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def wait_until_consuming(server: subprocess.Popen, timeout_s: float) -> None:
    """Block until the Serve app's ingress has joined its consumer group (the line is live)."""
    from kafka import KafkaAdminClient

    from inference.config import IngressSettings
    from ingest.settings import KafkaSettings

    group = IngressSettings().group_id
    admin = KafkaAdminClient(**KafkaSettings().client_kwargs())
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise SystemExit(f"demo: the Serve app exited early; see {RUNS / 'serve.log'}")
            state = admin.describe_groups([group])[group]
            if state["group_state"] == "Stable" and state["members"]:
                print(f"Serve app is consuming (group {group}, "
                      f"{len(state['members'])} ingress replica(s))", flush=True)
                return
            time.sleep(1.0)
    finally:
        admin.close()
    raise SystemExit(f"demo: the Serve app did not start consuming within {timeout_s:.0f}s; "
                     f"see {RUNS / 'serve.log'}")


def wait_for_results(client, prefix: str, frame_ids: list[str], timeout_s: float) -> dict:
    """Poll Redis until every frame has its result hash; returns frame id -> decision (bool)."""
    from inference.contracts import result_key

    decided: dict[str, bool] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(decided) < len(frame_ids):
        for fid in frame_ids:
            if fid not in decided:
                value = client.hget(result_key(prefix, fid), "decision")
                if value is not None:
                    decided[fid] = value == b"1"
        time.sleep(1.0)
    return decided


def main() -> int:
    steps = os.environ.get("DEMO_STEPS", "1000")
    frames = int(os.environ.get("DEMO_FRAMES", "100"))
    fps = os.environ.get("DEMO_FPS", "10")
    data, model, evaluation = RUNS / "data", RUNS / "model", RUNS / "eval"
    RUNS.mkdir(parents=True, exist_ok=True)

    step("1. local stack")
    grdline("stack", "up")
    grdline("topics")

    step("2. product, dataset, model")
    grdline("simulate", "preview", "--out", str(RUNS / "contact-sheet.png"), "--size", "256")
    if not (data / "vials").exists():
        grdline("simulate", "dataset", "--out", str(data), "--category", "vials",
                "--train", "240", "--test", "120", "--size", str(SIZE), "--seed", "0")
    if os.environ.get("DEMO_RETRAIN") == "1" or not (model / "model.json").exists():
        grdline("train", "--data", str(data), "--category", "vials", "--profile", "line", "--preset", "vials",
                "--out", str(model), "--steps", steps, "--image-size", str(SIZE), "--seed", "0")
    grdline("eval", "--model", str(model), "--data", str(data), "--category", "vials",
            "--out", str(evaluation))

    step("3. the line: cameras -> Kafka -> Ray Serve GRD-Net -> Redis + rejects")
    import redis

    from inference.settings import RedisSettings
    from ingest.simulator.camera import TruthRecord

    settings = RedisSettings()
    client = redis.Redis(**settings.client_kwargs())
    serve_log = open(RUNS / "serve.log", "w")  # noqa: SIM115 - lives as long as the server
    print(f"$ grdline serve --model {model}   (log: {RUNS / 'serve.log'})", flush=True)
    server = subprocess.Popen([*GRDLINE, "serve", "--model", str(model)], cwd=REPO,
                              stdout=serve_log, stderr=subprocess.STDOUT)
    try:
        wait_until_consuming(server, timeout_s=300)
        run_started = datetime.now(UTC)
        truth_file = RUNS / "truth.jsonl"
        grdline("camera", "--source", "simulator", "--line", LINE, "--cameras", str(CAMERAS),
                "--fps", fps, "--frames", str(frames), "--size", str(SIZE),
                "--defect-rate", "0.3", "--seed", "7", "--spread-partitions",
                "--encoding", "png",  # the dataset is PNG: JPEG artefacts would be a train/serve skew
                "--truth-out", str(truth_file))
        truth = [TruthRecord.model_validate_json(line)
                 for line in truth_file.read_text().splitlines() if line.strip()]
        decided = wait_for_results(client, settings.key_prefix, [t.frame_id for t in truth], 300)
        if server.poll() is not None:
            raise SystemExit(f"demo: the Serve app exited early; see {RUNS / 'serve.log'}")
        print(f"results in Redis: {len(decided)}/{len(truth)} frames of this run")
        grdline("results", "tail", "--line", LINE, "--count", "8", "--no-follow")
        score(decided, truth)
        settle_prometheus()
        report_prometheus()
        grdline("dashboards", "export", "--out", str(RUNS / "grafana"))
        step("4. run report (Prometheus + Redis + the frames from Kafka, against ground truth)")
        grdline("report", "--line", LINE, "--since", run_started.isoformat(), "--until", "now",
                "--truth", str(truth_file), "--out", str(RUNS / "report"))
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        serve_log.close()
    print(f"\nDone. Run report: {RUNS / 'report' / 'index.html'} (open it in a browser)."
          f"\nPictures: {RUNS / 'contact-sheet.png'}, {evaluation}/ (ROC curves, overlays)."
          "\nThe stack keeps running: `grdline stack status`, `grdline stack down`.")
    return 0


def score(decided: dict[str, bool], truth: list) -> None:
    """Decisions in Redis against the simulator's ground truth (looked up by frame id)."""
    tp = fp = fn = tn = 0
    for record in truth:
        if record.frame_id not in decided:
            continue
        predicted = decided[record.frame_id]
        if record.reject:
            tp, fn = tp + predicted, fn + (not predicted)
        else:
            fp, tn = fp + predicted, tn + (not predicted)
    print(f"scored {tp + fp + fn + tn} frames against ground truth: caught {tp}/{tp + fn} "
          f"defective parts' frames, false rejects {fp}/{fp + tn} good ones")


def settle_prometheus(timeout_s: float = 45.0) -> None:
    """Wait until the inspected-frames total stops moving: Ray exports replica metrics every
    few seconds and Prometheus scrapes every 2 s, so the last counts arrive a little late."""
    from inference import metrics as im

    expr = f"sum({im.prometheus_name(im.FRAMES_INSPECTED)})"
    start = time.monotonic()
    last = None
    while time.monotonic() - start < timeout_s:
        value = prometheus(expr)
        if value is not None and value == last and time.monotonic() - start > 12:
            return
        last = value
        time.sleep(3.0)


def report_prometheus() -> None:
    from inference import metrics as im

    rows = [
        ("frames inspected", f"sum({im.prometheus_name(im.FRAMES_INSPECTED)})"),
        ("frames defective", f"sum({im.prometheus_name(im.FRAMES_DEFECTIVE)})"),
        ("items rejected", f"sum({im.prometheus_name(im.ITEMS_REJECTED)})"),
        ("late frames", f"sum({im.prometheus_name(im.FRAMES_LATE)})"),
        ("p99 capture->decision (s)", "histogram_quantile(0.99, sum by (le) ("
         f"{im.prometheus_name(im.E2E_LATENCY)}_bucket))"),
        ("mean batch size", f"sum({im.prometheus_name(im.BATCH_SIZE)}_sum) / "
         f"sum({im.prometheus_name(im.BATCH_SIZE)}_count)"),
    ]
    print("\nPrometheus (what the Grafana dashboard shows):")
    for label, expr in rows:
        value = prometheus(expr)
        print(f"  {label:<28} {'-' if value is None else f'{value:.3f}'}")


if __name__ == "__main__":
    sys.exit(main())

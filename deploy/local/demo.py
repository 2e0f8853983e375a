"""`make demo`: the whole line on the local stack, end to end, on this machine (see demo.sh).

1. local stack up (Kafka 4 KRaft, Redis, Prometheus) and the line's topics;
2. the model: by default the small `line` GRD-Net the repository ships (``deploy/local/demo-model``,
   trained by this script's own DEMO_RETRAIN commands; how, from which commit and its evaluation
   are in its ``PROVENANCE.json``), served at once while the product's contact sheet is drawn.
   ``DEMO_RETRAIN=1`` simulates the BFS-vials dataset, trains afresh (short CPU budget) into
   ``runs/demo/model`` and evaluates it: metrics, ROC curves and defect overlays under
   ``runs/demo/eval``;
3. serve the model with Ray Serve against the frames topic, stream simulated cameras into Kafka
   with a live terminal view (frames/s, defect rate, rejects, p95 latency, lag, replicas: read
   from Prometheus, :mod:`dashboards.live`), then score the decisions in Redis against the
   simulator's ground truth, count the reject commands, and read the totals back from Prometheus;
4. write the run report (``grdline report``: HTML + PNGs under ``runs/demo/report``).

Knobs (environment): DEMO_RETRAIN=1 (train afresh instead of serving the shipped model),
DEMO_STEPS (training steps with DEMO_RETRAIN), DEMO_MODEL=DIR (serve this artefact directory, e.g.
``runs/demo/model`` from an earlier DEMO_RETRAIN run), DEMO_EVAL=1 (also evaluate a model that was
not trained in this run: about a minute), DEMO_FRAMES (frames per camera), DEMO_FPS.
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
#: The model the repository ships (an artefact directory as ``model.predictor.Predictor.load``
#: reads it, and its ``PROVENANCE.json``).
SHIPPED = REPO / "deploy" / "local" / "demo-model"
PROVENANCE = "PROVENANCE.json"
GRDLINE = [sys.executable, "-m", "inference.cli"]
LINE = "L1"
CAMERAS = 2
SIZE = 128


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def grdline(*argv: str, log: Path | None = None) -> None:
    """Run one ``grdline`` command; its output goes to ``log`` (appended) when given."""
    print(f"$ grdline {' '.join(argv)}" + (f"   (log: {rel(log)})" if log else ""), flush=True)
    if log is None:
        code = subprocess.call([*GRDLINE, *argv], cwd=REPO)
    else:
        with log.open("a") as out:
            code = subprocess.call([*GRDLINE, *argv], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    if code:
        where = f"; see {rel(log)}" if log else ""
        raise SystemExit(f"demo: `grdline {' '.join(argv)}` failed with exit code {code}{where}")


def rel(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def describe_model(model: Path, origin: str) -> None:
    """Say which model is served: where it came from, its version, commit and evaluation."""
    meta = json.loads((model / "model.json").read_text())
    print(f"serving the {origin} model {rel(model)}: version {meta['version']}, "
          f"created {meta['created']}", flush=True)
    prov_file = model / PROVENANCE
    if prov_file.exists():
        prov = json.loads(prov_file.read_text())
        ev = prov["evaluation"]
        print(f"  trained by `{prov['commands']['train']}`\n"
              f"  from commit {prov['commit']} on {prov['date']} ({prov['training_time_s'] / 60:.0f} min "
              f"on {prov['machine']});\n"
              f"  on its simulated test set: image AUROC {ev['image_auroc']:.3f}, pixel AUROC "
              f"{ev['pixel_auroc']:.3f}, AUPRO {ev['aupro']:.3f}, false rejects "
              f"{ev['false_reject_rate']:.1%}, escapes {ev['escape_rate']:.1%}", flush=True)


def start_serve(model: Path) -> subprocess.Popen:
    """``grdline serve`` in the background (log: runs/demo/serve.log). Ray exports the replicas'
    metrics every 2 s instead of its default 10 s, so the live view trails the line less; its
    metrics agent then drops a gauge not set again within 4 s, so the Serve controller re-sets
    its replica-health gauge every second (default 10 s) to stay visible."""
    env = {**os.environ}
    env.setdefault("RAY_metrics_report_interval_ms", "2000")
    env.setdefault("RAY_SERVE_STATUS_GAUGE_REPORT_INTERVAL_S", "1")
    print(f"$ grdline serve --model {rel(model)}   (log: {rel(RUNS / 'serve.log')})", flush=True)
    log = (RUNS / "serve.log").open("w")
    try:
        expect = [a for i in range(CAMERAS) for a in ("--expect", f"{LINE}/cam{i}")]  # the no-frames alert watches them
        return subprocess.Popen([*GRDLINE, "serve", "--model", str(model), *expect], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()  # the child holds its own descriptor


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
    started = time.monotonic()
    retrain = os.environ.get("DEMO_RETRAIN") == "1"
    steps = os.environ.get("DEMO_STEPS", "1000")
    frames = int(os.environ.get("DEMO_FRAMES", "100"))
    fps = os.environ.get("DEMO_FPS", "10")
    data, evaluation = RUNS / "data", RUNS / "eval"
    if retrain:
        model, origin = RUNS / "model", "retrained (DEMO_RETRAIN=1)"
    elif os.environ.get("DEMO_MODEL"):
        model, origin = Path(os.environ["DEMO_MODEL"]).resolve(), "given (DEMO_MODEL)"
    else:
        model, origin = SHIPPED, "shipped"
    evaluate = retrain or os.environ.get("DEMO_EVAL") == "1"
    RUNS.mkdir(parents=True, exist_ok=True)

    step("1. local stack")
    grdline("stack", "up")
    grdline("topics")

    server = None
    try:
        if not retrain:  # the model exists: start serving now, Ray and the replicas take a while
            step("2. model (served while the product picture is drawn)")
            describe_model(model, origin)
            server = start_serve(model)
        else:
            step("2. product, dataset, model")
        grdline("simulate", "preview", "--out", str(RUNS / "contact-sheet.png"), "--size", "256")
        if evaluate and not (data / "vials").exists():
            grdline("simulate", "dataset", "--out", str(data), "--category", "vials",
                    "--train", "240", "--test", "120", "--size", str(SIZE), "--seed", "0")
        if retrain:
            grdline("train", "--data", str(data), "--category", "vials", "--profile", "line",
                    "--preset", "vials", "--out", str(model), "--steps", steps,
                    "--image-size", str(SIZE), "--seed", "0")
        if evaluate:
            grdline("eval", "--model", str(model), "--data", str(data), "--category", "vials",
                    "--out", str(evaluation))
        elif (model / "evaluation").is_dir():
            evaluation = model / "evaluation"
        if server is None:
            describe_model(model, origin)
            server = start_serve(model)

        step("3. the line: cameras -> Kafka -> Ray Serve GRD-Net -> Redis + rejects")
        wait_until_consuming(server, timeout_s=300)
        print(f"the line is live {time.monotonic() - started:.0f} s after the demo started", flush=True)
        stream(server, frames, fps)
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
    print(f"\nDone. Run report: {RUNS / 'report' / 'index.html'} (open it in a browser)."
          f"\nPictures: {RUNS / 'contact-sheet.png'}, {evaluation}/ (ROC curves, overlays)."
          "\nThe stack keeps running: `grdline stack status`, `grdline stack down`.")
    return 0


def stream(server: subprocess.Popen, frames: int, fps: str) -> None:
    """Cameras into Kafka under the live view, then the decisions scored and the run report."""
    import redis

    from dashboards.live import LiveView, prometheus_query, queries
    from dashboards.settings import PrometheusSettings
    from inference.config import ServeAppConfig
    from inference.settings import RedisSettings
    from ingest.simulator.camera import TruthRecord

    settings = RedisSettings()
    client = redis.Redis(**settings.client_kwargs())
    run_started = datetime.now(UTC)
    truth_file = RUNS / "truth.jsonl"
    camera_log = RUNS / "camera.log"
    camera_log.write_text("")
    app = ServeAppConfig.model_fields["app_name"].default  # what `grdline serve` runs
    view = LiveView(prometheus_query(PrometheusSettings().url), queries(LINE, app),
                    f"line {LINE} (Prometheus)")
    with view:
        grdline("camera", "--source", "simulator", "--line", LINE, "--cameras", str(CAMERAS),
                "--fps", fps, "--frames", str(frames), "--size", str(SIZE),
                "--defect-rate", "0.3", "--seed", "7", "--spread-partitions",
                "--encoding", "png",  # the dataset is PNG: JPEG artefacts would be a train/serve skew
                "--truth-out", str(truth_file), log=camera_log)
        truth = [TruthRecord.model_validate_json(line)
                 for line in truth_file.read_text().splitlines() if line.strip()]
        decided = wait_for_results(client, settings.key_prefix, [t.frame_id for t in truth], 300)
        if server.poll() is None:
            settle_prometheus()
    if server.poll() is not None:
        raise SystemExit(f"demo: the Serve app exited early; see {RUNS / 'serve.log'}")
    last = camera_log.read_text().strip().splitlines()[-1:]
    print(f"cameras: {last[0] if last else '(no output)'}   (log: {rel(camera_log)})")
    print(f"results in Redis: {len(decided)}/{len(truth)} frames of this run")
    grdline("results", "tail", "--line", LINE, "--count", "8", "--no-follow")
    score(decided, truth)
    report_prometheus()
    grdline("dashboards", "export", "--out", str(RUNS / "grafana"))
    step("4. run report (Prometheus + Redis + the frames from Kafka, against ground truth)")
    grdline("report", "--line", LINE, "--since", run_started.isoformat(), "--until", "now",
            "--truth", str(truth_file), "--out", str(RUNS / "report"))


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

#!/usr/bin/env bash
# `make demo`: the whole line on the local stack, end to end, on this machine's CPU.
#   1. start the local stack (Kafka 4 KRaft, Redis, Prometheus);
#   2. simulate a vials dataset and train a `line`-profile GRD-Net on it (a short CPU budget),
#      evaluate it (metrics.json, ROC curves, defect overlays under runs/demo/eval);
#   3. serve it with Ray Serve against the frames topic, stream simulated cameras into Kafka,
#      and show decisions, rejects and metrics as they arrive.
#   4. write the run report (grdline report): runs/demo/report/index.html and its PNGs.
# Re-running reuses the trained model in runs/demo/model unless DEMO_RETRAIN=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python deploy/local/demo.py "$@"

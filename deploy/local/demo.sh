#!/usr/bin/env bash
# `make demo`: the whole line on the local stack, end to end, on this machine's CPU.
#   1. start the local stack (Kafka 4 KRaft, Redis, Prometheus);
#   2. serve the small vials model the repository ships (deploy/local/demo-model, see its
#      PROVENANCE.json); DEMO_RETRAIN=1 instead simulates a vials dataset, trains a `line`-profile
#      GRD-Net on it (a short CPU budget) into runs/demo/model and evaluates it (metrics.json,
#      ROC curves, defect overlays under runs/demo/eval);
#   3. serve it with Ray Serve against the frames topic, stream simulated cameras into Kafka,
#      with a live terminal view (frames/s, defect rate, rejects, p95 latency, lag, replicas),
#      then show decisions, rejects and metrics.
#   4. write the run report (grdline report): runs/demo/report/index.html and its PNGs.
# DEMO_MODEL=runs/demo/model serves the model of an earlier DEMO_RETRAIN=1 run again.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python deploy/local/demo.py "$@"

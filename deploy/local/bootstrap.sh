#!/usr/bin/env bash
# Installs everything `make test` and `make demo` need, idempotently, on a fresh Debian machine:
# Debian packages (Java 17, Maven, Redis, Prometheus, docker-compose), a virtualenv with the Python packages, and
# the Kafka broker jars from Maven Central. The virtualenv, pip cache and jars live in a cache
# folder outside the checkout ($GRDLINE_CACHE, default ~/.cache/grdline), keyed by the files they
# are built from, so a fresh clone on the same machine reuses them. Leaves `.venv` in the checkout
# as a link to the virtualenv.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
cache=${GRDLINE_CACHE:-$HOME/.cache/grdline}
mkdir -p "$cache"
say() { printf 'setup: %s\n' "$*"; }

# --- Debian packages ------------------------------------------------------------------------
python=$(command -v python3.11 || true)
need=()
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v redis-server >/dev/null || need+=(redis-server)
command -v prometheus >/dev/null || need+=(prometheus)
# headless browser for the run-report test (tests/integration/dashboards/test_report.py)
command -v chromium >/dev/null || need+=(chromium)
# docker-compose (v1, Python): `docker-compose config` checks deploy/compose without a Docker engine
command -v docker-compose >/dev/null || need+=(docker-compose)
if [[ -z $python ]]; then need+=(python3 python3-venv); fi
if ((${#need[@]})); then
  sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
  say "installing Debian packages: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
python=${python:-$(command -v python3)}
"$python" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
  || { echo "setup: Python >= 3.11 is required, found $("$python" --version)" >&2; exit 1; }

# --- virtualenv keyed by pyproject.toml and constraints.txt (the pinned versions) -----------------
key=$( (cat pyproject.toml constraints.txt; "$python" --version) | sha256sum | cut -c1-12)
venv="$cache/venv-$key"
if [[ ! -f $venv/.complete ]]; then
  say "creating $venv (first run on this machine downloads torch, ray, ... : a few minutes)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  PIP_CACHE_DIR="$cache/pip" "$venv/bin/pip" install -q --upgrade pip setuptools wheel
  PIP_CACHE_DIR="$cache/pip" "$venv/bin/pip" install -q --progress-bar off -c constraints.txt -e ".[dev]"
  touch "$venv/.complete"
fi
# Point the editable install at this checkout (CI clones elsewhere) without touching the deps.
if ! out=$("$venv/bin/pip" install -q --no-deps --no-build-isolation -e . 2>&1); then
  echo "$out" >&2; exit 1
fi
ln -sfn "$venv" .venv

# --- Kafka broker jars (Maven Central) ---------------------------------------------------------
.venv/bin/python - <<'PY'
from inference.stack_cli import load_stack
stack = load_stack()
print(f"setup: Kafka jars ready: Apache Kafka {stack.kafka_version()} in {stack.kafka_lib_dir()}")
PY
say "ready (python: $(.venv/bin/python --version), venv: $venv)"

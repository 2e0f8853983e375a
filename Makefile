# GRD-Line: the whole set-up is two commands, `make demo` and `make test`.
# Each installs what it needs (deploy/local/bootstrap.sh) and starts the services it needs.
SHELL := /bin/bash
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: help setup test test-unit test-integration demo bench bench-quality soak lint stack-up stack-down stack-status

help:
	@echo "make demo   - the whole line on the local stack (installs everything first)"
	@echo "make test   - the whole test suite (unit + integration against real services)"
	@echo "make test-unit | test-integration | bench | soak | lint | stack-up | stack-down | stack-status"

setup:
	@bash deploy/local/bootstrap.sh

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: setup
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

demo: setup
	@bash deploy/local/demo.sh

bench: stack-up
	@for b in benchmarks/bench_*.py; do [[ $$b == *bench_quality.py ]] && continue; echo "== $$b"; $(PY) $$b || exit 1; done

# model quality with default settings on every product (trains: ~1 h on 2 cores); QUALITY_ARGS e.g. --steps 500
bench-quality: setup
	$(PY) benchmarks/bench_quality.py $(QUALITY_ARGS)

# soak, not a test: the line at 70 % of the bare model's rate for 30 min at the production result
# TTL, RSS of every process and Redis memory per result (growth < 5 %), every frame decided;
# SOAK_ARGS e.g. --minutes 3 (every benchmark's --short mode runs in `make test`)
soak: stack-up
	$(PY) benchmarks/soak.py $(SOAK_ARGS)

lint: setup
	$(PY) -m ruff check .

stack-up: setup
	.venv/bin/grdline stack up

stack-down:
	.venv/bin/grdline stack down

stack-status:
	.venv/bin/grdline stack status

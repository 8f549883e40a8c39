# framestream front door. `make demo` and `make test` do all set-up themselves (scripts/setup.sh:
# idempotent, seconds when nothing changed).
SHELL := /bin/bash
# framestream itself is installed into the venv (setup: pip install -e .); bench/ and tests/ run
# from the checkout (python -m puts the current folder first), so nothing needs PYTHONPATH.
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: help setup up down status doctor demo cluster-demo test test-unit lock clean-state chaos soak

help:
	@echo "make demo    set up, start the broker, check every engine, run the stream end to end"
	@echo "make cluster-demo  the stream on a Spark master + 2 workers on namespace hosts (root), then down"
	@echo "make test    set up, then run every test tier (unit, zmq, mpi, kafka, spark, ray, slow)"
	@echo "make chaos   faults under load, long profile (broker down 20 s, 2 min fuzzing); prints the table"
	@echo "make soak    one hour of stream + retrain/promotion every 10 min; RSS/fd slopes, PNG (SOAK_ARGS=--minutes 10)"
	@echo "make setup | up | down | status | doctor | test-unit | lock | clean-state"

setup:
	@bash scripts/setup.sh

up: setup
	@$(PY) -m stack up

down:
	@$(PY) -m stack down

status:
	@$(PY) -m stack status

doctor: up
	@$(PY) -m stack doctor

demo: setup
	@$(PY) -m jobs.demo

# Root + iproute2: a Spark standalone master and 2 workers on network-namespace hosts, a Kafka
# broker on their bridge, the stream across them (driver + ranks here), the conservation
# summary; everything is torn down at the end, also on failure (stack/cluster_demo.py).
cluster-demo: setup
	@$(PY) -m stack.cluster_demo

test: setup
	@$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup
	@$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# The chaos suite's long profile (CI runs the short one inside `make test`). Results:
# .state/chaos/results.json and fuzz.json; the table is printed at the end.
chaos: up
	@FRAMESTREAM_CHAOS_PROFILE=long FRAMESTREAM_FUZZ_SECONDS=$${FRAMESTREAM_FUZZ_SECONDS:-120} \
	  $(PY) -m pytest tests/chaos -m chaos --timeout 1200 $(PYTEST_ARGS)
	@$(PY) -m tests.chaos.report --profile long

# Not in CI: an hour by default (SOAK_ARGS="--minutes 10" for a short one). Writes
# .state/soak/<run>/soak.json and soak.png.
SOAK_ARGS ?=
soak: up
	@$(PY) -m bench.soak $(SOAK_ARGS)

# Re-lock every package in the venv after changing a pin in pyproject.toml.
lock:
	@{ echo "# Lock of every package in the venv (direct pins live in pyproject.toml). Regenerate: make lock"; \
	  $(PY) -m pip freeze --exclude-editable; } > constraints.txt

clean-state: down
	rm -rf .state

# Benchmarks (bench/, not tests): the fair bench (quick profile: every pipeline at its own best,
# 5 interleaved rounds, frame-by-frame agreement), then the README's Performance section from it.
# Wider sweeps: python -m bench.stream --profile full; retraining: python -m bench.retrain --quick.
.PHONY: bench
bench: up
	@$(PY) -m bench.stream --profile quick
	@$(PY) -m bench.report

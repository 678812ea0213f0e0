# `make run` and `make test` each create .venv and install what they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NODE_SDK := tests/e2e/node
# the suite runs in this many processes (pytest-xdist); every test is independent of the others
TEST_WORKERS ?= 2

.PHONY: run cluster test test-stress lint check bench bench-delivery bench-destinations bench-processing bench-trace-cost bench-isolation bench-warehouse clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(VENV)/.installed $@

$(NODE_SDK)/node_modules/.package-lock.json: $(NODE_SDK)/package-lock.json
	npm ci --prefix $(NODE_SDK) --no-audit --no-fund
	touch $@

run: $(VENV)/.installed
	$(BIN)/headwater serve --config examples/workspace.yaml --data-dir .headwater

# a 3-node NATS JetStream cluster, PostgreSQL, 2 gateway and 2 worker nodes on 127.0.0.1 to try
# scale-out (docs/scale-out.md)
cluster: $(VENV)/.installed-dev
	$(BIN)/headwater dev cluster --config examples/workspace.yaml

test: $(VENV)/.installed-dev $(NODE_SDK)/node_modules/.package-lock.json
	$(BIN)/pytest -p no:randomly -n $(TEST_WORKERS) --durations=15

# the flakiness check of docs/testing.md: 5 runs beside a CPU hog, 3 in random orders
test-stress: $(VENV)/.installed-dev $(NODE_SDK)/node_modules/.package-lock.json
	bash .ci/stress

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/ingest.py

bench-delivery: $(VENV)/.installed-dev
	$(BIN)/python bench/delivery.py

bench-destinations: $(VENV)/.installed-dev
	$(BIN)/python bench/destinations.py --rounds 3

bench-processing: $(VENV)/.installed-dev
	$(BIN)/python bench/processing.py

bench-isolation: $(VENV)/.installed-dev
	$(BIN)/python bench/isolation.py

bench-warehouse: $(VENV)/.installed-dev
	$(BIN)/python bench/warehouse.py

bench-trace-cost: $(VENV)/.installed-dev
	$(BIN)/python bench/trace_cost.py

clean:
	rm -rf $(VENV) .headwater $(NODE_SDK)/node_modules

# Every developer command. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Installs come from two lock files, every package pinned with its hashes: requirements.lock
# (what the service needs; the image installs it) and requirements-dev.lock (that, plus the
# dev extras). `make lock` makes both with uv, which comes from PyPI into the venv.
UV_VERSION ?= 0.13.9
UV := $(BIN)/uv
LOCK_FLAGS ?=
COMPILE := $(UV) pip compile pyproject.toml --universal --generate-hashes --python-version 3.11 \
	--quiet $(LOCK_FLAGS)
export UV_PYTHON_DOWNLOADS := never
BOOTSTRAP ?= $(or $(STREAM_BOOTSTRAP_SERVERS),localhost:9092)
PARTITIONS ?= 4
export PYTHONDONTWRITEBYTECODE := 1

.DEFAULT_GOAL := help
.PHONY: help install lock deps broker broker-stop broker-status db db-stop db-status registry registry-stop topics run produce test test-unit test-enrich bench-io lint format clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-13s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(UV):
	@if ! $(PYTHON) -c 'import ensurepip' 2>/dev/null; then \
		sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		echo "installing Debian's python3-venv (python3 -m venv needs it)"; \
		$$sudo apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends \
			python3-venv >/dev/null; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(STAMP): pyproject.toml requirements-dev.lock | $(UV)
	$(UV) pip install --quiet --python $(BIN)/python --require-hashes -r requirements-dev.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

install: $(STAMP) ## create .venv; install what requirements-dev.lock pins, and the package

lock: | $(UV) ## after editing dependencies in pyproject.toml: re-lock both files, reinstall
	$(COMPILE) --extra dev -o requirements-dev.lock
	$(COMPILE) -c requirements-dev.lock -o requirements.lock
	$(MAKE) --no-print-directory install

deps: ## Debian packages the tests use: prometheus and promtool (apt-get; root or sudo)
	@if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then \
		sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		echo "installing Debian's prometheus package (a real server for the scrape tests)"; \
		$$sudo apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends \
			prometheus >/dev/null; \
	fi

broker: ## start the local Kafka broker (KRaft, 127.0.0.1:9092) unless one answers
	deploy/kafka/broker.sh start

broker-stop: ## stop the local Kafka broker started by `make broker`
	deploy/kafka/broker.sh stop

broker-status: ## does the local broker answer?
	deploy/kafka/broker.sh status

db: ## start the local PostgreSQL (127.0.0.1, port PGPORT or 5432; user, password, database: stream) unless one answers
	deploy/postgres/db.sh start

db-stop: ## stop the local PostgreSQL started by `make db`
	deploy/postgres/db.sh stop

db-status: ## does the local PostgreSQL answer?
	deploy/postgres/db.sh status

registry: ## start the local Schema Registry (Apicurio, in memory, 127.0.0.1:8081) unless one answers
	deploy/registry/registry.sh start

registry-stop: ## stop the local Schema Registry started by `make registry`
	deploy/registry/registry.sh stop

topics: $(STAMP) ## create the input, output and dead-letter topics
	$(BIN)/stream topics create --bootstrap-servers $(BOOTSTRAP) --partitions $(PARTITIONS)

run: $(STAMP) ## install if needed, start a broker if none answers, create topics, run the service
	@if [ "$(BOOTSTRAP)" = "localhost:9092" ] || [ "$(BOOTSTRAP)" = "127.0.0.1:9092" ]; then \
		deploy/kafka/broker.sh start; fi
	$(BIN)/stream topics create --bootstrap-servers $(BOOTSTRAP) --partitions $(PARTITIONS)
	$(BIN)/stream run --bootstrap-servers $(BOOTSTRAP)

produce: $(STAMP) ## send 10,000 demo events to the input topic
	$(BIN)/stream produce --bootstrap-servers $(BOOTSTRAP) --count 10000

test: $(STAMP) deps ## every test, against a real broker (started if none is configured)
	@# The broker-free tests are CPU-bound; the rest mostly wait on servers (the whole
	@# suite uses about a third of one core). So they run side by side, in two pytest
	@# processes, and the suite takes about as long as its longer part.
	@unit_log=$$(mktemp); \
	$(BIN)/pytest -p no:cacheprovider tests/unit tests/example_transform >$$unit_log 2>&1 & \
	unit=$$!; \
	$(BIN)/pytest --ignore=tests/unit --ignore=tests/example_transform; rest=$$?; \
	wait $$unit; units=$$?; \
	echo "----- broker-free tests (tests/unit, tests/example_transform), run alongside -----"; \
	cat $$unit_log; rm -f $$unit_log; \
	exit $$(( rest != 0 || units != 0 ))

test-unit: $(STAMP) ## the tests that need no broker, no Prometheus, no root
	$(BIN)/pytest tests/unit tests/example_transform

test-enrich: $(STAMP) ## the enrichment stage: its pure logic, and lookups against a real local aiohttp server
	$(BIN)/pytest tests/unit/test_enrich_logic.py tests/enrich

bench-io: $(STAMP) ## I/O baselines: 1,000 lookups of 50 ms through threads, processes and asyncio
	$(BIN)/python -m stream.bench.enrich_io

lint: $(STAMP) ## ruff check, ruff format --check, mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict

format: $(STAMP) ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean: ## remove the virtual environment and caches (not the broker's data)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

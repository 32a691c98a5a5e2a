# eddy: the two commands a newcomer needs are `make run` and `make test`.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-installed-stamp

.PHONY: help install run kafka kafka-stop test test-unit lint bench soak soak-all compare clean distclean lock

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install eddy with its pinned dependencies

# The `bench` extra (Quix Streams, confluent-kafka): only `make bench` and `make lock` need it.
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	touch $(BENCH_STAMP)

kafka:  ## start the local Kafka broker (no-op when KAFKA_BROKER points elsewhere or it answers)
ifdef KAFKA_BROKER
	@echo "KAFKA_BROKER=$(KAFKA_BROKER): using that cluster, not starting one"
else
	$(PYTHON) -m broker start
endif

kafka-stop:  ## stop the local Kafka broker started by `make kafka`
	$(PYTHON) -m broker stop

run: $(STAMP)  ## broker + worker + demo feed; Ctrl-C stops everything it started
	$(PY) -m app.demo

test: $(STAMP)  ## the whole suite: unit tests and integration tests against a real broker
	$(PY) -m pytest

test-unit: $(STAMP)  ## tests that need no broker
	$(PY) -m pytest -m "not integration"

lint: $(STAMP)  ## ruff
	$(PY) -m ruff check .

bench: $(BENCH_STAMP)  ## throughput, latency and floors (Faust, aiokafka, Quix Streams); appends to BENCHMARKS.md
	$(PY) -m benchmarks.fraud
	$(PY) -m benchmarks.pipelines

soak: $(STAMP)  ## 120 days of traffic through one worker at a steady rate; appends to BENCHMARKS.md
	$(PY) -m benchmarks.soak

soak-all: $(STAMP)  ## soaks of recommendations (120 days, 500 clicks/s) and alerts (10 days, 1,000 readings/s); append to BENCHMARKS.md
	$(PY) -m benchmarks.soak --pipeline recommendations
	$(PY) -m benchmarks.soak --pipeline alerts

compare: $(STAMP)  ## batch vs event-driven comparison report into docs/comparison
	$(PY) -m app.comparison --out docs/comparison

lock: $(BENCH_STAMP)  ## re-pin constraints.txt from the current .venv (the bench extra included)
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:  ## stop the broker, remove local state and caches (keeps .venv and the Kafka jars)
	-$(PYTHON) -m broker stop
	rm -rf .eddy/kafka/data .eddy/kafka/logs .eddy/workers *-data .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +

distclean: clean  ## also remove .venv and the fetched Kafka jars
	rm -rf $(VENV) .eddy

# Two entry points for a fresh machine: `make demo` and `make test`.
# Everything they need is installed by the targets below (idempotent).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Every extra: the suite covers the Faust engine and the plots; bench brings py-spy.
EXTRAS := test,faust,plot,bench

.PHONY: setup system-deps compose-deps constraints demo test test-unit test-integration test-compose test-reliability soak spike chaos poisoning lint bench clean

# The versions in constraints.txt, so `make demo` / `make test` install what the suite ran on.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	touch $(STAMP)

# After changing a dependency in pyproject.toml: install it unconstrained into the venv,
# then pin what the venv holds (its own package and tools outside pyproject left out).
constraints:
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	{ grep '^#' constraints.txt; \
	  $(PY) -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

system-deps:
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server (Debian package)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	@command -v kcat >/dev/null || { \
	  echo "installing kcat (Debian package; the \`prism topics decode\` test pipes it)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null; }
	@command -v java >/dev/null || { echo "Java 17+ is required for the local Kafka broker"; exit 2; }
	@command -v mvn >/dev/null || { \
	  echo "installing maven (Debian package)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven >/dev/null; }

setup: $(STAMP) system-deps

# For the compose test: Debian's Docker engine (started if not running), Docker Compose
# built from its Go module and local stand-ins tagged as the images docker-compose.yml
# names (no Docker Hub here). Built once per machine (~2.5 min), then a tag check.
compose-deps: setup
	@bash tests/compose/standins/build.sh

# The main job on the local stack.
demo: setup
	$(VENV)/bin/prism demo

# The whole test suite: unit, property, integration (real Kafka + Redis), compose.
test: setup compose-deps
	@$(PY) -m pytest; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest: no tests were collected"; rc=0; fi; exit $$rc

test-unit: setup
	$(PY) -m pytest -m "not integration and not e2e and not compose"

test-integration: setup
	$(PY) -m pytest -m "integration or e2e"

# docker-compose.yml for real: up, replay, restarts, down/up, SASL, monitoring (~3 min).
test-compose: setup compose-deps
	$(PY) -m pytest -m compose

# The fault-and-abuse suite alone (tests/reliability/ + the capability tests marked reliability).
test-reliability: setup
	$(PY) -m pytest -m reliability

# Nightly, not in `make test`: the central worker's sustained maximum (a 5-minute overload),
# then SOAK_MINUTES at 80 % of it; lag and RSS slopes printed (needs `prism stack up`).
SOAK_MINUTES ?= 30
soak: setup
	$(PY) bench/soak.py --minutes $(SOAK_MINUTES) --load 0.8 $(if $(SOAK_LOG),--log $(SOAK_LOG))

# MISSION.md's scenario C: the centre at its maximum, then doubled for a minute (needs `prism stack up`).
spike: setup
	$(PY) bench/spike.py --png spike.png

# Randomized faults under steady load, then the invariants checked (needs no stack: it starts
# its own broker and Redis to kill). MINUTES=5; SEED=N replays a run (default: a new seed, printed).
MINUTES ?= 5
chaos: setup
	$(PY) bench/chaos/run.py --minutes $(MINUTES) $(if $(SEED),--seed $(SEED))

# Poisoning figures (in-process, no stack): FedAvg vs FedMedian, clean vs 20 % attackers.
poisoning: setup
	$(PY) bench/poisoning.py

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# Benchmarks print figures measured in one run; bench_replay, central_throughput, merger_throughput and edge_agent need `PRISM_KAFKA_JVM=bench prism stack up` (production JVM flags for the broker).
bench: setup
	$(PY) bench/bench_merge.py
	$(PY) bench/bench_exact_merge.py
	$(PY) bench/bench_replay.py
	$(PY) bench/central_throughput.py
	$(PY) bench/merger_throughput.py
	$(PY) bench/edge_agent.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

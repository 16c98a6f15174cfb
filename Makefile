# Two commands do everything on a fresh machine: `make demo` and `make test`. Both run `setup` first.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSTEM_PACKAGES := libfluidsynth3 fluid-soundfont-gm fluidsynth chromium wrk
export PERSONALIZE_DATA_DIR ?= $(CURDIR)/var
export AIRFLOW_HOME ?= $(CURDIR)/var/airflow
DEMO_TRACKS ?= 36

.PHONY: setup system-deps demo test test-fast bench lint format clean images

setup: system-deps $(STAMP)

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) || exit 1; \
	  else \
	    echo "Missing Debian packages:$$missing"; \
	    echo "Install them as root: sudo apt-get install -y$$missing   (FluidSynth renders audio; the soundfont is FluidR3_GM, MIT)"; \
	    exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "$(PY) not found: install Python 3.11 or run 'make PY=python3 ...'"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel
	# torch first, pinned, so nothing later resolves to a multi-GB CUDA build on a CPU machine.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/personalize db upgrade
	$(BIN)/personalize simulate --listeners 2000 --days 30 --seed 7
	@# The night of the world's last day, run by real Airflow (`airflow dags test`, metadata DB in var/airflow).
	@# A demo-sized night (36 tracks of 16 bars); production nights default to 200 (PERSONALIZE_TRACKS_TOTAL).
	PERSONALIZE_TRACKS_TOTAL=$(DEMO_TRACKS) PERSONALIZE_TRACKS_PER_CLUSTER_MIN=2 $(BIN)/personalize run --airflow

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	$(BIN)/python bench/run_all.py

# The container images of docker/compose.yaml, without any image registry: a Debian base (debootstrap when
# no registry serves one), the wheel folder from this machine's pip, then every image.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
images:
	docker/build-base
	docker/build-wheels
	$(COMPOSE) -p personalize -f docker/compose.yaml build

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf var .pytest_cache .ruff_cache

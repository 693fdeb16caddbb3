# medcycle — developer entry points. `make run` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup run test test-fast lint format bench browser-deps clean help

help:
	@echo "make run    set up, initialise ~/.medcycle on embedded defaults, run the demo, serve the UI on :8080"
	@echo "make test   lint + type-check + every test (unit, PostgreSQL, Redis, S3, browser)"
	@echo "make lint   ruff + mypy (strict on the package)"
	@echo "make bench  benchmarks under bench/ (ratios against plain copies)"

# The virtual environment; torch==2.13.0 goes in before anything that depends on torch.
setup: $(STAMP)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[train,s3,dev]'
	touch $(STAMP)

# Headless Chromium for the browser tests (Debian package; Playwright cannot download browsers here).
browser-deps:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "WARNING: could not install chromium; browser tests will be skipped (and fail under CI=true)"; \
	  else echo "WARNING: chromium missing and not root; install it with: sudo apt-get install -y chromium"; fi; \
	fi

run: setup
	$(VENV)/bin/medcycle demo

lint: setup
	$(VENV)/bin/ruff check medcycle tests bench
	$(VENV)/bin/mypy

test: setup browser-deps lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not integration and not browser" $(PYTEST_ARGS)

format: setup
	$(VENV)/bin/ruff check --fix medcycle tests bench

bench: setup
	$(PY) bench/objects.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis test-artifacts

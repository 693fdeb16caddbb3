# medcycle — developer entry points. `make run` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup run test test-fast lint format bench browser-deps helm-deps clean help

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
	    (apt-get -o DPkg::Lock::Timeout=600 update -qq \
	      && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium >/dev/null) \
	      || echo "WARNING: could not install chromium; browser tests will be skipped (and fail under CI=true)"; \
	  else echo "WARNING: chromium missing and not root; install it with: sudo apt-get install -y chromium"; fi; \
	fi

# Helm's linter for the chart test (helm-sdkpy bundles it and needs Python 3.12; pyenv's is used when the
# plain `python3.12` is not on PATH). Best effort: without it the chart-lint test is skipped with the reason.
HELM_VENV := $(VENV)/helm
helm-deps:
	@if [ ! -x $(HELM_VENV)/bin/python ] || ! $(HELM_VENV)/bin/python -c 'import helm_sdkpy' 2>/dev/null; then \
	  PY312=""; \
	  if python3.12 --version >/dev/null 2>&1; then PY312="python3.12"; \
	  elif command -v pyenv >/dev/null 2>&1; then V=$$(pyenv versions --bare 2>/dev/null | grep '^3\.12' | tail -1); \
	    [ -n "$$V" ] && PY312="env PYENV_VERSION=$$V python3.12"; fi; \
	  if [ -n "$$PY312" ] && $$PY312 -m venv $(HELM_VENV) && $(HELM_VENV)/bin/pip install --quiet helm-sdkpy; then :; \
	  else echo "WARNING: no Python 3.12 for helm-sdkpy; the Helm chart lint test will be skipped"; fi; \
	fi

run: setup
	$(VENV)/bin/medcycle demo

lint: setup
	$(VENV)/bin/ruff check medcycle tests bench
	$(VENV)/bin/mypy

test: setup browser-deps helm-deps lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not integration and not browser" $(PYTEST_ARGS)

format: setup
	$(VENV)/bin/ruff check --fix medcycle tests bench

bench: setup
	$(PY) bench/objects.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis test-artifacts

# foleyflow — two commands do all set-up on a fresh machine:
#   make run    venv + install + the bundled demo reel end to end (embedded mode)
#   make test   everything the tests need, then pytest
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
REQS := pyproject.toml requirements/constraints.txt requirements/base.txt
INSTALLED := $(VENV)/.installed
TEST_INSTALLED := $(VENV)/.installed-test
SAMPLES := .cache/adapter-samples
DEMO := demo
DELIVERY := delivery/demo_reel

.PHONY: run test venv test-deps postgres chromium demo clean bench

venv: $(INSTALLED)

$(INSTALLED): $(REQS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, from the local CPU wheel: any looser pin would pull a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements/base.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

run: venv
	$(BIN)/foley demo make $(DEMO)
	$(BIN)/foley run $(DEMO)/demo_reel.otio --out $(DELIVERY)
	@echo "delivery: $(DELIVERY)/ (manifest.json, mixes, stems, timelines, preview)"

PG_BIN := /usr/lib/postgresql/15/bin

test-deps: $(TEST_INSTALLED) $(SAMPLES)/.done postgres chromium

# The studio-mode tests start their own PostgreSQL 15; install it where the image lacks it.
postgres:
	@test -x $(PG_BIN)/initdb || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15; }

# The review app's browser test drives Debian's Chromium with Playwright (which never downloads
# a browser of its own here).
chromium:
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

$(TEST_INSTALLED): $(INSTALLED) requirements/test.txt
	$(BIN)/pip install -q -r requirements/test.txt
	touch $@

$(SAMPLES)/.done: scripts/fetch_adapter_samples.sh
	PIP=$(BIN)/pip bash scripts/fetch_adapter_samples.sh $(SAMPLES)
	touch $@

# Two test processes (pytest-xdist), one per core of a 2-core CI machine: each starts its own
# Postgres, S3 server and Prefect server on free loopback ports. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2

test: test-deps
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

bench: venv
	$(BIN)/foley bench

clean:
	rm -rf .foley $(DEMO) delivery .pytest_cache

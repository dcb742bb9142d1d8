# Two commands for a newcomer: `make run` and `make test`. Everything they need is installed here.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# `make run` installs what the service needs; `make test` adds the test extras (pytest, Playwright, moto, ...).
TEST_STAMP := $(VENV)/.test-extras-stamp

.PHONY: run test services browser migrate clean-var bench-engine bench-diagnostics bench-service bench-latency \
	bench-status bench-scale bench-transfer bench-first-job

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Trainyard needs Python 3.11; set PYTHON=/path/to/python3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -I .ci/deps-satisfied || $(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -I .ci/deps-satisfied || $(PY) -m pip install --quiet --disable-pip-version-check -e .
	touch $(STAMP)

## pip is asked only when .ci/deps-satisfied finds something missing or too old: with everything installed it
## still spends 30-90 s on the package index (the editable build's isolated environment, --upgrade pip).
$(TEST_STAMP): $(STAMP)
	$(PY) -I .ci/deps-satisfied test || $(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(TEST_STAMP)

## Start API + worker on embedded defaults (or whatever TRAINYARD_* says); prints the URL and a token.
run: $(STAMP)
	$(PY) -m trainyard.devserver

## The whole suite against real Postgres and Redis (started, or installed, when missing), in two processes
## (pytest-xdist), each with its own Postgres database, Redis databases, API and worker (tests/conftest.py).
## In collection order: xdist first hands each process a run of consecutive tests (a quarter of its share),
## so collecting the longest modules first gave all of them to one process (897 s against 892). Not
## --dist loadscope/loadfile: they key tests by node id, and schemathesis' generated tests share one per
## test function (63 of test_fuzz_api's 67 were silently not run).
## Tests marked `exclusive` (cancellation latencies) run afterwards on their own, on an otherwise idle machine.
## Bytecode is written even where PYTHONDONTWRITEBYTECODE is set: otherwise pytest rewrites the asserts of
## every test module and plugin (schemathesis, hypothesis) again in each process, seconds of CPU per run.
## The second run collects only the modules that mark tests `exclusive` (grep finds `pytest.mark.exclusive`),
## not the whole suite again (~20 s of imports and schemathesis' test generation).
EXCLUSIVE_MODULES = $(shell grep -rl --include='test_*.py' 'mark\.exclusive' tests)
test: $(TEST_STAMP) services browser
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -q -p no:cacheprovider -n 2 -m 'not exclusive'
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -q -p no:cacheprovider -m exclusive $(EXCLUSIVE_MODULES)

services:
	@bash .ci/ensure-services

## Debian's Chromium for the dashboard test (installed with apt-get when missing).
browser:
	@bash .ci/ensure-browser

migrate: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bin/migrate

bench-engine: $(STAMP)
	$(PY) bench/engine.py

bench-diagnostics: $(STAMP)
	$(PY) bench/diagnostics.py

## Training through the whole service (API, queue, worker) versus a bare Keras script; start latency.
bench-service: $(STAMP) services
	$(PY) bench/service_overhead.py

bench-latency: $(STAMP) services
	$(PY) bench/start_latency.py

## API benchmarks (bench/README.md): each starts its own Postgres database and API via bench/stack.py.
bench-status: $(STAMP) services
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	$(PY) bench/status_throughput.py

bench-scale: $(STAMP) services
	$(PY) bench/scale.py

bench-transfer: $(STAMP) services
	$(PY) bench/transfer.py

## A fresh clone of HEAD to a trained job with `make run` (REV=<commit> for another revision).
bench-first-job: $(STAMP)
	$(PY) bench/first_job.py --rev $(or $(REV),HEAD)

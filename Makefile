# Two commands on a fresh machine (python3, node, make): `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
CLOUD ?= aws
DB ?= sqlite
EXECUTOR ?= $(if $(filter postgres,$(DB)),celery,none)
PYTEST_ARGS ?=
# uv writes .pyc files at install time; this machine disables writing them at import time.
export UV_COMPILE_BYTECODE := 1


.PHONY: help venv emulators system-packages demo bench reliability test unit integration e2e lint format lock clean

help:
	@echo "make demo [CLOUD=aws|gcp|azure] [DB=sqlite|postgres] [EXECUTOR=none|local|celery]"
	@echo "                       offline end-to-end demo on embedded emulators (DB=postgres: Celery workers)"
	@echo "make test              lint + unit + integration + e2e tests"
	@echo "make bench             benchmark table (writes bench-results.json)"
	@echo "make reliability       reliability figures (writes reliability.json)"
	@echo "make unit|integration|e2e|lint|format|lock|clean"

$(VENV)/.installed: pyproject.toml requirements-dev.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	test -x $(UV) || $(PY) -m pip install --quiet --disable-pip-version-check uv
	$(UV) pip install --quiet --python $(PY) -e '.[dev]' -c requirements-dev.lock
	touch $@

venv: $(VENV)/.installed

# Azurite (Azure Storage emulator), pinned in package-lock.json, into ./node_modules.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

emulators: venv node_modules/.installed

# Debian packages the e2e suite starts itself, installed when missing (as root, or through sudo):
# chromium for the UI's XCom tab (Playwright drives it; its own browser downloads need the internet),
# PostgreSQL and redis-server for Airflow in production's shape (metadata DB, Celery broker).
system-packages:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$sudo apt-get install -y -q $$missing >/dev/null || \
	    { $$sudo apt-get update -q >/dev/null && $$sudo apt-get install -y -q $$missing >/dev/null; }; \
	fi

demo: emulators $(if $(filter postgres,$(DB)),system-packages)
	$(PY) -m emulation.demo --cloud $(CLOUD) --db $(DB) --executor $(EXECUTOR)

# Side-by-side figures (not a test): on loopback moto (bundled vs common-io vs DB XCom vs raw s3fs), then through
# a shaped link (emulation/netshape.py: 20 ms RTT, 80 MB/s per connection) on S3, GCS and Azure.
bench: emulators
	$(PY) -m bench.run

# Figures from the reliability tests (bad input, faults, concurrency, least privilege, secrets).
reliability: emulators
	RELIABILITY_REPORT=reliability.json $(PY) -m pytest -m reliability -q $(PYTEST_ARGS)
	$(PY) -m tests.reliability_table reliability.json

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint emulators system-packages
	$(PY) -m pytest $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: emulators
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

e2e: emulators system-packages
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

format: venv
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# Re-pin every dependency of the dev environment (run after changing pyproject.toml). Needs only uv, not an
# install from the old pins (which may conflict with the change).
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	test -x $(UV) || $(PY) -m pip install --quiet --disable-pip-version-check uv
	$(UV) pip compile --quiet --python $(PY) --extra dev pyproject.toml -o requirements-dev.lock

clean:
	rm -rf $(VENV) node_modules .demo .pytest_cache .ruff_cache .hypothesis

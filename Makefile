# CosmoDM-Ops: `make demo` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_VERSION ?= 3.11
VENV := .venv
PY := $(VENV)/bin/python
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
# Debian packages the project needs (science binaries, then the integration tiers' services).
OS_PKGS := source-extractor scamp psfex swarp libcfitsio-bin strace \
           openssh-server slurm-wlm munge slurmdbd mariadb-server chromium
OS_BINS := source-extractor scamp psfex SWarp fpack funpack strace /usr/sbin/sshd slurmctld slurmd slurmdbd munged mariadbd chromium
PYTEST_ARGS ?=

.PHONY: help setup os-deps venv test test-unit test-badinput test-browser demo demo-campaign ui bench faults lint clean

help:
	@echo "make demo   - set up and run the main job on the embedded defaults"
	@echo "make test   - set up and run every test tier (CI=true: missing services fail)"
	@echo "make bench  - run the benchmarks in bench/"
	@echo "make ui     - the Airflow UI with the survey pages on the demo's state (URL and login printed)"
	@echo "make demo-campaign - after make demo: reprocess the demo night through Airflow's REST API + HITL"
	@echo "make faults - inject failures into the real services mid-run; table + JSON line"

setup: os-deps venv

# Install the OS packages when some are missing: directly as root, else print the one command.
os-deps:
	@missing=0; for b in $(OS_BINS); do command -v $$b >/dev/null 2>&1 || [ -x $$b ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing OS packages: $(OS_PKGS)"; \
	    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(OS_PKGS)) >.os-deps.log 2>&1 \
	      || { tail -20 .os-deps.log; exit 1; }; \
	  else \
	    echo "Missing OS packages. Run as root:"; \
	    echo "  apt-get install -y $(OS_PKGS)"; \
	    exit 1; \
	  fi; \
	fi

$(UV):
	python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv

# The lock (uv.lock) is honoured: --frozen never re-resolves.
venv: $(UV)
	@UV=$$(command -v uv 2>/dev/null || echo $(UV)); \
	$$UV sync --frozen --all-extras --python $(PYTHON_VERSION) --quiet

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

demo: setup
	$(PY) -m cosmodm_ops.demo

ui: venv
	$(PY) -m cosmodm_ops.ui.launch

test-badinput: venv
	$(PY) -m pytest tests/badinput $(PYTEST_ARGS)

test-browser: venv
	$(PY) -m pytest -m browser $(PYTEST_ARGS)

# after `make demo`: the demo night reprocessed through the Airflow REST API and HITL approval
demo-campaign: setup
	$(PY) -m cosmodm_ops.demo_campaign

bench: setup
	$(PY) -m bench

# Fault injection against the real processes (bench/faults: a registry of rows); a table and one JSON line
faults: setup
	flock /tmp/cosmodm-services.lock nice -n 10 $(PY) -m bench.faults

lint: venv
	$(VENV)/bin/ruff check cosmodm_ops dags plugins tests bench

clean:
	rm -rf var/demo .pytest_cache

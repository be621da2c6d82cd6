# Two entry points for newcomers: `make run` and `make test` (README.md).
# Everything is installed from this repository's own files into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
CONFIG ?= config/config.yaml
WITH_CLUSTER ?= 0

# Rules and tests call `jamun` and `torchrun` from PATH: the venv's come first.
export PATH := $(abspath $(BIN)):$(PATH)

STAMP := $(VENV)/.installed
CLUSTER_STAMP := $(VENV)/.torch-cluster

.PHONY: setup run test report cluster clean-venv

setup: $(STAMP)

# The lock pins torch==2.13.0 (a CPU build where the local index has it); see README for CUDA.
# Test-only pins in the lock: snakefmt (and its black, click, pathspec, pytokens, mypy_extensions,
# shfmt-py) checks the rule files' format (tests/test_lint.py); websocket-client drives headless
# Chromium over the DevTools protocol (tests/test_report_browser.py).
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools>=68" wheel
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

# Optional accelerator for the radius graph; compiles from source (~11 min on 2 cores) and must
# see the installed torch, hence --no-build-isolation. `make run` never builds it.
cluster: $(CLUSTER_STAMP)
$(CLUSTER_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q --no-build-isolation torch-cluster==1.6.3
	touch $@

run: setup
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG)
	$(BIN)/snakemake --cores 1 --configfile $(CONFIG) --report results/report.html \
		--report-stylesheet workflow/report/report.css

TEST_DEPS := $(STAMP)
ifeq ($(WITH_CLUSTER),1)
TEST_DEPS += $(CLUSTER_STAMP)
endif

test: $(TEST_DEPS)
	$(BIN)/python -m pytest

clean-venv:
	rm -rf $(VENV)

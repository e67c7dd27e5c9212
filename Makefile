# `make demo` and `make test` each set themselves up from nothing: a .venv with the pinned set.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check airflow cluster bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(BIN)/python -m cli.demo

test: $(STAMP)
	$(BIN)/python -m pytest

# The quick subset for one's own iterations: every test not marked slow (CI runs them all).
check: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

# The real Airflow (standalone, SQLite) with the project's DAGs, and the MLflow UI, on
# $$CLLM_HOME (default ./var; `make airflow CLLM_CONFIG=var/demo/cllm.toml` after `make demo`).
airflow: $(STAMP)
	$(BIN)/python -m pipeline.airflow_local

# What a production deployment runs, on this machine, on $$CLLM_HOME: PostgreSQL, Redis,
# Airflow on the CeleryExecutor (two workers) and an MLflow server with basic auth (it needs
# Debian's postgresql and redis-server: see the README).
cluster: $(STAMP)
	$(BIN)/python -m pipeline.cluster

# The PyTorch reference for benchmarks (the CPU build on this machine's disk).
bench: $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,bench]'

clean:
	rm -rf $(VENV) var

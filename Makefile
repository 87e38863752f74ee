# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TESTSTAMP := $(VENV)/.installed-test
DEMO_DATA ?= meshlens-data

.PHONY: demo test install bench clean lint

PIP := $(BIN)/pip install -q --no-compile --disable-pip-version-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml setup.py ingest/_otlpscan.c | $(BIN)/python
	$(PIP) -e .
	touch $@

$(TESTSTAMP): pyproject.toml setup.py ingest/_otlpscan.c | $(BIN)/python
	$(PIP) -e '.[test]'
	bash .ci/install-browser
	touch $@ $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/meshlens demo --data $(DEMO_DATA)

test: $(TESTSTAMP)
	$(BIN)/python -m pytest

bench: $(TESTSTAMP)
	$(BIN)/python -m bench.run_all

lint: $(TESTSTAMP)
	$(BIN)/python -m mypy meshlens ingest analytics nlq

clean:
	rm -rf $(VENV) $(DEMO_DATA) .pytest_cache

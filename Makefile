# opensora-platform: the two set-up commands are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-slow test-all lint bench workflows clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0          # local CPU wheel; install first so nothing pulls CUDA
	$(PIP) install -q -r requirements.txt -r requirements-dev.txt
	$(PIP) install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m workflows.demo

test: $(STAMP)
	$(PY) -m pytest -m "not slow and not gpu" -q

test-slow: $(STAMP)
	$(PY) -m pytest -m "slow" -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

workflows: $(STAMP)
	$(PY) -m workflows.compile

clean:
	rm -rf $(VENV) .pytest_cache

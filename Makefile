# The common commands. Everything runs in the virtual environment `make venv` creates (.venv).
VENV ?= .venv
PY := $(VENV)/bin/python
SRC := libs/lineguard services tests benchmarks training

.PHONY: venv install test test-fast lint format typecheck layering check demo bench-inference bench-bus proto clean

venv:
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

install: venv            ## the package, editable, with what the tests, lint and training need
	$(PY) -m pip install -q -e '.[test,train,openvino]'

test:                    ## the README's test command: the whole suite
	$(PY) -m pytest

test-fast:               ## unit tests only (no servers but what a unit test starts itself)
	$(PY) -m pytest tests/unit -q

lint:                    ## ruff's lint rules and its formatter, checking only
	$(VENV)/bin/ruff check $(SRC)
	$(VENV)/bin/ruff format --check $(SRC)

format:                  ## let ruff fix what it can and format the tree
	$(VENV)/bin/ruff check --fix $(SRC)
	$(VENV)/bin/ruff format $(SRC)

typecheck:
	PATH=$(VENV)/bin:$$PATH scripts/typecheck

layering:                ## the import-linter contracts in pyproject.toml
	$(VENV)/bin/lint-imports

check: lint typecheck layering test   ## what .ci/run runs

demo:
	$(VENV)/bin/lineguard demo

bench-inference:
	$(PY) benchmarks/inference.py --rounds 5

bench-bus:
	$(PY) benchmarks/bus.py

proto:                   ## regenerate lineguard/v1 from proto/ (tests/unit/test_contracts.py checks it is current)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=libs --pyi_out=libs proto/lineguard/v1/*.proto

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache

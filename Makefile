# Two entry points for a new user (see README): `make run` and `make test`.
# Each creates the virtual environment (.venv) on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e ".[pipeline,dev,digits]"
	touch $(STAMP)

venv: $(STAMP)

## The default experiment on the embedded defaults (procedural dSprites, local MLflow):
## prepare -> train -> evaluate -> report, reproduced by DVC (a second run does nothing).
run: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro report

## The test suite (GPU and cluster tests skip themselves without a GPU / KFP_HOST).
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not gpu and not cluster" --durations=25

LINTED := src tests benchmarks $(wildcard pipelines/*.py components/*.py)

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/hadolint --failure-threshold info components/Dockerfile

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

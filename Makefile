# The two commands a newcomer needs: `make demo` and `make test`.
# Every target creates the virtual environment itself on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench acceptance format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## run an example app on LocalDisk twice: its state survives the restart
	@dir=$$(mktemp -d); \
	echo "== first run, data in $$dir"; $(BIN)/python examples/demo.py $$dir && \
	echo "== second run, a new process on the same directory" && $(BIN)/python examples/demo.py $$dir; \
	status=$$?; rm -rf $$dir; exit $$status

test: $(STAMP)  ## the whole test suite
	$(BIN)/python -m pytest

lint: $(STAMP)  ## ruff (lint + format check) and mypy strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)  ## benchmark tables: ratios against baselines measured in the same run
	$(BIN)/python -m bench

acceptance: $(STAMP)  ## the transcripts in ../shared/acceptance, when present
	@if [ -d ../shared/acceptance ]; then \
		home=$$(mktemp -d); \
		(cd ../shared/acceptance && PACHYDERM_HOME=$$home $(CURDIR)/$(BIN)/python -m doctest -o ELLIPSIS -o NORMALIZE_WHITESPACE quickstart.md) && echo "acceptance/quickstart.md: ok"; \
		status=$$?; rm -rf $$home; [ $$status -eq 0 ] || exit $$status; \
		PATH=$(CURDIR)/$(BIN):$$PATH bash ../shared/acceptance/restart.sh; \
	else echo "no ../shared/acceptance: skipped"; fi

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis pachyderm-data

# The two commands of the README's quick start, and the checks CI runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint install install-test browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'

# Install and run the server on the embedded defaults (SQLite in ./jobyard-data).
run: install
	$(BIN)/jobyard server

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Debian's Chromium for the console tests (Playwright drives it; it never
# downloads a browser of its own).
browser:
	@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "the console tests need Debian's chromium: sudo apt-get install chromium"; exit 1; \
	  fi; }

# Install the test dependencies and run every check and test.
test: lint browser
	$(BIN)/pytest

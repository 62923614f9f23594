# The two commands of the README's quick start, and the checks CI runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint install install-test install-bench bench browser podman

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'

install-bench: $(BIN)/python
	$(BIN)/pip install -q -e '.[bench]'

# Every benchmark at the issue's sizes, SQLite then PostgreSQL (bench/README.md);
# about 25 minutes, on an otherwise quiet machine. OUT=<dir> for the JSON lines.
OUT ?= bench/results
bench: install-bench
	PYTHON=$(BIN)/python bash bench/run_all.sh $(OUT)

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

# Debian's podman for the image tests (they make their own image from
# busybox-static: no registry is needed). On this kind of host two engine
# settings must change, once: crun refuses cgroup v1 while the v2 hierarchy
# holds a controller (runc does not), and root without CAP_SYS_RESOURCE cannot
# raise the open-files and processes limits podman gives containers by default.
PODMAN_CONF := /etc/containers/containers.conf.d/50-jobyard-host.conf
podman:
	@command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 && [ -x /bin/busybox ] || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc busybox-static >/dev/null; \
	  else \
	    echo "the image tests need podman: sudo apt-get install podman runc busybox-static"; exit 1; \
	  fi; }
	@[ -e $(PODMAN_CONF) ] || [ "$$(id -u)" != 0 ] || { \
	  nofile=$$(ulimit -Hn); nproc=$$(awk '/^Max processes/ {print $$4}' /proc/self/limits); \
	  [ "$$nofile" = unlimited ] && nofile=1048576; \
	  { [ "$$nproc" = unlimited ] || [ "$$nproc" -gt 32768 ]; } && nproc=32768; \
	  mkdir -p $(dir $(PODMAN_CONF)) && \
	  printf '%s\n' '# Written by jobyard'"'"'s make podman: see docs/images.md.' \
	    '[containers]' "default_ulimits = [\"nofile=$$nofile:$$nofile\", \"nproc=$$nproc:$$nproc\"]" \
	    '[engine]' 'runtime = "runc"' > $(PODMAN_CONF) && \
	  echo "wrote $(PODMAN_CONF) (runc, default ulimits nofile=$$nofile nproc=$$nproc)"; }

# Install the test dependencies and run every check and test.
test: lint browser podman
	$(BIN)/pytest

# One target per habit. Every target builds the virtualenv it needs by itself.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test lint bench demo clean

# The install compiles the core's hot modules with mypyc (setup.py), so it is
# redone when they change; until then the package imports their sources.
HOT := exchange/auction.py exchange/book.py exchange/core.py exchange/records.py exchange/tables.py  # = exchange.native.COMPILED

$(STAMP): pyproject.toml setup.py $(HOT)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev,bench]'
	touch $(STAMP)

test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy exchange gateway clients

bench: $(STAMP)
	$(BIN)/python -m benchmarks.engine
	$(BIN)/python -m benchmarks.journal
	$(BIN)/python -m benchmarks.gateway
	$(BIN)/python -m benchmarks.inbound

# The gateway with a seeded demo market on http://127.0.0.1:8080 (state in var/demo).
demo: $(STAMP)
	$(BIN)/python -m gateway --demo

# The dashboard's browser tests drive Debian's Chromium through Playwright;
# Playwright's own browser download needs internet access, which CI lacks.
$(CHROMIUM):
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y --no-install-recommends chromium

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	rm -f *.so exchange/*.so exchange/_built.py

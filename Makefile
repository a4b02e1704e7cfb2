# Chancery: two commands on a fresh machine.
#   make up    - create .venv, install, generate a local network if there is none, run it
#   make test  - install with test extras and run the whole suite (under 10 minutes, 2 cores)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
NETWORK_DIR ?= testnet
SEEDS ?= 1000
# Debian's Chromium, for the lottery page's browser test (tests/integration/test_lottery_ui.py).
# `:=`, not `?=`: desktops export BROWSER and the like, and the test looks exactly here.
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: up test lint soak sim bench clean-net install install-test browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# Playwright drives this binary; its own browser download (`playwright install`) is never used.
$(CHROMIUM):
	$(SUDO) apt-get update -q
	$(SUDO) apt-get install -y --no-install-recommends chromium

browser: $(CHROMIUM)

up: install
	$(BIN)/chancery up --dir $(NETWORK_DIR)

test: install-test $(CHROMIUM)
	$(BIN)/ruff check .
	$(BIN)/pytest -q

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

soak: install-test
	$(BIN)/pytest -q -m slow -o addopts=""

# Seeded simulation of n = 4 and n = 7 replicas (tests/sim); a failure prints its replay.
sim: install-test
	$(BIN)/python -m tests.sim.run --seeds $(SEEDS)

bench: install
	$(BIN)/chancery bench

clean-net:
	rm -rf $(NETWORK_DIR)

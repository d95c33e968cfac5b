# Two commands on a fresh machine:
#   make run    create .venv, install, start the factory on SQLite (API at http://127.0.0.1:8000)
#   make test   install the test tools too and run the whole suite (lint + pytest)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# PyTorch's CPU wheel index. pip prefers its 2.13.0+cpu over PyPI's multi-GB CUDA build of the same
# version, so a machine without an NVIDIA GPU gets the small CPU build. Where the index cannot be reached
# (an offline mirror, a closed network), pip is not sent to retry it for every package.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PYTEST_ARGS ?=
LINT_PATHS := src tests $(wildcard benchmarks)

.PHONY: run test install install-test system-test-tools torch lint format docs clean

run: install
	$(BIN)/aifactory up

test: install-test
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/pytest $(PYTEST_ARGS)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "AI Factory Engine needs Python >= 3.11; set PYTHON=python3.11 (or newer)")'
	$(PYTHON) -m venv $(VENV)

torch: $(BIN)/python
	@if $(BIN)/python -c "import torch" 2>/dev/null; then \
		echo "torch already installed"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/pip install "torch==$(TORCH_VERSION)"; \
	elif $(BIN)/python -c "import urllib.request as u; u.urlopen('$(TORCH_CPU_INDEX)/', timeout=5)" 2>/dev/null; then \
		echo "no NVIDIA GPU found: installing the CPU build of PyTorch"; \
		$(BIN)/pip install "torch==$(TORCH_VERSION)" --extra-index-url $(TORCH_CPU_INDEX); \
	else \
		echo "no NVIDIA GPU found and $(TORCH_CPU_INDEX) unreachable: installing torch==$(TORCH_VERSION) from the configured indexes"; \
		$(BIN)/pip install "torch==$(TORCH_VERSION)"; \
	fi

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(MAKE) torch
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test system-test-tools

# The browser, deployment and service tests drive real tools: Debian's Chromium (with CJK fonts, or
# Japanese renders as boxes), shellcheck, docker-compose (it validates compose files without an engine)
# and systemd-analyze; pg_dump/pg_restore for the PostgreSQL backups. As root with apt they are installed;
# otherwise the missing ones are named.
SYSTEM_TEST_TOOLS := chromium:chromium shellcheck:shellcheck docker-compose:docker-compose systemd-analyze:systemd \
	pg_dump:postgresql-client pg_restore:postgresql-client
system-test-tools:
	@missing=""; for pair in $(SYSTEM_TEST_TOOLS); do \
		command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	[ -d /usr/share/fonts/opentype/noto ] || missing="$$missing fonts-noto-cjk"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing test tools:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		else \
			echo "the browser and deployment tests need:$$missing (apt-get install$$missing)"; exit 1; \
		fi; \
	fi

lint: install-test
	$(BIN)/ruff check $(LINT_PATHS)

format: install-test
	$(BIN)/ruff format $(LINT_PATHS)
	$(BIN)/ruff check --fix $(LINT_PATHS)

docs: install
	$(BIN)/aifactory config --markdown > docs/configuration.md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

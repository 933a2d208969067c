# binsr: two commands on a fresh machine -- `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test clean

setup: $(STAMP)

# Re-installs only when the project metadata changes; otherwise a no-op.
$(STAMP): pyproject.toml setup.py $(wildcard src/binsr/deploy/csrc/*.cpp src/binsr/deploy/csrc/*.h src/binsr/deploy/csrc/*.inc)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,bench,web]'
	touch $(STAMP)

demo: setup
	$(BIN)/binsr demo

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

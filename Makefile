# binsr: two commands on a fresh machine -- `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-arm clean

setup: $(STAMP)

# Re-installs only when the project metadata changes; otherwise a no-op.
$(STAMP): pyproject.toml setup.py $(wildcard src/binsr/deploy/csrc/*.cpp src/binsr/deploy/csrc/*.h src/binsr/deploy/csrc/*.inc)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,bench,web,ray]'
	touch $(STAMP)

demo: setup
	$(BIN)/binsr demo

test: setup
	$(BIN)/python -m pytest

# The engine's aarch64 NEON kernel, cross-compiled and run under qemu-aarch64 against the NumPy
# reference's values (checked on this machine first) and the portable kernel; installs Debian's
# cross compiler and qemu-user when missing.
ARM_CXX ?= aarch64-linux-gnu-g++
ARM_OUT := build/arm
CSRC := src/binsr/deploy/csrc
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

test-arm: setup
	command -v $(ARM_CXX) >/dev/null && command -v qemu-aarch64 >/dev/null || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q g++-aarch64-linux-gnu qemu-user; }
	mkdir -p $(ARM_OUT)
	$(ARM_CXX) -std=c++17 -O3 -fno-math-errno -fno-trapping-math -ffp-contract=off -static -pthread -I$(CSRC) \
	  -o $(ARM_OUT)/engine_arm_check tests/deploy/engine_arm_check.cpp $(CSRC)/conv.cpp $(CSRC)/chain.cpp \
	  $(CSRC)/kernels_portable.cpp $(CSRC)/kernels_neon.cpp
	$(BIN)/python tests/deploy/engine_arm_cases.py $(ARM_OUT)/cases.bin
	qemu-aarch64 $(ARM_OUT)/engine_arm_check $(ARM_OUT)/cases.bin

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

# Two commands on a fresh machine (Python 3.9+, a C++ compiler):
#   make demo   a virtual environment with the CPU build of torch, the build of memops, `memops check`,
#               a short benchmark and a one-minute NTM training run with its plot (runs/demo/)
#   make test   the same environment, then the test suite (what CI runs, .ci/run)
# Bring your own torch (a CUDA build, say): see README.md, "Quick start", for the pip commands.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
# 1: also build memops._cuda_emu, the CUDA kernels in a CPU emulator (backend "cuda_emu"; needs the CUDA
# headers, found next to nvcc), and make its tests required. Default: 1 where nvcc is found.
CUDA_EMU ?= $(if $(shell command -v nvcc 2>/dev/null),1,0)

.PHONY: setup demo test check clean

setup: $(VENV)/.memops-installed

$(VENV)/.memops-installed: pyproject.toml setup.py $(wildcard csrc/*.cpp csrc/*.h csrc/*/*.cpp csrc/*/*.h csrc/*/*.cu csrc/*/*.cuh csrc/cuda/emu/*)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH)" ninja wheel "setuptools>=64"
	MEMOPS_CUDA_EMU=$(CUDA_EMU) $(BIN)/python -m pip install -q --disable-pip-version-check --no-build-isolation -e ".[test]"
	touch $@

check: setup
	$(BIN)/memops check

demo: check
	$(BIN)/python benchmarks/bench_ops.py --quick --no-csv --ops ntm_address read write --sizes paper
	rm -rf runs/demo
	$(BIN)/memops train copy --out runs/demo --steps 8000 --eval-every 1000 --task-option max_length=5
	$(BIN)/memops eval runs/demo/best.pt --length 5 10
	$(BIN)/memops plot runs/demo/best.pt
	@echo "demo done: runs/demo/learning_curve.png and runs/demo/plot.png"

test: setup
	MEMOPS_REQUIRE_EXTENSION=1 MEMOPS_REQUIRE_CUDA_EMU=$(CUDA_EMU) $(BIN)/python -m pytest tests

clean:
	rm -rf $(VENV) build runs/demo

"""Fixtures of the memops tests (helpers.py holds the functions they share).

`target`: THE backend x device fixture. Every op test that takes `backend` and `device` runs once per
target: cpp-cpu (the C++ kernels), triton-cpu (the Triton kernels in Triton's interpreter), cpp-cuda
(the CUDA kernels), triton-cuda, cuda_emu-cpu (the CUDA kernels in the CPU emulator, memops._emu). A target that cannot run here skips with the reason (no GPU, no
build; under MEMOPS_REQUIRE_EXTENSION=1, as in CI, a missing build fails instead).

Markers choose the targets of a test where the full set does not fit:
  full_grid         too slow for Triton's interpreter and the CUDA emulator: not collected for
                    triton-cpu and cuda_emu-cpu
  interpreter_only  the smaller stand-in for a full grid: collected for triton-cpu and cuda_emu-cpu only
  gpu               GPU-specific (half types, sizes past one block, ...): collected for cuda targets and
                    for the CUDA emulator (cuda_emu-cpu), which runs the same kernels
  cuda_device       needs a real CUDA device (device mismatch, ...): collected for cuda targets only

Without a GPU, TRITON_INTERPRET=1 is set before anything imports triton, so the Triton kernels run on
CPU tensors. Every test starts with automatic backend choice and debug mode off, and leaves them so.
"""

import os
import sys
from typing import NamedTuple

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, os.path.dirname(__file__))

import memops  # noqa: E402
from memops import _backend, ops  # noqa: E402

from helpers import require_backend, require_device  # noqa: E402


class Target(NamedTuple):
    backend: str
    device: str

    @property
    def interpreter(self):
        return self.backend == "triton" and self.device == "cpu"

    @property
    def emulator(self):
        return self.backend == "cuda_emu"

    @property
    def slow(self):
        """Runs the kernels in an interpreter or emulator: the stand-ins instead of the full grids."""
        return self.interpreter or self.emulator

    def __str__(self):
        return f"{self.backend}-{self.device}"


TARGETS = [Target("cpp", "cpu"), Target("triton", "cpu"), Target("cpp", "cuda"), Target("triton", "cuda"),
           Target("cuda_emu", "cpu")]


@pytest.fixture(params=TARGETS, ids=str)
def target(request):
    require_device(request.param.device)
    require_backend(request.param.backend, request.param.device, getattr(request.module, "OP", None))
    return request.param


@pytest.fixture
def backend(target):
    return target.backend


@pytest.fixture
def device(target):
    return target.device


@pytest.fixture
def cpp():
    """For tests of the C++ CPU kernels alone (thread counts, the C++ autograd wiring, hypothesis)."""
    require_backend("cpp", "cpu")
    return "cpp"


@pytest.fixture
def op(request):
    """The op of a tests/ops/test_<op>.py file (its OP), for the shared tests of tests/ops/faces.py."""
    return request.module.OP


def _keep(item):
    target = getattr(getattr(item, "callspec", None), "params", {}).get("target")
    if target is None:
        return True
    if item.get_closest_marker("full_grid") and target.slow:
        return False
    if item.get_closest_marker("interpreter_only") and not target.slow:
        return False
    if item.get_closest_marker("gpu") and target.device != "cuda" and not target.emulator:
        return False
    if item.get_closest_marker("cuda_device") and target.device != "cuda":
        return False
    return True


def pytest_collection_modifyitems(config, items):
    keep = [item for item in items if _keep(item)]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if not _keep(item)])
        items[:] = keep


@pytest.fixture(autouse=True)
def _clean_global_state(monkeypatch):
    """Automatic backend choice, no environment override, debug off; restored after each test."""
    monkeypatch.setattr(_backend, "_ENV_BACKEND", None)
    monkeypatch.setattr(_backend, "_forced", None)
    monkeypatch.setattr(ops, "_debug", False)
    yield


def pytest_report_header(config):
    info = memops.build_info()
    return [f"memops build: {info}",
            f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}, "
            f"threads: {torch.get_num_threads()}, TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '')!r}, "
            f"MEMOPS_REQUIRE_EXTENSION={os.environ.get('MEMOPS_REQUIRE_EXTENSION', '')!r}"]

"""Fixtures of the memops tests (helpers.py holds the functions they share).

- `device`: "cpu" and "cuda"; cuda skips cleanly where torch.cuda.is_available() is False.
- `backend`: the backends compared against the reference: "cpp" (the C++ kernels of the device) and,
  on CUDA, "triton". Without the built extension cpp skips, with the fix in the reason; with
  MEMOPS_REQUIRE_EXTENSION=1 (CI) it fails instead. Triton on CPU tensors runs in Triton's
  interpreter, far too slowly for the full reference grids: those (INTERPRETER_TOO_SLOW) are
  deselected for it, and tests/test_triton.py runs them on a pairwise grid of small shapes instead;
  every other test of the backend fixture (edge values) runs the interpreter.
- without a GPU, TRITON_INTERPRET=1 is set before anything imports triton (so the Triton kernels can
  run on CPU tensors); with one, the Triton kernels run on the GPU.
- every test starts with automatic backend choice and debug mode off, and leaves them so.
"""

import os
import sys

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, os.path.dirname(__file__))

import memops  # noqa: E402
from memops import _backend, ops  # noqa: E402

from helpers import require_backend, require_device  # noqa: E402

COMPARED_BACKENDS = ("cpp", "triton")


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    require_device(request.param)
    return request.param


@pytest.fixture(params=COMPARED_BACKENDS)
def backend(request, device):
    require_backend(request.param, device)
    return request.param


# The full grids of tests/test_<op>.py, too slow for Triton's interpreter: tests/test_triton.py runs
# the same checks for backend=triton on CPU tensors over a pairwise grid of small shapes instead.
INTERPRETER_TOO_SLOW = {"test_matches_reference", "test_noncontiguous"}


def pytest_collection_modifyitems(config, items):
    """Deselect the grids of INTERPRETER_TOO_SLOW for backend=triton x device=cpu; the edge-value tests
    of every op file still run the Triton kernels in the interpreter."""
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        interpreter = params.get("backend") == "triton" and params.get("device") == "cpu"
        (drop if interpreter and item.originalname in INTERPRETER_TOO_SLOW else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def cpp():
    """For tests that use the compiled ops on the CPU only (gradcheck, opcheck, compile)."""
    require_backend("cpp", "cpu")
    return "cpp"


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

"""The "cuda_emu" test backend: memops' CUDA kernels and launchers run by a CPU emulator.

memops._cuda_emu (built by `MEMOPS_CUDA_EMU=1 pip install --no-build-isolation -e .`) compiles
csrc/cuda/<op>.cu with g++ against csrc/cuda/emu/: every CUDA thread a fiber, barriers and shuffles
as switch points, errors with file:line for divergent barriers, deadlocks and bad shuffles. Its ops
are torch.ops.memops_cuda_emu.<op> on CPU tensors, with the C++ autograd of csrc/autograd.cpp and the
fake kernels registered here. Slow, for tests: "auto" never picks it.

configure(schedule, seed, workers) picks the order in which a block's runnable threads run
("round_robin", "lowest_first", "highest_first", "random" with `seed`) and how many OS threads run
blocks; a race between threads of a block shows up as outputs that differ between schedules.
"""

import torch

from . import _library
from .spec import SPECS

try:
    from . import _cuda_emu  # noqa: F401  (loading registers torch.ops.memops_cuda_emu.*)

    LOAD_ERROR = None
except ImportError as e:
    _cuda_emu = None
    LOAD_ERROR = e

AVAILABLE = _cuda_emu is not None
BUILD_HINT = ("build it with `MEMOPS_CUDA_EMU=1 pip install --no-build-isolation -e .` (needs the CUDA "
              "headers, no GPU)")
SCHEDULES = ("round_robin", "lowest_first", "highest_first", "random")


def configure(schedule="round_robin", seed=0, workers=1):
    """Set the emulator's schedule, random seed and worker threads (process-wide)."""
    if not AVAILABLE:
        raise RuntimeError(f"memops: the CUDA emulator is not built ({LOAD_ERROR}); {BUILD_HINT}")
    _cuda_emu.configure(schedule, seed, workers)


def stats():
    """Counters since load: kernel launches, blocks and fiber switches run."""
    return dict(_cuda_emu.stats()) if AVAILABLE else {}


def has_kernel(op):
    """Whether the emulated build has CUDA kernels for `op` (an op added without them has none)."""
    return AVAILABLE and torch._C._dispatch_has_kernel_for_dispatch_key(f"memops_cuda_emu::{op}", "CPU")


if AVAILABLE:
    for _spec in SPECS.values():
        torch.library.register_fake(f"memops_cuda_emu::{_spec.name}")(_library._fake_forward(_spec))
        torch.library.register_fake(f"memops_cuda_emu::_{_spec.name}_backward")(_library._fake_backward(_spec))

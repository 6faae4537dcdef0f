"""Loads the compiled ops and gives them fake (meta) kernels.

`import memops._C` runs the TORCH_LIBRARY blocks of csrc/, which define torch.ops.memops.<op>, its
backward op torch.ops.memops._<op>_backward, the CPU kernels and the autograd kernels (in C++:
csrc/autograd.cpp). Here every op, forward and backward, gets a fake kernel
(torch.library.register_fake): the output shapes, after the same argument checks as the C++ kernels
(memops/_validate.py), so torch.compile traces the ops and fails early on bad input.
"""

import os
import warnings

import torch

from . import _validate
from .spec import SPECS

try:
    from . import _C  # noqa: F401  (loading registers the ops)

    LOAD_ERROR = None
except ImportError as e:  # not built, or built against another torch
    _C = None
    LOAD_ERROR = e

AVAILABLE = _C is not None
BUILD_HINT = (
    "build them with `pip install --no-build-isolation -e .` in the memops checkout "
    "(torch must be installed first; add `ninja` for a parallel build)"
)

if not AVAILABLE and os.environ.get("MEMOPS_BACKEND", "").strip().lower() != "reference":
    warnings.warn(
        f"memops: the compiled ops could not be loaded ({LOAD_ERROR}); every op runs the slow "
        f"pure-PyTorch reference instead. To get the kernels, {BUILD_HINT}. "
        "Set MEMOPS_BACKEND=reference to silence this warning.",
        RuntimeWarning,
        stacklevel=3,
    )


def build_info():
    """What the loaded build is: version, CUDA or not, CUDA archs, torch it was built with."""
    if not AVAILABLE:
        return {"built": False, "error": str(LOAD_ERROR)}
    return {
        "built": True,
        "version": _C.__version__,
        "with_cuda": bool(_C.with_cuda),
        "cuda_archs": _C.cuda_archs,
        "torch_version": _C.torch_version,
        "openmp": bool(_C.openmp),
    }


def _fake_forward(spec):
    def fake(*args):
        _validate.check(spec.name, *args)
        tensors = dict(zip(spec.inputs, args))
        first = tensors[spec.inputs[0]]
        _validate.kernel_dtype(spec.name, first)
        # outputs are contiguous, as the kernels make them (new_empty, not empty_like, which would
        # copy a non-contiguous input's strides)
        return first.new_empty(spec.output_shape(tensors))

    return fake


def _fake_backward(spec):
    def fake(*args):
        named = dict(zip(spec.backward, args))
        _validate.check(spec.name, *(named.get(n) for n in spec.inputs + spec.options))
        first = named[spec.inputs[0]]
        shape = spec.output_shape(named)
        for name in ("grad", spec.saved_output):
            if name is not None:
                _validate.output_like(spec.name, named[name], name, shape, first)
        # one gradient per floating input; an absent optional input (write's erase) gets an empty one
        return tuple(first.new_empty(0) if named[n] is None else named[n].new_empty(named[n].shape)
                     for n in spec.inputs)

    return fake


def _register():
    for spec in SPECS.values():
        torch.library.register_fake(f"memops::{spec.name}")(_fake_forward(spec))
        torch.library.register_fake(f"memops::_{spec.name}_backward")(_fake_backward(spec))


if AVAILABLE:
    _register()

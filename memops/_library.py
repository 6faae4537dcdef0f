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


def _register():
    lib = "memops::"

    # Outputs are contiguous, as the kernels make them (new_empty, not empty_like, which would copy
    # a non-contiguous input's strides).
    def fake(name):
        return torch.library.register_fake(lib + name)

    # --- content_address ---------------------------------------------------------------------------
    @fake("content_address")
    def _(memory, keys, beta, mask, similarity, eps):
        _validate.content_address(memory, keys, beta, mask, similarity, eps)
        _validate.kernel_dtype("content_address", memory)
        return memory.new_empty(memory.shape[0], keys.shape[1], memory.shape[1])

    @fake("_content_address_backward")
    def _(grad, memory, keys, beta, mask, weights, similarity, eps):
        _validate.content_address(memory, keys, beta, mask, similarity, eps)
        shape = (memory.shape[0], keys.shape[1], memory.shape[1])
        _validate.output_like("content_address", grad, "grad", shape, memory)
        _validate.output_like("content_address", weights, "weights", shape, memory)
        return memory.new_empty(memory.shape), keys.new_empty(keys.shape), beta.new_empty(beta.shape)

    # --- shift -------------------------------------------------------------------------------------
    @fake("shift")
    def _(weights, kernel):
        _validate.shift(weights, kernel)
        _validate.kernel_dtype("shift", weights)
        return weights.new_empty(weights.shape)

    @fake("_shift_backward")
    def _(grad, weights, kernel):
        _validate.shift(weights, kernel)
        _validate.output_like("shift", grad, "grad", weights.shape, weights)
        return weights.new_empty(weights.shape), kernel.new_empty(kernel.shape)

    # --- sharpen -----------------------------------------------------------------------------------
    @fake("sharpen")
    def _(weights, gamma):
        _validate.sharpen(weights, gamma)
        _validate.kernel_dtype("sharpen", weights)
        return weights.new_empty(weights.shape)

    @fake("_sharpen_backward")
    def _(grad, weights, gamma, out):
        _validate.sharpen(weights, gamma)
        _validate.output_like("sharpen", grad, "grad", weights.shape, weights)
        _validate.output_like("sharpen", out, "out", weights.shape, weights)
        return weights.new_empty(weights.shape), gamma.new_empty(gamma.shape)

    # --- ntm_address -------------------------------------------------------------------------------
    @fake("ntm_address")
    def _(memory, keys, beta, gate, kernel, gamma, prev_weights, eps):
        _validate.ntm_address(memory, keys, beta, gate, kernel, gamma, prev_weights, eps)
        _validate.kernel_dtype("ntm_address", memory)
        return prev_weights.new_empty(prev_weights.shape)

    @fake("_ntm_address_backward")
    def _(grad, memory, keys, beta, gate, kernel, gamma, prev_weights, out, eps):
        _validate.ntm_address(memory, keys, beta, gate, kernel, gamma, prev_weights, eps)
        _validate.output_like("ntm_address", grad, "grad", prev_weights.shape, memory)
        _validate.output_like("ntm_address", out, "out", prev_weights.shape, memory)
        return tuple(t.new_empty(t.shape) for t in (memory, keys, beta, gate, kernel, gamma, prev_weights))

    # --- read --------------------------------------------------------------------------------------
    @fake("read")
    def _(memory, weights):
        _validate.read(memory, weights)
        _validate.kernel_dtype("read", memory)
        return memory.new_empty(memory.shape[0], weights.shape[1], memory.shape[2])

    @fake("_read_backward")
    def _(grad, memory, weights):
        _validate.read(memory, weights)
        _validate.output_like("read", grad, "grad", (memory.shape[0], weights.shape[1], memory.shape[2]), memory)
        return memory.new_empty(memory.shape), weights.new_empty(weights.shape)

    # --- write -------------------------------------------------------------------------------------
    @fake("write")
    def _(memory, weights, erase, add):
        _validate.write(memory, weights, erase, add)
        _validate.kernel_dtype("write", memory)
        return memory.new_empty(memory.shape)

    @fake("_write_backward")
    def _(grad, memory, weights, erase, add):
        _validate.write(memory, weights, erase, add)
        _validate.output_like("write", grad, "grad", memory.shape, memory)
        grad_erase = erase.new_empty(erase.shape) if erase is not None else memory.new_empty(0)
        return memory.new_empty(memory.shape), weights.new_empty(weights.shape), grad_erase, add.new_empty(add.shape)


if AVAILABLE:
    _register()

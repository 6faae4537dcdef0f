"""Loads the compiled ops and gives them autograd and fake (meta) kernels.

`import memops._C` runs the TORCH_LIBRARY blocks of csrc/, which define torch.ops.memops.<op> and
its backward op torch.ops.memops._<op>_backward. Here each forward op gets
- a fake kernel (torch.library.register_fake): output shapes, and the same argument checks as the
  C++ kernels (memops/_validate.py), so torch.compile traces it and fails early on bad input;
- an autograd formula (torch.library.register_autograd) that saves what the backward op needs and
  calls it. The backward ops get fake kernels too, so compiled graphs hold them as they are.
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

if not AVAILABLE and os.environ.get("MEMOPS_BACKEND", "") != "reference":
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

    def fake(name):
        return torch.library.register_fake(lib + name)

    # --- content_address ---------------------------------------------------------------------------
    @fake("content_address")
    def _(memory, keys, beta, mask, similarity, eps):
        _validate.content_address(memory, keys, beta, mask, similarity, eps)
        _validate.cpu_dtype("content_address", memory)
        return memory.new_empty(memory.shape[0], keys.shape[1], memory.shape[1])

    @fake("_content_address_backward")
    def _(grad, memory, keys, beta, mask, weights, similarity, eps):
        _validate.content_address(memory, keys, beta, mask, similarity, eps)
        _validate.grad("content_address", grad, weights.shape, memory)
        return torch.empty_like(memory), torch.empty_like(keys), torch.empty_like(beta)

    def setup_content_address(ctx, inputs, output):
        memory, keys, beta, mask, similarity, eps = inputs
        # the output (the weights) enters the softmax backward; similarities are recomputed
        ctx.save_for_backward(memory, keys, beta, mask, output)
        ctx.similarity, ctx.eps = similarity, eps

    def backward_content_address(ctx, grad):
        memory, keys, beta, mask, weights = ctx.saved_tensors
        g = torch.ops.memops._content_address_backward(
            grad, memory, keys, beta, mask, weights, ctx.similarity, ctx.eps
        )
        return (*g, None, None, None)

    torch.library.register_autograd(
        lib + "content_address", backward_content_address, setup_context=setup_content_address
    )

    # --- shift -------------------------------------------------------------------------------------
    @fake("shift")
    def _(weights, kernel):
        _validate.shift(weights, kernel)
        _validate.cpu_dtype("shift", weights)
        return torch.empty_like(weights)

    @fake("_shift_backward")
    def _(grad, weights, kernel):
        _validate.shift(weights, kernel)
        _validate.grad("shift", grad, weights.shape, weights)
        return torch.empty_like(weights), torch.empty_like(kernel)

    def setup_shift(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def backward_shift(ctx, grad):
        return torch.ops.memops._shift_backward(grad, *ctx.saved_tensors)

    torch.library.register_autograd(lib + "shift", backward_shift, setup_context=setup_shift)

    # --- sharpen -----------------------------------------------------------------------------------
    @fake("sharpen")
    def _(weights, gamma):
        _validate.sharpen(weights, gamma)
        _validate.cpu_dtype("sharpen", weights)
        return torch.empty_like(weights)

    @fake("_sharpen_backward")
    def _(grad, weights, gamma, out):
        _validate.sharpen(weights, gamma)
        _validate.grad("sharpen", grad, weights.shape, weights)
        return torch.empty_like(weights), torch.empty_like(gamma)

    def setup_sharpen(ctx, inputs, output):
        ctx.save_for_backward(*inputs, output)

    def backward_sharpen(ctx, grad):
        return torch.ops.memops._sharpen_backward(grad, *ctx.saved_tensors)

    torch.library.register_autograd(lib + "sharpen", backward_sharpen, setup_context=setup_sharpen)

    # --- ntm_address -------------------------------------------------------------------------------
    @fake("ntm_address")
    def _(memory, keys, beta, gate, kernel, gamma, prev_weights, eps):
        _validate.ntm_address(memory, keys, beta, gate, kernel, gamma, prev_weights, eps)
        _validate.cpu_dtype("ntm_address", memory)
        return torch.empty_like(prev_weights)

    @fake("_ntm_address_backward")
    def _(grad, memory, keys, beta, gate, kernel, gamma, prev_weights, out, eps):
        _validate.ntm_address(memory, keys, beta, gate, kernel, gamma, prev_weights, eps)
        _validate.grad("ntm_address", grad, prev_weights.shape, memory)
        return tuple(torch.empty_like(t) for t in (memory, keys, beta, gate, kernel, gamma, prev_weights))

    def setup_ntm_address(ctx, inputs, output):
        *tensors, eps = inputs
        # inputs and output only: backward recomputes the chain's intermediates (see the kernel)
        ctx.save_for_backward(*tensors, output)
        ctx.eps = eps

    def backward_ntm_address(ctx, grad):
        return (*torch.ops.memops._ntm_address_backward(grad, *ctx.saved_tensors, ctx.eps), None)

    torch.library.register_autograd(lib + "ntm_address", backward_ntm_address, setup_context=setup_ntm_address)

    # --- read --------------------------------------------------------------------------------------
    @fake("read")
    def _(memory, weights):
        _validate.read(memory, weights)
        _validate.cpu_dtype("read", memory)
        return memory.new_empty(memory.shape[0], weights.shape[1], memory.shape[2])

    @fake("_read_backward")
    def _(grad, memory, weights):
        _validate.read(memory, weights)
        _validate.grad("read", grad, (memory.shape[0], weights.shape[1], memory.shape[2]), memory)
        return torch.empty_like(memory), torch.empty_like(weights)

    def setup_read(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def backward_read(ctx, grad):
        return torch.ops.memops._read_backward(grad, *ctx.saved_tensors)

    torch.library.register_autograd(lib + "read", backward_read, setup_context=setup_read)

    # --- write -------------------------------------------------------------------------------------
    @fake("write")
    def _(memory, weights, erase, add):
        _validate.write(memory, weights, erase, add)
        _validate.cpu_dtype("write", memory)
        return torch.empty_like(memory)

    @fake("_write_backward")
    def _(grad, memory, weights, erase, add):
        _validate.write(memory, weights, erase, add)
        _validate.grad("write", grad, memory.shape, memory)
        grad_erase = torch.empty_like(erase) if erase is not None else memory.new_empty(0)
        return torch.empty_like(memory), torch.empty_like(weights), grad_erase, torch.empty_like(add)

    def setup_write(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def backward_write(ctx, grad):
        memory, weights, erase, add = ctx.saved_tensors
        gm, gw, ge, ga = torch.ops.memops._write_backward(grad, memory, weights, erase, add)
        return gm, gw, (ge if erase is not None else None), ga

    torch.library.register_autograd(lib + "write", backward_write, setup_context=setup_write)


if AVAILABLE:
    _register()

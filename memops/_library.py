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
        "cpu_capability": _C.cpu_capability(),
        "cpu_capability_supported": _C.cpu_capability_supported(),
    }


CPU_CAPABILITIES = ("default", "avx2", "avx512")


def cpu_capability():
    """The instruction set the CPU kernels run: 'avx512', 'avx2' or 'default' (baseline x86-64).
    'avx2' where the CPU has it ('avx512' only when asked for: on the CPU it was measured on it was
    slower for most ops at the NTM's sizes), else 'default'; MEMOPS_CPU_CAPABILITY or
    set_cpu_capability() changes it. None without the compiled ops."""
    return _C.cpu_capability() if AVAILABLE else None


def set_cpu_capability(name):
    """Run the CPU kernels compiled for `name` ('default', 'avx2' or 'avx512'; at most what the CPU
    has), e.g. to compare them. Results agree within the tolerance table, not bit for bit (lane
    counts and FMA change the rounding); each one is deterministic."""
    if not AVAILABLE:
        raise RuntimeError(f"memops.set_cpu_capability: the compiled ops are not loaded ({LOAD_ERROR})")
    if name not in CPU_CAPABILITIES:
        raise ValueError(f"memops.set_cpu_capability: name must be one of {', '.join(CPU_CAPABILITIES)}, "
                         f"got {name!r}")
    best = _C.cpu_capability_supported()
    if CPU_CAPABILITIES.index(name) > CPU_CAPABILITIES.index(best):
        raise ValueError(f"memops.set_cpu_capability: this CPU runs at most {best!r}, not {name!r}")
    _C.set_cpu_capability(name)


def _capability_from_environment():
    name = os.environ.get("MEMOPS_CPU_CAPABILITY", "").strip().lower()
    if name and AVAILABLE:
        try:
            set_cpu_capability(name)
        except ValueError as e:
            warnings.warn(f"MEMOPS_CPU_CAPABILITY={name!r} ignored: {e}; the kernels run "
                          f"{cpu_capability()!r}", RuntimeWarning, stacklevel=3)


_capability_from_environment()


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


def _ntm_sequence_sizes(x, controller_weights, head_weight, reads, weights, memory, output_weight, controller):
    if controller not in ("lstm", "feedforward"):
        raise RuntimeError(f'ntm_sequence: controller must be "lstm" or "feedforward", got "{controller}"')
    if x.dim() != 3:
        raise RuntimeError(f"ntm_sequence: x must have shape (T, B, I), got {tuple(x.shape)}")
    T, B = x.shape[:2]
    L = len(controller_weights) // (4 if controller == "lstm" else 2)
    C, P = head_weight.shape[1], head_weight.shape[0]
    R, W = reads.shape[1], reads.shape[2]
    H, N = weights.shape[1], memory.shape[1]
    O = output_weight.shape[0] if output_weight is not None else C + R * W
    return T, B, L, C, P, R, W, H, N, O


def _fake_ntm_sequence(x, lengths, h, c, reads, weights, memory, controller_weights, head_weight, head_bias,
                       output_weight, output_bias, read_heads, shift_width, controller, eps):
    """Shapes of ntm_sequence's outputs and saved tensors (csrc/ntm_sequence.cpp); the C++ kernel checks the rest."""
    T, B, L, C, P, R, W, H, N, O = _ntm_sequence_sizes(x, controller_weights, head_weight, reads, weights, memory,
                                                       output_weight, controller)
    new = x.new_empty
    if controller == "lstm":
        states = [new(L, B, C), new(L, B, C)]
        controller_saved = [new(L, T + 1, B, C), new(L, T + 1, B, C), new(L, T, B, 4 * C)]
    else:
        states = [new(0), new(0)]
        controller_saved = [new(L, T, B, C), new(0), new(0)]
    saved = controller_saved + [new(T, B, P), new(T + 1, B, N, W), new(T + 1, B, R, W), new(T + 1, B, H, N)]
    return (new(T, B, O), *states, new(B, R, W), new(B, H, N), new(B, N, W), saved)


def _fake_ntm_sequence_backward(grad_y, grad_h, grad_c, grad_reads, grad_weights, grad_memory, x, lengths,
                                controller_weights, head_weight, output_weight, saved, read_heads, shift_width,
                                controller, eps):
    like = [x, grad_h, grad_c, grad_reads, grad_weights, grad_memory]
    P = head_weight.shape[0]
    out = [t.new_empty(t.shape) for t in like]
    out.append([w.new_empty(w.shape) for w in controller_weights])
    out += [head_weight.new_empty(head_weight.shape), x.new_empty(P)]
    if output_weight is None:
        out += [x.new_empty(0), x.new_empty(0)]
    else:
        out += [output_weight.new_empty(output_weight.shape), x.new_empty(output_weight.shape[0])]
    return tuple(out)


def _register():
    for spec in SPECS.values():
        torch.library.register_fake(f"memops::{spec.name}")(_fake_forward(spec))
        torch.library.register_fake(f"memops::_{spec.name}_backward")(_fake_backward(spec))
    torch.library.register_fake("memops::ntm_sequence")(_fake_ntm_sequence)
    torch.library.register_fake("memops::_ntm_sequence_backward")(_fake_ntm_sequence_backward)


if AVAILABLE:
    _register()

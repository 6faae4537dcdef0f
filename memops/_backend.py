"""Which implementation an op call runs: the backend layer.

Backends:
  "cpp"        the compiled extension (memops._C): its C++ kernels for the tensors' device, the CPU
               kernels on CPU tensors and the CUDA kernels on CUDA tensors (where the build has them);
  "cuda"       the same extension's CUDA kernels by name: "cpp", refused for tensors not on CUDA;
  "triton"     the Triton kernels (memops.triton): CUDA tensors, or CPU tensors in Triton's
               interpreter (TRITON_INTERPRET=1 set before triton is first imported);
  "reference"  the pure-PyTorch specification (memops.reference): slow, always there;
  "cuda_emu"   a test backend: the CUDA kernels and launchers run by a CPU emulator on CPU tensors
               (memops._emu; built with MEMOPS_CUDA_EMU=1), never chosen by "auto".

Choice, first that applies: the op's `backend=` argument; `with memops.backend(name):` (this thread);
memops.set_backend(name) (every thread); the MEMOPS_BACKEND environment variable (read at import);
"auto", which takes, on CUDA tensors, the first of cuda (C++) -> triton -> reference that can run, and
on CPU tensors cpp -> reference (never the interpreter: it is for tests, and slow); under torch.func
transforms "auto" takes the reference, whose autograd torch.func can transform.
Asking for a backend that cannot run the call raises an error that says why.
"""

import contextlib
import os
import threading

import torch

from . import _library

BACKENDS = ("auto", "cpp", "cuda", "triton", "reference", "cuda_emu")

_ENV_BACKEND = os.environ.get("MEMOPS_BACKEND", "").strip().lower() or None
_forced = None  # set by set_backend: the process's default
_context = threading.local()  # `with backend(name)`: this thread's choice (.name), None outside a block

_triton_ops = None  # torch.ops.memops_triton once memops.triton is imported
_triton_error = None


def _check_name(name):
    if name not in BACKENDS:
        raise ValueError(f"memops: unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


def _cpp_has(device_type):
    return _library.AVAILABLE and (device_type == "cpu" or (device_type == "cuda" and _library._C.with_cuda))


def triton_ops():
    """torch.ops.memops_triton, importing memops.triton (and triton) the first time; None if that fails.
    (After the first call a plain global read, which torch.compile traces.)"""
    global _triton_ops, _triton_error
    if _triton_ops is None and _triton_error is None:
        try:
            from . import triton  # noqa: F401  (registers torch.ops.memops_triton.*)

            _triton_ops = torch.ops.memops_triton
        except ImportError as e:
            _triton_error = e
    return _triton_ops


_emu = None  # memops._emu once a call asks for "cuda_emu"


def emu_why_not(device_type):
    """None if the emulated CUDA kernels (backend "cuda_emu") can run on tensors of device_type here,
    else the reason. (After the first call a plain global read, which torch.compile traces.)"""
    global _emu
    if _emu is None:
        from . import _emu as module

        _emu = module
    if not _emu.AVAILABLE:
        return f"the CUDA emulator is not built ({_emu.LOAD_ERROR}); {_emu.BUILD_HINT}"
    if device_type not in ("cpu", "meta"):
        return f"it runs on CPU tensors, got {device_type} tensors"
    return None


def _triton_interpret():
    return os.environ.get("TRITON_INTERPRET", "0").strip() not in ("", "0")


def _triton_why_not(device_type):
    """None if the Triton kernels can run on tensors of device_type here, else the reason."""
    if device_type == "cpu" and not _triton_interpret():
        return ("they run on CPU tensors only in Triton's interpreter (set TRITON_INTERPRET=1 before "
                "triton is imported)")
    if device_type not in ("cuda", "cpu", "meta"):
        return f"they have no kernels for {device_type} tensors"
    if triton_ops() is None:
        return f"triton cannot be imported ({_triton_error}); `pip install triton` (Linux x86-64)"
    return None


def available_backends(device="cpu"):
    """The backends that can run ops on tensors of `device` here, in the order "auto" tries them
    ("cuda" is listed as "cpp")."""
    device_type = device if isinstance(device, str) else device.type
    device_type = device_type.split(":")[0]
    names = ["cpp"] if _cpp_has(device_type) else []
    # on CPU tensors: the interpreter, which runs but which "auto" never picks
    if device_type in ("cuda", "cpu") and _triton_why_not(device_type) is None:
        names.append("triton")
    return names + ["reference"]


def _functorch_active():
    """Whether a torch.func transform (grad, vmap, jacrev, ...) is running (never inside a compiled graph)."""
    return not torch.compiler.is_compiling() and torch._C._are_functorch_transforms_active()


def select(backend, tensor):
    """The implementation ("cpp", "triton" or "reference") that runs an op on `tensor`'s device."""
    name = backend or getattr(_context, "name", None) or _forced or _ENV_BACKEND or "auto"
    device_type = tensor.device.type
    if name in ("auto", "cpp", "cuda", "cuda_emu") and _functorch_active():
        # the compiled ops' autograd is C++ (torch::autograd::Function), which torch.func cannot transform
        if name == "auto":
            return "reference"
        raise RuntimeError(f"memops: backend {name!r} cannot run under torch.func transforms (grad, vmap, "
                           "jacrev, ...): its backward is a C++ autograd function; use backend='reference' "
                           "(or the default, 'auto', which takes the reference under torch.func)")
    if name == "auto":
        if _cpp_has(device_type):
            return "cpp"
        if device_type == "cuda" and _triton_why_not("cuda") is None:
            return "triton"
        return "reference"
    if name in ("cpp", "cuda"):
        if name == "cuda" and device_type not in ("cuda", "meta"):
            raise RuntimeError(f"memops: backend 'cuda' runs the CUDA kernels, on CUDA tensors; got "
                               f"{device_type} tensors (backend 'cpp' takes the C++ kernels of any device)")
        if not _library.AVAILABLE:
            raise RuntimeError(f"memops: backend {name!r} was asked for, but the compiled ops are not "
                               f"built ({_library.LOAD_ERROR}); {_library.BUILD_HINT}")
        if not _cpp_has(device_type) and device_type != "meta":
            raise RuntimeError(f"memops: backend {name!r} has no kernels for {device_type} tensors in this "
                               f"build (built with CUDA: {bool(_library._C.with_cuda)})")
        return "cpp"
    if name == "triton":
        why = _triton_why_not(device_type)
        if why is not None:
            raise RuntimeError(f"memops: backend 'triton' cannot run this call: {why}")
        return "triton"
    if name == "reference":
        return "reference"
    if name == "cuda_emu":
        why = emu_why_not(device_type)
        if why is not None:
            raise RuntimeError(f"memops: backend 'cuda_emu' cannot run this call: {why}")
        return "cuda_emu"
    _check_name(name)
    raise AssertionError(name)


def set_backend(name):
    """Make `name` the default backend of every op call (None or "auto" goes back to automatic)."""
    global _forced
    _forced = None if name is None else _check_name(name)


def get_backend():
    """The backend name in force in this thread when an op is called without `backend=` ("auto" if none)."""
    return getattr(_context, "name", None) or _forced or _ENV_BACKEND or "auto"


@contextlib.contextmanager
def backend(name):
    """`with memops.backend("triton"): ...` runs the ops of this thread inside the block on that backend
    (other threads keep theirs; memops.set_backend sets the default of every thread)."""
    previous = getattr(_context, "name", None)
    _context.name = _check_name(name)
    try:
        yield
    finally:
        _context.name = previous


if _ENV_BACKEND is not None:
    _check_name(_ENV_BACKEND)

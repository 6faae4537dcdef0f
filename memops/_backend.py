"""Which implementation an op call runs: the backend layer.

Backends:
  "cpp"        the compiled extension (memops._C): C++ kernels on CPU tensors (CUDA kernels on CUDA
               tensors where the build has them);
  "reference"  the pure-PyTorch specification (memops.reference): slow, always there.
Later backends (triton) join this list.

Choice, first that applies: the op's `backend=` argument; `with memops.backend(name):`;
memops.set_backend(name); the MEMOPS_BACKEND environment variable (read at import); "auto", which
takes "cpp" where the build has kernels for the tensor's device and "reference" otherwise.
Asking for a backend that cannot run the call raises an error that says why.
"""

import contextlib
import os

from . import _library

BACKENDS = ("auto", "cpp", "reference")

_ENV_BACKEND = os.environ.get("MEMOPS_BACKEND", "").strip().lower() or None
_forced = None  # set by set_backend / the backend() context manager


def _check_name(name):
    if name not in BACKENDS:
        raise ValueError(f"memops: unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


def _cpp_has(device_type):
    return _library.AVAILABLE and (device_type == "cpu" or (device_type == "cuda" and _library._C.with_cuda))


def available_backends(device="cpu"):
    """The backends that can run ops on tensors of `device` in this build."""
    device_type = device if isinstance(device, str) else device.type
    device_type = device_type.split(":")[0]
    return [b for b in ("cpp", "reference") if b == "reference" or _cpp_has(device_type)]


def select(backend, tensor):
    """The backend ("cpp" or "reference") that runs an op on `tensor`'s device."""
    name = backend or _forced or _ENV_BACKEND or "auto"
    device_type = tensor.device.type
    if name == "auto":
        return "cpp" if _cpp_has(device_type) else "reference"
    if name == "cpp":
        if not _library.AVAILABLE:
            raise RuntimeError(f"memops: backend 'cpp' was asked for, but the compiled ops are not "
                               f"built ({_library.LOAD_ERROR}); {_library.BUILD_HINT}")
        if not _cpp_has(device_type) and device_type != "meta":
            raise RuntimeError(f"memops: backend 'cpp' has no kernels for {device_type} tensors in this build "
                               f"(built with CUDA: {bool(_library._C.with_cuda)})")
        return "cpp"
    if name == "reference":
        return "reference"
    _check_name(name)
    raise AssertionError(name)


def set_backend(name):
    """Make `name` the default backend of every op call (None or "auto" goes back to automatic)."""
    global _forced
    _forced = None if name is None else _check_name(name)


def get_backend():
    """The backend name in force when an op is called without `backend=` ("auto" if none is set)."""
    return _forced or _ENV_BACKEND or "auto"


@contextlib.contextmanager
def backend(name):
    """`with memops.backend("reference"): ...` runs the ops inside on that backend."""
    global _forced
    previous = _forced
    _forced = _check_name(name)
    try:
        yield
    finally:
        _forced = previous


if _ENV_BACKEND is not None:
    _check_name(_ENV_BACKEND)

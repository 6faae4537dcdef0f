"""memops: fused, hand-differentiated kernels for the memory operations of memory-augmented networks.

    import memops
    w = memops.ntm_address(memory, keys, beta, gate, kernel, gamma, prev_weights)
    r = memops.read(memory, w)
    ntm = memops.nn.NTM(input_size=9, output_size=8)      # modules: memops.nn; the paper's tasks: memops.tasks

The ops (memops.ops) run the compiled kernels when the extension is built, else the pure-PyTorch
reference (memops.reference), which is also the specification they are tested against.
"""

from . import _library, reference
from ._backend import available_backends, backend, get_backend, set_backend
from .ops import content_address, ntm_address, read, set_debug, sharpen, shift, write

__version__ = "0.1.0"
build_info = _library.build_info

from . import nn, tasks  # noqa: E402  (after the ops they are built on)

__all__ = [
    "content_address",
    "shift",
    "sharpen",
    "ntm_address",
    "read",
    "write",
    "backend",
    "set_backend",
    "get_backend",
    "available_backends",
    "set_debug",
    "build_info",
    "reference",
    "nn",
    "tasks",
]

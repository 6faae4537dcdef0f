"""memops: fused, hand-differentiated kernels for the memory operations of memory-augmented networks.

    import memops
    w = memops.ntm_address(memory, keys, beta, gate, kernel, gamma, prev_weights)
    r = memops.read(memory, w)
    ntm = memops.nn.NTM(input_size=9, output_size=8)

`import memops` loads the op library (memops.ops, the reference, the backends) and the models
(memops.nn), never the application (memops.app: the CLI, recipes, tasks, data loaders, plots);
`memops.tasks` and `memops.data` import it on first use.
"""

import importlib

from . import _library, reference
from ._backend import available_backends, backend, get_backend, set_backend
from .ops import (attention_gru, content_address, content_scores, ntm_address, ntm_sequence, read, set_debug,
                  sharpen, shift, write)

__version__ = "0.1.0"
build_info = _library.build_info
cpu_capability = _library.cpu_capability
set_cpu_capability = _library.set_cpu_capability

from . import nn  # noqa: E402  (the models, after the ops they are built on)

_LAZY = ("tasks", "data")  # the application's, under the names they had before memops.app


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "content_address",
    "content_scores",
    "shift",
    "sharpen",
    "ntm_address",
    "read",
    "write",
    "attention_gru",
    "ntm_sequence",
    "backend",
    "set_backend",
    "get_backend",
    "available_backends",
    "set_debug",
    "build_info",
    "cpu_capability",
    "set_cpu_capability",
    "reference",
    "nn",
    "tasks",
    "data",
]

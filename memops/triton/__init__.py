"""The Triton backend: a Triton twin of every memops op, forward and hand-written backward.

Importing this package needs triton (ImportError otherwise; memops itself imports without it) and
registers, for each op, torch.ops.memops_triton.<op> and torch.ops.memops_triton._<op>_backward as
torch.library.triton_op's (so torch.compile(fullgraph=True) traces into the kernels; in the
interpreter, plain custom ops: see _common.triton_op), with the forward's autograd formula calling
the backward op. memops.ops reaches them through
backend="triton" (memops/_backend.py says when that is chosen).

One file per op: its forward kernel, backward kernel, host functions and registration. On CUDA
tensors the kernels run on the GPU. On CPU tensors they run only in Triton's interpreter: set
TRITON_INTERPRET=1 before triton is first imported (the test suite does, on machines without a GPU).
"""

import triton  # noqa: F401  (ImportError here means: no triton, no Triton backend)

from . import attention_gru, content_address, content_scores, ntm_address, read, sharpen, shift, write  # noqa: F401,E402  (registers the ops)

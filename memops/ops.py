"""The public op contract of memops.

Shapes: B batch, H heads, N memory slots, W slot width, S shift width (odd); attention_gru: F facts,
D state width. Shapes are exact (no broadcasting); every floating input gets a gradient. Any of B, H, N,
W of 0 gives an empty result (and gradients of the inputs' shapes: zeros where a sum runs over nothing).
The CPU kernels take
float32 and float64; the CUDA and Triton kernels also float16 and bfloat16 (accumulating in float32).
Each op takes `backend=` ("auto", "cpp", "cuda", "triton", "reference", "cuda_emu"; see memops._backend).

Bad shapes, dtypes and devices raise ValueError / TypeError naming the argument and the shape it
should have. Value ranges (gamma >= 1, weights >= 0, gate and gates in [0, 1], finite inputs) are checked only
in debug mode: memops.set_debug(True) or MEMOPS_DEBUG=1.

NaN policy (debug mode off): NaN propagates, as in PyTorch's own ops, on every backend: a NaN input makes
NaN the outputs it enters (for content_address, sharpen and ntm_address, whose softmax and sharpening
normalise over a row, the whole (b, h) row), and an Inf that makes the math undefined gives NaN; nothing
is replaced by zeros. Masked-out slots of content_address and content_scores are not read.
memops.reference states it.
"""

import os

import torch

from . import _backend, _library, _validate, reference

_debug = os.environ.get("MEMOPS_DEBUG", "0") not in ("", "0")


def set_debug(enabled=True):
    """Turn the value-range checks on or off (they cost a pass over each input and a device sync)."""
    global _debug
    _debug = bool(enabled)


def _library_of(op, backend, args):
    """Pick the backend for one call: the torch.ops namespace that runs it, or None for the reference
    (validated here; the kernels validate their own arguments)."""
    impl = _backend.select(backend, next(iter(args.values())))
    if _debug:
        _validate.values(op, **{k: v for k, v in args.items() if isinstance(v, torch.Tensor)})
    if impl == "reference":
        _validate.arguments(op, args)
        return None
    if impl == "triton":
        return _backend.triton_ops()
    if impl == "cuda_emu":
        return torch.ops.memops_cuda_emu
    return torch.ops.memops


def content_address(memory, keys, beta, *, mask=None, similarity="cosine", eps=1e-8, backend=None):
    """Content addressing: softmax over slots of beta * sim(key, slot).

    memory (B,N,W), keys (B,H,W), beta (B,H), mask (B,N) bool or None -> weights (B,H,N).
    similarity="cosine": k.m / (max(|k|, eps) max(|m|, eps)), as torch.nn.functional.cosine_similarity
    (NTM); similarity="dot": k.m (NSE, memory networks; eps unused). Slots where mask is False get
    weight exactly 0; a row whose every slot is masked is all zeros (not NaN).
    """
    args = dict(memory=memory, keys=keys, beta=beta, mask=mask, similarity=similarity, eps=eps)
    lib = _library_of("content_address", backend, args)
    if lib is None:
        return reference.content_address(memory, keys, beta, mask=mask, similarity=similarity, eps=eps)
    return lib.content_address(memory, keys, beta, mask, similarity, eps)


def content_scores(memory, keys, beta, *, mask=None, similarity="dot", eps=1e-8, backend=None):
    """Content scores: beta * sim(key, slot), content_address without the softmax.

    memory (B,N,W), keys (B,H,W), beta (B,H), mask (B,N) bool or None -> scores (B,H,N). The linear
    start of End-to-End Memory Networks (attention without its softmax for the first epochs), and
    logits for a caller's own normalisation. similarity as in content_address, but "dot" by default
    (memory networks). Slots where mask is False score exactly 0 (not -inf: the scores are used as
    weights) and pass no gradient.
    """
    args = dict(memory=memory, keys=keys, beta=beta, mask=mask, similarity=similarity, eps=eps)
    lib = _library_of("content_scores", backend, args)
    if lib is None:
        return reference.content_scores(memory, keys, beta, mask=mask, similarity=similarity, eps=eps)
    return lib.content_scores(memory, keys, beta, mask, similarity, eps)


def shift(weights, kernel, *, backend=None):
    """Circular convolution of each weighting with its shift kernel.

    weights (B,H,N), kernel (B,H,S), S odd -> (B,H,N), out[i] = sum_j weights[(i - (j - S//2)) mod N] kernel[j].
    kernel[S//2] keeps the focus in place, kernel[S//2 + 1] moves it one slot forward. S > N wraps.
    """
    args = dict(weights=weights, kernel=kernel)
    lib = _library_of("shift", backend, args)
    if lib is None:
        return reference.shift(weights, kernel)
    return lib.shift(weights, kernel)


def sharpen(weights, gamma, *, backend=None):
    """w^gamma / sum_i w_i^gamma per row, computed from w / max(w) (exact for any N and gamma).

    weights (B,H,N) >= 0, gamma (B,H) >= 1 -> (B,H,N). A row of zeros gives zeros; gradients are
    finite where w = 0.
    """
    args = dict(weights=weights, gamma=gamma)
    lib = _library_of("sharpen", backend, args)
    if lib is None:
        return reference.sharpen(weights, gamma)
    return lib.sharpen(weights, gamma)


def ntm_address(memory, keys, beta, gate, kernel, gamma, prev_weights, *, eps=1e-8, backend=None):
    """The whole NTM addressing in one fused op.

    content = content_address(memory, keys, beta, similarity="cosine", eps=eps);
    gated = gate * content + (1 - gate) * prev_weights; out = sharpen(shift(gated, kernel), gamma).
    memory (B,N,W), keys (B,H,W), beta (B,H), gate (B,H) in [0,1], kernel (B,H,S), gamma (B,H) >= 1,
    prev_weights (B,H,N) -> (B,H,N).
    """
    args = dict(memory=memory, keys=keys, beta=beta, gate=gate, kernel=kernel, gamma=gamma,
                prev_weights=prev_weights, eps=eps)
    lib = _library_of("ntm_address", backend, args)
    if lib is None:
        return reference.ntm_address(memory, keys, beta, gate, kernel, gamma, prev_weights, eps=eps)
    return lib.ntm_address(memory, keys, beta, gate, kernel, gamma, prev_weights, eps)


def read(memory, weights, *, backend=None):
    """Weighted read: memory (B,N,W), weights (B,H,N) -> (B,H,W), r[b,h] = sum_i weights[b,h,i] memory[b,i]."""
    args = dict(memory=memory, weights=weights)
    lib = _library_of("read", backend, args)
    if lib is None:
        return reference.read(memory, weights)
    return lib.read(memory, weights)


def write(memory, weights, erase, add, *, backend=None):
    """Erase/add write, all heads at once, out of place.

    memory (B,N,W), weights (B,H,N), erase (B,H,W) or None, add (B,H,W) -> new memory (B,N,W):
    memory * prod_h (1 - w_h (x) e_h) + sum_h w_h (x) a_h. erase=None means e = 1 (the NSE write:
    each slot keeps the fraction prod_h (1 - w_h) of its content) without building a ones tensor.
    """
    args = dict(memory=memory, weights=weights, erase=erase, add=add)
    lib = _library_of("write", backend, args)
    if lib is None:
        return reference.write(memory, weights, erase, add)
    return lib.write(memory, weights, erase, add)


def attention_gru(xr, xh, ur, uh, bu, gates, h0, *, mask=None, backend=None):
    """DMN+'s attention GRU over a story's facts, every state at once.

    For each batch row, from h_{-1} = h0 and over the facts i = 0..F-1:
        r_i = sigmoid(xr_i + ur h_{i-1}),   c_i = tanh(xh_i + r_i * (uh h_{i-1} + bu)),
        h_i = g_i c_i + (1 - g_i) h_{i-1}
    xr, xh (B,F,D), ur, uh (D,D) (nn.Linear's layout: out x in), bu (D), gates (B,F) in [0,1],
    h0 (B,D), mask (B,F) bool or None -> states (B,F,D); the episode is states[:, -1] when every
    padded fact is masked. A fact where mask is False (padding, or beyond a row's length: pass
    mask = arange(F) < lengths[:, None]) leaves h unchanged and gets zero gradients.

    The op's boundary: the input projections xr = f W_r^T + b_r and xh = f W^T + b of all facts are
    one large GEMM with no dependence between facts, which the caller runs at full speed (a Linear
    of 2D outputs, or a cached one: the facts are the same in every pass of the episodic memory);
    what is sequential, and what the op fuses, is the scan: F steps of two D x D matvecs and a
    dozen elementwise ops per batch row. b_r and b fold into the projections; bu stays inside the
    reset gate (r_i * (uh h + bu)), as in the GRU of cuDNN and torch.nn.GRU.
    """
    args = dict(xr=xr, xh=xh, ur=ur, uh=uh, bu=bu, gates=gates, h0=h0, mask=mask)
    lib = _library_of("attention_gru", backend, args)
    if lib is None:
        return reference.attention_gru(xr, xh, ur, uh, bu, gates, h0, mask=mask)
    return lib.attention_gru(xr, xh, ur, uh, bu, gates, h0, mask)


def ntm_sequence(x, h, c, reads, weights, memory, controller_weights, head_weight, head_bias, output_weight=None,
                 output_bias=None, *, read_heads, shift_width, controller="lstm", lengths=None, eps=1e-8):
    """A whole NTM sequence (memops.nn.NTM's step over every step of x) in one op, with a hand-written
    backward through time. memops.nn.NTM calls it; its docstring gives the step.

    x (T,B,I); the initial state: h, c (layers,B,C) (empty tensors for a feedforward controller),
    reads (B,R,W), weights (B,R+Hw,N), memory (B,N,W); controller_weights: per layer w_ih, w_hh, b_ih,
    b_hh (nn.LSTMCell's) or weight, bias (feedforward, nn.Linear's); head_weight (P,C), head_bias (P,)
    with P = (R+Hw)(W+3+S) + 2 Hw W; output_weight (O, C+R*W), output_bias (O,) or None (outputs [h ; r]).
    lengths (B,) integers in [0, T] or None: row b runs steps t < lengths[b] only; later steps keep its
    state and output 0. -> (y (T,B,O), h, c, reads, weights, memory): the outputs and the final state.

    Compiled ops only (CPU, and CUDA in a CUDA build): the reference is memops.nn.NTM's stepwise path.
    """
    if not _backend._cpp_has(x.device.type) and x.device.type != "meta":
        raise RuntimeError(f"memops.ntm_sequence: needs the compiled ops for {x.device.type} tensors "
                           f"(built: {_library.AVAILABLE}); {_library.BUILD_HINT}")
    y, h, c, reads, weights, memory, _ = torch.ops.memops.ntm_sequence(
        x, lengths, h, c, reads, weights, memory, list(controller_weights), head_weight, head_bias, output_weight,
        output_bias, read_heads, shift_width, controller, eps)
    return y, h, c, reads, weights, memory


__all__ = ["content_address", "content_scores", "shift", "sharpen", "ntm_address", "read", "write", "attention_gru",
           "ntm_sequence", "set_debug"]

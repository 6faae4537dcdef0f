"""sharpen in Triton: out = u / sum u with u = (w / max w)^gamma per (b, h) row.

Math: csrc/math/addressing.h (sharpen_row, sharpen_backward_row); a row whose max is not > 0 gives zeros.
Saved for backward: the inputs and the output p (p enters the gradient and spares recomputing the powers).
Kernels: one program per row (grid (B*H,)), looping over it in BLOCK_N chunks; the gradient: _sharpen_bwd_kernel.
"""

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from .. import _validate
from ._common import acc_dtype, block, can_launch, check_device, check_dtype, pow_nonneg, triton_op

_ROW_CAP = 2048


@triton.jit
def _sharpen_fwd_kernel(w_ptr, gamma_ptr, out_ptr, N, BLOCK_N: tl.constexpr, ACC: tl.constexpr):
    """Three passes over the row (max w; sum u; write u / sum u), BLOCK_N = next power of two of N, at most
    _ROW_CAP (a row that fits in one chunk is read from cache after the first pass). Working from w / max w,
    no power under- or overflows (u = 1 at the maximum, sum u in [1, N]); x^gamma is exp(gamma log x) for
    x > 0 and 0^gamma (0 for gamma > 0) at x = 0 (pow_nonneg). An all-zero row gives zeros (sum u = 0); a NaN in
    the row's w or gamma makes sum u, so the row, NaN (whether or not tl.max passes the NaN on)."""
    row = tl.program_id(0).to(tl.int64)
    w_row = w_ptr + row * N
    out_row = out_ptr + row * N
    gamma = tl.load(gamma_ptr + row).to(ACC)

    w_max = tl.zeros([], dtype=ACC)  # the maximum starts at 0, as sharpen_row's (weights are >= 0)
    for start in range(0, N, BLOCK_N):
        i = start + tl.arange(0, BLOCK_N)
        w = tl.load(w_row + i, mask=i < N, other=0.0).to(ACC)
        w_max = tl.maximum(w_max, tl.max(w, axis=0))
    w_max_safe = tl.where(w_max > 0, w_max, 1.0)  # a row of zeros is not scaled

    total = tl.zeros([], dtype=ACC)
    for start in range(0, N, BLOCK_N):
        i = start + tl.arange(0, BLOCK_N)
        live = i < N
        w = tl.load(w_row + i, mask=live, other=0.0).to(ACC)
        u = tl.where(live, pow_nonneg(w / w_max_safe, gamma), 0.0)
        total += tl.sum(u, axis=0)
    inv_total = tl.where(total == 0, 0.0, 1.0 / tl.where(total == 0, 1.0, total))

    for start in range(0, N, BLOCK_N):
        i = start + tl.arange(0, BLOCK_N)
        live = i < N
        w = tl.load(w_row + i, mask=live, other=0.0).to(ACC)
        p = pow_nonneg(w / w_max_safe, gamma) * inv_total
        tl.store(out_row + i, p.to(out_ptr.dtype.element_ty), mask=live)


@triton.jit
def _sharpen_bwd_kernel(g_ptr, w_ptr, gamma_ptr, p_ptr, gw_ptr, gg_ptr, N, BLOCK_N: tl.constexpr,
                        ACC: tl.constexpr):
    """From w, the output p and the incoming g, with s = sum_i g_i p_i and L_i = log(w_i / max w):
        grad_w_j   = gamma (p_j / w_j) (g_j - s)
        grad_gamma = sum_i p_i L_i (g_i - s)      (terms with w_i = 0 are 0)
    p_j / w_j at w_j = 0 is its limit 0^(gamma - 1) p[arg] / max w (1/sum w at gamma = 1, else 0).
    g_i - s at the largest p (arg, the first index of the maximum) is taken as
    g_arg (sum_{i != arg} p_i) - sum_{i != arg} p_i g_i (CenteredGrad: no cancellation when p is near
    one-hot). Where the forward gave zeros (an all-zero row: sum p = 0) the gradients are zero; a NaN row's
    are NaN. Three passes: max w and arg; the sums that leave arg out; grad_w and grad_gamma."""
    row = tl.program_id(0).to(tl.int64)
    base = row * N
    gamma = tl.load(gamma_ptr + row).to(ACC)

    # pass 1: max w, and arg = the first index of the largest p
    w_max = tl.zeros([], dtype=ACC)
    p_best = tl.full([], -1.0, dtype=ACC)
    arg = tl.zeros([], dtype=tl.int32)
    for start in range(0, N, BLOCK_N):
        i = start + tl.arange(0, BLOCK_N)
        live = i < N
        w = tl.load(w_ptr + base + i, mask=live, other=0.0).to(ACC)
        p = tl.load(p_ptr + base + i, mask=live, other=-1.0).to(ACC)
        w_max = tl.maximum(w_max, tl.max(w, axis=0))
        chunk_max = tl.max(p, axis=0)
        chunk_arg = tl.min(tl.where(live & (p == chunk_max), i, N), axis=0)
        better = chunk_max > p_best  # strictly: an earlier chunk keeps a tie
        arg = tl.where(better, chunk_arg, arg)
        p_best = tl.where(better, chunk_max, p_best)
    w_max_safe = tl.where(w_max > 0, w_max, 1.0)  # as the forward's

    # pass 2: rest = sum_{i != arg} p_i, t = sum_{i != arg} p_i g_i
    rest = tl.zeros([], dtype=ACC)
    t = tl.zeros([], dtype=ACC)
    for start in range(0, N, BLOCK_N):
        i = start + tl.arange(0, BLOCK_N)
        keep = (i < N) & (i != arg)
        p = tl.load(p_ptr + base + i, mask=keep, other=0.0).to(ACC)
        g = tl.load(g_ptr + base + i, mask=keep, other=0.0).to(ACC)
        rest += tl.sum(p, axis=0)
        t += tl.sum(p * g, axis=0)
    p_arg = tl.load(p_ptr + base + arg).to(ACC)
    g_arg = tl.load(g_ptr + base + arg).to(ACC)
    w_arg = tl.load(w_ptr + base + arg).to(ACC)
    s = t + p_arg * g_arg
    arg_diff = g_arg * rest - t
    live_row = rest + p_arg != 0  # sum p: 0 where the forward gave zeros
    # p_j / w_j at w_j = 0: 0^(gamma - 1) p[arg] / max w (gamma = 1: 1 / sum w; gamma > 1: 0)
    gm1 = gamma - 1.0
    ratio_at_zero = pow_nonneg(tl.zeros([], dtype=ACC), gm1) * p_arg / w_max_safe
    grad_arg = gamma * (p_arg / tl.where(w_arg > 0, w_arg, 1.0)) * arg_diff  # w > 0 at p's max

    # pass 3: grad_w, and grad_gamma = sum_i p_i L_i (g_i - s)
    gg = tl.zeros([], dtype=ACC)
    for start in range(0, N, BLOCK_N):
        i = start + tl.arange(0, BLOCK_N)
        live = i < N
        w = tl.load(w_ptr + base + i, mask=live, other=0.0).to(ACC)
        p = tl.load(p_ptr + base + i, mask=live, other=0.0).to(ACC)
        g = tl.load(g_ptr + base + i, mask=live, other=0.0).to(ACC)
        pos = w > 0
        w_safe = tl.where(pos, w, 1.0)
        centered = g - s
        log_ratio = tl.log(w_safe / w_max_safe)  # (where w = 0 the term is dropped below; a NaN w's is NaN)
        gg += tl.sum(tl.where((pos | (w != w)) & live, p * log_ratio * centered, 0.0), axis=0)
        ratio = tl.where(pos, p / w_safe, ratio_at_zero)
        gw = gamma * ratio * centered
        gw = tl.where(i == arg, grad_arg, gw)
        gw = tl.where(live_row, gw, 0.0)
        tl.store(gw_ptr + base + i, gw.to(gw_ptr.dtype.element_ty), mask=live)
    gg = tl.where(live_row, gg, 0.0)
    tl.store(gg_ptr + row, gg.to(gg_ptr.dtype.element_ty))


@triton_op("memops_triton::sharpen", mutates_args=())
def sharpen(weights: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    _validate.check("sharpen", weights, gamma)
    check_dtype("sharpen", weights)
    check_device("sharpen", weights)
    weights, gamma = weights.contiguous(), gamma.contiguous()
    out = weights.new_empty(weights.shape)
    if out.numel() and can_launch(out):
        rows, N = weights.shape[0] * weights.shape[1], weights.shape[2]
        wrap_triton(_sharpen_fwd_kernel)[(rows,)](weights, gamma, out, N, BLOCK_N=block(N, _ROW_CAP),
                                                   ACC=acc_dtype(weights))
    return out


@triton_op("memops_triton::_sharpen_backward", mutates_args=())
def sharpen_backward(grad: torch.Tensor, weights: torch.Tensor, gamma: torch.Tensor,
                     out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _validate.check("sharpen", weights, gamma)
    check_dtype("sharpen", weights)
    check_device("sharpen", weights)
    _validate.output_like("sharpen", grad, "grad", weights.shape, weights)
    _validate.output_like("sharpen", out, "out", weights.shape, weights)
    grad, weights, gamma, out = grad.contiguous(), weights.contiguous(), gamma.contiguous(), out.contiguous()
    grad_weights = weights.new_empty(weights.shape)
    grad_gamma = gamma.new_empty(gamma.shape)
    rows, N = weights.shape[0] * weights.shape[1], weights.shape[2]
    if rows and N == 0:  # no slots: grad_gamma sums nothing
        grad_gamma = gamma.new_zeros(gamma.shape)
    elif rows and can_launch(grad_weights):
        wrap_triton(_sharpen_bwd_kernel)[(rows,)](grad, weights, gamma, out, grad_weights, grad_gamma, N,
                                                   BLOCK_N=block(N, _ROW_CAP), ACC=acc_dtype(weights))
    return grad_weights, grad_gamma


def _setup_context(ctx, inputs, output):
    weights, gamma = inputs
    ctx.save_for_backward(weights, gamma, output)  # inputs and output, as csrc/autograd.cpp


def _backward(ctx, grad):
    weights, gamma, out = ctx.saved_tensors
    return torch.ops.memops_triton._sharpen_backward(grad, weights, gamma, out)


sharpen.register_autograd(_backward, setup_context=_setup_context)

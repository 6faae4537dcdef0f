"""ntm_address in Triton: the whole NTM addressing, fused: content, interpolation, shift, sharpen.

out = sharpen(shift(gate softmax(beta cos(k, m)) + (1 - gate) prev_weights, kernel), gamma), per (b, h) row.
Math: csrc/cpu/ntm_address.cpp with csrc/math/addressing.h's row functions (CenteredGrad included).
Saved for backward: the inputs and the output; the backward recomputes the similarities and each row's chain.
Kernels: content_address.py's memory passes plus one row kernel each way (_ntm_fwd_row_kernel,
_ntm_bwd_row_kernel); the launch order is described above ntm_address and ntm_address_backward.
"""

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from .. import _validate
from . import content_address as _content
from ._common import (
    acc_dtype,
    acc_torch_dtype,
    block,
    can_launch,
    check_device,
    check_dtype,
    pow_nonneg,
    shift_offset,
    shift_taps,
    triton_op,
)
from .content_address import (
    _centered_chunk,
    _centered_finish,
    _centered_init,
    _centered_merge,
    _combine_partials,
)

_ROW_CAP = 1024  # slots per step of a row program (module global: tests shrink it)


# Row kernels (_ntm_fwd_row_kernel, _ntm_bwd_row_kernel): grid (B*H,), one (b, h) row per program, each
# pass a loop over the row in BLOCK_R chunks through acc-dtype (B, H, N) workspaces. A pass that reads what an
# earlier pass stored is separated from it by tl.debug_barrier() (a CTA barrier: the reads gather from other
# threads' stores), and no pass writes the workspace it reads (its store and load need not share a thread
# layout). No atomics; deterministic.
@triton.jit
def _content_gated_pass(sim_ptr, prev_ptr, content_ptr, gated_ptr, row, N, m, inv, beta, gate,
                        STORE_CONTENT: tl.constexpr, BLOCK_R: tl.constexpr):
    """content = exp(beta sim - m) / Z; gated = gate content + (1 - gate) prev, into the workspaces."""
    for start in range(0, N, BLOCK_R):
        n = start + tl.arange(0, BLOCK_R)
        live = n < N
        sim = tl.load(sim_ptr + row * N + n, mask=live, other=0.0)
        content = tl.exp(beta * sim - m) * inv
        prev = tl.load(prev_ptr + row * N + n, mask=live, other=0.0).to(sim.dtype)
        if STORE_CONTENT:
            tl.store(content_ptr + row * N + n, content, mask=live)
        tl.store(gated_ptr + row * N + n, gate * content + (1.0 - gate) * prev, mask=live)


@triton.jit
def _ntm_fwd_row_kernel(sim_ptr, pmax_ptr, psum_ptr, beta_ptr, gate_ptr, k_ptr, gamma_ptr, prev_ptr,
                        gated_ptr, shifted_ptr, out_ptr, N, S, C, ACC: tl.constexpr,
                        BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """Everything after the similarities, for one (b, h) row: combine the memory pass's softmax partials;
    gated = gate content + (1 - gate) prev into a workspace; shifted[i] = sum_j kernel[j] gated[(i - d_j) mod N]
    gathered from it (d_j = shift_offset: (j - S//2) mod N, S odd, may exceed N; taps in order); then
    sharpen, out = u / sum u with u = (shifted / max shifted)^gamma (zeros where sum u = 0: a row of zeros), in
    passes for the max, the sum and the scaling."""
    row = tl.program_id(0).to(tl.int64)
    m, inv, _ = _combine_partials(pmax_ptr, psum_ptr, row, C, BLOCK_C)
    beta = tl.load(beta_ptr + row).to(ACC)
    gate = tl.load(gate_ptr + row).to(ACC)
    gamma = tl.load(gamma_ptr + row).to(ACC)
    _content_gated_pass(sim_ptr, prev_ptr, gated_ptr, gated_ptr, row, N, m, inv, beta, gate,
                        False, BLOCK_R)
    tl.debug_barrier()
    # shift, and the row max of the shifted weights (from 0, as sharpen_row)
    w_max = tl.full((), 0.0, ACC)
    for start in range(0, N, BLOCK_R):
        n = start + tl.arange(0, BLOCK_R)
        live = n < N
        shifted = shift_taps(gated_ptr + row * N, k_ptr + row * S, n, live, N, S, 1, ACC, BLOCK_R)
        tl.store(shifted_ptr + row * N + n, shifted, mask=live)
        w_max = tl.maximum(w_max, tl.max(tl.where(live, shifted, 0.0), axis=0))
    tl.debug_barrier()
    # sharpen: u = (w / max w)^gamma (into the gated workspace: a store to the workspace a pass reads
    # could race with that read, the two need not share a layout), out = u / sum u
    scale = tl.where(w_max > 0, w_max, 1.0)  # a row of zeros is not scaled
    total = tl.full((), 0.0, ACC)
    for start in range(0, N, BLOCK_R):
        n = start + tl.arange(0, BLOCK_R)
        live = n < N
        u = pow_nonneg(tl.load(shifted_ptr + row * N + n, mask=live, other=0.0) / scale, gamma)  # 1 at the max
        u = tl.where(live, u, 0.0)
        total += tl.sum(u, axis=0)
        tl.store(gated_ptr + row * N + n, u, mask=live)
    tl.debug_barrier()
    # sum u = 0: a row of zeros, which gives zeros; a NaN anywhere in the row made it NaN
    inv_total = tl.where(total == 0, 0.0, 1.0 / tl.where(total == 0, 1.0, total))
    for start in range(0, N, BLOCK_R):
        n = start + tl.arange(0, BLOCK_R)
        live = n < N
        out = tl.load(gated_ptr + row * N + n, mask=live, other=0.0) * inv_total
        tl.store(out_ptr + row * N + n, out.to(out_ptr.dtype.element_ty), mask=live)


@triton.jit
def _ntm_bwd_row_kernel(grad_ptr, out_ptr, sim_ptr, pmax_ptr, psum_ptr, beta_ptr, gate_ptr, k_ptr,
                        gamma_ptr, prev_ptr, content_ptr, gated_ptr, shifted_ptr, d_ptr,
                        g_beta_ptr, g_gate_ptr, g_k_ptr, g_gamma_ptr, g_prev_ptr, N, S, C,
                        ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """The chain of one (b, h) row, forwards to the shifted weights, then backwards to dsim (left in
    d_ptr for the memory pass), with the gradients of beta, gate, kernel, gamma and prev_weights.

    Passes: content and gated; shifted, its max and CenteredGrad of (out, grad); sharpen backward (d loss /
    d shifted, grad_gamma); shift backward (gather of d) and interpolation (grad_gate, grad_prev_weights,
    d loss / d content and its CenteredGrad), grad_kernel one tap at a time; softmax backward (grad_beta,
    dsim = beta dlogits).

    Workspaces (acc dtype, (B, H, N)): content, gated, shifted (later d loss / d content), d (d loss /
    d shifted, later dsim); sim holds the similarities from the memory pass."""
    row = tl.program_id(0).to(tl.int64)
    m, inv, _ = _combine_partials(pmax_ptr, psum_ptr, row, C, BLOCK_C)
    beta = tl.load(beta_ptr + row).to(ACC)
    gate = tl.load(gate_ptr + row).to(ACC)
    gamma = tl.load(gamma_ptr + row).to(ACC)
    _content_gated_pass(sim_ptr, prev_ptr, content_ptr, gated_ptr, row, N, m, inv, beta, gate,
                        True, BLOCK_R)
    tl.debug_barrier()
    # shifted weights and their max; CenteredGrad of (out, grad) for the sharpen backward
    w_max = tl.full((), 0.0, ACC)
    arg, pa, ga, rest, t = _centered_init(ACC)
    for start in range(0, N, BLOCK_R):
        n = start + tl.arange(0, BLOCK_R)
        live = n < N
        shifted = shift_taps(gated_ptr + row * N, k_ptr + row * S, n, live, N, S, 1, ACC, BLOCK_R)
        tl.store(shifted_ptr + row * N + n, shifted, mask=live)
        w_max = tl.maximum(w_max, tl.max(tl.where(live, shifted, 0.0), axis=0))
        p = tl.load(out_ptr + row * N + n, mask=live, other=0.0).to(ACC)
        g = tl.load(grad_ptr + row * N + n, mask=live, other=0.0).to(ACC)
        carg, cmax, cga, sp, spg, rp, rpg = _centered_chunk(p, g, n, live)
        arg, pa, ga, rest, t = _centered_merge(arg, pa, ga, rest, t, carg, cmax, cga, sp, spg, rp, rpg)
    s, diff = _centered_finish(pa, ga, rest, t)
    tl.debug_barrier()
    # sharpen backward (sharpen_backward_row): d loss / d shifted into d; the gamma gradient
    #   d_j = gamma (p_j / w_j) (g_j - s), p_j / w_j -> 0^(gamma - 1) p_arg / max w at w_j = 0,
    #   at the argmax gamma (p / w) diff;  grad_gamma = sum_{w_i > 0} p_i log(w_i / max w) (g_i - s)
    # zero gradients where the forward gave zeros (sum p = 0: a row of zeros)
    pos = rest + tl.where(pa > -float("inf"), pa, 0.0) != 0
    inv_max = 1.0 / tl.where(w_max > 0, w_max, 1.0)
    ratio_at_zero = pow_nonneg(tl.full((), 0.0, ACC), gamma - 1.0) * pa * inv_max
    gg = tl.full((), 0.0, ACC)
    for start in range(0, N, BLOCK_R):
        n = start + tl.arange(0, BLOCK_R)
        live = n < N
        w = tl.load(shifted_ptr + row * N + n, mask=live, other=0.0)
        p = tl.load(out_ptr + row * N + n, mask=live, other=0.0).to(ACC)
        g = tl.load(grad_ptr + row * N + n, mask=live, other=0.0).to(ACC)
        wp = w > 0
        w_safe = tl.where(wp, w, 1.0)
        centered = g - s
        gg += tl.sum(tl.where(live & (wp | (w != w)), p * tl.log(w_safe * inv_max) * centered, 0.0), axis=0)
        ratio = tl.where(wp, p / w_safe, ratio_at_zero)
        dw = tl.where(n == arg, gamma * (p / w_safe) * diff, gamma * ratio * centered)
        tl.store(d_ptr + row * N + n, tl.where(pos, dw, 0.0), mask=live)
    gg = tl.where(pos, gg, 0.0)
    tl.debug_barrier()
    # shift backward: d loss / d gated = sum_j kernel[j] d[(i + d_j) mod N]; then the interpolation:
    # grad_prev = (1 - gate) dgated, grad_gate = dgated . (content - prev), dcontent = gate dgated
    # (into the shifted workspace), and CenteredGrad of (content, dcontent) for the softmax backward
    arg, pa, ga, rest, t = _centered_init(ACC)
    g_gate = tl.full((), 0.0, ACC)
    for start in range(0, N, BLOCK_R):
        n = start + tl.arange(0, BLOCK_R)
        live = n < N
        dgated = shift_taps(d_ptr + row * N, k_ptr + row * S, n, live, N, S, -1, ACC, BLOCK_R)
        content = tl.load(content_ptr + row * N + n, mask=live, other=0.0)
        prev = tl.load(prev_ptr + row * N + n, mask=live, other=0.0).to(ACC)
        g_gate += tl.sum(tl.where(live, dgated * (content - prev), 0.0), axis=0)
        tl.store(g_prev_ptr + row * N + n, ((1.0 - gate) * dgated).to(g_prev_ptr.dtype.element_ty), mask=live)
        dcontent = gate * dgated
        tl.store(shifted_ptr + row * N + n, dcontent, mask=live)
        carg, cmax, cga, sp, spg, rp, rpg = _centered_chunk(content, dcontent, n, live)
        arg, pa, ga, rest, t = _centered_merge(arg, pa, ga, rest, t, carg, cmax, cga, sp, spg, rp, rpg)
    s, diff = _centered_finish(pa, ga, rest, t)
    # grad_kernel[j] = sum_i d[i] gated[(i - d_j) mod N], one tap at a time
    for j in range(S):
        dj = shift_offset(j, S, N)
        acc = tl.full((), 0.0, ACC)
        for start in range(0, N, BLOCK_R):
            n = start + tl.arange(0, BLOCK_R)
            live = n < N
            src = n - dj
            src = tl.where(src < 0, src + N, src)
            dv = tl.load(d_ptr + row * N + n, mask=live, other=0.0)
            gv = tl.load(gated_ptr + row * N + src, mask=live, other=0.0)
            acc += tl.sum(dv * gv, axis=0)
        tl.store(g_k_ptr + row * S + j, acc.to(g_k_ptr.dtype.element_ty))
    tl.debug_barrier()
    # softmax backward: dlogits = content (dcontent - s) (content_arg diff at the argmax);
    # grad_beta = dlogits . sim; dsim = beta dlogits into d for the memory pass
    g_beta = tl.full((), 0.0, ACC)
    for start in range(0, N, BLOCK_R):
        n = start + tl.arange(0, BLOCK_R)
        live = n < N
        content = tl.load(content_ptr + row * N + n, mask=live, other=0.0)
        dcontent = tl.load(shifted_ptr + row * N + n, mask=live, other=0.0)
        sim = tl.load(sim_ptr + row * N + n, mask=live, other=0.0)
        dlogit = tl.where(n == arg, content * diff, content * (dcontent - s))
        g_beta += tl.sum(tl.where(live, dlogit * sim, 0.0), axis=0)
        tl.store(d_ptr + row * N + n, beta * dlogit, mask=live)
    tl.store(g_beta_ptr + row, g_beta.to(g_beta_ptr.dtype.element_ty))
    tl.store(g_gate_ptr + row, g_gate.to(g_gate_ptr.dtype.element_ty))
    tl.store(g_gamma_ptr + row, gg.to(g_gamma_ptr.dtype.element_ty))


def _check(name, memory, keys, beta, gate, kernel, gamma, prev_weights, eps):
    _validate.check("ntm_address", memory, keys, beta, gate, kernel, gamma, prev_weights, eps)
    check_dtype(name, memory)
    check_device(name, memory)


# Forward: content_address.py's forward memory pass (grid (B, C)) leaves the cosine similarities and
# per-chunk softmax partials in workspaces; _ntm_fwd_row_kernel does the rest of each row.
@triton_op("memops_triton::ntm_address", mutates_args=())
def ntm_address(memory: torch.Tensor, keys: torch.Tensor, beta: torch.Tensor, gate: torch.Tensor,
                kernel: torch.Tensor, gamma: torch.Tensor, prev_weights: torch.Tensor, eps: float) -> torch.Tensor:
    _check("ntm_address", memory, keys, beta, gate, kernel, gamma, prev_weights, eps)
    memory, keys, beta, gate = memory.contiguous(), keys.contiguous(), beta.contiguous(), gate.contiguous()
    kernel, gamma, prev_weights = kernel.contiguous(), gamma.contiguous(), prev_weights.contiguous()
    B, N, _ = memory.shape
    H, S = keys.shape[1], kernel.shape[2]
    out = memory.new_empty((B, H, N))
    if out.numel() and can_launch(out):
        sim, pmax, psum, C = _content._similarity_pass(memory, keys, beta, None, True, float(eps))
        acc = acc_torch_dtype(memory)
        gated = memory.new_empty((B, H, N), dtype=acc)
        shifted = memory.new_empty((B, H, N), dtype=acc)
        wrap_triton(_ntm_fwd_row_kernel)[(B * H,)](
            sim, pmax, psum, beta, gate, kernel, gamma, prev_weights, gated, shifted, out, N, S, C,
            ACC=acc_dtype(memory), BLOCK_R=block(N, _ROW_CAP), BLOCK_C=block(C, 1 << 30))
    return out


# Backward: the same forward memory pass (sims and partials), then _ntm_bwd_row_kernel runs each row's chain
# forwards and backwards down to dsim = d loss / d sim, then content_address.py's backward memory pass turns
# dsim into the memory gradient (summed over heads) and the key gradients (through per-chunk partials and
# a finish kernel when a row has several chunks).
@triton_op("memops_triton::_ntm_address_backward", mutates_args=())
def ntm_address_backward(grad: torch.Tensor, memory: torch.Tensor, keys: torch.Tensor, beta: torch.Tensor,
                         gate: torch.Tensor, kernel: torch.Tensor, gamma: torch.Tensor, prev_weights: torch.Tensor,
                         out: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                 torch.Tensor, torch.Tensor, torch.Tensor,
                                                                 torch.Tensor]:
    _check("ntm_address", memory, keys, beta, gate, kernel, gamma, prev_weights, eps)
    B, N, _ = memory.shape
    H, S = keys.shape[1], kernel.shape[2]
    _validate.output_like("ntm_address", grad, "grad", (B, H, N), memory)
    _validate.output_like("ntm_address", out, "out", (B, H, N), memory)
    if B * H * N == 0:  # no weights: every gradient is an empty sum
        return tuple(torch.zeros_like(t) for t in (memory, keys, beta, gate, kernel, gamma, prev_weights))
    memory, keys, beta, gate = memory.contiguous(), keys.contiguous(), beta.contiguous(), gate.contiguous()
    kernel, gamma, prev_weights = kernel.contiguous(), gamma.contiguous(), prev_weights.contiguous()
    grad, out = grad.contiguous(), out.contiguous()
    if not can_launch(memory):  # fake tensors under the interpreter: shapes only
        return tuple(torch.empty_like(t) for t in (memory, keys, beta, gate, kernel, gamma, prev_weights))
    sim, pmax, psum, C = _content._similarity_pass(memory, keys, beta, None, True, float(eps))
    acc = acc_torch_dtype(memory)
    content, gated, shifted, d = (memory.new_empty((B, H, N), dtype=acc) for _ in range(4))
    g_beta, g_gate, g_gamma = torch.empty_like(beta), torch.empty_like(gate), torch.empty_like(gamma)
    g_kernel, g_prev = torch.empty_like(kernel), torch.empty_like(prev_weights)
    wrap_triton(_ntm_bwd_row_kernel)[(B * H,)](
        grad, out, sim, pmax, psum, beta, gate, kernel, gamma, prev_weights, content, gated, shifted, d,
        g_beta, g_gate, g_kernel, g_gamma, g_prev, N, S, C,
        ACC=acc_dtype(memory), BLOCK_R=block(N, _ROW_CAP), BLOCK_C=block(C, 1 << 30))
    g_memory, g_keys, _ = _content._memory_grads(memory, keys, beta, True, float(eps), dsim=d)
    return g_memory, g_keys, g_beta, g_gate, g_kernel, g_gamma, g_prev


def _setup_context(ctx, inputs, output):
    # the inputs and the output, as csrc/autograd.cpp; the backward recomputes the chain per row
    ctx.save_for_backward(*inputs[:7], output)
    ctx.eps = inputs[7]


def _backward(ctx, grad):
    memory, keys, beta, gate, kernel, gamma, prev_weights, out = ctx.saved_tensors
    grads = torch.ops.memops_triton._ntm_address_backward(grad, memory, keys, beta, gate, kernel, gamma,
                                                          prev_weights, out, ctx.eps)
    return (*grads, None)


ntm_address.register_autograd(_backward, setup_context=_setup_context)

"""content_address in Triton: softmax over slots of beta * sim(key, slot), with an optional slot mask.

sim is cosine, k.m / (max(|k|, eps) max(|m|, eps)), or dot, k.m (memops/reference.py); slots where mask is
False get weight exactly 0 (a row with no slot left is all zeros). Math: csrc/math/addressing.h, as
csrc/cpu/content_address.cpp.
Saved for backward: the inputs and the output p; the similarities are recomputed in the backward's memory pass.
Kernels: memory passes (one program per (b, chunk of slots), all heads) and per-row kernels, launched by
_similarity_pass and _memory_grads, which ntm_address.py reuses with the CenteredGrad helpers.
"""

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from .. import _validate
from ._common import (
    acc_dtype,
    acc_torch_dtype,
    block,
    can_launch,
    check_device,
    check_dtype,
    triton_op,
)

# Elements of one program's (slots x width) memory tile; slots per step of a program walking a row.
# Module globals read at call time (tests shrink them to run the multi-chunk paths on small shapes).
_TILE = 4096
_ROW_CAP = 1024
_BIG = 2147483647  # an index larger than any slot index (int32)


def _blocks(N, W):
    """(BLOCK_W, BLOCK_N, C) of the memory-pass kernels: the whole width in one block, as many slots as
    fit in _TILE elements (at least 16), C chunks of slots per batch row."""
    BLOCK_W = block(W, cap=1 << 30)
    BLOCK_N = max(16, min(block(N, cap=1 << 30), _TILE // BLOCK_W))
    return BLOCK_W, BLOCK_N, triton.cdiv(N, BLOCK_N)


# ------------------------------------------------------------------------------------------------
# device helpers


@triton.jit
def _clamped_norm(x, eps, AXIS: tl.constexpr):
    """max(|x|, eps) along AXIS, as torch.nn.functional.cosine_similarity (NaN stays NaN): the plain
    sqrt(sum x^2), and where that sum overflowed (entries past the square root of the dtype's range),
    s sqrt(sum (x / s)^2) with s the largest |x| (csrc/math/common.h, norm_rescaled). Dead lanes are 0."""
    sumsq = tl.sum(x * x, axis=AXIS)
    s = tl.max(tl.abs(x), axis=AXIS)
    s_b = tl.max(tl.abs(x), axis=AXIS, keep_dims=True)
    y = x / tl.where(s_b > 0, s_b, 1.0)
    rescaled = tl.where(s == float("inf"), s, s * tl.sqrt(tl.sum(y * y, axis=AXIS)))
    n = tl.where(sumsq == float("inf"), rescaled, tl.sqrt(sumsq))
    return tl.where(n < eps, eps, n)


@triton.jit
def _cosine(tile, key, key_norm, slot_norm):
    """k.m_i / (|k|' |m_i|') for the rows m_i of a memory tile; where the plain quotient is not finite
    (k.m_i or the denominator overflowed, or an input is not finite), sum_c (k_c / |k|') (m_ic / |m_i|'),
    whose factors are at most 1 in size (csrc/math/common.h, cosine_rescaled)."""
    den = key_norm * slot_norm
    sim = tl.sum(tile * key[None, :], axis=1) / den
    bad = (sim - sim != 0) | (den - den != 0)  # x - x is NaN for inf and NaN
    rescaled = tl.sum((tile / slot_norm[:, None]) * (key / key_norm)[None, :], axis=1)
    return tl.where(bad, rescaled, sim)


@triton.jit
def _combine_partials(pmax_ptr, psum_ptr, row, C, BLOCK_C: tl.constexpr):
    """The softmax normalisers of one row from its C chunk partials (max m_c, sum_i exp(l_i - m_c)),
    in a fixed order: (M, 1/Z, any) with M the row max (0 if no slot is kept), Z the row's sum of
    exp(l - M), any whether a slot is kept (inv is 0 when not). A chunk keeps a slot where its sum is
    not 0 (at least 1, or NaN: a NaN logit makes the row NaN, whatever tl.max does with NaN)."""
    c = tl.arange(0, BLOCK_C)
    live = c < C
    pm = tl.load(pmax_ptr + row * C + c, mask=live, other=-float("inf"))
    ps = tl.load(psum_ptr + row * C + c, mask=live, other=0.0)
    kept = ps != 0
    any_kept = tl.sum(kept.to(tl.int32), axis=0) > 0
    m = tl.where(any_kept, tl.max(tl.where(kept, pm, -float("inf")), axis=0), 0.0)
    z = tl.sum(tl.where(kept, ps * tl.exp(tl.where(kept, pm, m) - m), 0.0), axis=0)
    inv = tl.where(any_kept, 1.0 / tl.where(any_kept, z, 1.0), 0.0)
    return m, inv, any_kept


@triton.jit
def _centered_chunk(p, g, offs, live):
    """CenteredGrad (csrc/math/addressing.h) of one chunk of a row: p, g are 0 on dead lanes. Returns the
    chunk's argmax of p (first index on ties) and max, g there, and the sums of p and p g over the
    chunk, all slots and all but the argmax."""
    pm = tl.where(live, p, -float("inf"))
    cmax = tl.max(pm, axis=0)
    carg = tl.min(tl.where(pm == cmax, offs, 2147483647), axis=0)
    at = offs == carg
    pg = p * g
    cga = tl.sum(tl.where(at, g, 0.0), axis=0)
    sp = tl.sum(p, axis=0)
    spg = tl.sum(pg, axis=0)
    rp = tl.sum(tl.where(at, 0.0, p), axis=0)
    rpg = tl.sum(tl.where(at, 0.0, pg), axis=0)
    return carg, cmax, cga, sp, spg, rp, rpg


@triton.jit
def _centered_init(ACC: tl.constexpr):
    """The running CenteredGrad state before any chunk: (arg, p[arg], g[arg], rest, t)."""
    return (tl.full((), 0, tl.int32), tl.full((), -float("inf"), ACC), tl.full((), 0.0, ACC),
            tl.full((), 0.0, ACC), tl.full((), 0.0, ACC))


@triton.jit
def _centered_merge(arg, pa, ga, rest, t, carg, cmax, cga, sp, spg, rp, rpg):
    """Merge a chunk (from _centered_chunk) into the running state of a row: the argmax so far (arg, its
    p and g: pa, ga; pa = -inf before the first chunk), rest = sum of p and t = sum of p g over the
    slots so far other than arg. When the chunk holds a new (strictly larger) max, the old one joins
    the sums; the sums never take the max off a total (it may be below the total's resolution)."""
    new = cmax > pa
    pa0 = tl.where(pa > -float("inf"), pa, 0.0)
    rest2 = tl.where(new, rest + pa0 + rp, rest + sp)
    t2 = tl.where(new, t + pa0 * ga + rpg, t + spg)
    return tl.where(new, carg, arg), tl.where(new, cmax, pa), tl.where(new, cga, ga), rest2, t2


@triton.jit
def _centered_finish(pa, ga, rest, t):
    """(s, diff): s = sum_i p_i g_i, and diff = g_arg (sum_{i != arg} p_i) - sum_{i != arg} p_i g_i, which
    stands for g_arg - s at the argmax (equal where sum p = 1)."""
    return t + pa * ga, ga * rest - t


# Memory passes (_content_fwd_kernel, _content_bwd_kernel): grid (B, C), C = cdiv(N, BLOCK_N). A program loads
# the (BLOCK_N, W) memory tile of one batch row once and loops over the H heads inside, so a pass reads memory
# once for all heads. Partials over the C chunks are combined by per-row kernels in a fixed order: no atomics,
# every output element has one writer, results are deterministic.
@triton.jit
def _content_fwd_kernel(mem_ptr, keys_ptr, beta_ptr, mask_ptr, sim_ptr, pmax_ptr, psum_ptr, out_ptr,
                        H, N, W, C, EPS: tl.constexpr, COSINE: tl.constexpr, HAS_MASK: tl.constexpr,
                        FINISH: tl.constexpr, ACC: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_W: tl.constexpr):
    """Memory pass of the forward (similarity_row, masked_softmax_row), one (b, chunk of slots) per
    program, all heads. FINISH (one chunk per row): writes the softmax to out. Otherwise: sim to the
    acc-dtype workspace and the chunk's (max, sum exp) of the kept logits to the partials (max -inf,
    sum 0 where no slot of the chunk is kept), which _content_norm_kernel (or ntm_address's row kernel)
    combines."""
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1)
    n = c * BLOCK_N + tl.arange(0, BLOCK_N)
    w = tl.arange(0, BLOCK_W)
    n_live = n < N
    w_live = w < W
    eps = tl.full((), EPS, ACC)
    tile = tl.load(mem_ptr + b * N * W + n[:, None] * W + w[None, :],
                   mask=n_live[:, None] & w_live[None, :], other=0.0).to(ACC)
    if COSINE:
        slot_norm = _clamped_norm(tile, eps, 1)
    if HAS_MASK:
        keep = (tl.load(mask_ptr + b * N + n, mask=n_live, other=0) != 0) & n_live
    else:
        keep = n_live
    any_kept = tl.sum(keep.to(tl.int32), axis=0) > 0
    for h in range(H):
        row = b * H + h
        key = tl.load(keys_ptr + row * W + w, mask=w_live, other=0.0).to(ACC)
        if COSINE:
            key_norm = _clamped_norm(key, eps, 0)
            sim = _cosine(tile, key, key_norm, slot_norm)
        else:
            sim = tl.sum(tile * key[None, :], axis=1)
        beta = tl.load(beta_ptr + row).to(ACC)
        logit = tl.where(keep, beta * sim, -float("inf"))
        m = tl.max(logit, axis=0)
        m_safe = tl.where(any_kept, m, 0.0)  # (a NaN logit makes e, so the row, NaN)
        e = tl.where(keep, tl.exp(tl.where(keep, logit, m_safe) - m_safe), 0.0)
        z = tl.sum(e, axis=0)
        if FINISH:
            inv = tl.where(any_kept, 1.0 / tl.where(any_kept, z, 1.0), 0.0)
            tl.store(out_ptr + row * N + n, (e * inv).to(out_ptr.dtype.element_ty), mask=n_live)
        else:
            tl.store(sim_ptr + row * N + n, sim, mask=n_live)
            tl.store(pmax_ptr + row * C + c, m)
            tl.store(psum_ptr + row * C + c, z)


@triton.jit
def _content_norm_kernel(sim_ptr, beta_ptr, mask_ptr, pmax_ptr, psum_ptr, out_ptr, H, N, C,
                         HAS_MASK: tl.constexpr, ACC: tl.constexpr, BLOCK_R: tl.constexpr,
                         BLOCK_C: tl.constexpr):
    """Softmax weights of BLOCK_R slots of one (b, h) row from the workspace sims and the row's partials.
    Grid (B*H, cdiv(N, BLOCK_R)); every program of a row combines its C partials in the same order."""
    row = tl.program_id(0).to(tl.int64)
    n = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)
    n_live = n < N
    m, inv, _ = _combine_partials(pmax_ptr, psum_ptr, row, C, BLOCK_C)
    if HAS_MASK:
        keep = (tl.load(mask_ptr + (row // H) * N + n, mask=n_live, other=0) != 0) & n_live
    else:
        keep = n_live
    sim = tl.load(sim_ptr + row * N + n, mask=n_live, other=0.0)
    beta = tl.load(beta_ptr + row).to(ACC)
    logit = tl.where(keep, beta * sim, m)
    p = tl.where(keep, tl.exp(logit - m), 0.0) * inv
    tl.store(out_ptr + row * N + n, p.to(out_ptr.dtype.element_ty), mask=n_live)


@triton.jit
def _centered_stats_kernel(p_ptr, g_ptr, s_ptr, diff_ptr, arg_ptr, N, ACC: tl.constexpr,
                           BLOCK_R: tl.constexpr):
    """The softmax backward's row statistics (CenteredGrad, as softmax_backward_row) of one (b, h) row of p
    and g: the argmax of p, s = sum p g and diff (see _centered_finish). Grid (B*H,), a loop over the row
    in BLOCK_R chunks; launched only when a row has several chunks (else the memory pass does it)."""
    row = tl.program_id(0).to(tl.int64)
    arg, pa, ga, rest, t = _centered_init(ACC)
    for start in range(0, N, BLOCK_R):
        n = start + tl.arange(0, BLOCK_R)
        live = n < N
        p = tl.load(p_ptr + row * N + n, mask=live, other=0.0).to(ACC)
        g = tl.load(g_ptr + row * N + n, mask=live, other=0.0).to(ACC)
        carg, cmax, cga, sp, spg, rp, rpg = _centered_chunk(p, g, n, live)
        arg, pa, ga, rest, t = _centered_merge(arg, pa, ga, rest, t, carg, cmax, cga, sp, spg, rp, rpg)
    s, diff = _centered_finish(pa, ga, rest, t)
    tl.store(s_ptr + row, s)
    tl.store(diff_ptr + row, diff)
    tl.store(arg_ptr + row, arg)


@triton.jit
def _content_bwd_kernel(mem_ptr, keys_ptr, beta_ptr, p_ptr, g_ptr, s_ptr, diff_ptr, arg_ptr, dsim_ptr,
                        gm_ptr, gk_ptr, gb_ptr, gkp_ptr, dssp_ptr, gbp_ptr, H, N, W, C,
                        EPS: tl.constexpr, COSINE: tl.constexpr, DSIM_GIVEN: tl.constexpr,
                        ONE_CHUNK: tl.constexpr, ACC: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_W: tl.constexpr):
    """Memory pass of the backward, one (b, chunk of slots) per program, all heads.

    dsim (d loss / d sim) comes from dsim_ptr (DSIM_GIVEN: ntm_address's row pass made it), or is
    formed here from p, g and the CenteredGrad statistics (from *_ptr, or from this chunk when
    ONE_CHUNK), with dlogits = p (g - s) (p_arg diff at the argmax), dsim = beta dlogits and
    grad_beta = dlogits . sim. Then (csrc/math/addressing.h, key_grad_row and memory_grad_slots):
      cosine: gk = sum_i dsim_i m_i / (|k|' |m_i|') - live_k (dsim . sim) k / |k|'^2
              gm_i = sum_h dsim_hi k_h / (|k_h|' |m_i|') - live_i (sum_h dsim_hi sim_hi) m_i / |m_i|'^2
      dot:    gk = sum_i dsim_i m_i,  gm_i = sum_h dsim_hi k_h
    gm (summed over the heads in registers) is written here; gk and grad_beta too when ONE_CHUNK, else
    their chunk partials (the sum over slots of the first term of gk, dsim . sim, dlogits . sim) go to
    gkp, dssp, gbp.
    """
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1)
    n = c * BLOCK_N + tl.arange(0, BLOCK_N)
    w = tl.arange(0, BLOCK_W)
    n_live = n < N
    w_live = w < W
    eps = tl.full((), EPS, ACC)
    tile = tl.load(mem_ptr + b * N * W + n[:, None] * W + w[None, :],
                   mask=n_live[:, None] & w_live[None, :], other=0.0).to(ACC)
    if COSINE:
        slot_norm = _clamped_norm(tile, eps, 1)
        self_coef = tl.zeros([BLOCK_N], dtype=ACC)
    gm = tl.zeros([BLOCK_N, BLOCK_W], dtype=ACC)
    for h in range(H):
        row = b * H + h
        key = tl.load(keys_ptr + row * W + w, mask=w_live, other=0.0).to(ACC)
        if COSINE:
            key_norm = _clamped_norm(key, eps, 0)
            sim = _cosine(tile, key, key_norm, slot_norm)
        else:
            sim = tl.sum(tile * key[None, :], axis=1)
        if DSIM_GIVEN:
            dsim = tl.load(dsim_ptr + row * N + n, mask=n_live, other=0.0)
        else:
            p = tl.load(p_ptr + row * N + n, mask=n_live, other=0.0).to(ACC)
            g = tl.load(g_ptr + row * N + n, mask=n_live, other=0.0).to(ACC)
            if ONE_CHUNK:
                arg, pa, ga, _, _, rest, t = _centered_chunk(p, g, n, n_live)
                s, diff = _centered_finish(pa, ga, rest, t)
            else:
                s = tl.load(s_ptr + row)
                diff = tl.load(diff_ptr + row)
                arg = tl.load(arg_ptr + row)
            dlogit = tl.where(n == arg, p * diff, p * (g - s))
            gb = tl.sum(dlogit * sim, axis=0)
            dsim = tl.load(beta_ptr + row).to(ACC) * dlogit
        if COSINE:
            coef = dsim * (1.0 / key_norm) / slot_norm
            self_coef -= dsim * sim
            dss = tl.sum(dsim * sim, axis=0)
        else:
            coef = dsim
        gk = tl.sum(coef[:, None] * tile, axis=0)
        gm += coef[:, None] * key[None, :]
        if ONE_CHUNK:
            if COSINE:
                live_k = tl.where(key_norm > eps, 1.0, 0.0)
                gk -= (live_k * dss / key_norm / key_norm) * key
            tl.store(gk_ptr + row * W + w, gk.to(gk_ptr.dtype.element_ty), mask=w_live)
            if not DSIM_GIVEN:
                tl.store(gb_ptr + row, gb.to(gb_ptr.dtype.element_ty))
        else:
            tl.store(gkp_ptr + (row * C + c) * W + w, gk, mask=w_live)
            if COSINE:
                tl.store(dssp_ptr + row * C + c, dss)
            if not DSIM_GIVEN:
                tl.store(gbp_ptr + row * C + c, gb)
    if COSINE:
        live_n = tl.where(slot_norm > eps, 1.0, 0.0)
        gm += (self_coef * live_n / slot_norm / slot_norm)[:, None] * tile
    tl.store(gm_ptr + b * N * W + n[:, None] * W + w[None, :], gm.to(gm_ptr.dtype.element_ty),
             mask=n_live[:, None] & w_live[None, :])


@triton.jit
def _content_finish_kernel(keys_ptr, gkp_ptr, dssp_ptr, gbp_ptr, gk_ptr, gb_ptr, W, C,
                           EPS: tl.constexpr, COSINE: tl.constexpr, HAS_GB: tl.constexpr,
                           ACC: tl.constexpr, BLOCK_W: tl.constexpr):
    """The key (and beta) gradient of one (b, h) row from its C chunk partials, summed in chunk order.
    Grid (B*H,)."""
    row = tl.program_id(0).to(tl.int64)
    w = tl.arange(0, BLOCK_W)
    w_live = w < W
    gk = tl.zeros([BLOCK_W], dtype=ACC)
    dss = tl.full((), 0.0, ACC)
    gb = tl.full((), 0.0, ACC)
    for c in range(C):
        gk += tl.load(gkp_ptr + (row * C + c) * W + w, mask=w_live, other=0.0)
        if COSINE:
            dss += tl.load(dssp_ptr + row * C + c)
        if HAS_GB:
            gb += tl.load(gbp_ptr + row * C + c)
    if COSINE:
        eps = tl.full((), EPS, ACC)
        key = tl.load(keys_ptr + row * W + w, mask=w_live, other=0.0).to(ACC)
        key_norm = _clamped_norm(key, eps, 0)
        live_k = tl.where(key_norm > eps, 1.0, 0.0)
        gk -= (live_k * dss / key_norm / key_norm) * key
    tl.store(gk_ptr + row * W + w, gk.to(gk_ptr.dtype.element_ty), mask=w_live)
    if HAS_GB:
        tl.store(gb_ptr + row, gb.to(gb_ptr.dtype.element_ty))


# ------------------------------------------------------------------------------------------------
# host functions, shared with ntm_address


def _similarity_pass(memory, keys, beta, mask, cosine, eps, out=None):
    """Launch the forward memory pass. With one chunk per row and `out` given, writes the weights to
    out and returns None; otherwise returns (sim, pmax, psum, C): the workspace of similarities (B, H, N)
    and the per-chunk softmax partials (B, H, C), all in the accumulation dtype."""
    B, N, W = memory.shape
    H = keys.shape[1]
    BLOCK_W, BLOCK_N, C = _blocks(N, W)
    finish = out is not None and C == 1
    acc = acc_torch_dtype(memory)
    if finish:
        sim = pmax = psum = memory  # not touched (a read-only input, as the unused pointers elsewhere)
    else:
        sim = memory.new_empty((B, H, N), dtype=acc)
        pmax = memory.new_empty((B, H, C), dtype=acc)
        psum = memory.new_empty((B, H, C), dtype=acc)
    mask_arg = mask.view(torch.uint8) if mask is not None else memory
    wrap_triton(_content_fwd_kernel)[(B, C)](
        memory, keys, beta, mask_arg, sim, pmax, psum, out if finish else memory, H, N, W, C,
        EPS=eps, COSINE=cosine, HAS_MASK=mask is not None, FINISH=finish, ACC=acc_dtype(memory),
        BLOCK_N=BLOCK_N, BLOCK_W=BLOCK_W)
    return None if finish else (sim, pmax, psum, C)


def _memory_grads(memory, keys, beta, cosine, eps, *, dsim=None, p=None, g=None):
    """Launch the backward memory pass (and the stats / finish kernels it needs). Either dsim
    (B, H, N, acc dtype) is given, or p and g (the softmax output and its incoming gradient).
    Returns (grad_memory, grad_keys, grad_beta or None when dsim was given). With one chunk per row the
    statistics and the key / beta gradients are done inside the memory pass: one launch."""
    B, N, W = memory.shape
    H = keys.shape[1]
    BLOCK_W, BLOCK_N, C = _blocks(N, W)
    one = C == 1
    acc, ACC = acc_torch_dtype(memory), acc_dtype(memory)
    given = dsim is not None
    gm = torch.empty_like(memory)
    gk = torch.empty_like(keys)
    gb = None if given else torch.empty_like(beta)
    s = diff = arg = gkp = dssp = gbp = memory  # unused pointers: a read-only input, never touched
    if not given and not one:
        s = memory.new_empty((B, H), dtype=acc)
        diff = memory.new_empty((B, H), dtype=acc)
        arg = memory.new_empty((B, H), dtype=torch.int32)
        BLOCK_R = block(N, _ROW_CAP)
        wrap_triton(_centered_stats_kernel)[(B * H,)](p, g, s, diff, arg, N, ACC=ACC, BLOCK_R=BLOCK_R)
    if not one:
        gkp = memory.new_empty((B, H, C, W), dtype=acc)
        dssp = memory.new_empty((B, H, C), dtype=acc)
        gbp = memory.new_empty((B, H, C), dtype=acc)
    wrap_triton(_content_bwd_kernel)[(B, C)](
        memory, keys, beta, p if p is not None else memory, g if g is not None else memory, s, diff, arg,
        dsim if given else memory, gm, gk, gb if gb is not None else memory, gkp, dssp, gbp, H, N, W, C,
        EPS=eps, COSINE=cosine, DSIM_GIVEN=given, ONE_CHUNK=one, ACC=ACC, BLOCK_N=BLOCK_N,
        BLOCK_W=BLOCK_W)
    if not one:
        wrap_triton(_content_finish_kernel)[(B * H,)](
            keys, gkp, dssp, gbp, gk, gb if gb is not None else memory, W, C, EPS=eps, COSINE=cosine,
            HAS_GB=not given, ACC=ACC, BLOCK_W=BLOCK_W)
    return gm, gk, gb


# ------------------------------------------------------------------------------------------------
# ops


@triton_op("memops_triton::content_address", mutates_args=())
def content_address(memory: torch.Tensor, keys: torch.Tensor, beta: torch.Tensor, mask: Optional[torch.Tensor],
                    similarity: str, eps: float) -> torch.Tensor:
    _validate.check("content_address", memory, keys, beta, mask, similarity, eps)
    check_dtype("content_address", memory)
    check_device("content_address", memory)
    memory, keys, beta = memory.contiguous(), keys.contiguous(), beta.contiguous()
    mask = mask.contiguous() if mask is not None else None
    B, N, _ = memory.shape
    H = keys.shape[1]
    out = memory.new_empty((B, H, N))
    if out.numel() and can_launch(out):
        cosine = similarity == "cosine"
        work = _similarity_pass(memory, keys, beta, mask, cosine, float(eps), out=out)
        if work is not None:
            sim, pmax, psum, C = work
            BLOCK_R = block(N, _ROW_CAP)
            wrap_triton(_content_norm_kernel)[(B * H, triton.cdiv(N, BLOCK_R))](
                sim, beta, mask.view(torch.uint8) if mask is not None else memory, pmax, psum, out, H, N, C,
                HAS_MASK=mask is not None, ACC=acc_dtype(memory), BLOCK_R=BLOCK_R, BLOCK_C=block(C, 1 << 30))
    return out


@triton_op("memops_triton::_content_address_backward", mutates_args=())
def content_address_backward(grad: torch.Tensor, memory: torch.Tensor, keys: torch.Tensor, beta: torch.Tensor,
                             mask: Optional[torch.Tensor], weights: torch.Tensor, similarity: str,
                             eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _validate.check("content_address", memory, keys, beta, mask, similarity, eps)
    check_dtype("content_address", memory)
    check_device("content_address", memory)
    B, N, _ = memory.shape
    H = keys.shape[1]
    _validate.output_like("content_address", grad, "grad", (B, H, N), memory)
    _validate.output_like("content_address", weights, "weights", (B, H, N), memory)
    if B * H * N == 0:  # no weights: every gradient is an empty sum
        return torch.zeros_like(memory), torch.zeros_like(keys), torch.zeros_like(beta)
    memory, keys, beta = memory.contiguous(), keys.contiguous(), beta.contiguous()
    grad, weights = grad.contiguous(), weights.contiguous()
    if not can_launch(memory):  # fake tensors under the interpreter: shapes only
        return torch.empty_like(memory), torch.empty_like(keys), torch.empty_like(beta)
    # masked slots have p = 0, so they get no gradient without looking at the mask
    return _memory_grads(memory, keys, beta, similarity == "cosine", float(eps), p=weights, g=grad)


def _setup_context(ctx, inputs, output):
    memory, keys, beta, mask, similarity, eps = inputs
    # the inputs and the output, as csrc/autograd.cpp; the similarities are recomputed in backward
    ctx.save_for_backward(memory, keys, beta, mask, output)
    ctx.similarity = similarity
    ctx.eps = eps


def _backward(ctx, grad):
    memory, keys, beta, mask, out = ctx.saved_tensors
    gm, gk, gb = torch.ops.memops_triton._content_address_backward(grad, memory, keys, beta, mask, out,
                                                                     ctx.similarity, ctx.eps)
    return gm, gk, gb, None, None, None


content_address.register_autograd(_backward, setup_context=_setup_context)

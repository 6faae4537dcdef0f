"""The specification: every memops op in plain PyTorch.

Each function here is the definition its kernels are tested against, forward and every gradient
(the gradients are whatever autograd makes of these lines). They are written to be short and plainly
right, not fast. Shapes: B batch, H heads, N memory slots, W slot width, S shift width (odd).
They do not validate their inputs; `memops.ops` does that before calling them.

Empty dims: any of B, H, N, W of 0 gives an empty result, and gradients of the inputs' shapes (zeros
where a sum runs over nothing: W = 0 in read leaves weights (B, H, N) a zero gradient).

NaN policy (with debug mode off; memops.set_debug rejects non-finite inputs instead): NaN propagates, as
in PyTorch's own ops, and is never replaced. These lines are the rule: a NaN makes NaN every output it
enters, and the kernels of every backend give NaN in the same places. content_address's softmax and
sharpen's normalisation take a whole row, so a NaN in any input of a (b, h) row makes that row NaN: its
key or beta, any slot of its batch row's memory (content_address, ntm_address), its gate, kernel, gamma
or prev_weights (ntm_address), any of its weights or its gamma (sharpen). content_scores, shift, read and
write take no row sum: NaN where a NaN term enters. An Inf that makes the math undefined (inf - inf,
0 * inf, inf / inf) gives NaN the same way. Masked-out slots of content_address and content_scores are
not read: a NaN there reaches nothing.
"""

import torch


def content_address(memory, keys, beta, *, mask=None, similarity="cosine", eps=1e-8):
    """softmax_i(beta[b,h] * sim(keys[b,h], memory[b,i])) -> (B,H,N).

    cosine: k.m / (max(|k|, eps) * max(|m|, eps)), as torch.nn.functional.cosine_similarity;
    dot: k.m. Slots where mask (B,N) is False get weight 0; a row with no slot left is all zeros.
    (Entries past the square root of the dtype's range, ~1.8e19 in float32, overflow |k|^2 here; the
    kernels rescale such vectors and give the cosine this computes in float64.)
    """
    if similarity == "cosine":
        k_norm = keys.norm(dim=-1).clamp_min(eps)  # (B,H)
        m_norm = memory.norm(dim=-1).clamp_min(eps)  # (B,N)
        sim = (keys @ memory.transpose(1, 2)) / (k_norm[:, :, None] * m_norm[:, None, :])
    else:
        sim = keys @ memory.transpose(1, 2)
    logits = beta[:, :, None] * sim  # (B,H,N)
    if mask is None:
        return torch.softmax(logits, dim=-1)
    keep = mask[:, None, :]  # (B,1,N)
    # masked slots get -inf; a row with no slot left gets finite logits and is zeroed by `* keep`
    logits = logits.masked_fill(~keep, float("-inf")).masked_fill(~keep.any(-1, keepdim=True), 0.0)
    return torch.softmax(logits, dim=-1) * keep


def content_scores(memory, keys, beta, *, mask=None, similarity="dot", eps=1e-8):
    """beta[b,h] * sim(keys[b,h], memory[b,i]) -> (B,H,N): content_address without the softmax (the
    linear start of memory networks). Slots where mask (B,N) is False are exactly 0."""
    if similarity == "cosine":
        k_norm = keys.norm(dim=-1).clamp_min(eps)  # (B,H)
        m_norm = memory.norm(dim=-1).clamp_min(eps)  # (B,N)
        sim = (keys @ memory.transpose(1, 2)) / (k_norm[:, :, None] * m_norm[:, None, :])
    else:
        sim = keys @ memory.transpose(1, 2)
    scores = beta[:, :, None] * sim
    return scores if mask is None else scores.masked_fill(~mask[:, None, :], 0.0)


def shift(weights, kernel):
    """Circular convolution: out[i] = sum_j weights[(i - (j - S//2)) mod N] * kernel[j].

    kernel[S//2] keeps the focus in place; kernel[S//2 + 1] moves it one slot forward.
    """
    S = kernel.shape[-1]
    out = torch.zeros_like(weights)
    for j in range(S):
        out = out + torch.roll(weights, shifts=j - S // 2, dims=-1) * kernel[..., j : j + 1]
    return out


def sharpen(weights, gamma):
    """w^gamma / sum_i w_i^gamma over the last dim, from w / max(w) so no power under- or overflows.

    A row of all zeros returns zeros (and zero gradients); a NaN in a row's weights or gamma makes it NaN.
    """
    # max(w, 0): the same where it is > 0, and defined for N = 0; NaN if the row holds a NaN
    w_max = torch.nn.functional.pad(weights, (0, 1)).amax(dim=-1, keepdim=True)
    u = (weights / torch.where(w_max > 0, w_max, 1.0)) ** gamma[:, :, None]
    total = u.sum(dim=-1, keepdim=True)  # >= 1 (u = 1 at the max), 0 for a row of zeros, or NaN
    return torch.where(total == 0, 0.0, u / torch.where(total == 0, 1.0, total))


def ntm_address(memory, keys, beta, gate, kernel, gamma, prev_weights, *, eps=1e-8):
    """NTM addressing: cosine content -> interpolate with prev_weights by gate -> shift -> sharpen."""
    content = content_address(memory, keys, beta, similarity="cosine", eps=eps)
    g = gate[:, :, None]
    gated = g * content + (1 - g) * prev_weights
    return sharpen(shift(gated, kernel), gamma)


def read(memory, weights):
    """r[b,h] = sum_i weights[b,h,i] * memory[b,i] -> (B,H,W)."""
    return weights @ memory


def write(memory, weights, erase, add):
    """memory * prod_h (1 - w_h (x) e_h) + sum_h w_h (x) a_h -> (B,N,W); erase=None means e = 1."""
    w = weights[:, :, :, None]  # (B,H,N,1)
    e = 1.0 if erase is None else erase[:, :, None, :]  # (B,H,1,W)
    keep = torch.prod(1 - w * e, dim=1)  # (B,N,W) or (B,N,1)
    return memory * keep + (w * add[:, :, None, :]).sum(dim=1)


def attention_gru(xr, xh, ur, uh, bu, gates, h0, *, mask=None):
    """DMN+'s attention GRU over facts i = 0..F-1 -> every state h_i (B,F,D), from h_{-1} = h0:

    r_i = sigmoid(xr_i + ur h_{i-1}),  c_i = tanh(xh_i + r_i * (uh h_{i-1} + bu)),
    h_i = g_i c_i + (1 - g_i) h_{i-1};  a fact where mask (B,F) is False leaves h unchanged.
    """
    h = h0
    states = []
    for i in range(xr.shape[1]):
        r = torch.sigmoid(xr[:, i] + h @ ur.T)
        c = torch.tanh(xh[:, i] + r * (h @ uh.T + bu))
        g = gates[:, i, None]
        new = g * c + (1 - g) * h
        h = new if mask is None else torch.where(mask[:, i, None], new, h)
        states.append(h)
    return torch.stack(states, dim=1) if states else h0[:, None, :][:, :0]  # F = 0: (B, 0, D)


__all__ = ["content_address", "content_scores", "shift", "sharpen", "ntm_address", "read", "write", "attention_gru"]

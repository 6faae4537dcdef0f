// Row-level addressing math, written once for the CPU kernels and for a CUDA thread that owns a row.
//
// Every function works on one (b, h) row: N weights, the N x W memory of batch b (row-major, slot
// stride W), one key of W. `T` is the storage type of tensors read from the user; `A` is the working
// precision (float for float and half storage, double for double). Scratch and output rows are A.
// The functions are serial on purpose: the CPU parallelises over rows, and a CUDA kernel can give a
// row to a thread (small N) or replace a loop by a block reduction using the same per-element formulas.
#pragma once

#include "common.h"

namespace memops {
namespace math {

// ---------------------------------------------------------------------------------------------------
// Content similarity. cosine: sim_i = k.m_i / (|k|' |m_i|'), with |x|' = max(|x|, eps) as in
// torch.nn.functional.cosine_similarity; dot: sim_i = k.m_i.
//
// The slot norms |m_i|' are the same for every head, so they are computed once per batch row
// (slot_norms) and passed in; the loops that use them run over slots and vectorise. Vectors with
// entries past the square root of A's range (~1.8e19 in float) would overflow the plain sums: their
// norms and cosines are recomputed from scaled entries (norm_rescaled, cosine_rescaled in common.h),
// so large finite values give the right cosine.

// norm[i]: the sum of squares of slot i on entry, max(|m_i|, eps) on return.
template <typename T, typename A>
MEMOPS_HD void clamp_slot_norms(const T* mem, int64_t N, int64_t W, A eps, A* norm) {
  int overflow = 0;  // (a flag reduction, so the hot loop stays branch-free and vectorises)
  for (int64_t i = 0; i < N; ++i) {
    norm[i] = clamp_norm(sqrt(norm[i]), eps);
    overflow |= norm[i] == A(INFINITY);
  }
  if (!overflow) return;
  for (int64_t i = 0; i < N; ++i) {
    if (norm[i] == A(INFINITY)) norm[i] = clamp_norm(norm_rescaled<T, A>(mem + i * W, W), eps);
  }
}

// norm[i] = max(|m_i|, eps) for the N slots of one batch row.
template <typename T, typename A>
MEMOPS_HD void slot_norms(const T* mem, int64_t N, int64_t W, A eps, A* norm) {
  sumsq_rows(mem, N, W, norm);
  clamp_slot_norms(mem, N, W, eps, norm);
}

// d max(|x|, eps) / d|x| from the clamped norm: 1 where |x| > eps, 0 where eps was used instead.
template <typename A>
MEMOPS_HD A norm_is_live(A clamped, A eps) {
  return clamped > eps ? A(1) : A(0);
}

// Writes sim[0..N) and returns the key's |k|' (1 for dot). Cosine: slot_norm holds the slot norms
// from slot_norms, or is computed here in the same sweep as the dot products (one read of memory
// instead of two, for a single head) when `norms_here` is set.
template <typename T, typename A>
MEMOPS_HD A similarity_row(const T* mem, const T* key, A* slot_norm, bool norms_here, int64_t N,
                           int64_t W, bool cosine, A eps, A* sim) {
  if (!cosine) {
    dot_rows(mem, N, W, key, sim);
    return A(1);
  }
  if (norms_here) {
    dot_sumsq_rows(mem, N, W, key, sim, slot_norm);
    clamp_slot_norms(mem, N, W, eps, slot_norm);
  } else {
    dot_rows(mem, N, W, key, sim);
  }
  A kk = A(0);
  MEMOPS_SIMD_SUM(kk)
  for (int64_t c = 0; c < W; ++c) kk += A(key[c]) * A(key[c]);
  const A key_norm = clamp_norm(norm_of(key, W, kk), eps);
  int bad = 0;  // (a flag reduction: the hot loop stays branch-free)
  for (int64_t i = 0; i < N; ++i) {
    const A den = key_norm * slot_norm[i];
    sim[i] /= den;
    bad |= !(is_finite(sim[i]) & is_finite(den));
  }
  if (!bad) return key_norm;
  // where k.m_i or the denominator overflowed (or an input is not finite), from k / |k|' and m_i / |m_i|'
  for (int64_t i = 0; i < N; ++i) {
    if (!is_finite(sim[i]) || !is_finite(key_norm * slot_norm[i])) {
      sim[i] = cosine_rescaled(key, key_norm, mem + i * W, slot_norm[i], W);
    }
  }
  return key_norm;
}

// ---------------------------------------------------------------------------------------------------
// Softmax over the slots where keep[i] (keep == nullptr: all slots), in place: x holds logits on
// entry and weights on return. Masked slots get exactly 0; a row with no slot kept is all zeros.
template <typename A>
MEMOPS_HD void masked_softmax_row(A* x, const bool* keep, int64_t N) {
  bool any = false;
  A mx = A(0);
  for (int64_t i = 0; i < N; ++i) {
    if (keep && !keep[i]) continue;
    mx = any ? max_of(mx, x[i]) : x[i];
    any = true;
  }
  if (keep) {
    for (int64_t i = 0; i < N; ++i) x[i] = keep[i] ? exp_nonpositive(x[i] - mx) : A(0);
  } else {
    for (int64_t i = 0; i < N; ++i) x[i] = exp_nonpositive(x[i] - mx);
  }
  Sum<A> total = 0;
  MEMOPS_SIMD_SUM(total)
  for (int64_t i = 0; i < N; ++i) total += x[i];
  const A inv = any ? A(1 / total) : A(0);
  for (int64_t i = 0; i < N; ++i) x[i] *= inv;
}

// g_i - sum_j p_j g_j for a probability row p (sum p = 1) is g_i - s. Where one slot holds nearly
// all the mass, p_max = 1 - d with d far below float's resolution near 1, and the plain g_max - s
// loses most digits; the largest slot's difference is taken as
// g_max (sum_{i != max} p_i) - sum_{i != max} p_i g_i instead (`arg_diff`), with sums that leave
// the max out (taking it off the full sums would not do: d can be below double's resolution too).
template <typename A>
struct CenteredGrad {
  int64_t arg = 0;
  Sum<A> s = 0, arg_diff = 0, total = 0;  // total: sum_i p_i

  template <typename TP, typename TG>
  MEMOPS_HD CenteredGrad(const TP* p, const TG* g, int64_t N) {
    if (N == 0) return;
    for (int64_t i = 1; i < N; ++i) {
      if (A(p[i]) > A(p[arg])) arg = i;
    }
    Sum<A> rest = 0, t = 0;  // over i != arg, in two runs so the loops stay simple
    MEMOPS_SIMD_SUM(rest, t)
    for (int64_t i = 0; i < arg; ++i) {
      rest += Sum<A>(p[i]);
      t += Sum<A>(p[i]) * Sum<A>(g[i]);
    }
    MEMOPS_SIMD_SUM(rest, t)
    for (int64_t i = arg + 1; i < N; ++i) {
      rest += Sum<A>(p[i]);
      t += Sum<A>(p[i]) * Sum<A>(g[i]);
    }
    const Sum<A> g_arg = Sum<A>(g[arg]);
    s = t + Sum<A>(p[arg]) * g_arg;
    arg_diff = g_arg * rest - t;
    total = rest + Sum<A>(p[arg]);
  }
};

// d loss / d logits of a softmax, from its output p and the incoming gradient g:
// p_i (g_i - sum_j p_j g_j). Masked slots have p_i = 0, so they get 0 with no special case.
template <typename T, typename A>
MEMOPS_HD void softmax_backward_row(const A* p, const T* g, int64_t N, A* grad_logits) {
  const CenteredGrad<A> c(p, g, N);
  for (int64_t i = 0; i < N; ++i) grad_logits[i] = p[i] * A(Sum<A>(g[i]) - c.s);
  if (N > 0) grad_logits[c.arg] = p[c.arg] * A(c.arg_diff);
}

// d loss / d key from d loss / d sim (dsim) of one row.
//   cosine: d sim_i / d k = m_i / (|k|' |m_i|') - sim_i k live_k / |k|'^2
//           (live_k = 1 where |k| > eps, else 0: the clamp has no gradient)
//   dot:    d sim_i / d k = m_i
// A second pass over memory: the first (similarity_row) had to finish before dsim was known.
template <typename T, typename A>
MEMOPS_HD void key_grad_row(const T* mem, const T* key, const A* slot_norm, int64_t N, int64_t W,
                            bool cosine, A eps, A key_norm, const A* sim, const A* dsim, A* grad_key) {
  for (int64_t c = 0; c < W; ++c) grad_key[c] = A(0);
  if (cosine) {
    const A inv_key_norm = A(1) / key_norm;
    axpy_rows(mem, N, W, [&](int64_t i) { return dsim[i] * inv_key_norm / slot_norm[i]; }, grad_key);
  } else {
    axpy_rows(mem, N, W, [&](int64_t i) { return dsim[i]; }, grad_key);
  }
  if (cosine) {
    Sum<A> dsim_sim = 0;
    MEMOPS_SIMD_SUM(dsim_sim)
    for (int64_t i = 0; i < N; ++i) dsim_sim += dsim[i] * sim[i];
    // (divided twice: |k|^2 may overflow)
    const A k_coef = norm_is_live(key_norm, eps) * A(dsim_sim) / key_norm / key_norm;
    for (int64_t c = 0; c < W; ++c) grad_key[c] -= k_coef * A(key[c]);
  }
}

// d loss / d m_i for n consecutive memory slots of one batch row, summed over the H heads:
//   cosine: sum_h dsim_hi [k_h / (|k_h|' |m_i|') - sim_hi m_i live_i / |m_i|'^2]
//   dot:    sum_h dsim_hi k_h
// mem, grad_m: the n slots' rows; keys: H x W; sim, dsim: the slots' column of an (H, N) block
// (offset to the first slot, head stride N); key_norm: H values; slot_norm: the n slots' |m_i|'.
// The per-slot coefficients go to `scratch` (2 n values) first, in loops that vectorise; then head 0
// and the cosine's own-slot term are written in one sweep, and the other heads added on.
template <typename T, typename A>
MEMOPS_HD void memory_grad_slots(const T* mem, const T* keys, int64_t n, int64_t H, int64_t N,
                                 int64_t W, bool cosine, A eps, const A* key_norm, const A* slot_norm,
                                 const A* sim, const A* dsim, A* grad_m, A* scratch) {
  if (H == 0) {
    for (int64_t i = 0; i < n * W; ++i) grad_m[i] = A(0);
    return;
  }
  A* head = scratch;      // head h's coefficient of k_h, per slot
  A* self = scratch + n;  // the coefficient of m_i itself (cosine)
  auto head_coefs = [&](int64_t h) {
    const A* d = dsim + h * N;
    if (cosine) {
      const A inv_key_norm = A(1) / key_norm[h];
      for (int64_t i = 0; i < n; ++i) head[i] = d[i] * inv_key_norm / slot_norm[i];
    } else {
      for (int64_t i = 0; i < n; ++i) head[i] = d[i];
    }
  };
  head_coefs(0);
  if (cosine) {
    for (int64_t i = 0; i < n; ++i) self[i] = A(0);
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t i = 0; i < n; ++i) self[i] -= dsim[h * N + i] * sim[h * N + i];
    }
    for (int64_t i = 0; i < n; ++i) {
      self[i] *= norm_is_live(slot_norm[i], eps) / slot_norm[i] / slot_norm[i];
    }
    axpby_rows(mem, n, W, [&](int64_t i) { return head[i]; }, keys, [&](int64_t i) { return self[i]; },
               grad_m);
  } else {
    outer_rows(n, W, [&](int64_t i) { return head[i]; }, keys, grad_m, false);
  }
  for (int64_t h = 1; h < H; ++h) {
    head_coefs(h);
    outer_rows(n, W, [&](int64_t i) { return head[i]; }, keys + h * W, grad_m, true);
  }
}

// ---------------------------------------------------------------------------------------------------
// Circular shift. For tap j the offset is d_j = shift_offset(j), and out[i] += kernel[j] w[i - d_j],
// taken in two straight segments (i < d_j wraps around) so the inner loops have no modulo.
template <typename T, typename A>
MEMOPS_HD void shift_row(const T* w, const T* kernel, int64_t N, int64_t S, A* __restrict__ out) {
  if (N == 0) return;  // nothing to shift (and no offsets mod 0)
  for (int64_t i = 0; i < N; ++i) out[i] = A(0);
  for (int64_t j = 0; j < S; ++j) {
    const int64_t d = shift_offset(j, S, N);
    const A k = A(kernel[j]);
    for (int64_t i = 0; i < d; ++i) out[i] += k * A(w[i - d + N]);
    for (int64_t i = d; i < N; ++i) out[i] += k * A(w[i - d]);
  }
}

// Backward of shift_row: grad_w[s] = sum_j kernel[j] g[s + d_j], grad_kernel[j] = sum_i g[i] w[i - d_j].
// (The grad_kernel sums stay in A: they are over one row, like the forward's, and vectorise.)
template <typename T, typename TG, typename A>
MEMOPS_HD void shift_backward_row(const TG* g, const T* w, const T* kernel, int64_t N, int64_t S,
                                  A* __restrict__ grad_w, A* __restrict__ grad_kernel) {
  if (N == 0) {  // grad_kernel sums over no slots
    for (int64_t j = 0; j < S; ++j) grad_kernel[j] = A(0);
    return;
  }
  for (int64_t i = 0; i < N; ++i) grad_w[i] = A(0);
  for (int64_t j = 0; j < S; ++j) {
    const int64_t d = shift_offset(j, S, N);
    const A k = A(kernel[j]);
    for (int64_t i = 0; i < d; ++i) grad_w[i - d + N] += k * A(g[i]);
    for (int64_t i = d; i < N; ++i) grad_w[i - d] += k * A(g[i]);
    A gk = A(0);
    MEMOPS_SIMD_SUM(gk)
    for (int64_t i = 0; i < d; ++i) gk += A(g[i]) * A(w[i - d + N]);
    MEMOPS_SIMD_SUM(gk)
    for (int64_t i = d; i < N; ++i) gk += A(g[i]) * A(w[i - d]);
    grad_kernel[j] = gk;
  }
}

// ---------------------------------------------------------------------------------------------------
// Sharpen: out_i = w_i^g / sum_j w_j^g, computed as u_i = (w_i / max w)^g, out_i = u_i / sum u. The
// ratio is unchanged and nothing under- or overflows on the way: u at the maximum is exactly 1 (so
// gamma = inf gives the one-hot limit), and sum u is in [1, N]. (The usual `w^g / (sum w^g + eps)` is
// badly off once sum w^g is near eps.) A row of all zeros gives zeros (its sum u is 0); a NaN in w or
// gamma gives a NaN sum, so a NaN row, as the reference. Weights must be >= 0 and gamma >= 1 (the
// contract).
//
// kPolyPow: the power as pow_unit's polynomials, which vectorise (worth it with 8 or more lanes and
// FMA: 2-4x faster than libm's powf; with SSE2's 4 lanes slower), else pow.
template <bool kPolyPow = false, typename T, typename A>
MEMOPS_HD void sharpen_row(const T* w, A gamma, int64_t N, A* out) {
  A w_max = A(0);
  for (int64_t i = 0; i < N; ++i) w_max = max_of(w_max, A(w[i]));
  const A scale = w_max > A(0) ? w_max : A(1), inv_max = A(1) / scale;  // a row of zeros: not scaled
  const A at_max = ratio_to_max(scale, scale, inv_max);  // (hoisted: with it in the loop, no vectors)
  if (kPolyPow && !(gamma <= A(0))) {  // pow_unit's domain: the contract's gamma >= 1 (and NaN)
    for (int64_t i = 0; i < N; ++i) out[i] = pow_unit(A(w[i]) == scale ? at_max : A(w[i]) * inv_max, gamma);
  } else {
    for (int64_t i = 0; i < N; ++i) out[i] = pow(ratio_to_max(A(w[i]), scale, inv_max), gamma);
  }
  Sum<A> total = 0;
  MEMOPS_SIMD_SUM(total)
  for (int64_t i = 0; i < N; ++i) total += out[i];
  const A inv_total = total == 0 ? A(0) : A(1 / total);
  for (int64_t i = 0; i < N; ++i) out[i] *= inv_total;
}

// Backward of sharpen_row, from the input w, the output p and the incoming gradient g. With
// s = sum_i g_i p_i and L_i = log(w_i / max w) (the max cancels: sum_i p_i = 1):
//   d loss / d w_j   = gamma (p_j / w_j) (g_j - s)
//   d loss / d gamma = sum_i g_i p_i L_i - s sum_i p_i L_i = sum_i p_i L_i (g_i - s)
// p_j / w_j needs no power where w_j > 0. At w_j = 0 it is its limit (w_j/max)^(gamma-1) / (max sum u):
// 0 for gamma > 1, and 1 / sum w at gamma = 1, where sum u = 1 / p[argmax] (u = 1 at the maximum).
// p_i L_i is 0 where w_i = 0 (its limit). g_j - s: see CenteredGrad. Where the forward gave zeros (a
// row of zeros: sum p = 0) the gradients are zero; a NaN row (p NaN) gets NaN gradients.
// (Where p_j underflows while w_j does not, p_j / w_j loses relative precision, but the gradient
// there is below ~1e-36 in float, so its absolute error is nil.)
template <typename T, typename TG, typename A>
MEMOPS_HD void sharpen_backward_row(const TG* g, const T* w, A gamma, const T* p, int64_t N,
                                    A* grad_w, A* grad_gamma) {
  const CenteredGrad<A> c(p, g, N);  // c.arg: p's largest slot, which is w's
  if (c.total == 0) {
    for (int64_t i = 0; i < N; ++i) grad_w[i] = A(0);
    *grad_gamma = A(0);
    return;
  }
  A w_max = A(0);
  for (int64_t i = 0; i < N; ++i) w_max = max_of(w_max, A(w[i]));
  const A inv_max = w_max > A(0) ? A(1) / w_max : A(1);  // as the forward's
  Sum<A> gg = 0;  // sum_i p_i L_i (g_i - s), the form of the gamma gradient with no cancellation
  MEMOPS_SIMD_SUM(gg)
  for (int64_t i = 0; i < N; ++i) {
    // (at the maximum L = 0, so g - s needs no care there; a NaN w takes part)
    const A term = A(p[i]) * log_nonnegative(A(w[i]) * inv_max) * A(Sum<A>(g[i]) - c.s);
    gg += !(A(w[i]) <= A(0)) ? term : A(0);
  }
  *grad_gamma = A(gg);
  const A ratio_at_zero = pow(A(0), gamma - A(1)) * A(p[c.arg]) * inv_max;
  for (int64_t i = 0; i < N; ++i) {
    const A ratio = A(w[i]) > A(0) ? A(p[i]) / A(w[i]) : ratio_at_zero;
    grad_w[i] = gamma * ratio * A(Sum<A>(g[i]) - c.s);
  }
  grad_w[c.arg] = gamma * (A(p[c.arg]) / A(w[c.arg])) * A(c.arg_diff);  // p's max: w > 0 there
}

}  // namespace math
}  // namespace memops

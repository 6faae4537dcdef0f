// Row-level addressing math, written once for the CPU kernels and for a CUDA thread that owns a row.
//
// Every function works on one (b, h) row: N weights, the N x W memory of batch b (row-major, slot
// stride W), one key of W. `T` is the storage type of tensors read from the user; `A` is the working
// precision (float for float and half storage, double for double). Scratch and output rows are A.
// The functions are serial on purpose: the CPU parallelises over rows, and a CUDA kernel can give a
// row to a thread (small N) or replace a loop by a block reduction using the same per-element formulas.
#pragma once

#include "common.h"

#if defined(_OPENMP) && !defined(__CUDACC__)
#define MEMOPS_PRAGMA(x) _Pragma(#x)
// Lets the compiler vectorise a float reduction (it reorders the sum, deterministically).
#define MEMOPS_SIMD_SUM(...) MEMOPS_PRAGMA(omp simd reduction(+ : __VA_ARGS__))
#else
#define MEMOPS_SIMD_SUM(...)
#endif

namespace memops {
namespace math {

// ---------------------------------------------------------------------------------------------------
// Content similarity. cosine: sim_i = k.m_i / (max(|k|, eps) max(|m_i|, eps)); dot: sim_i = k.m_i.
// Writes sim[0..N) and returns max(|k|, eps) (1 for dot), which the backward needs again.
template <typename T, typename A>
MEMOPS_HD A similarity_row(const T* mem, const T* key, int64_t N, int64_t W, bool cosine, A eps,
                           A* sim) {
  A key_norm = A(1);
  if (cosine) {
    A kk = A(0);
    MEMOPS_SIMD_SUM(kk)
    for (int64_t c = 0; c < W; ++c) kk += A(key[c]) * A(key[c]);
    key_norm = clamped_norm(kk, eps);
  }
  for (int64_t i = 0; i < N; ++i) {
    const T* m = mem + i * W;
    A dot = A(0), mm = A(0);
    MEMOPS_SIMD_SUM(dot, mm)
    for (int64_t c = 0; c < W; ++c) {
      dot += A(key[c]) * A(m[c]);
      mm += A(m[c]) * A(m[c]);
    }
    sim[i] = cosine ? dot / (key_norm * clamped_norm(mm, eps)) : dot;
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
  A total = A(0);
  for (int64_t i = 0; i < N; ++i) {
    x[i] = (keep && !keep[i]) ? A(0) : exp(x[i] - mx);
    total += x[i];
  }
  A inv = any ? A(1) / total : A(0);
  for (int64_t i = 0; i < N; ++i) x[i] *= inv;
}

// d loss / d logits of a softmax, from its output p and the incoming gradient g:
// p_i (g_i - sum_j p_j g_j). Masked slots have p_i = 0, so they get 0 with no special case.
template <typename T, typename A>
MEMOPS_HD void softmax_backward_row(const A* p, const T* g, int64_t N, A* grad_logits) {
  A pg = A(0);
  MEMOPS_SIMD_SUM(pg)
  for (int64_t i = 0; i < N; ++i) pg += p[i] * A(g[i]);
  for (int64_t i = 0; i < N; ++i) grad_logits[i] = p[i] * (A(g[i]) - pg);
}

// d loss / d key from d loss / d sim (dsim) of one row.
//   cosine: d sim_i / d k = m_i / (|k|' |m_i|') - sim_i k live_k / |k|'^2   (|x|' = max(|x|, eps);
//           live_k = 1 where |k| > eps, else 0: the clamp has no gradient)
//   dot:    d sim_i / d k = m_i
// A second pass over memory: the first (similarity_row) had to finish before dsim was known.
template <typename T, typename A>
MEMOPS_HD void key_grad_row(const T* mem, const T* key, int64_t N, int64_t W, bool cosine, A eps,
                            A key_norm, const A* sim, const A* dsim, A* grad_key) {
  for (int64_t c = 0; c < W; ++c) grad_key[c] = A(0);
  A dsim_sim = A(0);
  for (int64_t i = 0; i < N; ++i) {
    const T* m = mem + i * W;
    A coef = dsim[i];
    if (cosine) {
      A mm = A(0);
      MEMOPS_SIMD_SUM(mm)
      for (int64_t c = 0; c < W; ++c) mm += A(m[c]) * A(m[c]);
      coef /= key_norm * clamped_norm(mm, eps);
      dsim_sim += dsim[i] * sim[i];
    }
    for (int64_t c = 0; c < W; ++c) grad_key[c] += coef * A(m[c]);
  }
  if (cosine) {
    A kk = A(0);
    MEMOPS_SIMD_SUM(kk)
    for (int64_t c = 0; c < W; ++c) kk += A(key[c]) * A(key[c]);
    A k_coef = norm_is_live(kk, eps) * dsim_sim / (key_norm * key_norm);
    for (int64_t c = 0; c < W; ++c) grad_key[c] -= k_coef * A(key[c]);
  }
}

// d loss / d m_i for one memory slot, summed over the H heads that addressed it:
//   cosine: sum_h dsim_hi [k_h / (|k_h|' |m_i|') - sim_hi m_i live_i / |m_i|'^2]
//   dot:    sum_h dsim_hi k_h
// keys: H x W; dsim, sim: strided by `head_stride` (N in a (H, N) block); key_norm: H values.
template <typename T, typename A>
MEMOPS_HD void memory_grad_slot(const T* m, const T* keys, int64_t H, int64_t W, bool cosine, A eps,
                                const A* key_norm, const A* sim, const A* dsim, int64_t head_stride,
                                A* grad_m) {
  for (int64_t c = 0; c < W; ++c) grad_m[c] = A(0);
  A m_norm = A(1), m_live = A(0);
  if (cosine) {
    A mm = A(0);
    MEMOPS_SIMD_SUM(mm)
    for (int64_t c = 0; c < W; ++c) mm += A(m[c]) * A(m[c]);
    m_norm = clamped_norm(mm, eps);
    m_live = norm_is_live(mm, eps);
  }
  A self_coef = A(0);
  for (int64_t h = 0; h < H; ++h) {
    A d = dsim[h * head_stride];
    if (cosine) {
      self_coef += d * sim[h * head_stride];
      d /= key_norm[h] * m_norm;
    }
    const T* k = keys + h * W;
    for (int64_t c = 0; c < W; ++c) grad_m[c] += d * A(k[c]);
  }
  if (cosine) {
    self_coef *= m_live / (m_norm * m_norm);
    for (int64_t c = 0; c < W; ++c) grad_m[c] -= self_coef * A(m[c]);
  }
}

// ---------------------------------------------------------------------------------------------------
// Circular shift. For tap j the offset is d_j = (j - S/2) mod N, and out[i] += kernel[j] w[i - d_j],
// taken in two straight segments (i < d_j wraps around) so the inner loops have no modulo.
template <typename T, typename A>
MEMOPS_HD void shift_row(const T* w, const T* kernel, int64_t N, int64_t S, A* out) {
  for (int64_t i = 0; i < N; ++i) out[i] = A(0);
  for (int64_t j = 0; j < S; ++j) {
    const int64_t d = wrap_index(j - S / 2, N);
    const A k = A(kernel[j]);
    for (int64_t i = 0; i < d; ++i) out[i] += k * A(w[i - d + N]);
    for (int64_t i = d; i < N; ++i) out[i] += k * A(w[i - d]);
  }
}

// Backward of shift_row: grad_w[s] = sum_j kernel[j] g[s + d_j], grad_kernel[j] = sum_i g[i] w[i - d_j].
template <typename T, typename TG, typename A>
MEMOPS_HD void shift_backward_row(const TG* g, const T* w, const T* kernel, int64_t N, int64_t S,
                                  A* grad_w, A* grad_kernel) {
  for (int64_t i = 0; i < N; ++i) grad_w[i] = A(0);
  for (int64_t j = 0; j < S; ++j) {
    const int64_t d = wrap_index(j - S / 2, N);
    const A k = A(kernel[j]);
    A gk = A(0);
    for (int64_t i = 0; i < d; ++i) {
      grad_w[i - d + N] += k * A(g[i]);
      gk += A(g[i]) * A(w[i - d + N]);
    }
    for (int64_t i = d; i < N; ++i) {
      grad_w[i - d] += k * A(g[i]);
      gk += A(g[i]) * A(w[i - d]);
    }
    grad_kernel[j] = gk;
  }
}

// ---------------------------------------------------------------------------------------------------
// Sharpen: out_i = w_i^g / sum_j w_j^g, computed as u_i = (w_i / max w)^g, out_i = u_i / sum u. The
// ratio is unchanged and nothing under- or overflows on the way: u at the maximum is exactly 1, so
// sum u is in [1, N]. (The usual `w^g / (sum w^g + eps)` is badly off once sum w^g is near eps.)
// A row of all zeros gives zeros. Weights must be >= 0 and gamma >= 1 (the contract).
template <typename T, typename A>
MEMOPS_HD void sharpen_row(const T* w, A gamma, int64_t N, A* out) {
  A w_max = A(0);
  for (int64_t i = 0; i < N; ++i) w_max = max_of(w_max, A(w[i]));
  if (!(w_max > A(0))) {
    for (int64_t i = 0; i < N; ++i) out[i] = A(0);
    return;
  }
  const A inv_max = A(1) / w_max;
  A total = A(0);
  for (int64_t i = 0; i < N; ++i) {
    out[i] = pow(A(w[i]) * inv_max, gamma);
    total += out[i];
  }
  const A inv_total = A(1) / total;
  for (int64_t i = 0; i < N; ++i) out[i] *= inv_total;
}

// Backward of sharpen_row, from the input w, the output p and the incoming gradient g. With
// s = sum_i g_i p_i and L_i = log(w_i / max w) (the max cancels: sum_i p_i = 1):
//   d loss / d w_j   = gamma (p_j / w_j) (g_j - s),   p_j / w_j = (w_j/max)^(gamma-1) / (max sum u)
//   d loss / d gamma = sum_i g_i p_i L_i - s sum_i p_i L_i
// p_j / w_j is taken in the scale-free form: it is finite at w_j = 0 (0 for gamma > 1; 1/sum w at
// gamma = 1, the limit). p_i L_i is 0 where w_i = 0 (its limit). An all-zero row gets zero gradients.
template <typename T, typename TG, typename A>
MEMOPS_HD void sharpen_backward_row(const TG* g, const T* w, A gamma, const T* p, int64_t N,
                                    A* grad_w, A* grad_gamma) {
  A w_max = A(0);
  for (int64_t i = 0; i < N; ++i) w_max = max_of(w_max, A(w[i]));
  if (!(w_max > A(0))) {
    for (int64_t i = 0; i < N; ++i) grad_w[i] = A(0);
    *grad_gamma = A(0);
    return;
  }
  const A inv_max = A(1) / w_max;
  A total = A(0), s = A(0), gpl = A(0), pl = A(0);
  for (int64_t i = 0; i < N; ++i) {
    const A x = A(w[i]) * inv_max;
    total += pow(x, gamma);
    const A gp = A(g[i]) * A(p[i]);
    s += gp;
    if (x > A(0)) {
      const A L = log(x);
      gpl += gp * L;
      pl += A(p[i]) * L;
    }
  }
  *grad_gamma = gpl - s * pl;
  const A scale = gamma * inv_max / total;
  for (int64_t i = 0; i < N; ++i) {
    grad_w[i] = scale * pow(A(w[i]) * inv_max, gamma - A(1)) * (A(g[i]) - s);
  }
}

}  // namespace math
}  // namespace memops

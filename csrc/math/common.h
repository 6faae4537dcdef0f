// Host-device building blocks shared by the CPU and CUDA kernels. No ATen, no allocation: plain
// scalars and raw pointers, so nvcc can compile every function for the device as it is.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define MEMOPS_HD __host__ __device__ __forceinline__
#else
#define MEMOPS_HD inline
#endif

#if defined(_OPENMP) && !defined(__CUDACC__)
#define MEMOPS_PRAGMA(x) _Pragma(#x)
// Lets the compiler vectorise a float reduction (it reorders the sum, deterministically).
#define MEMOPS_SIMD_SUM(...) MEMOPS_PRAGMA(omp simd reduction(+ : __VA_ARGS__))
#else
#define MEMOPS_SIMD_SUM(...)
#endif

namespace memops {
namespace math {

// Unqualified exp/log/pow/sqrt below pick the float overloads for float (not a detour via double).
using std::exp;
using std::log;
using std::pow;
using std::sqrt;

// i mod n in [0, n) for any integer i (negative, or |i| > n when the shift is wider than memory).
MEMOPS_HD int64_t wrap_index(int64_t i, int64_t n) {
  int64_t r = i % n;
  return r < 0 ? r + n : r;
}

// The shift convention: out[i] = sum_j w[(i - (j - S/2)) mod N] * kernel[j], i.e. tap j moves the
// weighting forward by shift_offset(j) slots. kernel[S/2] keeps the focus where it is, kernel[S/2 + 1]
// moves it one slot forward (out[i] takes w[i - 1]). S > N wraps. N must be > 0 (callers skip N = 0).
MEMOPS_HD int64_t shift_offset(int64_t j, int64_t S, int64_t N) {
  return wrap_index(j - S / 2, N);
}

// The larger of a and b, NaN if either is NaN (as torch.max: a maximum never hides a NaN).
template <typename A>
MEMOPS_HD A max_of(A a, A b) {
  return (a > b || a != a) ? a : b;
}

// Whether x is a number and not infinite (x - x is NaN for inf and NaN), host and device alike.
template <typename A>
MEMOPS_HD bool is_finite(A x) {
  return x - x == A(0);
}

// w / w_max as w * inv_max (inv_max = 1 / w_max: no division per element), and exactly 1 at the
// maximum, so that sharpen's (w / max)^gamma is 1 there for any gamma (inf gives the one-hot limit);
// inf / inf stays NaN.
template <typename A>
MEMOPS_HD A ratio_to_max(A w, A w_max, A inv_max) {
  return w == w_max ? (is_finite(w_max) ? A(1) : w_max - w_max) : w * inv_max;
}

// Cosine denominators as torch.nn.functional.cosine_similarity: max(n, eps) of a norm n (NaN stays NaN).
template <typename A>
MEMOPS_HD A clamp_norm(A n, A eps) {
  return n < eps ? eps : n;
}

// |x| of a W-vector from x / s, s = max_c |x_c|: s sqrt(sum_c (x_c / s)^2), which overflows only where
// |x| itself does. For the vectors whose plain sum of squares overflowed (an entry past the square root
// of A's range: ~1.8e19 in float): every caller takes the plain sqrt(sum_c x_c^2) first (one sweep, and
// the norm the reference computes) and comes here where that is inf. An inf entry gives inf.
template <typename T, typename A>
MEMOPS_HD A norm_rescaled(const T* x, int64_t W) {
  A s = A(0);
  for (int64_t c = 0; c < W; ++c) s = max_of(s, A(x[c]) < A(0) ? -A(x[c]) : A(x[c]));
  if (!(s > A(0)) || !is_finite(s)) return s;  // zeros (not reached: the sum overflowed), inf, NaN
  A q = A(0);
  for (int64_t c = 0; c < W; ++c) {
    const A y = A(x[c]) / s;
    q += y * y;
  }
  return s * sqrt(q);
}

// |x| from its plain sum of squares `sumsq`, rescaled where that overflowed (norm_rescaled).
template <typename T, typename A>
MEMOPS_HD A norm_of(const T* x, int64_t W, A sumsq) {
  return sumsq == A(INFINITY) ? norm_rescaled<T, A>(x, W) : sqrt(sumsq);
}

// The cosine k.m / (kn mn) of a W-wide pair, kn >= |k| and mn >= |m| (the clamped norms), as
// sum_c (k_c / kn) (m_c / mn): every factor is at most 1 in size, so nothing overflows where the plain
// k.m or kn mn did. For the pairs whose plain quotient came out non-finite.
template <typename TK, typename TM, typename A>
MEMOPS_HD A cosine_rescaled(const TK* k, A kn, const TM* m, A mn, int64_t W) {
  A d = A(0);
  for (int64_t c = 0; c < W; ++c) d += (A(k[c]) / kn) * (A(m[c]) / mn);
  return d;
}

// exp(x) for x <= 0, the arguments of a softmax after its max is taken off. On the host, for float:
// Cody-Waite reduction x = n ln2 + r and Cephes' degree-6 polynomial for e^r, branch-free so a loop
// over it vectorises (a call to libm's expf does not; this is 3x faster), within 1 ulp (max relative
// error 7.7e-8 over [-88, 0]). Below -87.34, where e^x falls under FLT_MIN, it gives 0; NaN gives
// NaN. Needs -fno-trapping-math to vectorise. Device code and double call exp.
template <typename A>
MEMOPS_HD A exp_nonpositive(A x) {
#if defined(__CUDA_ARCH__)
  return exp(x);
#else
  if constexpr (std::is_same<A, float>::value) {
    const float lo = -87.33654475f;
    const float xc = x >= lo ? x : lo;  // (NaN -> lo: no float-to-int conversion of a NaN below)
    const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x log2 e)
    float r = xc - n * 0.693359375f;  // x - n ln2, ln2 in two parts
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n, n in [-126, 0]
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return x >= lo ? p * scale : (x < lo ? 0.0f : x);  // NaN stays NaN
  } else {
    return exp(x);
  }
#endif
}

// log(x) for x >= 0. On the host, for float: x = 2^e m with m in [sqrt(1/2), sqrt(2)) (from the bits;
// subnormals scaled by 2^23 first) and Cephes' degree-9 polynomial in m - 1, branch-free so a loop
// over it vectorises, within about 1 ulp of the exact log (tests/ops/test_cpu_capability.py checks
// it, through sharpen, against float64). log(1) is exactly 0, log(0) is -inf, log(inf) is inf, and
// NaN or a negative x gives NaN. Device code and double call log.
template <typename A>
MEMOPS_HD A log_nonnegative(A x) {
#if defined(__CUDA_ARCH__)
  return log(x);
#else
  if constexpr (std::is_same<A, float>::value) {
    const bool tiny = x < 1.17549435e-38f;  // subnormal (or 0): scale into the normal range
    const float xs = tiny ? x * 8388608.0f : x;
    int32_t bits;
    std::memcpy(&bits, &xs, sizeof bits);
    float e = float(((bits >> 23) & 0xff) - 126) - (tiny ? 23.0f : 0.0f);
    bits = (bits & 0x007fffff) | 0x3f000000;  // the mantissa m in [0.5, 1)
    float m;
    std::memcpy(&m, &bits, sizeof m);
    const bool low = m < 0.707106781186547524f;  // to [sqrt(1/2), sqrt(2)): 2m, e - 1
    e = low ? e - 1.0f : e;
    const float f = (low ? m + m : m) - 1.0f;
    const float z = f * f;
    float y = 7.0376836292e-2f;
    y = y * f - 1.1514610310e-1f;
    y = y * f + 1.1676998740e-1f;
    y = y * f - 1.2420140846e-1f;
    y = y * f + 1.4249322787e-1f;
    y = y * f - 1.6668057665e-1f;
    y = y * f + 2.0000714765e-1f;
    y = y * f - 2.4999993993e-1f;
    y = y * f + 3.3333331174e-1f;
    y = y * f * z;
    y = y + e * -2.12194440e-4f - 0.5f * z;  // e ln2 in two parts, as in exp_nonpositive
    const float r = (f + y) + e * 0.693359375f;
    return x > 0.0f ? (x < INFINITY ? r : x) : (x == 0.0f ? -INFINITY : NAN);  // and NaN for NaN
  } else {
    return log(x);
  }
#endif
}

// x^gamma for x in [0, 1] and gamma > 0 (sharpen's (w / max w)^gamma; the caller takes pow for other
// gamma). On the host, for float: exp(gamma log x) through the vectorisable functions above, exactly
// 1 at x = 1 (also for an infinite or NaN gamma, as pow) and 0 at x = 0. The rounding of
// y = gamma log x carries into e^y: its relative error is up to ~2.3 |y| + 2 ulp (libm's powf: 1),
// but at most ~6e-8 in absolute terms, since e^y |y| <= 1/e, against sharpen's sum of at least 1
// (tests/ops/test_cpu_capability.py). Device code and double call pow.
template <typename A>
MEMOPS_HD A pow_unit(A x, A gamma) {
#if defined(__CUDA_ARCH__)
  return pow(x, gamma);
#else
  if constexpr (std::is_same<A, float>::value) {
    return x == 1.0f ? 1.0f : exp_nonpositive(gamma * log_nonnegative(x));
  } else {
    return pow(x, gamma);
  }
#endif
}

// Sums over the N slots of a row (softmax and sharpen normalisers, their backward dot products,
// the gradients of beta, gate and gamma) run in `Sum<A>`: double on the host whatever
// A is. They feed cancellations such as g_i - sum_j p_j g_j, where a float sum over thousands of
// slots loses three or four digits. A CUDA thread keeps A (double is slow there); CUDA block
// reductions sum in trees, which loses far less.
#if defined(__CUDA_ARCH__)
template <typename A>
using Sum = A;
#else
template <typename A>
using Sum = double;
#endif

// Row primitives over n slots of width W (row i at rows + i * W; outputs never alias inputs). Slot
// widths in these models are small (NTM: 20), too short for one vectorised loop per slot to pay its
// set-up, so they take four slots per sweep over the width. The reduction order is fixed: results
// are deterministic.

// out[i] = rows_i . v, or rows_i . rows_i with kSquares (v unused then)
template <bool kSquares, typename T, typename TV, typename A>
MEMOPS_HD void row_dots(const T* rows, int64_t n, int64_t W, const TV* v, A* __restrict__ out) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const T* r = rows + i * W;
    A d0 = A(0), d1 = A(0), d2 = A(0), d3 = A(0);
    MEMOPS_SIMD_SUM(d0, d1, d2, d3)
    for (int64_t c = 0; c < W; ++c) {
      const A r0 = A(r[c]), r1 = A(r[W + c]), r2 = A(r[2 * W + c]), r3 = A(r[3 * W + c]);
      const A x = kSquares ? A(0) : A(v[c]);
      d0 += r0 * (kSquares ? r0 : x);
      d1 += r1 * (kSquares ? r1 : x);
      d2 += r2 * (kSquares ? r2 : x);
      d3 += r3 * (kSquares ? r3 : x);
    }
    out[i] = d0;
    out[i + 1] = d1;
    out[i + 2] = d2;
    out[i + 3] = d3;
  }
  for (; i < n; ++i) {
    const T* r = rows + i * W;
    A d = A(0);
    MEMOPS_SIMD_SUM(d)
    for (int64_t c = 0; c < W; ++c) d += A(r[c]) * (kSquares ? A(r[c]) : A(v[c]));
    out[i] = d;
  }
}

// out[i] = rows_i . v
template <typename T, typename TV, typename A>
MEMOPS_HD void dot_rows(const T* rows, int64_t n, int64_t W, const TV* v, A* out) {
  row_dots<false>(rows, n, W, v, out);
}

// out[i] = rows_i . rows_i
template <typename T, typename A>
MEMOPS_HD void sumsq_rows(const T* rows, int64_t n, int64_t W, A* out) {
  row_dots<true>(rows, n, W, rows, out);
}

// dot[i] = rows_i . v and sumsq[i] = rows_i . rows_i in one sweep over the rows
template <typename T, typename TV, typename A>
MEMOPS_HD void dot_sumsq_rows(const T* rows, int64_t n, int64_t W, const TV* v, A* __restrict__ dot,
                              A* __restrict__ sumsq) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const T* r = rows + i * W;
    A d0 = A(0), d1 = A(0), d2 = A(0), d3 = A(0), s0 = A(0), s1 = A(0), s2 = A(0), s3 = A(0);
    MEMOPS_SIMD_SUM(d0, d1, d2, d3, s0, s1, s2, s3)
    for (int64_t c = 0; c < W; ++c) {
      const A x = A(v[c]), r0 = A(r[c]), r1 = A(r[W + c]), r2 = A(r[2 * W + c]), r3 = A(r[3 * W + c]);
      d0 += x * r0;
      d1 += x * r1;
      d2 += x * r2;
      d3 += x * r3;
      s0 += r0 * r0;
      s1 += r1 * r1;
      s2 += r2 * r2;
      s3 += r3 * r3;
    }
    dot[i] = d0;
    dot[i + 1] = d1;
    dot[i + 2] = d2;
    dot[i + 3] = d3;
    sumsq[i] = s0;
    sumsq[i + 1] = s1;
    sumsq[i + 2] = s2;
    sumsq[i + 3] = s3;
  }
  for (; i < n; ++i) {
    const T* r = rows + i * W;
    A d = A(0), q = A(0);
    MEMOPS_SIMD_SUM(d, q)
    for (int64_t c = 0; c < W; ++c) {
      d += A(v[c]) * A(r[c]);
      q += A(r[c]) * A(r[c]);
    }
    dot[i] = d;
    sumsq[i] = q;
  }
}

// out_i[c] = coef(i) v[c] (accumulate: +=) for n rows of width W at out + i * W
template <typename TV, typename A, typename Coef>
MEMOPS_HD void outer_rows(int64_t n, int64_t W, const Coef& coef, const TV* v, A* __restrict__ out,
                          bool accumulate) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    A* o = out + i * W;
    const A c0 = coef(i), c1 = coef(i + 1), c2 = coef(i + 2), c3 = coef(i + 3);
    if (accumulate) {
      for (int64_t c = 0; c < W; ++c) {
        const A x = A(v[c]);
        o[c] += c0 * x;
        o[W + c] += c1 * x;
        o[2 * W + c] += c2 * x;
        o[3 * W + c] += c3 * x;
      }
    } else {
      for (int64_t c = 0; c < W; ++c) {
        const A x = A(v[c]);
        o[c] = c0 * x;
        o[W + c] = c1 * x;
        o[2 * W + c] = c2 * x;
        o[3 * W + c] = c3 * x;
      }
    }
  }
  for (; i < n; ++i) {
    A* o = out + i * W;
    const A ci = coef(i);
    for (int64_t c = 0; c < W; ++c) o[c] = (accumulate ? o[c] : A(0)) + ci * A(v[c]);
  }
}

// out_i[c] = a(i) v[c] + b(i) rows_i[c] for n rows of width W (rows at rows + i * W, out + i * W)
template <typename T, typename TV, typename A, typename CoefA, typename CoefB>
MEMOPS_HD void axpby_rows(const T* rows, int64_t n, int64_t W, const CoefA& a, const TV* v,
                          const CoefB& b, A* __restrict__ out) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const T* r = rows + i * W;
    A* o = out + i * W;
    const A a0 = a(i), a1 = a(i + 1), a2 = a(i + 2), a3 = a(i + 3);
    const A b0 = b(i), b1 = b(i + 1), b2 = b(i + 2), b3 = b(i + 3);
    for (int64_t c = 0; c < W; ++c) {
      const A x = A(v[c]);
      o[c] = a0 * x + b0 * A(r[c]);
      o[W + c] = a1 * x + b1 * A(r[W + c]);
      o[2 * W + c] = a2 * x + b2 * A(r[2 * W + c]);
      o[3 * W + c] = a3 * x + b3 * A(r[3 * W + c]);
    }
  }
  for (; i < n; ++i) {
    const T* r = rows + i * W;
    A* o = out + i * W;
    const A ai = a(i), bi = b(i);
    for (int64_t c = 0; c < W; ++c) o[c] = ai * A(v[c]) + bi * A(r[c]);
  }
}

// acc[c] += sum_i coef(i) rows_i[c]
template <typename T, typename A, typename Coef>
MEMOPS_HD void axpy_rows(const T* rows, int64_t n, int64_t W, const Coef& coef, A* __restrict__ acc) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const T* r = rows + i * W;
    const A c0 = coef(i), c1 = coef(i + 1), c2 = coef(i + 2), c3 = coef(i + 3);
    for (int64_t c = 0; c < W; ++c) {
      acc[c] += c0 * A(r[c]) + c1 * A(r[W + c]) + c2 * A(r[2 * W + c]) + c3 * A(r[3 * W + c]);
    }
  }
  for (; i < n; ++i) {
    const T* r = rows + i * W;
    const A ci = coef(i);
    for (int64_t c = 0; c < W; ++c) acc[c] += ci * A(r[c]);
  }
}

}  // namespace math
}  // namespace memops

// Host-device building blocks shared by the CPU and CUDA kernels. No ATen, no allocation: plain
// scalars and raw pointers, so nvcc can compile every function for the device as it is.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define MEMOPS_HD __host__ __device__ __forceinline__
#else
#define MEMOPS_HD inline
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

// The shift convention: out[i] = sum_j w[shift_source(i, j)] * kernel[j], with
// shift_source(i, j) = (i - (j - S/2)) mod N. kernel[S/2] keeps the focus where it is, kernel[S/2 + 1]
// moves it one slot forward (out[i] takes w[i - 1]).
MEMOPS_HD int64_t shift_source(int64_t i, int64_t j, int64_t S, int64_t N) {
  return wrap_index(i - (j - S / 2), N);
}

// The inverse map, for the backward: w[src] feeds out[shift_target(src, j)].
MEMOPS_HD int64_t shift_target(int64_t src, int64_t j, int64_t S, int64_t N) {
  return wrap_index(src + (j - S / 2), N);
}

// Cosine denominators as torch.nn.functional.cosine_similarity: max(|x|, eps).
template <typename A>
MEMOPS_HD A clamped_norm(A squared_norm, A eps) {
  A n = sqrt(squared_norm);
  return n > eps ? n : eps;
}

// d max(|x|, eps) / d|x|: 1 where the norm is above eps, 0 where eps was used instead.
template <typename A>
MEMOPS_HD A norm_is_live(A squared_norm, A eps) {
  return sqrt(squared_norm) > eps ? A(1) : A(0);
}

template <typename A>
MEMOPS_HD A max_of(A a, A b) {
  return a > b ? a : b;
}

}  // namespace math
}  // namespace memops

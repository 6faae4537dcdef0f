// The passes over memory that content_address and ntm_address share (their kernels:
// content_address_kernels.cuh, ntm_address_kernels.cuh): similarity, memory gradient, the block-level
// softmax and softmax-backward statistics, the key-gradient finalisation, and the launch planning of
// both launchers (similarity_launch.h adds their ATen side). ATen-free (kernels_check.cu compiles it).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "../math/addressing.h"
#include "common.cuh"

namespace memops {
namespace cuda {
namespace content {

using std::exp;
using std::log;
using std::pow;
using std::sqrt;

constexpr int kThreads = 256;     // blocks of the slot passes (the launcher may use fewer: smem)
constexpr int kRowThreads = 512;  // blocks of the per-(b, h) row kernels (chunked regime)
constexpr int kHeadBatch = 4;     // heads whose dot products one sweep over a memory row accumulates
// __launch_bounds__ minimum blocks per SM: slot-pass blocks at <= 80 registers (3 x 256 threads per
// SM: enough loads in flight for the bandwidth-bound passes; with no minimum, ptxas 13 picks 40-64
// registers and spills inside the loops of some variants; at 80 the backward kernels still spill a
// few words on sm_90, in their prologue and final reductions). Row kernels run B H blocks, at most
// about one per SM: they may take every register they want.
constexpr int kSlotBlocks = 3;
constexpr int kRowBlocks = 1;

// Lanes per slot: the lanes of a group each take V elements of a row per step.
constexpr int kGroupSizes[] = {4, 8, 16, 32};

// Widest vector load (16 bytes, at most 4 elements): float 4, double 2, half / bfloat16 4 (8 bytes).
template <typename T>
struct VecWidth {
  static constexpr int value = sizeof(T) >= 8 ? 2 : 4;
};

// Dynamic shared memory carved into 16-byte aligned arrays; the same arithmetic on the host (sizes)
// and on the device (offsets), so the two cannot disagree.
struct Carve {
  int64_t bytes = 0;
  template <typename U>
  __host__ __device__ int64_t take(int64_t n) {
    const int64_t at = bytes;
    bytes += (n * static_cast<int64_t>(sizeof(U)) + 15) / 16 * 16;
    return at;
  }
};
template <typename U>
__device__ __forceinline__ U* at_offset(int64_t offset) {
  return reinterpret_cast<U*>(dynamic_shared<unsigned char>() + offset);
}

// Quotient and remainder of indices known to fit in 32 bits (block indices; offsets into shared
// memory arrays): a 64-bit division is a subroutine call on the GPU, with spills around it.
__device__ __forceinline__ int64_t div32(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint32_t>(a) / static_cast<uint32_t>(b));
}
__device__ __forceinline__ int64_t mod32(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint32_t>(a) % static_cast<uint32_t>(b));
}

// ---------------------------------------------------------------------------------------------------
// Block-level building blocks (every thread of the block calls them; they synchronise).

// This lane's share of one memory row's dot products with the keys h0 .. h0 + kHeadBatch - 1 (those
// below Hi) and of its sum of squares, added to dot[] and sq: the lanes of a group take the V-wide
// vectors lane, lane + G, ... of the row (the caller reduces over the group with group_sum<G>).
template <int G, int V, typename T, typename A>
__device__ __forceinline__ void row_dots_partial(const T* row, const A* ks, int h0, int Hi, int Wi, int lane,
                                                 A (&dot)[kHeadBatch], A& sq) {
  const int Wv = Wi / V;
  for (int v = lane; v < Wv; v += G) {
    const AlignedVec<T, V> x = load_aligned<T, V>(row + v * V);
    A m[V];
#pragma unroll
    for (int e = 0; e < V; ++e) {
      m[e] = load<A>(&x.v[e]);
      sq += m[e] * m[e];
    }
#pragma unroll
    for (int j = 0; j < kHeadBatch; ++j) {
      if (h0 + j < Hi) {
        const AlignedVec<A, V> k = load_aligned<A, V>(ks + (h0 + j) * Wi + v * V);
#pragma unroll
        for (int e = 0; e < V; ++e) dot[j] += m[e] * k.v[e];
      }
    }
  }
}

// keys (H, W) of one batch row into shared memory as A.
template <typename T, typename A>
__device__ void load_keys(const T* keys_b, int64_t H, int64_t W, A* ks) {
  for (int64_t j = threadIdx.x; j < H * W; j += blockDim.x) ks[j] = load<A>(keys_b + j);
}

// |k|' of one key by one warp (every lane gets it); `key` is shared (A) or global (T): the same
// lane split and warp tree either way, so every kernel gets bitwise the same norm. Where the plain sum
// of squares overflowed (entries past the square root of A's range), the key is swept again for
// math::norm_rescaled's s sqrt(sum (k / s)^2), s = max |k| (warp-uniform: every lane holds the sum).
template <typename A, typename TK>
__device__ __forceinline__ A warp_key_norm(const TK* key, int64_t W, bool cosine, A eps) {
  const int lane = threadIdx.x % kWarp;
  A ss = A(0);
  for (int64_t c = lane; c < W; c += kWarp) {
    const A k = load<A>(key + c);
    ss += k * k;
  }
  ss = warp_sum(ss);
  A n = sqrt(ss);
  if (ss == A(INFINITY)) {
    A s = A(0);
    for (int64_t c = lane; c < W; c += kWarp) {
      const A k = load<A>(key + c);
      s = math::max_of(s, k < A(0) ? -k : k);
    }
    s = group_reduce<kWarp>(s, MaxOp());
    A q = A(0);
    if (math::is_finite(s)) {
      for (int64_t c = lane; c < W; c += kWarp) {
        const A y = load<A>(key + c) / s;
        q += y * y;
      }
    }
    q = warp_sum(q);
    n = math::is_finite(s) ? s * sqrt(q) : s;
  }
  return cosine ? math::clamp_norm(n, eps) : A(1);
}

// The cold paths of group_slot_norm and group_cosines, for rows whose plain sums overflowed: another
// sweep of the row by the G lanes of its group (as row_dots_partial: V-wide vectors), with one
// accumulator each so that they add little to the hot loops' registers. Every lane of the warp calls
// them (full-mask shuffles); `row` is a readable row in every group.
//   norm: math::norm_rescaled, s sqrt(sum (m / s)^2) with s = max |m|
//   cosine: math::cosine_rescaled, sum (k / kn) (m / mn) for one key k (shared, A)
template <int G, int V, typename T, typename A>
__device__ __forceinline__ A group_norm_rescaled(const T* row, int Wi, int lane) {
  const int Wv = Wi / V;
  A s = A(0);
  for (int v = lane; v < Wv; v += G) {
    const AlignedVec<T, V> x = load_aligned<T, V>(row + v * V);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const A m = load<A>(&x.v[e]);
      s = math::max_of(s, m < A(0) ? -m : m);
    }
  }
  s = group_reduce<G>(s, MaxOp());
  const bool scale = s > A(0) && math::is_finite(s);  // (zeros, inf, NaN: s itself)
  A q = A(0);
  if (scale) {
    for (int v = lane; v < Wv; v += G) {
      const AlignedVec<T, V> x = load_aligned<T, V>(row + v * V);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const A y = load<A>(&x.v[e]) / s;
        q += y * y;
      }
    }
  }
  q = group_sum<G>(q);  // by every lane of the warp, whatever its group's s
  return scale ? s * sqrt(q) : s;
}
template <int G, int V, typename T, typename A>
__device__ __forceinline__ A group_cosine_rescaled(const T* row, const A* key, A kn, A mn, int Wi, int lane) {
  const int Wv = Wi / V;
  A r = A(0);
  for (int v = lane; v < Wv; v += G) {
    const AlignedVec<T, V> x = load_aligned<T, V>(row + v * V);
#pragma unroll
    for (int e = 0; e < V; ++e) r += (key[v * V + e] / kn) * (load<A>(&x.v[e]) / mn);
  }
  return group_sum<G>(r);
}

// max(|m|, eps) of the memory row of this lane's group from the group's plain sum of squares `sq`
// (every lane of the group holds it); where that sum overflowed (entries past the square root of A's
// range), from group_norm_rescaled, a branch the whole warp takes when any of its groups needs it.
// Every lane of the warp calls this.
template <int G, int V, typename T, typename A>
__device__ __forceinline__ A group_slot_norm(const T* row, int Wi, int lane, A sq, A eps) {
  A n = sqrt(sq);
  if (__any_sync(0xffffffffu, sq == A(INFINITY))) {
    const A rescaled = group_norm_rescaled<G, V, T, A>(row, Wi, lane);
    if (sq == A(INFINITY)) n = rescaled;
  }
  return math::clamp_norm(n, eps);
}

// dot[j] (group-summed k_h.m, h = h0 + j < Hi) -> the cosine k_h.m / (|k_h|' mn) of the row of this
// lane's group, as math::similarity_row: the plain quotient, and where that is not finite (k.m or the
// denominator overflowed, or an input is not finite) group_cosine_rescaled, warp-uniform as in
// group_slot_norm. Every lane of the warp calls this.
template <int G, int V, typename T, typename A>
__device__ __forceinline__ void group_cosines(const T* row, const A* ks, const A* kn, int h0, int Hi, int Wi,
                                              int lane, A mn, A (&dot)[kHeadBatch]) {
  bool bad = false;
#pragma unroll
  for (int j = 0; j < kHeadBatch; ++j) {
    if (h0 + j < Hi) {
      dot[j] /= kn[h0 + j] * mn;
      bad = bad || !math::is_finite(dot[j]) || !math::is_finite(kn[h0 + j] * mn);
    }
  }
  if (!__any_sync(0xffffffffu, bad)) return;
#pragma unroll  // (dot[] stays in registers only with constant indices)
  for (int j = 0; j < kHeadBatch; ++j) {
    if (h0 + j < Hi) {  // uniform: H is the block's
      const A r = group_cosine_rescaled<G, V, T, A>(row, ks + (h0 + j) * Wi, kn[h0 + j], mn, Wi, lane);
      if (!math::is_finite(dot[j]) || !math::is_finite(kn[h0 + j] * mn)) dot[j] = r;
    }
  }
}

// kn[h] = |k_h|' (1 for dot) for the H keys in shared memory: warp w takes heads w, w + warps, ...
// The caller synchronises before reading kn.
template <typename A>
__device__ void key_norms(const A* ks, int64_t H, int64_t W, bool cosine, A eps, A* kn) {
  const int warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  for (int64_t h = warp; h < H; h += warps) {
    const A n = warp_key_norm<A>(ks + h * W, W, cosine, eps);
    if (threadIdx.x % kWarp == 0) kn[h] = n;
  }
}

// Softmax of x[0..n) in place (x in shared or global memory, written by this block only). -inf
// entries (masked slots) get exactly 0; a row of only -inf gets zeros. The same thread touches the
// same i in every loop; it synchronises before returning.
template <typename A>
__device__ void block_softmax(A* x, int64_t n, A* red) {
  A m = -INFINITY;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) m = math::max_of(m, x[i]);
  m = block_max(m, red);
  if (m == -INFINITY) {  // uniform: every thread has the block's maximum
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) x[i] = A(0);
    __syncthreads();
    return;
  }
  A s = A(0);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const A e = math::exp_nonpositive(x[i] - m);
    x[i] = e;
    s += e;
  }
  s = block_sum(s, red);
  const A inv = A(1) / s;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) x[i] *= inv;
  __syncthreads();
}

// The first index of the largest p[i] (as math::CenteredGrad: ties go to the smaller index; a row
// with no comparable value gives 0). Every thread gets it.
template <typename A, typename TP>
__device__ int64_t block_argmax(const TP* p, int64_t n) {
  __shared__ A best_v[kWarp];
  __shared__ long long best_i[kWarp];
  A bv = -INFINITY;
  long long bi = n;  // sentinel: loses every tie
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const A v = load<A>(p + i);
    if (v > bv || (v == bv && i < bi)) {
      bv = v;
      bi = i;
    }
  }
  auto combine = [&]() {
#pragma unroll
    for (int offset = kWarp / 2; offset > 0; offset /= 2) {
      const A ov = __shfl_xor_sync(0xffffffffu, bv, offset);
      const long long oi = __shfl_xor_sync(0xffffffffu, bi, offset);
      if (ov > bv || (ov == bv && oi < bi)) {
        bv = ov;
        bi = oi;
      }
    }
  };
  combine();
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int warps = (blockDim.x + kWarp - 1) / kWarp;
  __syncthreads();  // the arrays may still be read by a previous call
  if (lane == 0) {
    best_v[warp] = bv;
    best_i[warp] = bi;
  }
  __syncthreads();
  bv = lane < warps ? best_v[lane] : A(-INFINITY);
  bi = lane < warps ? best_i[lane] : static_cast<long long>(n);
  combine();
  return bi < n ? static_cast<int64_t>(bi) : int64_t(0);
}

// math::CenteredGrad as block reductions: for a probability row p and incoming gradient g,
// s = sum_j p_j g_j, arg = argmax p, arg_diff = g_arg sum_{j != arg} p_j - sum_{j != arg} p_j g_j
// (the arg slot's g - s without the cancellation). The softmax backward is then
// p_i (g_i - s), and p_arg arg_diff at arg. Every thread gets the result.
template <typename A>
struct Centered {
  A s, arg_diff;
  int64_t arg;
  A total;  // sum_j p_j
};
template <typename A, typename TP, typename TG>
__device__ Centered<A> block_centered(const TP* p, const TG* g, int64_t n, A* red) {
  if (n == 0) return Centered<A>{A(0), A(0), 0, A(0)};
  const int64_t arg = block_argmax<A>(p, n);
  A rest = A(0), t = A(0);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    if (i == arg) continue;
    const A pi = load<A>(p + i);
    rest += pi;
    t += pi * load<A>(g + i);
  }
  rest = block_sum(rest, red);
  t = block_sum(t, red);
  const A g_arg = load<A>(g + arg), p_arg = load<A>(p + arg);
  return Centered<A>{t + p_arg * g_arg, g_arg * rest - t, arg, rest + p_arg};
}

// ---------------------------------------------------------------------------------------------------
// The slot passes (similarity_pass, memory_grad_pass). A block takes the slots [first, first + count)
// of ONE batch row b for EVERY head of b, the H keys in shared memory, so each memory row is read once
// per pass for all heads (kHeadBatch heads per sweep of the row; more heads re-read it, from L1). A
// slot is handled by a group of G consecutive lanes (a power of two from W), each loading V elements
// at a time (vector loads where W and the alignment allow); the group reduces with group_sum<G>.
// Every group runs the same number of iterations (slots past the end only join the shuffles), so
// every full-mask shuffle and __syncwarp is reached by all 32 lanes of a warp. One block per batch
// row where that fills the GPU (the same block then finishes the op: one launch); else the slots of
// a row are cut into chunks (plan_chunk) and a second kernel combines the chunks' partials in order.

// The similarity pass: for the slots [first, first + count) of batch row b, all heads:
//   out[h * ld + i] = sim_hi * scale[h]  (scale == nullptr: sim_hi), or -inf where keep_b[i] is false
// (masked slots are not read). cosine: sim = k.m / (|k|' |m|') as math::similarity_row; dot: k.m.
// ks: the H keys (shared), kn: their |k|' (1 for dot). blockDim.x: a multiple of 32 (and of G).
template <int G, int V, typename T, typename A>
__device__ void similarity_pass(const T* mem_b, const bool* keep_b, const A* ks, const A* kn,
                                const A* scale, int64_t H, int64_t W, int64_t first, int64_t count,
                                bool cosine, A eps, A* out, int64_t ld) {
  const int lane = threadIdx.x % G, group = threadIdx.x / G, groups = blockDim.x / G;
  // H W fits in shared memory, so in 32 bits; W % V == 0 (the launcher picks V so)
  const int Hi = static_cast<int>(H), Wi = static_cast<int>(W);
  for (int64_t base = 0; base < count; base += groups) {  // same trip count in every group
    const int64_t l = base + group;
    const int64_t i = first + (l < count ? l : 0);
    const bool keep = l < count && (keep_b == nullptr || keep_b[i]);
    const T* row = mem_b + i * W;
    A mn = A(1);
    for (int h0 = 0; h0 < Hi; h0 += kHeadBatch) {
      A dot[kHeadBatch], sq = A(0);
#pragma unroll
      for (int j = 0; j < kHeadBatch; ++j) dot[j] = A(0);
      if (keep) row_dots_partial<G, V>(row, ks, h0, Hi, Wi, lane, dot, sq);
      if (h0 == 0 && cosine) mn = group_slot_norm<G, V>(row, Wi, lane, group_sum<G>(sq), eps);
#pragma unroll
      for (int j = 0; j < kHeadBatch; ++j) {
        if (h0 + j < Hi) dot[j] = group_sum<G>(dot[j]);  // uniform: H is the block's
      }
      if (cosine) group_cosines<G, V>(row, ks, kn, h0, Hi, Wi, lane, mn, dot);  // dot[j]: the sims now
      if (lane == 0 && l < count) {
#pragma unroll
        for (int j = 0; j < kHeadBatch; ++j) {
          const int h = h0 + j;
          if (h >= Hi) break;
          const A sim = dot[j];
          out[h * ld + i] = keep ? (scale ? sim * scale[h] : sim) : A(-INFINITY);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// The memory-gradient pass over the slots [first, first + count) of batch row b (math::memory_grad_slots
// and math::key_grad_row per slot): with dsim_hi = d loss / d sim_hi,
//   grad_m_i  = sum_h a_hi k_h + self_i m_i,  a_hi = dsim_hi / (|k_h|' |m_i|') (dot: dsim_hi),
//               self_i = -live_i / |m_i|'^2 sum_h dsim_hi sim_hi (cosine; 0 for dot)
//   grad_k_h += sum_i a_hi m_i            (into gk_sh: per group, per head, W; one writer per entry)
// kRecompute (content_address): sim from the dot products of this sweep, and
//   dl_hi = p_hi (g_hi - s_h) (p_arg arg_diff_h at arg_h), dsim = beta_h dl_hi,
//   gb_sh[group, h] += dl_hi sim_hi (the grad_beta partial)
// else (ntm_address): sim and dsim given in sim_b / dsim_b ([h * N + i]).
// coef_sh: H values per group (the a_hi of the group's current slot); gk_sh: H W per group, zeroed by
// the caller; gb_sh: H per group (kRecompute), zeroed by the caller.
template <int G, int V, bool kRecompute, typename T, typename A>
__device__ void memory_grad_pass(const T* mem_b, T* gmem_b, const A* ks, const A* kn, int64_t H,
                                 int64_t N, int64_t W, int64_t first, int64_t count, bool cosine, A eps,
                                 const T* p_b, const T* g_b, const A* bs, const A* st_s, const A* st_ad,
                                 const int64_t* st_arg, const A* sim_b, const A* dsim_b, A* coef_sh,
                                 A* gb_sh, A* gk_sh) {
  const int lane = threadIdx.x % G, group = threadIdx.x / G, groups = blockDim.x / G;
  // H W (per group) fits in shared memory, so in 32 bits; W % V == 0 (the launcher picks V so)
  const int Hi = static_cast<int>(H), Wi = static_cast<int>(W), Wv = Wi / V;
  A* coef = coef_sh + group * Hi;
  A* gk = gk_sh + group * Hi * Wi;
  for (int64_t base = 0; base < count; base += groups) {  // same trip count in every group
    const int64_t l = base + group;
    const bool valid = l < count;
    const int64_t i = first + (valid ? l : 0);
    const T* row = mem_b + i * W;
    A mn = A(1), self = A(0);
    if constexpr (kRecompute) {
      for (int h0 = 0; h0 < Hi; h0 += kHeadBatch) {
        A dot[kHeadBatch], sq = A(0);
#pragma unroll
        for (int j = 0; j < kHeadBatch; ++j) dot[j] = A(0);
        if (valid) row_dots_partial<G, V>(row, ks, h0, Hi, Wi, lane, dot, sq);
        if (h0 == 0 && cosine) mn = group_slot_norm<G, V>(row, Wi, lane, group_sum<G>(sq), eps);
#pragma unroll
        for (int j = 0; j < kHeadBatch; ++j) {
          if (h0 + j < Hi) dot[j] = group_sum<G>(dot[j]);  // uniform: H is the block's
        }
        if (cosine) group_cosines<G, V>(row, ks, kn, h0, Hi, Wi, lane, mn, dot);  // dot[j]: the sims now
        if (valid) {
#pragma unroll
          for (int j = 0; j < kHeadBatch; ++j) {
            const int h = h0 + j;
            if (h >= Hi) break;
            const A sim = dot[j];
            const A pi = load<A>(p_b + h * N + i);
            const A dl = i == st_arg[h] ? pi * st_ad[h] : pi * (load<A>(g_b + h * N + i) - st_s[h]);
            const A dsim = dl * bs[h];
            self -= dsim * sim;
            if (lane == 0) {
              coef[h] = cosine ? dsim * (A(1) / kn[h]) / mn : dsim;
              gb_sh[group * Hi + h] += dl * sim;
            }
          }
        }
      }
    } else {
      A sq = A(0);
      if (valid) {
        for (int v = lane; v < Wv; v += G) {
          const AlignedVec<T, V> x = load_aligned<T, V>(row + v * V);
#pragma unroll
          for (int e = 0; e < V; ++e) {
            const A m = load<A>(&x.v[e]);
            sq += m * m;
          }
        }
      }
      if (cosine) mn = group_slot_norm<G, V>(row, Wi, lane, group_sum<G>(sq), eps);
      if (valid) {
        for (int h = 0; h < Hi; ++h) {
          const A sim = sim_b[h * N + i], dsim = dsim_b[h * N + i];
          self -= dsim * sim;
          if (lane == 0) coef[h] = cosine ? dsim * (A(1) / kn[h]) / mn : dsim;
        }
      }
    }
    __syncwarp();  // coef[] of this slot, written by the group's lane 0
    if (valid) {
      if (cosine) self *= math::norm_is_live(mn, eps) / mn / mn;  // (no |m|^2: it may overflow)
      T* grow = gmem_b + i * W;
      for (int v = lane; v < Wv; v += G) {
        const AlignedVec<T, V> x = load_aligned<T, V>(row + v * V);  // the same lane read it just above: L1
        A m[V], gm[V];
        const AlignedVec<A, V> k0 = load_aligned<A, V>(ks + v * V);
#pragma unroll
        for (int e = 0; e < V; ++e) {
          m[e] = load<A>(&x.v[e]);
          gm[e] = cosine ? coef[0] * k0.v[e] + self * m[e] : coef[0] * k0.v[e];
        }
        for (int h = 0; h < Hi; ++h) {
          const A a = coef[h];
          if (h > 0) {
            const AlignedVec<A, V> k = load_aligned<A, V>(ks + h * Wi + v * V);
#pragma unroll
            for (int e = 0; e < V; ++e) gm[e] += a * k.v[e];
          }
          AlignedVec<A, V> acc = load_aligned<A, V>(gk + h * Wi + v * V);
#pragma unroll
          for (int e = 0; e < V; ++e) acc.v[e] += a * m[e];
          store_aligned<A, V>(gk + h * Wi + v * V, acc);
        }
        AlignedVec<T, V> y;
#pragma unroll
        for (int e = 0; e < V; ++e) store(&y.v[e], gm[e]);
        store_aligned<T, V>(grow + v * V, y);
      }
    }
    __syncwarp();  // lane 0 rewrites coef[] in the next iteration
  }
}

// gk[j] = sum over the block's groups of gk_sh (fixed order), j in [0, H W); the caller has synchronised.
template <typename A>
__device__ __forceinline__ A group_total(const A* per_group, int64_t stride, int64_t groups, int64_t j) {
  A s = A(0);
  for (int64_t gr = 0; gr < groups; ++gr) s += per_group[gr * stride + j];
  return s;
}

// d loss / d key_h = sum_i a_hi m_i - kcoef_h k_h with kcoef_h = live(|k_h|') dsim_sim_h / |k_h|'^2
// (cosine; 0 for dot), dsim_sim_h = sum_i dsim_hi sim_hi (math::key_grad_row).
template <typename A>
__device__ __forceinline__ A key_coef(bool cosine, A kn, A eps, A dsim_sim) {
  return cosine ? math::norm_is_live(kn, eps) * dsim_sim / kn / kn : A(0);  // (no |k|^2: it may overflow)
}

// ---------------------------------------------------------------------------------------------------
// Chunked regime, last step of both backwards: one block per (b, h) row sums the per-chunk partials
// of the key gradient in chunk order and writes grad_key (and grad_beta for content_address).
//   part: (B, chunks, H, W + 1): [.., w < W] the chunk's sum_i a_hi m_i[w], [.., W] its
//         sum_i dl_hi sim_hi (content_address only)
//   kcoef_ws: (B, H) the key coefficient of each row (ntm_address), or nullptr: computed here from
//             the grad_beta partials (content_address: dsim_sim = beta grad_beta).
template <typename T>
__global__ void __launch_bounds__(kThreads, kSlotBlocks)
    key_grad_finalize_kernel(const T* keys, const T* beta, const acc_t<T>* part, const acc_t<T>* kcoef_ws,
                             int64_t H, int64_t W, int64_t chunks, bool cosine, acc_t<T> eps, T* grad_keys,
                             T* grad_beta) {
  using A = acc_t<T>;
  const int64_t row = blockIdx.x, b = div32(row, H), h = mod32(row, H);
  const T* key = keys + row * W;
  const int64_t stride = H * (W + 1);
  const A* first = part + b * chunks * stride + h * (W + 1);
  A kc;
  if (kcoef_ws != nullptr) {
    kc = kcoef_ws[row];
  } else {
    const A kn = warp_key_norm<A>(key, W, cosine, eps);  // every warp, the same value
    const A gb = group_total(first + W, stride, chunks, 0);
    kc = key_coef(cosine, kn, eps, load<A>(beta + row) * gb);
    if (threadIdx.x == 0) store(grad_beta + row, gb);
  }
  for (int64_t w = threadIdx.x; w < W; w += blockDim.x) {
    store(grad_keys + row * W + w, group_total(first, stride, chunks, w) - kc * load<A>(key + w));
  }
}

// ---------------------------------------------------------------------------------------------------
// Host side: launch planning (no ATen, so kernels_check.cu compiles it too).

// Lanes per slot and elements per lane-load for width W. `aligned`: the memory (and gradient)
// pointers are aligned to a full vector.
struct SlotShape {
  int G, V;
};
template <typename T>
inline SlotShape slot_shape(int64_t W, bool aligned) {
  const int vmax = VecWidth<T>::value;
  const int V = aligned && W % vmax == 0 ? vmax : 1;
  const int64_t Wv = W / V;
  int G = kGroupSizes[0];
  while (G < kWarp && G < Wv) G *= 2;
  return SlotShape{G, V};
}

// Calls f(std::integral_constant<int, G>(), std::integral_constant<int, V>()) for the shape's (G, V).
template <typename T, typename F>
inline void with_slot_shape(SlotShape s, F&& f) {
  constexpr int VM = VecWidth<T>::value;
  using V1 = std::integral_constant<int, 1>;
  using VW = std::integral_constant<int, VM>;
  auto by_g = [&](auto v) {
    switch (s.G) {
      case 4: f(std::integral_constant<int, 4>(), v); break;
      case 8: f(std::integral_constant<int, 8>(), v); break;
      case 16: f(std::integral_constant<int, 16>(), v); break;
      default: f(std::integral_constant<int, 32>(), v); break;
    }
  };
  if (s.V == 1) by_g(V1()); else by_g(VW());
}

// Calls f(G, V) (as integral constants) for every shape slot_shape can return: kernels_check.cu
// instantiates every variant through it.
template <typename T, typename F>
inline void for_every_slot_shape(F&& f) {
  for (int G : kGroupSizes) {
    with_slot_shape<T>(SlotShape{G, 1}, f);
    with_slot_shape<T>(SlotShape{G, VecWidth<T>::value}, f);
  }
}

// Slots per block for a grid of B batch rows (chunk == N: one block per batch row, the fused
// single-launch path). Chunks only pay where B alone leaves SMs idle and a row holds real work: the
// grid aims at kTargetBlocks blocks (4 per SM of an H100), and a chunk keeps at least 16K elements
// of memory (64 per thread) and one slot per group. The chunk is a multiple of the block's groups.
// It depends on the sizes only, not on the device, so the partial sums (and the results) are the
// same on every GPU.
constexpr int64_t kTargetBlocks = 512;
inline int64_t plan_chunk(int64_t B, int64_t N, int64_t W, int64_t groups) {
  const int64_t target = kTargetBlocks;
  if (B >= target || N <= groups) return N;
  constexpr int64_t kMinElements = 16384;
  const int64_t min_slots = std::max<int64_t>(groups, (kMinElements + W - 1) / std::max<int64_t>(W, 1));
  const int64_t chunks = std::min<int64_t>((target + B - 1) / B, N / min_slots);
  if (chunks <= 1) return N;
  const int64_t chunk = ((N + chunks - 1) / chunks + groups - 1) / groups * groups;
  return chunk < N ? chunk : N;
}

// The most shared memory a fused (one block per batch row) kernel may take for its rows: two such
// blocks still fit on an H100 SM. Past it the chunked path runs, whose row kernels work in global
// scratch.
constexpr int64_t kFusedSmemBudget = 112 * 1024;

// Opts a kernel in to more than the default 48 KiB of dynamic shared memory where it needs it.
template <typename K>
inline cudaError_t allow_smem(K* kernel, int64_t bytes) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
}

// What the launchers need of the current device.
struct DeviceLimits {
  int64_t smem = 48 * 1024;  // dynamic shared memory a block may opt in to, less static use
};
inline cudaError_t device_limits(int device, DeviceLimits* out) {
  int optin = 0;
  const cudaError_t e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (e != cudaSuccess) return e;
  out->smem = static_cast<int64_t>(optin) - 1024;  // block_argmax's static arrays, with margin
  return cudaSuccess;
}

}  // namespace content
}  // namespace cuda
}  // namespace memops

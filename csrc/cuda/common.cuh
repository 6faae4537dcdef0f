// Device building blocks of the CUDA kernels: the working precision, loads and stores, warp and
// block reductions. No ATen: the kernels that include this compile with plain nvcc (CI checks them
// that way, csrc/cuda/kernels_check.cu), and the launchers (csrc/cuda/<op>.cu) pass raw pointers.
//
// Conventions of every kernel in csrc/cuda/:
//   - T is the storage type (float, double, __half, __nv_bfloat16); A = acc_t<T> is the working
//     precision (double for double, float otherwise). Every sum runs in A.
//   - Tensors are contiguous (the launchers make them so: see launch.h) and indexed with int64_t.
//   - Reductions are trees in a fixed order (no atomics): the same inputs give bitwise the same outputs.
//   - blockDim.x is a multiple of 32 and every thread of a block reaches every warp_sum / block_sum
//     (the shuffles use the full mask).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "../math/common.h"

namespace memops {
namespace cuda {

template <typename T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};
template <typename T>
using acc_t = typename Acc<T>::type;

constexpr int kWarp = 32;

// Storage to working precision and back (to half types: round to nearest). Explicit intrinsics for
// the half types: torch's extension build defines __CUDA_NO_HALF_CONVERSIONS__ and
// __CUDA_NO_BFLOAT16_CONVERSIONS__, which remove their implicit conversions (kernels_check.cu
// compiles with the same flags, so a kernel that relies on one fails there).
template <typename A, typename T>
__device__ __forceinline__ A load(const T* p) {
  return static_cast<A>(*p);
}
template <>
__device__ __forceinline__ float load<float, __half>(const __half* p) {
  return __half2float(*p);
}
template <>
__device__ __forceinline__ float load<float, __nv_bfloat16>(const __nv_bfloat16* p) {
  return __bfloat162float(*p);
}
template <typename T, typename A>
__device__ __forceinline__ void store(T* p, A v) {
  *p = static_cast<T>(v);
}
template <>
__device__ __forceinline__ void store<__half, float>(__half* p, float v) {
  *p = __float2half_rn(v);
}
template <>
__device__ __forceinline__ void store<__nv_bfloat16, float>(__nv_bfloat16* p, float v) {
  *p = __float2bfloat16_rn(v);
}

struct SumOp {
  template <typename A>
  __device__ __forceinline__ A operator()(A a, A b) const { return a + b; }
};
struct MaxOp {  // NaN if either is NaN (math::max_of): a maximum never hides a NaN
  template <typename A>
  __device__ __forceinline__ A operator()(A a, A b) const { return math::max_of(a, b); }
};

// Reduction over aligned groups of G consecutive lanes (G a power of two, 1..32); every lane of the
// group gets the result. A warp can hold 32 / G groups, e.g. G lanes per memory slot.
template <int G, typename A, typename Op>
__device__ __forceinline__ A group_reduce(A v, Op op) {
#pragma unroll
  for (int offset = G / 2; offset > 0; offset /= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, offset, G));
  return v;
}
template <int G, typename A>
__device__ __forceinline__ A group_sum(A v) {
  return group_reduce<G>(v, SumOp());
}
template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
  return group_reduce<kWarp>(v, SumOp());
}

// Reduction over the whole block; every thread gets the result. `shared`: kWarp values of scratch,
// which the call may reuse as soon as it returns (it synchronises before and after).
template <typename A, typename Op>
__device__ __forceinline__ A block_reduce(A v, Op op, A identity, A* shared) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int warps = (blockDim.x + kWarp - 1) / kWarp;
  v = group_reduce<kWarp>(v, op);
  __syncthreads();  // `shared` may still be read by a previous reduction
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < warps ? shared[lane] : identity;
  return group_reduce<kWarp>(v, op);
}
template <typename A>
__device__ __forceinline__ A block_sum(A v, A* shared) {
  return block_reduce(v, SumOp(), A(0), shared);
}
template <typename A>
__device__ __forceinline__ A block_max(A v, A* shared) {
  return block_reduce(v, MaxOp(), A(-INFINITY), shared);
}

// Dynamic shared memory as an array of A (one extern declaration for every type: a templated
// `extern __shared__ A buf[]` would declare the same symbol with different types).
template <typename A>
__device__ __forceinline__ A* dynamic_shared() {
  extern __shared__ __align__(16) unsigned char memops_dynamic_shared[];
  return reinterpret_cast<A*>(memops_dynamic_shared);
}

// Host side, for kernels_check.cu: each <op>_kernels.cuh ends with
//   template <typename T> void list_<op>_kernels(KernelList& out)
// which adds every kernel of the file, instantiated for storage type T (taking a kernel's address
// instantiates it), so that nvcc compiles and reports every kernel that the launchers can run.
struct KernelList {
  static constexpr int kCapacity = 1024;
  const void* kernels[kCapacity];
  int size = 0;
  template <typename F>
  void add(F* kernel) {
    // (the address is taken, and so the kernel instantiated, whether or not there is room to keep it)
    if (size < kCapacity) kernels[size++] = reinterpret_cast<const void*>(kernel);
  }
};

}  // namespace cuda
}  // namespace memops

// ---------------------------------------------------------------------------------------------------
// Vectorised access, and the host-side layout of a block over (slots x columns) of a memory row.
namespace memops {
namespace cuda {

// V consecutive elements of T as one aligned access (16 bytes for V = kVec16<T>). The caller
// guarantees the alignment: base pointer aligned to sizeof(T) * V bytes, offsets multiples of V.
template <typename T, int V>
struct alignas(sizeof(T) * V) AlignedVec {
  T v[V];
};
template <typename T>
constexpr int kVec16 = static_cast<int>(16 / sizeof(T));

// One aligned load / store of V elements as they are stored (no conversion).
template <typename T, int V>
__device__ __forceinline__ AlignedVec<T, V> load_aligned(const T* p) {
  return *reinterpret_cast<const AlignedVec<T, V>*>(p);
}
template <typename T, int V>
__device__ __forceinline__ void store_aligned(T* p, const AlignedVec<T, V>& x) {
  *reinterpret_cast<AlignedVec<T, V>*>(p) = x;
}

// The same, converting to / from the working precision A.
template <int V, typename A, typename T>
__device__ __forceinline__ void load_vec(const T* p, A (&out)[V]) {
  const AlignedVec<T, V> x = load_aligned<T, V>(p);
#pragma unroll
  for (int k = 0; k < V; ++k) out[k] = load<A>(&x.v[k]);
}
template <int V, typename T, typename A>
__device__ __forceinline__ void store_vec(T* p, const A (&in)[V]) {
  AlignedVec<T, V> x;
#pragma unroll
  for (int k = 0; k < V; ++k) store(&x.v[k], in[k]);
  store_aligned<T, V>(p, x);
}

// A block as R rows of CT threads over `columns` columns (of elements or vectors) of a memory row:
// thread t is (r, c) = (t / CT, t % CT) and takes column c of slots first + r, first + r + R, ...,
// so each step reads R whole consecutive slots (coalesced, any width). Columns past CT go to
// further column tiles. threads: R * CT rounded up to whole warps (the extra lanes idle).
struct ColumnTiling {
  int CT = 1, R = 1, threads = 32;
  int64_t tiles = 1;
};
inline ColumnTiling column_tiling(int64_t columns, int max_threads) {
  ColumnTiling t;
  const int64_t c = columns < 1 ? 1 : columns;
  t.CT = static_cast<int>(c < max_threads ? c : max_threads);
  t.R = max_threads / t.CT;
  t.threads = (t.R * t.CT + kWarp - 1) / kWarp * kWarp;
  t.tiles = (c + t.CT - 1) / t.CT;
  return t;
}

// Slots per chunk when the N slots of each of B batch rows are cut into chunks, one block per
// (batch row, chunk, column tile): as many chunks as take the grid to about kChunkTargetBlocks
// blocks, but at least min_slots slots per chunk. Depends on the sizes only (not on the device), so
// the partial sums, and the results, are the same on every GPU.
constexpr int64_t kChunkTargetBlocks = 1024;
inline int64_t slot_chunk_size(int64_t B, int64_t N, int64_t tiles, int64_t min_slots) {
  const int64_t per_row = B * tiles;
  int64_t chunks = (kChunkTargetBlocks + per_row - 1) / per_row;
  const int64_t most = (N + min_slots - 1) / min_slots;
  if (chunks > most) chunks = most;
  if (chunks < 1) chunks = 1;
  const int64_t size = (N + chunks - 1) / chunks;
  return size < 1 ? 1 : size;
}

}  // namespace cuda
}  // namespace memops

// A CPU emulator of the CUDA execution model, for running memops' own kernels (csrc/cuda/) on a
// machine without a GPU. Force-included (g++ -include) before every source of the emulated build
// (setup.py, MEMOPS_CUDA_EMU=1): it turns the CUDA keywords into plain C++ and declares the device
// API the kernels use. The runtime (fibers, scheduler, checks) is emu.cpp.
//
// Model: every CUDA thread is a fiber (own small stack); a block's threads run on one OS thread and
// switch only at __syncthreads, __syncwarp and the __shfl_*_sync calls; blocks spread over worker
// threads. __shared__ variables are thread_local (one block at a time per OS thread); dynamic shared
// memory is a per-worker buffer filled with NaN bytes (0xff) at block start. A divergent barrier, a
// thread that exits while others wait, a shuffle over lanes that do not exist or did not arrive: an
// error naming file:line. The order in which runnable threads run is a schedule (emu::Schedule).
#pragma once

#include <math.h>  // the float overloads of exp, log, sqrt, ... in the global namespace, as CUDA's

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

#include <cuda_bf16.h>  // host paths of __half / __nv_bfloat16 (g++ is not __CUDACC__)
#include <cuda_fp16.h>
#include <driver_types.h>  // cudaError_t, cudaStream_t, the attribute enums (types only)
#include <vector_types.h>  // dim3, uint3

// (host_defines.h, which the headers above include, defines these as attributes for nvcc)
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __launch_bounds__
#undef __align__
#undef __shared__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// Block-scope thread_local is static: one copy per OS thread, i.e. per running block.
#define __shared__ thread_local

namespace emu {

// A thread's view: set by the scheduler before it resumes the fiber.
struct ThreadState {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};
extern thread_local ThreadState* current;

// Switch points (the fiber waits here until the barrier / warp exchange releases it).
void syncthreads(const char* file, int line);
void syncwarp(unsigned mask, const char* file, int line);
enum class Shfl { Idx, Up, Down, Xor };
uint64_t shuffle(unsigned mask, uint64_t bits, Shfl kind, int arg, int width, const char* file, int line);

template <typename T>
T shfl(unsigned mask, T v, Shfl kind, int arg, int width, const char* file, int line) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "emu: shuffle of a type over 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = shuffle(mask, bits, kind, arg, width, file, line);
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}

// Runs `body` as the kernel of a grid (blocks x threads, `smem` bytes of dynamic shared memory);
// `kernel` identifies it for the shared-memory opt-in (cudaFuncSetAttribute). Throws
// std::runtime_error on a launch error or on any error of the emulated threads.
void run_grid(const void* kernel, dim3 grid, dim3 block, size_t smem, const std::function<void()>& body);

template <typename... P, typename... Args>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, Args... args) {
  run_grid(reinterpret_cast<const void*>(kernel), grid, block, smem, [=] { kernel(args...); });
}

// The dynamic shared memory of the running block (the one `extern __shared__` array of the sources,
// defined by the emulated build's module: see module.cpp).
extern unsigned char* (*dynamic_shared_base)();

// Device properties answered by the stubs below: an H100 SXM.
constexpr int kSharedPerBlockOptin = 227 * 1024;
constexpr int kSharedPerSM = 228 * 1024;
constexpr int kSharedPerBlock = 48 * 1024;
constexpr int kSMs = 132;
void set_max_dynamic_shared(const void* kernel, int bytes);

}  // namespace emu

#define threadIdx (::emu::current->thread_idx)
#define blockIdx (::emu::current->block_idx)
#define blockDim (::emu::current->block_dim)
#define gridDim (::emu::current->grid_dim)
#define warpSize 32

#define __syncthreads() ::emu::syncthreads(__FILE__, __LINE__)
#define __syncwarp(...) ::emu::syncwarp(::emu::mask_or_full(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_sync(mask, v, src, ...) \
  ::emu::shfl(mask, v, ::emu::Shfl::Idx, src, ::emu::width_or_warp(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_up_sync(mask, v, d, ...) \
  ::emu::shfl(mask, v, ::emu::Shfl::Up, d, ::emu::width_or_warp(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_down_sync(mask, v, d, ...) \
  ::emu::shfl(mask, v, ::emu::Shfl::Down, d, ::emu::width_or_warp(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_xor_sync(mask, v, m, ...) \
  ::emu::shfl(mask, v, ::emu::Shfl::Xor, m, ::emu::width_or_warp(__VA_ARGS__), __FILE__, __LINE__)
#define __any_sync(mask, pred) ::emu::vote_any(mask, pred, __FILE__, __LINE__)

namespace emu {
inline unsigned mask_or_full() { return 0xffffffffu; }
inline unsigned mask_or_full(unsigned m) { return m; }
inline int width_or_warp() { return 32; }
inline int width_or_warp(int w) { return w; }

// __any_sync as a butterfly of xor shuffles over the warp: the same exchange (every lane of the mask
// must reach it), the same checks, and every lane gets the OR of the predicates.
inline int vote_any(unsigned mask, int pred, const char* file, int line) {
  int v = pred != 0;
  for (int offset = 16; offset > 0; offset /= 2) v |= shfl(mask, v, Shfl::Xor, offset, 32, file, line);
  return v;
}
}  // namespace emu

// CUDA's global min / max (any mix of integer and floating arguments, as its overloads).
template <typename A, typename B>
inline std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return C(b) < C(a) ? C(b) : C(a);
}
template <typename A, typename B>
inline std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return C(a) < C(b) ? C(b) : C(a);
}

// Runtime API stubs the launchers call.
inline const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated CUDA error"; }
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int /*device*/) {
  switch (attr) {
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = emu::kSharedPerBlockOptin; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = emu::kSharedPerSM; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = emu::kSharedPerBlock; return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: *value = emu::kSMs; return cudaSuccess;
    case cudaDevAttrWarpSize: *value = 32; return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; return cudaSuccess;
    default: return cudaErrorInvalidValue;
  }
}
template <typename K>
inline cudaError_t cudaFuncSetAttribute(K* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
  if (value > emu::kSharedPerBlockOptin) return cudaErrorInvalidValue;
  emu::set_max_dynamic_shared(reinterpret_cast<const void*>(kernel), value);
  return cudaSuccess;
}

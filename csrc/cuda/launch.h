// What every CUDA launcher (csrc/cuda/<op>.cu) does around its kernels: the dtype check, the device
// guard, the current stream, the storage-type mapping (at::Half -> __half, at::BFloat16 ->
// __nv_bfloat16, so the kernels never see ATen), the launch-error check, grid sizes. Launchers take
// any strides: they call .contiguous() on every input (tensors.h), a copy only where the input is not
// already dense, and the kernels index contiguous rows.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#ifndef MEMOPS_CUDA_EMU
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <torch/library.h>

#include <algorithm>

#include "../tensors.h"
#include "../validate.h"

namespace memops {
namespace cuda {

inline void check_cuda_dtype(const char* op, const at::Tensor& t) {
  const auto s = t.scalar_type();
  TORCH_CHECK_TYPE(s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16, op,
                   ": the CUDA kernels take float32, float64, float16 or bfloat16 tensors, got ",
                   dtype_name(s));
}

template <typename scalar_t>
struct Storage {
  using type = scalar_t;
};
template <>
struct Storage<at::Half> {
  using type = __half;
};
template <>
struct Storage<at::BFloat16> {
  using type = __nv_bfloat16;
};
// The kernels' storage type for ATen's scalar_t.
template <typename scalar_t>
using storage_t = typename Storage<scalar_t>::type;

template <typename scalar_t>
const storage_t<scalar_t>* in_ptr(const at::Tensor& t) {
  return reinterpret_cast<const storage_t<scalar_t>*>(t.const_data_ptr<scalar_t>());
}
template <typename scalar_t>
const storage_t<scalar_t>* in_ptr_or_null(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? in_ptr<scalar_t>(*t) : nullptr;
}
template <typename scalar_t>
storage_t<scalar_t>* out_ptr(at::Tensor& t) {
  return reinterpret_cast<storage_t<scalar_t>*>(t.mutable_data_ptr<scalar_t>());
}

// float32, float64, float16, bfloat16: `scalar_t` inside the lambda is ATen's type.
#define MEMOPS_DISPATCH_CUDA(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

// The device of `t` made current for the scope, and its current stream.
#ifndef MEMOPS_CUDA_EMU
struct OnDevice {
  c10::cuda::CUDAGuard guard;
  cudaStream_t stream;
  explicit OnDevice(const at::Tensor& t) : guard(t.device()), stream(c10::cuda::getCurrentCUDAStream()) {}
};
#else  // the CPU emulator (csrc/cuda/emu/): CPU tensors, no device, no stream
struct OnDevice {
  cudaStream_t stream = nullptr;
  explicit OnDevice(const at::Tensor&) {}
};
#define C10_CUDA_CHECK(expr)                                                                      \
  do {                                                                                           \
    const cudaError_t memops_err = (expr);                                                       \
    TORCH_CHECK(memops_err == cudaSuccess, "CUDA error: ", cudaGetErrorString(memops_err), " (", #expr, ")"); \
  } while (0)
#define C10_CUDA_KERNEL_LAUNCH_CHECK() (void)0
#endif

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Options of a workspace in the working precision of `t`'s dtype (acc_t: double for double, float
// for float, half and bfloat16).
inline at::TensorOptions acc_options(const at::Tensor& t) {
  return t.options().dtype(t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
}

// Whether p (null counts as aligned: an absent input) is aligned to `bytes`, as a vector load needs.
inline bool is_aligned(const void* p, size_t bytes) {
  return p == nullptr || reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// gridDim.y and .z are limited to 65535; grids here put the long dimension (rows, slots) on x.
inline dim3 grid_of(int64_t x, int64_t y = 1) {
  TORCH_CHECK(x < (int64_t(1) << 31) && y <= 65535, "memops: grid too large (", x, ", ", y, ")");
  return dim3(static_cast<unsigned>(std::max<int64_t>(x, 1)), static_cast<unsigned>(std::max<int64_t>(y, 1)));
}

// Call after every <<<...>>>: raises with the CUDA error where the launch failed.
#define MEMOPS_CHECK_LAUNCH() C10_CUDA_KERNEL_LAUNCH_CHECK()

// Every kernel launch of the launchers: kernel<<<grid, block, smem, stream>>>(args...) and the
// launch check; in the emulated build (MEMOPS_CUDA_EMU) the emulator runs the grid on the CPU, so
// the launch planning it checks is the GPU's.
template <typename... P, typename... Args>
void launch_kernel(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Args... args) {
#ifdef MEMOPS_CUDA_EMU
  (void)stream;
  emu::launch(kernel, grid, block, smem, args...);
#else
  kernel<<<grid, block, smem, stream>>>(args...);
  MEMOPS_CHECK_LAUNCH();
#endif
}

}  // namespace cuda
}  // namespace memops

// Launcher helpers shared by content_address.cu and ntm_address.cu (their kernels share
// similarity_kernels.cuh): the device's shared-memory limits and the vector-load alignment test.
#pragma once

#include "similarity_kernels.cuh"
#include "launch.h"

namespace memops {
namespace cuda {

inline content::DeviceLimits limits_of(const at::Tensor& t) {
  content::DeviceLimits limits;
  C10_CUDA_CHECK(content::device_limits(t.device().index(), &limits));
  return limits;
}

// Whether p allows similarity_kernels.cuh's vector loads of T (VecWidth<T> elements).
template <typename T>
bool vector_aligned(const void* p) {
  return is_aligned(p, sizeof(T) * content::VecWidth<T>::value);
}

}  // namespace cuda
}  // namespace memops

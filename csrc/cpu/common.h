// Helpers for the CPU launchers: dtype check, contiguity, work split.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../tensors.h"
#include "../validate.h"

namespace memops {
namespace cpu {

// The CPU kernels compute in the storage type (float or double), so a row of a float output can
// serve as the working buffer. Half types come with the CUDA kernels.
inline void check_cpu_dtype(const char* op, const at::Tensor& t) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op,
                   ": the CPU kernels take float32 or float64 tensors, got ",
                   dtype_name(t.scalar_type()));
}

// Items per task for at::parallel_for: enough work (~32k multiply-adds) that a thread is worth it.
inline int64_t grain(int64_t work_per_item) {
  constexpr int64_t kWorkPerTask = 32768;
  return std::max<int64_t>(1, kWorkPerTask / std::max<int64_t>(1, work_per_item));
}

}  // namespace cpu
}  // namespace memops

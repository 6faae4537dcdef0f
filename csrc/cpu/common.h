// Helpers for the CPU launchers: dtype check, contiguity, work split.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../tensors.h"
#include "../validate.h"
#include "isa.h"

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

// at::parallel_for whose body runs compiled for the instruction set in use (isa.h): the kernels'
// row loops go through here. A body (begin, end, isa) also gets the IsaConstant.
template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain_size, const F& body) {
  at::parallel_for(begin, end, grain_size, [&](int64_t first, int64_t last) {
    vectorized([&](auto isa) {
      if constexpr (std::is_invocable_v<const F&, int64_t, int64_t, decltype(isa)>) {
        body(first, last, isa);
      } else {
        body(first, last);
      }
    });
  });
}

}  // namespace cpu
}  // namespace memops

// shift on the CPU: one task per group of (b, h) rows; the circular convolution of a row is S
// straight multiply-add sweeps (math::shift_row). Backward needs only the inputs, which it has.
#include "../math/addressing.h"
#include "common.h"

namespace memops {
namespace cpu {

at::Tensor shift(const at::Tensor& weights_, const at::Tensor& kernel_) {
  check_shift(weights_, kernel_);
  check_cpu_dtype("shift", weights_);
  const auto weights = contiguous(weights_), kernel = contiguous(kernel_);
  const int64_t rows = weights.size(0) * weights.size(1), N = weights.size(2), S = kernel.size(2);
  auto out = at::empty_like(weights);
  AT_DISPATCH_FLOATING_TYPES(weights.scalar_type(), "shift", [&] {
    const scalar_t* w = weights.data_ptr<scalar_t>();
    const scalar_t* k = kernel.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    parallel_for(0, rows, grain(N * S), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        math::shift_row(w + row * N, k + row * S, N, S, o + row * N);
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> shift_backward(const at::Tensor& grad_, const at::Tensor& weights_,
                                                  const at::Tensor& kernel_) {
  check_shift(weights_, kernel_);
  check_cpu_dtype("shift", weights_);
  check_output_like("shift", grad_, "grad", weights_.sizes(), weights_);
  const auto grad = contiguous(grad_), weights = contiguous(weights_), kernel = contiguous(kernel_);
  const int64_t rows = weights.size(0) * weights.size(1), N = weights.size(2), S = kernel.size(2);
  auto grad_weights = at::empty_like(weights), grad_kernel = at::empty_like(kernel);
  AT_DISPATCH_FLOATING_TYPES(weights.scalar_type(), "shift_backward", [&] {
    const scalar_t* g = grad.data_ptr<scalar_t>();
    const scalar_t* w = weights.data_ptr<scalar_t>();
    const scalar_t* k = kernel.data_ptr<scalar_t>();
    scalar_t* gw = grad_weights.data_ptr<scalar_t>();
    scalar_t* gk = grad_kernel.data_ptr<scalar_t>();
    parallel_for(0, rows, grain(N * S), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        math::shift_backward_row(g + row * N, w + row * N, k + row * S, N, S, gw + row * N,
                                 gk + row * S);
      }
    });
  });
  return {grad_weights, grad_kernel};
}

TORCH_LIBRARY_IMPL(memops, CPU, m) {
  m.impl("shift", &shift);
  m.impl("_shift_backward", &shift_backward);
}

}  // namespace cpu
}  // namespace memops

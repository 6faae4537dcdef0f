// sharpen on the CPU: one task per group of (b, h) rows (math::sharpen_row, scale-free).
// Backward saves the input weights and the output p: both enter the gradient (see
// math::sharpen_backward_row), and p spares recomputing the normalised powers.
#include "../math/addressing.h"
#include "common.h"

namespace memops {
namespace cpu {

at::Tensor sharpen(const at::Tensor& weights_, const at::Tensor& gamma_) {
  check_sharpen(weights_, gamma_);
  check_cpu_dtype("sharpen", weights_);
  const auto weights = contiguous(weights_), gamma = contiguous(gamma_);
  const int64_t rows = weights.size(0) * weights.size(1), N = weights.size(2);
  auto out = at::empty_like(weights);
  AT_DISPATCH_FLOATING_TYPES(weights.scalar_type(), "sharpen", [&] {
    const scalar_t* w = weights.data_ptr<scalar_t>();
    const scalar_t* gm = gamma.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    parallel_for(0, rows, grain(8 * N), [&](int64_t begin, int64_t end, auto isa) {
      for (int64_t row = begin; row < end; ++row) {
        math::sharpen_row<kWideSimd<decltype(isa)>>(w + row * N, gm[row], N, o + row * N);
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> sharpen_backward(const at::Tensor& grad_, const at::Tensor& weights_,
                                                    const at::Tensor& gamma_, const at::Tensor& out_) {
  check_sharpen(weights_, gamma_);
  check_cpu_dtype("sharpen", weights_);
  check_output_like("sharpen", grad_, "grad", weights_.sizes(), weights_);
  check_output_like("sharpen", out_, "out", weights_.sizes(), weights_);
  const auto grad = contiguous(grad_), weights = contiguous(weights_), gamma = contiguous(gamma_);
  const auto out = contiguous(out_);
  const int64_t rows = weights.size(0) * weights.size(1), N = weights.size(2);
  auto grad_weights = at::empty_like(weights), grad_gamma = at::empty_like(gamma);
  AT_DISPATCH_FLOATING_TYPES(weights.scalar_type(), "sharpen_backward", [&] {
    const scalar_t* g = grad.data_ptr<scalar_t>();
    const scalar_t* w = weights.data_ptr<scalar_t>();
    const scalar_t* gm = gamma.data_ptr<scalar_t>();
    const scalar_t* p = out.data_ptr<scalar_t>();
    scalar_t* gw = grad_weights.data_ptr<scalar_t>();
    scalar_t* gg = grad_gamma.data_ptr<scalar_t>();
    parallel_for(0, rows, grain(16 * N), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        math::sharpen_backward_row(g + row * N, w + row * N, gm[row], p + row * N, N, gw + row * N,
                                   gg + row);
      }
    });
  });
  return {grad_weights, grad_gamma};
}

TORCH_LIBRARY_IMPL(memops, CPU, m) {
  m.impl("sharpen", &sharpen);
  m.impl("_sharpen_backward", &sharpen_backward);
}

}  // namespace cpu
}  // namespace memops

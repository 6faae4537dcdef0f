// read on the CPU. Forward: one task per group of (b, h) rows, r = sum_i w_i m_i (math::axpy_rows).
// Backward: one task per chunk of kChunk slots of one batch row, which reads those memory rows once
// for both gradients (math::read_backward_slots). Backward needs only the inputs.
#include "../math/memory.h"
#include "common.h"

namespace memops {
namespace cpu {

at::Tensor read(const at::Tensor& memory_, const at::Tensor& weights_) {
  check_read(memory_, weights_);
  check_cpu_dtype("read", memory_);
  const auto memory = contiguous(memory_), weights = contiguous(weights_);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), H = weights.size(1);
  auto out = at::empty({B, H, W}, memory.options());
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "read", [&] {
    const scalar_t* mem = memory.data_ptr<scalar_t>();
    const scalar_t* w = weights.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    parallel_for(0, B * H, grain(N * W), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const scalar_t* wr = w + row * N;
        scalar_t* r = o + row * W;
        for (int64_t c = 0; c < W; ++c) r[c] = 0;
        math::axpy_rows(mem + (row / H) * N * W, N, W, [&](int64_t i) { return wr[i]; }, r);
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> read_backward(const at::Tensor& grad_, const at::Tensor& memory_,
                                                 const at::Tensor& weights_) {
  check_read(memory_, weights_);
  check_cpu_dtype("read", memory_);
  const int64_t B = memory_.size(0), N = memory_.size(1), W = memory_.size(2), H = weights_.size(1);
  check_output_like("read", grad_, "grad", {B, H, W}, memory_);
  const auto grad = contiguous(grad_), memory = contiguous(memory_), weights = contiguous(weights_);
  auto grad_memory = at::empty_like(memory), grad_weights = at::empty_like(weights);
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "read_backward", [&] {
    const scalar_t* g = grad.data_ptr<scalar_t>();
    const scalar_t* mem = memory.data_ptr<scalar_t>();
    const scalar_t* w = weights.data_ptr<scalar_t>();
    scalar_t* gm = grad_memory.data_ptr<scalar_t>();
    scalar_t* gw = grad_weights.data_ptr<scalar_t>();
    constexpr int64_t kChunk = 64;
    const int64_t chunks = (N + kChunk - 1) / kChunk;
    parallel_for(0, B * chunks, grain(kChunk * H * W), [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / chunks, first = (task % chunks) * kChunk;
        const int64_t n = std::min(kChunk, N - first);
        math::read_backward_slots(g + b * H * W, mem + (b * N + first) * W, w + b * H * N + first, n,
                                  H, W, N, gw + b * H * N + first, gm + (b * N + first) * W);
      }
    });
  });
  return {grad_memory, grad_weights};
}

TORCH_LIBRARY_IMPL(memops, CPU, m) {
  m.impl("read", &read);
  m.impl("_read_backward", &read_backward);
}

}  // namespace cpu
}  // namespace memops

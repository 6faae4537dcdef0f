// read on the CPU. Forward: one task per group of (b, h) rows, r = sum_i w_i m_i (math::axpy_rows).
// Backward: one task per chunk of kChunk slots of one batch row, which reads those memory rows once
// for both gradients (math::read_backward_slots). Backward needs only the inputs.
#include "../math/memory.h"
#include "common.h"
#include "raw.h"

namespace memops {
namespace cpu {
namespace raw {

template <typename scalar_t>
void read(const scalar_t* mem, const scalar_t* w, int64_t w_stride, int64_t B, int64_t H, int64_t N, int64_t W,
          scalar_t* o) {
  parallel_for(0, B * H, grain(N * W), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / H;
      const scalar_t* wr = w + b * w_stride + (row % H) * N;
      scalar_t* r = o + row * W;
      for (int64_t c = 0; c < W; ++c) r[c] = 0;
      math::axpy_rows(mem + b * N * W, N, W, [&](int64_t i) { return wr[i]; }, r);
    }
  });
}

template <typename scalar_t>
void read_backward(const scalar_t* g, const scalar_t* mem, const scalar_t* w, int64_t w_stride, int64_t B,
                   int64_t H, int64_t N, int64_t W, scalar_t* gm, scalar_t* gw) {
  constexpr int64_t kChunk = 64;
  const int64_t chunks = (N + kChunk - 1) / kChunk;
  parallel_for(0, B * chunks, grain(kChunk * H * W), [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / chunks, first = (task % chunks) * kChunk;
      const int64_t n = std::min(kChunk, N - first);
      math::read_backward_slots(g + b * H * W, mem + (b * N + first) * W, w + b * w_stride + first, n, H, W, N,
                                gw + b * w_stride + first, gm + (b * N + first) * W);
    }
  });
}

#define MEMOPS_INSTANTIATE(scalar_t)                                                                            \
  template void read<scalar_t>(const scalar_t*, const scalar_t*, int64_t, int64_t, int64_t, int64_t, int64_t,   \
                               scalar_t*);                                                                      \
  template void read_backward<scalar_t>(const scalar_t*, const scalar_t*, const scalar_t*, int64_t, int64_t,    \
                                        int64_t, int64_t, int64_t, scalar_t*, scalar_t*);
MEMOPS_INSTANTIATE(float)
MEMOPS_INSTANTIATE(double)
#undef MEMOPS_INSTANTIATE

}  // namespace raw

at::Tensor read(const at::Tensor& memory_, const at::Tensor& weights_) {
  check_read(memory_, weights_);
  check_cpu_dtype("read", memory_);
  const auto memory = contiguous(memory_), weights = contiguous(weights_);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), H = weights.size(1);
  auto out = at::empty({B, H, W}, memory.options());
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "read", [&] {
    raw::read<scalar_t>(memory.data_ptr<scalar_t>(), weights.data_ptr<scalar_t>(), H * N, B, H, N, W,
                        out.data_ptr<scalar_t>());
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
    raw::read_backward<scalar_t>(grad.data_ptr<scalar_t>(), memory.data_ptr<scalar_t>(),
                                 weights.data_ptr<scalar_t>(), H * N, B, H, N, W, grad_memory.data_ptr<scalar_t>(),
                                 grad_weights.data_ptr<scalar_t>());
  });
  return {grad_memory, grad_weights};
}

TORCH_LIBRARY_IMPL(memops, CPU, m) {
  m.impl("read", &read);
  m.impl("_read_backward", &read_backward);
}

}  // namespace cpu
}  // namespace memops

// write on the CPU. Forward: one task per group of (b, i) slots; each slot is read once and written
// once for all heads together (math::write_slot). Backward needs only the inputs (the erase product
// is recomputed per slot; saving it would cost a (B, N, W) tensor).
//
// The backward's grad_erase and grad_add are sums over slots. Slots are cut into fixed chunks of
// kChunk; each (b, chunk) task sums into its own partial buffer, and the partials are added up in
// chunk order afterwards: no atomics, and the same bits whatever the thread count.
#include <vector>

#include "../math/memory.h"
#include "common.h"
#include "raw.h"

namespace memops {
namespace cpu {

namespace raw {

template <typename scalar_t>
void write(const scalar_t* mem, const scalar_t* w, int64_t w_stride, const scalar_t* e, const scalar_t* a,
           int64_t B, int64_t H, int64_t N, int64_t W, scalar_t* o) {
  parallel_for(0, B * N, grain(H * W), [&](int64_t begin, int64_t end) {
    for (int64_t slot = begin; slot < end; ++slot) {
      const int64_t b = slot / N, i = slot % N;
      math::write_slot(mem + slot * W, w + b * w_stride + i, e ? e + b * H * W : nullptr, a + b * H * W, H, W, N,
                       o + slot * W);
    }
  });
}

template <typename scalar_t>
void write_backward(const scalar_t* g, const scalar_t* mem, const scalar_t* w, int64_t w_stride, const scalar_t* e,
                    const scalar_t* a, int64_t B, int64_t H, int64_t N, int64_t W, scalar_t* gm, scalar_t* gw,
                    scalar_t* ge, scalar_t* ga) {
  constexpr int64_t kChunk = 64;
  const int64_t chunks = (N + kChunk - 1) / kChunk;
  const int64_t HW = H * W;
  // partial[b][chunk] holds that chunk's sums: grad_add (H x W) then grad_erase (H x W).
  std::vector<scalar_t> partial(B * chunks * 2 * HW, scalar_t(0));
  scalar_t* part = partial.data();
  parallel_for(0, B * chunks, grain(kChunk * H * W), [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> scratch((H + 1) * std::max<int64_t>(W, 1));  // (math::write_backward_slot)
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / chunks, first = (task % chunks) * kChunk;
      const int64_t last = std::min(N, first + kChunk);
      scalar_t* part_add = part + task * 2 * HW;
      for (int64_t i = first; i < last; ++i) {
        const int64_t slot = b * N + i;
        math::write_backward_slot(g + slot * W, mem + slot * W, w + b * w_stride + i, e ? e + b * HW : nullptr,
                                  a + b * HW, H, W, N, gm + slot * W, gw + b * w_stride + i, part_add + HW,
                                  part_add, scratch.data());
      }
    }
  });
  // Sum the partials over chunks, in chunk order.
  parallel_for(0, B, grain(chunks * HW), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      for (int64_t k = 0; k < HW; ++k) {
        scalar_t sa = 0, se = 0;
        for (int64_t c = 0; c < chunks; ++c) {
          sa += part[((b * chunks + c) * 2) * HW + k];
          se += part[((b * chunks + c) * 2 + 1) * HW + k];
        }
        ga[b * HW + k] = sa;
        if (e) ge[b * HW + k] = se;
      }
    }
  });
}

#define MEMOPS_INSTANTIATE(scalar_t)                                                                            \
  template void write<scalar_t>(const scalar_t*, const scalar_t*, int64_t, const scalar_t*, const scalar_t*,    \
                                int64_t, int64_t, int64_t, int64_t, scalar_t*);                                 \
  template void write_backward<scalar_t>(const scalar_t*, const scalar_t*, const scalar_t*, int64_t,            \
                                         const scalar_t*, const scalar_t*, int64_t, int64_t, int64_t, int64_t,  \
                                         scalar_t*, scalar_t*, scalar_t*, scalar_t*);
MEMOPS_INSTANTIATE(float)
MEMOPS_INSTANTIATE(double)
#undef MEMOPS_INSTANTIATE

}  // namespace raw

at::Tensor write(const at::Tensor& memory_, const at::Tensor& weights_,
                 const c10::optional<at::Tensor>& erase_, const at::Tensor& add_) {
  check_write(memory_, weights_, erase_, add_);
  check_cpu_dtype("write", memory_);
  const auto memory = contiguous(memory_), weights = contiguous(weights_), add = contiguous(add_);
  const auto erase = contiguous(erase_);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), H = weights.size(1);
  auto out = at::empty_like(memory);
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "write", [&] {
    raw::write<scalar_t>(memory.data_ptr<scalar_t>(), weights.data_ptr<scalar_t>(), H * N,
                         data_or_null<scalar_t>(erase), add.data_ptr<scalar_t>(), B, H, N, W,
                         out.data_ptr<scalar_t>());
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> write_backward(
    const at::Tensor& grad_, const at::Tensor& memory_, const at::Tensor& weights_,
    const c10::optional<at::Tensor>& erase_, const at::Tensor& add_) {
  check_write(memory_, weights_, erase_, add_);
  check_cpu_dtype("write", memory_);
  check_output_like("write", grad_, "grad", memory_.sizes(), memory_);
  const auto grad = contiguous(grad_), memory = contiguous(memory_), weights = contiguous(weights_);
  const auto erase = contiguous(erase_);
  const auto add = contiguous(add_);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), H = weights.size(1);
  auto grad_memory = at::empty_like(memory), grad_weights = at::empty_like(weights);
  auto grad_add = at::empty_like(add);
  // An empty grad_erase stands for "no erase input" (the schema has no optional outputs).
  auto grad_erase = erase.has_value() ? at::empty_like(*erase) : at::empty({0}, memory.options());
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "write_backward", [&] {
    raw::write_backward<scalar_t>(grad.data_ptr<scalar_t>(), memory.data_ptr<scalar_t>(),
                                  weights.data_ptr<scalar_t>(), H * N, data_or_null<scalar_t>(erase),
                                  add.data_ptr<scalar_t>(), B, H, N, W, grad_memory.data_ptr<scalar_t>(),
                                  grad_weights.data_ptr<scalar_t>(),
                                  erase.has_value() ? grad_erase.data_ptr<scalar_t>() : nullptr,
                                  grad_add.data_ptr<scalar_t>());
  });
  return {grad_memory, grad_weights, grad_erase, grad_add};
}

TORCH_LIBRARY_IMPL(memops, CPU, m) {
  m.impl("write", &write);
  m.impl("_write_backward", &write_backward);
}

}  // namespace cpu
}  // namespace memops

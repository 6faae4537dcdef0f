// ntm_sequence's shared parts: the sizes and checks of a call, which steps run, and the device-generic
// loop (csrc/ntm_sequence.cpp), which the CUDA build registers and the CPU kernel
// (csrc/cpu/ntm_sequence.cpp) falls back to under MEMOPS_NTM_SEQUENCE_ATEN=1.
#pragma once

#include <ATen/ATen.h>

#include <tuple>
#include <vector>

namespace memops {
namespace sequence {

// The sizes of a call, checked. The shapes are those of memops.nn.NTMCell's parameters and state.
struct Sizes {
  int64_t T, B, I, C, L, N, W, R, Hw, H, S, A, P, O;
  bool lstm, has_output;
};

Sizes check_forward(const at::Tensor& x, const c10::optional<at::Tensor>& lengths, const at::Tensor& h0,
                    const at::Tensor& c0, const at::Tensor& reads0, const at::Tensor& weights0,
                    const at::Tensor& memory0, at::TensorList cw, const at::Tensor& head_weight,
                    const at::Tensor& head_bias, const c10::optional<at::Tensor>& output_weight,
                    const c10::optional<at::Tensor>& output_bias, int64_t read_heads, int64_t shift_width,
                    c10::string_view controller);

// The backward's arguments checked against each other and the saved tensors.
Sizes check_backward(const at::Tensor& grad_y, const at::Tensor& grad_h, const at::Tensor& grad_c,
                     const at::Tensor& grad_reads, const at::Tensor& grad_weights, const at::Tensor& grad_memory,
                     const at::Tensor& x, const c10::optional<at::Tensor>& lengths, at::TensorList cw,
                     const at::Tensor& head_weight, const c10::optional<at::Tensor>& output_weight,
                     at::TensorList saved, int64_t read_heads, int64_t shift_width, c10::string_view controller);

// Which steps run, and for which rows. Steps t < all_until run every row; steps all_until <= t < until
// run the rows with t < lengths (mask(t)); steps from `until` on run none.
struct Steps {
  int64_t all_until, until;
  at::Tensor lengths;
  at::Tensor mask(int64_t t) const { return lengths.gt(t); }
};

Steps steps_of(const c10::optional<at::Tensor>& lengths, int64_t T, int64_t B);

using Forward = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                           std::vector<at::Tensor>>;
using Backward = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                            std::vector<at::Tensor>, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// The device-generic loop (ATen calls and memops ops through the dispatcher).
Forward forward(const at::Tensor& x, const c10::optional<at::Tensor>& lengths, const at::Tensor& h0,
                const at::Tensor& c0, const at::Tensor& reads0, const at::Tensor& weights0, const at::Tensor& memory0,
                at::TensorList cw, const at::Tensor& head_weight, const at::Tensor& head_bias,
                const c10::optional<at::Tensor>& output_weight, const c10::optional<at::Tensor>& output_bias,
                int64_t read_heads, int64_t shift_width, c10::string_view controller, double eps);
Backward backward(const at::Tensor& grad_y, const at::Tensor& grad_h, const at::Tensor& grad_c,
                  const at::Tensor& grad_reads, const at::Tensor& grad_weights, const at::Tensor& grad_memory,
                  const at::Tensor& x, const c10::optional<at::Tensor>& lengths, at::TensorList cw,
                  const at::Tensor& head_weight, const c10::optional<at::Tensor>& output_weight,
                  at::TensorList saved, int64_t read_heads, int64_t shift_width, c10::string_view controller,
                  double eps);

}  // namespace sequence
}  // namespace memops

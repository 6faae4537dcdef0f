// C++ entry points of the memops ops: each calls the op through the dispatcher (so it reaches the
// kernel of the tensors' device, and autograd where inputs require grad). For C++ users of the
// library, and for the autograd kernels in autograd.cpp. Shapes and meaning: README, memops/ops.py.
#pragma once

#include <ATen/ATen.h>

#include <tuple>
#include <vector>

namespace memops {

at::Tensor content_address(const at::Tensor& memory, const at::Tensor& keys, const at::Tensor& beta,
                           const c10::optional<at::Tensor>& mask, c10::string_view similarity, double eps);
std::tuple<at::Tensor, at::Tensor, at::Tensor> content_address_backward(
    const at::Tensor& grad, const at::Tensor& memory, const at::Tensor& keys, const at::Tensor& beta,
    const c10::optional<at::Tensor>& mask, const at::Tensor& weights, c10::string_view similarity, double eps);

at::Tensor content_scores(const at::Tensor& memory, const at::Tensor& keys, const at::Tensor& beta,
                          const c10::optional<at::Tensor>& mask, c10::string_view similarity, double eps);
std::tuple<at::Tensor, at::Tensor, at::Tensor> content_scores_backward(
    const at::Tensor& grad, const at::Tensor& memory, const at::Tensor& keys, const at::Tensor& beta,
    const c10::optional<at::Tensor>& mask, c10::string_view similarity, double eps);

at::Tensor shift(const at::Tensor& weights, const at::Tensor& kernel);
std::tuple<at::Tensor, at::Tensor> shift_backward(const at::Tensor& grad, const at::Tensor& weights,
                                                  const at::Tensor& kernel);

at::Tensor sharpen(const at::Tensor& weights, const at::Tensor& gamma);
std::tuple<at::Tensor, at::Tensor> sharpen_backward(const at::Tensor& grad, const at::Tensor& weights,
                                                    const at::Tensor& gamma, const at::Tensor& out);

at::Tensor ntm_address(const at::Tensor& memory, const at::Tensor& keys, const at::Tensor& beta,
                       const at::Tensor& gate, const at::Tensor& kernel, const at::Tensor& gamma,
                       const at::Tensor& prev_weights, double eps);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
ntm_address_backward(const at::Tensor& grad, const at::Tensor& memory, const at::Tensor& keys,
                     const at::Tensor& beta, const at::Tensor& gate, const at::Tensor& kernel,
                     const at::Tensor& gamma, const at::Tensor& prev_weights, const at::Tensor& out,
                     double eps);

at::Tensor read(const at::Tensor& memory, const at::Tensor& weights);
std::tuple<at::Tensor, at::Tensor> read_backward(const at::Tensor& grad, const at::Tensor& memory,
                                                 const at::Tensor& weights);

at::Tensor write(const at::Tensor& memory, const at::Tensor& weights,
                 const c10::optional<at::Tensor>& erase, const at::Tensor& add);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> write_backward(
    const at::Tensor& grad, const at::Tensor& memory, const at::Tensor& weights,
    const c10::optional<at::Tensor>& erase, const at::Tensor& add);

at::Tensor attention_gru(const at::Tensor& xr, const at::Tensor& xh, const at::Tensor& ur, const at::Tensor& uh,
                         const at::Tensor& bu, const at::Tensor& gates, const at::Tensor& h0,
                         const c10::optional<at::Tensor>& mask);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
attention_gru_backward(const at::Tensor& grad, const at::Tensor& xr, const at::Tensor& xh, const at::Tensor& ur,
                       const at::Tensor& uh, const at::Tensor& bu, const at::Tensor& gates, const at::Tensor& h0,
                       const c10::optional<at::Tensor>& mask, const at::Tensor& out);
// The whole NTM sequence (csrc/ntm_sequence.cpp): (y, h, c, reads, weights, memory, saved).
using NtmSequenceOut = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                  std::vector<at::Tensor>>;
NtmSequenceOut ntm_sequence(const at::Tensor& x, const c10::optional<at::Tensor>& lengths, const at::Tensor& h,
                            const at::Tensor& c, const at::Tensor& reads, const at::Tensor& weights,
                            const at::Tensor& memory, at::TensorList controller_weights,
                            const at::Tensor& head_weight, const at::Tensor& head_bias,
                            const c10::optional<at::Tensor>& output_weight,
                            const c10::optional<at::Tensor>& output_bias, int64_t read_heads,
                            int64_t shift_width, c10::string_view controller, double eps);
// (grad x, h, c, reads, weights, memory, controller_weights, head_weight, head_bias, output_weight,
// output_bias); the output layer's are empty without one.
using NtmSequenceGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                    std::vector<at::Tensor>, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
NtmSequenceGrads ntm_sequence_backward(const at::Tensor& grad_y, const at::Tensor& grad_h, const at::Tensor& grad_c,
                                       const at::Tensor& grad_reads, const at::Tensor& grad_weights,
                                       const at::Tensor& grad_memory, const at::Tensor& x,
                                       const c10::optional<at::Tensor>& lengths, at::TensorList controller_weights,
                                       const at::Tensor& head_weight, const c10::optional<at::Tensor>& output_weight,
                                       at::TensorList saved, int64_t read_heads, int64_t shift_width,
                                       c10::string_view controller, double eps);

}  // namespace memops

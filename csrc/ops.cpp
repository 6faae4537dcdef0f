// The op contract as schemas, and the C++ entry points of ops.h. Every device registers its kernels
// for these names (csrc/cpu/<op>.cpp: TORCH_LIBRARY_IMPL(memops, CPU, ...)); csrc/autograd.cpp
// registers the autograd kernels (which call the _<op>_backward ops); memops/_library.py registers
// the fake kernels that torch.compile traces with.
#include "ops.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

TORCH_LIBRARY(memops, m) {
  m.def("content_address(Tensor memory, Tensor keys, Tensor beta, Tensor? mask, str similarity, "
        "float eps) -> Tensor");
  m.def("_content_address_backward(Tensor grad, Tensor memory, Tensor keys, Tensor beta, Tensor? mask, "
        "Tensor weights, str similarity, float eps) -> (Tensor, Tensor, Tensor)");

  // content_address without the softmax: beta * sim, masked slots 0 (MemN2N's linear start).
  m.def("content_scores(Tensor memory, Tensor keys, Tensor beta, Tensor? mask, str similarity, "
        "float eps) -> Tensor");
  m.def("_content_scores_backward(Tensor grad, Tensor memory, Tensor keys, Tensor beta, Tensor? mask, "
        "str similarity, float eps) -> (Tensor, Tensor, Tensor)");

  m.def("shift(Tensor weights, Tensor kernel) -> Tensor");
  m.def("_shift_backward(Tensor grad, Tensor weights, Tensor kernel) -> (Tensor, Tensor)");

  m.def("sharpen(Tensor weights, Tensor gamma) -> Tensor");
  m.def("_sharpen_backward(Tensor grad, Tensor weights, Tensor gamma, Tensor out) -> (Tensor, Tensor)");

  m.def("ntm_address(Tensor memory, Tensor keys, Tensor beta, Tensor gate, Tensor kernel, Tensor gamma, "
        "Tensor prev_weights, float eps) -> Tensor");
  m.def("_ntm_address_backward(Tensor grad, Tensor memory, Tensor keys, Tensor beta, Tensor gate, "
        "Tensor kernel, Tensor gamma, Tensor prev_weights, Tensor out, float eps) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");

  m.def("read(Tensor memory, Tensor weights) -> Tensor");
  m.def("_read_backward(Tensor grad, Tensor memory, Tensor weights) -> (Tensor, Tensor)");

  // erase=None is the NSE write (e = 1). Its backward returns an empty grad_erase then.
  // DMN+'s attention GRU over facts: every state (B, F, D). Its backward takes the states (out).
  m.def("attention_gru(Tensor xr, Tensor xh, Tensor ur, Tensor uh, Tensor bu, Tensor gates, Tensor h0, "
        "Tensor? mask) -> Tensor");
  m.def("_attention_gru_backward(Tensor grad, Tensor xr, Tensor xh, Tensor ur, Tensor uh, Tensor bu, "
        "Tensor gates, Tensor h0, Tensor? mask, Tensor out) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");

  m.def("write(Tensor memory, Tensor weights, Tensor? erase, Tensor add) -> Tensor");
  m.def("_write_backward(Tensor grad, Tensor memory, Tensor weights, Tensor? erase, Tensor add) "
        "-> (Tensor, Tensor, Tensor, Tensor)");

  // A whole memops.nn.NTM sequence (csrc/ntm_sequence.cpp): outputs (T, B, O), the final state
  // (h, c, reads, weights, memory) and the tensors its backward needs (`saved`, not differentiable).
  // controller_weights: per layer w_ih, w_hh, b_ih, b_hh (lstm) or weight, bias (feedforward); h and
  // c are empty for feedforward. lengths (B,) or None: steps t >= lengths[b] leave row b unchanged.
  m.def("ntm_sequence(Tensor x, Tensor? lengths, Tensor h, Tensor c, Tensor reads, Tensor weights, "
        "Tensor memory, Tensor[] controller_weights, Tensor head_weight, Tensor head_bias, "
        "Tensor? output_weight, Tensor? output_bias, int read_heads, int shift_width, str controller, "
        "float eps) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor[])");
  m.def("_ntm_sequence_backward(Tensor grad_y, Tensor grad_h, Tensor grad_c, Tensor grad_reads, "
        "Tensor grad_weights, Tensor grad_memory, Tensor x, Tensor? lengths, Tensor[] controller_weights, "
        "Tensor head_weight, Tensor? output_weight, Tensor[] saved, int read_heads, int shift_width, "
        "str controller, float eps) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor[], Tensor, Tensor, Tensor, Tensor)");
}

namespace memops {
namespace {

// `op`: the typed dispatcher handle of memops::<name>, looked up once. (The emulated CUDA build
// compiles this file with -Dmemops=memops_cuda_emu: the namespace string follows the macro.)
#define MEMOPS_HANDLE(name, ...)                                                                  \
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(                        \
                             C10_STRINGIZE(memops) "::" name, "")                                \
                             .typed<__VA_ARGS__>();                                              \
  (void)0

using T = at::Tensor;
using OT = c10::optional<at::Tensor>;

}  // namespace

T content_address(const T& memory, const T& keys, const T& beta, const OT& mask,
                  c10::string_view similarity, double eps) {
  MEMOPS_HANDLE("content_address", T(const T&, const T&, const T&, const OT&, c10::string_view, double));
  return op.call(memory, keys, beta, mask, similarity, eps);
}

std::tuple<T, T, T> content_address_backward(const T& grad, const T& memory, const T& keys, const T& beta,
                                             const OT& mask, const T& weights, c10::string_view similarity,
                                             double eps) {
  MEMOPS_HANDLE("_content_address_backward",
                std::tuple<T, T, T>(const T&, const T&, const T&, const T&, const OT&, const T&,
                                    c10::string_view, double));
  return op.call(grad, memory, keys, beta, mask, weights, similarity, eps);
}

T content_scores(const T& memory, const T& keys, const T& beta, const OT& mask, c10::string_view similarity,
                 double eps) {
  MEMOPS_HANDLE("content_scores", T(const T&, const T&, const T&, const OT&, c10::string_view, double));
  return op.call(memory, keys, beta, mask, similarity, eps);
}

std::tuple<T, T, T> content_scores_backward(const T& grad, const T& memory, const T& keys, const T& beta,
                                            const OT& mask, c10::string_view similarity, double eps) {
  MEMOPS_HANDLE("_content_scores_backward",
                std::tuple<T, T, T>(const T&, const T&, const T&, const T&, const OT&, c10::string_view,
                                    double));
  return op.call(grad, memory, keys, beta, mask, similarity, eps);
}

T shift(const T& weights, const T& kernel) {
  MEMOPS_HANDLE("shift", T(const T&, const T&));
  return op.call(weights, kernel);
}

std::tuple<T, T> shift_backward(const T& grad, const T& weights, const T& kernel) {
  MEMOPS_HANDLE("_shift_backward", std::tuple<T, T>(const T&, const T&, const T&));
  return op.call(grad, weights, kernel);
}

T sharpen(const T& weights, const T& gamma) {
  MEMOPS_HANDLE("sharpen", T(const T&, const T&));
  return op.call(weights, gamma);
}

std::tuple<T, T> sharpen_backward(const T& grad, const T& weights, const T& gamma, const T& out) {
  MEMOPS_HANDLE("_sharpen_backward", std::tuple<T, T>(const T&, const T&, const T&, const T&));
  return op.call(grad, weights, gamma, out);
}

T ntm_address(const T& memory, const T& keys, const T& beta, const T& gate, const T& kernel,
              const T& gamma, const T& prev_weights, double eps) {
  MEMOPS_HANDLE("ntm_address",
                T(const T&, const T&, const T&, const T&, const T&, const T&, const T&, double));
  return op.call(memory, keys, beta, gate, kernel, gamma, prev_weights, eps);
}

std::tuple<T, T, T, T, T, T, T> ntm_address_backward(const T& grad, const T& memory, const T& keys,
                                                     const T& beta, const T& gate, const T& kernel,
                                                     const T& gamma, const T& prev_weights,
                                                     const T& out, double eps) {
  MEMOPS_HANDLE("_ntm_address_backward",
                std::tuple<T, T, T, T, T, T, T>(const T&, const T&, const T&, const T&, const T&,
                                                const T&, const T&, const T&, const T&, double));
  return op.call(grad, memory, keys, beta, gate, kernel, gamma, prev_weights, out, eps);
}

T read(const T& memory, const T& weights) {
  MEMOPS_HANDLE("read", T(const T&, const T&));
  return op.call(memory, weights);
}

std::tuple<T, T> read_backward(const T& grad, const T& memory, const T& weights) {
  MEMOPS_HANDLE("_read_backward", std::tuple<T, T>(const T&, const T&, const T&));
  return op.call(grad, memory, weights);
}

T write(const T& memory, const T& weights, const OT& erase, const T& add) {
  MEMOPS_HANDLE("write", T(const T&, const T&, const OT&, const T&));
  return op.call(memory, weights, erase, add);
}

std::tuple<T, T, T, T> write_backward(const T& grad, const T& memory, const T& weights, const OT& erase,
                                      const T& add) {
  MEMOPS_HANDLE("_write_backward",
                std::tuple<T, T, T, T>(const T&, const T&, const T&, const OT&, const T&));
  return op.call(grad, memory, weights, erase, add);
}

T attention_gru(const T& xr, const T& xh, const T& ur, const T& uh, const T& bu, const T& gates, const T& h0,
                const OT& mask) {
  MEMOPS_HANDLE("attention_gru",
                T(const T&, const T&, const T&, const T&, const T&, const T&, const T&, const OT&));
  return op.call(xr, xh, ur, uh, bu, gates, h0, mask);
}

std::tuple<T, T, T, T, T, T, T> attention_gru_backward(const T& grad, const T& xr, const T& xh, const T& ur,
                                                       const T& uh, const T& bu, const T& gates,
                                                       const T& h0, const OT& mask, const T& out) {
  MEMOPS_HANDLE("_attention_gru_backward",
                std::tuple<T, T, T, T, T, T, T>(const T&, const T&, const T&, const T&, const T&,
                                                const T&, const T&, const T&, const OT&, const T&));
  return op.call(grad, xr, xh, ur, uh, bu, gates, h0, mask, out);
}

NtmSequenceOut ntm_sequence(const T& x, const OT& lengths, const T& h, const T& c, const T& reads,
                            const T& weights, const T& memory, at::TensorList controller_weights,
                            const T& head_weight, const T& head_bias, const OT& output_weight,
                            const OT& output_bias, int64_t read_heads, int64_t shift_width,
                            c10::string_view controller, double eps) {
  MEMOPS_HANDLE("ntm_sequence",
                NtmSequenceOut(const T&, const OT&, const T&, const T&, const T&, const T&, const T&,
                               at::TensorList, const T&, const T&, const OT&, const OT&, int64_t, int64_t,
                               c10::string_view, double));
  return op.call(x, lengths, h, c, reads, weights, memory, controller_weights, head_weight, head_bias,
                 output_weight, output_bias, read_heads, shift_width, controller, eps);
}

NtmSequenceGrads ntm_sequence_backward(const T& grad_y, const T& grad_h, const T& grad_c, const T& grad_reads,
                                       const T& grad_weights, const T& grad_memory, const T& x,
                                       const OT& lengths, at::TensorList controller_weights,
                                       const T& head_weight, const OT& output_weight, at::TensorList saved,
                                       int64_t read_heads, int64_t shift_width, c10::string_view controller,
                                       double eps) {
  MEMOPS_HANDLE("_ntm_sequence_backward",
                NtmSequenceGrads(const T&, const T&, const T&, const T&, const T&, const T&, const T&,
                                 const OT&, at::TensorList, const T&, const OT&, at::TensorList, int64_t,
                                 int64_t, c10::string_view, double));
  return op.call(grad_y, grad_h, grad_c, grad_reads, grad_weights, grad_memory, x, lengths, controller_weights,
                 head_weight, output_weight, saved, read_heads, shift_width, controller, eps);
}

#undef MEMOPS_HANDLE

}  // namespace memops

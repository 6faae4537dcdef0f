// Autograd kernels: one torch::autograd::Function per op, registered for the Autograd dispatch key.
// Each forward runs the op below autograd (on whatever device kernel applies) and saves what its
// backward op needs; each backward calls the op's _<op>_backward. In C++ rather than with
// torch.library.register_autograd, whose Python overhead per call exceeds the kernels' time at NTM
// sizes; torch.compile traces through these (fake kernels: memops/_library.py). Double backward is
// not supported: the backward ops' autograd kernels refuse inputs that require grad while grad mode
// is on (an error says so) and otherwise go straight to the device kernel.
#include <torch/autograd.h>
#include <torch/library.h>

#include "ops.h"

namespace memops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using T = at::Tensor;
using OT = c10::optional<at::Tensor>;

OT saved_optional(const T& t) { return t.defined() ? OT(t) : c10::nullopt; }

class ContentAddress : public torch::autograd::Function<ContentAddress> {
 public:
  static T forward(AutogradContext* ctx, const T& memory, const T& keys, const T& beta, const OT& mask,
                   c10::string_view similarity, double eps) {
    at::AutoDispatchBelowADInplaceOrView guard;
    T out = memops::content_address(memory, keys, beta, mask, similarity, eps);
    // The output (the weights) enters the softmax backward; the similarities are recomputed.
    ctx->save_for_backward({memory, keys, beta, mask.value_or(T()), out});
    ctx->saved_data["similarity"] = std::string(similarity);
    ctx->saved_data["eps"] = eps;
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    auto [gm, gk, gb] = memops::content_address_backward(
        grads[0], s[0], s[1], s[2], saved_optional(s[3]), s[4],
        ctx->saved_data["similarity"].toStringRef(), ctx->saved_data["eps"].toDouble());
    return {gm, gk, gb, T(), T(), T()};
  }
};

class ContentScores : public torch::autograd::Function<ContentScores> {
 public:
  static T forward(AutogradContext* ctx, const T& memory, const T& keys, const T& beta, const OT& mask,
                   c10::string_view similarity, double eps) {
    at::AutoDispatchBelowADInplaceOrView guard;
    // Inputs only: the backward recomputes the similarities.
    ctx->save_for_backward({memory, keys, beta, mask.value_or(T())});
    ctx->saved_data["similarity"] = std::string(similarity);
    ctx->saved_data["eps"] = eps;
    return memops::content_scores(memory, keys, beta, mask, similarity, eps);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    auto [gm, gk, gb] = memops::content_scores_backward(
        grads[0], s[0], s[1], s[2], saved_optional(s[3]), ctx->saved_data["similarity"].toStringRef(),
        ctx->saved_data["eps"].toDouble());
    return {gm, gk, gb, T(), T(), T()};
  }
};

class Shift : public torch::autograd::Function<Shift> {
 public:
  static T forward(AutogradContext* ctx, const T& weights, const T& kernel) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({weights, kernel});
    return memops::shift(weights, kernel);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    auto [gw, gk] = memops::shift_backward(grads[0], s[0], s[1]);
    return {gw, gk};
  }
};

class Sharpen : public torch::autograd::Function<Sharpen> {
 public:
  static T forward(AutogradContext* ctx, const T& weights, const T& gamma) {
    at::AutoDispatchBelowADInplaceOrView guard;
    T out = memops::sharpen(weights, gamma);
    ctx->save_for_backward({weights, gamma, out});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    auto [gw, gg] = memops::sharpen_backward(grads[0], s[0], s[1], s[2]);
    return {gw, gg};
  }
};

class NtmAddress : public torch::autograd::Function<NtmAddress> {
 public:
  static T forward(AutogradContext* ctx, const T& memory, const T& keys, const T& beta, const T& gate,
                   const T& kernel, const T& gamma, const T& prev_weights, double eps) {
    at::AutoDispatchBelowADInplaceOrView guard;
    T out = memops::ntm_address(memory, keys, beta, gate, kernel, gamma, prev_weights, eps);
    // Inputs and output only: the backward recomputes the chain's intermediates per row.
    ctx->save_for_backward({memory, keys, beta, gate, kernel, gamma, prev_weights, out});
    ctx->saved_data["eps"] = eps;
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    auto [gm, gk, gb, gg, gs, gy, gp] = memops::ntm_address_backward(
        grads[0], s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], ctx->saved_data["eps"].toDouble());
    return {gm, gk, gb, gg, gs, gy, gp, T()};
  }
};

class Read : public torch::autograd::Function<Read> {
 public:
  static T forward(AutogradContext* ctx, const T& memory, const T& weights) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({memory, weights});
    return memops::read(memory, weights);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    auto [gm, gw] = memops::read_backward(grads[0], s[0], s[1]);
    return {gm, gw};
  }
};

class Write : public torch::autograd::Function<Write> {
 public:
  static T forward(AutogradContext* ctx, const T& memory, const T& weights, const OT& erase, const T& add) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({memory, weights, erase.value_or(T()), add});
    return memops::write(memory, weights, erase, add);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const OT erase = saved_optional(s[2]);
    auto [gm, gw, ge, ga] = memops::write_backward(grads[0], s[0], s[1], erase, s[3]);
    return {gm, gw, erase.has_value() ? ge : T(), ga};
  }
};

class AttentionGru : public torch::autograd::Function<AttentionGru> {
 public:
  static T forward(AutogradContext* ctx, const T& xr, const T& xh, const T& ur, const T& uh, const T& bu,
                   const T& gates, const T& h0, const OT& mask) {
    at::AutoDispatchBelowADInplaceOrView guard;
    T out = memops::attention_gru(xr, xh, ur, uh, bu, gates, h0, mask);
    // The states (the output, kept anyway) are every h_{i-1} the backward needs; the gates r, u, c
    // of each step are recomputed from them (one GEMM per fact, as in forward) rather than saved
    // (three more B x F x D tensors).
    ctx->save_for_backward({xr, xh, ur, uh, bu, gates, h0, mask.value_or(T()), out});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    auto [gxr, gxh, gur, guh, gbu, gg, gh0] =
        memops::attention_gru_backward(grads[0], s[0], s[1], s[2], s[3], s[4], s[5], s[6], saved_optional(s[7]), s[8]);
    return {gxr, gxh, gur, guh, gbu, gg, gh0, T()};
  }
};

// The whole NTM sequence: the forward op returns, after the outputs and final state, the tensors its
// backward needs (csrc/ntm_sequence.cpp says which); they are outputs without gradient.
class NtmSequence : public torch::autograd::Function<NtmSequence> {
 public:
  static variable_list forward(AutogradContext* ctx, const T& x, const OT& lengths, const T& h, const T& c,
                               const T& reads, const T& weights, const T& memory, at::TensorList controller_weights,
                               const T& head_weight, const T& head_bias, const OT& output_weight,
                               const OT& output_bias, int64_t read_heads, int64_t shift_width,
                               c10::string_view controller, double eps) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, h1, c1, r1, w1, m1, saved] =
        memops::ntm_sequence(x, lengths, h, c, reads, weights, memory, controller_weights, head_weight, head_bias,
                             output_weight, output_bias, read_heads, shift_width, controller, eps);
    ctx->mark_non_differentiable(saved);
    ctx->set_materialize_grads(false);  // the backward makes the zeros it needs, none for `saved`
    variable_list to_save = {x, lengths.value_or(T()), head_weight, output_weight.value_or(T())};
    to_save.insert(to_save.end(), controller_weights.begin(), controller_weights.end());
    to_save.insert(to_save.end(), saved.begin(), saved.end());
    ctx->save_for_backward(to_save);
    ctx->saved_data["controller_weights"] = static_cast<int64_t>(controller_weights.size());
    ctx->saved_data["read_heads"] = read_heads;
    ctx->saved_data["shift_width"] = shift_width;
    ctx->saved_data["controller"] = std::string(controller);
    ctx->saved_data["eps"] = eps;
    variable_list out = {y, h1, c1, r1, w1, m1};
    out.insert(out.end(), saved.begin(), saved.end());
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const int64_t n_cw = ctx->saved_data["controller_weights"].toInt();
    const T &x = s[0], &head_weight = s[2];
    const OT lengths = saved_optional(s[1]), output_weight = saved_optional(s[3]);
    const variable_list cw(s.begin() + 4, s.begin() + 4 + n_cw), saved(s.begin() + 4 + n_cw, s.end());
    const bool lstm = ctx->saved_data["controller"].toStringRef() == "lstm";
    // the final state's shapes are those of the saved states (hs, cs: (L, T+1, B, C); reads, weights,
    // memories: (T+1, B, ...))
    const int64_t O = output_weight.has_value() ? output_weight->size(0)
                                                : head_weight.size(1) + saved[5].size(2) * saved[5].size(3);
    // an unused output's gradient: a zero expanded to its shape (no memory; the kernels copy what they take)
    auto grad_or_zeros = [&](size_t i, const T& like) {
      return grads[i].defined() ? grads[i] : at::zeros({}, like.options()).expand(like.sizes());
    };
    const T empty = at::empty({0}, x.options());
    const T gy = grads[0].defined() ? grads[0] : at::zeros({x.size(0), x.size(1), O}, x.options());
    const T gh = lstm ? grad_or_zeros(1, saved[0].select(1, 0)) : empty;
    const T gc = lstm ? grad_or_zeros(2, saved[1].select(1, 0)) : empty;
    auto [g_x, g_h, g_c, g_r, g_w, g_m, g_cw, g_hw, g_hb, g_ow, g_ob] = memops::ntm_sequence_backward(
        gy, gh, gc, grad_or_zeros(3, saved[5].select(0, 0)), grad_or_zeros(4, saved[6].select(0, 0)),
        grad_or_zeros(5, saved[4].select(0, 0)), x, lengths, cw, head_weight, output_weight, saved,
        ctx->saved_data["read_heads"].toInt(), ctx->saved_data["shift_width"].toInt(),
        ctx->saved_data["controller"].toStringRef(), ctx->saved_data["eps"].toDouble());
    variable_list out = {g_x, T(), lstm ? g_h : T(), lstm ? g_c : T(), g_r, g_w, g_m};
    out.insert(out.end(), g_cw.begin(), g_cw.end());
    out.insert(out.end(), {g_hw, g_hb, output_weight.has_value() ? g_ow : T(), output_weight.has_value() ? g_ob : T()});
    out.insert(out.end(), {T(), T(), T(), T()});  // read_heads, shift_width, controller, eps
    return out;
  }
};

// Autograd kernel of a backward op: no derivative, so it must not be asked for one.
template <typename... Args>
void refuse_double_backward(const char* op, const Args&... args) {
  if (!at::GradMode::is_enabled()) return;
  bool requires_grad = false;
  auto visit = [&](const auto& a) {
    using A = std::decay_t<decltype(a)>;
    if constexpr (std::is_same_v<A, T>) requires_grad |= a.defined() && a.requires_grad();
    if constexpr (std::is_same_v<A, OT>) requires_grad |= a.has_value() && a->requires_grad();
  };
  (visit(args), ...);
  TORCH_CHECK(!requires_grad, "memops: ", op, " has no derivative: double backward (create_graph=True "
              "through a memops op) is not implemented");
}

}  // namespace

TORCH_LIBRARY_IMPL(memops, Autograd, m) {
  m.impl("content_address", [](const T& memory, const T& keys, const T& beta, const OT& mask,
                               c10::string_view similarity, double eps) {
    return ContentAddress::apply(memory, keys, beta, mask, similarity, eps);
  });
  m.impl("content_scores", [](const T& memory, const T& keys, const T& beta, const OT& mask,
                              c10::string_view similarity, double eps) {
    return ContentScores::apply(memory, keys, beta, mask, similarity, eps);
  });
  m.impl("shift", [](const T& weights, const T& kernel) { return Shift::apply(weights, kernel); });
  m.impl("sharpen", [](const T& weights, const T& gamma) { return Sharpen::apply(weights, gamma); });
  m.impl("ntm_address", [](const T& memory, const T& keys, const T& beta, const T& gate, const T& kernel,
                           const T& gamma, const T& prev_weights, double eps) {
    return NtmAddress::apply(memory, keys, beta, gate, kernel, gamma, prev_weights, eps);
  });
  m.impl("read", [](const T& memory, const T& weights) { return Read::apply(memory, weights); });
  m.impl("attention_gru", [](const T& xr, const T& xh, const T& ur, const T& uh, const T& bu, const T& gates,
                             const T& h0, const OT& mask) {
    return AttentionGru::apply(xr, xh, ur, uh, bu, gates, h0, mask);
  });
  m.impl("write", [](const T& memory, const T& weights, const OT& erase, const T& add) {
    return Write::apply(memory, weights, erase, add);
  });
  m.impl("ntm_sequence", [](const T& x, const OT& lengths, const T& h, const T& c, const T& reads,
                            const T& weights, const T& memory, at::TensorList controller_weights,
                            const T& head_weight, const T& head_bias, const OT& output_weight,
                            const OT& output_bias, int64_t read_heads, int64_t shift_width,
                            c10::string_view controller, double eps) {
    const variable_list out =
        NtmSequence::apply(x, lengths, h, c, reads, weights, memory, controller_weights, head_weight, head_bias,
                           output_weight, output_bias, read_heads, shift_width, controller, eps);
    return NtmSequenceOut(out[0], out[1], out[2], out[3], out[4], out[5],
                          std::vector<T>(out.begin() + 6, out.end()));
  });

  // The backward ops: refuse double backward, else run the device kernel.
  m.impl("_content_address_backward", [](const T& grad, const T& memory, const T& keys, const T& beta,
                                         const OT& mask, const T& weights, c10::string_view similarity,
                                         double eps) {
    refuse_double_backward("content_address", grad, memory, keys, beta, mask, weights);
    at::AutoDispatchBelowADInplaceOrView guard;
    return memops::content_address_backward(grad, memory, keys, beta, mask, weights, similarity, eps);
  });
  m.impl("_content_scores_backward", [](const T& grad, const T& memory, const T& keys, const T& beta,
                                        const OT& mask, c10::string_view similarity, double eps) {
    refuse_double_backward("content_scores", grad, memory, keys, beta, mask);
    at::AutoDispatchBelowADInplaceOrView guard;
    return memops::content_scores_backward(grad, memory, keys, beta, mask, similarity, eps);
  });
  m.impl("_shift_backward", [](const T& grad, const T& weights, const T& kernel) {
    refuse_double_backward("shift", grad, weights, kernel);
    at::AutoDispatchBelowADInplaceOrView guard;
    return memops::shift_backward(grad, weights, kernel);
  });
  m.impl("_sharpen_backward", [](const T& grad, const T& weights, const T& gamma, const T& out) {
    refuse_double_backward("sharpen", grad, weights, gamma, out);
    at::AutoDispatchBelowADInplaceOrView guard;
    return memops::sharpen_backward(grad, weights, gamma, out);
  });
  m.impl("_ntm_address_backward", [](const T& grad, const T& memory, const T& keys, const T& beta,
                                     const T& gate, const T& kernel, const T& gamma, const T& prev_weights,
                                     const T& out, double eps) {
    refuse_double_backward("ntm_address", grad, memory, keys, beta, gate, kernel, gamma, prev_weights, out);
    at::AutoDispatchBelowADInplaceOrView guard;
    return memops::ntm_address_backward(grad, memory, keys, beta, gate, kernel, gamma, prev_weights, out, eps);
  });
  m.impl("_read_backward", [](const T& grad, const T& memory, const T& weights) {
    refuse_double_backward("read", grad, memory, weights);
    at::AutoDispatchBelowADInplaceOrView guard;
    return memops::read_backward(grad, memory, weights);
  });
  m.impl("_attention_gru_backward", [](const T& grad, const T& xr, const T& xh, const T& ur, const T& uh,
                                       const T& bu, const T& gates, const T& h0, const OT& mask, const T& out) {
    refuse_double_backward("attention_gru", grad, xr, xh, ur, uh, bu, gates, h0, mask, out);
    at::AutoDispatchBelowADInplaceOrView guard;
    return memops::attention_gru_backward(grad, xr, xh, ur, uh, bu, gates, h0, mask, out);
  });
  m.impl("_write_backward", [](const T& grad, const T& memory, const T& weights, const OT& erase,
                               const T& add) {
    refuse_double_backward("write", grad, memory, weights, erase, add);
    at::AutoDispatchBelowADInplaceOrView guard;
    return memops::write_backward(grad, memory, weights, erase, add);
  });
  m.impl("_ntm_sequence_backward", [](const T& grad_y, const T& grad_h, const T& grad_c, const T& grad_reads,
                                      const T& grad_weights, const T& grad_memory, const T& x, const OT& lengths,
                                      at::TensorList controller_weights, const T& head_weight,
                                      const OT& output_weight, at::TensorList saved, int64_t read_heads,
                                      int64_t shift_width, c10::string_view controller, double eps) {
    refuse_double_backward("ntm_sequence", grad_y, grad_h, grad_c, grad_reads, grad_weights, grad_memory, x,
                           head_weight, output_weight);
    for (const T& t : controller_weights) refuse_double_backward("ntm_sequence", t);
    at::AutoDispatchBelowADInplaceOrView guard;
    return memops::ntm_sequence_backward(grad_y, grad_h, grad_c, grad_reads, grad_weights, grad_memory, x,
                                         lengths, controller_weights, head_weight, output_weight, saved,
                                         read_heads, shift_width, controller, eps);
  });
}


}  // namespace memops

// content_scores on the CPU: content_address without the softmax (MemN2N's linear start). One task
// per (b, h) row computes beta * sim over the memory of batch b; masked slots are exactly 0.
//
// Backward saves only the forward's inputs: the similarities are recomputed in the pass over memory
// that the key gradient makes anyway. The math is content_address's (csrc/math/addressing.h).
#include <vector>

#include "content.h"

namespace memops {
namespace cpu {

at::Tensor content_scores(const at::Tensor& memory_, const at::Tensor& keys_, const at::Tensor& beta_,
                          const c10::optional<at::Tensor>& mask_, c10::string_view similarity, double eps) {
  check_content_scores(memory_, keys_, beta_, mask_, similarity, eps);
  check_cpu_dtype("content_scores", memory_);
  const auto memory = contiguous(memory_), keys = contiguous(keys_), beta = contiguous(beta_);
  const auto mask = contiguous(mask_);
  const int64_t B = memory.size(0), N = memory.size(1), W = memory.size(2), H = keys.size(1);
  const bool cosine = similarity == "cosine";
  auto out = at::empty({B, H, N}, memory.options());
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "content_scores", [&] {
    const scalar_t* mem = memory.data_ptr<scalar_t>();
    const scalar_t* key = keys.data_ptr<scalar_t>();
    const scalar_t* bet = beta.data_ptr<scalar_t>();
    const bool* keep = data_or_null<bool>(mask);
    scalar_t* o = out.data_ptr<scalar_t>();
    const ForwardNorms<scalar_t> norms(memory, H, cosine, scalar_t(eps));
    parallel_for(0, B * H, grain(N * W), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> buffer(norms.here ? N : 0);
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / H;
        scalar_t* p = o + row * N;
        math::similarity_row<scalar_t, scalar_t>(mem + b * N * W, key + row * W,
                                                 norms.row(b, N, buffer.data()), norms.here, N, W,
                                                 cosine, scalar_t(eps), p);
        const bool* keep_b = keep ? keep + b * N : nullptr;
        for (int64_t i = 0; i < N; ++i) p[i] = (!keep_b || keep_b[i]) ? p[i] * bet[row] : scalar_t(0);
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> content_scores_backward(
    const at::Tensor& grad_, const at::Tensor& memory_, const at::Tensor& keys_, const at::Tensor& beta_,
    const c10::optional<at::Tensor>& mask_, c10::string_view similarity, double eps) {
  check_content_scores(memory_, keys_, beta_, mask_, similarity, eps);
  check_cpu_dtype("content_scores", memory_);
  const int64_t B = memory_.size(0), N = memory_.size(1), W = memory_.size(2), H = keys_.size(1);
  check_output_like("content_scores", grad_, "grad", {B, H, N}, memory_);
  const auto memory = contiguous(memory_), keys = contiguous(keys_), beta = contiguous(beta_);
  const auto grad = contiguous(grad_);
  const auto mask = contiguous(mask_);
  const bool cosine = similarity == "cosine";
  auto grad_memory = at::empty_like(memory), grad_keys = at::empty_like(keys);
  auto grad_beta = at::empty_like(beta);
  auto sim = at::empty({B, H, N}, memory.options()), dsim = at::empty_like(sim);
  auto key_norm = at::empty({B, H}, memory.options());
  AT_DISPATCH_FLOATING_TYPES(memory.scalar_type(), "content_scores_backward", [&] {
    const scalar_t* mem = memory.data_ptr<scalar_t>();
    const scalar_t* key = keys.data_ptr<scalar_t>();
    const scalar_t* bet = beta.data_ptr<scalar_t>();
    const scalar_t* g = grad.data_ptr<scalar_t>();
    const bool* keep = data_or_null<bool>(mask);
    scalar_t* s = sim.data_ptr<scalar_t>();
    scalar_t* ds = dsim.data_ptr<scalar_t>();
    scalar_t* kn = key_norm.data_ptr<scalar_t>();
    scalar_t* gk = grad_keys.data_ptr<scalar_t>();
    scalar_t* gb = grad_beta.data_ptr<scalar_t>();
    const auto norms = backward_norms<scalar_t>(memory, H, cosine, scalar_t(eps));
    scalar_t* mn = cosine ? norms.data_ptr<scalar_t>() : nullptr;
    // Phase 1, per (b, h) row: grad_beta = sum_i g_i sim_i over kept slots, dsim = beta * g (0 where
    // masked: those scores are constants), grad_key from dsim.
    parallel_for(0, B * H, grain(N * W), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / H;
        const scalar_t* mem_b = mem + b * N * W;
        const bool* keep_b = keep ? keep + b * N : nullptr;
        scalar_t* mn_b = mn ? mn + b * N : nullptr;
        scalar_t* s_row = s + row * N;
        scalar_t* ds_row = ds + row * N;
        kn[row] = math::similarity_row<scalar_t, scalar_t>(mem_b, key + row * W, mn_b, H == 1, N, W,
                                                           cosine, scalar_t(eps), s_row);
        math::Sum<scalar_t> gbeta = 0;
        for (int64_t i = 0; i < N; ++i) {
          const scalar_t gi = (!keep_b || keep_b[i]) ? g[row * N + i] : scalar_t(0);
          gbeta += gi * s_row[i];
          ds_row[i] = gi * bet[row];
        }
        gb[row] = scalar_t(gbeta);
        math::key_grad_row<scalar_t, scalar_t>(mem_b, key + row * W, mn_b, N, W, cosine,
                                               scalar_t(eps), kn[row], s_row, ds_row, gk + row * W);
      }
    });
    // Phase 2, per (b, i) slot: the memory gradient, summed over heads.
    content_memory_grad<scalar_t>(mem, key, kn, mn, s, ds, B, H, N, W, cosine, scalar_t(eps),
                                  grad_memory.data_ptr<scalar_t>());
  });
  return {grad_memory, grad_keys, grad_beta};
}

TORCH_LIBRARY_IMPL(memops, CPU, m) {
  m.impl("content_scores", &content_scores);
  m.impl("_content_scores_backward", &content_scores_backward);
}

}  // namespace cpu
}  // namespace memops

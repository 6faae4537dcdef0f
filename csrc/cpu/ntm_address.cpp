// ntm_address on the CPU: the whole NTM addressing of one (b, h) row in one task, in row-sized
// buffers that stay in cache: cosine content -> softmax -> interpolate -> shift -> sharpen.
//
// Forward saves nothing but its inputs and output. Backward recomputes the chain per row (an
// O(N W + N S) pass, the same work as the forward) instead of saving the content, gated and shifted
// weights: an NTM unrolled over T steps would otherwise keep three more (B, H, N) tensors per head and
// step. It then runs the chain backwards (sharpen -> shift -> interpolate -> softmax -> similarity)
// and finishes with the memory-gradient phase shared with content_address.
#include <vector>

#include "content.h"

namespace memops {
namespace cpu {
namespace {

// The forward chain of one row, leaving every intermediate in the caller's buffers.
template <typename scalar_t>
struct Row {
  const scalar_t *mem;
  scalar_t* slot_norm;  // read, or written first when norms_here (see ForwardNorms)
  bool norms_here;
  const scalar_t *key, *kernel, *prev;
  scalar_t beta, gate, gamma;
  int64_t N, W, S;
  scalar_t eps;

  // sim: similarities; content: softmax weights; gated: interpolated; shifted: before sharpening.
  // Returns the key's clamped norm.
  scalar_t forward(scalar_t* sim, scalar_t* content, scalar_t* gated, scalar_t* shifted) const {
    const scalar_t key_norm =
        math::similarity_row<scalar_t, scalar_t>(mem, key, slot_norm, norms_here, N, W, true, eps, sim);
    for (int64_t i = 0; i < N; ++i) content[i] = beta * sim[i];
    math::masked_softmax_row(content, nullptr, N);
    for (int64_t i = 0; i < N; ++i) gated[i] = gate * content[i] + (scalar_t(1) - gate) * prev[i];
    math::shift_row(gated, kernel, N, S, shifted);
    return key_norm;
  }
};

struct Inputs {
  at::Tensor memory, keys, beta, gate, kernel, gamma, prev;
  int64_t B, H, N, W, S;

  // The inputs of row r; slot_norm, norms_here: where its slot norms are (see ForwardNorms).
  template <typename scalar_t>
  Row<scalar_t> row(int64_t r, scalar_t* slot_norm, bool norms_here, double eps) const {
    return Row<scalar_t>{memory.data_ptr<scalar_t>() + (r / H) * N * W,
                         slot_norm,
                         norms_here,
                         keys.data_ptr<scalar_t>() + r * W,
                         kernel.data_ptr<scalar_t>() + r * S,
                         prev.data_ptr<scalar_t>() + r * N,
                         beta.data_ptr<scalar_t>()[r],
                         gate.data_ptr<scalar_t>()[r],
                         gamma.data_ptr<scalar_t>()[r],
                         N, W, S, scalar_t(eps)};
  }
};

Inputs prepare(const at::Tensor& memory, const at::Tensor& keys, const at::Tensor& beta,
               const at::Tensor& gate, const at::Tensor& kernel, const at::Tensor& gamma,
               const at::Tensor& prev_weights, double eps) {
  check_ntm_address(memory, keys, beta, gate, kernel, gamma, prev_weights, eps);
  check_cpu_dtype("ntm_address", memory);
  return Inputs{contiguous(memory), contiguous(keys), contiguous(beta), contiguous(gate),
                contiguous(kernel), contiguous(gamma), contiguous(prev_weights),
                memory.size(0), keys.size(1), memory.size(1), memory.size(2), kernel.size(2)};
}

}  // namespace

at::Tensor ntm_address(const at::Tensor& memory, const at::Tensor& keys, const at::Tensor& beta,
                       const at::Tensor& gate, const at::Tensor& kernel, const at::Tensor& gamma,
                       const at::Tensor& prev_weights, double eps) {
  const Inputs in = prepare(memory, keys, beta, gate, kernel, gamma, prev_weights, eps);
  const int64_t H = in.H, N = in.N, W = in.W, S = in.S;
  auto out = at::empty({in.B, H, N}, in.memory.options());
  AT_DISPATCH_FLOATING_TYPES(in.memory.scalar_type(), "ntm_address", [&] {
    scalar_t* o = out.data_ptr<scalar_t>();
    const ForwardNorms<scalar_t> norms(in.memory, H, true, scalar_t(eps));
    parallel_for(0, in.B * H, grain(N * (W + S)), [&](int64_t begin, int64_t end, auto isa) {
      std::vector<scalar_t> buf(5 * N);  // sim, content, gated, shifted, slot norms
      scalar_t *sim = buf.data(), *content = sim + N, *gated = content + N, *shifted = gated + N;
      for (int64_t row = begin; row < end; ++row) {
        const auto r = in.row<scalar_t>(row, norms.row(row / H, N, shifted + N), norms.here, eps);
        r.forward(sim, content, gated, shifted);
        math::sharpen_row<kWideSimd<decltype(isa)>>(shifted, r.gamma, N, o + row * N);
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
ntm_address_backward(const at::Tensor& grad_, const at::Tensor& memory, const at::Tensor& keys,
                     const at::Tensor& beta, const at::Tensor& gate, const at::Tensor& kernel,
                     const at::Tensor& gamma, const at::Tensor& prev_weights, const at::Tensor& out_,
                     double eps) {
  const Inputs in = prepare(memory, keys, beta, gate, kernel, gamma, prev_weights, eps);
  const int64_t B = in.B, H = in.H, N = in.N, W = in.W, S = in.S;
  check_output_like("ntm_address", grad_, "grad", {B, H, N}, memory);
  check_output_like("ntm_address", out_, "out", {B, H, N}, memory);
  const auto grad = contiguous(grad_), out = contiguous(out_);
  auto grad_memory = at::empty_like(in.memory), grad_keys = at::empty_like(in.keys);
  auto grad_beta = at::empty_like(in.beta), grad_gate = at::empty_like(in.gate);
  auto grad_kernel = at::empty_like(in.kernel), grad_gamma = at::empty_like(in.gamma);
  auto grad_prev = at::empty_like(in.prev);
  auto sim = at::empty({B, H, N}, in.memory.options()), dsim = at::empty_like(sim);
  auto key_norm = at::empty({B, H}, in.memory.options());
  AT_DISPATCH_FLOATING_TYPES(in.memory.scalar_type(), "ntm_address_backward", [&] {
    const scalar_t* g = grad.data_ptr<scalar_t>();
    const scalar_t* p = out.data_ptr<scalar_t>();
    scalar_t* s = sim.data_ptr<scalar_t>();
    scalar_t* ds = dsim.data_ptr<scalar_t>();
    scalar_t* kn = key_norm.data_ptr<scalar_t>();
    const auto norms = backward_norms<scalar_t>(in.memory, H, true, scalar_t(eps));
    parallel_for(0, B * H, grain(N * (W + S)), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> buf(4 * N);
      scalar_t *content = buf.data(), *gated = content + N, *shifted = gated + N, *d = shifted + N;
      for (int64_t row = begin; row < end; ++row) {
        const auto r = in.row<scalar_t>(row, norms.data_ptr<scalar_t>() + (row / H) * N, H == 1, eps);
        scalar_t* s_row = s + row * N;
        scalar_t* ds_row = ds + row * N;
        kn[row] = r.forward(s_row, content, gated, shifted);
        // sharpen: d = d loss / d shifted
        math::sharpen_backward_row(g + row * N, shifted, r.gamma, p + row * N, N, d,
                                   grad_gamma.data_ptr<scalar_t>() + row);
        // shift: `shifted` is free now and takes d loss / d gated
        math::shift_backward_row(d, gated, r.kernel, N, S, shifted,
                                 grad_kernel.data_ptr<scalar_t>() + row * S);
        // interpolate: gated = gate content + (1 - gate) prev
        scalar_t* gp = grad_prev.data_ptr<scalar_t>() + row * N;
        math::Sum<scalar_t> ggate = 0;
        for (int64_t i = 0; i < N; ++i) {
          ggate += shifted[i] * (content[i] - r.prev[i]);
          gp[i] = (scalar_t(1) - r.gate) * shifted[i];
          d[i] = r.gate * shifted[i];  // d loss / d content
        }
        grad_gate.data_ptr<scalar_t>()[row] = scalar_t(ggate);
        // softmax and beta: dsim = beta * dlogits, grad_beta = dlogits . sim
        math::softmax_backward_row(content, d, N, ds_row);
        math::Sum<scalar_t> gbeta = 0;
        for (int64_t i = 0; i < N; ++i) {
          gbeta += ds_row[i] * s_row[i];
          ds_row[i] *= r.beta;
        }
        grad_beta.data_ptr<scalar_t>()[row] = scalar_t(gbeta);
        math::key_grad_row<scalar_t, scalar_t>(r.mem, r.key, r.slot_norm, N, W, true, r.eps, kn[row],
                                               s_row, ds_row, grad_keys.data_ptr<scalar_t>() + row * W);
      }
    });
    content_memory_grad<scalar_t>(in.memory.data_ptr<scalar_t>(), in.keys.data_ptr<scalar_t>(), kn,
                                  norms.data_ptr<scalar_t>(), s, ds, B, H, N, W, true, scalar_t(eps),
                                  grad_memory.data_ptr<scalar_t>());
  });
  return {grad_memory, grad_keys, grad_beta, grad_gate, grad_kernel, grad_gamma, grad_prev};
}

TORCH_LIBRARY_IMPL(memops, CPU, m) {
  m.impl("ntm_address", &ntm_address);
  m.impl("_ntm_address_backward", &ntm_address_backward);
}

}  // namespace cpu
}  // namespace memops

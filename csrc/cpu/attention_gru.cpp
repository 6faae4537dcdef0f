// attention_gru on the CPU: DMN+'s attention GRU over facts (csrc/math/gru.h has the per-element math).
//
// The scan is sequential over facts but independent across batch rows, so the rows are split in fixed
// chunks of kRows (at::parallel_for over chunks; a chunk's result never depends on the thread count)
// and each chunk runs its own scan. Per fact, the two D x D matvecs of every row of the chunk are one
// GEMM, h (R x D) times [ur; uh]^T (D x 2D), through ATen's BLAS; then one elementwise pass. Measured
// at F = 50, D = 80, B = 100 on one thread: plain per-row dot-product loops (math::dot_rows) do the
// same ~0.2 GFLOP of fwd + bwd at a few GFLOP/s, no faster than the Python loop of torch ops, while
// the GEMMs run several times faster (benchmarks/bench_ops.py attention_gru).
//
// Backward (BPTT over the facts, last to first) saves nothing beyond the forward's output: the states
// are every h_{i-1}, and r, u, c of each step are recomputed from them, the matvecs of all facts at
// once (one large GEMM, not F small ones: they do not depend on the gradient). What stays sequential
// is dh_{i-1} = (1 - g) dh + [dxr | du] [ur; uh], one GEMM per fact. The weight gradients are one
// GEMM per chunk over all its facts ([dxr | du]^T times h_{i-1}), summed over chunks in chunk order
// (deterministic).
#include <vector>

#include "../math/gru.h"
#include "common.h"

namespace memops {
namespace cpu {
namespace {

constexpr int64_t kRows = 128;  // batch rows per chunk: DMN+'s batch of 100 is one GEMM per fact

int64_t chunks(int64_t B) { return (B + kRows - 1) / kRows; }

// The row loops below run through vectorized() (isa.h): their sigmoid and tanh are most of the CPU
// time, and 8 or 16 lanes with FMA instead of the baseline's 4 make them ~3x faster.

// The forward of one fact of one batch row, over its D elements: proj = [ur h | uh h].
template <typename scalar_t>
inline void forward_row_loop(const scalar_t* __restrict__ xr, const scalar_t* __restrict__ xh,
                             const scalar_t* __restrict__ proj, const scalar_t* __restrict__ bu,
                             const scalar_t* __restrict__ h, scalar_t g, int64_t D,
                             scalar_t* __restrict__ h_new) {
  for (int64_t j = 0; j < D; ++j) {
    const math::GruCell<scalar_t> cell(xr[j], xh[j], proj[j], proj[D + j], bu[j]);
    h_new[j] = cell.next(g, h[j]);
  }
}

// The elementwise backward of one fact of one batch row, over its D elements. No pointer aliases
// another and the gate's gradient is left in dg_parts (summed by the caller), so the loop vectorises
// (with a reduction in it, or pointers that might alias, it ran ~10x slower).
template <typename scalar_t>
inline void backward_row_loop(const scalar_t* __restrict__ xr, const scalar_t* __restrict__ xh,
                              const scalar_t* __restrict__ proj, const scalar_t* __restrict__ bu,
                              const scalar_t* __restrict__ h, scalar_t g, int64_t D,
                              scalar_t* __restrict__ dh, scalar_t* __restrict__ grad_xr,
                              scalar_t* __restrict__ grad_xh, scalar_t* __restrict__ d2,
                              scalar_t* __restrict__ dg_parts) {
  for (int64_t j = 0; j < D; ++j) {
    const math::GruCell<scalar_t> cell(xr[j], xh[j], proj[j], proj[D + j], bu[j]);
    const math::GruCellGrad<scalar_t> cg(cell, g, h[j], dh[j]);
    grad_xr[j] = cg.dxr;
    grad_xh[j] = cg.dxh;
    d2[j] = cg.dxr;
    d2[D + j] = cg.du;
    dh[j] = cg.dh_prev;
    dg_parts[j] = cg.dg;
  }
}

template <typename scalar_t, typename... Args>
void forward_row(Args... args) {
  vectorized([&](auto) { forward_row_loop<scalar_t>(args...); });
}
template <typename scalar_t, typename... Args>
void backward_row(Args... args) {
  vectorized([&](auto) { backward_row_loop<scalar_t>(args...); });
}

}  // namespace

at::Tensor attention_gru(const at::Tensor& xr_, const at::Tensor& xh_, const at::Tensor& ur_,
                         const at::Tensor& uh_, const at::Tensor& bu_, const at::Tensor& gates_,
                         const at::Tensor& h0_, const c10::optional<at::Tensor>& mask_) {
  check_attention_gru(xr_, xh_, ur_, uh_, bu_, gates_, h0_, mask_);
  check_cpu_dtype("attention_gru", xr_);
  const auto xr = contiguous(xr_), xh = contiguous(xh_), bu = contiguous(bu_), gates = contiguous(gates_);
  const auto h0 = contiguous(h0_);
  const auto mask = contiguous(mask_);
  const int64_t B = xr.size(0), F = xr.size(1), D = xr.size(2);
  auto out = at::empty({B, F, D}, xr.options());
  if (out.numel() == 0) return out;
  const auto wt = at::cat({ur_, uh_}, 0).t();  // (D, 2D): h wt = [ur h | uh h]
  AT_DISPATCH_FLOATING_TYPES(xr.scalar_type(), "attention_gru", [&] {
    const scalar_t* pxr = xr.data_ptr<scalar_t>();
    const scalar_t* pxh = xh.data_ptr<scalar_t>();
    const scalar_t* pbu = bu.data_ptr<scalar_t>();
    const scalar_t* pg = gates.data_ptr<scalar_t>();
    const scalar_t* ph0 = h0.data_ptr<scalar_t>();
    const bool* keep = data_or_null<bool>(mask);
    scalar_t* po = out.data_ptr<scalar_t>();
    at::parallel_for(0, chunks(B), 1, [&](int64_t begin, int64_t end) {
      at::AutoDispatchBelowADInplaceOrView guard;  // plain kernels (also on worker threads)
      auto proj = at::empty({kRows, 2 * D}, xr.options());
      for (int64_t chunk = begin; chunk < end; ++chunk) {
        const int64_t b0 = chunk * kRows, R = std::min(kRows, B - b0);
        auto p = proj.narrow(0, 0, R);
        const scalar_t* pp = p.data_ptr<scalar_t>();
        for (int64_t i = 0; i < F; ++i) {
          at::mm_out(p, i == 0 ? h0.narrow(0, b0, R) : out.select(1, i - 1).narrow(0, b0, R), wt);
          for (int64_t b = b0; b < b0 + R; ++b) {
            const int64_t bi = b * F + i;
            const scalar_t* h = i == 0 ? ph0 + b * D : po + (bi - 1) * D;
            scalar_t* h_new = po + bi * D;
            if (keep && !keep[bi]) {  // a padded fact: h unchanged
              for (int64_t j = 0; j < D; ++j) h_new[j] = h[j];
              continue;
            }
            forward_row<scalar_t>(pxr + bi * D, pxh + bi * D, pp + (b - b0) * 2 * D, pbu, h, pg[bi], D, h_new);
          }
        }
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
attention_gru_backward(const at::Tensor& grad_, const at::Tensor& xr_, const at::Tensor& xh_,
                       const at::Tensor& ur_, const at::Tensor& uh_, const at::Tensor& bu_,
                       const at::Tensor& gates_, const at::Tensor& h0_, const c10::optional<at::Tensor>& mask_,
                       const at::Tensor& out_) {
  check_attention_gru(xr_, xh_, ur_, uh_, bu_, gates_, h0_, mask_);
  check_cpu_dtype("attention_gru", xr_);
  const int64_t B = xr_.size(0), F = xr_.size(1), D = xr_.size(2);
  check_output_like("attention_gru", grad_, "grad", {B, F, D}, xr_);
  check_output_like("attention_gru", out_, "out", {B, F, D}, xr_);
  const auto opts = xr_.options();
  if (B * F * D == 0) {
    return {at::zeros({B, F, D}, opts), at::zeros({B, F, D}, opts), at::zeros({D, D}, opts),
            at::zeros({D, D}, opts), at::zeros({D}, opts), at::zeros({B, F}, opts), at::zeros({B, D}, opts)};
  }
  const auto xr = contiguous(xr_), xh = contiguous(xh_), bu = contiguous(bu_), gates = contiguous(gates_);
  const auto h0 = contiguous(h0_), grad = contiguous(grad_), out = contiguous(out_);
  const auto mask = contiguous(mask_);
  const auto w = at::cat({ur_, uh_}, 0);  // (2D, D)
  const auto wt = w.t();
  // h_{i-1} of every fact, for the recomputation and the weight gradients
  const auto h_prev = at::cat({h0.unsqueeze(1), out.narrow(1, 0, F - 1)}, 1);
  const auto proj = at::mm(h_prev.view({B * F, D}), wt).view({B, F, 2 * D});  // [ur h | uh h] of every fact
  auto grad_xr = at::empty({B, F, D}, opts), grad_xh = at::empty({B, F, D}, opts);
  auto grad_gates = at::empty({B, F}, opts), grad_h0 = at::empty({B, D}, opts);
  auto d2 = at::empty({B, F, 2 * D}, opts);  // [dxr | du] of every fact: the weights' gradient factor
  const int64_t C = chunks(B);
  auto grad_w_parts = at::empty({C, 2 * D, D}, opts);
  auto grad_bu_parts = at::empty({C, D}, opts);
  AT_DISPATCH_FLOATING_TYPES(xr.scalar_type(), "attention_gru_backward", [&] {
    const scalar_t* pxr = xr.data_ptr<scalar_t>();
    const scalar_t* pxh = xh.data_ptr<scalar_t>();
    const scalar_t* pbu = bu.data_ptr<scalar_t>();
    const scalar_t* pg = gates.data_ptr<scalar_t>();
    const scalar_t* phprev = h_prev.data_ptr<scalar_t>();
    const scalar_t* pproj = proj.data_ptr<scalar_t>();
    const scalar_t* pgrad = grad.data_ptr<scalar_t>();
    const bool* keep = data_or_null<bool>(mask);
    scalar_t* pgxr = grad_xr.data_ptr<scalar_t>();
    scalar_t* pgxh = grad_xh.data_ptr<scalar_t>();
    scalar_t* pgg = grad_gates.data_ptr<scalar_t>();
    scalar_t* pd2 = d2.data_ptr<scalar_t>();
    scalar_t* pgbu = grad_bu_parts.data_ptr<scalar_t>();
    at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::vector<scalar_t> dg_parts(D);
      for (int64_t chunk = begin; chunk < end; ++chunk) {
        const int64_t b0 = chunk * kRows, R = std::min(kRows, B - b0);
        auto dh = grad_h0.narrow(0, b0, R);  // the gradient reaching h_i, then h_{i-1}, ..., then h0
        dh.zero_();
        scalar_t* pdh = dh.data_ptr<scalar_t>();
        for (int64_t i = F - 1; i >= 0; --i) {
          for (int64_t b = b0; b < b0 + R; ++b) {
            const int64_t bi = b * F + i;
            scalar_t* dhb = pdh + (b - b0) * D;
            for (int64_t j = 0; j < D; ++j) dhb[j] += pgrad[bi * D + j];
            scalar_t* d2b = pd2 + bi * 2 * D;
            if (keep && !keep[bi]) {  // h_i = h_{i-1}: dh passes through; the fact gets no gradient
              for (int64_t j = 0; j < D; ++j) pgxr[bi * D + j] = pgxh[bi * D + j] = scalar_t(0);
              for (int64_t j = 0; j < 2 * D; ++j) d2b[j] = scalar_t(0);
              pgg[bi] = scalar_t(0);
              continue;
            }
            const scalar_t* row = pproj + bi * 2 * D;
            const scalar_t* h = phprev + bi * D;
            backward_row<scalar_t>(pxr + bi * D, pxh + bi * D, row, pbu, h, pg[bi], D, dhb, pgxr + bi * D,
                                   pgxh + bi * D, d2b, dg_parts.data());
            math::Sum<scalar_t> dg = 0;
            for (int64_t j = 0; j < D; ++j) dg += dg_parts[j];
            pgg[bi] = scalar_t(dg);
          }
          // through the matvecs: dh_{i-1} += ur^T dxr + uh^T du = [dxr | du] [ur; uh]
          dh.addmm_(d2.select(1, i).narrow(0, b0, R), w);
        }
        // this chunk's share of the weight gradients: sum over its (b, i) of [dxr | du] (x) h_{i-1}
        const auto d2c = d2.narrow(0, b0, R).reshape({R * F, 2 * D});
        auto part = grad_w_parts[chunk];
        at::mm_out(part, d2c.t(), h_prev.narrow(0, b0, R).reshape({R * F, D}));
        scalar_t* gbu = pgbu + chunk * D;
        for (int64_t j = 0; j < D; ++j) gbu[j] = scalar_t(0);
        for (int64_t bi = b0 * F; bi < (b0 + R) * F; ++bi) {
          for (int64_t j = 0; j < D; ++j) gbu[j] += pd2[bi * 2 * D + D + j];
        }
      }
    });
  });
  // the chunks' shares summed in chunk order
  auto grad_w = grad_w_parts[0].clone(), grad_bu = grad_bu_parts[0].clone();
  for (int64_t c = 1; c < C; ++c) {
    grad_w.add_(grad_w_parts[c]);
    grad_bu.add_(grad_bu_parts[c]);
  }
  return {grad_xr, grad_xh, grad_w.narrow(0, 0, D).clone(), grad_w.narrow(0, D, D).clone(), grad_bu,
          grad_gates, grad_h0};
}

TORCH_LIBRARY_IMPL(memops, CPU, m) {
  m.impl("attention_gru", &attention_gru);
  m.impl("_attention_gru_backward", &attention_gru_backward);
}

}  // namespace cpu
}  // namespace memops

// CPU passes shared by content_address and ntm_address (cosine content addressing).
#pragma once

#include <vector>

#include "../math/addressing.h"
#include "common.h"

namespace memops {
namespace cpu {

// max(|m_i|, eps) of every slot of every batch row: (B, N), computed once per call and shared by
// all heads. Memory rows are contiguous across batches, so any range of slots is one call.
template <typename scalar_t>
void slot_norms(const scalar_t* mem, int64_t slots, int64_t W, scalar_t eps, scalar_t* n) {
  parallel_for(0, slots, grain(W), [&](int64_t begin, int64_t end) {
    math::slot_norms(mem + begin * W, end - begin, W, eps, n + begin);
  });
}

template <typename scalar_t>
at::Tensor slot_norms(const at::Tensor& memory, scalar_t eps) {
  auto norms = at::empty({memory.size(0), memory.size(1)}, memory.options());
  slot_norms(memory.data_ptr<scalar_t>(), memory.size(0) * memory.size(1), memory.size(2), eps,
             norms.data_ptr<scalar_t>());
  return norms;
}

// Where a forward row's slot norms come from (cosine): with one head, from the row's own sweep over
// memory, into a task buffer (one read of memory instead of two); with several heads, from
// slot_norms once per call, shared by the heads of a batch row.
template <typename scalar_t>
struct ForwardNorms {
  bool here;
  mutable std::vector<scalar_t> shared;

  ForwardNorms(const scalar_t* mem, int64_t B, int64_t N, int64_t W, int64_t H, bool cosine, scalar_t eps)
      : here(cosine && H == 1) {
    if (cosine && H > 1) {
      shared.resize(B * N);
      slot_norms(mem, B * N, W, eps, shared.data());
    }
  }
  ForwardNorms(const at::Tensor& memory, int64_t H, bool cosine, scalar_t eps)
      : ForwardNorms(memory.data_ptr<scalar_t>(), memory.size(0), memory.size(1), memory.size(2), H, cosine,
                     eps) {}

  // The norms pointer for batch row b; `buffer`: the task's N values, used when `here`.
  scalar_t* row(int64_t b, int64_t N, scalar_t* buffer) const {
    if (here) return buffer;
    return shared.empty() ? nullptr : shared.data() + b * N;
  }
};

// The slot norms for a backward (cosine), which its second phase needs for every slot: with one
// head, an empty (B, N) buffer that phase one fills in its own sweep over memory (each batch row has
// one row task, so no two tasks write the same norms); with several, slot_norms up front.
template <typename scalar_t>
at::Tensor backward_norms(const at::Tensor& memory, int64_t H, bool cosine, scalar_t eps) {
  if (!cosine) return at::Tensor();
  if (H == 1) return at::empty({memory.size(0), memory.size(1)}, memory.options());
  return slot_norms<scalar_t>(memory, eps);
}

template <typename scalar_t>
std::vector<scalar_t> backward_norms(const scalar_t* mem, int64_t B, int64_t N, int64_t W, int64_t H,
                                     scalar_t eps) {
  std::vector<scalar_t> norms(B * N);
  if (H > 1) slot_norms(mem, B * N, W, eps, norms.data());
  return norms;
}

// The second phase of the content backward. Phase one runs over (b, h) rows and leaves, per row,
// sim and dsim (d loss / d sim) of every slot and the key's clamped norm; this phase runs over
// chunks of slots so that each memory row's gradient (a sum over heads) is written by one task.
template <typename scalar_t>
void content_memory_grad(const scalar_t* mem, const scalar_t* keys, const scalar_t* key_norm,
                         const scalar_t* slot_norm, const scalar_t* sim, const scalar_t* dsim,
                         int64_t B, int64_t H, int64_t N, int64_t W, bool cosine, scalar_t eps,
                         scalar_t* grad_mem) {
  constexpr int64_t kChunk = 64;  // slots per task
  const int64_t chunks = (N + kChunk - 1) / kChunk;
  parallel_for(0, B * chunks, grain(kChunk * H * W), [&](int64_t begin, int64_t end) {
    scalar_t scratch[2 * kChunk];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / chunks, first = (task % chunks) * kChunk;
      const int64_t slot = b * N + first;
      math::memory_grad_slots<scalar_t, scalar_t>(
          mem + slot * W, keys + b * H * W, std::min(kChunk, N - first), H, N, W, cosine, eps,
          key_norm + b * H, cosine ? slot_norm + slot : nullptr, sim + b * H * N + first,
          dsim + b * H * N + first, grad_mem + slot * W, scratch);
    }
  });
}

}  // namespace cpu
}  // namespace memops
